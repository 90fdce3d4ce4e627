"""Decode stage: an OTLP/HTTP trace export (protobuf or JSON, optionally gzip) into `Span`s.

    spans = decode(body, content_type="application/x-protobuf", content_encoding="gzip",
                   max_decompressed_bytes=64 << 20)

Only what metering needs is kept: ids, name, times, status, scalar attributes and the resource's
attributes. Span events and links are skipped entirely (they carry content we never store).
Raises `DecodeError` (400), `UnsupportedMediaType` (415) or `PayloadTooLarge` (413).
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import orjson
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.message_factory import GetMessageClass
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

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


def answer_type(content_type: str | None) -> str:
    """The encoding to answer an export in, even one refused before its media type is checked:
    JSON when the request looks like JSON, protobuf otherwise."""
    return JSON if "json" in (content_type or "") else PROTOBUF


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
#
# Speed. Parsing an export with upb costs ~1 µs per span, but every value read through the
# generated classes costs 0.1-0.5 µs, and converting ~20 attributes per span through them cost
# ~25 µs per span. So the export is parsed with a second descriptor of the same wire format
# (`_decoding_schema`) that declares each span and resource attribute `KeyValue` as opaque
# `bytes`. A `KeyValue`'s bytes repeat across spans (the same model, provider, user, feature ...),
# so they are converted once and memoised in `_KEY_VALUES`; the common encodings are read
# directly (`_key_value`) and anything else is handed to the official generated classes, so every
# value means exactly what it meant before, and a malformed one is still a 400. Declaring the
# attributes `map<string, AnyValue>` was measured too: iterating its wrappers alone costs ~7 µs
# per span, and a map loses the order and the duplicate-key rule of the repeated KeyValue.
# Faster still, when it is built: ingest/_otlp.c reads the same wire format straight into the same
# `Span`s (about half the CPU of this decoder), and hands back to it every body it is not sure of.


def _decoding_schema() -> Any:
    """ExportTraceServiceRequest from opentelemetry-proto's own descriptors, in a pool of its own,
    with one change: `Span.attributes` and `Resource.attributes` are `repeated bytes` (each entry
    a whole KeyValue). Same wire format, and every other field (events, links ...) is still parsed
    and validated as before; the KeyValue bytes are validated when `_key_value` converts them."""
    pool = descriptor_pool.DescriptorPool()
    for module in (common_pb2, resource_pb2, trace_pb2, trace_service_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        for message in proto.message_type:
            if message.name in ("Resource", "Span"):
                for field in message.field:
                    if field.name == "attributes":
                        field.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
                        field.ClearField("type_name")
        pool.Add(proto)
    request = trace_service_pb2.ExportTraceServiceRequest.DESCRIPTOR.full_name
    return GetMessageClass(pool.FindMessageTypeByName(request))


_ExportRequest = _decoding_schema()

class _FrozenList(list):
    """A list attribute value shared by every span that carries the same KeyValue bytes: equal to
    and read like a list; changing it raises instead of changing other spans' attributes."""

    __slots__ = ()

    def _frozen(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("decoded attribute values are read-only")

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _frozen
    append = extend = insert = pop = remove = clear = sort = reverse = _frozen


class _KeyValues(dict):
    """KeyValue bytes -> (key, value), converting on a miss. Bounded: emptied when full, since
    values that never repeat (response ids) would otherwise grow it forever."""

    limit = 1 << 16

    def __missing__(self, raw: bytes) -> tuple[str, Any]:
        kv = _key_value(raw)
        if len(self) >= self.limit:
            self.clear()
        self[raw] = kv
        return kv


_KEY_VALUES = _KeyValues()
_DOUBLE = struct.Struct("<d").unpack

# The compiled fast path (ingest/_otlp.c, an optional extension: absent when it was not built).
# It yields exactly the spans `decode_protobuf_python` yields, with the same memo of KeyValues,
# and answers None for anything it is not sure of (every body that is a 400 among them).
try:
    from . import _otlp as _native
except ImportError:  # not built (no compiler at install time): the Python decoder does it all
    _native = None


def decode_protobuf(raw: bytes) -> list[Span]:
    """The spans of an export; the compiled decoder when it is built and sure of its answer, else
    (and always for a body it would refuse) `decode_protobuf_python`, which decides."""
    if _native is not None:
        spans = _native.decode_spans(raw, Span, _KEY_VALUES, _key_value, _KeyValues.limit)
        if spans is not None:
            return spans
    return decode_protobuf_python(raw)


def decode_protobuf_python(raw: bytes) -> list[Span]:
    request = _ExportRequest()
    try:
        request.ParseFromString(raw)
        spans: list[Span] = []
        append = spans.append
        for resource_spans in request.resource_spans:
            resource = _pb_attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                scope_name = scope_spans.scope.name
                for s in scope_spans.spans:
                    trace_id, span_id, parent = s.trace_id, s.span_id, s.parent_span_id
                    if len(trace_id) != 16 or len(span_id) != 8 or len(parent) not in (0, 8):
                        raise DecodeError("span with invalid trace_id/span_id/parent_span_id length")
                    append(Span(
                        trace_id, span_id, parent, s.name, s.start_time_unix_nano, s.end_time_unix_nano,
                        _pb_attributes(s.attributes), resource, scope_name, s.kind, s.status.code,
                    ))
    except (ProtobufDecodeError, RuntimeError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise DecodeError(f"undecodable OTLP protobuf: {exc}") from exc
    return spans


def _pb_attributes(key_values: Any, _lookup=_KEY_VALUES.__getitem__) -> dict[str, Any]:
    key_values = key_values[:]  # a list in one call: iterating the container costs twice as much
    out = dict(map(_lookup, key_values))
    if len(out) != len(key_values) or None in out.values():
        # A duplicate key, or a value metering cannot read (kvlist, bytes, empty): that value is
        # dropped and does not hide an earlier readable one of the same key; the last one wins.
        out = {}
        for raw in key_values:
            key, value = _lookup(raw)
            if value is not None:
                out[key] = value
    return out


def _key_value(raw: bytes) -> tuple[str, Any]:
    """Convert one KeyValue's bytes. Reads the encodings every SDK writes (the key,
    then one scalar value, lengths under 128) directly; anything else goes to the generated class."""
    kv = None
    size = len(raw)
    n = raw[1] if size > 4 else 0x80
    # Every length and varint here is a single byte under 0x80, or the general parser decides.
    if n < 0x80 and raw[0] == 0x0A and size > n + 4 and raw[n + 2] == 0x12 and raw[n + 3] == size - n - 4 < 0x80:
        key = raw[2:n + 2].decode()
        tag = raw[n + 4]
        first = n + 5  # the value's first byte
        if tag == 0x0A:  # string_value
            if raw[first] == size - first - 1 < 0x80:
                kv = (key, raw[first + 1:].decode())
        elif tag == 0x18:  # int_value: a varint, two's complement
            length = size - first
            b0 = raw[first]
            if length == 1 and b0 < 0x80:
                kv = (key, b0)
            elif length == 2 and b0 & 0x80 and raw[first + 1] < 0x80:
                kv = (key, (b0 & 0x7F) | raw[first + 1] << 7)
            elif length == 3 and b0 & 0x80 and raw[first + 1] & 0x80 and raw[first + 2] < 0x80:
                kv = (key, (b0 & 0x7F) | (raw[first + 1] & 0x7F) << 7 | raw[first + 2] << 14)
        elif tag == 0x21 and size - first == 8:  # double_value
            kv = (key, _DOUBLE(raw[first:])[0])
        elif tag == 0x10 and size - first == 1 and raw[first] < 0x80:  # bool_value
            kv = (key, raw[first] != 0)
    if kv is None:
        parsed = KeyValue.FromString(raw)
        value = _pb_value(parsed.value)
        kv = (parsed.key, _FrozenList(value) if isinstance(value, list) else value)
    return kv


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


_MAX_JSON_DEPTH = 64  # arrays within arrays: protobuf's parser refuses nesting past 100 too


def _json_value(v: Any, depth: int = 0) -> Any:
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
        if depth >= _MAX_JSON_DEPTH:
            # 400, and never a RecursionError (a 503 retried forever) whatever the stack left.
            raise DecodeError(f"attribute value nested deeper than {_MAX_JSON_DEPTH} arrays")
        values = (v["arrayValue"] or {}).get("values") or ()
        return [x for x in (_json_value(e, depth + 1) for e in values) if x is not None]
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
