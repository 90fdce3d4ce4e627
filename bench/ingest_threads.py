"""Where the served process's CPU goes at saturation: per thread and per process, and batch sizes.

    .venv/bin/python bench/ingest_threads.py                       # 20 s window, 8 connections
    .venv/bin/python bench/ingest_threads.py --seconds 30 --server-env SPANMETER_INGEST_WORKERS=0

A real `spanmeter serve` is saturated as in `ingest_throughput.py` (keep-alive connections posting
exports of bench/workload.py as fast as they are acknowledged). CPU time of every thread of the
serving process and of its decode workers is read from /proc before and after the window and
printed in µs per span acknowledged, with the batches the writer made (rows stored / inserts,
from /metrics) and the mean time of one insert. Thread names: the main thread runs the event
loop (HTTP, hand-off from the workers, pricing); the writer thread (chDB names it "Unknown" while
it runs its insert) selects, builds the Arrow batch and runs the engine's insert; MergeMutate
threads are the engine's background merges. The load average is printed: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.ingest_throughput import CLK_TCK, Server, _closed_loop, _descendants, _get  # noqa: E402
from bench.workload import ExportTemplates  # noqa: E402


def threads(pid: int) -> dict[tuple[int, int, str], float]:
    """(process, thread id, name) -> CPU seconds, for the server and its workers."""
    out = {}
    for proc in _descendants(pid):
        for task in Path(f"/proc/{proc}/task").glob("*"):
            try:
                stat = (task / "stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat.rsplit(")", 1)[1].split()
            out[(proc, int(task.name), name)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--spans", type=int, default=1000)
    p.add_argument("--server-env", action="append", default=[], metavar="SPANMETER_X=V")
    args = p.parse_args()
    env = dict(item.split("=", 1) for item in args.server_env)
    templates = ExportTemplates.build(count=32, spans_per_export=args.spans, seed=1)
    with tempfile.TemporaryDirectory(prefix="spanmeter-threads-") as workdir:
        server = Server(Path(workdir), env)
        try:
            async def run():
                task = asyncio.create_task(_closed_loop(server.port, templates, args.connections, args.warmup,
                                                        args.seconds, server.pid))
                await asyncio.sleep(args.warmup)
                _, before_metrics = await _get(server.port, "/metrics")
                before = threads(server.pid)
                result = await task
                after = threads(server.pid)
                _, after_metrics = await _get(server.port, "/metrics")
                return before, after, before_metrics.decode(), after_metrics.decode(), result

            before, after, m0, m1, result = asyncio.run(run())
        finally:
            server.stop()
    spans = result["spans"]
    rows = _metric(m1, "spanmeter_usage_rows_stored_total") - _metric(m0, "spanmeter_usage_rows_stored_total")
    inserts = _metric(m1, "spanmeter_insert_seconds_count") - _metric(m0, "spanmeter_insert_seconds_count")
    insert_s = _metric(m1, "spanmeter_insert_seconds_sum") - _metric(m0, "spanmeter_insert_seconds_sum")
    print(f"load average {result['loadavg_1m'][0]:.1f} -> {result['loadavg_1m'][1]:.1f}; "
          f"{result['spans_per_s']:,.0f} spans/s, {result['spans_per_server_cpu_s']:,.0f} spans per server CPU-second "
          f"({args.connections} connections x {args.spans} spans)")
    if inserts:
        print(f"batches: {rows / inserts:,.0f} rows on average ({inserts:.0f} inserts), one insert {insert_s / inserts * 1000:.0f} ms")
    feeds = _metric(m1, "spanmeter_rollup_feed_seconds_count") - _metric(m0, "spanmeter_rollup_feed_seconds_count")
    feed_s = _metric(m1, "spanmeter_rollup_feed_seconds_sum") - _metric(m0, "spanmeter_rollup_feed_seconds_sum")
    if feeds:
        print(f"rollup feeds: {feeds:.0f} ({rows / feeds:,.0f} rows each on average), one feed {feed_s / feeds * 1000:.0f} ms")
    groups: dict[str, float] = {}
    for key, cpu in after.items():
        proc, tid, name = key
        used = cpu - before.get(key, 0.0)
        if proc != server.pid:
            label = "decode workers (all threads)"
        elif tid == server.pid:
            label = "main thread (event loop)"
        elif used > 0.05 * result["server_cpu_seconds"] and name not in ("MergeMutate",):
            label = f"{name} (tid {tid})"
        else:
            label = f"{name} threads"
        groups[label] = groups.get(label, 0.0) + used
    total = sum(groups.values())
    for label, used in sorted(groups.items(), key=lambda item: -item[1]):
        if used / total < 0.005:
            continue
        print(f"  {label:32s} {used:7.2f} CPU-s {used / total:6.1%} {used / spans * 1e6:7.1f} µs/span")


if __name__ == "__main__":
    main()
