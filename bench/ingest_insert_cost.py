"""The engine's cost of one usage batch insert by batch size: what the writer pays per row.

    .venv/bin/python bench/ingest_insert_cost.py                      # batches of 3,500 / 7,000 / 30,000 rows
    .venv/bin/python bench/ingest_insert_cost.py --rows 7000 --drop-view usage_user_hourly_mv

Usage rows of bench/workload.py exports (decoded, normalized, priced beforehand) are inserted
into a fresh embedded store with every migration applied, as the writer inserts them (Arrow,
the store's insert settings, a fresh deduplication token per batch). Printed per row: wall time,
the calling thread's CPU (the writer thread pays this), the process's CPU during the inserts and
after 3 s more (background merges). `--drop-view` drops a materialized view first, to see what
one costs. The machine is shared: the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.workload import ExportTemplates  # noqa: E402


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(rows: int, batches: int, drop: list[str]) -> str:
    from spanmeter.ingest.decode import decode
    from spanmeter.ingest.migrate import migrate
    from spanmeter.ingest.normalize import normalize
    from spanmeter.ingest.price import PriceBook
    from spanmeter.ingest.store import _INSERT_SETTINGS, Store, usage_arrow

    templates = ExportTemplates.build(count=16, spans_per_export=1000, seed=1)
    book = PriceBook.from_files(None)
    records, i = [], 0
    while len(records) < rows * batches:
        result = normalize(decode(templates.body(i), "application/x-protobuf"))
        i += 1
        for record in result.records:
            book.price(record)
        records.extend(result.records)
    tables = [usage_arrow(records[k * rows:(k + 1) * rows]) for k in range(batches)]
    with tempfile.TemporaryDirectory(prefix="spanmeter-insert-") as workdir:
        store = Store.connect(f"chdb://{workdir}/chdb")
        migrate(store)
        for view in drop:
            store.command(f"DROP VIEW IF EXISTS {store.database}.{view}")
        store.insert_usage_arrow(tables[0], uuid.uuid4().hex)  # warm-up
        cpu0, thread0, wall0 = _cpu(), time.thread_time(), time.perf_counter()
        for table in tables[1:]:
            store.insert_usage_arrow(table, uuid.uuid4().hex)
        wall, thread, cpu = time.perf_counter() - wall0, time.thread_time() - thread0, _cpu() - cpu0
        time.sleep(3)
        settled = _cpu() - cpu0
        store.close()
    n = rows * (batches - 1)
    assert _INSERT_SETTINGS  # the same settings as the writer's inserts
    return (f"{rows:>6,} rows per insert: wall {wall / n * 1e6:5.1f} µs/row ({wall / (batches - 1) * 1000:4.0f} ms an insert),"
            f" calling thread {thread / n * 1e6:5.1f}, process {cpu / n * 1e6:5.1f}, +3 s of merges"
            f" {settled / n * 1e6:5.1f} µs/row; load {os.getloadavg()[0]:.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, action="append", help="rows per insert (repeatable)")
    p.add_argument("--inserts", type=int, default=0, help="inserts per size (default: ~200k rows' worth, 6-40)")
    p.add_argument("--drop-view", action="append", default=[], metavar="NAME")
    args = p.parse_args()
    for rows in args.rows or [3500, 7000, 30000]:
        batches = args.inserts or max(6, min(40, 200_000 // rows))
        print(run(rows, batches, args.drop_view), flush=True)


if __name__ == "__main__":
    main()
