"""OpenLIT 1.45.0 (anthropic 0.125.0, openai 2.54.0 in its own environment): Anthropic input is
exclusive and is made inclusive; gen_ai.usage.cost (0 offline) never becomes a reported cost.
Source limitations, asserted as recorded: no user on Anthropic calls (OpenLIT does not read
metadata.user_id), and no cache counts on Anthropic streams (1500 cache reads missing)."""

from dataclasses import replace

import pytest

from tests.unit.normalize.instrumentation_fixtures import (
    CHAT, CHAT_STREAM, EMBEDDINGS, MESSAGES, MESSAGES_STREAM, check, run)

USER = "user-openlit"
CASES = {
    "chat": replace(CHAT, user=USER),
    "chat_stream": replace(CHAT_STREAM, user=USER),
    "embeddings": replace(EMBEDDINGS, user=USER),
    "messages": MESSAGES,  # raw 100 exclusive + 2000 + 500 -> 2600 inclusive
    "messages_stream": replace(MESSAGES_STREAM, tokens=(80, 0, 0, 190, 0), dollars="0.00309"),
}


@pytest.mark.parametrize("scenario", CASES)
def test_one_row_per_call(scenario):
    check("openlit", scenario, CASES[scenario], source="openlit")


@pytest.mark.parametrize("scenario", CASES)
def test_zero_estimate_is_not_a_reported_cost(scenario):
    (r,) = run("openlit", scenario).records
    assert r.reported_cost_usd is None
