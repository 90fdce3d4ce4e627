"""LangSmith 0.14.17 OTel export (wrap_openai / wrap_anthropic): gen_ai.usage.* inclusive, cache
counts from gen_ai.usage.input_token_details (a Python-repr dict), user and session from
langsmith.metadata.*. Not recorded: embeddings (wrap_openai does not trace them) and Anthropic
streams (wrap_anthropic's reducer raises TypeError with anthropic 2.10)."""

from dataclasses import replace

import pytest

from tests.unit.normalize.instrumentation_fixtures import CHAT, CHAT_STREAM, MESSAGES, check

USER = "user-langsmith"
CASES = {"chat": replace(CHAT, user=USER), "chat_stream": replace(CHAT_STREAM, user=USER),
         "messages": replace(MESSAGES, user=USER)}


@pytest.mark.parametrize("scenario", CASES)
def test_one_row_per_call(scenario):
    check("langsmith", scenario, CASES[scenario], source="langsmith", session="session-1")
