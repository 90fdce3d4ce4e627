"""Benchmark: `check` latency with a million usage rows stored (target: p99 <= 10 ms).

    .venv/bin/python bench/caps_check.py                 # 1M rows, 10k users, 20k checks
    .venv/bin/python bench/caps_check.py --rows 200000 --checks 5000   # quicker

Seeds `usage_events` directly through `Store.insert_usage` in a fresh embedded chDB under a
temporary directory, then times:
  cold    the first check of a user in a process that has not preloaded: two point queries on
          the primary key (user_id, event_time, ...) over a bounded look-back;
  preload what `spanmeter serve` does in the background at start: every user active in the
          look-back loaded in grouped passes (2,000 users per query);
  warm    checks after the preload, users drawn with the skew, half of them with an estimated
          cost (which reserves);
  ingest  warm checks while another thread commits 1,000-row batches through the watched store
          every 50 ms, as the writer does (each batch updates the ledgers it touches);
  http    warm checks through the FastAPI app in process (TestClient): routing, auth, JSON.
Beside the warm and ingest checks, a 30 µs busy loop is timed the same way, interleaved: its
tail is what the machine (other processes, the garbage collector) does to any 30 µs task, so a
check's tail above it is the engine's own. Python's collections (they stop every thread) are
counted and their longest pause shown.

The data: 10k users with Zipf(1.1) skew (the top 1% make 65% of the calls, the heaviest 15%:
150k rows), calls spread over the last 35 days so that every window (session, week, month) has
history, log-normal costs around $0.002, 2% of calls unpriced. 10% of users are on
`pro`, the rest on the default `free` tier of ingest/tiers.example.yaml.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from spanmeter.ingest.caps import Caps, TierBook, _WatchedStore  # noqa: E402
from spanmeter.ingest.migrate import migrate  # noqa: E402
from spanmeter.ingest.records import Attribution, TokenUsage, UsageRecord  # noqa: E402
from spanmeter.ingest.store import Store, usage_arrow  # noqa: E402

DAY_MS = 86_400_000


def user_weights(users: int, s: float = 1.1) -> list[float]:
    return [1 / (rank + 1) ** s for rank in range(users)]


def record(n: int, user: str, t_ms: int, rnd: random.Random) -> UsageRecord:
    priced = rnd.random() >= 0.02
    cost = Decimal(round(rnd.lognormvariate(-6.2, 1.0), 9)).quantize(Decimal("1e-9")) if priced else None
    return UsageRecord(
        trace_id=n.to_bytes(16, "big"), span_id=n.to_bytes(8, "big"), event_time_ns=t_ms * 1_000_000,
        service_name="app", provider="openai", operation="chat", request_model="gpt-4o-mini",
        response_model="gpt-4o-mini-2024-07-18", usage=TokenUsage(1500, 300, 0, 250, 0),
        attribution=Attribution(user_id=user), cost_usd=cost,
        pricing_status="priced" if priced else "unknown_model", price_version="bench",
    )


def seed(store: Store, rows: int, users: list[str], weights: list[float], now_ms: int, rnd: random.Random) -> None:
    started = time.perf_counter()
    batch_size = 100_000
    for first in range(0, rows, batch_size):
        count = min(batch_size, rows - first)
        chosen = rnd.choices(users, weights, k=count)
        batch = [record(first + i, u, now_ms - rnd.randrange(35 * DAY_MS), rnd) for i, u in enumerate(chosen)]
        store.insert_usage(batch)
        print(f"  seeded {first + count:>9,} rows  ({time.perf_counter() - started:5.1f} s)", flush=True)


def percentiles(samples_ms: list[float]) -> str:
    samples = sorted(samples_ms)
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return f"n={len(samples):>6,}  p50 {q[49]:7.3f} ms  p99 {q[98]:7.3f} ms  max {samples[-1]:7.3f} ms"


def timed(fn, *args, **kwargs) -> float:
    t = time.perf_counter()
    fn(*args, **kwargs)
    return (time.perf_counter() - t) * 1000


def spin(seconds: float = 30e-6) -> None:
    """A reference task as long as a warm check: what the machine alone does to a tail."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class GcPauses:
    """Python's garbage collector stops every thread: count and time its collections."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append((time.perf_counter() - self._started) * 1000)

    def take(self) -> str:
        pauses, self.pauses = self.pauses, []
        return f"gc: {len(pauses)} collections, longest {max(pauses, default=0):.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--checks", type=int, default=20_000)
    parser.add_argument("--cold", type=int, default=1_000, help="distinct users timed on their first check")
    parser.add_argument("--http", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    rnd = random.Random(args.seed)
    users = [f"user-{i:05d}" for i in range(args.users)]
    weights = user_weights(args.users)
    now_ms = time.time_ns() // 1_000_000
    tmp = tempfile.mkdtemp(prefix="spanmeter-bench-caps-")
    store = Store.connect(f"chdb://{tmp}/chdb", "bench")
    migrate(store)
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"seeding {args.rows:,} rows for {args.users:,} users into {tmp}")
    seed(store, args.rows, users, weights, now_ms, rnd)
    top = store.query("SELECT user_id, count() AS c FROM bench.usage_events GROUP BY user_id ORDER BY c DESC LIMIT 1").rows
    parts = store.query("SELECT count() FROM system.parts WHERE database = 'bench' AND active").rows[0][0]
    print(f"heaviest user {top[0][0]}: {top[0][1]:,} rows; {parts} active parts")

    book = TierBook.load(ROOT / "ingest" / "tiers.example.yaml")
    store.command(
        "INSERT INTO bench.user_tiers (user_id, setting, value, updated_at) "
        "SELECT arrayJoin({users:Array(String)}), 'tier', 'pro', now64(6)",
        {"users": rnd.sample(users, args.users // 10)},
    )

    # cold: first check of each user, users drawn with the skew (the heaviest are in it).
    cold_engine = Caps(store, book, refresh_seconds=None)  # as `serve` on embedded chDB
    cold_users = list(dict.fromkeys(rnd.choices(users, weights, k=args.cold * 3)))[: args.cold]
    cold = [timed(cold_engine.check, u) for u in cold_users]
    print(f"cold    (first check, no preload) {percentiles(cold)}", flush=True)

    # A restart: a fresh engine preloads every active user, then checks follow the skew.
    caps = Caps(store, book, refresh_seconds=None)
    started = time.perf_counter()
    loaded = caps.preload(background=False)
    print(f"preload {loaded:,} users in {time.perf_counter() - started:.1f} s", flush=True)
    picks = rnd.choices(users, weights, k=args.checks)
    estimate = Decimal("0.0005")
    gcs = GcPauses()
    warm, ref = [], []
    for i, u in enumerate(picks):
        warm.append(timed(caps.check, u, estimate if i % 2 else None))
        ref.append(timed(spin))
    print(f"warm    (engine, from memory)     {percentiles(warm)}", flush=True)
    print(f"        reference 30 us task      {percentiles(ref)}  {gcs.take()}", flush=True)

    # ingest: the same while batches land through the watched store (the writer's path).
    watched = _WatchedStore(store, caps)
    stop = threading.Event()
    landed = [0]

    # Batches are built beforehand as the writer's Arrow tables (holding 200k records instead
    # would give the garbage collector 600k extra objects to walk): the thread does what the
    # writer does from there (insert with a deduplication token, ledger updates). The real writer
    # also spends ~1-2 ms of Python per 1,000 rows building each table.
    now = time.time_ns() // 1_000_000
    batches = [usage_arrow([record(args.rows + 1 + b * 1000 + i, u, now + b * 50, rnd)
                            for i, u in enumerate(rnd.choices(users, weights, k=1000))]) for b in range(200)]

    def writer() -> None:
        for table in batches:
            if stop.is_set():
                return
            watched.insert_usage_arrow(table, uuid.uuid4().hex)
            landed[0] += table.num_rows
            stop.wait(0.05)

    thread = threading.Thread(target=writer)
    thread.start()
    busy, ref = [], []
    for i, u in enumerate(rnd.choices(users, weights, k=args.checks)):
        busy.append(timed(caps.check, u, estimate if i % 2 else None))
        ref.append(timed(spin))
        time.sleep(0.001)  # spread the checks over the commits: ~1,000 checks/s
    stop.set()
    thread.join()
    print(f"ingest  (warm, {landed[0]:>7,} rows landed) {percentiles(busy)}", flush=True)
    print(f"        reference 30 us task      {percentiles(ref)}  {gcs.take()}", flush=True)

    # http: the route in process, admin token, JSON body.
    http = []
    if args.http:
        from fastapi.testclient import TestClient
        from pydantic import SecretStr

        from spanmeter.ingest.app import create_app
        from spanmeter.ingest.config import Settings

        settings = Settings(clickhouse_dsn=f"chdb://{tmp}/chdb", database="bench", admin_token=SecretStr("bench"),
                            tiers_file=ROOT / "ingest" / "tiers.example.yaml")
        app = create_app(settings, store=store)
        headers = {"Authorization": "Bearer bench"}
        with TestClient(app) as client:
            app.state.caps.close()  # stop the app's own start-up preload: use the warmed engine
            app.state.caps = caps
            for u in rnd.choices(users, weights, k=200):  # warm the route itself, untimed
                client.post(f"/v1/users/{u}/check", headers=headers, json={})
            time.sleep(1)
            for u in rnd.choices(users, weights, k=args.http):
                http.append(timed(client.post, f"/v1/users/{u}/check", headers=headers,
                                  json={"estimated_cost_usd": "0.0005", "reserve": False}))
        print(f"http    (warm, through FastAPI)   {percentiles(http)}  {gcs.take()}", flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    caps.close()
    cold_engine.close()
    store.close()


if __name__ == "__main__":
    main()
