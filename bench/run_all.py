"""Every benchmark in one run (`make bench`): ingest throughput with its ceiling, ack latency and
memory; storage bytes per event; dashboard query latency on the same 10M-event store.

    .venv/bin/python bench/run_all.py                     # ~15 minutes on 2 cores
    .venv/bin/python bench/run_all.py --quick             # smaller figures, for a smoke test
    .venv/bin/python bench/run_all.py --out bench/results # JSON of every figure, one file per script

Each script also runs on its own; their docstrings say what is measured and how. The machine's
load is printed before and after: a wall-clock rate on 2 cores means little while something else
runs, which is why the throughput figures also come per CPU-second.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def step(title: str, args: list[str]) -> None:
    print(f"\n=== {title}\n$ {' '.join(args)}", flush=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True)
    print(f"({time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.1f})", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="short windows and 1M events instead of 10M")
    p.add_argument("--out", type=Path, help="directory for the JSON results")
    args = p.parse_args()
    out = args.out
    if out:
        out.mkdir(parents=True, exist_ok=True)

    def json_arg(name: str) -> list[str]:
        return ["--json", str(out / name)] if out else []

    print(f"{os.cpu_count()} cores; load average {os.getloadavg()}; python {sys.version.split()[0]}")
    throughput = ["--seconds", "15", "--latency-seconds", "15", "--batches", "3"] if args.quick else []
    step("ingest throughput, ceiling, ack latency, memory",
         [str(BENCH / "ingest_throughput.py"), *throughput, *json_arg("ingest.json")])
    rows = "1000000" if args.quick else "10000000"
    store = Path(tempfile.mkdtemp(prefix="spanmeter-bench-store-"))
    try:
        step("storage bytes per event", [str(BENCH / "storage_bytes.py"), "--rows", rows, "--keep", str(store),
                                         *json_arg("storage.json")])
        step("dashboard query latency", [str(BENCH / "dashboard_queries.py"), "--store", str(store),
                                         *json_arg("dashboards.json")])
    finally:
        shutil.rmtree(store, ignore_errors=True)


if __name__ == "__main__":
    main()
