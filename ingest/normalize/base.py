"""What a convention normalizer returns, and helpers shared by all of them.

A normalizer is a function `extract(span) -> Extracted | None`: it reads the keys of one
instrumentation's convention and returns what it found (None when the span is not of its kind).
Fields left None were not found; the core merges normalizers first-non-None, never summing aliases.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Iterable

from ..records import Span


@dataclass(slots=True)
class Extracted:
    provider: str | None = None
    operation: str | None = None
    request_model: str | None = None
    response_model: str | None = None
    input: int | None = None
    output: int | None = None
    cache_read: int | None = None
    cache_write: int | None = None
    reasoning: int | None = None
    # True when this source's input count excludes cache reads/writes (Anthropic raw, OpenLIT).
    input_excludes_cache: bool | None = None
    reported_cost: Decimal | None = None
    # An aggregate span (agent run, workflow total): its usage sums its children's; never counted.
    aggregate: bool | None = None
    response_id: str | None = None
    streaming: bool | None = None
    usage_status: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    conversation_id: str | None = None
    feature: str | None = None
    team: str | None = None
    agent: str | None = None

    def merge(self, other: Extracted) -> None:
        """Fill this one's missing fields from `other` (a lower-priority normalizer)."""
        for f in _FIELDS:
            if getattr(self, f) is None:
                value = getattr(other, f)
                if value is not None:
                    setattr(self, f, value)

    @property
    def has_usage(self) -> bool:
        return self.input is not None or self.output is not None


_FIELDS = tuple(f.name for f in fields(Extracted))

Normalizer = Callable[[Span], "Extracted | None"]


def first(attrs: dict[str, Any], keys: tuple[str, ...]) -> Any:
    """The value of the first key present (not None): aliases are alternatives, never summed."""
    for key in keys:
        value = attrs.get(key)
        if value is not None:
            return value
    return None


def token_count(attrs: dict[str, Any], keys: tuple[str, ...]) -> int | None:
    """A token count, or None when absent or unknown (negative counts mean unknown in old SDKs)."""
    for key in keys:
        value = attrs.get(key)
        if value.__class__ is int:  # the usual case, first: every span pays for this call
            return value if value >= 0 else None
        if value is None or isinstance(value, bool):
            continue
        try:
            count = int(value)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an infinite double
            continue
        if count < 0:
            return None
        return count
    return None


def text(attrs: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:  # `first`, inlined: text() is called a dozen times per span
        value = attrs.get(key)
        if value is not None:
            if value.__class__ is str:
                return value or None
            if isinstance(value, list):
                return None
            value = str(value)
            return value or None
    return None


TEXT, COUNT = False, True  # what `read` reads: a text() or a token_count()


def read_python(attrs: dict[str, Any], spec: tuple[tuple[bool, tuple[str, ...]], ...]) -> tuple:
    """`read` without the compiled extension."""
    return tuple(token_count(attrs, keys) if is_count else text(attrs, keys) for is_count, keys in spec)


try:
    from .. import _otlp as _native
except ImportError:  # not built: read in Python
    _native = None


def read(attrs: dict[str, Any], spec: tuple[tuple[bool, tuple[str, ...]], ...]) -> tuple:
    """Many reads of one span's attributes at once: for each `(TEXT, keys)` of `spec` what
    `text(attrs, keys)` gives, for each `(COUNT, keys)` what `token_count(attrs, keys)` gives.

    One call instead of a dozen: with the compiled extension (ingest/_otlp.c) the usual values
    (a string, a non-negative int, a key absent) are read in C and any other value is handed to
    `text`/`token_count` themselves, so the answers are theirs."""
    if _native is None:
        return read_python(attrs, spec)
    return _native.read_attributes(attrs, spec, text, token_count)


_KEY_INDEX: tuple[Any, str] = (None, "")  # (attributes, "\n" + their keys joined by "\n")


def has_key_prefix(attrs: dict[str, Any], prefix: str) -> bool:
    """Whether any key of `attrs` starts with `prefix`: `any(k.startswith(prefix) for k in attrs)`.

    Several normalizers ask this of every span; one string of the span's keys, built once and
    kept for the next question about the same attributes, answers each in a substring search.
    """
    global _KEY_INDEX
    index = _KEY_INDEX
    if index[0] is not attrs:
        index = (attrs, "\n" + "\n".join(attrs))
        _KEY_INDEX = index
    if "\n" + prefix not in index[1]:
        return False
    return any(k.startswith(prefix) for k in attrs)  # a key holding "\n" could fake a match


@dataclass(frozen=True, slots=True)
class Claim:
    """Which spans a library normalizer recognises as its own: any of its scope names (exact or
    by prefix), span name prefixes, attribute keys (exact or by prefix), attribute or resource
    values. `claim(span)` says whether the span is the library's.

    Declared rather than written as code so that `Claim.union` of every library's claim is
    exactly "does any library recognise this span": the ingest asks that once per span and
    skips the library normalizers for the plain-convention spans that are most of the traffic.
    """

    scopes: frozenset[str] = frozenset()
    scope_prefixes: tuple[str, ...] = ()
    name_prefixes: tuple[str, ...] = ()
    keys: frozenset[str] = frozenset()
    key_prefixes: tuple[str, ...] = ()
    values: tuple[tuple[str, Any], ...] = ()  # (attribute key, value) pairs
    resource_values: tuple[tuple[str, Any], ...] = ()

    def __call__(self, span: Span) -> bool:
        scope = span.scope_name
        if scope in self.scopes or (self.scope_prefixes and scope.startswith(self.scope_prefixes)):
            return True
        if self.name_prefixes and span.name.startswith(self.name_prefixes):
            return True
        a = span.attributes
        if not self.keys.isdisjoint(a):
            return True
        for key, value in self.values:
            if a.get(key) == value:
                return True
        for key, value in self.resource_values:
            if span.resource.get(key) == value:
                return True
        if self.key_prefixes:
            # One string of the keys and a substring search per prefix (as has_key_prefix does):
            # less than half the cost of testing every key against the prefixes.
            keys = "\n" + "\n".join(a)
            for prefix in self.key_prefixes:
                if "\n" + prefix in keys and any(k.startswith(prefix) for k in a):  # (a key may hold "\n")
                    return True
        return False

    @classmethod
    def union(cls, claims: Iterable[Claim]) -> Claim:
        """A claim that holds exactly when one of `claims` holds."""
        claims = list(claims)
        return cls(
            scopes=frozenset().union(*(c.scopes for c in claims)),
            scope_prefixes=tuple(p for c in claims for p in c.scope_prefixes),
            name_prefixes=tuple(p for c in claims for p in c.name_prefixes),
            keys=frozenset().union(*(c.keys for c in claims)),
            key_prefixes=tuple(dict.fromkeys(p for c in claims for p in c.key_prefixes)),
            values=tuple(v for c in claims for v in c.values),
            resource_values=tuple(v for c in claims for v in c.resource_values),
        )


_COST_QUANTUM = Decimal("1e-12")  # the stored precision (Decimal(18, 12))
_COST_BOUND = Decimal(10**6)  # beyond what one call can cost: left as is, refused at validation


def money(attrs: dict[str, Any], keys: tuple[str, ...]) -> Decimal | None:
    """A reported cost as an exact Decimal at the stored precision (through str, so 0.1 stays
    0.1; a float's noise like ...99999994 rounds away at 12 places)."""
    value = first(attrs, keys)
    if value is None or isinstance(value, bool):
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return None
    if not amount.is_finite() or amount < 0:
        return None
    # quantize() of a huge amount would need more digits than the context holds (InvalidOperation).
    return amount.quantize(_COST_QUANTUM) if amount < _COST_BOUND else amount


# Deprecated gen_ai.system values -> gen_ai.provider.name values.
_PROVIDER_ALIASES = {
    "vertex_ai": "gcp.vertex_ai",
    "gemini": "gcp.gemini",
    "google": "gcp.gemini",
    "az.ai.inference": "azure.ai.inference",
    "az.ai.openai": "azure.ai.openai",
    "azure": "azure.ai.openai",
    "azure_openai": "azure.ai.openai",
    "xai": "x_ai",
    "bedrock": "aws.bedrock",
    "mistralai": "mistral_ai",
    "mistral": "mistral_ai",
    "watsonx": "ibm.watsonx.ai",
}


def canonical_provider(name: str | None) -> str | None:
    if not name:
        return None
    lowered = name.strip().lower()
    return _PROVIDER_ALIASES.get(lowered, lowered)
