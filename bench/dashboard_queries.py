"""Latency of every Grafana panel's query on a store of 10M usage events.

    .venv/bin/python bench/storage_bytes.py --keep /tmp/sm10m        # builds the 10M-event store
    .venv/bin/python bench/dashboard_queries.py --store /tmp/sm10m --json out.json

Every target of every dashboard in grafana/dashboards/*.json is expanded exactly as Grafana and
the ClickHouse data source expand it (tests/support/grafana_macros.py): the dashboard's default
time range (last 30 days, the whole data set), `$__interval` of 1 hour (what Grafana picks for 30
days on a ~700-point-wide panel), multi-value variables on All, the user-detail dashboard on its
first `user` option (the biggest spender: the heaviest per-user queries). Template-variable
queries run too. Each query runs once to warm up, then `--runs` times, read-only, through
clickhouse-connect on the embedded engine (Grafana reaches a ClickHouse server the same way over
HTTP; that hop is not in these figures). Reported: p50, p95 and max per panel, and the load average
before and after (the figures move with it). `--panel TITLE` measures only the panels so titled.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.grafana_macros import QueryContext, Variable, expand  # noqa: E402

INTERVAL = timedelta(hours=1)


def _time_range(dashboard: dict, now: datetime) -> tuple[datetime, datetime]:
    span = dashboard.get("time", {}).get("from", "now-30d")
    if not span.startswith("now-") or span[-1] not in "dhm":
        raise ValueError(f"unsupported dashboard time range {span!r}")
    amount, unit = int(span[4:-1]), span[-1]
    delta = {"d": timedelta(days=amount), "h": timedelta(hours=amount), "m": timedelta(minutes=amount)}[unit]
    return now - delta, now


def _context(client, dashboard: dict, now: datetime, timings: list) -> QueryContext:
    start, end = _time_range(dashboard, now)
    base = QueryContext(start, end, INTERVAL)
    variables: dict[str, Variable] = {}
    for v in dashboard.get("templating", {}).get("list", []):
        if v["type"] == "constant":
            variables[v["name"]] = Variable(v["name"], v["query"])
            continue
        sql = expand(v["query"], base)
        entry = {"dashboard": dashboard["title"], "panel": f"variable ${v['name']}"}
        t0 = time.perf_counter()
        try:
            rows = client.query(sql, settings={"readonly": 1}).result_rows
        except Exception as exc:  # noqa: BLE001 - report the variable, keep measuring the panels
            entry["error"] = str(exc).splitlines()[0][:300]
            rows = []
        entry["first_ms"] = (time.perf_counter() - t0) * 1000
        timings.append(entry)
        options = tuple(str(r[0]) for r in rows)
        if v.get("includeAll"):
            current = ["$__all"] if v.get("multi") else "$__all"
        else:
            current = options[0] if options else ""
        variables[v["name"]] = Variable(v["name"], current, options=options, multi=v.get("multi", False),
                                        include_all=v.get("includeAll", False))
    return replace(base, variables=variables)


def run(store_path: Path, runs: int, database: str = "spanmeter", only: list[str] | None = None,
        panels_only: list[str] | None = None) -> dict:
    import clickhouse_connect

    load_before = os.getloadavg()[0]

    client = clickhouse_connect.get_client(dsn=f"chdb://{store_path}", database=database)
    events = client.query("SELECT count() FROM usage_events").result_rows[0][0]
    newest = client.query("SELECT max(event_time) FROM usage_events").result_rows[0][0]
    now = newest.replace(tzinfo=UTC) if newest.tzinfo is None else newest
    now = now + timedelta(minutes=1)
    panels = []
    variable_timings: list = []
    for path in sorted((REPO / "grafana" / "dashboards").glob("*.json")):
        if only and path.stem not in only:
            continue
        dashboard = json.loads(path.read_text())
        ctx = _context(client, dashboard, now, variable_timings)
        for panel in dashboard.get("panels", []):
            if panels_only and panel.get("title") not in panels_only:
                continue
            for target in panel.get("targets", []):
                raw = target.get("rawSql")
                if not raw:
                    continue
                sql = expand(raw, ctx)
                entry = {"dashboard": dashboard["title"], "panel": panel.get("title", ""), "ref": target.get("refId", "")}
                try:
                    client.query(sql, settings={"readonly": 1})  # warm-up
                    times = []
                    for _ in range(runs):
                        t0 = time.perf_counter()
                        result = client.query(sql, settings={"readonly": 1})
                        times.append((time.perf_counter() - t0) * 1000)
                    times.sort()
                    entry.update(rows=len(result.result_rows), p50_ms=statistics.median(times),
                                 p95_ms=times[min(len(times) - 1, round(0.95 * (len(times) - 1)))], max_ms=times[-1])
                except Exception as exc:  # noqa: BLE001 - report the panel, keep measuring the others
                    entry["error"] = str(exc).splitlines()[0][:300]
                panels.append(entry)
    client.close()
    ok = [p for p in panels if "error" not in p]
    return {
        "events": events, "runs": runs, "interval": str(INTERVAL), "panels": panels,
        "loadavg_1m": [load_before, os.getloadavg()[0]],
        "variables": variable_timings,
        "worst_p95_ms": max((p["p95_ms"] for p in ok), default=None),
        "panels_over_50ms": [f"{p['dashboard']} / {p['panel']}" for p in ok if p["p95_ms"] > 50],
        "errors": [f"{p['dashboard']} / {p['panel']}: {p['error']}" for p in panels if "error" in p],
    }


def report(r: dict) -> str:
    lines = [f"{len(r['panels'])} panel queries on {r['events']:,} events, {r['runs']} runs each "
             f"(p50 / p95 / max ms):"]
    for p in sorted(r["panels"], key=lambda p: -p.get("p95_ms", 1e9)):
        if "error" in p:
            lines.append(f"  {p['dashboard'][:18]:18s} {p['panel'][:42]:42s} ERROR {p['error'][:80]}")
        else:
            lines.append(f"  {p['dashboard'][:18]:18s} {p['panel'][:42]:42s} {p['p50_ms']:7.1f} {p['p95_ms']:7.1f} {p['max_ms']:7.1f}")
    for v in r["variables"]:
        shown = f"ERROR {v['error'][:80]}" if "error" in v else f"{v['first_ms']:7.1f} (one run, cold)"
        lines.append(f"  {v['dashboard'][:18]:18s} {v['panel'][:42]:42s} {shown}")
    lines.append(f"worst p95: {r['worst_p95_ms']:.1f} ms; panels over 50 ms: {r['panels_over_50ms'] or 'none'}")
    lines.append(f"load average {r['loadavg_1m'][0]:.1f} before, {r['loadavg_1m'][1]:.1f} after ({os.cpu_count()} cores)")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--store", type=Path, required=True, help="embedded store built by storage_bytes.py --keep")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--dashboard", action="append", metavar="NAME",
                   help="only this dashboard (file name without .json, e.g. cost-overview); repeatable")
    p.add_argument("--panel", action="append", metavar="TITLE",
                   help='only the panels with this title (e.g. "Heavy users"); repeatable')
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    result = run(args.store, args.runs, only=args.dashboard, panels_only=args.panel)
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
