"""The pure parts of ingest/budgets.py: tier caps as rows, their version, which users a snapshot
looks at, and one user's status rows."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import available_timezones

import pytest
import yaml

from spanmeter.ingest.budgets import caps_version, earliest_window_start, status_rows, tier_cap_rows
from spanmeter.ingest.caps import Cap, TierBook, Window, WindowUsage, calendar_bounds, zone

TIERS = {
    "default_tier": "free",
    "warn_at": 0.8,
    "session_hours": 4,
    "tiers": {
        "free": {"caps": {"month": "3.00", "session": "1.00"}},
        "pro": {"timezone": "Asia/Kolkata", "warn_at": 0.9,
                "caps": {"rolling_48h": {"limit_usd": "50", "hard": False}, "week": None}},
    },
}


def ms(*args) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def test_tier_cap_rows():
    assert tier_cap_rows(TierBook.parse(TIERS)) == [
        ("free", True, "session", "session", 4, Decimal("1.00"), Decimal("0.8"), True, "UTC"),
        ("free", True, "month", "month", 0, Decimal("3.00"), Decimal("0.8"), True, "UTC"),
        ("pro", False, "rolling_48h", "rolling", 48, Decimal("50"), Decimal("0.9"), False, "Asia/Kolkata"),
        ("pro", False, "week", "week", 0, None, Decimal("0.9"), True, "Asia/Kolkata"),
    ]


def test_caps_version_follows_the_caps_not_the_text():
    base = caps_version(TierBook.parse(TIERS))
    reordered = yaml.safe_load(yaml.safe_dump(TIERS))
    reordered["tiers"]["free"]["caps"] = {"session": "1.0", "month": "3"}  # same amounts, other text
    assert caps_version(TierBook.parse(reordered)) == base
    changed = yaml.safe_load(yaml.safe_dump(TIERS))
    changed["tiers"]["free"]["caps"]["month"] = "3.01"
    assert caps_version(TierBook.parse(changed)) != base
    soft = yaml.safe_load(yaml.safe_dump(TIERS))
    soft["tiers"]["pro"]["caps"]["rolling_48h"]["hard"] = True
    assert caps_version(TierBook.parse(soft)) != base
    assert caps_version(TierBook.default()) != base


ZONES = sorted({"UTC", "Pacific/Kiritimati", "Etc/GMT+12", "Asia/Kolkata", "America/St_Johns", "Pacific/Chatham",
                *(z for z in available_timezones() if z.startswith(("Etc/GMT", "Pacific/", "America/")))})
# Every 2 hours across two month ends (one also a year's) and an ISO week start.
NOWS = [ms(2025, 12, 30) + k * 2 * 3_600_000 for k in range(48)] + [ms(2026, 2, 27) + k * 2 * 3_600_000
                                                                   for k in range(48)]


@pytest.mark.parametrize("tz", ZONES)
def test_snapshot_users_cover_every_open_window(tz):
    """Every calendar window in any time zone (a user's override may set any), the session
    look-back and the longest rolling window start at or after the earliest instant the snapshot
    reads from."""
    book = TierBook.parse(TIERS)
    for now in NOWS:
        earliest = earliest_window_start(book, now)
        for kind in ("day", "week", "month"):
            assert calendar_bounds(kind, now, zone(tz))[0] >= earliest, (kind, tz, now)
        assert now - 48 * 3_600_000 >= earliest
        assert earliest >= now - 45 * 86_400_000  # and not much more than that


def test_status_rows_keep_windows_with_activity_only():
    taken = datetime(2026, 1, 1, 9, tzinfo=UTC)
    session = Cap(Window("session"), Decimal("1.00"), Decimal("0.8"))
    week = Cap(Window("week"), Decimal("2.00"), Decimal("0.8"))
    month = Cap(Window("month"), None)
    windows = [
        WindowUsage(session, ms(2026, 1, 1, 8), ms(2026, 1, 1, 13), spent_pico=850_000_000_000,
                    reserved_pico=100_000_000_000, calls=3, unpriced_calls=1),
        WindowUsage(week, ms(2025, 12, 29), ms(2026, 1, 5), spent_pico=0, calls=0),
        WindowUsage(month, ms(2026, 1, 1), ms(2026, 2, 1), spent_pico=850_000_000_000, calls=3),
    ]
    rows = status_rows("alice", "free", "UTC", windows, taken)
    assert rows == [
        (taken, "alice", "session", "free", "UTC", Decimal("1.00"), Decimal("0.85"), Decimal("0.1"), Decimal("0.05"),
         Decimal("95.0"), "warn", Decimal("0.8"), True, datetime(2026, 1, 1, 8, tzinfo=UTC),
         datetime(2026, 1, 1, 13, tzinfo=UTC), 3, 1, True),
        (taken, "alice", "month", "free", "UTC", None, Decimal("0.85"), Decimal(0), None, None, "ok", None, True,
         datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC), 3, 0, False),
    ]
