"""Reconciliation on real ClickHouse: the meter's usage_daily against provider exports.

The meter (hand computed from published prices, USD per million tokens):
  2026-01-01  gpt-4o-mini  2 calls x (6000*0.15 + 4000*0.075 + 2000*0.60 = 0.0024)   = 0.0048
              gpt-4.1      10000*2 + 40000*0.50 + 700*8                              = 0.0456
              claude-sonnet-4-5  100*3 + 20000*0.30 + 5000*3.75 + 800*15             = 0.03705
              gemini-2.5-flash   7000*0.30 + 9000*2.50 (8000 thinking as output)     = 0.0246
  2026-01-02  gpt-4o-mini 0.0024, gpt-4.1 0.0456, claude-sonnet-4-5 0.03705
  2026-01-03  gpt-4o-mini 0.0024
The OpenAI bill agrees except on 2026-01-02 for gpt-4.1 ($0.0912: a call the meter never saw),
and on 2026-01-03 by $0.00001 (below the threshold).
"""

from datetime import date
from decimal import Decimal
from pathlib import Path

from spanmeter.ingest.reconcile import compare, format_report, load_export, meter_lines, meter_sql
from tests.support.otlp import BASE_TIME_NS, chat, to_protobuf

BILLS = Path(__file__).resolve().parent.parent / "fixtures" / "bills"
PB = {"Content-Type": "application/x-protobuf"}
DAY = 24 * 3600 * 10**9
JAN1, JAN2, JAN3 = date(2026, 1, 1), date(2026, 1, 2), date(2026, 1, 3)


def metered_calls():
    mini = dict(model="gpt-4o-mini", response_model="gpt-4o-mini-2024-07-18", input=10_000, cache_read=4_000,
                output=2_000)
    gpt41 = dict(model="gpt-4.1", response_model="gpt-4.1-2025-04-14", input=50_000, cache_read=40_000, output=700)
    sonnet = dict(model="claude-sonnet-4-5", provider="anthropic", input=25_100, cache_read=20_000,
                  cache_write=5_000, output=800)
    return to_protobuf([
        chat(1, 1, user="a", **mini),
        chat(2, 1, user="b", start_ns=BASE_TIME_NS + 3600 * 10**9, **mini),
        chat(3, 1, user="a", **gpt41),
        chat(4, 1, user="a", **sonnet),
        chat(5, 1, user="c", model="gemini-2.5-flash", provider="gcp.gemini", input=7_000, output=9_000,
             reasoning=8_000),
        chat(6, 1, user="a", start_ns=BASE_TIME_NS + DAY, **mini),
        chat(7, 1, user="b", start_ns=BASE_TIME_NS + DAY, **gpt41),
        chat(8, 1, user="b", start_ns=BASE_TIME_NS + DAY, **sonnet),
        chat(9, 1, user="a", start_ns=BASE_TIME_NS + 2 * DAY, **mini),
    ])


def reconcile(store, name, fmt):
    bill = load_export(BILLS / name, fmt)
    providers = sorted({b.provider for b in bill})
    rows = store.query(meter_sql(store.database, providers, min(b.day for b in bill), max(b.day for b in bill))).rows
    return compare(bill, meter_lines(rows), relative=Decimal("0.01"), absolute=Decimal("0.01"))


def test_an_openai_bill_that_differs_on_one_day_names_that_day_and_model_only(client, store):
    assert client.post("/v1/traces", content=metered_calls(), headers=PB).status_code == 200
    report = reconcile(store, "openai_costs.json", "openai")
    flagged = [(line.day, line.provider, line.model, line.reasons) for line in report.flagged]
    assert flagged == [(JAN2, "openai", "gpt-4.1", ["cost differs"])]
    (line,) = report.flagged
    assert (line.bill_usd, line.meter_usd, line.diff_usd, line.diff_pct) == (
        Decimal("0.0912"), Decimal("0.0456"), Decimal("-0.0456"), Decimal("-50.00"))
    # Every other day and model was compared and agrees (input/cached/output line items summed).
    agreeing = {(line.day, line.model): (line.bill_usd, line.meter_usd) for line in report.lines if not line.flagged}
    assert agreeing == {
        (JAN1, "gpt-4.1"): (Decimal("0.0456"), Decimal("0.0456")),
        (JAN1, "gpt-4o-mini"): (Decimal("0.0048"), Decimal("0.0048")),
        (JAN2, "gpt-4o-mini"): (Decimal("0.0024"), Decimal("0.0024")),
        (JAN3, "gpt-4o-mini"): (Decimal("0.00241"), Decimal("0.0024")),  # $0.00001 apart: under the threshold
    }
    assert (report.bill_total_usd, report.meter_total_usd) == (Decimal("0.14641"), Decimal("0.1008"))
    text = format_report(report)
    table = text.split("\n\n")[0].splitlines()
    assert len(table) == 3 and table[2].startswith("2026-01-02  openai    gpt-4.1")  # header, its underline-less row
    assert "bill $0.14641, meter $0.1008" in text and "1 of 5 day/model lines flagged" in text

    # A tighter threshold also catches the cent fraction on 2026-01-03.
    tight = compare(load_export(BILLS / "openai_costs.json", "openai"),
                    meter_lines(store.query(meter_sql(store.database, ["openai"], JAN1, JAN3)).rows),
                    relative=Decimal("0.001"), absolute=Decimal("0.000001"))
    assert [(line.day, line.model) for line in tight.flagged] == [(JAN2, "gpt-4.1"), (JAN3, "gpt-4o-mini")]


def test_anthropic_cost_and_usage_reports(client, store):
    assert client.post("/v1/traces", content=metered_calls(), headers=PB).status_code == 200
    report = reconcile(store, "anthropic_usage_and_cost.jsonl", "anthropic")
    sonnet = [line for line in report.lines if line.model == "claude-sonnet-4-5"]
    # Cents in the cost report: "3.705" is $0.03705; the usage report's input is inclusive of cache.
    assert [(line.day, line.bill_usd, line.meter_usd, line.bill_input, line.meter_input, line.bill_output,
             line.meter_output) for line in sonnet] == [
        (JAN1, Decimal("0.03705"), Decimal("0.03705"), 25_100, 25_100, 800, 800),
        (JAN2, Decimal("0.03705"), Decimal("0.03705"), 25_100, 25_100, 800, 800),
    ]
    # Web search is billed but is not token usage: on the bill, not metered.
    assert [(line.day, line.model, line.bill_usd, line.reasons) for line in report.flagged] == [
        (JAN2, "(web_search)", Decimal("1.5"), ["on the bill, not metered"])]


def test_a_documented_csv_for_other_providers(client, store):
    assert client.post("/v1/traces", content=metered_calls(), headers=PB).status_code == 200
    report = reconcile(store, "other_providers.csv", "csv")
    assert [(line.day, line.provider, line.model, line.bill_usd, line.meter_usd, line.flagged)
            for line in report.lines] == [
        (JAN1, "gcp.gemini", "gemini-2.5-flash", Decimal("0.0246"), Decimal("0.0246"), False),
        (JAN2, "gcp.gemini", "gemini-2.5-flash", Decimal("0.0246"), None, True),
    ]
    assert report.flagged[0].reasons == ["on the bill, not metered"]
