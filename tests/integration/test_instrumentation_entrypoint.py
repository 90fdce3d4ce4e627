"""No code change: `opentelemetry-instrument` loads spanmeter's entry point; and `spanmeter.instrument()`.

Both run an app in a subprocess (global tracer providers are process-wide) against the fake
provider, and read what it exported: console JSON, or OTLP/HTTP protobuf posted to a receiver.

Under `opentelemetry-instrument` the SDK is configured either by `opentelemetry-distro` (what
`opentelemetry-bootstrap` users have) or by the app's own tracing setup. The dev environment has
no distro (it would change `opentelemetry-instrument` for every other test), so the app here sets
up its own console-exporting provider, as a service with tracing already does, and never imports
spanmeter: the LLM spans come from the entry point alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from spanmeter.ingest.fakeprovider import FakeProvider

BIN = Path(sys.executable).parent

TRACING = textwrap.dedent(
    """
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
    provider = TracerProvider(resource=Resource.create())
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
    """
)

APP = textwrap.dedent(
    """
    import os
    import openai, anthropic
    o = openai.OpenAI(base_url=os.environ["FAKE_URL"] + "/v1", api_key="k", max_retries=0)
    o.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], user="u-app")
    list(o.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True))
    a = anthropic.Anthropic(base_url=os.environ["FAKE_URL"], api_key="k", max_retries=0)
    a.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    """
)


@pytest.fixture(scope="module")
def fake():
    with FakeProvider() as f:
        yield f


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SPANMETER_"))}
    env.update(extra)
    return env


def console_spans(stdout: str) -> list[dict]:
    decoder, spans, i = json.JSONDecoder(), [], 0
    while (i := stdout.find("{", i)) >= 0:
        obj, i = decoder.raw_decode(stdout, i)
        spans.append(obj)
    return spans


def test_opentelemetry_instrument_picks_up_the_entry_point(fake, tmp_path) -> None:
    app = tmp_path / "app.py"
    app.write_text(TRACING + APP)
    assert "spanmeter" not in app.read_text()
    env = clean_env(
        FAKE_URL=fake.base_url,
        OTEL_SERVICE_NAME="entrypoint-test",
        OTEL_TRACES_EXPORTER="console",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
    )
    out = subprocess.run([str(BIN / "opentelemetry-instrument"), sys.executable, str(app)], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    ours = [s for s in console_spans(out.stdout) if s.get("attributes", {}).get("spanmeter.usage_status")]
    assert [(s["name"], s["attributes"]["spanmeter.usage_status"]) for s in ours] == [
        ("chat gpt-4o-mini", "reported"),
        ("chat gpt-4o-mini", "reported"),
        ("chat claude-haiku-4-5", "reported"),
    ]
    assert ours[0]["attributes"]["user.id"] == "u-app"
    assert ours[1]["attributes"]["spanmeter.streaming"] is True
    assert all(s["kind"] == "SpanKind.CLIENT" and s["resource"]["attributes"]["service.name"] == "entrypoint-test" for s in ours)


def test_opentelemetry_instrument_can_disable_it(fake, tmp_path) -> None:
    app = tmp_path / "app.py"
    app.write_text(TRACING + APP)
    env = clean_env(
        FAKE_URL=fake.base_url,
        OTEL_TRACES_EXPORTER="console",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="spanmeter",
    )
    out = subprocess.run([str(BIN / "opentelemetry-instrument"), sys.executable, str(app)], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert not [s for s in console_spans(out.stdout) if "spanmeter.usage_status" in s.get("attributes", {})]


class _Receiver(BaseHTTPRequestHandler):
    posts: list[tuple[str, dict[str, str], bytes]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["content-length"]))
        self.posts.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def receiver():
    _Receiver.posts = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, _Receiver.posts
    server.shutdown()
    server.server_close()


def exported_spans(posts) -> list[tuple[dict, object]]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    found = []
    for path, _, body in posts:
        assert path == "/v1/traces"
        request = ExportTraceServiceRequest.FromString(body)
        for rs in request.resource_spans:
            resource = {kv.key: kv.value.string_value for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                found += [(resource, span) for span in ss.spans]
    return found


def test_instrument_one_line_setup_exports_otlp_from_env(fake, receiver, tmp_path) -> None:
    server, posts = receiver
    app = tmp_path / "app.py"
    app.write_text("import spanmeter\nprovider = spanmeter.instrument()\n" + APP)
    env = clean_env(
        FAKE_URL=fake.base_url,
        OTEL_SERVICE_NAME="billing-api",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{server.server_address[1]}",
        OTEL_EXPORTER_OTLP_HEADERS="x-spanmeter-key=secret-1",
    )
    out = subprocess.run([sys.executable, str(app)], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert posts and all(headers.get("x-spanmeter-key") == "secret-1" for _, headers, _ in posts)
    spans = exported_spans(posts)
    ours = [(res, s) for res, s in spans if any(kv.key == "spanmeter.usage_status" for kv in s.attributes)]
    assert len(ours) == 3
    assert {res["service.name"] for res, _ in ours} == {"billing-api"}
    names = sorted(s.name for _, s in ours)
    assert names == ["chat claude-haiku-4-5", "chat gpt-4o-mini", "chat gpt-4o-mini"]


def test_instrument_keeps_an_existing_sdk_provider(tmp_path) -> None:
    code = textwrap.dedent(
        """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        import spanmeter
        mine = TracerProvider()
        trace.set_tracer_provider(mine)
        assert spanmeter.instrument() is mine
        assert spanmeter.instrument() is mine  # idempotent
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
