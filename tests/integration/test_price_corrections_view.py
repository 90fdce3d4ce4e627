"""The `price_corrections` audit view lists every repricing, even one that lands in the same second
as the row it corrects (`inserted_at` has second resolution, so the original +1 row and the
correction's -1/+1 pair then share one group), and never an attribution correction (a -1/+1 pair
with the same cost, status and version)."""

from datetime import UTC, datetime
from decimal import Decimal

COLUMNS = ["trace_id", "span_id", "event_time", "sign", "user_id", "provider", "request_model", "pricing_status",
           "price_version", "cost_usd", "inserted_at"]
T = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
SAME_SECOND = datetime(2026, 1, 2, 10, 0, 0, tzinfo=UTC)
LATER = datetime(2026, 1, 3, 10, 0, 0, tzinfo=UTC)


def row(n: int, sign: int, user: str, status: str, version: str, cost: str | None, inserted: datetime) -> list:
    return [n.to_bytes(16, "big"), n.to_bytes(8, "big"), T, sign, user, "openai", "gpt-4o-mini", status, version,
            None if cost is None else Decimal(cost), inserted]


def test_a_correction_in_the_same_second_as_its_row_and_one_later_are_both_listed(store):
    rows = [
        # 1: stored at a typo price and repriced within the same second.
        row(1, 1, "ann", "priced", "v1", "0.0105", SAME_SECOND),
        row(1, -1, "ann", "priced", "v1", "0.0105", SAME_SECOND),
        row(1, 1, "ann", "priced", "v2", "0.0024", SAME_SECOND),
        # 2: unknown when stored, priced a day later.
        row(2, 1, "bob", "unknown_model", "", None, SAME_SECOND),
        row(2, -1, "bob", "unknown_model", "", None, LATER),
        row(2, 1, "bob", "priced", "v2", "0.00065", LATER),
        # 3: the writer moved the call to its user in the same second: no price changed.
        row(3, 1, "", "priced", "v2", "0.0016", SAME_SECOND),
        row(3, -1, "", "priced", "v2", "0.0016", SAME_SECOND),
        row(3, 1, "cat", "priced", "v2", "0.0016", SAME_SECOND),
    ]
    # As the writer stores rows: into usage_events, and the same rows into the rollups' feed (0021).
    store.insert_rows("usage_events", COLUMNS, rows)
    store.insert_rows("usage_rollup_feed", COLUMNS, rows)
    rows = store.query(
        f"SELECT corrected_at, user_id, old_pricing_status, old_price_version, old_cost_usd, new_pricing_status, "
        f"new_price_version, new_cost_usd FROM {store.database}.price_corrections ORDER BY user_id").rows
    assert [(r[0].replace(tzinfo=UTC), *r[1:]) for r in rows] == [
        (SAME_SECOND, "ann", "priced", "v1", Decimal("0.0105"), "priced", "v2", Decimal("0.0024")),
        (LATER, "bob", "unknown_model", "", None, "priced", "v2", Decimal("0.00065")),
    ]
    # What the rollups say is unchanged by the view: each call once, at its last price.
    assert store.query(f"SELECT sum(requests), sum(cost_usd), sum(unpriced_requests) FROM {store.database}.usage_daily"
                       ).rows == [(3, Decimal("0.0024") + Decimal("0.00065") + Decimal("0.0016"), 0)]
