"""Settings, endpoint resolution and the public surface of the `spanmeter` package."""

from __future__ import annotations

import subprocess
import sys

import spanmeter
from spanmeter._config import Settings
from spanmeter._setup import traces_endpoint


def test_public_surface() -> None:
    assert sorted(spanmeter.__all__) == ["CapExceeded", "SpanmeterInstrumentor", "__version__", "attributes",
                                         "current_attributes", "enforce_caps", "flush", "instrument"]
    for name in spanmeter.__all__:
        assert getattr(spanmeter, name) is not None


def test_settings_from_env() -> None:
    assert Settings.from_env({}) == Settings(inject_stream_usage=True, max_parse_bytes=1 << 20)
    assert Settings.from_env({"SPANMETER_INJECT_STREAM_USAGE": "false"}).inject_stream_usage is False
    assert Settings.from_env({"SPANMETER_INJECT_STREAM_USAGE": "0"}).inject_stream_usage is False
    assert Settings.from_env({"SPANMETER_INJECT_STREAM_USAGE": "true"}).inject_stream_usage is True
    assert Settings.from_env({"SPANMETER_MAX_PARSE_BYTES": "2048"}).max_parse_bytes == 2048
    assert Settings.from_env({"SPANMETER_MAX_PARSE_BYTES": "lots"}).max_parse_bytes == 1 << 20


def test_traces_endpoint_precedence() -> None:
    assert traces_endpoint(None, {}) == "http://127.0.0.1:4318/v1/traces"
    assert traces_endpoint(None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"}) == "http://collector:4318/v1/traces"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x:9/custom"}
    assert traces_endpoint(None, env) == "http://x:9/custom"  # the signal-specific URL is used as is
    assert traces_endpoint("http://spanmeter:4318", env) == "http://spanmeter:4318/v1/traces"  # argument wins


def test_import_and_instrument_pull_in_no_server_dependency() -> None:
    code = (
        "import sys, spanmeter, httpx, httpx2\n"
        "spanmeter.SpanmeterInstrumentor().instrument()\n"
        "import openai, anthropic\n"
        # (orjson is a dependency of the instrumentation itself: it parses the bodies.)
        "bad = [m for m in ('spanmeter.ingest', 'fastapi', 'chdb', 'clickhouse_connect', 'pydantic_settings', 'uvicorn') if m in sys.modules]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_instrumenting_does_not_import_httpx() -> None:
    # So that an app may still call httpx2.alias_httpx() (which must run before `import httpx`).
    code = (
        "import sys, spanmeter\n"
        "spanmeter.SpanmeterInstrumentor().instrument()\n"
        "assert 'httpx' not in sys.modules and 'httpx2' not in sys.modules\n"
        "import httpx2\n"
        "httpx2.alias_httpx()\n"
        "import httpx\n"
        "assert httpx.Client is httpx2.Client and hasattr(httpx2.Client.send, '__spanmeter_original__')\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr
