"""Decode stage: OTLP protobuf and JSON to spans, and every way a body can be refused."""

import gzip
import zlib

import pytest

from spanmeter.ingest import decode as decode_module
from spanmeter.ingest.decode import decode, decompress, encode_response, media_type
from spanmeter.ingest.errors import DecodeError, PayloadTooLarge, UnsupportedMediaType
from tests.support.otlp import BASE_TIME_NS, chat, span, span_id, to_json, to_protobuf, trace_id



@pytest.fixture(autouse=True, params=["compiled", "python"])
def protobuf_decoder(request, monkeypatch):
    """Every test with each protobuf decoder: the compiled one (ingest/_otlp.c) and the Python one
    it falls back to (when it is not built, and for every body it is not sure of)."""
    if request.param == "python":
        monkeypatch.setattr(decode_module, "_native", None)
    elif decode_module._native is None:
        pytest.skip("the compiled decoder is not built")
    return request.param


SPANS = [
    chat(1, 2, model="gpt-4o-mini", input=1200, output=300, cache_read=200, user="alice", parent=1),
    span("POST /ask", 1, 1, attrs={"http.route": "/ask", "ratio": 0.5, "tags": ["a", "b"], "ok": True}),
]


@pytest.mark.parametrize("encode,kind", [(to_protobuf, "application/x-protobuf"), (to_json, "application/json")])
def test_both_encodings_decode_to_the_same_spans(encode, kind):
    spans = decode(encode(SPANS, service="billing"), kind)
    assert [s.name for s in spans] == ["chat gpt-4o-mini", "POST /ask"]
    llm, root = spans
    assert llm.trace_id == trace_id(1) and llm.span_id == span_id(2) and llm.parent_span_id == span_id(1)
    assert root.parent_span_id == b""
    assert llm.start_ns == BASE_TIME_NS and llm.end_ns == BASE_TIME_NS + 1_000_000_000
    assert llm.attributes["gen_ai.usage.input_tokens"] == 1200
    assert llm.attributes["gen_ai.usage.cache_read.input_tokens"] == 200
    assert llm.attributes["user.id"] == "alice"
    assert root.attributes == {"http.route": "/ask", "ratio": 0.5, "tags": ["a", "b"], "ok": True}
    assert llm.resource == {"service.name": "billing"}
    assert llm.kind == 3


def test_content_type_parameters_and_case_are_accepted():
    assert media_type("Application/JSON; charset=utf-8") == "application/json"
    with pytest.raises(UnsupportedMediaType):
        media_type("text/plain")
    with pytest.raises(UnsupportedMediaType):
        media_type(None)


def test_gzip_and_deflate_bodies():
    body = to_protobuf(SPANS)
    assert len(decode(gzip.compress(body), "application/x-protobuf", "gzip")) == 2
    assert len(decode(zlib.compress(body), "application/x-protobuf", "deflate")) == 2
    with pytest.raises(UnsupportedMediaType):
        decode(body, "application/x-protobuf", "br")


def test_bad_gzip_truncated_gzip_and_bombs():
    with pytest.raises(DecodeError):
        decompress(b"not gzip at all", "gzip", 1 << 20)
    with pytest.raises(DecodeError):
        decompress(gzip.compress(b"x" * 10_000)[:-12], "gzip", 1 << 20)
    bomb = gzip.compress(b"\0" * (50 << 20))  # 50 MiB of zeros in ~50 KiB
    assert len(bomb) < 100_000
    with pytest.raises(PayloadTooLarge):
        decompress(bomb, "gzip", 1 << 20)
    with pytest.raises(PayloadTooLarge):
        decompress(b"x" * 11, None, 10)


def test_truncated_protobuf_and_broken_json_are_decode_errors():
    body = to_protobuf(SPANS)
    with pytest.raises(DecodeError):
        decode(body[: len(body) // 2], "application/x-protobuf")
    with pytest.raises(DecodeError):
        decode(b"{not json", "application/json")
    with pytest.raises(DecodeError):
        decode(b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz", "spanId": "00"}]}]}]}', "application/json")
    with pytest.raises(DecodeError):
        decode(b"[1, 2]", "application/json")


def test_json_ids_must_be_hex_of_the_right_length():
    doc = b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0102","spanId":"0000000000000001"}]}]}]}'
    with pytest.raises(DecodeError, match="traceId must be 16 bytes"):
        decode(doc, "application/json")


def test_response_reports_partial_success_in_the_request_encoding():
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    pb = ExportTraceServiceResponse.FromString(encode_response("application/x-protobuf", 2, "two refused"))
    assert pb.partial_success.rejected_spans == 2 and pb.partial_success.error_message == "two refused"
    assert encode_response("application/json") == b"{}"
    assert encode_response("application/json", 1, "m") == b'{"partialSuccess":{"rejectedSpans":"1","errorMessage":"m"}}'


def test_json_arrays_nested_past_the_limit_are_a_400_not_a_recursion_error():
    from spanmeter.ingest.decode import decode_json

    def doc(depth: int) -> bytes:
        value = '{"arrayValue":{"values":[' * depth + '{"intValue":"7"}' + "]}}" * depth
        return ('{"resourceSpans":[{"resource":{"attributes":[{"key":"k","value":' + value + '}]},'
                '"scopeSpans":[]}]}').encode()

    with pytest.raises(DecodeError, match="nested deeper than 64"):
        decode_json(doc(65))
    assert decode_json(doc(64)) == []  # accepted (no spans in it)
