"""The compiled OTLP decoder (ingest/_otlp.c) against the Python decoder it stands in for.

The compiled decoder must give exactly the spans `decode_protobuf_python` gives, or None ("let
the Python decoder decide"): never a span list for a body the Python decoder refuses (400), never
different spans. Checked on the bench workload, on every recorded instrumentation fixture, and on
thousands of generated, adversarial and mutated exports; and it must take the fast path (not
answer None) on the exports real SDKs send, or it buys nothing.
"""

from __future__ import annotations

import base64
import json
import math
import random
import struct
from pathlib import Path

import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings, strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from spanmeter.ingest import decode as decode_module
from spanmeter.ingest.decode import _KeyValues, _key_value, decode_protobuf, decode_protobuf_python
from spanmeter.ingest.errors import DecodeError
from spanmeter.ingest.records import Span
from tests.support.otlp import BASE_TIME_NS, chat, span, to_protobuf

native = decode_module._native
pytestmark = pytest.mark.skipif(native is None, reason="the compiled decoder (ingest/_otlp.c) is not built")

FIXTURES = sorted((Path(__file__).resolve().parents[1] / "fixtures" / "instrumentations").rglob("*.json"))


def _canon(value):
    """A value with its type spelled out: True is not 1, 1.0 is not 1, and NaN equals NaN."""
    if isinstance(value, float):
        return ("float", struct.pack("<d", value))
    if isinstance(value, (bool, int, str, bytes)):
        return (type(value).__name__, value)
    if isinstance(value, list):
        return ("list", tuple(_canon(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple((k, _canon(v)) for k, v in value.items()))
    raise AssertionError(f"unexpected value type {type(value).__name__}")


def canon(spans: list[Span]) -> list:
    assert all(type(s) is Span for s in spans)
    return [tuple(_canon(getattr(s, name)) for name in Span.__slots__) for s in spans]


def compare(raw: bytes) -> bool:
    """Both decoders on `raw`; True when the compiled one answered (and agreed)."""
    # A fresh memo: every KeyValue is converted by the compiled decoder (or `_key_value`), so a
    # conversion is compared with the Python decoder's, not with a memoised one.
    fast = native.decode_spans(raw, Span, {}, _key_value, _KeyValues.limit)
    try:
        slow = decode_protobuf_python(raw)
    except DecodeError:
        assert fast is None, "the compiled decoder accepted a body the Python decoder refuses"
        return False
    if fast is None:
        return False
    assert canon(fast) == canon(slow)
    # Resource dicts are shared by the spans of one resource, as the Python decoder shares them.
    assert [id(s.resource) for s in fast].count(id(fast[0].resource)) == [
        id(s.resource) for s in slow].count(id(slow[0].resource)) if slow else True
    return True


def fixture_protobuf(path: Path) -> bytes:
    """A recorded OTLP/JSON fixture as the protobuf an SDK would have sent (hex ids as bytes)."""
    doc = json.loads(path.read_text())

    def ids(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
                    node[key] = base64.b64encode(bytes.fromhex(value)).decode()
                else:
                    ids(value)
        elif isinstance(node, list):
            for item in node:
                ids(item)

    ids(doc)
    return json_format.ParseDict(doc, ExportTraceServiceRequest(), ignore_unknown_fields=True).SerializeToString()


def test_the_bench_workload_takes_the_fast_path_with_identical_spans():
    from bench.workload import ExportTemplates

    templates = ExportTemplates.build(count=4, spans_per_export=300, seed=3)
    for i in range(8):
        assert compare(templates.body(i))


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_instrumentation_fixture_takes_the_fast_path_with_identical_spans(path):
    raw = fixture_protobuf(path)
    assert compare(raw)
    assert canon(decode_protobuf(raw)) == canon(decode_protobuf_python(raw))


def test_attributes_of_every_kind_and_the_memo():
    spans = [
        chat(1, 2, model="gpt-4o-mini", input=1200, output=300, cache_read=200, user="alice", parent=1),
        span("POST /ask", 1, 1, attrs={"http.route": "/ask", "ratio": 0.5, "tags": ["a", "b"], "ok": True,
                                       "neg": -5, "big": 2**63 - 1, "small": -(2**63), "nan": float("nan"),
                                       "inf": float("-inf"), "unicode": "héllo ☃ 𝄞", "": "", "nested": [[1], ["x"]]}),
    ]
    raw = to_protobuf(spans, service="billing")
    assert compare(raw)
    # Through the shared memo twice: the second time every KeyValue is a memo hit.
    assert canon(decode_protobuf(raw)) == canon(decode_protobuf(raw)) == canon(decode_protobuf_python(raw))


def _kv(key: str, value: AnyValue) -> KeyValue:
    return KeyValue(key=key, value=value)


def test_unusual_but_valid_shapes_agree():
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.schema_url = "https://opentelemetry.io/schemas/1.30.0"
    rs.resource.attributes.extend([_kv("service.name", AnyValue(string_value="svc")),
                                   _kv("service.name", AnyValue(string_value="svc2")),  # a duplicate key
                                   _kv("blob", AnyValue(bytes_value=b"\x00\x01")),  # unreadable: dropped
                                   _kv("empty", AnyValue())])
    ss = rs.scope_spans.add()
    ss.scope.name, ss.scope.version = "openlit", "1.0"
    ss.scope.attributes.append(_kv("scope.attr", AnyValue(int_value=3)))
    s = ss.spans.add(trace_id=b"t" * 16, span_id=b"s" * 8, name="chat", kind=3, trace_state="a=b", flags=0x301,
                     start_time_unix_nano=BASE_TIME_NS, end_time_unix_nano=BASE_TIME_NS + 1)
    s.status.code, s.status.message = 2, "boom ☃"
    event = s.events.add(name="gen_ai.content.prompt", time_unix_nano=5)
    event.attributes.append(_kv("gen_ai.prompt", AnyValue(string_value="never stored")))
    link = s.links.add(trace_id=b"u" * 16, span_id=b"v" * 8)
    link.attributes.append(_kv("k", AnyValue(bool_value=False)))
    kvlist = AnyValue()
    kvlist.kvlist_value.values.append(_kv("inner", AnyValue(int_value=1)))
    s.attributes.extend([_kv("kv", kvlist), _kv("x", AnyValue(int_value=1)), _kv("x", AnyValue()),
                         _kv("gen_ai.usage.input_tokens", AnyValue(int_value=10**12))])
    ss.spans.add(trace_id=b"t" * 16, span_id=b"w" * 8, parent_span_id=b"s" * 8)  # no name, no attributes
    rs2 = request.resource_spans.add()  # no resource: an empty dict, shared by its spans
    rs2.scope_spans.add().spans.add(trace_id=b"q" * 16, span_id=b"r" * 8)
    request.resource_spans.add()  # nothing at all
    assert compare(request.SerializeToString())


def _tag(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _ld(field: int, payload: bytes) -> bytes:
    return _tag(field, 2) + _varint(len(payload)) + payload


def _export(span_fields: bytes, scope: bytes = b"", resource: bytes = b"") -> bytes:
    scope_spans = (_ld(1, scope) if scope else b"") + _ld(2, span_fields)
    resource_spans = (_ld(1, resource) if resource else b"") + _ld(2, scope_spans)
    return _ld(1, resource_spans)


IDS = _ld(1, b"t" * 16) + _ld(2, b"s" * 8)


@pytest.mark.parametrize("raw", [
    _export(IDS + _ld(5, b"\xff\xfe")),  # span name not UTF-8
    _export(IDS + _ld(5, b"\xed\xa0\x80")),  # a UTF-16 surrogate encoded in UTF-8
    _export(IDS + _ld(5, b"\xc0\xaf")),  # an overlong encoding
    _export(IDS + _ld(11, _ld(2, b"\xff"))),  # an event's name not UTF-8
    _export(IDS + _ld(13, _ld(4, _ld(1, b"\xff")))),  # a link attribute's key not UTF-8
    _export(IDS + _ld(15, _ld(2, b"\x80"))),  # the status message not UTF-8
    _export(IDS, scope=_ld(2, b"\xff")),  # the scope version not UTF-8
    _export(IDS + _ld(9, _ld(1, b"\xff") + _ld(2, _ld(1, b"v")))),  # an attribute key not UTF-8
    _export(IDS + _ld(9, _ld(1, b"k") + _ld(2, _ld(1, b"\xff")))),  # an attribute value not UTF-8
    _export(IDS + _tag(7, 1) + b"\x00" * 7),  # a truncated fixed64
    _export(IDS + _tag(6, 0) + b"\xff" * 11),  # a varint past 10 bytes
    _export(IDS + _tag(20, 7)),  # wire type 7
    _export(IDS + _tag(0, 0) + b"\x00"),  # field number 0
    _export(IDS + _tag(5, 2) + _varint(1000) + b"x"),  # a length past the message's end
    _export(_ld(1, b"t" * 15) + _ld(2, b"s" * 8)),  # a trace id of 15 bytes
    _export(IDS + _ld(4, b"p" * 7)),  # a parent id of 7 bytes
    _export(_ld(1, b"t" * 16)),  # no span id
    _export(IDS + b"\x82\x00" + _varint(1) + b"x"),  # an overlong tag (field 2)
    b"\x0a",  # a length missing
    b"\x0a\x05\x12\x03",  # a length past the end of the body
])
def test_malformed_exports_are_left_to_the_python_decoder(raw):
    assert native.decode_spans(raw, Span, {}, _key_value, _KeyValues.limit) is None
    with pytest.raises(DecodeError):
        decode_protobuf(raw)


@pytest.mark.parametrize("raw", [
    _export(IDS + _ld(6, b"")),  # kind with the wrong wire type: an unknown field to protobuf
    _export(IDS + _tag(6, 0) + b"\xff\xff\xff\xff\x0f"),  # kind past int32
    _export(IDS + _tag(6, 0) + b"\x83\x00"),  # an overlong varint
    _export(IDS + _tag(9, 0) + b"\x01"),  # attributes with the wrong wire type
    _export(IDS + _ld(9, _ld(1, b"k") + _ld(2, _tag(2, 0) + b"\x02"))),  # a bool of 2
    _export(IDS + _ld(9, _ld(2, _ld(1, b"v")) + _ld(1, b"k"))),  # value before key
    _export(IDS + _ld(15, _tag(3, 0) + b"\x02") + _ld(15, _ld(2, b"m"))),  # status twice: merged
    _export(IDS, scope=_ld(1, b"a"), resource=_ld(1, _ld(1, b"k") + _ld(2, _ld(1, b"v")))),
    _export(IDS + _ld(1, b"T" * 16) + _ld(5, b"first") + _ld(5, b"second")),  # the last occurrence wins
    _export(IDS + _tag(20, 3) + _tag(20, 4)),  # an unknown group: protobuf keeps it, we let it decide
    _export(IDS + _tag(20, 0) + b"\x01" + _tag(21, 1) + b"\x00" * 8 + _tag(22, 5) + b"\x00" * 4 + _ld(23, b"?")),
])
def test_edge_encodings_agree_whoever_decides(raw):
    compare(raw)
    expected = canon(decode_protobuf_python(raw))
    assert canon(decode_protobuf(raw)) == expected


UINT64 = st.integers(0, 2**64 - 1)
SCALAR = st.one_of(st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                   st.text(max_size=30), st.binary(max_size=8))
VALUE = st.recursive(SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                     st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                     max_leaves=6)
KEYS = st.one_of(st.sampled_from(["gen_ai.usage.input_tokens", "gen_ai.request.model", "user.id", "service.name",
                                  "telemetry.sdk.name", "x"]), st.text(max_size=20))


def _any(value) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        out = AnyValue()
        out.array_value.values.extend(_any(v) for v in value)
        return out
    if isinstance(value, dict):
        out = AnyValue()
        out.kvlist_value.values.extend(_kv(k, _any(v)) for k, v in value.items())
        return out
    return AnyValue(string_value=value)


ATTRS = st.lists(st.tuples(KEYS, VALUE), max_size=8)


@st.composite
def exports(draw) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(0, 3))):
        rs = request.resource_spans.add()
        rs.resource.attributes.extend(_kv(k, _any(v)) for k, v in draw(ATTRS))
        for _ in range(draw(st.integers(0, 2))):
            ss = rs.scope_spans.add()
            ss.scope.name = draw(st.text(max_size=10))
            for _ in range(draw(st.integers(0, 4))):
                pb = ss.spans.add()
                pb.trace_id = draw(st.sampled_from([b"\x01" * 16, b"\x02" * 16, b"\x03" * 15, b""]))
                pb.span_id = draw(st.binary(min_size=7, max_size=9))
                pb.parent_span_id = draw(st.sampled_from([b"", b"\x05" * 8, b"\x06" * 3]))
                pb.name = draw(st.text(max_size=12))
                pb.start_time_unix_nano = draw(UINT64)
                pb.end_time_unix_nano = draw(UINT64)
                pb.kind = draw(st.integers(-(2**31), 2**31 - 1))
                pb.status.code = draw(st.integers(-3, 5))
                pb.attributes.extend(_kv(k, _any(v)) for k, v in draw(ATTRS))
                if draw(st.booleans()):
                    pb.events.add(name=draw(st.text(max_size=5))).attributes.extend(
                        _kv(k, _any(v)) for k, v in draw(ATTRS))
    return request


FUZZ = settings(max_examples=1500, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(request=exports())
def test_generated_exports_agree(request):
    compare(request.SerializeToString())


@FUZZ
@given(request=exports(), seed=st.integers(0, 2**32))
def test_mutated_exports_agree(request, seed):
    raw = bytearray(request.SerializeToString() or b"\x0a\x00")
    rnd = random.Random(seed)
    for _ in range(rnd.randint(1, 4)):
        at = rnd.randrange(len(raw) + 1)
        action = rnd.random()
        if action < 0.4 and at < len(raw):
            raw[at] = rnd.randrange(256)
        elif action < 0.6 and at < len(raw):
            raw[at] ^= 1 << rnd.randrange(8)
        elif action < 0.75:
            raw[at:at] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 4)))
        elif action < 0.9:
            del raw[at:at + rnd.randint(1, 4)]
        else:
            raw = raw[:at]
    compare(bytes(raw))


def test_mutations_of_the_bench_workload_agree():
    """Single-byte damage all over a real export: the compiled decoder never accepts what the
    Python decoder refuses, and agrees on whatever both accept."""
    from bench.workload import ExportTemplates

    body = ExportTemplates.build(count=1, spans_per_export=40, seed=5).body(0)
    rnd = random.Random(7)
    accepted = 0
    for _ in range(3000):
        raw = bytearray(body)
        for _ in range(rnd.randint(1, 3)):
            raw[rnd.randrange(len(raw))] = rnd.randrange(256)
        accepted += compare(bytes(raw))
    assert accepted  # some damage is harmless (a changed id or value), and the fast path keeps it


def test_depth_is_bounded():
    """Arrays nested 200 deep in an event's attribute (protobuf's own limit is 100)."""
    value = _tag(3, 0) + b"\x01"
    for _ in range(200):
        value = _ld(5, _ld(1, value))  # AnyValue{array_value: ArrayValue{values: [value]}}
    raw = _export(IDS + _ld(11, _ld(3, _ld(1, b"deep") + _ld(2, value))))
    assert native.decode_spans(raw, Span, {}, _key_value, _KeyValues.limit) is None
    with pytest.raises(DecodeError):
        decode_protobuf(raw)


def test_nan_compares_by_its_bits():
    assert _canon(math.nan) == _canon(math.nan) and _canon(1) != _canon(True) != _canon(1.0)
