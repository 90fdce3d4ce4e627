"""The rollups' feed (0021) on real ClickHouse: committed batches reach the rollups later, several
at once, exactly once, across failed feed writes and restarts."""

import asyncio
import shutil
import time

from spanmeter.ingest.config import Settings
from spanmeter.ingest.decode import decode
from spanmeter.ingest.errors import StoreUnavailable
from spanmeter.ingest.metrics import Metrics
from spanmeter.ingest.normalize import normalize
from spanmeter.ingest.writer import Writer
from tests.support.otlp import chat, to_protobuf


def export(trace, n, tokens=10):
    return normalize(decode(to_protobuf([chat(trace, i + 1, model="gpt-4o", input=tokens, output=1) for i in range(n)]),
                            "application/x-protobuf"))


def submit(writer, result):
    return asyncio.run(writer.submit(result.records, result.links))


def make_writer(store, tmp_path, idle=None, **kw):
    """`idle`: seconds without exports before what is owed is fed (0.1 s); tests that need
    batches to wait together set it past their run."""
    settings = Settings(clickhouse_dsn="chdb://unused", database=store.database, batch_max_wait_ms=5,
                        state_dir=tmp_path, **kw)
    writer = Writer(store, settings, Metrics())
    if idle is not None:
        writer.rollup_idle = idle
    writer.start()
    return writer


def events(store):
    return store.query(f"SELECT sum(sign), sum(input_tokens * sign) FROM {store.database}.usage_events").rows[0]


# The rollups the feed's views fill, and those they feed in turn.
ROLLUPS = ("usage_hourly", "usage_daily", "usage_totals_hourly", "usage_user_daily", "usage_user_hourly",
           "usage_totals_daily", "usage_users_hourly")


def rollups(store):
    """(requests, input tokens) in each rollup."""
    db = store.database
    return {table: store.query(f"SELECT sum(requests), sum(input_tokens) FROM {db}.{table}").rows[0]
            for table in ROLLUPS}


def everywhere(value):
    return dict.fromkeys(ROLLUPS, value)


def owed_files(tmp_path, store):
    folder = tmp_path / f"pending-rollups.{store.database}"
    return sorted(p.name for p in folder.glob("*.arrow")) if folder.exists() else []


def feeds(writer):
    """How many feed writes landed."""
    return sum(s.value for s in writer.metrics.rollup_seconds.collect()[0].samples if s.name.endswith("_count"))


def test_batches_are_answered_at_once_and_fed_together_within_the_delay(store, tmp_path):
    writer = make_writer(store, tmp_path, idle=60, rollup_delay_ms=60_000)
    for trace in range(1, 4):
        assert submit(writer, export(trace, 2)).stored == 2
    # Answered: in usage_events, owed to the rollups (on disk), not in them yet.
    assert events(store) == (6, 60)
    assert rollups(store) == everywhere((0, 0))
    assert len(owed_files(tmp_path, store)) == 3
    assert writer.metrics.rollup_owed_rows._value.get() == 6
    writer.stop()
    # One feed write for the three batches.
    assert rollups(store) == everywhere((6, 60))
    assert owed_files(tmp_path, store) == []
    assert feeds(writer) == 1
    assert writer.metrics.rollup_owed_rows._value.get() == 0


def test_under_steady_exports_one_feed_carries_many_batches(store, tmp_path):
    writer = make_writer(store, tmp_path, rollup_delay_ms=1000)
    batches, started = 0, time.monotonic()
    while time.monotonic() - started < 2.5:  # an export every ~10 ms: never 0.1 s idle
        submit(writer, export(100 + batches, 1))
        batches += 1
        time.sleep(0.01)
    writer.stop()
    assert rollups(store) == everywhere((batches, 10 * batches))
    assert batches >= 20
    assert 2 <= feeds(writer) <= 5  # about one a second, and one at stop


def test_once_exports_pause_what_is_owed_is_fed_without_waiting_for_the_delay(store, tmp_path):
    writer = make_writer(store, tmp_path, rollup_delay_ms=60_000)
    submit(writer, export(1, 2))
    deadline = time.monotonic() + 10
    while owed_files(tmp_path, store) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert rollups(store) == everywhere((2, 20))
    assert time.monotonic() < deadline
    writer.stop()
    assert feeds(writer) == 1


def test_with_no_delay_every_batch_is_fed_before_it_is_answered(store, tmp_path):
    writer = make_writer(store, tmp_path, rollup_delay_ms=0)
    for trace in range(1, 4):
        submit(writer, export(trace, 2))
        assert rollups(store) == everywhere((2 * trace, 20 * trace))
    assert owed_files(tmp_path, store) == []
    writer.stop()


def test_stop_feeds_what_is_owed(store, tmp_path):
    writer = make_writer(store, tmp_path, idle=60, rollup_delay_ms=60_000)
    submit(writer, export(1, 3))
    submit(writer, export(2, 1))
    assert rollups(store) == everywhere((0, 0))
    writer.stop()
    assert rollups(store) == everywhere((4, 40))
    assert owed_files(tmp_path, store) == []


def test_a_feed_that_fails_half_way_is_re_sent_and_counted_once(store, tmp_path):
    """One of the feed's views fails after the others wrote their parts (disk full, a kill): the
    feed is re-sent with its token, and only what is missing is written."""
    db = store.database
    store.command(f"CREATE TABLE {db}.flag (x UInt8) ENGINE = MergeTree ORDER BY x")
    store.command(f"CREATE TABLE {db}.zz_boom (n UInt64) ENGINE = MergeTree ORDER BY n")
    # Named to sort after the rollups' views, which run first and succeed.
    store.command(
        f"CREATE MATERIALIZED VIEW {db}.zz_boom_mv TO {db}.zz_boom AS "
        f"SELECT throwIf((SELECT count() FROM {db}.flag) = 0, 'disk full') + count() AS n FROM {db}.usage_rollup_feed"
    )
    writer = make_writer(store, tmp_path, idle=60, rollup_delay_ms=60_000)
    submit(writer, export(1, 2))
    submit(writer, export(2, 3))
    writer.stop()  # the feed fails: the merged write stays on disk
    assert events(store) == (5, 50)
    assert owed_files(tmp_path, store) == ["feed.arrow"]
    store.command(f"INSERT INTO {db}.flag VALUES (1)")
    writer = make_writer(store, tmp_path, rollup_delay_ms=60_000)  # a restart re-sends it
    assert owed_files(tmp_path, store) == []
    writer.stop()
    assert rollups(store) == everywhere((5, 50))
    assert store.query(f"SELECT count() FROM {db}.zz_boom").rows[0][0] == 1


def test_a_restart_between_the_merged_file_and_its_members_removal_feeds_each_batch_once(store, tmp_path,
                                                                                        monkeypatch):
    writer = make_writer(store, tmp_path, idle=60, rollup_delay_ms=60_000)
    submit(writer, export(1, 2))
    submit(writer, export(2, 1))
    folder = tmp_path / f"pending-rollups.{store.database}"
    members = tmp_path / "members"
    shutil.copytree(folder, members)
    original = store.insert_rollups

    def down(table, token):
        raise StoreUnavailable("ClickHouse is down")

    monkeypatch.setattr(store, "insert_rollups", down)
    writer.stop()
    # Killed after writing the merged file, before removing its members: both are on disk.
    for path in members.glob("*.arrow"):
        shutil.copy(path, folder / path.name)
    assert len(owed_files(tmp_path, store)) == 3
    monkeypatch.setattr(store, "insert_rollups", original)
    writer = make_writer(store, tmp_path, rollup_delay_ms=60_000)
    assert owed_files(tmp_path, store) == []
    writer.stop()
    assert rollups(store) == everywhere((3, 30))


def test_a_batch_committed_while_the_feed_is_down_is_fed_when_it_is_back(store, tmp_path, monkeypatch):
    writer = make_writer(store, tmp_path, rollup_delay_ms=0)
    original = store.insert_rollups
    calls = []

    def down(table, token):
        calls.append(token)
        raise StoreUnavailable("ClickHouse is down")

    monkeypatch.setattr(store, "insert_rollups", down)
    # The rows are committed: the request is answered, and the feed retried later.
    assert submit(writer, export(1, 2)).stored == 2
    assert events(store) == (2, 20)
    monkeypatch.setattr(store, "insert_rollups", original)
    deadline = time.monotonic() + 10
    while owed_files(tmp_path, store) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rollups(store) == everywhere((2, 20))
    submit(writer, export(2, 1))
    writer.stop()
    assert rollups(store) == everywhere((3, 30))
    assert calls  # it was tried, and failed, while down


def test_a_feed_that_landed_but_whose_answer_was_lost_is_not_counted_twice(store, tmp_path, monkeypatch):
    original = store.insert_rollups
    lost = []

    def lands_then_fails(table, token):
        original(table, token)
        if not lost:
            lost.append(token)
            raise StoreUnavailable("connection reset after the insert")

    monkeypatch.setattr(store, "insert_rollups", lands_then_fails)
    writer = make_writer(store, tmp_path, idle=60, rollup_delay_ms=60_000)
    submit(writer, export(1, 2))
    submit(writer, export(2, 2))
    writer.stop()  # lands, but is not known to: kept on disk
    assert rollups(store) == everywhere((4, 40))
    assert owed_files(tmp_path, store) == ["feed.arrow"]
    writer = make_writer(store, tmp_path, rollup_delay_ms=60_000)  # re-sent with its token: dropped
    writer.stop()
    assert owed_files(tmp_path, store) == []
    assert rollups(store) == everywhere((4, 40))
    assert len(lost) == 1


def test_a_pending_batch_without_a_token_is_re_sent_without_one_and_fed_once(store, tmp_path):
    """A pending file written without a token (an older version) whose insert had landed: the
    re-send without a token is dropped by ClickHouse by its content, and the rollups get it once."""
    from spanmeter.ingest.store import usage_arrow
    from spanmeter.ingest.writer import _write_arrow

    table = usage_arrow(export(1, 3).records)
    _write_arrow(tmp_path / "pending-batch.arrow", table, {})
    store._insert(store.usage_table, table, None)  # it landed; the process died before its feed
    writer = make_writer(store, tmp_path, rollup_delay_ms=0)
    writer.stop()
    assert events(store) == (3, 30)
    assert rollups(store) == everywhere((3, 30))
    assert owed_files(tmp_path, store) == []


def test_exports_that_waited_through_a_feed_are_not_made_to_wait_a_batch_window_again(store, tmp_path):
    """A feed holds the writer thread (the engine runs one query at a time): what queued meanwhile
    has gathered long enough, and is taken at once after it instead of after another window."""
    from spanmeter.ingest.writer import _Submission

    # Not started: the test takes the batches itself.
    writer = Writer(store, Settings(clickhouse_dsn="chdb://unused", database=store.database, batch_max_wait_ms=600,
                                    state_dir=tmp_path), Metrics())
    queued = _Submission([], [])
    queued.queued_at = time.monotonic() - 1.0  # arrived as a feed started, a second ago
    writer._pending.append(queued)
    writer._running = True
    writer._just_fed = True
    started = time.monotonic()
    assert writer._take_batch() == [queued]
    assert time.monotonic() - started < 0.3
    # Otherwise the batch window still applies: a lone export waits for company.
    writer._pending.append(queued)
    started = time.monotonic()
    assert writer._take_batch() == [queued]
    assert time.monotonic() - started >= 0.5
