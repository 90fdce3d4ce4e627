"""Normalizer for OpenInference (Arize: `openinference-instrumentation-*`).

Keys: llm.token_count.{prompt,completion} (inclusive: the Anthropic instrumentation adds cache
reads and writes since Mar 2025), llm.token_count.prompt_details.{cache_read,cache_write},
llm.token_count.completion_details.reasoning, llm.provider / llm.system, llm.model_name (the
response model on LLM spans), llm.request.model_name, embedding.model_name, llm.cost.total.

openinference.span.kind: LLM and EMBEDDING spans are provider calls; CHAIN and AGENT spans that
carry token counts are roll-ups of their children (aggregate, never counted). Attribution:
user.id and session.id (set by `using_attributes`), and the `metadata` attribute, a JSON object
string whose user_id / session_id / feature / team keys are read.
"""

from __future__ import annotations

import json

from ..records import Span
from .base import Claim, Extracted, canonical_provider, money, text, token_count

NAME = "openinference"
_KIND = "openinference.span.kind"
_CALL_KINDS = {"LLM": "chat", "EMBEDDING": "embeddings"}
_AGGREGATE_KINDS = {"CHAIN", "AGENT"}
_METADATA_USER = ("user_id", "userId", "user", "customer_id", "end_user_id")
_METADATA_SESSION = ("session_id", "sessionId", "thread_id")


CLAIM = Claim(keys=frozenset({_KIND, "llm.token_count.prompt", "llm.token_count.completion"}))
_ours = CLAIM


def extract(span: Span) -> Extracted | None:
    if not _ours(span):
        return None
    a = span.attributes
    kind = str(a.get(_KIND) or "").upper()
    metadata = _metadata(a.get("metadata"))  # JSON object string
    return Extracted(
        provider=canonical_provider(text(a, ("llm.provider", "llm.system"))),
        operation=_CALL_KINDS.get(kind),
        request_model=text(a, ("llm.request.model_name",)) or _requested(a.get("llm.invocation_parameters"))
        or text(a, ("llm.model_name", "embedding.model_name")),
        response_model=text(a, ("llm.response.model_name", "llm.model_name", "embedding.model_name")),
        input=token_count(a, ("llm.token_count.prompt",)),
        output=token_count(a, ("llm.token_count.completion",)),
        cache_read=token_count(a, ("llm.token_count.prompt_details.cache_read",)),
        cache_write=token_count(a, ("llm.token_count.prompt_details.cache_write",)),
        reasoning=token_count(a, ("llm.token_count.completion_details.reasoning",)),
        reported_cost=money(a, ("llm.cost.total",)),
        aggregate=True if kind in _AGGREGATE_KINDS else None,
        user_id=text(a, ("user.id",)) or text(metadata, _METADATA_USER),
        session_id=text(a, ("session.id",)) or text(metadata, _METADATA_SESSION),
        feature=text(metadata, ("feature",)),
        team=text(metadata, ("team", "team_id")),
    )


def _requested(value: object) -> str | None:
    """The model the request named, from llm.invocation_parameters (a JSON string)."""
    model = _metadata(value).get("model")
    return str(model) if model else None


def _metadata(value: object) -> dict:
    """The `metadata` attribute: a JSON object as a string (anything else is ignored)."""
    if not isinstance(value, str) or not value.startswith("{"):
        return {}
    try:
        parsed = json.loads(value)
    except ValueError:
        return {}
    if not isinstance(parsed, dict):
        return {}
    return {k: v for k, v in parsed.items() if isinstance(v, (str, int)) and not isinstance(v, bool)}
