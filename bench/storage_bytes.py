"""Bytes on disk per usage event, whole and per column, after OPTIMIZE FINAL, on realistic rows.

    .venv/bin/python bench/storage_bytes.py                       # 10M events in a temporary store
    .venv/bin/python bench/storage_bytes.py --rows 2000000 --keep /tmp/sm10m --json out.json

Rows come from bench/workload.py's model (`usage_tables`: random 16-byte trace ids and 8-byte span
ids, 3,000 Zipf-skewed users, hour-long sessions, traces of 1-10 calls, the model mix and token
sizes of the throughput benchmark, exact costs), 30 days of them, inserted in chunks of 500k into
a fresh embedded store with every migration applied, so the rollups fill through their views as
in production. Then every table is merged (OPTIMIZE ... FINAL) and `system.parts` (active parts:
bytes_on_disk, which includes marks, primary index and skip indexes) and `system.columns`
(compressed bytes per column) are read. `--keep DIR` leaves the store for dashboard_queries.py.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.workload import usage_tables  # noqa: E402


def fill(store, rows: int, seed: int, single_call_traces: bool = False) -> float:
    import pyarrow as pa

    started = time.perf_counter()
    for table in usage_tables(rows, seed=seed, single_call_traces=single_call_traces):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        # usage_events, then the same rows into the rollups' feed (0021), as the writer stores them
        for target in (store.usage_table, store.rollup_feed):
            store.client.raw_insert(target, table.column_names, sink.getvalue().to_pybytes(), fmt="Arrow",
                                    settings={"async_insert": 0})
    return time.perf_counter() - started


def measure(store) -> dict:
    db = store.database
    tables = {}
    for name, rows, disk, compressed, uncompressed, parts in store.query(
        "SELECT table, sum(rows), sum(bytes_on_disk), sum(data_compressed_bytes), sum(data_uncompressed_bytes), count() "
        "FROM system.parts WHERE database = {db:String} AND active GROUP BY table ORDER BY table", {"db": db}
    ).rows:
        tables[name] = {"rows": int(rows), "bytes_on_disk": int(disk), "compressed": int(compressed),
                        "uncompressed": int(uncompressed), "parts": int(parts)}
    columns = [
        {"column": c, "type": t, "compressed": int(comp), "uncompressed": int(unc), "codec": codec}
        for c, t, comp, unc, codec in store.query(
            "SELECT name, type, data_compressed_bytes, data_uncompressed_bytes, compression_codec FROM system.columns "
            "WHERE database = {db:String} AND table = 'usage_events' ORDER BY data_compressed_bytes DESC", {"db": db}
        ).rows
    ]
    events = tables["usage_events"]["rows"]
    return {
        "events": events,
        "bytes_per_event": tables["usage_events"]["bytes_on_disk"] / events,
        "compressed_bytes_per_event": tables["usage_events"]["compressed"] / events,
        "rollup_bytes_per_event": sum(v["bytes_on_disk"] for k, v in tables.items() if k in ("usage_hourly", "usage_daily")) / events,
        # every rollup a materialized view fills (the dashboards' ones too)
        "all_rollups_bytes_per_event": sum(v["bytes_on_disk"] for k, v in tables.items()
                                           if k.startswith("usage_") and k != "usage_events") / events,
        "tables": tables,
        "columns": [dict(c, per_event=c["compressed"] / events) for c in columns],
    }


def report(r: dict) -> str:
    t = r["tables"]["usage_events"]
    lines = [
        f"usage_events: {r['events']:,} events, {t['parts']} parts after OPTIMIZE FINAL",
        f"  {r['bytes_per_event']:.1f} bytes/event on disk ({t['bytes_on_disk'] / 2**20:,.1f} MiB), "
        f"{r['compressed_bytes_per_event']:.1f} compressed column data, {t['uncompressed'] / r['events']:.1f} uncompressed",
        f"  rollups (usage_hourly + usage_daily): {r['rollup_bytes_per_event']:.2f} bytes/event; every rollup: "
        f"{r['all_rollups_bytes_per_event']:.2f}",
        "  " + ", ".join(f"{k} {v['rows']:,} rows" for k, v in r["tables"].items() if k.startswith("usage_")),
        "  per column (compressed bytes/event, codec):",
    ]
    for c in r["columns"]:
        lines.append(f"    {c['column']:20s} {c['per_event']:6.2f}  {c['codec'] or 'default (LZ4)'}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--seed", type=int, default=2)
    p.add_argument("--single-call-traces", action="store_true", help="every trace one call (worst case for trace ids)")
    p.add_argument("--keep", type=Path, help="build the store here and leave it (for dashboard_queries.py)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    from spanmeter.ingest.migrate import migrate
    from spanmeter.ingest.price import PriceBook
    from spanmeter.ingest.price_history import record_prices
    from spanmeter.ingest.store import Store

    path = args.keep or Path(tempfile.mkdtemp(prefix="spanmeter-storage-"))
    if args.keep and path.exists():
        shutil.rmtree(path)
    store = Store.connect(f"chdb://{path}")
    try:
        migrate(store)
        # The rates, as the service records them at start: the dashboards' savings panel joins them.
        record_prices(store, PriceBook.from_files(None))
        seconds = fill(store, args.rows, args.seed, args.single_call_traces)
        started = time.perf_counter()
        # Every table merged, the rollups too, as a long-running store's are (dashboard_queries.py reads them).
        for (table,) in store.query("SELECT name FROM system.tables WHERE database = {db:String} "
                                    "AND engine LIKE '%MergeTree' ORDER BY name", {"db": store.database}).rows:
            store.command(f"OPTIMIZE TABLE {store.database}.{table} FINAL")
        result = measure(store)
        result["fill_seconds"] = seconds
        result["single_call_traces"] = args.single_call_traces
        result["optimize_seconds"] = time.perf_counter() - started
        print(report(result))
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))
    finally:
        store.close()
        if not args.keep:
            shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
