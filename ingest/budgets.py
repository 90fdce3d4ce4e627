"""Caps as ClickHouse rows, for the Budgets dashboard and ad-hoc SQL (clickhouse/0012).

    record_tier_caps(store, caps.book, source="tiers.yaml")  # at start: tier_caps, only if changed
    snapshots = Snapshots(caps, store, every_seconds=60).start()
    snapshots.take()                                          # one snapshot now (also at stop)
    snapshots.stop()                                          # a last snapshot, then the thread ends

The caps live in the tiers file and the spend per window in the caps engine's memory; SQL could
recompute calendar and rolling windows but not sessions (5 hours from a user's first request, a
fold over every request). So the service writes what the engine computes: a snapshot is one row
per (user, window) with the numbers `GET /v1/users/{id}/usage` answers at the snapshot's instant
(spent, reserved, limit, percent, status, window start and reset), for every user with spend,
calls or a reservation in an open window, in one insert stamped with one `taken_at`.

Users: those with rows since the earliest start any tier's window can have (the session look-back,
the longest rolling window, the month in any time zone), most recent first, at most the engine's
cache size (`SPANMETER_CAPS_CACHE_USERS`), plus users holding a reservation. Their ledgers are
loaded in grouped passes (`Caps.preload`), so a snapshot costs a few queries whatever the number
of users, then microseconds per user.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any

from .caps import (
    HOUR_MS,
    ROLLING,
    SESSION,
    Caps,
    TierBook,
    WindowUsage,
    calendar_bounds,
    percent,
    session_lookback_start,
)
from .errors import SpanmeterError

log = logging.getLogger(__name__)

_TWELVE = Decimal("1e-12")

TIER_CAPS_COLUMNS = (
    "caps_version", "tier", "is_default", "window_name", "window_kind", "window_hours", "limit_usd", "warn_at",
    "hard", "timezone", "source", "effective_from",
)
CAP_STATUS_COLUMNS = (
    "taken_at", "user_id", "window_name", "tier", "timezone", "limit_usd", "spent_usd", "reserved_usd",
    "remaining_usd", "percent", "status", "warn_at", "hard", "window_start", "resets_at", "calls",
    "unpriced_calls", "estimate",
)


def _utc(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms // 1000, UTC).replace(microsecond=ms % 1000 * 1000)


def _usd(pico: int) -> Decimal:
    return Decimal(pico).scaleb(-12)


def _fraction(value: Decimal | None) -> Decimal | None:
    # warn_at is shown, never computed with here: 12 places is what the column keeps.
    return None if value is None else value.quantize(_TWELVE, rounding=ROUND_DOWN)


# --- tier caps ----------------------------------------------------------------------------------


def tier_cap_rows(book: TierBook) -> list[tuple[Any, ...]]:
    """(tier, is_default, window_name, window_kind, window_hours, limit_usd, warn_at, hard, timezone)
    for every cap of every tier, in a stable order."""
    rows = []
    for name in sorted(book.tiers):
        tier = book.tiers[name]
        for cap in tier.caps:
            w = cap.window
            hours = w.hours if w.kind == ROLLING else (book.session_ms // HOUR_MS if w.kind == SESSION else 0)
            rows.append((name, name == book.default_tier, w.name, w.kind, hours, cap.limit_usd,
                         _fraction(cap.warn_at), cap.hard, tier.timezone))
    return rows


def caps_version(book: TierBook) -> str:
    """A hash of the effective caps: the same caps give the same version, whatever the file's layout."""
    text = repr([(r[0], r[1], r[2], r[4], None if r[5] is None else format(r[5].normalize(), "f"),
                  None if r[6] is None else format(r[6].normalize(), "f"), r[7], r[8]) for r in tier_cap_rows(book)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def record_tier_caps(store: Any, book: TierBook, *, source: str, now_ms: int) -> bool:
    """Append the book's caps to tier_caps unless the latest version there is the same.
    Returns whether rows were written."""
    version = caps_version(book)
    db = store.database
    latest = store.query(
        f"SELECT caps_version FROM {db}.tier_caps ORDER BY effective_from DESC LIMIT 1").rows
    if latest and latest[0][0] == version:
        return False
    at = _utc(now_ms)
    store.insert_rows("tier_caps", TIER_CAPS_COLUMNS,
                      [(version, *row, source, at) for row in tier_cap_rows(book)])
    log.info("caps: tier caps version %s recorded (%s)", version, source)
    return True


# --- snapshots ----------------------------------------------------------------------------------


def status_rows(user_id: str, tier: str, timezone: str, windows: Sequence[WindowUsage],
                taken_at: datetime) -> list[tuple[Any, ...]]:
    """cap_status rows of one user: the windows holding spend, calls or a reservation."""
    rows = []
    for w in windows:
        if not (w.calls or w.spent_pico or w.reserved_pico):
            continue
        limit = w.cap.limit_pico
        share = percent(w.used_pico, limit)
        rows.append((
            taken_at, user_id, w.window.name, tier, timezone,
            None if limit is None else w.cap.limit_usd,
            _usd(w.spent_pico), _usd(w.reserved_pico),
            None if limit is None else _usd(max(limit - w.used_pico, 0)),
            None if share is None else Decimal(repr(share)),
            w.status(), _fraction(w.cap.warn_at), w.cap.hard,
            _utc(w.start_ms), _utc(w.resets_ms), w.calls, w.unpriced_calls, w.estimate_reason is not None,
        ))
    return rows


def earliest_window_start(book: TierBook, now_ms: int) -> int:
    """The earliest instant any open window of any tier (or a user's override) can start at."""
    longest_rolling = max((c.window.hours for t in book.tiers.values() for c in t.caps if c.window.kind == ROLLING),
                          default=0)
    # A calendar window in a zone at UTC+o (o from -12 to +14 hours) holds the local date of
    # now + o, no earlier than UTC's date 12 hours ago, and starts at a local midnight, at most
    # 14 hours before that midnight in UTC.
    behind = now_ms - 12 * HOUR_MS
    calendar = min(calendar_bounds(kind, behind, UTC)[0] for kind in ("week", "month")) - 14 * HOUR_MS
    return min(session_lookback_start(now_ms), now_ms - longest_rolling * HOUR_MS, calendar)


class Snapshots:
    """Takes cap_status snapshots from the caps engine, every `every_seconds` and at stop."""

    def __init__(self, caps: Caps, store: Any, *, every_seconds: float | None = 60.0) -> None:
        self.caps = caps
        self.store = store
        self.every_seconds = every_seconds or None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one snapshot at a time

    def active_users(self, now_ms: int) -> list[str]:
        since = earliest_window_start(self.caps.book, now_ms)
        users = [r[0] for r in self.store.query(
            f"SELECT user_id FROM {self.store.database}.usage_events "
            "WHERE event_time >= fromUnixTimestamp64Milli({since:Int64}) AND user_id != '' "
            "GROUP BY user_id ORDER BY max(event_time) DESC, user_id LIMIT {n:UInt64}",
            {"since": since, "n": self.caps.max_users},
        ).rows]
        known = set(users)
        return users + [u for u in self.caps.reserving_users() if u not in known]

    def take(self, now_ms: int | None = None) -> int:
        """One snapshot at `now_ms` (default: the engine's clock); returns the rows written."""
        with self._lock:
            now = self.caps.clock() if now_ms is None else now_ms
            users = self.active_users(now)
            if not users:
                return 0
            self.caps.preload(background=False, users=users)
            taken_at = _utc(now)
            rows = []
            for user in users:
                _, plan, windows = self.caps.usage(user, now)
                rows.extend(status_rows(user, plan.tier, plan.timezone, windows, taken_at))
            self.store.insert_rows("cap_status", CAP_STATUS_COLUMNS, rows)
            return len(rows)

    def start(self) -> Snapshots:
        if self.every_seconds is not None and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="spanmeter-caps-snapshots", daemon=True)
            self._thread.start()
        return self

    def stop(self, *, final: bool = True) -> None:
        """End the loop; with `final`, take a last snapshot (the spend as the service stops)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if final:
            self._take_quietly()

    def _loop(self) -> None:
        while not self._stop.wait(self.every_seconds):
            self._take_quietly()

    def _take_quietly(self) -> None:
        try:
            self.take()
        except SpanmeterError as exc:  # the next snapshot tries again; the meter is unaffected
            log.warning("caps: snapshot not taken: %s", exc)
        except Exception:  # noqa: BLE001 - a snapshot must never stop the service
            log.exception("caps: snapshot failed")
