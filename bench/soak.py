"""Soak: minutes of sustained traffic through the collector into a real `spanmeter serve`, with the
ingest SIGKILLed and restarted and ClickHouse unavailable for a while; then every call is counted.

    .venv/bin/python bench/soak.py --minutes 5 --rate 100            # figures in bench/README-soak.md
    .venv/bin/python bench/soak.py --minutes 1 --rate 20 --json out.json

What runs (all on 127.0.0.1):
  load generator (OTel SDK, OTLP/HTTP) -> otelcol-spanmeter (collector/config.yaml, persistent
  queue) -> spanmeter serve (embedded ClickHouse, chDB) -> usage_events + rollups
Each call is a trace of three spans: the app's request span with `user.id`, the GenAI client span
with usage, a database span (dropped by the collector's metering filter).

Faults, on a schedule over the traffic window:
- the ingest is SIGKILLed every `--kill-every` seconds and restarted after `--down` seconds;
- ClickHouse is made unavailable for `--outage` seconds: the store lives on a tmpfs of its own
  and the disk is filled, so every insert fails (NOT_ENOUGH_SPACE, as when a real server's disk
  fills up) and the ingest answers 503 + Retry-After; then the ballast is deleted. Mounting needs
  root; without it the outage is skipped and the report says so.

Reported: calls sent, calls metered (distinct keys, net of cancellations), rows and duplicates,
token totals sent vs stored, per-user agreement, 503/429 answers, and peak memory (VmHWM) of the
ingest (max over its restarts), of the collector and of the load generator. Exit status 1 when
a call was lost or counted twice, in the events or in the daily rollup.

Needs the collector binary (`make collector`): $SPANMETER_COLLECTOR_CACHE/current/otelcol-spanmeter
(default ~/.cache/spanmeter/collector).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOKEN = "soak-ingest-token"
ADMIN = "soak-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


def hwm_kib(pid: int) -> int:
    """Peak resident memory of a live process (VmHWM), KiB; 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Proc:
    """A child process with its log, whose peak memory is sampled while it lives."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path, ready_url: str) -> None:
        self.name, self.argv, self.env, self.log, self.ready_url = name, argv, env, log, ready_url
        self.process: subprocess.Popen | None = None
        self.peak_kib = 0
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with self.log.open("a") as log:
            log.write(f"\n===== start {self.starts} =====\n")
            log.flush()
            self.process = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            cwd=self.log.parent)

        def ready() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.process.returncode}; see {self.log}")
            return http_ok(self.ready_url)

        wait(ready, 90, f"{self.name} to be ready")

    def sample(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.peak_kib = max(self.peak_kib, hwm_kib(self.process.pid))

    def kill(self) -> None:
        self.sample()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        self.sample()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Load(threading.Thread):
    """The instrumented app: `rate` calls per second, each a three-span trace."""

    def __init__(self, endpoint: str, rate: float, users: int = 50) -> None:
        super().__init__(daemon=True)
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        self.provider = TracerProvider(resource=Resource.create({"service.name": "soak-app"}))
        # A long export timeout rides out collector hiccups; the collector itself never drops.
        exporter = OTLPSpanExporter(endpoint=endpoint, timeout=60)
        self.failed_exports = 0
        export = exporter.export

        def counting_export(spans):
            result = export(spans)
            if result.name != "SUCCESS":
                self.failed_exports += 1
            return result

        exporter.export = counting_export
        self.provider.add_span_processor(BatchSpanProcessor(
            exporter, max_queue_size=1_000_000, max_export_batch_size=2048, schedule_delay_millis=200,
        ))
        self.tracer = self.provider.get_tracer("soak")
        self.rate, self.users = rate, users
        self.stopping = threading.Event()
        self.calls = self.input_tokens = self.output_tokens = 0
        self.per_user: Counter = Counter()

    def run(self) -> None:
        from opentelemetry.trace import SpanKind

        started = time.monotonic()
        while not self.stopping.is_set():
            i = self.calls
            user = f"user-{i % self.users}"
            inp, out = 100 + i % 7, 20 + i % 5
            with self.tracer.start_as_current_span(
                "POST /chat", kind=SpanKind.SERVER, attributes={"http.request.method": "POST", "user.id": user},
            ):
                with self.tracer.start_as_current_span("SELECT history", attributes={"db.system.name": "postgresql"}):
                    pass
                with self.tracer.start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT, attributes={
                    "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o-mini", "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
                    "gen_ai.usage.input_tokens": inp, "gen_ai.usage.output_tokens": out,
                }):
                    pass
            self.calls += 1
            self.input_tokens += inp
            self.output_tokens += out
            self.per_user[user] += 1
            lag = started + self.calls / self.rate - time.monotonic()
            if lag > 0:
                time.sleep(lag)

    def finish(self) -> bool:
        self.stopping.set()
        self.join()
        flushed = self.provider.force_flush(300_000)
        self.provider.shutdown()
        return flushed


def sql(url: str, query: str) -> list[list]:
    request = urllib.request.Request(
        f"{url}/v1/sql", data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {ADMIN}"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())["rows"]


def scrape(url: str) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
            text = r.read().decode()
    except (urllib.error.URLError, OSError):
        return {}
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def mount_store(path: Path, megabytes: int) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def fill_disk(path: Path) -> Path:
    ballast = path / "ballast"
    subprocess.run(["fallocate", "-l", "64g", str(ballast)], capture_output=True)  # fails once full, leaving it full
    if not ballast.exists() or shutil.disk_usage(path).free > 1 << 20:
        with ballast.open("ab") as f:
            try:
                while True:
                    f.write(b"\0" * (1 << 20))
            except OSError:
                pass
    return ballast


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=5.0, help="traffic window")
    ap.add_argument("--rate", type=float, default=100.0, help="calls per second")
    ap.add_argument("--kill-every", type=float, default=60.0, help="SIGKILL the ingest this often (s)")
    ap.add_argument("--down", type=float, default=5.0, help="seconds the killed ingest stays down")
    ap.add_argument("--outage", type=float, default=45.0, help="seconds ClickHouse is unavailable (0: none)")
    ap.add_argument("--store-mb", type=int, default=1024, help="size of the store's tmpfs")
    ap.add_argument("--drain-timeout", type=float, default=600.0)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = ap.parse_args()

    cache = Path(os.environ.get("SPANMETER_COLLECTOR_CACHE", Path.home() / ".cache" / "spanmeter" / "collector"))
    collector_bin = cache / "current" / "otelcol-spanmeter"
    if not os.access(collector_bin, os.X_OK):
        sys.exit(f"collector binary not found at {collector_bin}: run `make collector` (needs Go)")
    spanmeter = Path(sys.executable).with_name("spanmeter")

    work = args.workdir or Path(tempfile.mkdtemp(prefix="spanmeter-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    store_dir = work / "store"
    mounted = mount_store(store_dir, args.store_mb) if args.outage > 0 else False
    ingest_port = free_port()
    ingest_url = f"http://127.0.0.1:{ingest_port}"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("SPANMETER_")}
    ingest = Proc("ingest", [str(spanmeter), "serve", "--host", "127.0.0.1", "--port", str(ingest_port),
                             "--dsn", f"chdb://{store_dir / 'chdb'}", "--log-level", "warning"],
                  {**base_env, "SPANMETER_INGEST_TOKEN": TOKEN, "SPANMETER_ADMIN_TOKEN": ADMIN},
                  work / "ingest.log", f"{ingest_url}/readyz")
    ports = {k: free_port() for k in ("http", "grpc", "health", "metrics")}
    collector = Proc("collector", [str(collector_bin), f"--config={REPO / 'collector' / 'config.yaml'}"], {
        **base_env,
        "SPANMETER_INGEST_ENDPOINT": ingest_url, "SPANMETER_INGEST_TOKEN": TOKEN,
        "SPANMETER_COLLECTOR_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{ports['http']}",
        "SPANMETER_COLLECTOR_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{ports['grpc']}",
        "SPANMETER_COLLECTOR_HEALTH_ENDPOINT": f"127.0.0.1:{ports['health']}",
        "SPANMETER_COLLECTOR_METRICS_HOST": "127.0.0.1", "SPANMETER_COLLECTOR_METRICS_PORT": str(ports["metrics"]),
        "SPANMETER_COLLECTOR_STORAGE_DIR": str(work / "queue"), "SPANMETER_OBSERVABILITY_EXPORTERS": "[nop]",
    }, work / "collector.log", f"http://127.0.0.1:{ports['health']}/")
    (work / "queue").mkdir(exist_ok=True)

    events: list[str] = []
    statuses: Counter = Counter()
    t0 = time.monotonic()

    def note(text: str) -> None:
        events.append(f"{time.monotonic() - t0:7.1f}s {text}")
        print(events[-1], flush=True)

    def harvest() -> None:
        # The ingest's own counters die with it: add them up before each kill.
        for key, value in scrape(ingest_url).items():
            if key.startswith("spanmeter_export_requests_total"):
                statuses[key.split('"')[1]] += value

    sampling = threading.Event()

    def sampler() -> None:
        while not sampling.is_set():
            ingest.sample()
            collector.sample()
            time.sleep(0.5)

    load = None
    report: dict = {}
    try:
        ingest.start()
        collector.start()
        threading.Thread(target=sampler, daemon=True).start()
        load = Load(f"http://127.0.0.1:{ports['http']}/v1/traces", args.rate)
        note(f"traffic: {args.rate:g} calls/s for {args.minutes:g} min; store on {'tmpfs' if mounted else 'disk'}")
        load.start()

        window = args.minutes * 60
        outage_at = window * 0.45 if mounted and args.outage > 0 else None
        next_kill = args.kill_every
        outage_done = outage_at is None
        while (elapsed := time.monotonic() - t0) < window:
            if not outage_done and elapsed >= outage_at:
                note("ClickHouse unavailable: the store's disk is full")
                ballast = fill_disk(store_dir)
                time.sleep(args.outage / 2)
                harvest()
                note("SIGKILL ingest during the outage")
                ingest.kill()
                ingest.start()
                note("ingest restarted (store still full)")
                time.sleep(args.outage / 2)
                ballast.unlink()
                note("ClickHouse available again: ballast deleted")
                outage_done = True
                next_kill = elapsed + args.outage + args.kill_every
            elif elapsed >= next_kill:
                harvest()
                note("SIGKILL ingest")
                ingest.kill()
                time.sleep(args.down)
                ingest.start()
                note(f"ingest restarted after {args.down:g}s down")
                next_kill += args.kill_every
            time.sleep(0.2)

        note(f"traffic stopped after {load.calls} calls; flushing the app")
        flushed = load.finish()
        calls = load.calls

        def metered() -> int:
            return int(sql(ingest_url, "SELECT uniqExact(trace_id, span_id) FROM spanmeter.usage_events")[0][0])

        deadline = time.monotonic() + args.drain_timeout
        while time.monotonic() < deadline and metered() < calls:
            time.sleep(2)
        note("drained; waiting for late duplicates")
        time.sleep(10)
        harvest()

        count, unique, net, inp, out, positive = (int(v) for v in sql(ingest_url,
            "SELECT count(), uniqExact(trace_id, span_id), sum(sign), sum(input_tokens * sign), "
            "sum(output_tokens * sign), countIf(sign = 1) FROM spanmeter.usage_events")[0])
        rollup = [int(v) for v in sql(ingest_url,
            "SELECT sum(requests), sum(input_tokens), sum(output_tokens) FROM spanmeter.usage_daily")[0]]
        per_user = {u: int(n) for u, n in sql(ingest_url,
            "SELECT user_id, sum(sign) FROM spanmeter.usage_events GROUP BY user_id")}
        doubles = int(sql(ingest_url,
            "SELECT count() FROM (SELECT trace_id, span_id, sum(sign) s FROM spanmeter.usage_events "
            "GROUP BY trace_id, span_id HAVING s > 1)")[0][0])
        report = {
            "minutes": args.minutes, "rate_per_s": args.rate,
            "calls_sent": calls, "calls_metered": net, "distinct_keys": unique, "rows": count,
            "duplicates": positive - unique, "double_counted_keys": doubles,
            "tokens_sent": [load.input_tokens, load.output_tokens], "tokens_metered": [inp, out],
            "rollup_daily": rollup, "per_user_agrees": per_user == dict(load.per_user),
            "app_export_failures": load.failed_exports, "app_flushed": flushed,
            "ingest_kills": ingest.starts - 1, "clickhouse_outage_s": args.outage if mounted else 0,
            "ingest_answers": dict(statuses),
            "peak_rss_mib": {
                "ingest": round(ingest.peak_kib / 1024, 1), "collector": round(collector.peak_kib / 1024, 1),
                "load_generator": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            },
            "events": events, "workdir": str(work),
        }
    finally:
        sampling.set()
        if load is not None and load.is_alive():
            load.stopping.set()
        collector.stop()
        ingest.stop()
        if mounted:
            subprocess.run(["umount", "-l", str(store_dir)], capture_output=True)

    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    events_ok = (report["calls_metered"] == report["calls_sent"] == report["distinct_keys"]
                 and report["duplicates"] == 0 and report["double_counted_keys"] == 0
                 and report["tokens_sent"] == report["tokens_metered"] and report["per_user_agrees"])
    rollups_ok = report["rollup_daily"] == [report["calls_sent"], *report["tokens_sent"]]
    print("events: every call metered exactly once" if events_ok else "events: FAILED, calls lost or counted twice")
    print("rollups: agree with the events" if rollups_ok else "rollups: FAILED, they disagree with the events")
    return 0 if events_ok and rollups_ok else 1


if __name__ == "__main__":
    sys.exit(main())
