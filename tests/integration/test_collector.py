"""The built collector distribution (collector/) with the shipped config.

Needs the binary from `make collector` (collector/build.sh): the tests look for
`$SPANMETER_COLLECTOR_CACHE/current/otelcol-spanmeter`. Without it they are
skipped with the reason, or fail when SPANMETER_REQUIRE_COLLECTOR=1 (CI), so a
missing Go toolchain is never counted as a pass.

1. `validate` accepts collector/config.yaml and `components` lists exactly the
   components the manifest promises.
2. The metering filter forwards GenAI spans of every common instrumentation
   and the spans that attribute them, drops the rest, and the ingest exporter
   sends gzip protobuf with the bearer token (a stdlib OTLP/HTTP receiver).
   The persistent queue keeps what the collector accepted across its own
   restart while that receiver is down.
3. End to end with the real ingest: OTel SDK spans -> collector -> `spanmeter
   serve` -> ClickHouse; the ingest is SIGKILLed and the collector restarted
   under continuous traffic, and every call is still metered exactly once.
   Attribution reaches the model call from the request (root) span across an
   intermediate span that the metering filter does not forward.
"""

from __future__ import annotations

import contextlib
import gzip
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.collector

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "collector" / "config.yaml"
TOKEN = "test-ingest-token"

# What `components` must list: the manifest's components and nothing else.
EXPECTED_COMPONENTS = {
    "receivers": {"otlp"},
    "processors": {"memory_limiter", "filter"},
    "exporters": {"otlp_http", "clickhouse", "debug", "nop"},
    "extensions": {"file_storage", "health_check", "bearertokenauth"},
    "connectors": set(),
}
EXPECTED_PROVIDERS = {"env", "file", "yaml"}


def _collector_binary() -> Path:
    cache = os.environ.get("SPANMETER_COLLECTOR_CACHE", "")
    binary = Path(cache) / "current" / "otelcol-spanmeter" if cache else None
    if binary is not None and os.access(binary, os.X_OK):
        return binary
    reason = (
        f"collector binary not found at {binary}; build it with `make collector` (needs Go)"
        if binary
        else "SPANMETER_COLLECTOR_CACHE is not set; run through `make test` after `make collector` (needs Go)"
    )
    if os.environ.get("SPANMETER_REQUIRE_COLLECTOR") == "1":
        pytest.fail(f"SPANMETER_REQUIRE_COLLECTOR=1: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def collector_bin() -> Path:
    return _collector_binary()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _poll(predicate, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def _wait_until(predicate, timeout: float, what: str) -> None:
    if not _poll(predicate, timeout):
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


# --------------------------------------------------------------------------- collector process


@dataclass
class Collector:
    """One otelcol-spanmeter process on the shipped config, on free local ports."""

    binary: Path
    workdir: Path
    ingest_endpoint: str
    otlp_http_port: int = field(default_factory=_free_port)
    otlp_grpc_port: int = field(default_factory=_free_port)
    health_port: int = field(default_factory=_free_port)
    metrics_port: int = field(default_factory=_free_port)
    process: subprocess.Popen | None = None
    starts: int = 0

    @property
    def traces_url(self) -> str:
        return f"http://127.0.0.1:{self.otlp_http_port}/v1/traces"

    @property
    def log_path(self) -> Path:
        return self.workdir / "collector.log"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "SPANMETER_INGEST_ENDPOINT": self.ingest_endpoint,
            "SPANMETER_INGEST_TOKEN": TOKEN,
            "SPANMETER_COLLECTOR_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{self.otlp_http_port}",
            "SPANMETER_COLLECTOR_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{self.otlp_grpc_port}",
            "SPANMETER_COLLECTOR_HEALTH_ENDPOINT": f"127.0.0.1:{self.health_port}",
            "SPANMETER_COLLECTOR_METRICS_HOST": "127.0.0.1",
            "SPANMETER_COLLECTOR_METRICS_PORT": str(self.metrics_port),
            "SPANMETER_COLLECTOR_STORAGE_DIR": str(self.workdir / "queue"),
            # No ClickHouse server in tests: the observability copy is switched off
            # the way a user would switch it off.
            "SPANMETER_OBSERVABILITY_EXPORTERS": "[nop]",
        }

    def start(self) -> None:
        self.starts += 1
        log = self.log_path.open("a")
        log.write(f"\n===== start {self.starts} =====\n")
        log.flush()
        self.process = subprocess.Popen(
            [str(self.binary), f"--config={CONFIG}"],
            env=self.env(),
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        health = f"http://127.0.0.1:{self.health_port}/"

        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"collector exited with {self.process.returncode}:\n{self.log()}")
            return _http_ok(health)

        _wait_until(ready, 30, "the collector's health check")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"collector did not stop within 30s of {sig!r}:\n{self.log()}") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]


@contextlib.contextmanager
def running_collector(binary: Path, workdir: Path, ingest_endpoint: str) -> Iterator[Collector]:
    collector = Collector(binary, workdir, ingest_endpoint)
    collector.start()
    try:
        yield collector
    finally:
        collector.stop()


# --------------------------------------------------------------------------- a tiny OTLP/HTTP receiver


@dataclass
class Received:
    spans: list[tuple[str, dict]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def names(self) -> Counter:
        with self.lock:
            return Counter(name for name, _ in self.spans)


def _any_value(value):
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_any_value(item) for item in value.array_value.values]
    return getattr(value, kind) if kind else None


@contextlib.contextmanager
def otlp_receiver(port: int = 0) -> Iterator[tuple[str, Received]]:
    """Accepts OTLP/HTTP protobuf on /v1/traces and records spans and headers."""
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    received = Received()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            request = trace_service_pb2.ExportTraceServiceRequest()
            request.ParseFromString(body)
            with received.lock:
                received.headers.append({k.lower(): v for k, v in self.headers.items()})
                for resource_spans in request.resource_spans:
                    for scope_spans in resource_spans.scope_spans:
                        for span in scope_spans.spans:
                            attrs = {kv.key: _any_value(kv.value) for kv in span.attributes}
                            received.spans.append((span.name, attrs))
            answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def _tracer_provider(endpoint: str, service: str, **exporter_kwargs):
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter = OTLPSpanExporter(endpoint=endpoint, **exporter_kwargs)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=100, max_queue_size=100_000))
    return provider, exporter


# --------------------------------------------------------------------------- 1. validate + components


def test_validate_and_components(collector_bin: Path, tmp_path: Path) -> None:
    import yaml

    env = Collector(collector_bin, tmp_path, "http://127.0.0.1:4319").env()
    # As shipped, with the ClickHouse observability copy on; and switched off.
    for exporters in ("[clickhouse]", "[nop]", "[clickhouse, debug]"):
        run = subprocess.run(
            [str(collector_bin), "validate", f"--config={CONFIG}"],
            env={**env, "SPANMETER_OBSERVABILITY_EXPORTERS": exporters},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, f"validate with {exporters}: {run.stdout}{run.stderr}"

    # The bearer token is required: a missing secret is caught by validate, not in production.
    no_token = {k: v for k, v in env.items() if k != "SPANMETER_INGEST_TOKEN"}
    run = subprocess.run(
        [str(collector_bin), "validate", f"--config={CONFIG}"], env=no_token, capture_output=True, text=True, timeout=60
    )
    assert run.returncode != 0
    assert "no bearer token provided" in run.stderr

    run = subprocess.run([str(collector_bin), "components"], capture_output=True, text=True, timeout=60, check=True)
    components = yaml.safe_load(run.stdout)
    listed = {kind: {c["name"] for c in components.get(kind) or []} for kind in EXPECTED_COMPONENTS}
    assert listed == EXPECTED_COMPONENTS
    assert {p["scheme"] for p in components["providers"]} == EXPECTED_PROVIDERS
    # Core and contrib modules of one release (ocb's strict versioning): one version for all.
    versions = {
        c["module"].rsplit(" ", 1)[1] for kind in EXPECTED_COMPONENTS for c in components.get(kind) or []
    }
    assert len(versions) == 1, versions


# --------------------------------------------------------------------------- 2. the metering filter

# One span per marker: each must reach the ingest on its own. Model-call markers of every
# common instrumentation (shared/reference/genai-usage.md), then attribution carriers.
KEPT = {
    "semconv operation": {"gen_ai.operation.name": "chat"},
    "semconv provider": {"gen_ai.provider.name": "openai"},
    "legacy system": {"gen_ai.system": "anthropic"},
    "request model": {"gen_ai.request.model": "gpt-4o-mini"},
    "response model": {"gen_ai.response.model": "gpt-4o-mini-2024-07-18"},
    "semconv input": {"gen_ai.usage.input_tokens": 12},
    "semconv output": {"gen_ai.usage.output_tokens": 3},
    "legacy prompt": {"gen_ai.usage.prompt_tokens": 12},
    "legacy completion": {"gen_ai.usage.completion_tokens": 3},
    "semantic kernel": {"gen_ai.response.prompt_tokens": 12},
    "openinference prompt": {"llm.token_count.prompt": 12, "openinference.span.kind": "LLM"},
    "openinference completion": {"llm.token_count.completion": 3},
    "openinference model": {"llm.model_name": "gpt-4o"},
    "openinference provider": {"llm.provider": "openai"},
    "openinference system": {"llm.system": "openai"},
    "openinference embedding": {"embedding.model_name": "text-embedding-3-small"},
    "vercel input": {"ai.usage.inputTokens": 12},
    "vercel output": {"ai.usage.outputTokens": 3},
    "vercel prompt": {"ai.usage.promptTokens": 12},
    "vercel completion": {"ai.usage.completionTokens": 3},
    "vercel model": {"ai.model.id": "gpt-4o"},
    "vercel provider": {"ai.model.provider": "openai.chat"},
    "user": {"user.id": "u-1", "http.request.method": "POST"},
    "enduser": {"enduser.id": "u-2"},
    "enduser pseudo": {"enduser.pseudo.id": "p-3"},
    "session": {"session.id": "s-1"},
    "conversation": {"gen_ai.conversation.id": "c-1"},
    "openllmetry gen_ai.user": {"gen_ai.user": "u-4"},
    "openlit request user": {"gen_ai.request.user": "u-5"},
    "llm user": {"llm.user": "u-6"},
    "traceloop user": {"traceloop.association.properties.user_id": "u-7"},
    "traceloop customer": {"traceloop.association.properties.customer_id": "cust-1"},
    "traceloop session": {"traceloop.association.properties.session_id": "s-2"},
    "traceloop workflow": {"traceloop.workflow.name": "answer"},
    "litellm user": {"metadata.user_api_key_user_id": "u-8"},
    "litellm end user": {"metadata.user_api_key_end_user_id": "u-9"},
    "spanmeter feature": {"spanmeter.feature": "search"},
    "spanmeter team": {"spanmeter.team": "growth"},
}
DROPPED = {
    "GET /health": {"http.request.method": "GET", "url.path": "/health", "http.response.status_code": 200},
    # The raw HTTP call to a provider, without GenAI attributes: not a usage span.
    "POST api.openai.com": {"http.request.method": "POST", "url.full": "https://api.openai.com/v1/chat/completions"},
    "SELECT users": {"db.system.name": "postgresql", "db.query.text": "SELECT * FROM users"},
    "publish jobs": {"messaging.system": "kafka", "messaging.destination.name": "jobs"},
    "no attributes": {},
}


def test_filter_keeps_genai_and_attribution_spans_only(collector_bin: Path, tmp_path: Path) -> None:
    with otlp_receiver() as (ingest_url, received), running_collector(collector_bin, tmp_path, ingest_url) as collector:
        provider, _ = _tracer_provider(collector.traces_url, "filter-test")
        tracer = provider.get_tracer("test")
        for name, attributes in {**KEPT, **DROPPED}.items():
            tracer.start_span(name, attributes=attributes).end()
        assert provider.force_flush(10_000)
        provider.shutdown()

        _poll(lambda: sum(received.names().values()) >= len(KEPT), 10)
        time.sleep(1.5)  # anything wrongly forwarded would arrive within the batch flush interval

        names = received.names()
        assert set(names) == set(KEPT), (
            f"missing {sorted(set(KEPT) - set(names))}, unexpected {sorted(set(names) - set(KEPT))}"
        )
        assert all(count == 1 for count in names.values()), names
        # Attributes travel untouched.
        spans = dict(received.spans)
        assert spans["semconv input"]["gen_ai.usage.input_tokens"] == 12
        assert spans["traceloop user"]["traceloop.association.properties.user_id"] == "u-7"

        for headers in received.headers:
            assert headers["authorization"] == f"Bearer {TOKEN}"
            assert headers["content-encoding"] == "gzip"
            assert headers["content-type"] == "application/x-protobuf"


def test_queue_survives_collector_restart_while_ingest_is_down(collector_bin: Path, tmp_path: Path) -> None:
    port = _free_port()  # nothing listens here yet: the ingest is down
    collector = Collector(collector_bin, tmp_path, f"http://127.0.0.1:{port}")
    collector.start()
    try:
        provider, _ = _tracer_provider(collector.traces_url, "queue-test")
        tracer = provider.get_tracer("test")
        names = [f"chat {i}" for i in range(50)]
        for name in names:
            tracer.start_span(name, attributes={"gen_ai.usage.input_tokens": 1}).end()
        # Accepted by the collector means written to its on-disk queue.
        assert provider.force_flush(10_000)
        provider.shutdown()
        time.sleep(2)  # the exporter is now failing and backing off

        started = time.monotonic()
        collector.stop()  # graceful stop must not wait for a retry that never ends
        assert time.monotonic() - started < 10, "stopping with an unreachable ingest took too long"
        collector.start()

        with otlp_receiver(port) as (_, received):
            _poll(lambda: sum(received.names().values()) >= len(names), 30)
            time.sleep(1)
            assert received.names() == Counter(names)
    except BaseException:
        print(f"--- collector log ---\n{collector.log()}")
        raise
    finally:
        collector.stop()


# --------------------------------------------------------------------------- 3. end to end, exactly once


@dataclass
class Ingest:
    """`spanmeter serve` on an embedded ClickHouse path, killable and restartable."""

    dsn: str
    port: int
    log_path: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = self.log_path.open("a")
        log.write("\n===== start =====\n")
        log.flush()
        spanmeter = Path(sys.executable).with_name("spanmeter")
        self.process = subprocess.Popen(
            [str(spanmeter), "serve", "--host", "127.0.0.1", "--port", str(self.port), "--dsn", self.dsn],
            env={**os.environ, "SPANMETER_INGEST_TOKEN": TOKEN},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"ingest exited with {self.process.returncode} (its log is printed below)")
            return _http_ok(f"{self.url}/readyz")

        _wait_until(ready, 60, "the ingest's /readyz")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def sql(self, query: str) -> list[list]:
        request = urllib.request.Request(
            f"{self.url}/v1/sql",
            data=json.dumps({"query": query}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())["rows"]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]


class App(threading.Thread):
    """An instrumented service under steady load: each call is a request span carrying the
    user, a GenAI client span carrying the usage, and a database span."""

    def __init__(self, collector_url: str) -> None:
        super().__init__(daemon=True)
        # A long export timeout rides out a collector restart (the exporter retries
        # connection errors with backoff until the timeout).
        self.provider, exporter = _tracer_provider(collector_url, "e2e-app", timeout=60)
        self.failed_exports = 0
        export = exporter.export

        def counting_export(spans):
            result = export(spans)
            if result.name != "SUCCESS":
                self.failed_exports += 1
            return result

        exporter.export = counting_export
        self.tracer = self.provider.get_tracer("e2e")
        self.stopping = threading.Event()
        self.calls = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.per_user: Counter = Counter()

    @staticmethod
    def usage(i: int) -> tuple[int, int]:
        return 100 + i % 7, 20 + i % 5

    def run(self) -> None:
        from opentelemetry.trace import SpanKind

        while not self.stopping.is_set():
            i = self.calls
            user = f"user-{i % 3}"
            input_tokens, output_tokens = self.usage(i)
            with self.tracer.start_as_current_span(
                "POST /chat", kind=SpanKind.SERVER, attributes={"http.request.method": "POST", "user.id": user}
            ):
                with self.tracer.start_as_current_span("SELECT history", attributes={"db.system.name": "postgresql"}):
                    pass
                with self.tracer.start_as_current_span(
                    "chat gpt-4o-mini",
                    kind=SpanKind.CLIENT,
                    attributes={
                        "gen_ai.operation.name": "chat",
                        "gen_ai.provider.name": "openai",
                        "gen_ai.request.model": "gpt-4o-mini",
                        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
                        "gen_ai.usage.input_tokens": input_tokens,
                        "gen_ai.usage.output_tokens": output_tokens,
                    },
                ):
                    pass
            self.calls += 1
            self.input_tokens += input_tokens
            self.output_tokens += output_tokens
            self.per_user[user] += 1
            time.sleep(0.02)

    def finish(self) -> None:
        self.stopping.set()
        self.join()
        assert self.provider.force_flush(120_000), "the app could not flush its spans to the collector"
        self.provider.shutdown()


def _require_ingest() -> None:
    if not (REPO / "ingest" / "app.py").exists() or not Path(sys.executable).with_name("spanmeter").exists():
        pytest.fail("the ingest (`spanmeter serve`) is not installed in this environment")


def test_end_to_end_exactly_once_across_ingest_kill_and_collector_restart(collector_bin: Path, tmp_path: Path) -> None:
    _require_ingest()
    ingest = Ingest(f"chdb://{tmp_path / 'chdb'}", _free_port(), tmp_path / "ingest.log")
    collector = Collector(collector_bin, tmp_path, ingest.url)
    app = None
    try:
        ingest.start()
        collector.start()
        app = App(collector.traces_url)
        app.start()

        def metered() -> int:
            return int(ingest.sql("SELECT count() FROM spanmeter.usage_events")[0][0])

        # Steady state: calls flow all the way to ClickHouse.
        _wait_until(lambda: metered() >= 20, 60, "the first usage rows")

        # The ingest dies mid-traffic: the collector queues on disk and keeps retrying.
        ingest.kill()
        time.sleep(3)
        # The collector restarts while the ingest is still down: its queue must survive.
        collector.stop()
        collector.start()
        time.sleep(2)
        ingest.start()
        # More kills while the collector drains its backlog: some land after a batch
        # is committed but before it is acknowledged, so the collector resends it.
        for pause in (0.5, 1.0, 1.5):
            time.sleep(pause)
            ingest.kill()
            ingest.start()
        time.sleep(2)
        app.finish()
        assert app.failed_exports == 0, "the app lost spans on the way to the collector"

        calls = app.calls
        _wait_until(lambda: metered() >= calls, 120, f"{calls} usage rows")
        time.sleep(3)  # late duplicates, if any, would land now

        rows = ingest.sql(
            "SELECT count(), uniqExact(trace_id, span_id), sum(input_tokens), sum(output_tokens), sum(sign) "
            "FROM spanmeter.usage_events"
        )
        count, unique, input_tokens, output_tokens, signs = (int(v) for v in rows[0])
        assert (count, unique, signs) == (calls, calls, calls), f"{calls} calls made"
        assert (input_tokens, output_tokens) == (app.input_tokens, app.output_tokens)

        # Attribution travelled from the request span (kept by the filter for its user.id).
        per_user = {user: int(n) for user, n in ingest.sql(
            "SELECT user_id, count() FROM spanmeter.usage_events GROUP BY user_id"
        )}
        assert per_user == dict(app.per_user)
    except BaseException:
        print(f"--- collector log ---\n{collector.log() if collector.log_path.exists() else ''}")
        print(f"--- ingest log ---\n{ingest.log() if ingest.log_path.exists() else ''}")
        raise
    finally:
        if app is not None and app.is_alive():
            app.stopping.set()
        collector.stop()
        ingest.stop()


def test_attribution_across_a_span_the_filter_dropped(collector_bin: Path, tmp_path: Path) -> None:
    _require_ingest()
    ingest = Ingest(f"chdb://{tmp_path / 'chdb'}", _free_port(), tmp_path / "ingest.log")
    collector = Collector(collector_bin, tmp_path, ingest.url)
    try:
        ingest.start()
        collector.start()
        provider, _ = _tracer_provider(collector.traces_url, "attribution-test")
        tracer = provider.get_tracer("test")
        usage = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": 10,
            "gen_ai.usage.output_tokens": 2,
        }
        # A web app's usual shape: the request span knows the user, a route handler span sits
        # between it and the model call, and only the request and model-call spans are forwarded.
        with tracer.start_as_current_span("POST /chat", attributes={"user.id": "u-42"}):
            with tracer.start_as_current_span("handle_chat"):
                with tracer.start_as_current_span("chat gpt-4o-mini", attributes=usage):
                    pass
        assert provider.force_flush(10_000)
        provider.shutdown()
        _wait_until(lambda: ingest.sql("SELECT count() FROM spanmeter.usage_events")[0][0] >= 1, 30, "the usage row")
        assert ingest.sql("SELECT user_id FROM spanmeter.usage_events") == [["u-42"]]
    finally:
        collector.stop()
        ingest.stop()
