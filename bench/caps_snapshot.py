"""Benchmark: the caps snapshot behind the Budgets dashboard, and the dashboard's queries.

    .venv/bin/python bench/caps_snapshot.py                          # 1M rows, 10k users
    .venv/bin/python bench/caps_snapshot.py --rows 100000 --users 2000   # quicker

Targets: a snapshot of every active user (SPANMETER_CAPS_SNAPSHOT_SECONDS, 60 s by default)
takes a small part of its interval: **<= 5 s for 10k active users over 1M events** and stalls
checks only for its grouped ledger loads; every Budgets panel answers in **<= 1 s**.

Seeds a fresh embedded chDB as bench/caps_check.py does (10k users with Zipf(1.1) skew, calls
over the last 35 days, 10% on `pro`, tiers of ingest/tiers.example.yaml), then times:
  first   a snapshot in an engine that has loaded nobody (a start whose preload has not
          finished): the active-users query, grouped ledger loads, usage per user, one insert;
  warm    snapshots with every ledger in memory (the steady state), `--snapshots` of them;
  phases  the steps of a warm snapshot, timed apart: the active-users query, the grouped load of
          ledgers not in memory (here none, but the settings of every configured user are read),
          the usage of every user from memory, the insert. On embedded chDB the query, the load
          and the insert hold the store, so the writer's commits wait for them;
  panels  every target and variable of grafana/dashboards/budgets.json, expanded as Grafana and
          the plugin expand them (tests/support/grafana_macros.py), `--runs` runs each after a
          warm-up, on the table as the snapshots left it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from caps_check import seed, user_weights  # noqa: E402

import clickhouse_connect  # noqa: E402

from spanmeter.ingest.budgets import CAP_STATUS_COLUMNS, Snapshots, record_tier_caps, status_rows  # noqa: E402
from spanmeter.ingest.caps import Caps, TierBook  # noqa: E402
from spanmeter.ingest.migrate import migrate  # noqa: E402
from spanmeter.ingest.store import Store  # noqa: E402
from tests.support.grafana_macros import QueryContext, Variable, expand  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--snapshots", type=int, default=5)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    rnd = random.Random(args.seed)
    users = [f"user-{i:05d}" for i in range(args.users)]
    now_ms = time.time_ns() // 1_000_000
    tmp = tempfile.mkdtemp(prefix="spanmeter-bench-snapshot-")
    store = Store.connect(f"chdb://{tmp}/chdb", "bench")
    migrate(store)
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"seeding {args.rows:,} rows for {args.users:,} users into {tmp}")
    seed(store, args.rows, users, user_weights(args.users), now_ms, rnd)
    store.command(
        "INSERT INTO bench.user_tiers (user_id, setting, value, updated_at) "
        "SELECT arrayJoin({users:Array(String)}), 'tier', 'pro', now64(6)",
        {"users": rnd.sample(users, args.users // 10)},
    )
    caps = Caps(store, TierBook.load(ROOT / "ingest" / "tiers.example.yaml"), refresh_seconds=None)
    snapshots = Snapshots(caps, store, every_seconds=None)
    record_tier_caps(store, caps.book, source="tiers.example.yaml", now_ms=now_ms)

    print(f"load average {os.getloadavg()[0]:.1f} before the snapshots")
    t0 = time.perf_counter()
    rows = snapshots.take()
    first = time.perf_counter() - t0
    print(f"first   {first * 1000:8.0f} ms  ({rows:,} rows; nobody loaded before)", flush=True)
    warm = []
    for _ in range(args.snapshots):
        time.sleep(0.01)  # a new taken_at
        t0 = time.perf_counter()
        rows = snapshots.take()
        warm.append(time.perf_counter() - t0)
    print(f"warm    p50 {statistics.median(warm) * 1000:6.0f} ms  max {max(warm) * 1000:6.0f} ms  "
          f"({rows:,} rows each, {args.snapshots} snapshots)", flush=True)
    phases: dict[str, list[float]] = {"users query": [], "ledger load": [], "usage per user": [], "insert": []}
    for _ in range(args.snapshots):
        now = caps.clock()
        marks = [time.perf_counter()]
        users_now = snapshots.active_users(now)
        marks.append(time.perf_counter())
        caps.preload(background=False, users=users_now)
        marks.append(time.perf_counter())
        taken_at = datetime.fromtimestamp(now // 1000, UTC).replace(microsecond=now % 1000 * 1000)
        rows_now = []
        for user in users_now:
            _, plan, windows = caps.usage(user, now)
            rows_now.extend(status_rows(user, plan.tier, plan.timezone, windows, taken_at))
        marks.append(time.perf_counter())
        store.insert_rows("cap_status", CAP_STATUS_COLUMNS, rows_now)
        marks.append(time.perf_counter())
        for name, a, b in zip(phases, marks, marks[1:]):
            phases[name].append(b - a)
    print("phases  " + ", ".join(f"{name} {statistics.median(v) * 1000:.0f} ms" for name, v in phases.items())
          + f" (p50 of {args.snapshots}; {len(users_now):,} users)", flush=True)
    stored = store.query("SELECT count(), uniqExact(user_id) FROM bench.cap_status").rows[0]
    latest = store.query("SELECT count(), uniqExact(user_id) FROM bench.cap_status_latest").rows[0]
    print(f"cap_status: {stored[0]:,} rows stored (before merges), latest snapshot {latest[0]:,} rows "
          f"for {latest[1]:,} users")

    dashboard = json.loads((ROOT / "grafana" / "dashboards" / "budgets.json").read_text())
    end = datetime.now(UTC)
    base = QueryContext(end - timedelta(days=30), end, timedelta(hours=1))
    variables = {v["name"]: Variable(v["name"], ["$__all"], multi=True, include_all=True)
                 for v in dashboard["templating"]["list"]}
    ctx = QueryContext(base.time_from, base.time_to, base.interval, variables)
    queries = [(f"variable ${v['name']}", expand(v["query"], base)) for v in dashboard["templating"]["list"]]
    queries += [(p["title"], expand(t["rawSql"], ctx)) for p in dashboard["panels"] for t in p.get("targets", [])]
    # As the data source connects: the database is its default, queries name tables unqualified.
    client = clickhouse_connect.get_client(dsn=f"chdb://{tmp}/chdb", database="bench")
    print(f"load average {os.getloadavg()[0]:.1f} before the panels")
    print(f"{'panel':<45} {'rows':>6} {'p50 ms':>8} {'max ms':>8}")
    worst = 0.0
    for title, sql in queries:
        result = client.query(sql, settings={"readonly": 1})
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            client.query(sql, settings={"readonly": 1})
            times.append((time.perf_counter() - t0) * 1000)
        worst = max(worst, max(times))
        print(f"{title:<45} {len(result.result_rows):>6} {statistics.median(times):8.1f} {max(times):8.1f}")
    print(f"load average {os.getloadavg()[0]:.1f} at the end; slowest panel run {worst:.0f} ms")
    print(f"snapshot target (<= 5 s): first {'met' if first <= 5 else 'MISSED'}, "
          f"warm {'met' if max(warm) <= 5 else 'MISSED'}; panels (<= 1 s): {'met' if worst <= 1000 else 'MISSED'}")


if __name__ == "__main__":
    main()
