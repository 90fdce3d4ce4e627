"""opentelemetry-instrumentation-openai-v2 2.4b0: current semantic conventions; no user attribute
(the application's server span lends enduser.id); no cache counts, so cached input is priced as
uncached (a limitation of the source)."""

from dataclasses import replace

import pytest

from tests.unit.normalize.instrumentation_fixtures import CHAT, CHAT_STREAM, EMBEDDINGS, check

USER = "user-openai-v2"
CASES = {
    "chat": replace(CHAT, tokens=(1200, 0, 0, 300, 0), user=USER, dollars="0.00036"),
    "chat_stream": replace(CHAT_STREAM, tokens=(1100, 0, 0, 210, 0), user=USER, dollars="0.000291"),
    "embeddings": replace(EMBEDDINGS, user=USER),
}


@pytest.mark.parametrize("scenario", CASES)
def test_one_row_per_call(scenario):
    check("openai_v2", scenario, CASES[scenario], source="semconv")
