"""OpenLLMetry (opentelemetry-instrumentation-openai/-anthropic 0.62.4): one row per call, user from
the OpenAI `user` parameter or the workflow span's traceloop association properties."""

from dataclasses import replace

import pytest

from tests.unit.normalize.instrumentation_fixtures import (
    CHAT, CHAT_STREAM, EMBEDDINGS, MESSAGES, MESSAGES_STREAM, check, metadata)

USER = "user-openllmetry"
CASES = {
    "chat": replace(CHAT, user=USER),
    "chat_stream": replace(CHAT_STREAM, user=USER),
    "embeddings": replace(EMBEDDINGS, user=USER),
    "messages": replace(MESSAGES, user=USER),  # from the workflow span's association properties
    # Source bug: the stream's output adds message_start's placeholder (1) to message_delta's
    # cumulative 190. Metered as reported: 191 tokens, 15e-6 dollars more than the bill.
    "messages_stream": replace(MESSAGES_STREAM, tokens=(1580, 1500, 0, 191, 0), user=USER, dollars="0.003555"),
}


@pytest.mark.parametrize("scenario", CASES)
def test_one_row_per_call(scenario):
    check("openllmetry", scenario, CASES[scenario], source="openllmetry", session="session-1")


def test_fixture_was_made_by_the_pinned_library():
    versions = metadata("openllmetry", "chat")["versions"]
    assert versions["opentelemetry-instrumentation-openai"] == "0.62.4"
