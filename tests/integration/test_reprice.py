"""Repricing on real ClickHouse: rows stored while a model was unknown or mispriced, then priced.

Hand computations (USD per million tokens):
  alice  gpt-4o-mini, 10,000 in (4,000 cached), 2,000 out, on 2026-01-01
         mispriced (override typo, input 1.50): 6000*1.50 + 4000*0.075 + 2000*0.60 = 0.009 + 0.0003 + 0.0012 = 0.0105
         corrected (input 0.15):                6000*0.15 + 4000*0.075 + 2000*0.60 = 0.0009 + 0.0003 + 0.0012 = 0.0024
  carol  acme-llm-7b, unknown when stored; then 0.50/1.50 from 2025-01-01 and 0.25/0.75 from 2026-01-02
         2026-01-01: 1,000 in, 100 out at 0.50/1.50 = 0.0005 + 0.00015 = 0.00065
         2026-01-02: 3,000 in, 100 out at 0.25/0.75 = 0.00075 + 0.000075 = 0.000825   (point in time)
  bob    claude-haiku-4-5 from the dataset, never wrong: 1000*1 + 1000*0.10 + 100*5 = 0.0016
"""

import asyncio
from datetime import UTC, date, datetime
from decimal import Decimal

from fastapi.testclient import TestClient

from spanmeter.ingest.app import create_app
from spanmeter.ingest.config import Settings
from spanmeter.ingest.decode import decode
from spanmeter.ingest.metrics import Metrics
from spanmeter.ingest.normalize import normalize
from spanmeter.ingest.price import PriceBook
from spanmeter.ingest.price_history import append_rate
from spanmeter.ingest.reprice import reprice, reprice_day
from spanmeter.ingest.writer import Writer
from tests.support.otlp import BASE_TIME_NS, chat, to_protobuf

PB = {"Content-Type": "application/x-protobuf"}
HOUR = 3600 * 10**9
DAY = 24 * HOUR

MISPRICED_ALICE = Decimal("0.0105")
ALICE = Decimal("0.0024")
CAROL_DAY1 = Decimal("0.00065")
CAROL_DAY2 = Decimal("0.000825")
BOB = Decimal("0.0016")

TYPO = """version: 1
rates:
  - provider: openai
    model: gpt-4o-mini
    effective_from: 2025-12-01
    input: 1.50
    cache_read: 0.075
    output: 0.60
    note: typo, the published price is 0.15
"""


def export():
    return to_protobuf([
        chat(1, 1, model="gpt-4o-mini", input=10_000, cache_read=4_000, output=2_000, user="alice"),
        chat(2, 1, model="acme-llm-7b", provider="acme", input=1_000, output=100, user="carol",
             start_ns=BASE_TIME_NS + 3 * HOUR),
        chat(3, 1, model="acme-llm-7b", provider="acme", input=3_000, output=100, user="carol",
             start_ns=BASE_TIME_NS + DAY + 2 * HOUR),
        chat(4, 1, model="claude-haiku-4-5", provider="anthropic", input=2_000, cache_read=1_000, output=100,
             user="bob", start_ns=BASE_TIME_NS + 5 * HOUR),
    ], service="tutor")


def add_the_right_prices(path):
    append_rate(path, provider="acme", model="acme-llm-7b", effective_from=date(2025, 1, 1),
                prices={"input": Decimal("0.50"), "output": Decimal("1.50")}, note="contract price")
    append_rate(path, provider="acme", model="acme-llm-7b", effective_from=date(2026, 1, 2),
                prices={"input": Decimal("0.25"), "output": Decimal("0.75")}, note="price cut")
    append_rate(path, provider="openai", model="gpt-4o-mini", effective_from=date(2025, 12, 1),
                prices={"input": Decimal("0.15"), "cache_read": Decimal("0.075"), "output": Decimal("0.60")},
                note="fixes the typo", supersede=True)


def per_user(store, table):
    db = store.database
    if table == "usage_events":
        query = (f"SELECT user_id, sum(sign), sum(input_tokens * sign), sum(output_tokens * sign), "
                 f"sum(cost_usd * sign), sum(if(cost_usd IS NULL, sign, 0)) FROM {db}.usage_events "
                 "GROUP BY user_id ORDER BY user_id")
    else:
        query = (f"SELECT user_id, sum(requests), sum(input_tokens), sum(output_tokens), sum(cost_usd), "
                 f"sum(unpriced_requests) FROM {db}.{table} GROUP BY user_id ORDER BY user_id")
    return {row[0]: tuple(row[1:]) for row in store.query(query).rows}


def row_count(store):
    return store.query(f"SELECT count() FROM {store.database}.usage_events").rows[0][0]


def test_reprice_makes_every_total_and_rollup_exact_and_keeps_the_old_figures(store, chdb_path, tmp_path):
    prices = tmp_path / "prices.yaml"
    prices.write_text(TYPO)
    settings = Settings(clickhouse_dsn=f"chdb://{chdb_path}", database=store.database, batch_max_wait_ms=5,
                        prices_file=prices)
    db = store.database
    with TestClient(create_app(settings, store=store)) as client:
        assert client.post("/v1/traces", content=export(), headers=PB).status_code == 200
        before = per_user(store, "usage_events")
        assert before["alice"][3] == MISPRICED_ALICE
        assert before["carol"] == (2, 4_000, 200, None, 2)  # unknown: NULL, never $0

        add_the_right_prices(prices)
        stored_rows = row_count(store)

        dry = client.post("/v1/admin/reprice", json={"since": "2025-12-01", "dry_run": True}).json()
        assert (dry["rows_corrected"], dry["newly_priced"], dry["repriced"], dry["applied"]) == (3, 2, 1, False)
        assert row_count(store) == stored_rows  # a dry run writes nothing

        run = client.post("/v1/admin/reprice", json={"since": "2025-12-01"}).json()
        assert (run["rows_corrected"], run["newly_priced"], run["repriced"], run["applied"]) == (3, 2, 1, True)
        assert Decimal(run["cost_before_usd"]) == MISPRICED_ALICE
        assert Decimal(run["cost_after_usd"]) == ALICE + CAROL_DAY1 + CAROL_DAY2
        assert row_count(store) == stored_rows + 6  # a cancelling and a corrected row per correction

        expected = {
            "alice": (1, 10_000, 2_000, ALICE, 0),
            "bob": (1, 2_000, 100, BOB, 0),
            "carol": (2, 4_000, 200, CAROL_DAY1 + CAROL_DAY2, 0),
        }
        assert per_user(store, "usage_events") == expected
        assert per_user(store, "usage_hourly") == expected
        assert per_user(store, "usage_daily") == expected
        daily = {(r[0], r[1]): r[2] for r in store.query(
            f"SELECT day, user_id, cost_usd FROM {db}.cost_per_user_daily WHERE user_id = 'carol'").rows}
        assert daily == {(date(2026, 1, 1), "carol"): CAROL_DAY1, (date(2026, 1, 2), "carol"): CAROL_DAY2}
        assert store.query(f"SELECT count() FROM {db}.unpriced_usage").rows == [(0,)]
        assert store.query(f"SELECT sum(cost_usd), sum(unpriced_requests) FROM {db}.cost_per_model_daily "
                           "WHERE model = 'acme-llm-7b'").rows == [(CAROL_DAY1 + CAROL_DAY2, 0)]

        # The old figures are still there, beside their cancellations, and the audit says who/what/when.
        corrections = store.query(
            f"SELECT user_id, old_pricing_status, old_price_version, old_cost_usd, new_pricing_status, "
            f"new_price_version, new_cost_usd FROM {db}.price_corrections ORDER BY user_id, event_time").rows
        assert [(r[0], r[1], r[3], r[4], r[6]) for r in corrections] == [
            ("alice", "priced", MISPRICED_ALICE, "priced", ALICE),
            ("carol", "unknown_model", None, "priced", CAROL_DAY1),
            ("carol", "unknown_model", None, "priced", CAROL_DAY2),
        ]
        assert "gpt-4o-mini@2025-12-01" in corrections[0][2] and corrections[0][2] != corrections[0][5]
        assert "acme-llm-7b@2025-01-01" in corrections[1][5] and "acme-llm-7b@2026-01-02" in corrections[2][5]
        assert store.query(f"SELECT count() FROM {db}.usage_events WHERE user_id = 'alice' AND sign = 1 "
                           "AND cost_usd = 0.0105").rows == [(1,)]
        runs = store.query(f"SELECT run_id, rows_corrected, newly_priced, repriced, cost_before_usd, cost_after_usd "
                           f"FROM {db}.reprice_runs").rows
        assert runs == [(run["run_id"], 3, 2, 1, MISPRICED_ALICE, ALICE + CAROL_DAY1 + CAROL_DAY2)]
        # Every version that priced a row can be joined to its rate.
        joined = store.query(
            f"SELECT e.user_id, p.input_per_mtok FROM {db}.usage_events AS e "
            f"INNER JOIN {db}.price_rates AS p ON p.price_version = e.price_version AND p.tier = 0 "
            "WHERE e.sign = 1 AND e.user_id = 'carol' ORDER BY e.event_time, p.input_per_mtok DESC").rows
        assert (("carol", Decimal("0.5")) in joined) and (("carol", Decimal("0.25")) in joined)

        # Idempotent: nothing left to correct, nothing written, no run recorded.
        again = client.post("/v1/admin/reprice", json={"since": "2025-12-01"}).json()
        assert (again["rows_corrected"], again["rows_examined"]) == (0, 4)
        assert row_count(store) == stored_rows + 6
        assert store.query(f"SELECT count() FROM {db}.reprice_runs").rows == [(1,)]
        assert per_user(store, "usage_daily") == expected

        # New spans are priced with the reloaded prices too.
        late = to_protobuf([chat(9, 1, model="acme-llm-7b", provider="acme", input=1_000, output=100, user="erin",
                                 start_ns=BASE_TIME_NS + DAY)])
        assert client.post("/v1/traces", content=late, headers=PB).status_code == 200
        assert per_user(store, "usage_events")["erin"][3] == Decimal("0.000325")  # 1000*0.25 + 100*0.75


def test_a_late_leaf_cancels_the_corrected_figure_not_the_old_one(store, tmp_path):
    """The leaf rule's cancel of a parent counted first copies what the writer remembers: after a
    repricing on the writer's thread, that is the corrected row, so the parent nets to zero."""
    prices = tmp_path / "prices.yaml"
    settings = Settings(clickhouse_dsn="chdb://unused", database=store.database, batch_max_wait_ms=5)
    writer = Writer(store, settings, Metrics())
    writer.start()
    sdk = normalize(decode(to_protobuf([chat(1, 1, model="acme-llm-7b", provider="acme", input=100, output=10,
                                              user="u")]), "application/x-protobuf"))
    asyncio.run(writer.submit(sdk.records, sdk.links))
    append_rate(prices, provider="acme", model="acme-llm-7b", effective_from=date(2025, 1, 1),
                prices={"input": Decimal(1), "output": Decimal(2)})
    book = PriceBook.from_files(prices, dataset=False)
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    summary = writer.call(lambda w: reprice_day(w.store, book, start, end, apply=True, recount=w.recount)).result()
    assert summary.newly_priced == 1
    http = normalize(decode(to_protobuf([chat(1, 2, parent=1, model="acme-llm-7b", provider="acme", input=100,
                                               output=10, user="u")]), "application/x-protobuf"))
    for record in http.records:
        book.price(record)
    asyncio.run(writer.submit(http.records, http.links))
    writer.stop()
    # parent: +1 unpriced, -1 unpriced, +1 priced, -1 priced (the corrected figure); leaf: +1 priced
    assert per_user(store, "usage_events") == {"u": (1, 100, 10, Decimal("0.00012"), 0)}
    assert per_user(store, "usage_daily") == {"u": (1, 100, 10, Decimal("0.00012"), 0)}


def test_direct_repricing_leaves_recent_rows_and_never_unprices_by_default(store, client, tmp_path):
    assert client.post("/v1/traces", content=export(), headers=PB).status_code == 200
    since, until = datetime(2025, 12, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    prices = tmp_path / "prices.yaml"
    add_the_right_prices(prices)
    book = PriceBook.from_files(prices)
    # Just inserted: an ingest writer might still cancel these under the leaf rule.
    settled = reprice(store, book, since, until, apply=True, settle_seconds=3600)
    assert (settled.rows_corrected, settled.too_recent) == (0, 2)
    # A book that lacks a price the rows were stored with leaves them priced unless told otherwise.
    bare = PriceBook(dataset=False)
    kept = reprice(store, bare, since, until, apply=True)
    assert (kept.rows_corrected, kept.would_unprice) == (0, 2)
    # --model limits the run to a model and its dated snapshots.
    only = reprice(store, book, since, until, apply=True, model="acme-llm-7b")
    assert (only.rows_corrected, only.newly_priced) == (2, 2)
    assert per_user(store, "usage_daily")["carol"] == (2, 4_000, 200, CAROL_DAY1 + CAROL_DAY2, 0)
