"""OpenInference (openinference-instrumentation-openai 0.1.66, -anthropic 3.1.0): llm.token_count.*,
user.id/session.id from using_attributes, request model from llm.invocation_parameters."""

from dataclasses import replace

import pytest

from tests.unit.normalize.instrumentation_fixtures import (
    CHAT, CHAT_STREAM, EMBEDDINGS, MESSAGES, MESSAGES_STREAM, check, run)

USER = "user-openinference"
CASES = {name: replace(e, user=USER) for name, e in {
    "chat": CHAT, "chat_stream": CHAT_STREAM, "embeddings": EMBEDDINGS,
    "messages": MESSAGES, "messages_stream": MESSAGES_STREAM}.items()}


@pytest.mark.parametrize("scenario", CASES)
def test_one_row_per_call(scenario):
    check("openinference", scenario, CASES[scenario], source="openinference", session="session-1")


def test_metadata_json_string_lends_the_feature():
    (r,) = run("openinference", "chat").records
    assert r.attribution.feature == "answer"
