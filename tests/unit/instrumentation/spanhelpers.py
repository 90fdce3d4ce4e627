"""Shared by the instrumentation tests: an instrumentor bound to an in-memory exporter.

    with instrumented() as exporter:
        ...make calls...
    spans = finished(exporter)

`instrumented()` always uninstruments on exit, so no other test in the session sees patched
httpx/httpx2 classes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import spanmeter
from spanmeter import SpanmeterInstrumentor


@contextlib.contextmanager
def instrumented(**kwargs: Any) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = SpanmeterInstrumentor()
    instrumentor.instrument(tracer_provider=provider, **kwargs)
    try:
        yield exporter
    finally:
        instrumentor.uninstrument()
        provider.shutdown()


def finished(exporter: InMemorySpanExporter) -> tuple[ReadableSpan, ...]:
    """The exporter's spans once every call made so far is recorded: spanmeter records spans on
    a background thread (`spanmeter.flush()`, as the provider's `force_flush()` does)."""
    assert spanmeter.flush(10)
    return exporter.get_finished_spans()


def only_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    """The one spanmeter span finished so far (other scopes' spans are ignored)."""
    spans = [s for s in finished(exporter) if s.instrumentation_scope.name == "spanmeter"]
    assert len(spans) == 1, [(s.name, dict(s.attributes or {})) for s in spans]
    return spans[0]


def attrs(span: ReadableSpan) -> dict[str, Any]:
    """Span attributes as a plain dict, sequences as lists (for exact comparisons)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in (span.attributes or {}).items()}
