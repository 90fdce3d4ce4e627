"""Normalize stage: decoded spans of one export -> one `UsageRecord` per provider call.

    result = normalize(spans, max_attribute_length=4096)
    result.records, result.rejected, result.messages

Each convention's normalizer (one module each) extracts what it recognises; the first non-None
value per field wins, in `NORMALIZERS` order. Then:
- token counts are converted to the conventions' inclusive meaning;
- the leaf rule: a span whose descendant in the same export also carries usage is not counted
  (framework span over SDK span over HTTP span: count the deepest), and aggregate spans (agent
  runs, workflow totals) never are;
- attribution missing on the counted span is taken from its ancestors in the same export.
Pure: no I/O, no state across exports (the writer handles what crosses exports: every span not
counted is passed on as a `Link` with the attribution it can lend to descendants in later exports).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from spanmeter import semconv as sc

from ..records import Attribution, Span, TokenUsage, UsageRecord
from . import (
    anthropic_sdk,
    langsmith,
    litellm,
    logfire,
    openinference,
    openlit,
    openllmetry,
    semconv,
    vercel,
)
from .base import Claim, Extracted, Normalizer

# Most specific first: a library's own keys before the generic conventions it also writes. Each
# library normalizer recognises its own spans (scope, resource or marker keys) and returns None
# for anyone else's, so one library's meaning of a shared key never leaks onto another's spans.
NORMALIZERS: tuple[tuple[str, Normalizer], ...] = (
    (anthropic_sdk.NAME, anthropic_sdk.extract),
    (openlit.NAME, openlit.extract),
    (litellm.NAME, litellm.extract),
    (logfire.NAME, logfire.extract),
    (vercel.NAME, vercel.extract),
    (openinference.NAME, openinference.extract),
    (langsmith.NAME, langsmith.extract),
    (openllmetry.NAME, openllmetry.extract),
    (semconv.NAME, semconv.extract),
)

_RANK = {name: rank for rank, (name, _) in enumerate(NORMALIZERS)}
# Whether any library normalizer recognises a span, asked once: each returns None for a span its
# CLAIM does not hold, so a span no library claims is read by the conventions' normalizer alone.
_LIBRARIES = (anthropic_sdk, openlit, litellm, logfire, vercel, openinference, langsmith, openllmetry)
# A normalizer added to NORMALIZERS without its claim here would never be asked: refuse to start.
assert {m.NAME for m in _LIBRARIES} == {name for name, _ in NORMALIZERS} - {semconv.NAME}, "a normalizer's CLAIM is missing"
_ANY_LIBRARY = Claim.union(module.CLAIM for module in _LIBRARIES)
_CONVENTIONS = semconv.extract
_MAX_DEPTH = 64  # ancestor walk bound: guards against cyclic parent links in hostile input


class Link(tuple):
    """(key, parent key) of a span not counted, plus the attribution it lends to its descendants.

    Unpacks as the plain pair; `attribution` is None when the span carries none. A root span is
    linked (with parent key b"") only when it has attribution to lend.
    """

    attribution: Attribution | None

    def __new__(cls, key: bytes, parent: bytes, attribution: Attribution | None = None) -> Link:
        link = super().__new__(cls, (key, parent))
        link.attribution = attribution
        return link


@dataclass(slots=True)
class Normalized:
    records: list[UsageRecord] = field(default_factory=list)
    # A `Link` for every span not counted, so the writer can follow ancestry (leaf rule) and
    # attribution across exports.
    links: list[tuple[bytes, bytes]] = field(default_factory=list)
    rejected: int = 0
    messages: list[str] = field(default_factory=list)


def extract(span: Span) -> tuple[Extracted | None, str]:
    """Merge every normalizer's view of one span; returns (merged, name of the source of usage)."""
    if not _ANY_LIBRARY(span):
        found = _CONVENTIONS(span)
        return found, (semconv.NAME if found is not None else "")
    merged: Extracted | None = None
    source = ""
    for name, normalizer in NORMALIZERS:
        found = normalizer(span)
        if found is None:
            continue
        if merged is None:
            merged = found
        else:
            merged.merge(found)
        if not source:
            source = name  # the most specific convention that recognised the span
    return merged, source


def is_usage(found: Extracted | None) -> bool:
    """A span is a usage record when it reports tokens, or says the call's usage went missing."""
    if found is None:
        return False
    return found.has_usage or found.usage_status in (sc.USAGE_MISSING, sc.USAGE_INCOMPLETE)


def normalize(spans: list[Span], *, max_attribute_length: int = 4096) -> Normalized:
    result = Normalized()
    by_key: dict[bytes, Span] = {}
    extracted: dict[bytes, tuple[Extracted, str]] = {}
    for span in spans:
        key = span.trace_id + span.span_id
        by_key[key] = span
        found, source = extract(span)
        if found is not None:
            extracted[key] = (found, source)

    # A trace's root span is an ancestor of every span in it, even one whose chain is broken by
    # a span missing from this export (a collector's filter may drop it).
    roots = {span.trace_id: key for key, span in by_key.items() if not span.parent_span_id and key in extracted}
    usage_keys = [key for key, (found, _) in extracted.items() if is_usage(found)]
    # Leaf rule: every ancestor of a usage span is covered by it.
    covered: set[bytes] = set()
    for key in usage_keys:
        span = by_key[key]
        # (most spans' parent is not in the export: no generator for them)
        if span.parent_span_id and span.trace_id + span.parent_span_id in by_key:
            for ancestor in _ancestors(by_key, span):
                if ancestor in covered:
                    break
                covered.add(ancestor)

    leaves = [key for key in usage_keys if key not in covered and not extracted[key][0].aggregate]
    # Two sibling instrumentations on one call report the same response id: count it once, from
    # the most specific source (the provider SDK's own span before a wrapper's).
    best: dict[tuple[bytes, str, str], bytes] = {}
    for key in leaves:
        found, source = extracted[key]
        if found.response_id:
            call = (key[:16], found.response_id, found.response_model or found.request_model or "")
            other = best.get(call)
            if other is None or _RANK[source] < _RANK[extracted[other][1]]:
                best[call] = key
    chosen = set(best.values())
    counted: set[bytes] = set()
    records = result.records
    for key in leaves:
        found, source = extracted[key]
        if found.response_id and key not in chosen:
            continue
        span = by_key[key]
        record = _record(span, found, source)
        attribution = record.attribution
        root = roots.get(span.trace_id)
        parent = span.parent_span_id
        if (root is not None and root != key) or (parent and span.trace_id + parent in by_key):
            chain = [key, *_ancestors(by_key, span)]
            if root is not None and root not in chain:
                chain.append(root)
            for ancestor in chain[1:]:
                if attribution.complete():
                    break
                parent_found = extracted.get(ancestor)
                if parent_found is not None:
                    _fill_from_found(attribution, parent_found[0])
        problem = _invalid(record, max_attribute_length)
        if problem:
            result.rejected += 1
            result.messages.append(f"span {span.span_id.hex()}: {problem}")
            continue
        records.append(record)
        counted.add(key)
    for key, span in by_key.items():
        if key in counted:
            continue
        found = extracted.get(key)
        lent = _attribution(found[0]) if found is not None else None
        if lent is not None and not any(getattr(lent, name) for name in Attribution.__slots__):
            lent = None
        if span.parent_span_id:
            result.links.append(Link(key, span.trace_id + span.parent_span_id, lent))
        elif lent is not None:
            result.links.append(Link(key, b"", lent))
    return result


def _ancestors(by_key: dict[bytes, Span], span: Span):
    """Keys of the span's ancestors present in this export, nearest first."""
    parent = span.parent_span_id
    for _ in range(_MAX_DEPTH):
        if not parent:
            return
        key = span.trace_id + parent
        ancestor = by_key.get(key)
        if ancestor is None:
            return
        yield key
        parent = ancestor.parent_span_id


def _attribution(found: Extracted) -> Attribution:
    return Attribution(
        user_id=found.user_id or "",
        session_id=found.session_id or "",
        conversation_id=found.conversation_id or "",
        feature=found.feature or "",
        team=found.team or "",
        agent=found.agent or "",
    )


def _fill_from_found(attribution: Attribution, found: Extracted) -> None:
    """`attribution.fill_from(_attribution(found))` without building the Attribution (per span)."""
    if not attribution.user_id and found.user_id:
        attribution.user_id = found.user_id
    if not attribution.session_id and found.session_id:
        attribution.session_id = found.session_id
    if not attribution.conversation_id and found.conversation_id:
        attribution.conversation_id = found.conversation_id
    if not attribution.feature and found.feature:
        attribution.feature = found.feature
    if not attribution.team and found.team:
        attribution.team = found.team
    if not attribution.agent and found.agent:
        attribution.agent = found.agent


def _usage(found: Extracted) -> TokenUsage:
    cache_read = found.cache_read or 0
    cache_write = found.cache_write or 0
    input_tokens = found.input or 0
    # Inclusive meaning: input counts cache reads and writes. A source that excludes them says
    # so, and a count smaller than its own cached part can only be exclusive.
    if found.input_excludes_cache or input_tokens < cache_read + cache_write:
        input_tokens += cache_read + cache_write
    output = found.output or 0
    reasoning = found.reasoning or 0
    # (input, cache_read, cache_write, output, reasoning): reasoning is part of output, never added on top
    return TokenUsage(input_tokens, cache_read, cache_write, output if output > reasoning else reasoning, reasoning)


def _record(span: Span, found: Extracted, source: str) -> UsageRecord:
    status = found.usage_status or sc.USAGE_REPORTED
    if not found.has_usage and status == sc.USAGE_REPORTED:
        status = sc.USAGE_MISSING
    service = span.resource.get(sc.SERVICE_NAME)
    # Positional, in the dataclasses' field order: keyword arguments cost ~1 µs more per record.
    return UsageRecord(
        span.trace_id,
        span.span_id,
        span.start_ns,
        service if service.__class__ is str else str(service) if service is not None else "",
        found.provider or "",
        found.operation or "",
        found.request_model or "",
        found.response_model or "",
        _usage(found),
        Attribution(found.user_id or "", found.session_id or "", found.conversation_id or "", found.feature or "",
                    found.team or "", found.agent or ""),
        source or "semconv",
        status,
        bool(found.streaming),
        max(span.end_ns - span.start_ns, 0) // 1_000_000,
        found.response_id or "",
        found.reported_cost,
        None,
        "",
        "",
        1,
        span.parent_span_id,
    )


_STRING_FIELDS = ("service_name", "provider", "operation", "request_model", "response_model")
_MAX_TOKENS = 2**32 - 1  # UInt32 columns: one call never reports four billion tokens
_MIN_TIME_NS = 946_684_800 * 10**9  # 2000-01-01
_MAX_TIME_NS = 7_258_118_400 * 10**9  # 2200-01-01
_MAX_REPORTED_COST = 10**6  # Decimal(18, 12) holds less than a million dollars per call


def _invalid(record: UsageRecord, limit: int) -> str:
    """Why a record cannot be stored as it is, or "" when it can."""
    a = record.attribution
    if max(len(record.service_name), len(record.provider), len(record.operation), len(record.request_model),
           len(record.response_model), len(a.user_id), len(a.session_id), len(a.conversation_id),
           len(a.feature), len(a.team), len(a.agent)) > limit:
        for name in _STRING_FIELDS:
            if len(getattr(record, name)) > limit:
                return f"{name} longer than {limit} characters"
        for name in Attribution.__slots__:
            if len(getattr(a, name)) > limit:
                return f"{name} longer than {limit} characters"
    usage = record.usage
    if max(usage.input, usage.output, usage.cache_read, usage.cache_write, usage.reasoning) > _MAX_TOKENS:
        return "token count out of range"
    if not _MIN_TIME_NS <= record.event_time_ns < _MAX_TIME_NS:
        return "start time missing or out of range"
    if record.reported_cost_usd is not None and record.reported_cost_usd >= _MAX_REPORTED_COST:
        return "reported cost out of range"
    return ""
