"""Repricing: make stored usage carry the cost the current price book gives it, keeping history.

    plan = reprice_day(store, book, day, model=None, apply=True)   # one UTC day, one insert
    summary = reprice(store, book, since, until)                    # day by day, then the run row

For every row in force (a key's rows summed by sign: earlier corrections netted out) whose cost
under `book` differs from the stored cost, including rows stored unpriced that now have a price,
one insert adds a cancelling row (an exact copy of the stored row, sign -1) and the corrected row
(sign +1, new cost, pricing_status and price_version). Every rollup multiplies by sign, so each
stays exact, and the old figure stays in usage_events beside its cancellation
(`price_corrections` lists them; `reprice_runs` records each run). Running it again changes
nothing: the rows in force then already carry the book's cost.

Left alone, and counted in the summary:
- a priced row the book can no longer price (a removed override, a prices file not loaded):
  turning it unpriced is almost always a mistake, so it needs `unprice=True`;
- a key whose rows do not net to one row in force (a leaf-rule cancel): nothing to correct;
- on a direct connection, rows inserted in the last `settle_seconds`: an ingest writer may still
  cancel such a row under the leaf rule by copying the figure it stored, which would undo a
  correction made behind its back. Through the service, repricing runs on the writer's own thread
  (`Writer.call`) and tells it the new figures (`Writer.recount`), so no row needs to settle.

Only the cost columns change: tokens, attribution and times are copied as stored, and a price
version that changed without changing the cost (a dataset upgrade) is not a correction.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from .price import PriceBook
from .records import Attribution, TokenUsage, UsageRecord

__all__ = ["RepriceSummary", "reprice", "reprice_day"]

_MAX_ROWS_PER_INSERT = 50_000  # pairs never straddle two inserts

# The stored row, as read back: every column of a UsageRecord, ids in hex, time in ms.
_COLUMNS = (
    "lower(hex(trace_id))", "lower(hex(span_id))", "toUnixTimestamp64Milli(event_time)", "service_name",
    "user_id", "session_id", "conversation_id", "feature", "team", "agent", "provider", "operation",
    "request_model", "response_model", "input_tokens", "cache_read_tokens", "cache_write_tokens",
    "output_tokens", "reasoning_tokens", "usage_status", "cost_usd", "pricing_status", "price_version",
    "reported_cost_usd", "streaming", "duration_ms", "source",
)  # fmt: skip
_GROUP = (
    "trace_id, span_id, event_time, service_name, user_id, session_id, conversation_id, feature, team, agent, "
    "provider, operation, request_model, response_model, input_tokens, cache_read_tokens, cache_write_tokens, "
    "output_tokens, reasoning_tokens, usage_status, cost_usd, pricing_status, price_version, reported_cost_usd, "
    "streaming, duration_ms, source"
)


@dataclass(slots=True)
class Change:
    """Corrections of one kind: same provider, model, old and new status and version."""

    provider: str
    model: str
    old_status: str
    old_version: str
    new_status: str
    new_version: str
    rows: int = 0
    old_cost_usd: Decimal | None = None
    new_cost_usd: Decimal | None = None


@dataclass(slots=True)
class RepriceSummary:
    since: str = ""
    until: str = ""
    model: str = ""
    applied: bool = False
    run_id: str = ""
    rows_examined: int = 0
    rows_corrected: int = 0
    newly_priced: int = 0
    repriced: int = 0
    would_unprice: int = 0  # priced rows the book cannot price, left alone (unprice=False)
    unpriced: int = 0  # priced rows turned unpriced (unprice=True)
    inconsistent: int = 0
    too_recent: int = 0
    cost_before_usd: Decimal = Decimal(0)
    cost_after_usd: Decimal = Decimal(0)
    changes: dict[tuple[str, ...], Change] = field(default_factory=dict)

    def add(self, other: RepriceSummary) -> None:
        for name in ("rows_examined", "rows_corrected", "newly_priced", "repriced", "would_unprice", "unpriced",
                     "inconsistent", "too_recent", "cost_before_usd", "cost_after_usd"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for key, change in other.changes.items():
            mine = self.changes.get(key)
            if mine is None:
                self.changes[key] = replace(change)
                continue
            mine.rows += change.rows
            mine.old_cost_usd = _plus(mine.old_cost_usd, change.old_cost_usd)
            mine.new_cost_usd = _plus(mine.new_cost_usd, change.new_cost_usd)

    def to_json(self) -> dict[str, Any]:
        body = {k: v for k, v in asdict(self).items() if k != "changes"}
        body["changes"] = [asdict(c) for c in sorted(self.changes.values(), key=lambda c: (c.provider, c.model))]
        return body

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> RepriceSummary:
        summary = cls(**{k: v for k, v in body.items() if k != "changes"})
        for name in ("cost_before_usd", "cost_after_usd"):
            setattr(summary, name, Decimal(str(getattr(summary, name))))
        for raw in body.get("changes", []):
            change = Change(**raw)
            for name in ("old_cost_usd", "new_cost_usd"):
                value = getattr(change, name)
                setattr(change, name, None if value is None else Decimal(str(value)))
            summary.changes[_change_key(change)] = change
        return summary


def _plus(a: Decimal | None, b: Decimal | None) -> Decimal | None:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def _change_key(change: Change) -> tuple[str, ...]:
    return (change.provider, change.model, change.old_status, change.old_version, change.new_status, change.new_version)


def _model_condition(model: str | None) -> tuple[str, dict[str, Any]]:
    if not model:
        return "", {}
    # The model as stored, or a dated snapshot of it (gpt-4o-2024-08-06 for gpt-4o).
    pattern = "^" + re.escape(model.strip()) + r"(-20\d\d-?\d\d-?\d\d)?$"
    return (
        " AND match(if(response_model != '', response_model, request_model), {model_re:String})",
        {"model_re": pattern},
    )


def _record(row: tuple[Any, ...]) -> UsageRecord:
    (trace, span, ms, service, user, session, conversation, feature, team, agent, provider, operation,
     request_model, response_model, inp, cache_read, cache_write, out, reasoning, usage_status, cost,
     pricing_status, price_version, reported, streaming, duration, source) = row  # fmt: skip
    return UsageRecord(
        trace_id=bytes.fromhex(trace),
        span_id=bytes.fromhex(span),
        event_time_ns=int(ms) * 1_000_000,
        service_name=service,
        provider=provider,
        operation=operation,
        request_model=request_model,
        response_model=response_model,
        usage=TokenUsage(int(inp), int(cache_read), int(cache_write), int(out), int(reasoning)),
        attribution=Attribution(user, session, conversation, feature, team, agent),
        source=source,
        usage_status=usage_status,
        streaming=bool(streaming),
        duration_ms=int(duration),
        reported_cost_usd=reported,
        cost_usd=cost,
        pricing_status=pricing_status,
        price_version=price_version,
    )


def _day_bounds(day: date, since: datetime, until: datetime) -> tuple[datetime, datetime]:
    start = max(datetime.combine(day, datetime.min.time(), UTC), since)
    end = min(datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC), until)
    return start, end


def reprice_day(
    store: Any,
    book: PriceBook,
    start: datetime,
    end: datetime,
    *,
    model: str | None = None,
    apply: bool = False,
    unprice: bool = False,
    settle_seconds: int = 0,
    recount: Callable[[Iterable[UsageRecord]], None] | None = None,
) -> RepriceSummary:
    """Reprice the rows with event times in [start, end) (meant to be at most a day: one read).

    `apply=False` computes what would change and writes nothing. `recount` is the writer's, when
    this runs on the writer thread."""
    condition, params = _model_condition(model)
    params.update({"start": int(start.timestamp() * 1000), "end": int(end.timestamp() * 1000)})
    recent = ""
    if settle_seconds > 0:
        recent = f", max(inserted_at) > now() - INTERVAL {int(settle_seconds)} SECOND AS recent"
    result = store.query(
        f"SELECT {', '.join(_COLUMNS)}, sum(sign) AS net, count() OVER (PARTITION BY trace_id, span_id) AS groups"
        f"{recent} FROM {store.usage_table} "
        "WHERE event_time >= fromUnixTimestamp64Milli({start:Int64}) AND event_time < fromUnixTimestamp64Milli({end:Int64})"
        f"{condition} GROUP BY {_GROUP} HAVING net != 0",
        params,
    )
    summary = RepriceSummary()
    corrections: list[UsageRecord] = []
    width = len(_COLUMNS)
    for row in result.rows:
        net, groups = row[width], row[width + 1]
        summary.rows_examined += 1
        if net != 1 or groups != 1:
            summary.inconsistent += 1  # cancelled (net 0 is filtered), or not one row in force
            continue
        stored = _record(row[:width])
        fresh = replace(stored)
        book.price(fresh)
        if fresh.cost_usd == stored.cost_usd:
            continue  # same money: a new version string alone is no correction
        if recent and row[width + 2]:
            summary.too_recent += 1
            continue
        if fresh.cost_usd is None:
            if not unprice:
                summary.would_unprice += 1
                continue
            summary.unpriced += 1
        elif stored.cost_usd is None:
            summary.newly_priced += 1
        else:
            summary.repriced += 1
        summary.rows_corrected += 1
        summary.cost_before_usd += stored.cost_usd or 0
        summary.cost_after_usd += fresh.cost_usd or 0
        key = (stored.provider, stored.model, stored.pricing_status, stored.price_version, fresh.pricing_status,
               fresh.price_version)
        change = summary.changes.get(key)
        if change is None:
            change = summary.changes[key] = Change(*key)
        change.rows += 1
        change.old_cost_usd = _plus(change.old_cost_usd, stored.cost_usd)
        change.new_cost_usd = _plus(change.new_cost_usd, fresh.cost_usd)
        corrections.append(replace(stored, sign=-1))
        corrections.append(fresh)
    if apply and corrections:
        for first in range(0, len(corrections), _MAX_ROWS_PER_INSERT):
            store.insert_usage(corrections[first:first + _MAX_ROWS_PER_INSERT])
        if recount is not None:
            recount(corrections)
    return summary


def days(since: datetime, until: datetime) -> list[tuple[datetime, datetime]]:
    """[since, until) cut at UTC midnights."""
    out = []
    day = since.astimezone(UTC).date()
    while datetime.combine(day, datetime.min.time(), UTC) < until:
        start, end = _day_bounds(day, since, until)
        if start < end:
            out.append((start, end))
        day += timedelta(days=1)
    return out


def reprice(
    store: Any,
    book: PriceBook,
    since: datetime,
    until: datetime,
    *,
    model: str | None = None,
    apply: bool = False,
    unprice: bool = False,
    settle_seconds: int = 0,
    run_day: Callable[..., RepriceSummary] | None = None,
    progress: Callable[[int, int], None] | None = None,
    price_sources: str = "",
) -> RepriceSummary:
    """Reprice [since, until) day by day; on apply, record the run in `reprice_runs`.

    `run_day(start, end)` runs one day (the service passes one that runs on the writer thread)."""
    started = datetime.now(UTC)
    summary = RepriceSummary(since=since.isoformat(), until=until.isoformat(), model=model or "", applied=apply)

    def direct(start: datetime, end: datetime) -> RepriceSummary:
        return reprice_day(store, book, start, end, model=model, apply=apply, unprice=unprice,
                           settle_seconds=settle_seconds)

    chunks = days(since, until)
    for done, (start, end) in enumerate(chunks, 1):
        summary.add((run_day or direct)(start, end))
        if progress is not None:
            progress(done, len(chunks))
    if apply and summary.rows_corrected:
        summary.run_id = uuid.uuid4().hex
        store.insert_rows("reprice_runs", _RUN_COLUMNS, [[
            summary.run_id, started, datetime.now(UTC), since, until, model or "", price_sources,
            summary.rows_examined, summary.rows_corrected, summary.newly_priced, summary.repriced,
            summary.cost_before_usd, summary.cost_after_usd,
        ]])
    return summary


_RUN_COLUMNS = (
    "run_id", "started_at", "finished_at", "since", "until", "model_filter", "price_sources", "rows_examined",
    "rows_corrected", "newly_priced", "repriced", "cost_before_usd", "cost_after_usd",
)  # fmt: skip


def price_sources(book_files: Iterable[Any]) -> str:
    """What a book was built from, for the run record: override files and the dataset version."""
    from .price import DATASET_SOURCE

    files = [str(f) for f in book_files if f]
    return "; ".join([*(f"overrides {f}" for f in files), DATASET_SOURCE])


def format_summary(summary: RepriceSummary) -> str:
    verb = "corrected" if summary.applied else "would correct"
    was_unpriced = f" + {summary.newly_priced} unpriced" if summary.newly_priced else ""
    now_unpriced = f" + {summary.unpriced} unpriced" if summary.unpriced else ""
    lines = [
        f"rows in force examined: {summary.rows_examined}",
        f"{verb}: {summary.rows_corrected} rows ({summary.newly_priced} newly priced, {summary.repriced} repriced"
        + (f", {summary.unpriced} made unpriced" if summary.unpriced else "") + ")",
        f"cost of those rows: {_usd(summary.cost_before_usd)}{was_unpriced} -> {_usd(summary.cost_after_usd)}"
        f"{now_unpriced} (change {_usd(summary.cost_after_usd - summary.cost_before_usd, signed=True)})",
    ]
    if summary.would_unprice:
        lines.append(f"left priced: {summary.would_unprice} rows the current prices cannot price (pass --unprice to "
                     "store them unpriced; usually a prices file is missing)")
    if summary.too_recent:
        lines.append(f"left for a later run: {summary.too_recent} rows inserted too recently (an ingest writer may "
                     "still cancel them under the leaf rule)")
    if summary.inconsistent:
        lines.append(f"skipped: {summary.inconsistent} keys without exactly one row in force")
    if summary.run_id:
        lines.append(f"run {summary.run_id}: see SELECT * FROM reprice_runs / price_corrections")
    if summary.changes:
        rows = [("provider", "model", "rows", "old cost", "new cost", "old status/version", "new status/version")]
        for c in sorted(summary.changes.values(), key=lambda c: (c.provider, c.model, c.old_version)):
            rows.append((c.provider, c.model, str(c.rows), _usd(c.old_cost_usd), _usd(c.new_cost_usd),
                         f"{c.old_status} {c.old_version}".strip(), f"{c.new_status} {c.new_version}".strip()))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines.append("")
        lines.extend("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows)
    return "\n".join(lines)


def _usd(value: Decimal | None, *, signed: bool = False) -> str:
    if value is None:
        return "NULL"
    text = format(value.normalize(), "f") if value else "0"
    sign = "+" if signed and value > 0 else ""
    return f"{sign}${text}"

