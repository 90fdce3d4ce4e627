"""The dashboards' rollups (clickhouse/0013-0019) hold exactly what the events hold: after inserts
through the writer's insert path, after a migration backfilled them from events stored before it,
and after a batch re-sent with its deduplication token. The seed (tests/integration/
test_grafana_panels.py) has repricing corrections (-1/+1 rows), calls taken back, unpriced calls,
calls without a user or session, and a long prompt above the tier threshold.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

import spanmeter.ingest.migrate as migrate_module
from spanmeter.ingest.migrate import migrate
from tests.integration.test_grafana_panels import SEED, Call, net, priced, to_record

MODEL = "if(response_model != '', response_model, request_model)"
SUMS = ("requests", "input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens",
        "cost_usd", "unpriced_requests", "unpriced_tokens")
EVENT_SUMS = (
    "sum(toInt64(sign))",
    "sum(toInt64(input_tokens) * sign)",
    "sum(toInt64(cache_read_tokens) * sign)",
    "sum(toInt64(cache_write_tokens) * sign)",
    "sum(toInt64(output_tokens) * sign)",
    "sum(toInt64(reasoning_tokens) * sign)",
    "sum(toDecimal128(ifNull(cost_usd, toDecimal64(0, 12)), 12) * sign)",
    "sum(if(cost_usd IS NULL, toInt64(sign), 0))",
    "sum(if(cost_usd IS NULL, (toInt64(input_tokens) + output_tokens) * sign, 0))",
)
PRICED_CACHE = "cost_usd IS NOT NULL AND (cache_read_tokens > 0 OR cache_write_tokens > 0)"
# (rollup, its key, the same key over usage_events, extra aggregates: (rollup's, the events'))
ROLLUPS = {
    "usage_totals_hourly": (
        "hour, service_name, provider, model, feature, team, price_version, tier_input_tokens",
        f"toStartOfHour(event_time), service_name, provider, {MODEL}, feature, team, price_version, "
        "if(input_tokens > 32000 AND (cache_read_tokens > 0 OR cache_write_tokens > 0), input_tokens, 0)",
        [("sum(priced_cache_requests)", f"sum(if({PRICED_CACHE}, toInt64(sign), 0))"),
         ("sum(priced_cache_read_tokens)", "sum(if(cost_usd IS NOT NULL, toInt64(cache_read_tokens) * sign, 0))"),
         ("sum(priced_cache_write_tokens)", "sum(if(cost_usd IS NOT NULL, toInt64(cache_write_tokens) * sign, 0))")],
    ),
    "usage_totals_daily": (
        "day, service_name, provider, model, feature, team, price_version, tier_input_tokens",
        f"toDate(event_time), service_name, provider, {MODEL}, feature, team, price_version, "
        "if(input_tokens > 32000 AND (cache_read_tokens > 0 OR cache_write_tokens > 0), input_tokens, 0)",
        [("sum(priced_cache_requests)", f"sum(if({PRICED_CACHE}, toInt64(sign), 0))"),
         ("sum(priced_cache_read_tokens)", "sum(if(cost_usd IS NOT NULL, toInt64(cache_read_tokens) * sign, 0))"),
         ("sum(priced_cache_write_tokens)", "sum(if(cost_usd IS NOT NULL, toInt64(cache_write_tokens) * sign, 0))")],
    ),
    "usage_user_daily": ("day, user_id", "toDate(event_time), user_id", []),
    "usage_users_hourly": ("hour, user_id", "toStartOfHour(event_time), user_id", []),
    "usage_user_hourly": (
        "user_id, hour, session_id, provider, model, feature",
        f"user_id, toStartOfHour(event_time), session_id, provider, {MODEL}, feature",
        [("min(first_event_time)", "min(event_time)"), ("max(last_event_time)", "max(event_time)")],
    ),
}


def rollup_rows(store, table: str) -> set[tuple]:
    key, _, extra = ROLLUPS[table]
    sums = ", ".join([f"sum({c})" for c in SUMS] + [a for a, _ in extra])
    return _rows(store, table, f"SELECT {key}, {sums} FROM {store.database}.{table} GROUP BY {key}")


def event_rows(store, table: str) -> set[tuple]:
    _, key, extra = ROLLUPS[table]
    sums = ", ".join(list(EVENT_SUMS) + [e for _, e in extra])
    return _rows(store, table, f"SELECT {key}, {sums} FROM {store.database}.usage_events GROUP BY {key}")


def _rows(store, table: str, sql: str) -> set[tuple]:
    """The groups of `sql` whose sums are not all 0 (a group whose calls were all taken back is
    empty; a SummingMergeTree drops it when it merges, the events keep its rows)."""
    key, _, extra = ROLLUPS[table]
    width = len(key.split(","))
    summed = [i for i, a in enumerate(list(SUMS) + [a for a, _ in extra]) if not a.startswith(("min(", "max("))]
    rows = [tuple(r) for r in store.query(sql).rows]
    kept = {r for r in rows if any(r[width + i] != 0 for i in summed)}
    assert len(kept) == len([r for r in rows if any(r[width + i] != 0 for i in summed)])  # no group twice
    return kept


def assert_rollups_equal_events(store) -> None:
    for table in ROLLUPS:
        got, want = rollup_rows(store, table), event_rows(store, table)
        assert got == want, table
        assert len(want) > 10, table


def totals(store) -> tuple:
    db = store.database
    return store.query(
        f"SELECT sum(requests), sum(input_tokens), sum(cost_usd), sum(unpriced_requests), sum(priced_cache_read_tokens) "
        f"FROM {db}.usage_totals_hourly"
    ).rows[0]


def expected_totals(calls: list[Call]) -> tuple:
    return (net(calls), net(calls, lambda c: c.input), priced(calls), net(c for c in calls if c.cost is None),
            net((c for c in calls if c.cost is not None), lambda c: c.cached))


def test_rollups_equal_the_events_after_inserts(store):
    store.insert_usage([to_record(c) for c in SEED])
    assert_rollups_equal_events(store)
    assert totals(store) == expected_totals(SEED)
    db = store.database
    # u07's repriced call: the cancelled $0.50 and the corrected $0.25 net to the corrected cost.
    u07 = [c for c in SEED if c.user == "u07"]
    day = next(c for c in u07 if c.key == "u07-repriced").time.date()
    assert store.query(
        f"SELECT sum(requests), sum(cost_usd) FROM {db}.usage_user_daily WHERE user_id = 'u07' AND day = {{d:Date}}",
        {"d": day},
    ).rows == [(net(c for c in u07 if c.time.date() == day), priced(c for c in u07 if c.time.date() == day))]
    # u-unpriced: three calls, none priced: counted apart, cost 0 in the sum (never a priced $0 call).
    assert store.query(
        f"SELECT sum(requests), sum(unpriced_requests), sum(unpriced_tokens), sum(cost_usd) FROM {db}.usage_user_hourly "
        "WHERE user_id = 'u-unpriced'"
    ).rows == [(3, 3, 3 * 440, Decimal(0))]
    # The long prompt keeps its input tokens in the totals (its tier is decided by them).
    assert store.query(
        f"SELECT tier_input_tokens, sum(priced_cache_read_tokens) FROM {db}.usage_totals_hourly "
        "WHERE tier_input_tokens > 0 GROUP BY tier_input_tokens"
    ).rows == [(250_000, 180_000)]
    # A session's first and last call, to the millisecond, and its calls net of the taken-back one.
    ob = [c for c in SEED if c.session == "ob-1"]
    assert store.query(
        f"SELECT min(first_event_time), max(last_event_time), sum(requests) FROM {db}.usage_user_hourly "
        "WHERE user_id = 'o\\'brien' AND session_id = 'ob-1'"
    ).rows == [(min(c.time for c in ob).replace(tzinfo=None), max(c.time for c in ob).replace(tzinfo=None), 3)]


SERIES = {"model": MODEL, "feature": "feature", "service": "service_name", "team": "team"}


def assert_series_equal_events(store) -> None:
    db = store.database
    for dimension, column in SERIES.items():
        got = store.query(
            f"SELECT hour, value, sum(requests), sum(cost_usd), sum(unpriced_requests) FROM {db}.usage_series_hourly "
            f"WHERE dimension = '{dimension}' GROUP BY hour, value HAVING sum(requests) != 0 OR sum(cost_usd) != 0 "
            "OR sum(unpriced_requests) != 0").rows
        want = store.query(
            f"SELECT toStartOfHour(event_time) AS h, {column} AS v, {EVENT_SUMS[0]} AS n, {EVENT_SUMS[6]} AS c, "
            f"{EVENT_SUMS[7]} AS u FROM {db}.usage_events GROUP BY h, v HAVING n != 0 OR c != 0 OR u != 0").rows
        assert set(got) == set(want) and len(got) == len(want) > 10, dimension


def test_the_series_rollup_equals_the_events(store):
    store.insert_usage([to_record(c) for c in SEED])
    assert_series_equal_events(store)
    db = store.database
    assert store.query(f"SELECT sum(cost_usd) FROM {db}.usage_series_hourly WHERE dimension = 'team'").rows == [
        (priced(SEED),)]


def test_a_re_sent_batch_changes_no_rollup(store):
    """The writer re-sends a batch that failed half way with the same deduplication token: each
    rollup (its view's part already written or not) must count the batch once."""
    records = [to_record(c) for c in SEED]
    store.insert_usage(records, token="batch-1")
    before = {t: rollup_rows(store, t) for t in ROLLUPS}
    store.insert_usage(records, token="batch-1")
    assert {t: rollup_rows(store, t) for t in ROLLUPS} == before
    assert totals(store) == expected_totals(SEED)


def test_a_batch_re_sent_after_failing_between_views_is_counted_once(store):
    """The events and some views' parts committed, a later view's not (disk full, a kill): the
    writer re-sends the batch with its token; every rollup, the daily totals fed by the hourly
    totals' view included, ends up with the batch once."""
    db = store.database
    store.command(f"CREATE TABLE {db}.flag (x UInt8) ENGINE = MergeTree ORDER BY x")
    store.command(f"CREATE TABLE {db}.zz_boom (n UInt64) ENGINE = MergeTree ORDER BY n")
    # Named to sort after every usage_* view: those run first and succeed.
    store.command(
        f"CREATE MATERIALIZED VIEW {db}.zz_boom_mv TO {db}.zz_boom AS "
        f"SELECT throwIf((SELECT count() FROM {db}.flag) = 0, 'disk full') + count() AS n FROM {db}.usage_events"
    )
    records = [to_record(c) for c in SEED]
    with pytest.raises(Exception, match="disk full"):
        store.insert_usage(records, token="batch-1")
    assert store.query(f"SELECT count() FROM {db}.usage_events").rows == [(len(SEED),)]  # the events are in
    store.command(f"INSERT INTO {db}.flag VALUES (1)")
    store.insert_usage(records, token="batch-1")
    assert_rollups_equal_events(store)
    assert_series_equal_events(store)
    assert totals(store) == expected_totals(SEED)
    assert store.query(f"SELECT count() FROM {db}.zz_boom").rows == [(1,)]


def test_the_migration_backfills_events_stored_before_it(store, chdb_path, monkeypatch):
    from spanmeter.ingest.store import Store, usage_arrow

    db = store.database + "_b"
    old = Store.connect(f"chdb://{chdb_path}", db)
    try:
        everything = migrate_module.load_migrations()
        monkeypatch.setattr(migrate_module, "load_migrations",
                            lambda folder=None: [m for m in everything if m.version < 13])
        migrate(old)
        assert not old.query(f"EXISTS TABLE {db}.usage_totals_hourly").rows[0][0]
        # Stored before the rollups exist: facts, corrections, unpriced calls.
        first = [c for c in SEED if c.time < datetime(2026, 3, 10, tzinfo=UTC)]
        later = [c for c in SEED if c not in first]
        # (as the ingest of that schema inserted: into usage_events, whose own views fed the rollups)
        old.insert_usage_arrow(usage_arrow([to_record(c) for c in first]), "before-0013", rollups=False)
        monkeypatch.undo()
        applied = migrate(old)
        # the dashboards' rollups (later migrations may follow them)
        assert [name for name in applied if name < "0020"] == [
                           "0013_create_usage_totals_hourly.sql", "0014_create_usage_user_daily.sql",
                           "0015_create_usage_user_hourly.sql", "0016_drop_usage_hourly_projection.sql",
                           "0017_create_usage_totals_daily.sql", "0018_create_usage_users_hourly.sql",
                           "0019_create_usage_series_hourly.sql"]
        assert_rollups_equal_events(old)
        assert_series_equal_events(old)
        assert totals(old) == expected_totals(first)
        # Then the views carry on from the backfill, and migrating again adds nothing.
        old.insert_usage([to_record(c) for c in later])
        assert migrate(old) == []
        assert_rollups_equal_events(old)
        assert totals(old) == expected_totals(SEED)
        assert not old.query(
            f"SELECT count() FROM system.projections WHERE database = '{db}' AND table = 'usage_hourly'"
        ).rows[0][0]
    finally:
        old.command(f"DROP DATABASE IF EXISTS {db} SYNC")
        old.close()


def test_seed_spans_what_the_rollups_must_get_right():
    """The seed these tests insert has each kind of row the rollups must sum exactly."""
    assert any(c.sign < 0 for c in SEED) and any(c.cost is None for c in SEED)
    assert any(c.user == "" for c in SEED) and any(c.session == "" and c.user for c in SEED)
    assert any(c.input > 32000 and c.cached for c in SEED)
    assert {c.time.month for c in SEED} == {1, 2, 3}  # three monthly partitions
