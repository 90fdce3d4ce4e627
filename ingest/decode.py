"""Decode stage: an OTLP/HTTP trace export (protobuf or JSON, optionally gzip) into `Span`s.

    spans = decode(body, content_type="application/x-protobuf", content_encoding="gzip",
                   max_decompressed_bytes=64 << 20)

Only what metering needs is kept: ids, name, times, status, scalar attributes and the resource's
attributes. Span events and links are skipped entirely (they carry content we never store).
Raises `DecodeError` (400), `UnsupportedMediaType` (415) or `PayloadTooLarge` (413).
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson
from google.protobuf.message import DecodeError as ProtobufDecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from .errors import DecodeError, PayloadTooLarge, UnsupportedMediaType
from .records import Span

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


def media_type(content_type: str | None) -> str:
    """The bare media type of a Content-Type header, or raise 415 for one OTLP does not speak."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind in (PROTOBUF, JSON):
        return kind
    # Header values are never echoed (into the answer or the log): they may carry anything.
    raise UnsupportedMediaType(f"unsupported Content-Type: use {PROTOBUF} or {JSON}")


def decompress(body: bytes, content_encoding: str | None, max_bytes: int) -> bytes:
    """Undo Content-Encoding, refusing to inflate past `max_bytes` (decompression bombs)."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        if len(body) > max_bytes:
            raise PayloadTooLarge(f"body of {len(body)} bytes exceeds {max_bytes}")
        return body
    if encoding not in ("gzip", "deflate"):
        raise UnsupportedMediaType("unsupported Content-Encoding: use gzip")
    # wbits 47 accepts gzip and zlib headers; max_length stops a bomb before it inflates.
    inflater = zlib.decompressobj(47)
    try:
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise DecodeError(f"invalid {encoding} body: {exc}") from exc
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"decompressed body exceeds {max_bytes} bytes")
    if not inflater.eof:
        raise DecodeError(f"truncated {encoding} body")
    return out


def decode(
    body: bytes,
    content_type: str | None,
    content_encoding: str | None = None,
    *,
    max_decompressed_bytes: int = 64 << 20,
) -> list[Span]:
    kind = media_type(content_type)
    raw = decompress(body, content_encoding, max_decompressed_bytes)
    if kind == PROTOBUF:
        return decode_protobuf(raw)
    return decode_json(raw)


# --- protobuf -------------------------------------------------------------------------------


def decode_protobuf(raw: bytes) -> list[Span]:
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(raw)
    except (ProtobufDecodeError, RuntimeError, ValueError) as exc:
        raise DecodeError(f"undecodable OTLP protobuf: {exc}") from exc
    spans: list[Span] = []
    for resource_spans in request.resource_spans:
        resource = _pb_attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope_name = scope_spans.scope.name
            for s in scope_spans.spans:
                trace_id, span_id, parent = s.trace_id, s.span_id, s.parent_span_id
                if len(trace_id) != 16 or len(span_id) != 8 or len(parent) not in (0, 8):
                    raise DecodeError("span with invalid trace_id/span_id/parent_span_id length")
                spans.append(
                    Span(
                        trace_id=trace_id,
                        span_id=span_id,
                        parent_span_id=parent,
                        name=s.name,
                        start_ns=s.start_time_unix_nano,
                        end_ns=s.end_time_unix_nano,
                        attributes=_pb_attributes(s.attributes),
                        resource=resource,
                        scope_name=scope_name,
                        kind=s.kind,
                        status_code=s.status.code,
                    )
                )
    return spans


def _pb_attributes(key_values: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in key_values:
        value = _pb_value(kv.value)
        if value is not None:
            out[kv.key] = value
    return out


def _pb_value(v: Any) -> Any:
    which = v.WhichOneof("value")
    if which == "string_value":
        return v.string_value
    if which == "int_value":
        return v.int_value
    if which == "double_value":
        return v.double_value
    if which == "bool_value":
        return v.bool_value
    if which == "array_value":
        return [x for x in (_pb_value(e) for e in v.array_value.values) if x is not None]
    return None  # kvlist and bytes values carry nothing metering reads


# --- JSON -----------------------------------------------------------------------------------


def decode_json(raw: bytes) -> list[Span]:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"undecodable OTLP JSON: {exc}") from exc
    try:
        return _json_spans(doc)
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        # Not str(exc): int("...") and float("...") quote the offending value, and a value may be
        # a prompt. The exception's own words before the quote say what was wrong.
        raise DecodeError(f"malformed OTLP JSON: {type(exc).__name__}: {str(exc).split(':', 1)[0][:120]}") from exc


def _json_spans(doc: Any) -> list[Span]:
    if not isinstance(doc, dict):
        raise DecodeError("OTLP JSON must be an object with resourceSpans")
    spans: list[Span] = []
    for resource_spans in doc.get("resourceSpans") or ():
        resource = _json_attributes((resource_spans.get("resource") or {}).get("attributes"))
        for scope_spans in resource_spans.get("scopeSpans") or ():
            scope_name = (scope_spans.get("scope") or {}).get("name") or ""
            for s in scope_spans.get("spans") or ():
                status = s.get("status") or {}
                spans.append(
                    Span(
                        trace_id=_hex_id(s.get("traceId"), 16, "traceId"),
                        span_id=_hex_id(s.get("spanId"), 8, "spanId"),
                        parent_span_id=_hex_id(s.get("parentSpanId"), 8, "parentSpanId", optional=True),
                        name=str(s.get("name") or ""),
                        start_ns=int(s.get("startTimeUnixNano") or 0),
                        end_ns=int(s.get("endTimeUnixNano") or 0),
                        attributes=_json_attributes(s.get("attributes")),
                        resource=resource,
                        scope_name=str(scope_name),
                        kind=_enum(s.get("kind")),
                        status_code=_enum(status.get("code")),
                    )
                )
    return spans


_SPAN_ENUMS = {
    "SPAN_KIND_UNSPECIFIED": 0, "SPAN_KIND_INTERNAL": 1, "SPAN_KIND_SERVER": 2, "SPAN_KIND_CLIENT": 3,
    "SPAN_KIND_PRODUCER": 4, "SPAN_KIND_CONSUMER": 5,
    "STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2,
}


def _enum(value: Any) -> int:
    # The spec says integers; some senders write the enum's name.
    if value is None:
        return 0
    if isinstance(value, str) and not value.isdigit():
        return _SPAN_ENUMS.get(value, 0)
    return int(value)


def _hex_id(value: Any, size: int, field: str, optional: bool = False) -> bytes:
    if not value:
        if optional:
            return b""
        raise DecodeError(f"span without {field}")
    try:
        raw = bytes.fromhex(value)
    except (TypeError, ValueError) as exc:
        raise DecodeError(f"{field} is not hex") from exc
    if len(raw) != size:
        raise DecodeError(f"{field} must be {size} bytes, got {len(raw)}")
    return raw


def _json_attributes(items: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in items or ():
        value = _json_value(kv.get("value"))
        if value is not None:
            out[str(kv["key"])] = value
    return out


def _json_value(v: Any) -> Any:
    if not isinstance(v, dict):
        return None
    if "stringValue" in v:
        return str(v["stringValue"])
    if "intValue" in v:
        return int(v["intValue"])  # 64-bit integers arrive as strings in OTLP/JSON
    if "doubleValue" in v:
        return float(v["doubleValue"])
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "arrayValue" in v:
        values = (v["arrayValue"] or {}).get("values") or ()
        return [x for x in (_json_value(e) for e in values) if x is not None]
    return None


# --- responses ------------------------------------------------------------------------------


def encode_response(kind: str, rejected_spans: int = 0, message: str = "") -> bytes:
    """An ExportTraceServiceResponse in the request's encoding, with partial_success if any refused."""
    if kind == JSON:
        body: dict[str, Any] = {}
        if rejected_spans or message:
            body["partialSuccess"] = {"rejectedSpans": str(rejected_spans), "errorMessage": message}
        return orjson.dumps(body)
    response = ExportTraceServiceResponse()
    if rejected_spans or message:
        response.partial_success.rejected_spans = rejected_spans
        response.partial_success.error_message = message
    return response.SerializeToString()
