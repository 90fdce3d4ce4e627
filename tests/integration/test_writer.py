"""The group-commit writer on real ClickHouse: exactly once, leaf rule across exports, failures."""

import asyncio
import time

import pytest

from spanmeter.ingest.config import Settings
from spanmeter.ingest.decode import decode
from spanmeter.ingest.errors import StoreUnavailable
from spanmeter.ingest.metrics import Metrics
from spanmeter.ingest.normalize import normalize
from spanmeter.ingest.writer import Writer
from tests.support.otlp import chat, span, span_id, to_protobuf


def export(specs):
    return normalize(decode(to_protobuf(specs), "application/x-protobuf"))


def make_writer(store, **kw):
    settings = Settings(clickhouse_dsn="chdb://unused", database=store.database, batch_max_wait_ms=5, **kw)
    writer = Writer(store, settings, Metrics())
    writer.start()
    return writer


def submit(writer, result):
    return asyncio.run(writer.submit(result.records, result.links))


def net(store):
    """(requests, input tokens) net of cancellations, in the events and in the daily rollup."""
    return store.query(
        f"SELECT sum(sign), sum(input_tokens * sign) FROM {store.database}.usage_events"
    ).rows[0], store.query(
        f"SELECT sum(requests), sum(input_tokens) FROM {store.database}.usage_daily"
    ).rows[0]


def test_duplicates_within_and_across_batches_and_after_restart(store):
    a = export([chat(1, 1, model="gpt-4o", input=100, output=1), chat(1, 2, model="gpt-4o", input=50, output=1)])
    writer = make_writer(store)
    assert submit(writer, a).stored == 2
    again = submit(writer, a)
    assert (again.stored, again.duplicates) == (0, 2)
    writer.stop()
    # A new process (restart after SIGKILL) loads the recent keys from the table.
    writer = make_writer(store)
    assert submit(writer, a).duplicates == 2
    writer.stop()
    assert net(store) == ((2, 150), (2, 150))


def test_keys_the_memory_forgot_are_checked_in_the_table(store):
    writer = make_writer(store, dedupe_keys=1)
    first = export([chat(1, 1, model="gpt-4o", input=100, output=1)])
    submit(writer, first)
    submit(writer, export([chat(2, 1, model="gpt-4o", input=7, output=1)]))  # evicts trace 1
    assert submit(writer, first).duplicates == 1
    writer.stop()
    assert net(store) == ((2, 107), (2, 107))


def test_an_ancestor_arriving_in_a_later_export_is_not_counted(store):
    writer = make_writer(store)
    leaf = export([chat(1, 3, parent=2, model="gpt-4o", input=100, output=10)])
    middle = export([span("retry wrapper", 1, 2, parent=1)])  # no usage: carries ancestry only
    framework = export([chat(1, 1, model="gpt-4o", input=100, output=10)])
    assert submit(writer, leaf).stored == 1
    submit(writer, middle)
    outcome = submit(writer, framework)
    assert (outcome.stored, outcome.covered) == (0, 1)
    writer.stop()
    assert net(store) == ((1, 100), (1, 100))


def test_a_parent_counted_before_its_leaf_is_cancelled(store):
    writer = make_writer(store)
    sdk = export([chat(1, 1, model="gpt-4o", input=100, output=10)])
    http = export([chat(1, 2, parent=1, model="gpt-4o", input=100, output=10)])
    submit(writer, sdk)
    submit(writer, http)
    writer.stop()
    rows = store.query(f"SELECT hex(span_id), sign FROM {store.database}.usage_events ORDER BY span_id, sign").rows
    assert rows == [(span_id(1).hex().upper(), -1), (span_id(1).hex().upper(), 1), (span_id(2).hex().upper(), 1)]
    assert store.query(f"SELECT sum(requests), sum(input_tokens) FROM {store.database}.usage_daily").rows[0] == (1, 100)


def test_a_failed_insert_fails_every_waiter_then_lands_once(store, monkeypatch):
    writer = make_writer(store)
    result = export([chat(1, 1, model="gpt-4o", input=100, output=1)])
    original = store.insert_usage_arrow

    def broken(table, token=None, **kw):
        raise StoreUnavailable("ClickHouse is down")

    monkeypatch.setattr(store, "insert_usage_arrow", broken)
    with pytest.raises(StoreUnavailable):
        submit(writer, result)
    # While the failed batch is held, new work is refused too: it would only pile up.
    with pytest.raises(StoreUnavailable):
        submit(writer, export([chat(2, 1, model="gpt-4o", input=5, output=1)]))
    monkeypatch.setattr(store, "insert_usage_arrow", original)
    # The held batch is re-sent first; the exporter's retry then finds its rows stored.
    assert submit(writer, result).duplicates == 1
    assert submit(writer, result).duplicates == 1
    writer.stop()
    assert net(store) == ((1, 100), (1, 100))


def test_an_insert_that_fails_between_the_events_and_a_rollup_is_completed_not_doubled(store):
    """The soak's finding: the events part commits, a view's part does not (disk full, a kill).
    A view that fails until a flag is set reproduces it on real ClickHouse."""
    db = store.database
    store.command(f"CREATE TABLE {db}.flag (x UInt8) ENGINE = MergeTree ORDER BY x")
    store.command(f"CREATE TABLE {db}.zz_boom (n UInt64) ENGINE = MergeTree ORDER BY n")
    # Named to sort after usage_daily_mv and usage_hourly_mv: those run first and succeed.
    store.command(
        f"CREATE MATERIALIZED VIEW {db}.zz_boom_mv TO {db}.zz_boom AS "
        f"SELECT throwIf((SELECT count() FROM {db}.flag) = 0, 'disk full') + count() AS n FROM {db}.usage_events"
    )
    writer = make_writer(store)
    result = export([chat(1, 1, model="gpt-4o", input=100, output=1), chat(1, 2, model="gpt-4o", input=7, output=1)])
    with pytest.raises(StoreUnavailable):
        submit(writer, result)
    events = store.query(f"SELECT count() FROM {db}.usage_events").rows[0][0]
    assert events == 2  # the partial write really happened: events in, a view's part not
    store.command(f"INSERT INTO {db}.flag VALUES (1)")
    assert submit(writer, result).duplicates == 2  # held batch re-sent first, then the retry
    writer.stop()
    assert net(store) == ((2, 107), (2, 107))
    hourly = store.query(f"SELECT sum(requests), sum(input_tokens) FROM {db}.usage_hourly").rows[0]
    assert hourly == (2, 107)
    assert store.query(f"SELECT count() FROM {db}.zz_boom").rows[0][0] == 1


def test_a_batch_pending_when_the_process_died_is_re_sent_at_start(store, tmp_path):
    from spanmeter.ingest.store import usage_arrow

    settings = Settings(clickhouse_dsn="chdb://unused", database=store.database, batch_max_wait_ms=5,
                        state_dir=tmp_path)
    result = export([chat(1, 1, model="gpt-4o", input=100, output=1)])
    for record in result.records:
        record.pricing_status = "unknown_model"
    # A killed process left its batch on disk; the insert may or may not have happened: both.
    writer = Writer(store, settings, Metrics())
    writer._write_pending_file(usage_arrow(result.records), "token-1")
    store.insert_usage(result.records, token="token-1")
    writer.start()
    assert not (tmp_path / "pending-batch.arrow").exists()
    assert submit(writer, result).duplicates == 1
    writer.stop()
    assert net(store) == ((1, 100), (1, 100))


def test_a_pending_batch_found_while_clickhouse_is_down_is_held_not_fatal(store, tmp_path, monkeypatch):
    """The service starts (and answers 503) when ClickHouse cannot take the batch a killed process
    left; the batch lands first once it can, and its rows are known as stored."""
    from spanmeter.ingest.store import usage_arrow

    settings = Settings(clickhouse_dsn="chdb://unused", database=store.database, batch_max_wait_ms=5,
                        state_dir=tmp_path)
    now = time.time_ns()  # recent: trusted to the writer's memory, not looked up in the table
    left = export([chat(1, 1, model="gpt-4o", input=100, output=1, start_ns=now),
                   chat(1, 2, model="gpt-4o", input=20, output=1, start_ns=now)])
    for record in left.records:
        record.pricing_status = "unknown_model"
    Writer(store, settings, Metrics())._write_pending_file(usage_arrow(left.records), "token-2")
    original = store.insert_usage_arrow

    def down(table, token=None, **kw):
        raise StoreUnavailable("ClickHouse is down")

    monkeypatch.setattr(store, "insert_usage_arrow", down)
    writer = Writer(store, settings, Metrics())
    writer.start()  # does not raise
    later = export([chat(2, 1, model="gpt-4o", input=3, output=1)])
    with pytest.raises(StoreUnavailable):
        submit(writer, later)
    assert (tmp_path / "pending-batch.arrow").exists()
    monkeypatch.setattr(store, "insert_usage_arrow", original)
    assert submit(writer, later).stored == 1
    assert not (tmp_path / "pending-batch.arrow").exists()
    # The exporter's retry of the left batch: its rows are remembered, not counted again.
    assert submit(writer, left).duplicates == 2
    writer.stop()
    assert net(store) == ((3, 123), (3, 123))


def test_rows_queued_past_the_delay_budget_refuse_new_work_until_the_writer_catches_up(store, monkeypatch):
    import threading

    from spanmeter.ingest.errors import Overloaded

    writer = make_writer(store, queue_max_delay_ms=200)
    release, inserting = threading.Event(), threading.Event()
    original = store.insert_usage_arrow

    def slow(table, token=None, **kw):
        inserting.set()
        release.wait(30)
        return original(table, token, **kw)

    monkeypatch.setattr(store, "insert_usage_arrow", slow)
    first = export([chat(1, 1, model="gpt-4o", input=100, output=1)])
    second = export([chat(2, 1, model="gpt-4o", input=20, output=1)])
    third = export([chat(3, 1, model="gpt-4o", input=3, output=1)])
    held = writer.submit_nowait(first.records, first.links)
    assert inserting.wait(10)  # taken, its insert is slow
    queued = writer.submit_nowait(second.records, second.links)  # waits behind it, under budget
    time.sleep(0.3)
    with pytest.raises(Overloaded, match="waited"):
        writer.submit_nowait(third.records, third.links)
    with pytest.raises(Overloaded):
        writer.check_admission(1)  # what the app asks before reading an export
    release.set()
    assert held.result(30).stored == 1 and queued.result(30).stored == 1
    writer.check_admission(1)  # caught up
    assert submit(writer, third).stored == 1  # the exporter's retry
    writer.stop()
    assert net(store) == ((3, 123), (3, 123))


def test_after_a_slow_insert_the_next_batch_waits_as_long_to_gather_more_rows(store, monkeypatch):
    writer = make_writer(store, batch_hold_ms=1000)  # batch_max_wait_ms is 5
    original = store.insert_usage_arrow
    inserts = []

    def slow(table, token=None, **kw):
        inserts.append(table.num_rows)
        time.sleep(0.4)
        return original(table, token, **kw)

    monkeypatch.setattr(store, "insert_usage_arrow", slow)
    assert submit(writer, export([chat(1, 1, model="gpt-4o", input=100, output=1)])).stored == 1
    a, b = export([chat(2, 1, model="gpt-4o", input=20, output=1)]), export([chat(3, 1, model="gpt-4o", input=3, output=1)])
    first = writer.submit_nowait(a.records, a.links)
    time.sleep(0.15)  # far past batch_max_wait_ms, within the last insert's 0.4 s
    second = writer.submit_nowait(b.records, b.links)
    assert first.result(10).stored == 1 and second.result(10).stored == 1
    assert inserts == [1, 2]  # one insert for both, not one each
    writer.stop()
    assert net(store) == ((3, 123), (3, 123))


def users(store):
    """Net requests per user, in the events and in the daily rollup."""
    db = store.database
    events = store.query(f"SELECT user_id, sum(sign) AS n FROM {db}.usage_events GROUP BY user_id HAVING n != 0 ORDER BY user_id").rows
    daily = store.query(f"SELECT user_id, sum(requests) AS n FROM {db}.usage_daily GROUP BY user_id HAVING n != 0 ORDER BY user_id").rows
    return events, daily


def test_a_later_root_span_attributes_a_row_whose_parent_never_arrives(store):
    # request span (root, user) -> handler span (never exported: filtered) -> model call
    writer = make_writer(store)
    submit(writer, export([chat(1, 3, parent=2, model="gpt-4o", input=100, output=10)]))
    submit(writer, export([span("POST /chat", 1, 1, attrs={"user.id": "dora"})]))
    writer.stop()
    assert users(store) == ([("dora", 1)], [("dora", 1)])


def test_a_known_root_attributes_a_row_that_arrives_after_it(store):
    writer = make_writer(store)
    submit(writer, export([span("POST /chat", 1, 1, attrs={"user.id": "dora"})]))
    submit(writer, export([chat(1, 3, parent=2, model="gpt-4o", input=100, output=10)]))
    writer.stop()
    assert users(store) == ([("dora", 1)], [("dora", 1)])
