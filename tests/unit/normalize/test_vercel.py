"""Vercel AI SDK (ai 6.0.325, node): ai.generateText/ai.streamText/ai.embed roots are aggregates,
the doGenerate/doStream/doEmbed spans are counted; user from ai.telemetry.metadata.userId."""

from dataclasses import replace

import pytest

from spanmeter.ingest.normalize.vercel import extract
from spanmeter.ingest.records import Span
from tests.unit.normalize.instrumentation_fixtures import (
    CHAT, CHAT_STREAM, EMBEDDINGS, MESSAGES, MESSAGES_STREAM, check, run)

USER = "user-vercel"
CASES = {
    "chat": replace(CHAT, user=USER),
    "chat_stream": replace(CHAT_STREAM, user=USER),
    "embeddings": replace(EMBEDDINGS, model=EMBEDDINGS.model[:2] + ("",), user=USER),
    "messages": replace(MESSAGES, user=USER),
    "messages_stream": replace(MESSAGES_STREAM, user=USER),
}


@pytest.mark.parametrize("scenario", CASES)
def test_one_row_per_call(scenario):
    check("vercel", scenario, CASES[scenario], source="vercel", session="session-1")


def test_the_counted_span_is_the_provider_call():
    (r,) = run("vercel", "chat").records
    assert r.attribution.agent == "answer"  # ai.telemetry.functionId


def test_v5_anthropic_counts_are_exclusive():
    attrs = {"ai.operationId": "ai.generateText.doGenerate", "ai.model.provider": "anthropic.messages",
             "ai.model.id": "claude-sonnet-4-5", "ai.usage.inputTokens": 100, "ai.usage.outputTokens": 5,
             "ai.usage.cachedInputTokens": 2000}
    found = extract(Span(b"\1" * 16, b"\1" * 8, b"", "ai.generateText.doGenerate", 0, 1, attrs, {}))
    assert found.input_excludes_cache and found.provider == "anthropic"
