"""The bill set (tests/fixtures/bill_set.csv): calls whose charges were computed by hand from the
providers' published prices go in through /v1/traces; every row, and the total, must come out of
ClickHouse equal to the hand computation to the last of the column's 12 decimals (pico-dollars,
so nano-dollars a fortiori), in the events and in both rollups."""

import csv
from decimal import Decimal
from pathlib import Path

from tests.support.otlp import chat, to_protobuf

BILL_SET = Path(__file__).resolve().parent.parent / "fixtures" / "bill_set.csv"
HAND_TOTAL = Decimal("4.62653395")  # the file's header, summed by hand
PB = {"Content-Type": "application/x-protobuf"}


def bill_set() -> list[dict[str, str]]:
    lines = [line for line in BILL_SET.read_text().splitlines() if line and not line.startswith("#")]
    return list(csv.DictReader(lines))


def test_the_hand_total_is_the_sum_of_the_rows():
    assert sum(Decimal(row["expected_usd"]) for row in bill_set()) == HAND_TOTAL


def test_every_call_and_the_total_equal_the_hand_computation(client, store):
    rows = bill_set()
    spans = [
        chat(1000 + int(row["id"]), 1, model=row["model"], provider=row["provider"],
             input=int(row["input_tokens"]), cache_read=int(row["cache_read_tokens"]),
             cache_write=int(row["cache_write_tokens"]), output=int(row["output_tokens"]),
             reasoning=int(row["reasoning_tokens"]), user=f"bill-{int(row['id']):02d}")
        for row in rows
    ]
    response = client.post("/v1/traces", content=to_protobuf(spans, service="bill-set"), headers=PB)
    assert response.status_code == 200, response.text

    db = store.database
    stored = {
        user: (cost, status, version)
        for user, cost, status, version in store.query(
            f"SELECT user_id, cost_usd, pricing_status, price_version FROM {db}.usage_events WHERE sign = 1"
        ).rows
    }
    assert len(stored) == len(rows)
    for row in rows:
        cost, status, version = stored[f"bill-{int(row['id']):02d}"]
        assert status == "priced", row
        assert cost == Decimal(row["expected_usd"]), (row["id"], row["computation"], cost)
        assert row["model"] in version  # the rate that priced it travels with the row

    total = store.query(f"SELECT sum(cost_usd * sign) FROM {db}.usage_events").rows[0][0]
    assert total == HAND_TOTAL
    for rollup in ("usage_hourly", "usage_daily"):
        assert store.query(f"SELECT sum(cost_usd), sum(unpriced_requests) FROM {db}.{rollup}").rows == [(HAND_TOTAL, 0)]
    # Per provider, too: what each provider's invoice should say for these calls.
    per_provider = dict(store.query(f"SELECT provider, sum(cost_usd) FROM {db}.usage_daily GROUP BY provider").rows)
    for provider in ("openai", "anthropic", "gcp.gemini"):
        assert per_provider[provider] == sum(Decimal(r["expected_usd"]) for r in rows if r["provider"] == provider)
