"""Attribution across exports: the writer's memory of which span lends which user to which row.

Within one export the normalize stage fills a counted row's missing attribution (user, session,
feature, ...) from its ancestors. But a parent usually ends, and so is exported, after its
children: the span that names the user (an HTTP handler, a workflow span, a framework span)
often arrives in a later export than the counted leaf. The writer keeps a `Lineage`:

- every span seen lately, counted or not, with its parent and the attribution it lends
  (`normalize.Link.attribution` for spans not counted, the record's own for counted ones);
- every counted row still lacking attribution, waiting on its nearest ancestor not seen yet.

When that ancestor arrives, the waiting row is completed (nearest ancestor first, walking the
remembered parents up). A row still in the batch being selected is completed in place; a row
already stored is corrected in the same group commit as the ancestor's request: a cancelling
copy (sign -1) and the completed row (sign +1). Every rollup multiplies by sign, so totals move
from "no user" to the user exactly and the first figure stays visible. Attribution is only ever
completed, never rewritten: a field once set stays.

Why a correction and not a delay (holding attribution-less rows a few seconds for the ancestor):
a request is acknowledged only after its rows are committed, and an SDK's BatchSpanProcessor
sends one export at a time. The ancestor typically sits in the *next* export of the same
exporter, queued behind the very request being held, so holding would stall that exporter for
the whole delay on most traces (and acknowledging early instead would lose rows on a crash).
A correction costs two extra rows only for traces that need one and never delays an ack.

Limits: memory is bounded (`limit` spans and waiting ancestors, oldest forgotten first) and
lives in one writer process, like the leaf rule's; an ancestor that arrives after it was
forgotten, or after a restart, is not applied. Only the writer thread touches it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import replace
from operator import attrgetter

from .records import Attribution, UsageRecord

_LIMIT = 200_000
_MAX_DEPTH = 64  # ancestor walk bound: guards against cyclic parent links in hostile input
_FIELDS = Attribution.__slots__
_SNAPSHOT = attrgetter(*_FIELDS)  # an Attribution's fields as one tuple, in C


class _Bounded(OrderedDict):
    """Insertion-ordered, forgetting its oldest entry past `limit`. The per-span paths below spell
    `put` out (`d[key] = value`, then `popitem(False)` when over): same effect, no method call."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key, value) -> None:
        self[key] = value
        if len(self) > self.limit:
            self.popitem(last=False)


def _lends(attribution: Attribution | None) -> bool:
    return attribution is not None and any(_SNAPSHOT(attribution))


class Lineage:
    def __init__(self, limit: int = _LIMIT) -> None:
        self._spans = _Bounded(limit)  # key -> (parent key or b"", attribution lent or None)
        self._waiting = _Bounded(limit)  # key of an ancestor not seen yet -> [row keys]
        # A trace's root span is an ancestor of every span in it: its attribution reaches rows
        # whose chain is broken by a span that never arrives (e.g. one a collector filtered out).
        self._roots = _Bounded(limit)  # trace id -> attribution its root span lends
        self._trace_waits = _Bounded(limit)  # trace id -> ancestor keys its rows wait on
        # Rows corrected in the batch being selected (a cancel must copy their latest version).
        self._latest: dict[bytes, UsageRecord] = {}
        self._consumed: list[tuple[bytes, list[bytes]]] = []

    # --- one batch ------------------------------------------------------------------------------

    def begin(self) -> dict[bytes, UsageRecord]:
        """A new batch is being selected. Returns the dict of its corrected rows (`latest`), for
        a caller that asks about every row."""
        self._latest = {}
        self._consumed = []
        return self._latest

    def failed(self) -> None:
        """The batch's insert failed: rows that stopped waiting in it wait again for the retry."""
        for ancestor, keys in self._consumed:
            self._waiting.put(ancestor, keys + [k for k in self._waiting.get(ancestor, ()) if k not in keys])
        self._consumed = []
        self._latest = {}

    def latest(self, key: bytes) -> UsageRecord | None:
        """The version of a stored row corrected in this batch, if any (a cancel must copy it)."""
        return self._latest.get(key)

    # --- spans arriving -------------------------------------------------------------------------

    def arrive(
        self,
        links: Iterable[tuple[bytes, bytes]],
        records: Iterable[UsageRecord],
        fresh: dict[bytes, UsageRecord],
        stored: Callable[[bytes], UsageRecord | None],
        cancelled: Iterable[bytes] = (),
    ) -> list[UsageRecord]:
        """Remember one export's spans and complete the rows that were waiting on them.

        `fresh` holds this batch's rows not inserted yet (completed in place); `stored(key)` gives
        a stored row's current version. Returns the correction rows to insert (-1 and +1 pairs).
        """
        arrived: list[bytes] = []
        roots: list[tuple[bytes, Attribution]] = []
        spans, limit, forget = self._spans, self._spans.limit, self._spans.popitem
        for link in links:
            key, parent = link[0], link[1]
            lent = getattr(link, "attribution", None)
            lends = lent is not None and any(_SNAPSHOT(lent))
            spans[key] = (parent, lent if lends else None)
            if len(spans) > limit:
                forget(False)
            arrived.append(key)
            if not parent and lends:
                roots.append((key[:16], lent))
        for record in records:
            key = record.trace_id + record.span_id
            parent = record.trace_id + record.parent_span_id if record.parent_span_id else b""
            attribution = record.attribution
            lends = any(_SNAPSHOT(attribution))
            spans[key] = (parent, attribution if lends else None)
            if len(spans) > limit:
                forget(False)
            arrived.append(key)
            if not parent and lends:
                roots.append((record.trace_id, attribution))
        corrections: list[UsageRecord] = []
        gone = set(cancelled)
        take = self._waiting.pop
        for ancestor in arrived:
            waiting = take(ancestor, None)
            if not waiting:
                continue
            self._consumed.append((ancestor, waiting))
            for key in waiting:
                self._complete(key, lambda a, k=key, s=ancestor: self._fill(k, a, s), fresh, stored, gone, corrections)
        # Nearer ancestors first, then the roots: rows of these traces still waiting on a span
        # that may never come take what the root lends.
        for trace, lent in roots:
            self._roots.put(trace, lent)
            for ancestor in self._trace_waits.get(trace, ()):
                for key in self._waiting.get(ancestor, ()):
                    self._complete(key, lambda a, r=lent: _fill_from(a, r), fresh, stored, gone, corrections)
        return corrections

    def _complete(self, key, fill, fresh, stored, gone, corrections) -> None:
        """Apply `fill` to one waiting row: in place if not stored yet, else as a -1/+1 correction."""
        if key in fresh:
            fill(fresh[key].attribution)
            return
        current = self._latest.get(key) or stored(key)
        if current is None or key in gone:
            return  # taken out by the leaf rule, or forgotten
        attribution = replace(current.attribution)
        if fill(attribution):
            completed = replace(current, attribution=attribution, sign=1)
            corrections += [replace(current, sign=-1), completed]
            self._latest[key] = completed

    def attribute(self, record: UsageRecord) -> None:
        """A row just counted: complete it from remembered ancestors, or let it wait for them."""
        if record.parent_span_id:  # (a root has no ancestor: nothing to fill or wait for)
            self._fill(record.trace_id + record.span_id, record.attribution,
                       record.trace_id + record.parent_span_id, False)

    def _fill(self, key: bytes, attribution: Attribution, start: bytes, changed: bool = True) -> bool:
        """Fill `attribution` from `start` up, nearest first; wait on the first ancestor not seen.
        Returns whether any field was filled (always False when not asked: `changed` False)."""
        before = _SNAPSHOT(attribution) if changed else None
        ancestor = start
        spans = self._spans
        for _ in range(_MAX_DEPTH):
            if not ancestor or attribution.complete():
                break
            entry = spans.get(ancestor)
            if entry is None:
                waiting_on = self._waiting
                waiting = waiting_on.get(ancestor)
                if waiting is None:
                    waiting_on[ancestor] = [key]
                    if len(waiting_on) > waiting_on.limit:
                        waiting_on.popitem(False)
                elif key not in waiting:
                    waiting.append(key)
                trace = ancestor[:16]
                trace_waits = self._trace_waits
                waits = trace_waits.get(trace)
                if waits is None:
                    trace_waits[trace] = [ancestor]
                    if len(trace_waits) > trace_waits.limit:
                        trace_waits.popitem(False)
                elif ancestor not in waits:
                    waits.append(ancestor)
                root = self._roots.get(trace)
                if root is not None:
                    attribution.fill_from(root)
                break
            ancestor, lent = entry
            if lent is not None:
                attribution.fill_from(lent)
        return changed and before != _SNAPSHOT(attribution)


def _fill_from(attribution: Attribution, lent: Attribution) -> bool:
    before = _SNAPSHOT(attribution)
    attribution.fill_from(lent)
    return before != _SNAPSHOT(attribution)


class SiblingCalls:
    """One provider call traced by two sibling instrumentations, exported apart, counts once.

    Within one export the normalize stage keeps one span per (trace, response id, model); across
    exports the writer asks here: the first row of a call is counted, a later sibling's row is a
    duplicate. Bounded like `Lineage`; only the writer thread touches it.
    """

    def __init__(self, limit: int = _LIMIT) -> None:
        self._calls = _Bounded(limit)  # (trace, response id, model) -> counted key
        self._batch: dict[tuple, bytes] = {}

    def begin(self) -> None:
        self._batch = {}

    def duplicate(self, record: UsageRecord) -> bool:
        """Whether another span of this record's call was counted already (else remember this one)."""
        if not record.response_id:
            return False
        call = (record.trace_id, record.response_id, record.model)
        key = record.trace_id + record.span_id
        counted = self._batch.get(call) or self._calls.get(call)
        if counted is not None:
            return counted != key
        self._batch[call] = key
        return False

    def committed(self) -> None:
        calls, limit, forget = self._calls, self._calls.limit, self._calls.popitem
        for call, key in self._batch.items():
            calls[call] = key
            if len(calls) > limit:
                forget(False)
        self._batch = {}

    def failed(self) -> None:
        self._batch = {}
