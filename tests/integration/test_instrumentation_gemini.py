"""Gemini generateContent / streamGenerateContent through raw httpx (and httpx2) requests."""

from __future__ import annotations

import asyncio
import json

import httpx
import httpx2
import pytest

from spanmeter import semconv as sc
from spanmeter.ingest.fakeprovider import FakeProvider
from tests.unit.instrumentation.spanhelpers import attrs, instrumented, only_span

MODEL = "gemini-2.5-flash"
# input 50 (30 of them cached), output 52 = 12 candidates + 40 thoughts.
BODY = {"contents": [{"role": "user", "parts": [{"text": "a secret prompt"}]}], "fake": {"input": 50, "cached": 30, "output": 52, "reasoning": 40}}


@pytest.fixture(scope="module")
def fake():
    with FakeProvider(chunks=3) as f:
        yield f


@pytest.fixture
def exporter(fake):
    with instrumented() as exp:
        yield exp


def url(fake, method: str, sse: bool = False) -> str:
    return f"{fake.gemini_base_url}/v1beta/models/{MODEL}:{method}" + ("?alt=sse" if sse else "")


def expected(fake, streaming: bool, rid: str) -> dict:
    return {
        sc.GEN_AI_OPERATION_NAME: "generate_content",
        sc.GEN_AI_PROVIDER_NAME: "gcp.gemini",
        sc.GEN_AI_REQUEST_MODEL: MODEL,  # from the URL: Gemini bodies carry no model
        sc.SERVER_ADDRESS: "127.0.0.1",
        sc.SERVER_PORT: fake.port,
        sc.SPANMETER_STREAMING: streaming,
        sc.GEN_AI_RESPONSE_ID: rid,
        sc.GEN_AI_RESPONSE_MODEL: MODEL,
        sc.GEN_AI_RESPONSE_FINISH_REASONS: ["STOP"],
        sc.GEN_AI_USAGE_INPUT_TOKENS: 50,
        sc.GEN_AI_USAGE_OUTPUT_TOKENS: 52,  # candidatesTokenCount (12) + thoughtsTokenCount (40)
        sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 30,
        sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: 40,
        sc.SPANMETER_USAGE_STATUS: "reported",
    }


def test_generate_content_httpx(fake, exporter) -> None:
    response = httpx.post(url(fake, "generateContent"), json=BODY)
    body = response.json()
    assert body["usageMetadata"]["candidatesTokenCount"] == 12
    span = only_span(exporter)
    assert span.name == "generate_content gemini-2.5-flash"
    assert attrs(span) == expected(fake, False, body["responseId"])


def test_stream_sse_read_incrementally(fake, exporter) -> None:
    with httpx.Client() as client, client.stream("POST", url(fake, "streamGenerateContent", sse=True), json=BODY) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert len(lines) == 3

    rid = json.loads(lines[-1][6:])["responseId"]
    assert attrs(only_span(exporter)) == expected(fake, True, rid)


def test_stream_sse_read_whole(fake, exporter) -> None:
    # stream=False on a streaming endpoint: httpx reads the body inside send, parsed at once.
    response = httpx2.post(url(fake, "streamGenerateContent", sse=True), json=BODY)
    assert response.text.count("\r\n\r\n") == 3
    a = attrs(only_span(exporter))
    assert a[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 52 and a[sc.SPANMETER_USAGE_STATUS] == "reported"


def test_stream_json_array(fake, exporter) -> None:
    with httpx.Client() as client, client.stream("POST", url(fake, "streamGenerateContent"), json=BODY) as response:
        chunks = json.loads(response.read())
    assert isinstance(chunks, list) and len(chunks) == 3
    assert attrs(only_span(exporter)) == expected(fake, True, chunks[-1]["responseId"])


def test_async_httpx2_stream(fake, exporter) -> None:
    async def main() -> int:
        async with httpx2.AsyncClient() as client, client.stream("POST", url(fake, "streamGenerateContent", sse=True), json=BODY) as response:
            return sum([1 async for _ in response.aiter_bytes()])

    assert asyncio.run(main()) >= 1
    a = attrs(only_span(exporter))
    assert a[sc.GEN_AI_USAGE_INPUT_TOKENS] == 50 and a[sc.SPANMETER_STREAMING] is True


def test_stream_closed_before_finish_is_incomplete(fake, exporter) -> None:
    body = {**BODY, "fake": {**BODY["fake"], "chunks": 30}}
    with httpx.Client() as client, client.stream("POST", url(fake, "streamGenerateContent", sse=True), json=body) as response:
        next(response.iter_raw())
    a = attrs(only_span(exporter))
    assert a[sc.SPANMETER_USAGE_STATUS] == "incomplete"
    assert sc.ERROR_TYPE not in a


def test_error_status(fake, exporter) -> None:
    response = httpx.post(url(fake, "generateContent"), json={**BODY, "fake": {"error": 429}})
    assert response.status_code == 429 and response.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    a = attrs(only_span(exporter))
    assert (a[sc.ERROR_TYPE], a[sc.SPANMETER_USAGE_STATUS]) == ("429", "missing")
