"""Normalizer for the spans the `anthropic` Python SDK emits itself (scope `com.anthropic.sdk.python`).

One CLIENT span per API call ("anthropic.messages.create"), with every retry and the reading of its
stream. It writes the current semantic conventions with two differences read here:
- `gen_ai.usage.input_tokens` is already inclusive (the SDK adds cache reads and writes to the
  raw count), but cache writes are under `gen_ai.usage.cache_write.input_tokens`, not the
  conventions' `cache_creation` name;
- compaction iterations are left out of the top-level usage and reported on their own
  (`anthropic.usage.compaction.{input,output}_tokens`); they are billed, so they are added.
  Their cached part is not broken out by the SDK, so it is priced as uncached input.
"""

from __future__ import annotations

from ..records import Span
from .base import Claim, Extracted, token_count

NAME = "anthropic_sdk"
SCOPE = "com.anthropic.sdk.python"
CLAIM = Claim(scopes=frozenset({SCOPE}))


def extract(span: Span) -> Extracted | None:
    if not CLAIM(span):  # = span.scope_name != SCOPE
        return None
    a = span.attributes
    found = Extracted(
        provider="anthropic",
        cache_write=token_count(a, ("gen_ai.usage.cache_write.input_tokens",)),
        streaming=True if a.get("gen_ai.request.stream") is True else None,
    )
    compaction_in = token_count(a, ("anthropic.usage.compaction.input_tokens",))
    compaction_out = token_count(a, ("anthropic.usage.compaction.output_tokens",))
    if compaction_in or compaction_out:
        found.input = (token_count(a, ("gen_ai.usage.input_tokens",)) or 0) + (compaction_in or 0)
        found.output = (token_count(a, ("gen_ai.usage.output_tokens",)) or 0) + (compaction_out or 0)
    return found
