"""Attribution across exports on real ClickHouse: the span naming the user arrives after the leaf.

The writer corrects the stored row (-1 copy, +1 completed) in the ancestor's own group commit;
a row whose ancestor came first is stored complete. See ingest/lineage.py for why not a delay.
"""

import asyncio

import pytest

from spanmeter.ingest.config import Settings
from spanmeter.ingest.decode import decode
from spanmeter.ingest.errors import StoreUnavailable
from spanmeter.ingest.metrics import Metrics
from spanmeter.ingest.normalize import normalize
from spanmeter.ingest.writer import Writer
from tests.support.otlp import chat, span, to_protobuf


def export(specs):
    return normalize(decode(to_protobuf(specs), "application/x-protobuf"))


def submit(writer, result):
    return asyncio.run(writer.submit(result.records, result.links))


@pytest.fixture
def writer(store):
    w = Writer(store, Settings(clickhouse_dsn="chdb://unused", database=store.database, batch_max_wait_ms=5),
               Metrics())
    w.start()
    yield w
    w.stop()


def by_user(store):
    """{user: (requests, input tokens)} net of cancellations."""
    rows = store.query(f"SELECT user_id, sum(sign), sum(input_tokens * sign) FROM {store.database}.usage_events "
                       "GROUP BY user_id HAVING sum(sign) != 0 ORDER BY user_id").rows
    return {user: (n, tokens) for user, n, tokens in rows}


def test_a_user_arriving_after_the_leaf_corrects_the_stored_row(writer, store):
    leaf = export([chat(1, 3, parent=2, model="gpt-4o-mini", input=100, output=10)])
    middle = export([span("agent step", 1, 2, parent=1, attrs={"spanmeter.feature": "tutor"})])
    root = export([span("POST /chat", 1, 1, attrs={"user.id": "carol", "session.id": "s1"})])
    assert submit(writer, leaf).stored == 1
    submit(writer, middle)
    submit(writer, root)
    writer.stop()
    assert by_user(store) == {"carol": (1, 100)}
    rows = store.query(f"SELECT sign, user_id, session_id, feature FROM {store.database}.usage_events "
                       "ORDER BY inserted_at, sign").rows
    # First the row as it came, then the middle span's correction, then the root's.
    assert sorted(rows) == sorted([(1, "", "", ""), (-1, "", "", ""), (1, "", "", "tutor"),
                                   (-1, "", "", "tutor"), (1, "carol", "s1", "tutor")])
    daily = store.query(f"SELECT sum(requests), sum(input_tokens) FROM {store.database}.usage_daily").rows[0]
    assert daily == (1, 100)


def test_an_ancestor_seen_first_lends_its_user_at_once(writer, store):
    submit(writer, export([span("POST /chat", 2, 1, attrs={"enduser.id": "dave"})]))
    submit(writer, export([span("workflow", 2, 2, parent=1)]))
    submit(writer, export([chat(2, 3, parent=2, model="gpt-4o-mini", input=7, output=1)]))
    writer.stop()
    rows = store.query(f"SELECT sign, user_id FROM {store.database}.usage_events").rows
    assert rows == [(1, "dave")]


def test_the_nearest_ancestor_wins_and_a_set_user_is_never_rewritten(writer, store):
    submit(writer, export([chat(3, 3, parent=2, model="gpt-4o-mini", input=5, output=1)]))
    submit(writer, export([span("task", 3, 2, parent=1, attrs={"user.id": "near"})]))
    submit(writer, export([span("root", 3, 1, attrs={"user.id": "far", "session.id": "s"})]))
    writer.stop()
    assert by_user(store) == {"near": (1, 5)}
    (session,) = store.query(f"SELECT session_id FROM {store.database}.usage_events WHERE sign = 1 "
                             "ORDER BY inserted_at DESC, session_id DESC LIMIT 1").rows[0]
    assert session == "s"


def test_a_failed_commit_of_the_ancestor_is_corrected_on_its_retry(writer, store, monkeypatch):
    submit(writer, export([chat(4, 2, parent=1, model="gpt-4o-mini", input=9, output=1)]))
    root = export([span("root", 4, 1, attrs={"user.id": "erin"})])
    original = store.insert_usage_arrow

    def broken(table, token=None, **kw):
        raise StoreUnavailable("ClickHouse is down")

    monkeypatch.setattr(store, "insert_usage_arrow", broken)
    with pytest.raises(StoreUnavailable):
        submit(writer, root)
    monkeypatch.setattr(store, "insert_usage_arrow", original)
    submit(writer, root)
    writer.stop()
    assert by_user(store) == {"erin": (1, 9)}
