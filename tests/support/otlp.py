"""Build OTLP trace exports for tests, as protobuf bytes or OTLP/JSON, from the same span specs.

    spans = [span("chat gpt-4o-mini", trace=1, span=1, attrs={...})]
    body = to_protobuf(spans, service="billing")
    body = to_json(spans, service="billing")      # hex ids, 64-bit ints as strings

Ids and times are deterministic: trace=N, span=M give fixed byte strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

BASE_TIME_NS = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z


def trace_id(n: int) -> bytes:
    return n.to_bytes(16, "big")


def span_id(n: int) -> bytes:
    return n.to_bytes(8, "big")


@dataclass
class SpanSpec:
    name: str
    trace: int
    span: int
    parent: int = 0
    attrs: dict[str, Any] = field(default_factory=dict)
    start_ns: int = BASE_TIME_NS
    duration_ns: int = 1_000_000_000
    kind: int = 3  # CLIENT
    resource: dict[str, Any] | None = None


def span(name: str, trace: int, span: int, parent: int = 0, attrs: dict[str, Any] | None = None,
         start_ns: int = BASE_TIME_NS, **kw: Any) -> SpanSpec:
    return SpanSpec(name, trace, span, parent, dict(attrs or {}), start_ns, **kw)


def _groups(spans: list[SpanSpec], service: str):
    groups: dict[tuple, list[SpanSpec]] = {}
    for s in spans:
        resource = s.resource or {"service.name": service}
        groups.setdefault(tuple(sorted(resource.items())), []).append(s)
    return groups


def _pb_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, (list, tuple)):
        out = AnyValue()
        out.array_value.values.extend(_pb_value(v) for v in value)
        return out
    return AnyValue(string_value=str(value))


def to_protobuf(spans: list[SpanSpec], service: str = "test-service") -> bytes:
    request = ExportTraceServiceRequest()
    for resource, group in _groups(spans, service).items():
        rs = request.resource_spans.add()
        rs.resource.attributes.extend(KeyValue(key=k, value=_pb_value(v)) for k, v in resource)
        ss = rs.scope_spans.add()
        ss.scope.name = "tests"
        for s in group:
            pb = PbSpan(
                trace_id=trace_id(s.trace),
                span_id=span_id(s.span),
                parent_span_id=span_id(s.parent) if s.parent else b"",
                name=s.name,
                kind=s.kind,
                start_time_unix_nano=s.start_ns,
                end_time_unix_nano=s.start_ns + s.duration_ns,
            )
            pb.attributes.extend(KeyValue(key=k, value=_pb_value(v)) for k, v in s.attrs.items())
            ss.spans.append(pb)
    return request.SerializeToString()


def _json_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, (list, tuple)):
        return {"arrayValue": {"values": [_json_value(v) for v in value]}}
    return {"stringValue": str(value)}


def to_json_dict(spans: list[SpanSpec], service: str = "test-service") -> dict[str, Any]:
    resource_spans = []
    for resource, group in _groups(spans, service).items():
        resource_spans.append({
            "resource": {"attributes": [{"key": k, "value": _json_value(v)} for k, v in resource]},
            "scopeSpans": [{
                "scope": {"name": "tests"},
                "spans": [{
                    "traceId": trace_id(s.trace).hex(),
                    "spanId": span_id(s.span).hex(),
                    **({"parentSpanId": span_id(s.parent).hex()} if s.parent else {}),
                    "name": s.name,
                    "kind": s.kind,
                    "startTimeUnixNano": str(s.start_ns),
                    "endTimeUnixNano": str(s.start_ns + s.duration_ns),
                    "attributes": [{"key": k, "value": _json_value(v)} for k, v in s.attrs.items()],
                } for s in group],
            }],
        })
    return {"resourceSpans": resource_spans}


def to_json(spans: list[SpanSpec], service: str = "test-service") -> bytes:
    return orjson.dumps(to_json_dict(spans, service))


def chat(trace: int, span_: int, *, model: str, provider: str = "openai", input: int, output: int,
         cache_read: int | None = None, cache_write: int | None = None, reasoning: int | None = None,
         user: str | None = None, parent: int = 0, response_model: str | None = None,
         start_ns: int = BASE_TIME_NS, extra: dict[str, Any] | None = None) -> SpanSpec:
    """A GenAI chat span in the current semantic conventions."""
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
        "gen_ai.response.model": response_model or model,
        "gen_ai.usage.input_tokens": input,
        "gen_ai.usage.output_tokens": output,
    }
    if cache_read is not None:
        attrs["gen_ai.usage.cache_read.input_tokens"] = cache_read
    if cache_write is not None:
        attrs["gen_ai.usage.cache_creation.input_tokens"] = cache_write
    if reasoning is not None:
        attrs["gen_ai.usage.reasoning.output_tokens"] = reasoning
    if user is not None:
        attrs["user.id"] = user
    attrs.update(extra or {})
    return span(f"chat {model}", trace, span_, parent, attrs, start_ns)
