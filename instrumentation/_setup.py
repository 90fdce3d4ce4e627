"""`spanmeter.instrument()`: one-line setup for a service that has no tracing yet.

    import spanmeter
    spanmeter.instrument()            # before or after creating OpenAI()/Anthropic() clients

Creates an SDK `TracerProvider` (resource from `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES`,
or `service_name=`), a `BatchSpanProcessor` and an OTLP/HTTP exporter, makes it the global
provider and instruments httpx/httpx2. The exporter's endpoint, by precedence: the `endpoint`
argument (the base URL of spanmeter or a collector; `/v1/traces` is appended), then
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is) or `OTEL_EXPORTER_OTLP_ENDPOINT`, then
`http://127.0.0.1:4318` where `spanmeter serve` listens. Headers and the rest of the
`OTEL_EXPORTER_OTLP_*` settings are read by the exporter itself.

If the app already set a tracer provider (its own SDK setup, a vendor's, or
`opentelemetry-instrument`'s), it is left as it is and only the instrumentation is added,
exporting wherever that provider does.
Calling it again returns the same provider.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from opentelemetry import trace

from ._instrumentor import SpanmeterInstrumentor

DEFAULT_ENDPOINT = "http://127.0.0.1:4318"

_lock = threading.Lock()


def instrument(
    *,
    endpoint: str | None = None,
    service_name: str | None = None,
    headers: dict[str, str] | None = None,
    inject_stream_usage: bool | None = None,
) -> Any:
    """Set up tracing to spanmeter and instrument LLM calls; returns the `TracerProvider` in use."""
    with _lock:
        provider = trace.get_tracer_provider()
        # Only when nothing is configured yet: an SDK provider, a vendor's provider, or a no-op
        # one set on purpose (OTEL_SDK_DISABLED) is the app's choice and stays.
        if isinstance(provider, trace.ProxyTracerProvider):
            provider = _new_provider(endpoint, service_name, headers)
            trace.set_tracer_provider(provider)
            # set_tracer_provider refuses to replace a provider set concurrently: use the winner.
            provider = trace.get_tracer_provider()
        instrumentor = SpanmeterInstrumentor()
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=provider, inject_stream_usage=inject_stream_usage)
        return provider


def _new_provider(endpoint: str | None, service_name: str | None, headers: dict[str, str] | None) -> Any:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({SERVICE_NAME: service_name} if service_name else {})
    provider = TracerProvider(resource=resource)
    exporter = OTLPSpanExporter(endpoint=traces_endpoint(endpoint), headers=headers)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def traces_endpoint(endpoint: str | None = None, environ: dict[str, str] | None = None) -> str:
    """The OTLP/HTTP traces URL: argument > OTEL_* environment > spanmeter's default."""
    env = os.environ if environ is None else environ
    if endpoint:
        return _append_path(endpoint)
    specific = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if specific:
        return specific
    general = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    return _append_path(general or DEFAULT_ENDPOINT)


def _append_path(base: str) -> str:
    base = base.rstrip("/")
    return base if base.endswith("/v1/traces") else base + "/v1/traces"
