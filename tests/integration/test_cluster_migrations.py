"""The cluster variant of every migration and the server-only access files, checked by ClickHouse
itself: no cluster (and no Keeper, no access control) runs here, so every statement is parsed by
the real parser (`formatQuery` on chDB), its shape is asserted on the parser's normalized text,
and the same statements brought back to one node (replication and sharding stripped) are run to
prove the wiring: views over the `_local` tables feed rollups that the original names answer.
"""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from spanmeter.ingest import migrate as m

CLUSTER = "spanmeter_cluster"


def parse(store, sql: str) -> str:
    """ClickHouse's own normalized text of `sql`; a syntax error fails the test."""
    return store.query("SELECT formatQuery({q:String})", {"q": sql}).rows[0][0]


def cluster_variant(store) -> list[tuple[str, list[str]]]:
    migrations = m.load_migrations()
    local = m.merge_tree_tables(migrations, store.database)
    return [(mig.name, m.cluster_statements(mig.statements(store.database), CLUSTER, store.database, local))
            for mig in migrations]


def test_every_migrations_cluster_variant_parses(store):
    db = store.database
    local = m.merge_tree_tables(m.load_migrations(), db)
    assert {"usage_events", "usage_rollup_feed", "usage_hourly", "usage_daily", "user_tiers"} <= local
    seen_distributed = set()
    for name, statements in cluster_variant(store):
        assert statements, name
        for statement in statements:
            text = parse(store, statement)
            head = text.split("\n", 1)[0]
            if text.startswith("INSERT"):
                continue
            assert f"ON CLUSTER {CLUSTER}" in head, f"{name}: {head}"
            # Nothing stays a plain MergeTree on one node.
            assert not re.search(r"ENGINE = (?!Replicated)\w*MergeTree", text), f"{name}: {text}"
            if "ENGINE = Replicated" in text:
                assert re.search(r"^CREATE TABLE IF NOT EXISTS \w+\.\w+_local ON CLUSTER", text), text
                assert "'/clickhouse/tables/{shard}/{database}/{table}', '{replica}'" in text
            if (d := re.search(r"^ENGINE = Distributed\('(\w+)', '(\w+)', '(\w+)', (.+)\)$", text, re.M)):
                assert d.group(1) == CLUSTER and d.group(2) == db and d.group(3).endswith("_local")
                table = d.group(3).removesuffix("_local")
                assert re.match(rf"CREATE TABLE IF NOT EXISTS {db}\.{table} ON CLUSTER {CLUSTER} AS {db}\.{table}_local", text)
                expected_key = "cityHash64(user_id)" if table in (
                    "usage_events", "usage_rollup_feed", "usage_hourly", "usage_daily", "user_tiers", "cap_status", "usage_user_daily",
                    "usage_user_hourly", "usage_users_hourly") else "rand()"
                assert d.group(4) == expected_key, text
                seen_distributed.add(table)
            if text.startswith("CREATE MATERIALIZED VIEW"):
                # Each shard aggregates its own rows into its own rollup.
                assert re.search(rf"TO {db}\.\w+_local\b", head), text
                # (usage_totals_daily's, usage_users_hourly's and usage_series_hourly's views read what
                # another view writes, on the same shard)
                # (since 0021 the others read the rollups' feed, which the writer fills after usage_events)
                assert re.search(rf"FROM {db}\.(usage_rollup_feed|usage_totals_hourly|usage_hourly|usage_events)_local\b",
                                 text), text
            elif text.startswith("CREATE VIEW"):
                assert "_local" not in text, text  # plain views read the Distributed tables
    assert seen_distributed == local


def test_replicated_engine_keeps_the_engines_own_arguments(store):
    statements = m.cluster_statements(
        ["CREATE TABLE IF NOT EXISTS d.prices (v String, at DateTime64(3)) ENGINE = ReplacingMergeTree(at) ORDER BY v",
         "CREATE TABLE d.s (k String, n Int64) ENGINE = SummingMergeTree((n)) ORDER BY k SETTINGS index_granularity = 1024"],
        CLUSTER, "d", {"prices", "s"})
    texts = [parse(store, s) for s in statements]
    path = "'/clickhouse/tables/{shard}/{database}/{table}', '{replica}'"
    assert f"ENGINE = ReplicatedReplacingMergeTree({path}, at)" in texts[0]
    assert "ENGINE = Distributed('spanmeter_cluster', 'd', 'prices_local', rand())" in texts[1]
    assert f"ENGINE = ReplicatedSummingMergeTree({path}, (n))" in texts[2] and "index_granularity = 1024" in texts[2]


def single_node(sql: str) -> str:
    """The cluster statement as one server would take it: no ON CLUSTER, no Keeper, no shards."""
    sql = re.sub(r" ON CLUSTER '[^']*'", "", sql)
    sql = re.sub(r"Replicated(\w*)MergeTree\('[^']*', '[^']*'(?:, )?", r"\1MergeTree(", sql)
    return re.sub(r"Distributed\('[^']*', '(\w+)', '(\w+)', (?:cityHash64\(user_id\)|rand\(\))\)", r"Merge('\1', '^\2$')", sql)


def test_cluster_wiring_runs_on_one_node(store, database):
    """Statements of the cluster variant, minus replication: the rollups fill from the `_local`
    event table and the original names (here Merge tables standing in for Distributed) answer."""
    db = database + "_c"
    store.command(f"CREATE DATABASE {db}")
    try:
        migrations = m.load_migrations()
        local = m.merge_tree_tables(migrations, db)
        for mig in migrations:
            for statement in m.cluster_statements(mig.statements(db), CLUSTER, db, local):
                # A backfill inserts through the Distributed table, here a Merge table: its _local one.
                statement = re.sub(rf"^INSERT INTO {db}\.(\w+)", lambda i: f"INSERT INTO {db}.{i.group(1)}_local"
                                   if i.group(1) in local else i.group(0), statement)
                store.command(single_node(statement))
        # As the writer does: the rows into usage_events, then the same rows into the rollups' feed.
        for table in ("usage_events_local", "usage_rollup_feed_local"):
            store.command(
                f"INSERT INTO {db}.{table} (event_time, trace_id, span_id, user_id, provider, request_model, "
                "input_tokens, output_tokens, cost_usd, pricing_status) VALUES "
                "('2026-03-01 01:00:00', 't1', 's1', 'alice', 'openai', 'gpt-4o-mini', 100, 1, 0.5, 'priced'), "
                "('2026-03-01 02:00:00', 't2', 's2', 'alice', 'openai', 'gpt-4o-mini', 200, 2, 0.25, 'priced'), "
                "('2026-03-01 03:00:00', 't3', 's3', 'bob', 'openai', 'gpt-5-preview', 300, 3, NULL, 'unknown_model')"
            )
        q = lambda sql: store.query(sql).rows  # noqa: E731
        assert q(f"SELECT sum(requests), sum(cost_usd), sum(unpriced_requests) FROM {db}.usage_hourly") == [
            (3, Decimal("0.75"), 1)]
        for rollup in ("usage_totals_hourly", "usage_totals_daily", "usage_user_daily", "usage_user_hourly",
                       "usage_users_hourly"):
            assert q(f"SELECT sum(requests), sum(cost_usd), sum(unpriced_requests) FROM {db}.{rollup}") == [
                (3, Decimal("0.75"), 1)], rollup
        assert q(f"SELECT user_id, cost_usd FROM {db}.cost_per_user_daily ORDER BY user_id") == [
            ("alice", Decimal("0.75")), ("bob", Decimal(0))]
        assert q(f"SELECT count() FROM {db}.usage_events") == [(3,)]
        assert q(f"SELECT requests FROM {db}.unpriced_usage") == [(1,)]
    finally:
        store.command(f"DROP DATABASE IF EXISTS {db} SYNC")


def test_statements_without_a_cluster_variant_are_refused():
    with pytest.raises(m.MigrationError, match="no cluster variant"):
        m.cluster_statements(["OPTIMIZE TABLE d.usage_hourly FINAL"], CLUSTER, "d", {"usage_hourly"})
    with pytest.raises(m.MigrationError, match="without TO"):
        m.cluster_statements(["CREATE MATERIALIZED VIEW d.v ENGINE = Memory AS SELECT 1"], CLUSTER, "d", set())
    with pytest.raises(m.MigrationError, match="cluster name"):
        m.cluster_statements([], "bad name'", "d", set())


def test_alter_reaches_the_distributed_table_only_for_columns(store):
    local = {"usage_events"}
    add = m.cluster_statements(["ALTER TABLE d.usage_events ADD COLUMN IF NOT EXISTS x String"], CLUSTER, "d", local)
    assert [parse(store, s).split("\n")[0] for s in add] == [
        f"ALTER TABLE d.usage_events_local ON CLUSTER {CLUSTER}", f"ALTER TABLE d.usage_events ON CLUSTER {CLUSTER}"]
    index = m.cluster_statements(["ALTER TABLE d.usage_events ADD INDEX i user_id TYPE bloom_filter GRANULARITY 4"],
                                 CLUSTER, "d", local)
    assert len(index) == 1 and parse(store, index[0]).startswith(f"ALTER TABLE d.usage_events_local ON CLUSTER {CLUSTER}")
    drop = m.cluster_statements(["DROP TABLE IF EXISTS d.usage_events"], CLUSTER, "d", local)
    assert [parse(store, s) for s in drop] == [f"DROP TABLE IF EXISTS d.usage_events ON CLUSTER {CLUSTER}",
                                                f"DROP TABLE IF EXISTS d.usage_events_local ON CLUSTER {CLUSTER}"]


ACCESS = m.Access(writer_password="w'ri\\ter-s3cret", reader_password="re'ader-s3cret")


@pytest.mark.parametrize("cluster", [None, CLUSTER])
def test_access_statements_parse_and_carry_passwords_only_as_parameters(store, cluster):
    statements = m.access_statements(ACCESS, store.database, cluster)
    texts = [parse(store, s) for s, _ in statements]
    joined = "\n".join(s for s, _ in statements)
    assert "s3cret" not in joined and "{db}" not in joined and "{traces_db}" not in joined
    for (statement, params), text in zip(statements, texts):
        if "IDENTIFIED" in text:
            assert re.search(r"BY \{(writer|reader)_password:String\}", text), text
            assert set(params) == {"writer_password"} if "spanmeter_ingest" in text else {"reader_password"}
        else:
            assert params == {}
        if cluster:
            assert f"ON CLUSTER {cluster}" in text, text
    assert f"GRANT SELECT ON {store.database}.* TO spanmeter_read" in [t.replace(f" ON CLUSTER {CLUSTER}", "") for t in texts]
    reader = [t for t in texts if t.startswith("CREATE USER") and "spanmeter_reader" in t]
    assert reader and "readonly = 2" in reader[0]
    # The reader's role is granted SELECT only, and the reader user that role only.
    assert [t.replace(f" ON CLUSTER {CLUSTER}", "") for t in texts if t.endswith("TO spanmeter_reader")] == [
        "GRANT spanmeter_read TO spanmeter_reader"]
    reader_grants = [t for t in texts if t.startswith("GRANT") and t.endswith("TO spanmeter_read")]
    assert reader_grants and all(re.search(r"GRANT (ON CLUSTER \w+ )?SELECT ON ", t) for t in reader_grants)


def test_access_from_environment():
    assert m.Access.from_env({}) is None
    with pytest.raises(m.MigrationError, match="both"):
        m.Access.from_env({m.WRITER_PASSWORD_ENV: "x"})
    a = m.Access.from_env({m.WRITER_PASSWORD_ENV: "w", m.READER_PASSWORD_ENV: "r", m.READER_USER_ENV: "grafana",
                           m.TRACES_DATABASE_ENV: "traces"})
    assert (a.writer_user, a.reader_user, a.traces_database) == ("spanmeter_ingest", "grafana", "traces")
    assert "w" not in repr(a).replace("writer_user", "").replace("spanmeter_ingest", "")
    with pytest.raises(ValueError):
        m.Access(writer_password="w", reader_password="r", reader_user="x; DROP USER default")


def test_embedded_store_never_gets_access_control(store, monkeypatch):
    monkeypatch.setenv(m.WRITER_PASSWORD_ENV, "w")
    monkeypatch.setenv(m.READER_PASSWORD_ENV, "r")
    assert m.migrate(store) == []  # up to date; the passwords are for a server and ignored here
    with pytest.raises(m.MigrationError, match="server"):
        m.migrate(store, access=ACCESS)


def test_existing_behaviour_is_kept(store, monkeypatch):
    monkeypatch.setenv(m.CLUSTER_ENV, "")
    assert m.migrate(store) == []
    db = store.database
    assert [v for v, in store.query(f"SELECT version FROM {db}.schema_migrations ORDER BY version").rows] == [
        mig.version for mig in m.load_migrations()]
    store.command(f"ALTER TABLE {db}.schema_migrations UPDATE checksum = 'x' WHERE version = 1 SETTINGS mutations_sync = 1")
    with pytest.raises(m.MigrationError, match="changed after it was applied"):
        m.migrate(store)
    monkeypatch.setenv(m.CLUSTER_ENV, "no spaces allowed")
    with pytest.raises(m.MigrationError, match="cluster name"):
        m.migrate(store)
