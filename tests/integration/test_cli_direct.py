"""`spanmeter backfill` and `spanmeter reprice` on a server DSN connect to ClickHouse themselves
(no service in between). The store here is the embedded engine standing in for the server: the
commands are pointed at it instead of connecting to the DSN they were given."""

import json
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spanmeter.ingest import cli_prices
from spanmeter.ingest.cli import app

LOG = Path(__file__).resolve().parent.parent / "fixtures" / "chatlogs" / "paperdebugger.jsonl"
SERVER = ["--dsn", "http://127.0.0.1:9/"]  # a server DSN: nothing listens there


@pytest.fixture
def direct(store, monkeypatch):
    monkeypatch.setattr(cli_prices, "_direct_store", lambda settings: store)
    for name in list(__import__("os").environ):
        if name.startswith("SPANMETER_"):
            monkeypatch.delenv(name)
    return CliRunner()


def test_backfill_direct_is_exactly_once(direct, store):
    first = direct.invoke(app, ["backfill", str(LOG), *SERVER])
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert (summary["stored"], summary["duplicates"], summary["estimated"]) == (8, 0, 5)
    second = direct.invoke(app, ["backfill", str(LOG), *SERVER])
    again = json.loads(second.stdout)
    assert (again["stored"], again["duplicates"]) == (0, 8)
    assert store.query(f"SELECT count(), sum(cost_usd) FROM {store.database}.usage_events").rows == [
        (8, Decimal("0.06686645"))]


def test_reprice_direct_with_a_new_price(direct, store, tmp_path):
    assert direct.invoke(app, ["backfill", str(LOG), "--service", "pd", *SERVER]).exit_code == 0
    prices = tmp_path / "prices.yaml"
    added = direct.invoke(app, ["prices", "add", "openai", "gpt-4o-mini", "--input", "0.3", "--output", "1.2",
                                "--from", "2025-06-01", "--prices-file", str(prices)])
    assert added.exit_code == 0, added.output
    # The rows are brand new: by default a direct run leaves rows an ingest writer may still cancel.
    waited = direct.invoke(app, ["reprice", "--since", "2025-06-01", "--until", "2025-07-01", "--prices-file",
                                 str(prices), *SERVER])
    assert "left for a later run: 2 rows" in waited.stdout, waited.output
    done = direct.invoke(app, ["reprice", "--since", "2025-06-01", "--until", "2025-07-01", "--prices-file",
                               str(prices), "--settle-minutes", "0", *SERVER])
    assert done.exit_code == 0, done.output
    # gpt-4o-mini at twice the price: 28*0.3 + 8*1.2 = 0.000018; 51*0.3 + 8*1.2 = 0.0000249
    assert "corrected: 2 rows (0 newly priced, 2 repriced)" in done.stdout
    assert "$0.00002145 -> $0.0000429" in done.stdout
    db = store.database
    assert store.query(f"SELECT sum(cost_usd) FROM {db}.usage_daily").rows == [
        (Decimal("0.06686645") + Decimal("0.00002145"),)]
    assert store.query(f"SELECT count() FROM {db}.price_corrections").rows == [(2,)]
    assert store.query(f"SELECT count() FROM {db}.prices WHERE model = 'gpt-4o-mini' AND source LIKE 'override:%'"
                       ).rows == [(1,)]
