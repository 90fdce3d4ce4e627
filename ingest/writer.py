"""Group commit with exactly-once: usage rows from many requests, one insert per batch.

    writer = Writer(store, settings, metrics)
    writer.start()
    outcome = await writer.submit(records, links)   # returns once the rows are committed

A request is acknowledged only after the batch holding its rows is inserted; if the insert
fails, every request in the batch gets `StoreUnavailable` (503: the exporter retries) and nothing
is remembered as stored. The writer thread is the one place that decides what is new:
- duplicates: (trace_id, span_id) keys of stored rows are remembered (bounded, loaded from the
  table at start); keys older than the memory, or from a batch whose insert failed, are checked
  against the table;
- the leaf rule across exports: once a usage span is counted, its ancestors are "covered" and are
  not counted when they arrive later; if an ancestor was counted first (it ended before its
  child, as an SDK span may around a stream), a cancelling row (sign -1) takes it back out.

An insert is not atomic across the rollups' materialized views: it can fail after the events
part is written (disk full, ClickHouse killed). So every batch carries a fresh
insert_deduplication_token and is written to a pending file before the insert. When an insert
fails for a transient reason, its requests get 503 at once, but the writer holds the batch and
re-sends it, identical and with the same token, before anything else (new requests get 503 until
it lands): ClickHouse writes only the parts that are missing, in the table and in each rollup,
and the batch's bookkeeping (keys, leaf rule, attribution) is completed only then. A pending
file found at start (the process was killed mid-insert) is re-sent the same way.

The rollups' views read a feed (0021), not usage_events: each batch is inserted into usage_events
without them (requests are answered then), and the batches committed since the last feed write are
fed together at most `rollup_delay_ms` later, so the views' fixed cost is paid once for many
batches. Until then a committed batch waits on disk, renamed from the pending file into the
pending-rollups directory; a feed of several batches is first written there as one file with its
token, and re-sent as it is until it lands. Files found at start are fed then. With
`rollup_delay_ms=0` each batch is fed before its requests are answered.

Work that writes rows of its own over stored rows (repricing) runs on this same thread with
`writer.call(fn)`, between two batches: nothing else inserts meanwhile, and `recount` tells the
writer which figure a row now stands at, so a later leaf-rule cancel takes out the corrected row.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from .config import Settings
from .errors import Overloaded, StoreUnavailable
from .lineage import Lineage, SiblingCalls
from .metrics import Metrics
from .records import UsageRecord
from .store import QueryError, Store, content_token, normalize_dsn, rollup_token, usage_arrow

log = logging.getLogger(__name__)

_RECENT_HOURS = 48  # how far back the startup load of stored keys reaches
_CANCELLABLE_ROWS = 100_000  # counted rows kept whole, so a late deeper leaf can cancel them


@dataclass(slots=True)
class Outcome:
    stored: int = 0
    duplicates: int = 0
    covered: int = 0


@dataclass(slots=True)
class _Submission:
    records: list[UsageRecord]
    links: list[tuple[bytes, bytes]]  # (key, parent key) of spans without usage
    future: Future = field(default_factory=Future)
    queued_at: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class _Held:
    """A batch whose insert failed transiently: re-sent as it is until it lands."""

    rows: list[UsageRecord]
    cancelled: list[bytes]
    table: Any  # the Arrow table, byte for byte what was sent
    token: str | None


@dataclass(slots=True)
class _Owed:
    """Batches committed to usage_events, not yet fed to the rollups (each in its own file)."""

    tables: list[Any] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    rows: int = 0
    since: float = 0.0  # when the oldest was committed (monotonic)


@dataclass(slots=True)
class _Feed:
    """One feed write, on disk as `file` until it lands (a lone batch's own file, or a merged one)."""

    table: Any
    token: str
    file: Path


class _Bounded(OrderedDict):
    """An insertion-ordered dict that forgets its oldest entries past `limit`."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key, value):
        self[key] = value
        if len(self) > self.limit:
            return self.popitem(last=False)
        return None

    def trim(self) -> None:
        """Forget the oldest entries past `limit` (after a batch of plain `d[key] = value`)."""
        while len(self) > self.limit:
            self.popitem(last=False)


class _Generations:
    """A set of at most about `limit` keys that forgets its older half at once.

    For the millions of keys the writer remembers: a key costs one set entry (~90 bytes with the
    key itself) instead of an ordered-dict node (~150), and adding a batch is one `set.update`.
    `newest_forgotten_ns` is the newest event time among forgotten keys: the floor under which a
    key must be looked up in the table instead.
    """

    __slots__ = ("limit", "half", "new", "old", "new_ns", "old_ns", "newest_forgotten_ns")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.half = max(limit // 2, 1)
        self.new: set[bytes] = set()
        self.old: set[bytes] = set()
        self.new_ns = self.old_ns = 0  # the newest event time in each generation
        self.newest_forgotten_ns = 0

    def __contains__(self, key: bytes) -> bool:
        return key in self.new or key in self.old

    def __len__(self) -> int:
        return len(self.new) + len(self.old)

    def update(self, keys: list[bytes], newest_ns: int = 0) -> None:
        start = 0
        while start < len(keys):
            if len(self.new) >= self.half:
                if self.old:
                    self.newest_forgotten_ns = max(self.newest_forgotten_ns, self.old_ns)
                self.old, self.old_ns = self.new, self.new_ns
                self.new, self.new_ns = set(), 0
            room = self.half - len(self.new)
            self.new.update(keys[start:start + room])
            self.new_ns = max(self.new_ns, newest_ns)
            start += room


class Writer:
    def __init__(self, store: Store, settings: Settings, metrics: Metrics) -> None:
        self.store = store
        self.max_rows = settings.batch_max_rows
        self.max_wait = settings.batch_max_wait_ms / 1000
        self.queue_max_rows = settings.queue_max_rows
        self.queue_max_delay = settings.queue_max_delay_ms / 1000
        self.hold = settings.batch_hold_ms / 1000
        self._last_insert_s = 0.0
        self.metrics = metrics
        self._pending: deque[_Submission] = deque()
        self._queued_rows = 0
        self._cond = threading.Condition()
        self._running = False
        self._thread: threading.Thread | None = None
        # Keys of rows known to be stored.
        self._stored = _Generations(settings.dedupe_keys)
        # Keys older than this were possibly forgotten: check the table for them.
        self._floor_ns = 0
        self._uncertain: set[bytes] = set()
        self._covered = _Generations(settings.dedupe_keys)
        self._rows = _Bounded(_CANCELLABLE_ROWS)  # key -> counted record
        self._covered_now: set[bytes] = set()
        # Attribution lent by spans that arrive after the rows they attribute (see lineage.py).
        self._lineage = Lineage()
        self._siblings = SiblingCalls()
        self._calls: deque[tuple[Callable[[Writer], Any], Future]] = deque()
        self._held: _Held | None = None
        self._pending_file = pending_file(settings)
        self.rollup_delay = settings.rollup_delay_ms / 1000
        # Fed sooner when no export has come for this long: the delay only pays under load.
        self.rollup_idle = min(_FEED_WHEN_IDLE_S, self.rollup_delay)
        self._last_submit = self._last_commit = 0.0
        self._rollup_dir = rollup_dir(settings)
        self._owed = _Owed()
        self._unsent: deque[_Feed] = deque()  # feed writes not stored yet: re-sent as they are, first
        self._feed_retry_at = 0.0
        self._just_fed = False  # a feed just ran: the next batch does not wait again (_take_batch)

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._replay_rollups()
        self._replay_pending_file()
        self._load_recent()
        self._running = True
        self._thread = threading.Thread(target=self._run, name="spanmeter-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._running = False
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._cond:
            calls, self._calls = list(self._calls), deque()
        for _, future in calls:
            if not future.done():
                future.set_exception(StoreUnavailable("the writer stopped"))

    def _replay_pending_file(self) -> None:
        """Re-send a batch whose insert a killed process never saw finish (same token: only what
        is missing is written)."""
        path = self._pending_file
        if not path.exists():
            return
        try:
            table = _load_arrow(path)
        except (OSError, pa.ArrowException) as exc:
            # Written to a temporary name and renamed: a torn file was never sent at all.
            log.warning("ignoring unreadable pending batch %s: %s", path, exc)
            path.unlink(missing_ok=True)
            return
        # (no token: written without one, and re-sent so, for ClickHouse to drop it by its content)
        token = (table.schema.metadata or {}).get(b"token", b"").decode() or None
        try:
            self.store.insert_usage_arrow(table, token, rollups=False)
        except StoreUnavailable as exc:
            # ClickHouse is down (disk full ...) as the service starts: serve anyway, holding the
            # batch as a failed insert is held (new exports get 503 until it lands).
            log.warning("pending batch of %d rows not re-sent yet, held: %s", table.num_rows, exc)
            self._held = _Held([], [], table, token)
            return
        log.warning("re-sent a pending batch of %d rows left by an interrupted insert", table.num_rows)
        self._owe(table, token)

    def _write_pending_file(self, table: Any, token: str) -> None:
        _write_arrow(self._pending_file, table, {b"token": token.encode()})

    def _load_recent(self) -> None:
        since = time.time_ns() - _RECENT_HOURS * 3600 * 10**9
        keys = self.store.recent_keys(since, self._stored.limit)
        self._stored.update(keys[::-1], since)
        # Anything older than the window, or beyond what was loaded, is checked in the table.
        self._floor_ns = since if len(keys) < self._stored.limit else time.time_ns()

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    # --- submit -------------------------------------------------------------------------------

    async def submit(self, records: list[UsageRecord], links: list[tuple[bytes, bytes]] = ()) -> Outcome:
        if not records and not links:
            return Outcome()
        return await asyncio.wrap_future(self.submit_nowait(records, list(links)))

    def check_admission(self, rows: int = 0) -> None:
        """Raise `Overloaded` (429) when the queue is full, or when its oldest rows have waited
        past `queue_max_delay_ms`: the writer is behind, and accepting more would only make every
        acknowledgement later (the exporter retries after Retry-After instead)."""
        pending = self._pending
        if self._queued_rows and self._queued_rows + rows > self.queue_max_rows:
            raise Overloaded(f"{self._queued_rows} rows already queued")
        if pending:
            try:
                waited = time.monotonic() - pending[0].queued_at
            except IndexError:  # taken by the writer meanwhile
                return
            if waited > self.queue_max_delay:
                raise Overloaded(f"the oldest queued rows have waited {waited * 1000:.0f} ms")

    def submit_nowait(self, records: list[UsageRecord], links: list[tuple[bytes, bytes]]) -> Future:
        submission = _Submission(records, links)
        with self._cond:
            if not self._running:
                raise StoreUnavailable("the writer is not running")
            self.check_admission(len(records))
            self._pending.append(submission)
            self._last_submit = submission.queued_at
            self._queued_rows += len(records)
            self.metrics.queue_rows.set(self._queued_rows)
            self._cond.notify_all()
        return submission.future

    def call(self, fn: Callable[[Writer], Any]) -> Future:
        """Run `fn(writer)` on the writer thread between two batches; the future holds its result.

        For work that inserts rows over rows the writer may still act on (repricing's cancelling
        and corrected rows): no batch is inserted while `fn` runs."""
        future: Future = Future()
        with self._cond:
            if not self._running:
                raise StoreUnavailable("the writer is not running")
            self._calls.append((fn, future))
            self._cond.notify_all()
        return future

    def recount(self, records: Iterable[UsageRecord]) -> None:
        """Rows now standing in for stored rows of the same key (a repricing's corrected rows): a
        later leaf-rule cancel of that key copies these, so it takes out the figure in force."""
        for record in records:
            key = record.trace_id + record.span_id
            if record.sign > 0 and key in self._rows:
                self._rows[key] = record

    # --- the writer thread --------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                self._feed()  # what is owed, before stopping (else fed at the next start)
                return
            if self._held is not None and not self._repair():
                self._fail(batch, StoreUnavailable("ClickHouse unavailable: an earlier batch is still being stored"))
                continue
            if self._calls:
                self._feed()  # work run between batches sees complete rollups
            self._run_calls()
            if batch:
                self._commit(batch)
                self._last_commit = time.monotonic()
            if self._feed_due():
                self._feed()
                self._just_fed = True

    # --- the rollups' feed --------------------------------------------------------------------

    def _feed_deadline(self) -> float | None:
        """When what is owed must be fed (monotonic), or None when nothing is."""
        owed = self._owed
        if not owed.tables:
            return self._feed_retry_at if self._unsent else None
        # Idle: no export arrived, and none was being written, for rollup_idle.
        due = min(owed.since + self.rollup_delay, max(self._last_submit, self._last_commit) + self.rollup_idle)
        if owed.rows >= _FEED_MAX_ROWS:  # what it holds in memory, meanwhile
            due = 0.0
        return max(due, self._feed_retry_at)

    def _feed_due(self) -> bool:
        deadline = self._feed_deadline()
        return deadline is not None and time.monotonic() >= deadline

    def _owe(self, table: Any, token: str | None) -> None:
        """A batch is in usage_events: move its pending file among those owed to the rollups."""
        table = table.replace_schema_metadata(None)
        token = token or content_token(table)
        target = self._rollup_dir / f"{token}.arrow"
        self._rollup_dir.mkdir(parents=True, exist_ok=True)
        if self._pending_file.exists():
            os.replace(self._pending_file, target)
        else:  # (written before every insert; should it be missing, the batch is written now)
            _write_arrow(target, table, {b"token": token.encode()})
        owed = self._owed
        if not owed.tables:
            owed.since = time.monotonic()
        owed.tables.append(table)
        owed.tokens.append(token)
        owed.files.append(target)
        owed.rows += table.num_rows
        self._show_owed()
        if self.rollup_delay <= 0:
            self._feed()

    def _feed(self) -> bool:
        """Feed the unsent feed writes, then everything owed, in one insert; False if not stored."""
        while self._unsent:
            if not self._send(self._unsent[0]):
                return False
            self._unsent.popleft()
        owed = self._owed
        if not owed.tables:
            self._show_owed()
            return True
        self._owed = _Owed()
        if len(owed.tables) == 1:
            feed = _Feed(owed.tables[0], rollup_token(owed.tokens[0]), owed.files[0])
        else:
            # One file for the merged write, named by its token, before the batches' own files go:
            # a crash in between leaves both, and the start drops the members it lists.
            token = "rollups:" + hashlib.sha256(",".join(owed.tokens).encode()).hexdigest()
            # One record batch: the engine runs every view once per block it reads.
            table = pa.concat_tables(owed.tables).unify_dictionaries().combine_chunks()
            path = self._rollup_dir / _FEED_FILE
            _write_arrow(path, table, {b"token": token.encode(), b"members": ",".join(owed.tokens).encode()})
            for member in owed.files:
                member.unlink(missing_ok=True)
            feed = _Feed(table, token, path)
        if not self._send(feed):
            self._unsent.append(feed)
            self._show_owed()
            return False
        self._show_owed()
        return True

    def _show_owed(self) -> None:
        self.metrics.rollup_owed_rows.set(self._owed.rows + sum(feed.table.num_rows for feed in self._unsent))

    def _send(self, feed: _Feed) -> bool:
        try:
            started = time.perf_counter()
            self.store.insert_rollups(feed.table, feed.token)
            self.metrics.rollup_seconds.observe(time.perf_counter() - started)
        except (StoreUnavailable, QueryError) as exc:
            # The rows are committed: they are fed later, never dropped (re-sent as they are).
            log.warning("rollup feed of %d rows not stored yet, retried in 1 s: %s", feed.table.num_rows, exc)
            self._feed_retry_at = time.monotonic() + 1.0
            return False
        self._feed_retry_at = 0.0
        feed.file.unlink(missing_ok=True)
        return True

    def _replay_rollups(self) -> None:
        """Feed what a stopped or killed process owed the rollups, each write as it was (or would
        have been) sent: a batch's file alone with its own token, a merged file with its token. A
        write that landed before the process died is then dropped by ClickHouse, not counted again."""
        folder = self._rollup_dir
        if not folder.is_dir():
            return
        merged = folder / _FEED_FILE
        table = _read_arrow(merged)
        if table is not None:
            meta = table.schema.metadata or {}
            for member in meta.get(b"members", b"").decode().split(","):
                if member:
                    (folder / f"{member}.arrow").unlink(missing_ok=True)
            self._unsent.append(_Feed(table.replace_schema_metadata(None), meta[b"token"].decode(), merged))
        for path in sorted(folder.glob("*.arrow"), key=lambda p: p.stat().st_mtime_ns):
            if path.name == _FEED_FILE or (table := _read_arrow(path)) is None:
                continue
            self._unsent.append(_Feed(table.replace_schema_metadata(None), rollup_token(path.stem), path))
        if self._unsent:
            rows = sum(feed.table.num_rows for feed in self._unsent)
            if self._feed():
                log.warning("fed the rollups %d rows a stopped process owed them", rows)

    def _repair(self) -> bool:
        """Re-send the held batch; complete its bookkeeping once it lands."""
        held = self._held
        try:
            self.store.insert_usage_arrow(held.table, held.token, rollups=False)
        except StoreUnavailable as exc:
            log.info("held batch of %d rows still not stored: %s", len(held.rows), exc)
            return False
        except QueryError as exc:  # refused outright now: it was never written, drop it
            log.error("held batch of %d rows refused, dropped (its exports will be retried): %s", len(held.rows), exc)
            self._held = None
            self._forget_batch(held.rows)
            return True
        self._held = None
        self._owe(held.table, held.token)
        if not held.rows:  # a batch found at start: its keys were not loaded with the stored ones
            self._remember_table(held.table)
        self._remember(held.rows, held.cancelled)
        self._siblings.committed()
        log.warning("held batch of %d rows stored after a failed insert", len(held.rows))
        return True

    def _fail(self, batch: list[_Submission], error: Exception) -> None:
        for submission in batch:
            if not submission.future.done():
                submission.future.set_exception(error)

    def _forget_batch(self, rows: list[UsageRecord]) -> None:
        """A batch that was not stored: undo what selecting it changed, and doubt its keys."""
        self._lineage.failed()
        self._siblings.failed()
        for record in rows:
            self._uncertain.add(record.trace_id + record.span_id)

    def _run_calls(self) -> None:
        with self._cond:
            calls, self._calls = list(self._calls), deque()
        for fn, future in calls:
            try:
                future.set_result(fn(self))
            except Exception as exc:  # noqa: BLE001 - the caller hears about any failure
                future.set_exception(exc)

    def _take_batch(self) -> list[_Submission] | None:
        with self._cond:
            while not self._pending:
                if self._calls:
                    return []
                if not self._running:
                    return None
                if self._held is not None:
                    # Retry the held batch about once a second, traffic or not.
                    self._cond.wait(1.0)
                    return []
                feed_at = self._feed_deadline()
                if feed_at is not None:
                    remaining = feed_at - time.monotonic()
                    if remaining <= 0:
                        return []  # the loop feeds the rollups
                    self._cond.wait(remaining)
                    continue
                self._cond.wait()
            # While one insert's fixed cost dominates (small batches, a slow engine), wait as long
            # as the last insert took, up to batch_hold_ms: the batch gathers what arrives
            # meanwhile, and the engine spends at most about half its time on fixed costs.
            wait = max(self.max_wait, min(self._last_insert_s, self.hold))
            deadline = time.monotonic() + wait
            if self._just_fed and self._pending:
                # What waited through a rollup feed has gathered long enough: no second wait on top.
                deadline = min(deadline, self._pending[0].queued_at + wait)
            self._just_fed = False
            while self._running and self._queued_rows < self.max_rows:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch, rows = [], 0
            while self._pending and (not batch or rows + len(self._pending[0].records) <= self.max_rows):
                item = self._pending.popleft()
                batch.append(item)
                rows += len(item.records)
            self._queued_rows -= rows
            self.metrics.queue_rows.set(self._queued_rows)
            return batch

    def _commit(self, batch: list[_Submission]) -> None:
        try:
            rows, outcomes, cancelled = self._select(batch)
        except Exception as exc:  # noqa: BLE001 - every waiter must hear about any failure
            self._forget_batch([r for s in batch for r in s.records])
            error = exc if isinstance(exc, StoreUnavailable) else StoreUnavailable(str(exc))
            log.warning("usage batch of %d requests not selected: %s", len(batch), error)
            self._fail(batch, error)
            return
        if rows:
            table, token = usage_arrow(rows), uuid.uuid4().hex
            try:
                self._write_pending_file(table, token)
                started = time.perf_counter()
                self.store.insert_usage_arrow(table, token, rollups=False)
                self._last_insert_s = time.perf_counter() - started
                self.metrics.insert_seconds.observe(self._last_insert_s)
            except StoreUnavailable as exc:
                # Perhaps partly written (events but not every rollup): hold it and re-send it
                # as it is, before anything else.
                self._held = _Held(rows, cancelled, table, token)
                log.warning("usage batch of %d requests not committed, held for re-sending: %s", len(batch), exc)
                self._fail(batch, exc)
                return
            except Exception as exc:  # noqa: BLE001 - refused outright or not sent: nothing written
                self._pending_file.unlink(missing_ok=True)
                self._forget_batch([r for s in batch for r in s.records])
                error = StoreUnavailable(str(exc))
                log.error("usage batch of %d requests refused: %s", len(batch), exc)
                self._fail(batch, error)
                return
            self._owe(table, token)  # with rollup_delay_ms=0, fed here, before the answers
        self._remember(rows, cancelled)
        self._siblings.committed()
        for submission, outcome in zip(batch, outcomes):
            self.metrics.rows_stored.inc(outcome.stored)
            self.metrics.duplicates.inc(outcome.duplicates)
            submission.future.set_result(outcome)

    def _select(self, batch: list[_Submission]) -> tuple[list[UsageRecord], list[Outcome], list[bytes]]:
        """Decide which records are new facts; returns (rows to insert, outcomes, cancelled keys)."""
        # One table look-up for every key the memory cannot vouch for.
        # A key forgotten had an event time at or under the floor, so "at" is doubtful too.
        floor, uncertain = self._floor_ns, self._uncertain
        doubtful = [
            r.trace_id + r.span_id
            for s in batch
            for r in s.records
            if r.event_time_ns <= floor or (uncertain and (r.trace_id + r.span_id) in uncertain)
        ]
        in_table = self.store.existing_keys(doubtful) if doubtful else set()

        rows: list[UsageRecord] = []
        outcomes: list[Outcome] = []
        seen: set[bytes] = set()
        covered_now: set[bytes] = set()
        cancelled: list[bytes] = []
        dropped: set[bytes] = set()
        corrected = self._lineage.begin()
        self._siblings.begin()
        fresh: dict[bytes, UsageRecord] = {}  # rows of this batch, not inserted yet
        # The memories do not change while a batch is selected: test their sets directly.
        stored_new, stored_old = self._stored.new, self._stored.old
        covered_new, covered_old = self._covered.new, self._covered.old
        counted = self._rows
        for submission in batch:
            outcome = Outcome()
            newly_covered: list[bytes] = []
            # Rows stored earlier that this export's spans lend a user (or more) to: -1/+1 pairs.
            rows.extend(self._lineage.arrive(submission.links, submission.records, fresh, self._rows.get,
                                             cancelled))
            for record in submission.records:
                key = record.trace_id + record.span_id
                if key in seen or key in stored_new or key in stored_old or key in in_table:
                    outcome.duplicates += 1
                    continue
                seen.add(key)
                parent = record.trace_id + record.parent_span_id if record.parent_span_id else b""
                if key in covered_new or key in covered_old or key in covered_now:
                    # An ancestor of a call already counted: the leaf holds its usage.
                    outcome.covered += 1
                    newly_covered.append(key)
                    continue
                if self._siblings.duplicate(record):
                    # A sibling instrumentation's span of a call counted in an earlier export.
                    outcome.duplicates += 1
                    newly_covered.append(key)
                    continue
                rows.append(record)
                fresh[key] = record
                self._lineage.attribute(record)
                outcome.stored += 1
                newly_covered.append(key)
                if parent in seen and parent not in covered_now:
                    # Its parent was counted earlier in this very batch: drop that row.
                    dropped.add(parent)
                elif parent:
                    earlier = corrected.get(parent) or counted.get(parent)  # = lineage.latest(parent) or ...
                    if earlier is not None and parent not in cancelled:
                        # The parent was counted before its deeper leaf arrived: take it back out.
                        rows.append(replace(earlier, sign=-1))
                        cancelled.append(parent)
            self._cover_ancestors(submission, newly_covered, covered_now)
            outcomes.append(outcome)
        self._covered_now = covered_now
        if dropped:
            rows = [r for r in rows if r.sign < 0 or (r.trace_id + r.span_id) not in dropped]
        return rows, outcomes, cancelled

    def _cover_ancestors(self, submission: _Submission, keys: list[bytes], covered_now: set[bytes]) -> None:
        """Mark every ancestor of `keys` known from this export, or covered before, as covered."""
        parents = {r.trace_id + r.span_id: r.trace_id + r.parent_span_id for r in submission.records if r.parent_span_id}
        parents.update(submission.links)
        frontier = keys + [key for key, _ in submission.links if key in self._covered]
        for key in frontier:
            parent = parents.get(key)
            while parent and parent not in covered_now:
                covered_now.add(parent)
                parent = parents.get(parent)

    def _remember_table(self, table: Any) -> None:
        """Remember the keys of the rows counted by a stored Arrow batch (sign +1)."""
        columns = table.select(["trace_id", "span_id", "sign"]).to_pydict()
        keys = [t + s for t, s, sign in zip(columns["trace_id"], columns["span_id"], columns["sign"]) if sign > 0]
        self._stored.update(keys, time.time_ns())
        if self._uncertain:
            self._uncertain.difference_update(keys)

    def _remember(self, rows: list[UsageRecord], cancelled: list[bytes]) -> None:
        facts = [r for r in rows if r.sign > 0]
        keys = [r.trace_id + r.span_id for r in facts]
        self._stored.update(keys, max((r.event_time_ns for r in facts), default=0))
        self._floor_ns = max(self._floor_ns, self._stored.newest_forgotten_ns)
        counted = self._rows
        for key, record in zip(keys, facts):
            counted[key] = record
        counted.trim()
        if self._uncertain:
            self._uncertain.difference_update(keys)
        self._covered.update(list(self._covered_now))
        for key in cancelled:
            counted.pop(key, None)


_FEED_FILE = "feed.arrow"
_FEED_WHEN_IDLE_S = 0.1
_FEED_MAX_ROWS = 200_000


def _write_arrow(path: Path, table: Any, metadata: dict[bytes, bytes]) -> None:
    """Write an Arrow file durably: to a temporary name, synced, then renamed (never torn)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    schema = table.schema.with_metadata({**(table.schema.metadata or {}), **metadata})
    with pa.OSFile(str(tmp), "wb") as sink:
        with pa.ipc.new_file(sink, schema) as out:
            out.write_table(table.replace_schema_metadata(schema.metadata))
        sink.flush()
        os.fsync(sink.fileno())
    os.replace(tmp, path)


def _load_arrow(path: Path) -> Any:
    with pa.OSFile(str(path), "rb") as source:
        return pa.ipc.open_file(source).read_all()


def _read_arrow(path: Path) -> Any:
    """A rollup feed file written by `_write_arrow`, or None if there is none."""
    try:
        return _load_arrow(path)
    except FileNotFoundError:
        return None
    except (OSError, pa.ArrowException) as exc:
        # Written under a temporary name and renamed: an unreadable file is not ours.
        log.error("unreadable rollup feed file %s left in place: %s", path, exc)
        return None


def rollup_dir(settings: Settings) -> Path:
    """Where committed batches wait for the rollups' feed: beside the pending file, one folder per
    database (a file found there at start is fed to that database's rollups)."""
    pending = pending_file(settings)
    return pending.with_name(pending.name.replace("pending-batch.arrow", f"pending-rollups.{settings.database}"))


def pending_file(settings: Settings) -> Path:
    """Where a batch waits while it is being inserted: beside the embedded store's data, else in
    `SPANMETER_STATE_DIR` (default .spanmeter/)."""
    if settings.state_dir is not None:
        return Path(settings.state_dir) / "pending-batch.arrow"
    if settings.is_embedded:
        data = Path(normalize_dsn(settings.clickhouse_dsn)[len("chdb://"):])
        return data.parent / f"{data.name}-pending-batch.arrow"
    return Path(".spanmeter") / "pending-batch.arrow"
