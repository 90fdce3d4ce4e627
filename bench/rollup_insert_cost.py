"""What the dashboards' rollups cost each insert: engine CPU per batch with every view of the
migrations, against the same store without the views of migrations 0013-0019 and with 0011's
by-user projection of usage_hourly (which 0016 drops): the schema before them.

    .venv/bin/python bench/rollup_insert_cost.py                      # 8 batches of 50,000, 3 rounds
    .venv/bin/python bench/rollup_insert_cost.py --batch-rows 5000 --batches 40

The rows are the ceiling's of bench/ingest_throughput.py (exports of bench/workload.py decoded,
normalized and priced beforehand, times moved to now), inserted as pre-built Arrow through
clickhouse-connect's raw insert into a fresh embedded store per variant, one process. Variants
alternate round by round so a change in the machine's load hits both; CPU is this process's
(chDB's threads, background merges included). The machine's load average is printed with each.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.workload import ExportTemplates  # noqa: E402

DASHBOARD_VIEWS = ("usage_totals_hourly_mv", "usage_totals_daily_mv", "usage_user_daily_mv", "usage_user_hourly_mv",
                   "usage_users_hourly_mv", "usage_series_hourly_mv")


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def batches(batch_rows: int, count: int) -> list[tuple[list[str], bytes]]:
    import pyarrow as pa

    from spanmeter.ingest.decode import decode
    from spanmeter.ingest.normalize import normalize
    from spanmeter.ingest.price import PriceBook
    from spanmeter.ingest.store import usage_arrow

    templates = ExportTemplates.build(count=32, spans_per_export=1000, seed=1)
    book = PriceBook.from_files(None)
    records: list = []
    i = 0
    while len(records) < batch_rows * count:
        result = normalize(decode(templates.body(i), "application/x-protobuf"))
        for record in result.records:
            book.price(record)
        records.extend(result.records)
        i += 1
    out = []
    for k in range(count):
        table = usage_arrow(records[k * batch_rows:(k + 1) * batch_rows])
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        out.append((table.column_names, sink.getvalue().to_pybytes()))
    return out


def run(variant: str, ipc: list[tuple[list[str], bytes]]) -> float:
    """CPU seconds per insert, the first (warm-up) insert left out."""
    from spanmeter.ingest.migrate import migrate
    from spanmeter.ingest.store import Store

    path = tempfile.mkdtemp(prefix="spanmeter-rollup-cost-")
    store = Store.connect(f"chdb://{path}")
    try:
        migrate(store)
        if variant == "before":
            for view in DASHBOARD_VIEWS:
                store.command(f"DROP VIEW {store.database}.{view}")
            store.command(f"ALTER TABLE {store.database}.usage_hourly ADD PROJECTION by_user "
                          "(SELECT * ORDER BY user_id, hour)")
        def insert(columns, data):
            # usage_events, then the rollups' feed, whose views are the rollups' (0021)
            for target in (store.usage_table, store.rollup_feed):
                store.client.raw_insert(target, columns, data, fmt="Arrow", settings={"async_insert": 0})

        insert(*ipc[0])
        started = cpu_seconds()
        for columns, data in ipc[1:]:
            insert(columns, data)
        return (cpu_seconds() - started) / (len(ipc) - 1)
    finally:
        store.close()
        shutil.rmtree(path, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-rows", type=int, default=50_000)
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    ipc = batches(args.batch_rows, args.batches)
    seen: dict[str, list[float]] = {"before": [], "after": []}
    for r in range(args.rounds):
        for variant in ("before", "after") if r % 2 == 0 else ("after", "before"):
            load = os.getloadavg()[0]
            per_insert = run(variant, ipc)
            seen[variant].append(per_insert)
            print(f"round {r + 1} {variant:6s} {per_insert * 1000:7.1f} ms CPU per insert of {args.batch_rows:,} rows, "
                  f"{args.batch_rows / per_insert / 1000:6.1f}k rows per CPU-second (load {load:.1f})", flush=True)
    before, after = statistics.median(seen["before"]), statistics.median(seen["after"])
    print(f"median: before {before * 1000:.1f} ms, after {after * 1000:.1f} ms per insert: "
          f"{(after / before - 1) * 100:+.0f}% CPU ({args.batch_rows / before / 1000:.0f}k -> "
          f"{args.batch_rows / after / 1000:.0f}k rows per CPU-second)")


if __name__ == "__main__":
    main()
