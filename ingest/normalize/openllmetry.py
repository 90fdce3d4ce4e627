"""Normalizer for OpenLLMetry (Traceloop): `opentelemetry-instrumentation-{openai,anthropic,...}`
from traceloop/openllmetry, and traceloop-sdk's workflow/task spans.

Tokens are inclusive (OpenAI as reported; Anthropic with cache added since Oct 2024) under the
conventions' names, plus its own older or extra keys read here: gen_ai.usage.cache_read_input_tokens
/ cache_creation_input_tokens (underscore spelling), gen_ai.usage.reasoning_tokens,
llm.usage.reasoning_tokens. The end user is the OpenAI `user` parameter (gen_ai.user, llm.user) or
the association properties traceloop-sdk puts on workflow and task spans
(traceloop.association.properties.{user_id,customer_id,session_id}).

Known source limitation (0.62.4): an Anthropic stream's output count adds message_start's
placeholder output tokens to message_delta's cumulative count (over-reports by ~1 token).
"""

from __future__ import annotations

from ..records import Span
from .base import Claim, Extracted, text, token_count

NAME = "openllmetry"

_SCOPE_PREFIX = "opentelemetry.instrumentation."
# OpenLLMetry's instrumentation packages (scope "opentelemetry.instrumentation.<name>[.v1]"); the
# contrib repository's own (openai_v2, botocore, httpx, ...) write plain conventions and are not ours.
_PACKAGES = frozenset({
    "openai", "anthropic", "bedrock", "cohere", "groq", "mistralai", "ollama", "together", "vertexai",
    "watsonx", "langchain", "llamaindex", "crewai", "haystack", "replicate", "sagemaker", "transformers",
    "google_generativeai", "alephalpha", "writer", "voyageai", "openai_agents", "agno", "mcp",
})
_ASSOC = "traceloop.association.properties."


# The scope "opentelemetry.instrumentation.<package>" or any scope under it ("....<package>.v1"):
# package names hold no dot, so that is exactly "the scope's segment after the prefix is ours".
CLAIM = Claim(
    scopes=frozenset(_SCOPE_PREFIX + package for package in _PACKAGES),
    scope_prefixes=tuple(sorted(_SCOPE_PREFIX + package + "." for package in _PACKAGES)),
    keys=frozenset({"traceloop.span.kind", "llm.request.type"}),
    key_prefixes=(_ASSOC,),
)
_ours = CLAIM


def extract(span: Span) -> Extracted | None:
    if not _ours(span):
        return None
    a = span.attributes
    return Extracted(
        cache_read=token_count(a, ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens")),
        cache_write=token_count(a, ("gen_ai.usage.cache_creation.input_tokens",
                                    "gen_ai.usage.cache_creation_input_tokens")),
        reasoning=token_count(a, ("gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens",
                                  "llm.usage.reasoning_tokens")),
        streaming=_bool(a.get("gen_ai.is_streaming", a.get("llm.is_streaming"))),
        user_id=text(a, ("user.id", "enduser.id", "gen_ai.user", "llm.user", _ASSOC + "user_id",
                         _ASSOC + "customer_id")),
        session_id=text(a, ("session.id", _ASSOC + "session_id")),
        agent=text(a, ("gen_ai.agent.name", "traceloop.workflow.name")),
    )


def _bool(value: object) -> bool | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.lower() == "true"
    return bool(value)
