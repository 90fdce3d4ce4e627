"""Normalizer for LiteLLM's OpenTelemetry callback (`litellm.callbacks = ["otel"]`, SDK or proxy).

Spans: "litellm_request" (the call, with usage), its child "raw_gen_ai_request" (the provider's raw
response as text: no usage keys, never counted), and on the proxy "Received Proxy Server Request"
above them. LiteLLM normalises every provider to the OpenAI shape, so gen_ai.usage.input_tokens is
inclusive (Anthropic cache included). Cache and reasoning counts are only in
metadata.usage_object, a Python-repr dict (prompt_tokens_details.cached_tokens,
cache_creation_input_tokens, completion_tokens_details.reasoning_tokens).

gen_ai.system is LiteLLM's custom_llm_provider; gen_ai.request.model may carry a provider prefix
("openai/gpt-4o-mini"), stripped here. The end user: metadata.user_api_key_end_user_id (proxy end
user or SDK metadata), llm.user (the `user` parameter), then the key's own user; team from
metadata.user_api_key_team_id. gen_ai.cost.total_cost is LiteLLM's computed cost: kept as the
reported cost.
"""

from __future__ import annotations


from ..records import Span
from ._literal import dig, mapping
from .base import Claim, Extracted, canonical_provider, money, text

NAME = "litellm"
_OPERATIONS = {"completion": "chat", "acompletion": "chat", "embedding": "embeddings", "aembedding": "embeddings"}


CLAIM = Claim(
    scopes=frozenset({"litellm"}),
    values=(("gen_ai.framework", "litellm"),),
    keys=frozenset({"metadata.user_api_key_end_user_id", "gen_ai.cost.total_cost"}),
)
_ours = CLAIM


def extract(span: Span) -> Extracted | None:
    if not _ours(span):
        return None
    a = span.attributes
    usage = mapping(a.get("metadata.usage_object"))
    provider = canonical_provider(text(a, ("gen_ai.provider.name", "gen_ai.system")))
    request_model = text(a, ("gen_ai.request.model",))
    routed = text(a, ("litellm.provider.model",))  # "openai/text-embedding-3-small"
    if not provider and routed and "/" in routed:
        provider = canonical_provider(routed.split("/", 1)[0])
    if request_model and "/" in request_model:
        prefix, bare = request_model.split("/", 1)
        provider = provider or canonical_provider(prefix)
        request_model = bare
    response_model = text(a, ("gen_ai.response.model",))
    if response_model and provider and response_model.startswith(provider + "/"):
        response_model = response_model[len(provider) + 1:]
    cost = money(a, ("gen_ai.cost.total_cost",))
    operation = text(a, ("gen_ai.operation.name",))
    return Extracted(
        provider=provider,
        operation=_OPERATIONS.get(operation or "", operation),
        request_model=request_model,
        response_model=response_model,
        cache_read=_count(dig(usage, "prompt_tokens_details", "cached_tokens")),
        cache_write=_count(usage.get("cache_creation_input_tokens"))
        or _count(dig(usage, "prompt_tokens_details", "cache_creation_tokens")),
        reasoning=_count(dig(usage, "completion_tokens_details", "reasoning_tokens")),
        reported_cost=cost,
        streaming=_bool(a.get("llm.is_streaming")),
        user_id=text(a, ("metadata.user_api_key_end_user_id", "llm.user", "gen_ai.user",
                         "metadata.user_api_key_user_id")),
        team=text(a, ("metadata.user_api_key_team_id", "metadata.user_api_key_team_alias")),
        session_id=text(a, ("metadata.session_id", "session.id")),
    )


def _count(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _bool(value: object) -> bool | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.lower() == "true"
    return bool(value)
