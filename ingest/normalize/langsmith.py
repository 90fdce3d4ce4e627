"""Normalizer for LangSmith's OpenTelemetry export (`LANGSMITH_OTEL_ENABLED=true`).

LLM runs ("langsmith.span.kind" = llm) carry gen_ai.usage.{input,output}_tokens from LangChain's
usage_metadata (inclusive of cache reads and writes for every provider). Cache and reasoning
counts are only in gen_ai.usage.input_token_details / output_token_details (a Python-repr dict)
or langsmith.metadata.usage_metadata (JSON). gen_ai.system is LangSmith's guess; the run's
langsmith.metadata.ls_provider is preferred. Attribution comes from run metadata:
langsmith.metadata.{user_id,session_id,thread_id,...}. Chain runs that carry usage sum their
children (aggregate).
"""

from __future__ import annotations

from ..records import Span
from ._literal import dig, mapping
from .base import Claim, Extracted, canonical_provider, text

NAME = "langsmith"
_META = "langsmith.metadata."


CLAIM = Claim(key_prefixes=("langsmith.",))
_ours = CLAIM


def extract(span: Span) -> Extracted | None:
    if not _ours(span):
        return None
    a = span.attributes
    usage = mapping(a.get(_META + "usage_metadata"))
    input_details = mapping(a.get("gen_ai.usage.input_token_details")) or dig(usage, "input_token_details") or {}
    output_details = mapping(a.get("gen_ai.usage.output_token_details")) or dig(usage, "output_token_details") or {}
    kind = str(a.get("langsmith.span.kind") or "").lower()
    return Extracted(
        provider=canonical_provider(text(a, (_META + "ls_provider",))),
        request_model=text(a, ("gen_ai.request.model", _META + "ls_model_name")),
        cache_read=_count(input_details.get("cache_read")),
        cache_write=_count(input_details.get("cache_creation")),
        reasoning=_count(output_details.get("reasoning")),
        streaming=True if a.get("langsmith.request.streaming") is True else None,
        aggregate=True if kind == "chain" else None,
        user_id=text(a, tuple(_META + k for k in ("user_id", "userId", "user", "end_user_id", "customer_id"))),
        session_id=text(a, tuple(_META + k for k in ("session_id", "thread_id", "conversation_id"))),
        feature=text(a, (_META + "feature",)),
        team=text(a, (_META + "team", _META + "team_id")),
    )


def _count(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None
