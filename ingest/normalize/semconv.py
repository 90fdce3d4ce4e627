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
from .base import COUNT, TEXT, Extracted, canonical_provider, read

NAME = "semconv"

_INPUT = (sc.GEN_AI_USAGE_INPUT_TOKENS, "gen_ai.usage.prompt_tokens")
_OUTPUT = (sc.GEN_AI_USAGE_OUTPUT_TOKENS, "gen_ai.usage.completion_tokens")
_CACHE_READ = (sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,)
_CACHE_WRITE = (sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,)
_REASONING = (sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,)
_PROVIDER = (sc.GEN_AI_PROVIDER_NAME, "gen_ai.system")
_USER = (sc.USER_ID, sc.ENDUSER_ID, "enduser.pseudo.id")
# Every text and count this convention reads, in the order `extract` unpacks them.
_SPEC = (
    (TEXT, (sc.GEN_AI_OPERATION_NAME,)),
    (TEXT, _PROVIDER),
    (TEXT, (sc.GEN_AI_REQUEST_MODEL,)),
    (TEXT, (sc.GEN_AI_RESPONSE_MODEL,)),
    (COUNT, _INPUT),
    (COUNT, _OUTPUT),
    (COUNT, _CACHE_READ),
    (COUNT, _CACHE_WRITE),
    (COUNT, _REASONING),
    (TEXT, (sc.GEN_AI_RESPONSE_ID,)),
    (TEXT, (sc.SPANMETER_USAGE_STATUS,)),
    (TEXT, _USER),
    (TEXT, (sc.SESSION_ID,)),
    (TEXT, (sc.GEN_AI_CONVERSATION_ID,)),
    (TEXT, (sc.SPANMETER_FEATURE,)),
    (TEXT, (sc.SPANMETER_TEAM,)),
    (TEXT, (sc.GEN_AI_AGENT_NAME,)),
)
_STREAMING = sc.SPANMETER_STREAMING
_AGGREGATE = sc.AGGREGATE_OPERATIONS


def extract(span: Span) -> Extracted | None:
    a = span.attributes
    (operation, provider, request_model, response_model, input_tokens, output, cache_read, cache_write, reasoning,
     response_id, usage_status, user_id, session_id, conversation_id, feature, team, agent) = read(a, _SPEC)
    return Extracted(
        provider=canonical_provider(provider),
        operation=operation,
        request_model=request_model,
        response_model=response_model,
        input=input_tokens,
        output=output,
        cache_read=cache_read,
        cache_write=cache_write,
        reasoning=reasoning,
        aggregate=True if operation in _AGGREGATE else None,
        response_id=response_id,
        streaming=_bool(a.get(_STREAMING)),
        usage_status=usage_status,
        user_id=user_id,
        session_id=session_id,
        conversation_id=conversation_id,
        feature=feature,
        team=team,
        agent=agent,
    )


def _bool(value: object) -> bool | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.lower() == "true"
    return bool(value)
