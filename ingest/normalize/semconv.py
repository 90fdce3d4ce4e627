"""Normalizer for the OpenTelemetry GenAI semantic conventions, current names and deprecated ones.

Current (registry.yaml): gen_ai.provider.name, gen_ai.usage.{input,output}_tokens,
gen_ai.usage.cache_read.input_tokens, gen_ai.usage.cache_creation.input_tokens,
gen_ai.usage.reasoning.output_tokens: inclusive meaning.
Deprecated (registry-deprecated.yaml): gen_ai.system, gen_ai.usage.prompt_tokens,
gen_ai.usage.completion_tokens.
"""

from __future__ import annotations

from spanmeter import semconv as sc

from ..records import Span
from .base import Extracted, canonical_provider, text, token_count

NAME = "semconv"

_INPUT = (sc.GEN_AI_USAGE_INPUT_TOKENS, "gen_ai.usage.prompt_tokens")
_OUTPUT = (sc.GEN_AI_USAGE_OUTPUT_TOKENS, "gen_ai.usage.completion_tokens")
_CACHE_READ = (sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,)
_CACHE_WRITE = (sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,)
_REASONING = (sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,)
_PROVIDER = (sc.GEN_AI_PROVIDER_NAME, "gen_ai.system")
_USER = (sc.USER_ID, sc.ENDUSER_ID, "enduser.pseudo.id")


def extract(span: Span) -> Extracted | None:
    a = span.attributes
    operation = text(a, (sc.GEN_AI_OPERATION_NAME,))
    provider = canonical_provider(text(a, _PROVIDER))
    found = Extracted(
        provider=provider,
        operation=operation,
        request_model=text(a, (sc.GEN_AI_REQUEST_MODEL,)),
        response_model=text(a, (sc.GEN_AI_RESPONSE_MODEL,)),
        input=token_count(a, _INPUT),
        output=token_count(a, _OUTPUT),
        cache_read=token_count(a, _CACHE_READ),
        cache_write=token_count(a, _CACHE_WRITE),
        reasoning=token_count(a, _REASONING),
        aggregate=True if operation in sc.AGGREGATE_OPERATIONS else None,
        response_id=text(a, (sc.GEN_AI_RESPONSE_ID,)),
        streaming=_bool(a.get(sc.SPANMETER_STREAMING)),
        usage_status=text(a, (sc.SPANMETER_USAGE_STATUS,)),
        user_id=text(a, _USER),
        session_id=text(a, (sc.SESSION_ID,)),
        conversation_id=text(a, (sc.GEN_AI_CONVERSATION_ID,)),
        feature=text(a, (sc.SPANMETER_FEATURE,)),
        team=text(a, (sc.SPANMETER_TEAM,)),
        agent=text(a, (sc.GEN_AI_AGENT_NAME,)),
    )
    return found


def _bool(value: object) -> bool | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.lower() == "true"
    return bool(value)
