"""Normalizer for Pydantic Logfire and pydantic-ai's instrumentation (`logfire.instrument_pydantic_ai()`,
`Agent(instrument=True)`).

Model request spans ("chat {model}") carry the conventions' inclusive gen_ai.usage.* plus
gen_ai.usage.details.* (cache_read_tokens, cache_write_tokens, reasoning_tokens, provider
extras) and operation.cost (pydantic-ai's genai-prices estimate: kept as the reported cost). The
agent run span ("invoke_agent {name}", or "agent run" with agent_name in v1) sums its requests:
under gen_ai.aggregated_usage.* (never read) or, in v1, under gen_ai.usage.* — aggregate either way.
"""

from __future__ import annotations

from ..records import Span
from .base import Claim, Extracted, money, text, token_count

NAME = "logfire"
_DETAILS = "gen_ai.usage.details."


CLAIM = Claim(scopes=frozenset({"pydantic-ai", "logfire"}), keys=frozenset({"logfire.span_type", "operation.cost"}))
_ours = CLAIM


def extract(span: Span) -> Extracted | None:
    if not _ours(span):
        return None
    a = span.attributes
    agent_run = (span.name == "agent run" or a.get("gen_ai.operation.name") == "invoke_agent"
                 or ("agent_name" in a and a.get("gen_ai.operation.name") is None))
    return Extracted(
        cache_read=token_count(a, ("gen_ai.usage.cache_read.input_tokens", _DETAILS + "cache_read_tokens")),
        cache_write=token_count(a, ("gen_ai.usage.cache_creation.input_tokens", _DETAILS + "cache_write_tokens")),
        reasoning=token_count(a, ("gen_ai.usage.reasoning.output_tokens", _DETAILS + "reasoning_tokens")),
        reported_cost=money(a, ("operation.cost",)),
        aggregate=True if agent_run else None,
        agent=text(a, ("gen_ai.agent.name", "agent_name")),
    )
