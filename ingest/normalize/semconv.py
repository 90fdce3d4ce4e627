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
# Built once: a `(sc.NAME,)` written in the call is looked up and built again for every span.
_OPERATION = (sc.GEN_AI_OPERATION_NAME,)
_REQUEST_MODEL = (sc.GEN_AI_REQUEST_MODEL,)
_RESPONSE_MODEL = (sc.GEN_AI_RESPONSE_MODEL,)
_RESPONSE_ID = (sc.GEN_AI_RESPONSE_ID,)
_USAGE_STATUS = (sc.SPANMETER_USAGE_STATUS,)
_SESSION = (sc.SESSION_ID,)
_CONVERSATION = (sc.GEN_AI_CONVERSATION_ID,)
_FEATURE = (sc.SPANMETER_FEATURE,)
_TEAM = (sc.SPANMETER_TEAM,)
_AGENT = (sc.GEN_AI_AGENT_NAME,)
_STREAMING = sc.SPANMETER_STREAMING
_AGGREGATE = sc.AGGREGATE_OPERATIONS


def extract(span: Span) -> Extracted | None:
    a = span.attributes
    operation = text(a, _OPERATION)
    provider = canonical_provider(text(a, _PROVIDER))
    found = Extracted(
        provider=provider,
        operation=operation,
        request_model=text(a, _REQUEST_MODEL),
        response_model=text(a, _RESPONSE_MODEL),
        input=token_count(a, _INPUT),
        output=token_count(a, _OUTPUT),
        cache_read=token_count(a, _CACHE_READ),
        cache_write=token_count(a, _CACHE_WRITE),
        reasoning=token_count(a, _REASONING),
        aggregate=True if operation in _AGGREGATE else None,
        response_id=text(a, _RESPONSE_ID),
        streaming=_bool(a.get(_STREAMING)),
        usage_status=text(a, _USAGE_STATUS),
        user_id=text(a, _USER),
        session_id=text(a, _SESSION),
        conversation_id=text(a, _CONVERSATION),
        feature=text(a, _FEATURE),
        team=text(a, _TEAM),
        agent=text(a, _AGENT),
    )
    return found


def _bool(value: object) -> bool | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.lower() == "true"
    return bool(value)
