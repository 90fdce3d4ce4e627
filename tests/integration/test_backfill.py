"""Backfill through the service's admin API on real ClickHouse: priced, exactly once, estimated
rows shown as such.

Hand computation (USD per million tokens; token counts in tests/unit/test_backfill_log.py):
  c-reported  gpt-4o (2.50 / cached 1.25 / out 10): 176*2.50 + 1024*1.25 + 300*10 = 0.00044 + 0.00128 + 0.003 = 0.00472
  Mongo       gpt-4o-mini (0.15 / 0.60), estimated:  28*0.15 + 8*0.60 = 0.000009;  51*0.15 + 8*0.60 = 0.00001245
  c-claude    claude-sonnet-4-5: 100*3 + 20000*0.30 + 5000*3.75 + 800*15 = 0.03705
  c-gemini    gemini-2.5-flash: 7000*0.30 + 9000*2.50 (8000 thinking) = 0.0246
  c-branches  gpt-4o, estimated: 23*2.5 + 6*10 = 0.0001175; 41*2.5 + 6*10 = 0.0001625; 42*2.5 + 9*10 = 0.000195
"""

from datetime import date
from decimal import Decimal
from pathlib import Path

from spanmeter.ingest.backfill import BackfillStats, conversation_records, read_log, record_to_json
from spanmeter.ingest.tokens import TokenCounter

LOG = Path(__file__).resolve().parent.parent / "fixtures" / "chatlogs" / "paperdebugger.jsonl"
TOTAL = Decimal("0.06686645")


def records():
    counter, stats, out = TokenCounter(), BackfillStats(), []
    for _, _, conversation in read_log(LOG):
        if not isinstance(conversation, Exception):
            out.extend(conversation_records(conversation, counter, stats, service="paperdebugger"))
    return out


def test_backfill_is_priced_exactly_once_and_estimates_are_marked(client, store):
    body = {"records": [record_to_json(r) for r in records()]}
    first = client.post("/v1/admin/backfill", json=body)
    assert first.status_code == 200, first.text
    assert first.json() == {"stored": 8, "duplicates": 0, "priced": 8, "unpriced": 0}
    again = client.post("/v1/admin/backfill", json=body).json()
    assert (again["stored"], again["duplicates"]) == (0, 8)  # a re-run inserts nothing

    db = store.database
    assert store.query(f"SELECT count(), sum(cost_usd * sign) FROM {db}.usage_events").rows == [(8, TOTAL)]
    assert store.query(f"SELECT sum(requests), sum(cost_usd) FROM {db}.usage_daily").rows == [(8, TOTAL)]
    by_status = dict(store.query(
        f"SELECT usage_status, count() FROM {db}.usage_events GROUP BY usage_status").rows)
    assert by_status == {"reported": 3, "estimated": 5}
    estimated = store.query(
        f"SELECT day, model, requests, input_tokens, output_tokens, cost_usd FROM {db}.estimated_usage ORDER BY day").rows
    assert estimated == [
        (date(2025, 6, 2), "gpt-4o-mini", 2, 79, 16, Decimal("0.00002145")),
        (date(2025, 6, 4), "gpt-4o", 3, 106, 21, Decimal("0.000475")),
    ]
    sources = store.query(f"SELECT DISTINCT source, service_name FROM {db}.usage_events").rows
    assert sources == [("backfill", "paperdebugger")]


def test_backfill_refuses_what_it_cannot_store(client):
    bad = client.post("/v1/admin/backfill", json={"records": [{"trace_id": "zz"}]})
    assert bad.status_code == 400
    assert client.post("/v1/admin/backfill", json={"rows": []}).status_code == 400
