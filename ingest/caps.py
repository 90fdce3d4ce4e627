"""Per-user spending caps: tiers, windows, spend per window, and the allow/warn/deny decision.

    book = TierBook.load("tiers.yaml")                 # or TierBook.default(): track only, no caps
    caps = Caps(store, book).watch(writer)             # sees every committed row, see below
    caps.usage("alice")                                # spend, limit, remaining ... per window
    caps.check("alice", estimate=Decimal("0.02"))      # Decision: allow | warn | deny, retry time

Windows (`Window`): `session` (5 hours from a user's first request; the first request after it
ends starts the next), `rolling_<N>h`, `day`, `week` (ISO, from Monday) and `month`, the calendar
ones in UTC or an IANA time zone (per file, tier or user). Spent in a window is
sum(cost_usd * sign) over the user's priced rows in it; calls without a price (cost NULL) or with
estimated/missing token counts are counted apart and flag the window as an `estimate`.

Sessions: a chain of 5-hour sessions can only restart at a request that comes 5 hours or more
after the current session began, so any gap of 5 hours starts a fresh chain. The chain is
followed from `session_lookback_start` (Monday 00:00 UTC of the previous ISO week, 7 to 14 days
back): exact for anyone who paused for 5 hours since then; a user who never did is anchored at
their first request after it. The fold runs in ClickHouse (`arrayFold`) on load and continues in
memory; `session_start` below is the same fold in Python.

Freshness and speed. `check` answers from memory in microseconds, and is still exact: each user's
ledger is loaded once from `usage_events` (primary key (user_id, event_time, ...), bounded
look-back), then every batch the writer commits is applied to it (`watch` puts a thin observer
between the writer and the store), so a call's cost is in the next check as soon as its export is
acknowledged. Loads and commits share one lock, so a row is in a ledger's snapshot or in its
deltas, never both. Rows written by another process (several ingest replicas on one ClickHouse
server) are picked up by a background reload after `refresh_seconds` (off with embedded chDB,
which no other process can open); calendar rollovers reload at once. `preload()` loads every
recently active user in a few grouped queries, so checks after a restart answer from memory.

Concurrent checks for one user are serialised; a check with an estimated cost reserves it until
the call's row lands (each landed row settles that user's oldest reservation) or the reservation
expires, so N concurrent checks cannot all pass a cap that fits only some of them. Reservations
live in this process: with several replicas, route a user's checks to one of them or accept that
the overshoot is bounded by one call per replica.
"""

from __future__ import annotations

import bisect
import functools
import logging
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import SpanmeterError
from .records import UsageRecord

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
PICO = 10**12  # money is carried as integer pico-dollars: cost_usd is Decimal(18, 12)
MAX_LIMIT_USD = Decimal(1_000_000)
SETTLE_SKEW_MS = 60_000  # how far an app's clock may lag ours when a call settles a reservation

SESSION, ROLLING, DAY, WEEK, MONTH = "session", "rolling", "day", "week", "month"
CALENDAR = (DAY, WEEK, MONTH)
_ROLLING_NAME = re.compile(r"^rolling_([1-9][0-9]{0,3})h$")
_ORDER = {SESSION: 0, ROLLING: 1, DAY: 2, WEEK: 3, MONTH: 4}

ALLOW, WARN, DENY = "allow", "warn", "deny"
OK, OVER = "ok", "over"


class CapsError(SpanmeterError):
    """A tiers file, override or request that cannot work (400 at the API)."""


# --- windows: pure arithmetic on epoch milliseconds ---------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class Window:
    kind: str
    hours: int = 0  # rolling windows only

    @classmethod
    def parse(cls, name: str) -> Window:
        if name in (SESSION, DAY, WEEK, MONTH):
            return cls(name)
        match = _ROLLING_NAME.match(name)
        if match:
            return cls(ROLLING, int(match.group(1)))
        raise CapsError(f"unknown window {name!r}: use session, rolling_<N>h, day, week or month")

    @property
    def name(self) -> str:
        return f"rolling_{self.hours}h" if self.kind == ROLLING else self.kind

    @property
    def sort_key(self) -> tuple[int, int]:
        return _ORDER[self.kind], self.hours


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise CapsError(f"unknown time zone {name!r}: use an IANA name such as UTC or Asia/Kolkata") from exc


def _midnight_ms(day: date, tz: ZoneInfo) -> int:
    # The first instant of `day` in `tz`. If midnight falls in a DST gap, zoneinfo applies the
    # offset in force before it (fold=0), which is exactly the first existing local instant.
    return int(datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()) * 1000


def calendar_bounds(kind: str, now_ms: int, tz: ZoneInfo) -> tuple[int, int]:
    """[start, end) in epoch ms of the calendar window (day, ISO week, month) holding `now_ms`."""
    today = datetime.fromtimestamp(now_ms // 1000, tz).date()
    if kind == DAY:
        first, after = today, today + timedelta(days=1)
    elif kind == WEEK:
        first = today - timedelta(days=today.weekday())
        after = first + timedelta(days=7)
    elif kind == MONTH:
        first = today.replace(day=1)
        after = (first + timedelta(days=32)).replace(day=1)
    else:
        raise ValueError(f"not a calendar window: {kind}")
    return _midnight_ms(first, tz), _midnight_ms(after, tz)


def session_lookback_start(now_ms: int) -> int:
    """Monday 00:00 UTC of the previous ISO week: how far back a session chain is followed.

    A fixed grid, not `now - 7 days`, so that the chain of a user who never pauses moves at most
    once a week rather than with every request."""
    monday, _ = calendar_bounds(WEEK, now_ms, UTC)
    return monday - 7 * DAY_MS


def session_start(times_ms: Iterable[int], length_ms: int, start: int | None = None) -> int | None:
    """Fold request times (ascending) into the start of the latest session.

    A session begins at a request and lasts `length_ms`; the first request at or after its end
    begins the next one. `start` continues a fold from a known session start."""
    for t in times_ms:
        if start is None or t >= start + length_ms:
            start = t
    return start


def current_session(times_ms: Iterable[int], now_ms: int, length_ms: int) -> tuple[int, int] | None:
    """[start, end) of the session in progress at `now_ms`, or None (the next request starts one)."""
    start = session_start((t for t in times_ms if t <= now_ms), length_ms)
    if start is None or now_ms >= start + length_ms:
        return None
    return start, start + length_ms


def rolling_retry_ms(events: Sequence[tuple[int, int]], hours: int, now_ms: int, allowed_pico: int,
                     strict: bool) -> int | None:
    """When a rolling window's spend will be `<= allowed_pico` (`< ` if `strict`) again.

    `events` are (time ms, pico-dollars) in the window, ascending. Spend ages out as each event
    passes `hours` old; returns the first instant at which what is left fits, or `now_ms` if it
    already does, or None if even an empty window would not do (allowed_pico < 0)."""
    if allowed_pico < 0 or (strict and allowed_pico == 0):
        return None
    left = sum(p for _, p in events)
    fits = (lambda v: v < allowed_pico) if strict else (lambda v: v <= allowed_pico)
    if fits(left):
        return now_ms
    for t, pico in events:
        left -= pico
        if fits(left):
            return t + hours * HOUR_MS + 1  # the event leaves the window just after t + hours
    return None


# --- tiers and overrides ----------------------------------------------------------------------


def parse_usd(value: Any, what: str) -> Decimal:
    """Money from config or JSON: a decimal string or an int (a YAML float is read from its text)."""
    if isinstance(value, bool):
        raise CapsError(f"{what}: expected a decimal string such as \"1.50\"")
    if isinstance(value, float):
        value = repr(value)  # YAML `1.5` arrives as a float; its shortest repr is what was typed
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise CapsError(f"{what}: {value!r} is not a decimal amount") from exc
    if not amount.is_finite() or amount < 0 or amount > MAX_LIMIT_USD:
        raise CapsError(f"{what}: {value!r} must be between 0 and {MAX_LIMIT_USD}")
    if amount.as_tuple().exponent < -12:
        raise CapsError(f"{what}: {value!r} has more than 12 decimal places")
    return amount


def _parse_fraction(value: Any, what: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, float):
        value = repr(value)
    try:
        fraction = Decimal(str(value))
    except InvalidOperation as exc:
        raise CapsError(f"{what}: {value!r} is not a number") from exc
    if not fraction.is_finite() or not 0 < fraction <= 1:
        raise CapsError(f"{what}: {value!r} must be a fraction of the cap in (0, 1], e.g. 0.8")
    return fraction


@dataclass(frozen=True, slots=True)
class Cap:
    """A cap on one window. `limit_usd` None: the window's spend is shown but not capped."""

    window: Window
    limit_usd: Decimal | None
    warn_at: Decimal | None = None  # soft limit, as a fraction of the cap
    hard: bool = True  # False: going over warns but never denies

    @property
    def limit_pico(self) -> int | None:
        return None if self.limit_usd is None else int(self.limit_usd.scaleb(12))

    def as_json(self) -> dict[str, Any]:
        return {
            "limit_usd": None if self.limit_usd is None else money(self.limit_usd),
            "warn_at": None if self.warn_at is None else str(self.warn_at),
            "hard": self.hard,
        }


_CAP_KEYS = {"limit_usd", "warn_at", "hard"}


def _parse_cap(window: Window, spec: Any, base: Cap | None, default_warn: Decimal | None, what: str) -> Cap:
    """A cap from `"1.00"` or `{limit_usd, warn_at, hard}`; keys not given come from `base`."""
    if not isinstance(spec, Mapping):
        spec = {"limit_usd": spec}
    unknown = set(spec) - _CAP_KEYS
    if unknown:
        raise CapsError(f"{what}: unknown keys {sorted(unknown)}; use {sorted(_CAP_KEYS)}")
    limit = base.limit_usd if base else None
    warn = base.warn_at if base else default_warn
    hard = base.hard if base else True
    if "limit_usd" in spec:
        limit = None if spec["limit_usd"] is None else parse_usd(spec["limit_usd"], f"{what}.limit_usd")
    if "warn_at" in spec:
        warn = _parse_fraction(spec["warn_at"], f"{what}.warn_at")
    if "hard" in spec:
        if not isinstance(spec["hard"], bool):
            raise CapsError(f"{what}.hard: expected true or false")
        hard = spec["hard"]
    return Cap(window, limit, warn, hard)


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    caps: tuple[Cap, ...]
    timezone: str
    warn_at: Decimal | None = None  # for windows a user's overrides add


@dataclass(frozen=True, slots=True)
class Overrides:
    """A user's own caps on top of their tier: a window's cap replaced (keys not given are the
    tier's), added, or lifted (`None`: shown, not capped); and their time zone."""

    caps: Mapping[str, Any] = field(default_factory=dict)  # window name -> spec | None, validated
    timezone: str | None = None

    @classmethod
    def parse(cls, doc: Any) -> Overrides:
        if doc is None:
            return cls()
        if not isinstance(doc, Mapping) or set(doc) - {"caps", "timezone"}:
            raise CapsError('expected {"caps": {"<window>": {"limit_usd": "5.00", ...} | null}, "timezone": "..."}')
        caps = doc.get("caps") or {}
        if not isinstance(caps, Mapping):
            raise CapsError("caps: expected an object keyed by window")
        checked: dict[str, Any] = {}
        for name, spec in caps.items():
            window = Window.parse(str(name))
            if spec is not None:
                _parse_cap(window, spec, None, None, f"caps.{name}")  # validate now, apply later
            checked[window.name] = spec
        tz = doc.get("timezone")
        if tz is not None:
            zone(str(tz))
        return cls(checked, None if tz is None else str(tz))

    def as_json(self) -> dict[str, Any]:
        return {"caps": dict(self.caps), "timezone": self.timezone}


@dataclass(frozen=True, slots=True)
class Plan:
    """What applies to one user now: their tier, effective caps (ordered) and time zone."""

    tier: str
    caps: tuple[Cap, ...]
    timezone: str
    session_ms: int

    @property
    def max_rolling_ms(self) -> int:
        return max((c.window.hours * HOUR_MS for c in self.caps if c.window.kind == ROLLING), default=0)


class TierBook:
    """Tiers from a YAML file (see tiers.example.yaml). Read once at start-up."""

    def __init__(self, tiers: Mapping[str, Tier], default_tier: str, *, timezone: str = "UTC",
                 session_hours: int = 5, warn_at: Decimal | None = None) -> None:
        if default_tier not in tiers:
            raise CapsError(f"default_tier {default_tier!r} is not one of the tiers {sorted(tiers)}")
        self.tiers = dict(tiers)
        self.default_tier = default_tier
        self.timezone = timezone
        self.session_ms = session_hours * HOUR_MS
        self.warn_at = warn_at

    @classmethod
    def default(cls) -> TierBook:
        """No tiers file: every window is shown, none is capped."""
        caps = tuple(Cap(Window(kind), None) for kind in (SESSION, DAY, WEEK, MONTH))
        return cls({"default": Tier("default", caps, "UTC")}, "default")

    @classmethod
    def load(cls, path: str | Path | None) -> TierBook:
        if not path:
            return cls.default()
        import yaml

        try:
            doc = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise CapsError(f"cannot read tiers file {path}: {exc}") from exc
        return cls.parse(doc, source=str(path))

    @classmethod
    def parse(cls, doc: Any, source: str = "tiers") -> TierBook:
        if not isinstance(doc, Mapping) or not isinstance(doc.get("tiers"), Mapping) or not doc["tiers"]:
            raise CapsError(f"{source}: expected a mapping with a non-empty `tiers:`")
        unknown = set(doc) - {"tiers", "default_tier", "timezone", "session_hours", "warn_at"}
        if unknown:
            raise CapsError(f"{source}: unknown keys {sorted(unknown)}")
        tz = str(doc.get("timezone") or "UTC")
        zone(tz)
        hours = doc.get("session_hours", 5)
        if not isinstance(hours, int) or isinstance(hours, bool) or not 1 <= hours <= 168:
            raise CapsError(f"{source}: session_hours must be a whole number of hours from 1 to 168")
        warn = _parse_fraction(doc.get("warn_at"), f"{source}: warn_at")
        tiers: dict[str, Tier] = {}
        for name, spec in doc["tiers"].items():
            name = str(name)
            what = f"{source}: tiers.{name}"
            if not isinstance(spec, Mapping) or set(spec) - {"caps", "timezone", "warn_at"}:
                raise CapsError(f"{what}: expected caps: and optionally timezone:, warn_at:")
            tier_tz = str(spec.get("timezone") or tz)
            zone(tier_tz)
            tier_warn = _parse_fraction(spec["warn_at"], f"{what}.warn_at") if "warn_at" in spec else warn
            caps_spec = spec.get("caps") or {}
            if not isinstance(caps_spec, Mapping):
                raise CapsError(f"{what}.caps: expected a mapping of window to cap")
            caps = [
                _parse_cap(Window.parse(str(w)), c, None, tier_warn, f"{what}.caps.{w}") for w, c in caps_spec.items()
            ]
            tiers[name] = Tier(name, tuple(sorted(caps, key=lambda c: c.window.sort_key)), tier_tz, tier_warn)
        default = str(doc.get("default_tier") or next(iter(tiers)))
        return cls(tiers, default, timezone=tz, session_hours=hours, warn_at=warn)

    def plan(self, tier_name: str | None, overrides: Overrides | None = None) -> Plan:
        tier = self.tiers.get(tier_name or "") or self.tiers[self.default_tier]
        caps = {c.window.name: c for c in tier.caps}
        overrides = overrides or Overrides()
        for name, spec in overrides.caps.items():
            window = Window.parse(name)
            base = caps.get(name)
            if spec is None:
                caps[name] = Cap(window, None, None, base.hard if base else True)
            else:
                caps[name] = _parse_cap(window, spec, base, tier.warn_at, f"override {name}")
        ordered = tuple(sorted(caps.values(), key=lambda c: c.window.sort_key))
        return Plan(tier.name, ordered, overrides.timezone or tier.timezone, self.session_ms)


# --- decisions: pure ----------------------------------------------------------------------------


@dataclass(slots=True)
class WindowUsage:
    """One window's spend for one user at one instant (money in pico-dollars)."""

    cap: Cap
    start_ms: int | None  # None: a session not started yet (the next request starts it)
    resets_ms: int | None
    spent_pico: int = 0
    reserved_pico: int = 0
    calls: int = 0
    unpriced_calls: int = 0
    estimated_calls: int = 0
    events: list[tuple[int, int]] = field(default_factory=list)  # rolling only: (ms, pico)
    # Rolling only, from the engine: (allowed pico, strict, now) -> retry time, without `events`.
    retry_fn: Callable[[int, bool, int], int | None] | None = None

    @property
    def window(self) -> Window:
        return self.cap.window

    @property
    def used_pico(self) -> int:
        return self.spent_pico + self.reserved_pico

    @property
    def estimate_reason(self) -> str | None:
        reasons = []
        if self.unpriced_calls > 0:
            reasons.append(f"{self.unpriced_calls} call(s) in this window have no price yet; "
                           "their cost is not included")
        if self.estimated_calls > 0:
            reasons.append(f"{self.estimated_calls} call(s) in this window have incomplete or estimated token counts")
        return "; ".join(reasons) or None

    def status(self) -> str:
        limit = self.cap.limit_pico
        if limit is None:
            return OK
        if self.used_pico >= limit and limit >= 0:
            return OVER
        if self.cap.warn_at is not None and self.used_pico >= limit * self.cap.warn_at:
            return WARN
        return OK


@dataclass(slots=True)
class Decision:
    decision: str
    reason: str
    window: str | None = None  # the window that decided, if any
    retry_at_ms: int | None = None  # deny: when a call of this size fits again (None: never, as is)
    windows: list[WindowUsage] = field(default_factory=list)
    reservation: Reservation | None = None


def decide(windows: Sequence[WindowUsage], estimate_pico: int, now_ms: int) -> Decision:
    """allow / warn / deny for a next call costing `estimate_pico` (0: unknown).

    Hard cap: deny if what is spent and reserved already reaches the cap, or if the call would
    take it over. Soft limit: warn when the projected spend reaches `warn_at` of the cap, or when
    a soft (hard: false) cap is exceeded. When denied, retry_at is when every denying window fits
    the call again (the latest of them)."""
    denies: list[tuple[WindowUsage, int | None]] = []
    warns: list[WindowUsage] = []
    for w in windows:
        limit = w.cap.limit_pico
        if limit is None:
            continue
        projected = w.used_pico + estimate_pico
        over = w.used_pico >= limit or projected > limit
        if over and w.cap.hard:
            denies.append((w, _retry_at(w, limit, estimate_pico, now_ms)))
        elif over or (w.cap.warn_at is not None and projected >= limit * w.cap.warn_at):
            warns.append(w)
    if denies:
        never = [w for w, at in denies if at is None]
        if never:
            w = never[0]
            why = (f"a call estimated at ${money_pico(estimate_pico)} does not fit even an empty window"
                   if estimate_pico else "no call fits it")
            return Decision(DENY, f"{w.window.name} cap of ${money_pico(w.cap.limit_pico)}: {why}", w.window.name,
                            None, list(windows))
        w, at = max(denies, key=lambda d: d[1])
        used = f"${money_pico(w.used_pico)} of ${money_pico(w.cap.limit_pico)} used"
        if w.used_pico >= w.cap.limit_pico:
            reason = f"{w.window.name} cap reached: {used}; retry after {iso(at)}"
        else:
            reason = (f"{w.window.name} cap: {used}, a call estimated at ${money_pico(estimate_pico)} would go "
                      f"over; retry after {iso(at)}")
        return Decision(DENY, reason, w.window.name, at, list(windows))
    if warns:
        w = max(warns, key=lambda u: (u.used_pico + estimate_pico) * PICO // max(u.cap.limit_pico or 1, 1))
        used = f"${money_pico(w.used_pico)}"
        if estimate_pico:
            used += f" used + ${money_pico(estimate_pico)} estimated"
        verb = "over the soft cap" if w.used_pico + estimate_pico > w.cap.limit_pico else "nearing the cap"
        return Decision(WARN, f"{w.window.name} {verb}: {used} of ${money_pico(w.cap.limit_pico)}", w.window.name,
                        None, list(windows))
    return Decision(ALLOW, "within every cap", None, None, list(windows))


def _retry_at(w: WindowUsage, limit: int, estimate: int, now_ms: int) -> int | None:
    """When this window fits the call again, if nothing else is spent meanwhile."""
    allowed = limit - w.reserved_pico - estimate
    strict = estimate == 0  # a call of unknown cost needs the cap not yet reached
    if w.window.kind == ROLLING:
        if w.retry_fn is not None:
            return w.retry_fn(allowed, strict, now_ms)
        return rolling_retry_ms(w.events, w.window.hours, now_ms, allowed, strict)
    if allowed < 0 or (strict and allowed <= 0):
        return None  # reservations aside, an empty window would not fit it either
    if w.window.kind == SESSION:
        # The session ends at resets_ms; the next request starts a new, empty one.
        return w.resets_ms if w.resets_ms is not None else now_ms
    return w.resets_ms


# --- formatting -------------------------------------------------------------------------------


def money(amount: Decimal) -> str:
    """A decimal string with at least two places and no trailing zeros past them: 1.00, 0.0024."""
    amount = amount.normalize()
    if amount.as_tuple().exponent > -2:
        amount = amount.quantize(Decimal("0.01"))
    return format(amount, "f")


def money_pico(pico: int | None) -> str:
    return money(Decimal(pico or 0).scaleb(-12))


def percent(used_pico: int, limit_pico: int | None) -> float | None:
    """Display-only share of the cap (a number for a progress bar, one decimal place)."""
    if not limit_pico:
        return None if limit_pico is None else (100.0 if used_pico > 0 else 0.0)
    return float((Decimal(used_pico) * 100 / limit_pico).quantize(Decimal("0.1"), ROUND_HALF_UP))


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


def window_json(w: WindowUsage) -> dict[str, Any]:
    limit = w.cap.limit_pico
    return {
        "window": w.window.name,
        "limit_usd": None if limit is None else money(w.cap.limit_usd),
        "spent_usd": money_pico(w.spent_pico),
        "reserved_usd": money_pico(w.reserved_pico),
        "remaining_usd": None if limit is None else money_pico(max(limit - w.used_pico, 0)),
        "percent": percent(w.used_pico, limit),
        "warn_at": None if w.cap.warn_at is None else str(w.cap.warn_at),
        "hard": w.cap.hard,
        "status": w.status(),
        "window_start": iso(w.start_ms),
        "resets_at": iso(w.resets_ms),
        "calls": w.calls,
        "unpriced_calls": w.unpriced_calls,
        "estimate": w.estimate_reason is not None,
        "estimate_reason": w.estimate_reason,
    }


# --- the engine -------------------------------------------------------------------------------


@dataclass(slots=True)
class Reservation:
    id: str
    user_id: str
    amount_pico: int
    created_ms: int
    expires_ms: int


@dataclass(slots=True)
class UserConfig:
    tier: str | None = None  # None: the book's default tier
    overrides: Overrides = field(default_factory=Overrides)
    tokens_not_before_ms: int = 0  # user tokens issued before this are revoked


@dataclass(slots=True)
class _Sums:
    start: int
    end: int
    pico: int = 0
    calls: int = 0
    unpriced: int = 0
    estimated: int = 0


# An event kept in memory: (time ms, priced pico-dollars * sign, sign, unpriced sign, estimated sign).
_Event = tuple[int, int, int, int, int]


@dataclass(slots=True)
class _Ledger:
    """One user's spend: calendar sums fixed at load, recent events kept one by one (sorted) with
    running sums beside them, so any window's total is two bisects, whatever the user's volume."""

    config: UserConfig
    plan: Plan
    calendar: dict[str, _Sums]
    session_anchor: int | None  # a session start known to be on the chain (None: no request yet)
    exact_from: int  # every event at or after this is in `events`: min(anchor or look-back, rolling)
    events: list[_Event]
    loaded_at: float  # monotonic seconds
    lock: threading.Lock = field(default_factory=threading.Lock)
    refreshing: bool = False
    stale: bool = False  # reload before the next answer
    dirty: int | None = None  # running sums are stale from this index on (see `apply`)
    # cum[k][i]: the sum of field k+1 of events[:i] (pico, calls, unpriced, estimated).
    cum: tuple[list[int], list[int], list[int], list[int]] = field(default_factory=lambda: ([0], [0], [0], [0]))

    def __post_init__(self) -> None:
        self._rebuild(0)

    def _rebuild(self, start: int) -> None:
        tail = self.events[start:]
        for k, column in enumerate(self.cum):
            del column[start + 1:]
            total = column[start]
            for event in tail:
                total += event[k + 1]
                column.append(total)

    def apply(self, event: _Event, *, defer: bool = False) -> None:
        """Add one committed row. With `defer`, a row out of time order leaves the running sums
        to `flush` (once per batch, not once per row)."""
        t, pico, sign, unpriced, estimated = event
        if sign > 0 and self.session_anchor is not None and t < self.session_anchor:
            # A request older than the current session's start landed late (it started first but
            # finished last): it may move the whole chain, so fold it again from the table.
            self.stale = True
        for sums in self.calendar.values():
            if sums.start <= t < sums.end:
                sums.pico += pico
                sums.calls += sign
                sums.unpriced += unpriced
                sums.estimated += estimated
        if t >= self.exact_from:
            events = self.events
            # Kept in time order only (rows of one batch often share a time; their order does not
            # matter to any sum). The usual case: rows land roughly in time order.
            if not events or t >= events[-1][0]:
                events.append(event)
                if self.dirty is None:
                    cp, cn, cu, ce = self.cum
                    cp.append(cp[-1] + pico)
                    cn.append(cn[-1] + sign)
                    cu.append(cu[-1] + unpriced)
                    ce.append(ce[-1] + estimated)
            else:
                i = bisect.bisect_right(events, (t, float("inf")))
                events.insert(i, event)
                self.dirty = i if self.dirty is None else min(self.dirty, i)
            if not defer:
                self.flush()

    def flush(self) -> None:
        if self.dirty is not None:
            self._rebuild(self.dirty)
            self.dirty = None

    def _since(self, start: int) -> tuple[int, int, int, int, int]:
        """(index of the first event at or after `start`, pico, calls, unpriced, estimated)."""
        i = bisect.bisect_left(self.events, (start,))
        cp, cn, cu, ce = self.cum
        return i, cp[-1] - cp[i], cn[-1] - cn[i], cu[-1] - cu[i], ce[-1] - ce[i]

    def _advance_session(self, now_ms: int) -> int | None:
        """Continue the session fold from the anchor: jump to the first request at or after the
        session's end, as long as one has come (up to now)."""
        events, length = self.events, self.plan.session_ms
        anchor = self.session_anchor
        i = 0 if anchor is None else bisect.bisect_left(events, (anchor + length,))
        while i < len(events):
            t, _, sign, _, _ = events[i]
            if t > now_ms:
                break
            if sign > 0:
                anchor = t
                i = bisect.bisect_left(events, (t + length,), i + 1)
            else:
                i += 1
        self.session_anchor = anchor
        return anchor

    def rolling_retry(self, start: int, hours: int, allowed: int, strict: bool, now_ms: int) -> int | None:
        """`rolling_retry_ms` over this ledger's rows since `start`, by bisecting the running sums:
        what is left after the first m rows age out is cum[-1] - cum[m], and costs are never
        negative (a cancelling row only takes back an earlier one), so the sums only grow."""
        if allowed < 0 or (strict and allowed == 0):
            return None
        with self.lock:
            events, cp = self.events, self.cum[0]
            i = bisect.bisect_left(events, (start,))
            left = cp[-1] - cp[i]
            if (left < allowed) if strict else (left <= allowed):
                return now_ms
            target = cp[-1] - allowed
            m = bisect.bisect_right(cp, target, i) if strict else bisect.bisect_left(cp, target, i)
            if m > len(events):
                return None
            return events[m - 1][0] + hours * HOUR_MS + 1

    def windows(self, now_ms: int) -> list[WindowUsage] | None:
        """Each cap's usage at `now_ms`, or None when a calendar window rolled over (reload)."""
        tz = zone(self.plan.timezone)
        length = self.plan.session_ms
        anchor = self._advance_session(now_ms)
        self._trim(now_ms)
        out = []
        for cap in self.plan.caps:
            kind = cap.window.kind
            if kind in CALENDAR:
                sums = self.calendar.get(kind)
                start, end = calendar_bounds(kind, now_ms, tz)
                if sums is None or (sums.start, sums.end) != (start, end):
                    return None
                out.append(WindowUsage(cap, start, end, sums.pico, 0, sums.calls, sums.unpriced, sums.estimated))
                continue
            if kind == SESSION:
                if anchor is None or now_ms >= anchor + length:
                    out.append(WindowUsage(cap, None, None))
                    continue
                i, pico, calls, unpriced, estimated = self._since(anchor)
                out.append(WindowUsage(cap, anchor, anchor + length, pico, 0, calls, unpriced, estimated))
                continue
            hours = cap.window.hours
            start = now_ms - hours * HOUR_MS
            i, pico, calls, unpriced, estimated = self._since(start)
            # Resets: when the oldest call still counted leaves the window.
            resets = self.events[i][0] + hours * HOUR_MS if i < len(self.events) else None
            retry = functools.partial(self.rolling_retry, start, hours)
            out.append(WindowUsage(cap, start, resets, pico, 0, calls, unpriced, estimated, retry_fn=retry))
        return out

    def _trim(self, now_ms: int) -> None:
        # Rows arrive late (a span is stamped when it started): keep what a late row can still
        # change. With no session known, a late row may start one anywhere since the look-back.
        anchor = self.session_anchor if self.session_anchor is not None else session_lookback_start(now_ms)
        keep_from = min(now_ms - self.plan.max_rolling_ms, anchor)
        if self.events and self.events[0][0] < keep_from - HOUR_MS:  # trim in chunks, not per call
            cut = bisect.bisect_left(self.events, (keep_from,))
            del self.events[:cut]
            for column in self.cum:
                base = column[cut]
                column[:] = [v - base for v in column[cut:]]
            self.exact_from = max(self.exact_from, keep_from)


class _WatchedStore:
    """The writer's store, seen through the caps engine: every committed batch is applied to the
    cached ledgers under the same lock as ledger loads. Everything else passes through.

    A failed insert may have written part of its batch (the writer re-sends it later with the
    same deduplication token): the users in it are dropped from the cache instead, and so are
    the users of a successful re-send, so their next read loads what the table really holds."""

    def __init__(self, store: Any, caps: Caps) -> None:
        self._store = store
        self._caps = caps
        self._uncertain_tokens: OrderedDict[str, None] = OrderedDict()

    def insert_usage_arrow(self, table: Any, token: str | None = None, *, rollups: bool = True) -> None:
        caps = self._caps
        with caps.commit_lock:
            try:
                self._store.insert_usage_arrow(table, token, rollups=rollups)
            except BaseException:
                if token:
                    self._uncertain_tokens[token] = None
                    while len(self._uncertain_tokens) > 1000:
                        self._uncertain_tokens.popitem(last=False)
                caps.forget_users(_arrow_rows(table, caps, users_only=True), settle=False)
                raise
            if token is not None and self._uncertain_tokens.pop(token, 0) is None:
                caps.forget_users(_arrow_rows(table, caps, users_only=True), settle=True)
            else:
                caps.apply_rows(_arrow_rows(table, caps))

    def insert_usage(self, records: Sequence[UsageRecord], token: str | None = None) -> None:
        with self._caps.commit_lock:
            if token is None:
                self._store.insert_usage(records)
            else:
                self._store.insert_usage(records, token)
            self._caps.observe(records)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


# A committed row as the engine needs it: (user, time ms, pico-dollars or None, sign, usage_status).
_Row = tuple[str, int, int | None, int, str]


def _arrow_rows(table: Any, caps: Caps, users_only: bool = False) -> list[_Row]:
    """The rows of an Arrow batch (usage_events' columns) whose user the engine is tracking."""
    import pyarrow as pa
    import pyarrow.compute as pc

    users = table.column("user_id").to_pylist()
    ledgers, reservations = caps._ledgers, caps._reservations
    picked = [i for i, user in enumerate(users) if user in ledgers or user in reservations]
    if not picked:
        return []
    if users_only:
        return [(users[i], 0, None, 1, "") for i in picked]
    sub = table.take(pa.array(picked, pa.int64()))
    times = sub.column("event_time").cast(pa.int64()).to_pylist()
    # Decimal(18, 12) times 10^12 is a whole number of pico-dollars: an exact cast.
    cost = sub.column("cost_usd")
    picos = pc.cast(pc.multiply(cost, pa.scalar(PICO, pa.decimal128(13, 0))), pa.int64()).to_pylist()
    signs = sub.column("sign").to_pylist()
    statuses = sub.column("usage_status").to_pylist()
    return [(users[i], t, p, sg, st) for i, t, p, sg, st in zip(picked, times, picos, signs, statuses)]


class Caps:
    def __init__(self, store: Any, book: TierBook | None = None, *, refresh_seconds: float | None = 30.0,
                 reservation_seconds: float = 60.0, max_users: int = 100_000,
                 clock: Callable[[], int] | None = None) -> None:
        self.store = store
        self.book = book or TierBook.default()
        self.refresh_seconds = refresh_seconds
        self.reservation_ms = int(reservation_seconds * 1000)
        self.max_users = max_users
        # Epoch milliseconds; tests move it.
        self.clock: Callable[[], int] = clock or (lambda: time.time_ns() // 1_000_000)
        self.commit_lock = threading.RLock()
        self._ledgers: OrderedDict[str, _Ledger] = OrderedDict()
        self._ledgers_lock = threading.Lock()
        self._user_locks = [threading.Lock() for _ in range(64)]
        self._reservations: dict[str, list[Reservation]] = {}
        self._res_lock = threading.Lock()
        self._refresh_queue: OrderedDict[str, None] = OrderedDict()
        self._refresher: threading.Thread | None = None
        self._closed = False
        self._last_write_us = 0

    @classmethod
    def from_settings(cls, store: Any, settings: Any) -> Caps:
        refresh = settings.caps_refresh_seconds
        if refresh is None:
            # Embedded chDB: only this process can open the store, so every row and setting goes
            # through it and nothing needs reloading. A ClickHouse server may have other writers.
            refresh = None if getattr(store, "embedded", False) else 30.0
        return cls(
            store,
            TierBook.load(settings.tiers_file),
            refresh_seconds=refresh,
            reservation_seconds=settings.caps_reservation_seconds,
            max_users=settings.caps_cache_users,
        )

    def close(self) -> None:
        """Stop background reloads (they also stop by themselves when idle)."""
        self._closed = True

    def watch(self, writer: Any) -> Caps:
        """Put the engine between `writer` and its store, so committed rows reach the ledgers."""
        if not isinstance(writer.store, _WatchedStore):
            writer.store = _WatchedStore(writer.store, self)
        return self

    # --- reads ----------------------------------------------------------------------------------

    def usage(self, user_id: str, now: int | None = None) -> tuple[UserConfig, Plan, list[WindowUsage]]:
        """Each window's spend at `now` (default: the clock), reservations included."""
        with self._user_lock(user_id):
            ledger, now, windows = self._windows(user_id, now)
            reserved = self._reserved(user_id, now)
        for w in windows:
            w.reserved_pico = reserved
        return ledger.config, ledger.plan, windows

    def check(self, user_id: str, estimate: Decimal | None = None, *, reserve: bool = True) -> Decision:
        estimate_pico = 0 if estimate is None else int(parse_usd(estimate, "estimated_cost_usd").scaleb(12))
        # One user's checks are serialised, so a reservation is seen by the next check.
        with self._user_lock(user_id):
            ledger, now, windows = self._windows(user_id)
            with self._res_lock:
                reserved = self._reserved_locked(user_id, now)
                for w in windows:
                    w.reserved_pico = reserved
                decision = decide(windows, estimate_pico, now)
                if reserve and estimate_pico and decision.decision != DENY:
                    r = Reservation(uuid.uuid4().hex, user_id, estimate_pico, now, now + self.reservation_ms)
                    self._reservations.setdefault(user_id, []).append(r)
                    decision.reservation = r
        return decision

    def release(self, user_id: str, reservation_id: str) -> bool:
        """Give back a reservation whose call was not made (or has failed)."""
        with self._res_lock:
            held = self._reservations.get(user_id, [])
            for i, r in enumerate(held):
                if r.id == reservation_id:
                    del held[i]
                    return True
        return False

    def reserving_users(self) -> list[str]:
        """Users holding a reservation (their spend may be nothing yet)."""
        with self._res_lock:
            return list(self._reservations)

    def config(self, user_id: str) -> tuple[UserConfig, Plan]:
        ledger = self._ledger(user_id, self.clock())
        return ledger.config, ledger.plan

    # --- admin ----------------------------------------------------------------------------------

    def set_tier(self, user_id: str, tier: str) -> None:
        if tier not in self.book.tiers:
            raise CapsError(f"unknown tier {tier!r}: one of {sorted(self.book.tiers)}")
        self._write_setting(user_id, "tier", tier)

    def set_overrides(self, user_id: str, overrides: Overrides) -> None:
        import orjson

        self._write_setting(user_id, "overrides", orjson.dumps(overrides.as_json()).decode())

    def revoke_tokens(self, user_id: str) -> int:
        now = self.clock()
        self._write_setting(user_id, "tokens_not_before", str(now))
        return now

    def _write_setting(self, user_id: str, setting: str, value: str) -> None:
        # Microsecond stamps, strictly increasing in this process, so the latest write wins argMax.
        with self._ledgers_lock:
            stamp = max(time.time_ns() // 1000, self._last_write_us + 1)
            self._last_write_us = stamp
        self.store.command(
            f"INSERT INTO {self.store.database}.user_tiers (user_id, setting, value, updated_at) VALUES "
            "({u:String}, {s:String}, {v:String}, fromUnixTimestamp64Micro({t:Int64}))",
            {"u": user_id, "s": setting, "v": value, "t": stamp},
        )
        self.forget(user_id)

    def forget(self, user_id: str) -> None:
        """Drop a user's cached ledger and settings: the next read loads them again."""
        with self._ledgers_lock:
            self._ledgers.pop(user_id, None)

    # --- the write stream -----------------------------------------------------------------------

    def observe(self, records: Iterable[UsageRecord]) -> None:
        """Apply committed records to the cached ledgers (call with `commit_lock` held)."""
        ledgers, reservations = self._ledgers, self._reservations
        self.apply_rows(
            (r.attribution.user_id, r.event_time_ns // 1_000_000,
             None if r.cost_usd is None else int(r.cost_usd.scaleb(12)), r.sign, r.usage_status)
            for r in records
            if r.attribution.user_id in ledgers or r.attribution.user_id in reservations
        )

    def apply_rows(self, rows: Iterable[_Row]) -> None:
        """Apply committed rows of tracked users (call with `commit_lock` held). Runs in the writer
        thread for every batch, so it does as little as it can per row."""
        reservations = self._reservations
        by_user: dict[str, list[_Event]] = {}
        settled: dict[str, list[tuple[int, int]]] = {}
        for user, t, pico, sign, status in rows:
            if user in reservations:
                settled.setdefault(user, []).append((t, sign))
            estimated = 0 if status == "reported" else sign
            event = (t, 0, sign, sign, estimated) if pico is None else (t, pico * sign, sign, 0, estimated)
            by_user.setdefault(user, []).append(event)
        for user, events in by_user.items():
            ledger = self._ledgers.get(user)
            if ledger is not None:
                with ledger.lock:
                    for event in events:
                        ledger.apply(event, defer=True)
                    ledger.flush()
        if settled:
            self._settle(settled)

    def forget_users(self, rows: Iterable[_Row], *, settle: bool) -> None:
        """Drop the ledgers of the users in `rows` (what was stored for them is not known here);
        with `settle`, the rows did land and settle reservations."""
        landed: dict[str, list[tuple[int, int]]] = {}
        with self._ledgers_lock:
            for user, t, _, sign, _ in rows:
                self._ledgers.pop(user, None)
                landed.setdefault(user, []).append((t, sign))
        if settle and landed:
            self._settle(landed)

    def _settle(self, landed: Mapping[str, list[tuple[int, int]]]) -> None:
        # Each call that lands settles its user's oldest reservation: its cost is now spent. Only
        # calls that started after that reservation was made count (less a clock-skew allowance:
        # event times come from the app's clock), and as a net of signs: a repricing's or a late
        # attribution's -1/+1 pair for one user is no new call, nor is a backfilled past call.
        with self._res_lock:
            for user, rows in landed.items():
                held = self._reservations.get(user)
                if not held:
                    continue
                since = held[0].created_ms - SETTLE_SKEW_MS
                count = sum(sign for t, sign in rows if t >= since)
                if count > 0:
                    del held[:count]
                    if not held:
                        del self._reservations[user]

    # --- internals ------------------------------------------------------------------------------

    def _user_lock(self, user_id: str) -> threading.Lock:
        return self._user_locks[hash(user_id) % len(self._user_locks)]

    def _reserved(self, user_id: str, now: int) -> int:
        with self._res_lock:
            return self._reserved_locked(user_id, now)

    def _reserved_locked(self, user_id: str, now: int) -> int:
        held = self._reservations.get(user_id)
        if not held:
            return 0
        held[:] = [r for r in held if r.expires_ms > now]
        if not held:
            del self._reservations[user_id]
            return 0
        return sum(r.amount_pico for r in held)

    def _windows(self, user_id: str, now: int | None = None) -> tuple[_Ledger, int, list[WindowUsage]]:
        now = self.clock() if now is None else now
        ledger = self._ledger(user_id, now)
        with ledger.lock:
            windows = None if ledger.stale else ledger.windows(now)
        if windows is None:  # a calendar window rolled over since the load, or a late row
            ledger = self._load(user_id, now, ledger.config)
            with ledger.lock:
                windows = ledger.windows(now)
        return ledger, now, windows or []

    def _ledger(self, user_id: str, now: int) -> _Ledger:
        with self._ledgers_lock:
            ledger = self._ledgers.get(user_id)
            if ledger is not None:
                self._ledgers.move_to_end(user_id)
        if ledger is None:
            return self._load(user_id, now)
        refresh = self.refresh_seconds
        if refresh is not None and time.monotonic() - ledger.loaded_at > refresh and not ledger.refreshing:
            ledger.refreshing = True
            self._schedule_refresh(user_id)
        return ledger

    def _load(self, user_id: str, now: int, config: UserConfig | None = None) -> _Ledger:
        config = config or self._read_config(user_id)
        plan = self.book.plan(config.tier, config.overrides)
        # Under the commit lock: no batch lands between the snapshot and its installation.
        with self.commit_lock:
            ledger = self._snapshots([user_id], {user_id: config}, plan, now)[user_id]
            with self._ledgers_lock:
                self._ledgers[user_id] = ledger
                self._ledgers.move_to_end(user_id)
                while len(self._ledgers) > self.max_users:
                    self._ledgers.popitem(last=False)
        return ledger

    def _read_config(self, user_id: str) -> UserConfig:
        return self._read_configs(user_id).get(user_id) or UserConfig()

    def _read_configs(self, user_id: str | None) -> dict[str, UserConfig]:
        """Settings of one user, or of every user that has any (`None`)."""
        import orjson

        where = "WHERE user_id = {u:String} " if user_id is not None else ""
        rows = self.store.query(
            f"SELECT user_id, setting, argMax(value, updated_at) FROM {self.store.database}.user_tiers "
            f"{where}GROUP BY user_id, setting",
            {"u": user_id} if user_id is not None else None,
        ).rows
        configs: dict[str, UserConfig] = {}
        for user, setting, value in rows:
            config = configs.setdefault(user, UserConfig())
            try:
                if setting == "tier":
                    config.tier = value or None
                    if config.tier and config.tier not in self.book.tiers:
                        log.warning("user's tier %r is not in the tiers file: using %r", value, self.book.default_tier)
                elif setting == "overrides":
                    config.overrides = Overrides.parse(orjson.loads(value))
                elif setting == "tokens_not_before":
                    config.tokens_not_before_ms = int(value)
            except (CapsError, ValueError) as exc:
                log.warning("ignoring a stored %s setting that no longer parses: %s", setting, exc)
        return configs

    def _snapshots(self, users: Sequence[str], configs: Mapping[str, UserConfig], plan: Plan,
                   now: int) -> dict[str, _Ledger]:
        """Ledgers of `users` (all on `plan`) from one grouped pass over their rows.

        Per user: the session fold (from the look-back, requests up to now), calendar sums, and
        the rows from the latest session start (or the rolling window's start) on. The primary
        key (user_id, event_time, ...) bounds the read to these users and this look-back."""
        tz = zone(plan.timezone)
        bounds = [(c.window.kind, calendar_bounds(c.window.kind, now, tz))
                  for c in plan.caps if c.window.kind in CALENDAR]
        lookback = session_lookback_start(now)
        rolling_from = now - plan.max_rolling_ms
        recent_from = min(lookback, rolling_from)
        params: dict[str, Any] = {
            "users": list(users), "session_ms": plan.session_ms, "lookback": lookback, "now": now,
            "rolling_from": rolling_from, "recent_from": recent_from,
            "since": min([recent_from, *(start for _, (start, _) in bounds)]),
        }
        sums_sql = []
        for i, (_, (start, end)) in enumerate(bounds):
            params[f"s{i}"], params[f"e{i}"] = start, end
            cond = f"ms >= {{s{i}:Int64}} AND ms < {{e{i}:Int64}}"
            sums_sql.append(f", sumIf(pico, {cond}), sumIf(sg, {cond}), sumIf(unpriced, {cond}), "
                            f"sumIf(estimated, {cond})")
        db = self.store.database
        sql = (
            "SELECT user_id, s0, exact_from, arrayFilter(e -> e.1 >= exact_from, recent), * EXCEPT "
            "  (user_id, s0, exact_from, recent) FROM ("
            " SELECT user_id,"
            "  arrayFold((acc, t) -> if(t >= acc + {session_ms:Int64}, t, acc), arraySort(groupArrayIf(ms, "
            "    sg > 0 AND ms >= {lookback:Int64} AND ms <= {now:Int64})), -{session_ms:Int64}) AS s0,"
            "  least(if(s0 >= {lookback:Int64}, s0, {lookback:Int64}), {rolling_from:Int64}) AS exact_from,"
            "  arraySort(groupArrayIf((ms, pico, sg, unpriced, estimated), ms >= {recent_from:Int64})) AS recent"
            + "".join(sums_sql)
            + " FROM (SELECT user_id, toUnixTimestamp64Milli(event_time) AS ms, toInt64(sign) AS sg,"
            # Decimal(18, 12) is stored as an Int64 count of 1e-12 dollars: exactly pico-dollars.
            "   reinterpretAsInt64(ifNull(cost_usd, toDecimal64(0, 12))) * sg AS pico,"
            "   if(cost_usd IS NULL, sg, 0) AS unpriced, if(usage_status != 'reported', sg, 0) AS estimated"
            f"  FROM {db}.usage_events WHERE user_id IN {{users:Array(String)}}"
            "   AND event_time >= fromUnixTimestamp64Milli({since:Int64}))"
            " GROUP BY user_id)"
        )
        rows = {row[0]: row for row in self.store.query(sql, params).rows}
        loaded_at = time.monotonic()
        ledgers = {}
        for user in users:
            row = rows.get(user)
            calendar = {kind: _Sums(start, end) for kind, (start, end) in bounds}
            if row is None:  # nothing in the look-back
                anchor, exact_from, events = None, recent_from, []
            else:
                s0, exact_from, events = row[1], int(row[2]), [tuple(map(int, e)) for e in row[3]]
                anchor = int(s0) if s0 >= lookback else None
                for i, sums in enumerate(calendar.values()):
                    sums.pico, sums.calls, sums.unpriced, sums.estimated = map(int, row[4 + 4 * i: 8 + 4 * i])
            ledgers[user] = _Ledger(configs.get(user) or UserConfig(), plan, calendar, anchor, exact_from, events,
                                    loaded_at)
        return ledgers

    def preload(self, *, background: bool = True, chunk: int = 2000, users: Sequence[str] | None = None) -> int | None:
        """Load the ledgers of the users active in the look-back (or of `users`) in a few grouped
        passes, so that their first check after a start answers from memory. Users already loaded
        are kept."""
        if background:
            threading.Thread(target=self._preload_quietly, args=(chunk,), name="spanmeter-caps-preload",
                             daemon=True).start()
            return None
        now = self.clock()
        db = self.store.database
        plan = self.book.plan(None)
        since = min([session_lookback_start(now), now - plan.max_rolling_ms,
                     *(calendar_bounds(c.window.kind, now, zone(plan.timezone))[0]
                       for c in plan.caps if c.window.kind in CALENDAR)])
        active = list(users) if users is not None else [r[0] for r in self.store.query(
            f"SELECT user_id FROM {db}.usage_events WHERE event_time >= fromUnixTimestamp64Milli({{since:Int64}}) "
            "AND user_id != '' GROUP BY user_id ORDER BY max(event_time) DESC LIMIT {n:UInt64}",
            {"since": since, "n": self.max_users},
        ).rows]
        configs = self._read_configs(None)
        groups: dict[tuple, list[str]] = {}
        for user in dict.fromkeys([*configs, *active]):
            config = configs.get(user) or UserConfig()
            groups.setdefault((config.tier, repr(config.overrides)), []).append(user)
        loaded = 0
        for users in groups.values():
            plan = self.book.plan(configs[users[0]].tier if users[0] in configs else None,
                                  configs[users[0]].overrides if users[0] in configs else None)
            for first in range(0, len(users), chunk):
                with self.commit_lock:
                    with self._ledgers_lock:
                        todo = [u for u in users[first:first + chunk] if u not in self._ledgers]
                    if not todo:
                        continue
                    ledgers = self._snapshots(todo, configs, plan, self.clock())
                    with self._ledgers_lock:
                        for user, ledger in ledgers.items():
                            self._ledgers.setdefault(user, ledger)
                        while len(self._ledgers) > self.max_users:
                            self._ledgers.popitem(last=False)
                loaded += len(todo)
                if self._closed:
                    return loaded
        return loaded

    def _preload_quietly(self, chunk: int) -> None:
        try:
            started = time.monotonic()
            count = self.preload(background=False, chunk=chunk)
            log.info("caps: preloaded %d users in %.1f s", count, time.monotonic() - started)
        except Exception as exc:  # noqa: BLE001 - users then load on their first check
            log.warning("caps: preload failed: %s", exc)

    def _schedule_refresh(self, user_id: str) -> None:
        with self._ledgers_lock:
            self._refresh_queue[user_id] = None
            if self._refresher is not None and self._refresher.is_alive():
                return
            self._refresher = threading.Thread(target=self._refresh_loop, name="spanmeter-caps-refresh", daemon=True)
            self._refresher.start()

    def _refresh_loop(self) -> None:
        # Reloads in the background (rows written by other processes, changed settings), one user
        # at a time; checks keep answering from the old ledger meanwhile. Exits when idle.
        while not self._closed:
            with self._ledgers_lock:
                if not self._refresh_queue:
                    self._refresher = None
                    return
                user_id, _ = self._refresh_queue.popitem(last=False)
            started = time.monotonic()
            try:
                self._load(user_id, self.clock())
            except Exception as exc:  # noqa: BLE001 - a failed reload keeps the old ledgers
                log.warning("caps: background reload failed, next try in %ss: %s", self.refresh_seconds, exc)
                self._postpone_refreshes(user_id)
                return
            # Take at most a fifth of the store's time: commits and first loads come first.
            time.sleep(min(1.0, 4 * (time.monotonic() - started)))
        self._postpone_refreshes()

    def _postpone_refreshes(self, *users: str) -> None:
        with self._ledgers_lock:
            pending = [*users, *self._refresh_queue]
            self._refresh_queue.clear()
            self._refresher = None
            for user_id in pending:
                ledger = self._ledgers.get(user_id)
                if ledger is not None:
                    ledger.refreshing = False
                    ledger.loaded_at = time.monotonic()
