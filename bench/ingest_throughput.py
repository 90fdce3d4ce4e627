"""End-to-end OTLP/HTTP ingest against its ceiling, ack latency at a fixed load, and memory.

    .venv/bin/python bench/ingest_throughput.py                 # ~4 minutes, prints a report
    .venv/bin/python bench/ingest_throughput.py --json out.json --seconds 60

Three phases, one run, each on a store of its own (chDB: one process per path):
1. ceiling: the same usage rows the ingest produces from the same exports (decoded, normalized and
   priced beforehand, untimed) inserted straight into a fresh store with the migrations applied,
   each batch into usage_events and into the rollups' feed (whose materialized views fill the
   rollups), in batches of `batch_max_rows`, by a process of its own. Two
   figures: the engine alone (pre-built Arrow IPC through clickhouse-connect's raw insert) and the
   store's `insert_usage` (building the Arrow columns from records, then the same insert).
2. throughput: a real `spanmeter serve` subprocess; `--connections` keep-alive connections post
   exports of `--spans` spans (protobuf, bench/workload.py) as fast as they are acknowledged; a 200
   means the rows are committed (group commit). Counted over a window after a warm-up: spans and
   usage rows acknowledged per second, the server's CPU (all its threads, chDB's included) and so
   spans per CPU-second ("per core"), the server's RSS over time. Then the committed rows are
   counted through `/v1/sql` and must equal the usage rows acknowledged.
3. latency: a fresh `spanmeter serve`; exports of `--latency-spans` spans sent open-loop at a fixed
   `--rate` spans/s (each on its schedule, whatever the answers); latency is answer time minus
   scheduled send time, so client-side queueing counts against it.

The machine is shared: the report gives the load average and the CPU other processes used during
each phase, since a wall-clock rate on 2 cores falls when anything else runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.workload import ExportTemplates  # noqa: E402

SPANMETER = Path(sys.executable).parent / "spanmeter"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- processes and the machine ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    """pid and every process under it (the server's decode workers and their helper)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def _one_cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime, every thread


def proc_cpu_seconds(pid: int) -> float:
    """CPU seconds of the server: its process and its worker processes, every thread."""
    return sum(_one_cpu_seconds(p) for p in _descendants(pid))


def proc_cpu_split(pid: int) -> tuple[float, float]:
    """(the serving process, its workers) CPU seconds."""
    main = _one_cpu_seconds(pid)
    return main, sum(_one_cpu_seconds(p) for p in _descendants(pid) if p != pid)


def proc_memory(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM summed over the server's processes."""
    out = {"VmRSS": 0, "VmHWM": 0}
    for p in _descendants(pid):
        try:
            text = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value = line.split(":", 1)
                out[name] += int(value.split()[0]) * 1024
    return out


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(x) for x in parts]
    idle = ticks[3] + ticks[4]
    return (sum(ticks[:8]) - idle) / CLK_TCK


def self_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Server:
    """`spanmeter serve` on a fresh embedded store of its own."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = workdir / "serve.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("SPANMETER_")}
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [str(SPANMETER), "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--dsn", f"chdb://{workdir / 'chdb'}", "--log-level", "warning"],
            env=full_env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, cwd=str(workdir),
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"spanmeter serve exited: {self.log.read_text()[-2000:]}")
            try:
                status, _ = asyncio.run(_get(self.port, "/readyz"))
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("spanmeter serve not ready")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_for_rollups(self, timeout: float = 60.0) -> float:
        """Seconds until every committed row is in the rollups too (they trail usage_events by up to
        SPANMETER_ROLLUP_DELAY_MS); `timeout` if they never are."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            status, body = asyncio.run(_get(self.port, "/metrics"))
            if status == 200 and b"\nspanmeter_rollup_owed_rows 0.0" in body:
                break
            time.sleep(0.02)
        return time.monotonic() - started

    def sql(self, query: str) -> list:
        status, body = asyncio.run(_request(self.port, "/v1/sql", json.dumps({"query": query}).encode(), "application/json"))
        if status != 200:
            raise RuntimeError(f"/v1/sql {status}: {body[:500]!r}")
        return json.loads(body)["rows"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- a small HTTP/1.1 client: keep-alive, no parsing beyond what is needed ----------------------


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        return cls(reader, writer)

    async def post(self, path: str, body: bytes, content_type: str = "application/x-protobuf") -> tuple[int, bytes]:
        head = (f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.writer.write(head + body)
        await self.writer.drain()
        return await self._response()

    async def get(self, path: str) -> tuple[int, bytes]:
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        await self.writer.drain()
        return await self._response()

    async def _response(self) -> tuple[int, bytes]:
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            if line.lower().startswith("content-length:"):
                length = int(line.split(":", 1)[1])
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    def close(self) -> None:
        self.writer.close()


async def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = await Connection.open(port)
    try:
        return await conn.get(path)
    finally:
        conn.close()


async def _request(port: int, path: str, body: bytes, content_type: str) -> tuple[int, bytes]:
    conn = await Connection.open(port)
    try:
        return await conn.post(path, body, content_type)
    finally:
        conn.close()


# --- phase 1: the ceiling ---------------------------------------------------------------------


def ceiling_worker(args: argparse.Namespace) -> None:
    """Run in a subprocess: print one JSON line with the raw insert rates."""
    import pyarrow as pa

    from spanmeter.ingest.decode import decode
    from spanmeter.ingest.migrate import migrate
    from spanmeter.ingest.normalize import normalize
    from spanmeter.ingest.price import PriceBook
    from spanmeter.ingest.store import Store, usage_arrow

    templates = ExportTemplates.build(count=args.templates, spans_per_export=args.spans, seed=args.seed)
    book = PriceBook.from_files(None)
    records = []
    i = 0
    while len(records) < args.batch_rows * args.batches:
        result = normalize(decode(templates.body(i), "application/x-protobuf"))
        for record in result.records:
            book.price(record)
        records.extend(result.records)
        i += 1
    batches = [records[k * args.batch_rows:(k + 1) * args.batch_rows] for k in range(args.batches)]
    store = Store.connect(f"chdb://{args.ceiling_dir}")
    migrate(store)
    ipc = []
    for batch in batches:
        sink = pa.BufferOutputStream()
        table = usage_arrow(batch)
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        ipc.append((table.column_names, sink.getvalue().to_pybytes()))
    # Warm the engine (first insert creates parts' directories, loads code paths).
    def raw(k):
        # usage_events, then the same rows into the rollups' feed (0021), whose views fill the rollups
        for target in (store.usage_table, store.rollup_feed):
            store.client.raw_insert(target, ipc[k][0], ipc[k][1], fmt="Arrow", settings={"async_insert": 0})

    raw(0)
    out = {"rows_per_batch": args.batch_rows, "batches": args.batches}
    for label, run in (
        ("engine", lambda b, k: raw(k)),
        ("insert_usage", lambda b, k: store.insert_usage(b)),
    ):
        busy0, cpu0, t0 = machine_busy_seconds(), self_cpu_seconds(), time.perf_counter()
        for k, batch in enumerate(batches):
            run(batch, k)
        wall = time.perf_counter() - t0
        cpu, busy = self_cpu_seconds() - cpu0, machine_busy_seconds() - busy0
        rows = sum(len(b) for b in batches)
        out[label] = {"rows": rows, "seconds": wall, "rows_per_s": rows / wall, "cpu_seconds": cpu,
                      "rows_per_cpu_s": rows / cpu, "others_cpu_seconds": max(busy - cpu, 0.0)}
    store.close()
    print(json.dumps(out))


def run_ceiling(args: argparse.Namespace, workdir: Path) -> dict:
    cmd = [sys.executable, __file__, "--ceiling-worker", "--ceiling-dir", str(workdir / "ceiling"),
           "--batch-rows", str(args.batch_rows), "--batches", str(args.batches), "--spans", str(args.spans),
           "--templates", str(args.templates), "--seed", str(args.seed)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- phase 2: throughput ----------------------------------------------------------------------


async def _closed_loop(port: int, templates: ExportTemplates, connections: int, warmup: float,
                       seconds: float, pid: int) -> dict:
    conns = [await Connection.open(port) for _ in range(connections)]
    counter = iter(range(1 << 62))
    state = {"measuring": False, "stop": False, "spans": 0, "rows": 0, "requests": 0, "errors": {},
             "acked_rows_total": 0, "latencies": []}
    rss: list[tuple[float, int]] = []

    async def worker(conn: Connection) -> None:
        while not state["stop"]:
            i = next(counter)
            export = templates.exports[i % len(templates.exports)]
            body = templates.body(i)
            started = time.perf_counter()
            status, _ = await conn.post("/v1/traces", body)
            if status == 200:
                state["acked_rows_total"] += export.usage_spans
                if state["measuring"]:
                    state["spans"] += export.spans
                    state["rows"] += export.usage_spans
                    state["requests"] += 1
                    state["latencies"].append(time.perf_counter() - started)
            else:
                state["errors"][status] = state["errors"].get(status, 0) + 1
                await asyncio.sleep(0.05)

    async def sampler(t0: float) -> None:
        while not state["stop"]:
            rss.append((time.perf_counter() - t0, proc_memory(pid)["VmRSS"]))
            await asyncio.sleep(1.0)

    t0 = time.perf_counter()
    tasks = [asyncio.create_task(worker(c)) for c in conns] + [asyncio.create_task(sampler(t0))]
    await asyncio.sleep(warmup)
    state["measuring"] = True
    busy0, split0, cli0, m0 = machine_busy_seconds(), proc_cpu_split(pid), self_cpu_seconds(), time.perf_counter()
    load0 = os.getloadavg()[0]
    await asyncio.sleep(seconds)
    state["measuring"] = False
    wall = time.perf_counter() - m0
    split1, cli, busy = proc_cpu_split(pid), self_cpu_seconds() - cli0, machine_busy_seconds() - busy0
    main_cpu, workers_cpu = split1[0] - split0[0], split1[1] - split0[1]
    srv = main_cpu + workers_cpu
    load1 = os.getloadavg()[0]
    state["stop"] = True
    await asyncio.gather(*tasks, return_exceptions=True)
    for c in conns:
        c.close()
    lat = sorted(state["latencies"])
    return {
        "window_seconds": wall, "requests": state["requests"], "spans": state["spans"], "rows": state["rows"],
        "spans_per_s": state["spans"] / wall, "rows_per_s": state["rows"] / wall,
        "server_cpu_seconds": srv, "server_cores_busy": srv / wall,
        "server_main_cpu_seconds": main_cpu, "server_workers_cpu_seconds": workers_cpu,
        "spans_per_server_cpu_s": state["spans"] / srv if srv else None,
        "client_cpu_seconds": cli, "others_cpu_seconds": max(busy - srv - cli, 0.0),
        "loadavg_1m": [load0, load1], "errors": state["errors"],
        "request_latency_p50_ms": _pct(lat, 50) * 1000 if lat else None,
        "request_latency_p99_ms": _pct(lat, 99) * 1000 if lat else None,
        "rss_timeline": [(round(t, 1), r) for t, r in rss], "acked_rows_total": state["acked_rows_total"],
    }


def _server_env(args: argparse.Namespace) -> dict[str, str]:
    return dict(item.split("=", 1) for item in args.server_env)


def run_throughput(args: argparse.Namespace, workdir: Path, templates: ExportTemplates) -> dict:
    server = Server(workdir / "throughput", _server_env(args))
    try:
        out = asyncio.run(_closed_loop(server.port, templates, args.connections, args.warmup, args.seconds, server.pid))
        out["server_memory"] = proc_memory(server.pid)
        committed = server.sql("SELECT count() FROM spanmeter.usage_events")[0][0]
        out["rollups_caught_up_seconds"] = server.wait_for_rollups()
        rollup = server.sql("SELECT sum(requests) FROM spanmeter.usage_hourly")[0][0]
        out["committed_rows"] = committed
        out["rollup_requests"] = int(rollup)
        out["committed_equals_acked"] = committed == out["acked_rows_total"] == int(rollup)
    finally:
        server.stop()
    return out


# --- phase 3: latency at a fixed offered load ---------------------------------------------------


async def _open_loop(port: int, templates: ExportTemplates, rate: float, warmup: float, seconds: float,
                     pid: int, pool: int) -> dict:
    spans = templates.exports[0].spans
    interval = spans / rate
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(pool):
        idle.put_nowait(await Connection.open(port))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    pending: set[asyncio.Task] = set()
    t0 = time.perf_counter()
    total = int((warmup + seconds) / interval)

    async def one(i: int, scheduled: float) -> None:
        body = templates.body(i)
        conn = await idle.get()
        try:
            try:
                status, _ = await conn.post("/v1/traces", body)
            except (asyncio.IncompleteReadError, ConnectionError):
                # The server closes a keep-alive connection left idle (uvicorn: after 5 s), which
                # happens at low rates; that request was never read: send it on a new connection.
                conn.close()
                conn = await Connection.open(port)
                status, _ = await conn.post("/v1/traces", body)
        finally:
            idle.put_nowait(conn)
        done = time.perf_counter()
        statuses[status] = statuses.get(status, 0) + 1
        if scheduled - t0 >= warmup and status == 200:  # an acknowledgement: committed
            latencies.append(done - scheduled)

    busy0 = srv0 = m0 = None
    for i in range(total):
        scheduled = t0 + i * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if busy0 is None and scheduled - t0 >= warmup:
            busy0, srv0, m0 = machine_busy_seconds(), proc_cpu_seconds(pid), time.perf_counter()
        task = asyncio.create_task(one(i, scheduled))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    wall = time.perf_counter() - m0
    srv, busy = proc_cpu_seconds(pid) - srv0, machine_busy_seconds() - busy0
    while not idle.empty():
        idle.get_nowait().close()
    lat = sorted(latencies)
    return {
        "offered_spans_per_s": rate, "spans_per_request": spans, "requests_measured": len(lat),
        "p50_ms": _pct(lat, 50) * 1000, "p90_ms": _pct(lat, 90) * 1000, "p99_ms": _pct(lat, 99) * 1000,
        "max_ms": lat[-1] * 1000, "statuses": statuses, "server_cores_busy": srv / wall,
        "others_cpu_seconds": max(busy - srv, 0.0), "loadavg_1m": os.getloadavg()[0],
    }


def run_latency(args: argparse.Namespace, workdir: Path) -> dict:
    templates = ExportTemplates.build(count=args.templates, spans_per_export=args.latency_spans, seed=args.seed + 1)
    server = Server(workdir / "latency", _server_env(args))
    try:
        return asyncio.run(_open_loop(server.port, templates, args.rate, args.warmup, args.latency_seconds,
                                      server.pid, pool=64))
    finally:
        server.stop()


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


# --- report -----------------------------------------------------------------------------------


def report(r: dict) -> str:
    c, t, lt = r["ceiling"], r["throughput"], r["latency"]
    mib = 1 << 20
    rss = t["rss_timeline"]
    quarters = [rss[min(len(rss) - 1, int(len(rss) * q))][1] // mib for q in (0.25, 0.5, 0.75)] + [rss[-1][1] // mib]
    lines = [
        f"machine: {os.cpu_count()} cores; load average (1 min) during throughput {t['loadavg_1m'][0]:.1f} -> {t['loadavg_1m'][1]:.1f}",
        "",
        "ceiling (same rows, fresh store with the materialized views, batches of "
        f"{c['rows_per_batch']:,} rows, {c['batches']} batches):",
        f"  engine only (pre-built Arrow, raw insert): {c['engine']['rows_per_s']:>10,.0f} rows/s"
        f"  ({c['engine']['rows_per_cpu_s']:,.0f} rows per CPU-s)",
        f"  store.insert_usage (Arrow built from records): {c['insert_usage']['rows_per_s']:>6,.0f} rows/s"
        f"  ({c['insert_usage']['rows_per_cpu_s']:,.0f} rows per CPU-s)",
        "",
        f"end to end ({r['args']['connections']} connections, exports of {r['args']['spans']} spans, "
        f"{t['window_seconds']:.0f} s window after {r['args']['warmup']:.0f} s warm-up):",
        f"  {t['spans_per_s']:>10,.0f} spans/s acknowledged ({t['rows_per_s']:,.0f} usage rows/s committed)",
        f"  server CPU {t['server_cores_busy']:.2f} cores (serving process {t['server_main_cpu_seconds'] / t['window_seconds']:.2f},"
        f" decode workers {t['server_workers_cpu_seconds'] / t['window_seconds']:.2f})"
        f" -> {t['spans_per_server_cpu_s']:,.0f} spans per CPU-second",
        f"  = {t['rows_per_s'] / c['engine']['rows_per_s']:.2f}x the engine-only rate, "
        f"{t['rows_per_s'] / c['insert_usage']['rows_per_s']:.2f}x the insert_usage rate",
        f"  request latency under saturation: p50 {t['request_latency_p50_ms']:.0f} ms, p99 {t['request_latency_p99_ms']:.0f} ms",
        f"  client CPU {t['client_cpu_seconds']:.1f} s, other processes {t['others_cpu_seconds']:.1f} CPU-s in the window",
        f"  committed rows {t['committed_rows']:,} = acknowledged {t['acked_rows_total']:,} = rollup requests "
        f"{t['rollup_requests']:,} (rollups caught up {t['rollups_caught_up_seconds']:.2f} s after the window): "
        f"{t['committed_equals_acked']}; errors {t['errors'] or 'none'}",
        f"  server RSS MiB at 25/50/75/100% of the run: {quarters}; peak (VmHWM) {t['server_memory']['VmHWM'] // mib} MiB",
        "",
        f"ack latency at {lt['offered_spans_per_s']:,.0f} spans/s offered (open loop, {lt['spans_per_request']} spans "
        f"per request, latency of the {lt['requests_measured']} acknowledged):",
        f"  p50 {lt['p50_ms']:.0f} ms, p90 {lt['p90_ms']:.0f} ms, p99 {lt['p99_ms']:.0f} ms, max {lt['max_ms']:.0f} ms;"
        f" statuses {lt['statuses']}; server CPU {lt['server_cores_busy']:.2f} cores; load {lt['loadavg_1m']:.1f}",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="throughput window")
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--spans", type=int, default=1000, help="spans per export (throughput)")
    p.add_argument("--templates", type=int, default=32, help="distinct pre-encoded exports")
    p.add_argument("--rate", type=float, default=20_000.0, help="offered spans/s (latency)")
    p.add_argument("--latency-spans", type=int, default=500, help="spans per export (latency)")
    p.add_argument("--latency-seconds", type=float, default=30.0)
    p.add_argument("--batch-rows", type=int, default=50_000, help="ceiling batch size (the writer's batch_max_rows)")
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--skip", action="append", default=[], choices=["ceiling", "throughput", "latency"])
    p.add_argument("--server-env", action="append", default=[], metavar="SPANMETER_X=V",
                   help="setting for the served process, e.g. SPANMETER_DEDUPE_KEYS=200000")
    p.add_argument("--json", type=Path)
    p.add_argument("--ceiling-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ceiling-dir", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.ceiling_worker:
        ceiling_worker(args)
        return
    workdir = Path(tempfile.mkdtemp(prefix="spanmeter-bench-"))
    try:
        result: dict = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
        templates = ExportTemplates.build(count=args.templates, spans_per_export=args.spans, seed=args.seed)
        result["workload"] = {
            "spans_per_export": args.spans,
            "usage_rows_per_export": sum(e.usage_spans for e in templates.exports) / len(templates.exports),
            "bytes_per_export": sum(len(e.body) for e in templates.exports) / len(templates.exports),
        }
        if "ceiling" not in args.skip:
            result["ceiling"] = run_ceiling(args, workdir)
            print("ceiling:", json.dumps(result["ceiling"]), file=sys.stderr)
        if "throughput" not in args.skip:
            result["throughput"] = run_throughput(args, workdir, templates)
            print("throughput:", json.dumps({k: v for k, v in result["throughput"].items() if k != "rss_timeline"}),
                  file=sys.stderr)
        if "latency" not in args.skip:
            result["latency"] = run_latency(args, workdir)
            print("latency:", json.dumps(result["latency"]), file=sys.stderr)
        if not args.skip:
            print(report(result))
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
