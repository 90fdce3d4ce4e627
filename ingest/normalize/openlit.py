"""Normalizer for OpenLIT (`openlit`), recognised by telemetry.sdk.name = "openlit".

OpenLIT writes the conventions' names but with the provider's raw meaning: for Anthropic,
gen_ai.usage.input_tokens EXCLUDES cache reads and writes (against the conventions), so this
normalizer marks it exclusive and the core adds them back. Other keys: gen_ai.request.user (the
OpenAI `user` parameter), gen_ai.usage.reasoning_tokens.

gen_ai.usage.cost is OpenLIT's own estimate from a price list it downloads at start-up, and 0 when
that list is unknown (offline, new model): never a bill. Only a positive value is kept, as the
source's reported figure; spanmeter prices the call itself.

Known source limitations (1.45.0): an Anthropic stream's span reports no cache counts (0), so its
cached input is missing from the count; when a response carries no usage OpenLIT estimates tokens
from text length without saying so.
"""

from __future__ import annotations

from decimal import Decimal

from ..records import Span
from .base import Claim, Extracted, money, text, token_count

NAME = "openlit"
_EXCLUSIVE_PROVIDERS = {"anthropic"}


CLAIM = Claim(
    values=(("telemetry.sdk.name", "openlit"),),
    resource_values=(("telemetry.sdk.name", "openlit"),),
    scope_prefixes=("openlit.",),
)
_ours = CLAIM


def extract(span: Span) -> Extracted | None:
    if not _ours(span):
        return None
    a = span.attributes
    provider = text(a, ("gen_ai.provider.name", "gen_ai.system"))
    cost = money(a, ("gen_ai.usage.cost",))
    return Extracted(
        input_excludes_cache=True if (provider or "").lower() in _EXCLUSIVE_PROVIDERS else None,
        reasoning=token_count(a, ("gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens",
                                  "gen_ai.usage.completion_tokens_details.reasoning_tokens")),
        reported_cost=cost if cost is not None and cost > Decimal(0) else None,
        streaming=True if a.get("gen_ai.request.stream") is True else None,
        user_id=text(a, ("user.id", "enduser.id", "gen_ai.request.user", "gen_ai.user.id")),
        session_id=text(a, ("session.id", "gen_ai.session.id")),
    )
