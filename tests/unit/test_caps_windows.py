"""Window arithmetic, tiers and decisions of the caps engine: pure functions, the clock moved by hand.

Times are epoch milliseconds built from explicit UTC datetimes so each case reads as a calendar.
"""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from spanmeter.ingest.caps import (
    ALLOW,
    DENY,
    HOUR_MS,
    PICO,
    WARN,
    Cap,
    CapsError,
    Overrides,
    TierBook,
    Window,
    WindowUsage,
    calendar_bounds,
    current_session,
    decide,
    money,
    percent,
    rolling_retry_ms,
    session_lookback_start,
    session_start,
    zone,
)

UTC_Z = zone("UTC")
LA = zone("America/Los_Angeles")
KOLKATA = zone("Asia/Kolkata")
FIVE_H = 5 * HOUR_MS
MIN = 60_000


def ms(*args, tz=UTC) -> int:
    return int(datetime(*args, tzinfo=tz).timestamp() * 1000)


def usd(text: str) -> int:
    return int(Decimal(text) * PICO)


# --- sessions -------------------------------------------------------------------------------


def test_a_session_lasts_five_hours_from_the_first_request():
    t0 = ms(2026, 3, 2, 9, 0)
    times = [t0, t0 + 1 * HOUR_MS, t0 + 4 * HOUR_MS + 59 * MIN]
    assert session_start(times, FIVE_H) == t0
    assert current_session(times, t0 + 4 * HOUR_MS + 59 * MIN, FIVE_H) == (t0, t0 + FIVE_H)


def test_the_first_request_after_a_session_ends_starts_the_next_one_there():
    t0 = ms(2026, 3, 2, 9, 0)
    # 09:00 starts a session (ends 14:00); 13:00 is inside it; 14:30 starts the next (ends 19:30),
    # which is not aligned to 14:00: sessions chain from requests, not from a grid.
    times = [t0, t0 + 4 * HOUR_MS, t0 + 5 * HOUR_MS + 30 * MIN, t0 + 9 * HOUR_MS]
    assert session_start(times, FIVE_H) == t0 + 5 * HOUR_MS + 30 * MIN
    assert current_session(times, t0 + 10 * HOUR_MS, FIVE_H) == (
        t0 + 5 * HOUR_MS + 30 * MIN, t0 + 10 * HOUR_MS + 30 * MIN)


def test_a_request_exactly_at_the_boundary_starts_a_new_session():
    t0 = ms(2026, 3, 2, 9, 0)
    assert session_start([t0, t0 + FIVE_H - 1], FIVE_H) == t0
    assert session_start([t0, t0 + FIVE_H], FIVE_H) == t0 + FIVE_H
    # At the session's last millisecond it is still running; at its end it is over.
    assert current_session([t0], t0 + FIVE_H - 1, FIVE_H) == (t0, t0 + FIVE_H)
    assert current_session([t0], t0 + FIVE_H, FIVE_H) is None


def test_no_session_before_the_first_request_and_after_the_last_one_expires():
    assert session_start([], FIVE_H) is None
    assert current_session([], ms(2026, 3, 2), FIVE_H) is None
    t0 = ms(2026, 3, 2, 9, 0)
    assert current_session([t0], t0 + 6 * HOUR_MS, FIVE_H) is None  # the next request starts one


def test_a_gap_of_five_hours_starts_a_fresh_chain_whatever_came_before():
    t0 = ms(2026, 3, 2, 0, 0)
    busy = [t0 + i * 50 * MIN for i in range(20)]  # a request every 50 minutes for ~16 hours
    after_gap = busy[-1] + FIVE_H + 7 * MIN
    tail = [after_gap, after_gap + HOUR_MS]
    # Wherever the fold starts inside the busy stretch, the chain is the same after the gap:
    for skip in range(len(busy)):
        assert session_start(busy[skip:] + tail, FIVE_H) == after_gap


def test_chains_that_start_at_different_points_agree_after_any_long_gap():
    t0 = ms(2026, 3, 2, 0, 0)
    times = [t0, t0 + 3 * HOUR_MS, t0 + 6 * HOUR_MS, t0 + 12 * HOUR_MS, t0 + 13 * HOUR_MS]
    assert session_start(times, FIVE_H) == session_start(times[1:], FIVE_H) == t0 + 12 * HOUR_MS


def test_the_fold_continues_from_a_known_start():
    t0 = ms(2026, 3, 2, 9, 0)
    later = [t0 + 2 * HOUR_MS, t0 + 5 * HOUR_MS + 1]
    assert session_start(later, FIVE_H, start=t0) == t0 + 5 * HOUR_MS + 1


def test_the_session_lookback_is_a_weekly_grid_between_seven_and_fourteen_days():
    # Wednesday 2026-03-04 15:00 UTC -> Monday 2026-02-23 00:00 UTC.
    assert session_lookback_start(ms(2026, 3, 4, 15, 0)) == ms(2026, 2, 23)
    # It stays put all week, and moves on Monday.
    assert session_lookback_start(ms(2026, 3, 8, 23, 59)) == ms(2026, 2, 23)
    assert session_lookback_start(ms(2026, 3, 9, 0, 0)) == ms(2026, 3, 2)
    for now in (ms(2026, 3, 2), ms(2026, 3, 8, 23, 59, 59)):
        assert 7 * 24 * HOUR_MS <= now - session_lookback_start(now) <= 14 * 24 * HOUR_MS


# --- calendar windows -----------------------------------------------------------------------


def test_iso_week_in_utc_rolls_over_at_monday_midnight():
    sunday_late = ms(2026, 3, 8, 23, 59, 59)
    assert calendar_bounds("week", sunday_late, UTC_Z) == (ms(2026, 3, 2), ms(2026, 3, 9))
    assert calendar_bounds("week", ms(2026, 3, 9), UTC_Z) == (ms(2026, 3, 9), ms(2026, 3, 16))


def test_week_rollover_in_los_angeles_follows_local_midnight_and_dst():
    # DST starts Sunday 2026-03-08 in Los Angeles: the week from Monday 03-02 00:00 PST (08:00Z)
    # ends Monday 03-09 00:00 PDT (07:00Z), so it is 167 hours long.
    start, end = ms(2026, 3, 2, 8), ms(2026, 3, 9, 7)
    assert calendar_bounds("week", ms(2026, 3, 9, 6, 59, 59), LA) == (start, end)
    assert calendar_bounds("week", ms(2026, 3, 9, 7), LA)[0] == end
    assert end - start == 167 * HOUR_MS
    # Sunday evening in LA is already Monday in UTC: a different week in each zone.
    sunday_evening_la = ms(2026, 3, 8, 20, tz=LA)
    assert calendar_bounds("week", sunday_evening_la, LA) == (start, end)
    assert calendar_bounds("week", sunday_evening_la, UTC_Z) == (ms(2026, 3, 9), ms(2026, 3, 16))


def test_month_rollover_in_utc_kolkata_and_los_angeles():
    # 2026-01-31 20:00Z is already February 1st, 01:30 in Kolkata (+05:30), still January in LA.
    now = ms(2026, 1, 31, 20, 0)
    assert calendar_bounds("month", now, UTC_Z) == (ms(2026, 1, 1), ms(2026, 2, 1))
    assert calendar_bounds("month", now, KOLKATA) == (ms(2026, 1, 31, 18, 30), ms(2026, 2, 28, 18, 30))
    assert calendar_bounds("month", now, LA) == (ms(2026, 1, 1, 8), ms(2026, 2, 1, 8))
    # Exactly at Kolkata's midnight the new month has begun; one millisecond before it has not.
    boundary = ms(2026, 1, 31, 18, 30)
    assert calendar_bounds("month", boundary, KOLKATA)[0] == boundary
    assert calendar_bounds("month", boundary - 1, KOLKATA)[1] == boundary


def test_month_ends_of_every_length_and_the_year_boundary():
    assert calendar_bounds("month", ms(2026, 2, 14), UTC_Z) == (ms(2026, 2, 1), ms(2026, 3, 1))
    assert calendar_bounds("month", ms(2028, 2, 29, 12), UTC_Z) == (ms(2028, 2, 1), ms(2028, 3, 1))
    assert calendar_bounds("month", ms(2026, 12, 31, 23, 59), UTC_Z) == (ms(2026, 12, 1), ms(2027, 1, 1))
    assert calendar_bounds("week", ms(2027, 1, 1), UTC_Z) == (ms(2026, 12, 28), ms(2027, 1, 4))


def test_day_is_23_or_25_hours_on_dst_changes_in_los_angeles():
    spring = calendar_bounds("day", ms(2026, 3, 8, 12, tz=LA), LA)
    autumn = calendar_bounds("day", ms(2026, 11, 1, 12, tz=LA), LA)
    assert spring[1] - spring[0] == 23 * HOUR_MS
    assert autumn[1] - autumn[0] == 25 * HOUR_MS
    assert calendar_bounds("day", ms(2026, 3, 4, 12), KOLKATA) == (ms(2026, 3, 3, 18, 30), ms(2026, 3, 4, 18, 30))


def test_a_midnight_inside_a_dst_gap_starts_the_day_at_the_first_existing_instant():
    # Santiago moves clocks from 24:00 to 01:00 on 2026-09-06: the day starts at 01:00 local.
    santiago = zone("America/Santiago")
    start, _ = calendar_bounds("day", ms(2026, 9, 6, 12, tz=santiago), santiago)
    assert datetime.fromtimestamp(start / 1000, santiago).hour == 1
    assert calendar_bounds("day", start - 1, santiago)[1] == start


# --- rolling windows ------------------------------------------------------------------------


def test_rolling_retry_is_when_enough_old_spend_ages_out():
    t0 = ms(2026, 3, 2, 9, 0)
    events = [(t0, usd("0.30")), (t0 + HOUR_MS, usd("0.50")), (t0 + 2 * HOUR_MS, usd("0.20"))]
    now = t0 + 3 * HOUR_MS
    # Cap $1.00 with $1.00 spent, next call $0.10: dropping the 0.30 leaves 0.70 + 0.10 <= 1.00.
    assert rolling_retry_ms(events, 24, now, usd("0.90"), strict=False) == t0 + 24 * HOUR_MS + 1
    # A $0.60 call must wait for the 0.50 as well.
    assert rolling_retry_ms(events, 24, now, usd("0.40"), strict=False) == t0 + 25 * HOUR_MS + 1
    assert rolling_retry_ms(events, 24, now, usd("1.00"), strict=False) == now
    assert rolling_retry_ms(events, 24, now, -1, strict=False) is None


# --- tiers, overrides, decisions ------------------------------------------------------------

BOOK = TierBook.parse({
    "default_tier": "free",
    "warn_at": 0.8,
    "tiers": {
        "free": {"caps": {"session": "1.00", "week": "2.00", "month": 3}},
        "pro": {"timezone": "Asia/Kolkata", "warn_at": "0.9",
                "caps": {"session": "20", "rolling_24h": "50", "month": {"limit_usd": "400", "hard": False}}},
    },
})


def test_the_shipped_example_file_parses_to_free_lite_and_pro():
    from pathlib import Path

    import spanmeter.ingest as ingest

    book = TierBook.load(Path(ingest.__file__).parent / "tiers.example.yaml")
    assert set(book.tiers) == {"free", "lite", "pro"} and book.default_tier == "free"
    free = {c.window.name: c.limit_usd for c in book.plan("free").caps}
    assert free == {"session": Decimal("1.00"), "week": Decimal("2.00"), "month": Decimal("3.00")}
    assert all(c.warn_at == Decimal("0.8") for c in book.plan("free").caps)


def test_a_tier_plan_orders_windows_and_inherits_zone_and_warn_level():
    plan = BOOK.plan("pro")
    assert [c.window.name for c in plan.caps] == ["session", "rolling_24h", "month"]
    assert plan.timezone == "Asia/Kolkata" and plan.max_rolling_ms == 24 * HOUR_MS
    assert plan.caps[0].warn_at == Decimal("0.9") and plan.caps[2].hard is False
    assert BOOK.plan(None).tier == "free" and BOOK.plan("gone").tier == "free"
    assert BOOK.plan("free").caps[2].limit_usd == Decimal(3)


def test_overrides_replace_add_and_lift_caps_and_set_the_zone():
    overrides = Overrides.parse({"caps": {"week": {"limit_usd": "5.00"}, "day": "0.50", "month": None},
                                 "timezone": "America/Los_Angeles"})
    plan = BOOK.plan("free", overrides)
    caps = {c.window.name: c for c in plan.caps}
    assert caps["week"].limit_usd == Decimal("5.00") and caps["week"].warn_at == Decimal("0.8")
    assert caps["day"].limit_usd == Decimal("0.50")
    assert caps["month"].limit_usd is None  # shown, not capped
    assert caps["session"].limit_usd == Decimal("1.00")  # untouched
    assert plan.timezone == "America/Los_Angeles"


@pytest.mark.parametrize("doc", [
    {"caps": {"fortnight": "1"}},
    {"caps": {"week": "-1"}},
    {"caps": {"week": "lots"}},
    {"caps": {"week": {"limit_usd": "1", "warn_at": 1.5}}},
    {"caps": {"week": {"limit": "1"}}},
    {"timezone": "Mars/Olympus"},
    {"caps": {"week": "0.0000000000001"}},
    {"tier": "pro"},
])
def test_bad_overrides_are_refused(doc):
    with pytest.raises(CapsError):
        Overrides.parse(doc)


@pytest.mark.parametrize("doc", [
    {},
    {"tiers": {"free": {"caps": {"session": "1"}}}, "default_tier": "gold"},
    {"tiers": {"free": {"caps": {"rolling_0h": "1"}}}},
    {"tiers": {"free": {"caps": {"session": "1"}}}, "session_hours": 0},
    {"tiers": {"free": {"caps": {"session": "1"}}}, "surprise": 1},
])
def test_bad_tier_files_are_refused(doc):
    with pytest.raises(CapsError):
        TierBook.parse(doc)


def usage(window: str, limit: str | None, spent: str, *, reserved: str = "0", warn="0.8", hard=True,
          resets: int | None = None, events=()) -> WindowUsage:
    cap = Cap(Window.parse(window), None if limit is None else Decimal(limit),
              None if warn is None else Decimal(warn), hard)
    return WindowUsage(cap, 0, resets, usd(spent), usd(reserved), events=list(events))


NOW = ms(2026, 3, 4, 12)


def test_decision_allow_then_warn_at_the_soft_limit_then_deny_at_the_cap():
    end = ms(2026, 3, 9)
    assert decide([usage("week", "2.00", "1.00", resets=end)], 0, NOW).decision == ALLOW
    assert decide([usage("week", "2.00", "1.60", resets=end)], 0, NOW).decision == WARN  # 80%
    assert decide([usage("week", "2.00", "1.59", resets=end)], 0, NOW).decision == ALLOW
    denied = decide([usage("week", "2.00", "2.00", resets=end)], 0, NOW)
    assert denied.decision == DENY and denied.window == "week" and denied.retry_at_ms == end


def test_an_estimate_that_would_cross_the_cap_is_denied_and_reservations_count():
    end = ms(2026, 3, 9)
    assert decide([usage("week", "2.00", "1.90", resets=end)], usd("0.10"), NOW).decision == WARN
    assert decide([usage("week", "2.00", "1.90", resets=end)], usd("0.11"), NOW).decision == DENY
    held = usage("week", "2.00", "1.50", reserved="0.45", resets=end)
    assert decide([held], usd("0.06"), NOW).decision == DENY


def test_deny_waits_for_every_denying_window_and_session_resets_at_its_end():
    session_end = NOW + 2 * HOUR_MS
    week_end = ms(2026, 3, 9)
    d = decide([usage("session", "1.00", "1.00", resets=session_end),
                usage("week", "2.00", "2.10", resets=week_end)], 0, NOW)
    assert d.decision == DENY and d.retry_at_ms == week_end and d.window == "week"
    d = decide([usage("session", "1.00", "1.00", resets=session_end),
                usage("week", "2.00", "1.20", resets=week_end)], 0, NOW)
    assert d.retry_at_ms == session_end


def test_a_call_larger_than_the_cap_can_never_be_allowed():
    d = decide([usage("session", "1.00", "0", resets=None)], usd("1.50"), NOW)
    assert d.decision == DENY and d.retry_at_ms is None and "does not fit" in d.reason


def test_soft_caps_warn_but_never_deny_and_uncapped_windows_never_decide():
    assert decide([usage("month", "400", "500", hard=False)], 0, NOW).decision == WARN
    assert decide([usage("month", None, "500")], usd("100"), NOW).decision == ALLOW


def test_rolling_deny_retries_when_old_spend_has_aged_out():
    t0 = NOW - 20 * HOUR_MS
    w = usage("rolling_24h", "1.00", "1.00", events=[(t0, usd("0.70")), (NOW - HOUR_MS, usd("0.30"))])
    d = decide([w], usd("0.10"), NOW)
    assert d.decision == DENY and d.retry_at_ms == t0 + 24 * HOUR_MS + 1


def test_money_is_a_decimal_string_and_percent_a_display_number():
    assert money(Decimal("1")) == "1.00"
    assert money(Decimal("0.002400000000")) == "0.0024"
    assert money(Decimal("0E-12")) == "0.00"
    assert percent(usd("0.8"), usd("1")) == 80.0
    assert percent(usd("1"), usd("3")) == 33.3
    assert percent(0, None) is None


from hypothesis import given, strategies as st  # noqa: E402


@given(st.lists(st.tuples(st.integers(0, 10 * HOUR_MS), st.one_of(st.just(0), st.integers(1, 10**12))), max_size=40),
       st.integers(-10, 3 * 10**12), st.booleans(), st.integers(0, 10 * HOUR_MS))
def test_the_ledgers_bisected_rolling_retry_agrees_with_the_definition(rows, allowed, strict, start_offset):
    """The engine finds a rolling window's retry time from its running sums; the definition walks
    the rows. Both must agree, unpriced rows (cost 0) included."""
    from spanmeter.ingest.caps import UserConfig, _Ledger

    t0 = ms(2026, 3, 2)
    rows = sorted((t0 + t, p) for t, p in rows)
    events = [(t, p, 1, 0 if p else 1, 0) for t, p in rows]
    ledger = _Ledger(UserConfig(), BOOK.plan("pro"), {}, None, t0, events, 0.0)
    start = t0 + start_offset
    now = t0 + 10 * HOUR_MS + 1
    in_window = [(t, p) for t, p in rows if t >= start and p]
    expected = rolling_retry_ms(in_window, 3, now, allowed, strict)
    assert ledger.rolling_retry(start, 3, allowed, strict, now) == expected
