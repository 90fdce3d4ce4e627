"""LiteLLM 1.108.11 OpenTelemetry callback: the litellm_request span is counted (its
raw_gen_ai_request child carries no usage keys); cache counts from metadata.usage_object; end user
from metadata.user_api_key_end_user_id; provider prefixes stripped; gen_ai.cost.total_cost kept as
the reported cost. Streams report the request model (no dated snapshot), as LiteLLM records it."""

from dataclasses import replace
from decimal import Decimal

import pytest

from tests.unit.normalize.instrumentation_fixtures import (
    CHAT, CHAT_STREAM, CLAUDE, EMBEDDINGS, GPT, MESSAGES, MESSAGES_STREAM, check, run)

USER = "user-litellm"
CASES = {
    "chat": replace(CHAT, user=USER),
    "chat_stream": replace(CHAT_STREAM, model=GPT[:2] + ("gpt-4o-mini",), user=USER),
    "embeddings": replace(EMBEDDINGS, user=USER),
    "messages": replace(MESSAGES, user=USER),
    "messages_stream": replace(MESSAGES_STREAM, model=CLAUDE[:2] + ("claude-sonnet-4-5",), user=USER),
}


@pytest.mark.parametrize("scenario", CASES)
def test_one_row_per_call(scenario):
    check("litellm", scenario, CASES[scenario], source="litellm")


@pytest.mark.parametrize("scenario", CASES)
def test_reported_cost_is_litellms_own_figure(scenario):
    (r,) = run("litellm", scenario).records
    assert r.reported_cost_usd == Decimal(CASES[scenario].dollars)
