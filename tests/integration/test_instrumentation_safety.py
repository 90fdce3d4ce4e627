"""Instrumentation never breaks the app: our failures stay ours, the app's exceptions stay the app's."""

from __future__ import annotations

import re
import traceback

import httpx
import httpx2
import openai
import pytest
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from spanmeter import SpanmeterInstrumentor
from spanmeter import semconv as sc
from spanmeter._sse import SSEParser
from spanmeter.ingest.fakeprovider import FakeProvider
from tests.unit.instrumentation.spanhelpers import attrs, finished, instrumented, only_span

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def fake():
    with FakeProvider(chunks=6) as f:
        yield f


def raw_stream(fake, lib=httpx2, **fake_controls) -> bytes:
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}, "fake": fake_controls}
    with lib.Client() as client, client.stream("POST", fake.openai_base_url + "/chat/completions", json=body) as response:
        return b"".join(response.iter_raw())


# --- our own failures ---------------------------------------------------------------------------


def test_failure_recognising_the_request(fake, monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise RuntimeError("spanmeter bug")

    monkeypatch.setattr("spanmeter._providers.parse_request", boom)
    with instrumented() as exporter:
        client = openai.OpenAI(base_url=fake.openai_base_url, api_key="k", max_retries=0)
        result = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert result.usage.total_tokens > 0
    assert finished(exporter) == ()  # no span rather than a broken call


def test_failure_parsing_a_stream_hands_the_app_every_byte(fake, monkeypatch) -> None:
    expected = raw_stream(fake)

    def boom(self, chunk):
        raise ValueError("parser bug")

    class BrokenRecent(list):  # the chat stream's record of recent events
        def __init__(self, maxlen: int) -> None:
            super().__init__()

        def append(self, item: bytes) -> None:
            raise ValueError("recorder bug")

    # A chunk of one whole event skips the SSE parser and goes straight to the stream's record:
    # break both, whatever the chunking on the socket.
    monkeypatch.setattr(SSEParser, "feed", boom)
    monkeypatch.setattr("spanmeter._providers.deque", BrokenRecent)
    with instrumented() as exporter:
        got = raw_stream(fake)
    def same_ids(raw: bytes) -> bytes:
        return re.sub(rb"chatcmpl-fake-\d+", b"ID", raw)

    assert same_ids(got) == same_ids(expected)
    assert attrs(only_span(exporter))[sc.SPANMETER_USAGE_STATUS] == "missing"


def test_failure_in_the_tracer(fake) -> None:
    class BrokenTracerProvider(TracerProvider):
        def get_tracer(self, *args, **kwargs):
            tracer = super().get_tracer(*args, **kwargs)

            def start_span(*a, **k):
                raise RuntimeError("tracer bug")

            tracer.start_span = start_span  # type: ignore[method-assign]
            return tracer

    instrumentor = SpanmeterInstrumentor()
    instrumentor.instrument(tracer_provider=BrokenTracerProvider())
    try:
        client = openai.OpenAI(base_url=fake.openai_base_url, api_key="k", max_retries=0)
        assert client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices
        assert [c for c in client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)]
    finally:
        instrumentor.uninstrument()


def test_failure_in_a_span_processor_and_in_hooks(fake) -> None:
    class Exploding(SpanProcessor):
        def on_end(self, span):
            raise RuntimeError("processor bug")

    def bad_hook(*args):
        raise RuntimeError("hook bug")

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.add_span_processor(Exploding())
    instrumentor = SpanmeterInstrumentor()
    instrumentor.instrument(tracer_provider=provider, request_hook=bad_hook, response_hook=bad_hook)
    try:
        client = openai.OpenAI(base_url=fake.openai_base_url, api_key="k", max_retries=0)
        assert client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices
        assert len(list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))) == 8
    finally:
        instrumentor.uninstrument()
    assert [attrs(s)[sc.SPANMETER_USAGE_STATUS] for s in finished(exporter)] == ["reported", "reported"]


def test_hooks_get_the_span(fake) -> None:
    seen = []
    with instrumented(
        request_hook=lambda span, request: span.set_attribute("app.route", "/chat"),
        response_hook=lambda span, request, response: seen.append(response.status_code),
    ) as exporter:
        openai.OpenAI(base_url=fake.openai_base_url, api_key="k").chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert attrs(only_span(exporter))["app.route"] == "/chat" and seen == [200]


# --- the app's exceptions -------------------------------------------------------------------------


class AppError(Exception):
    pass


def raising_transport(lib):
    class T(lib.BaseTransport):
        def handle_request(self, request):
            raise AppError("from the transport")

    return T()


@pytest.mark.parametrize("lib", [httpx, httpx2])
def test_exception_from_the_request_passes_through_unchanged(lib) -> None:
    with instrumented() as exporter, lib.Client(transport=raising_transport(lib)) as client:
        with pytest.raises(AppError) as raised:
            client.post("http://llm.internal/v1/chat/completions", json={"model": "m", "messages": []})
    assert str(raised.value) == "from the transport"
    assert traceback.extract_tb(raised.value.__traceback__)[-1].name == "handle_request"
    assert attrs(only_span(exporter))[sc.ERROR_TYPE] == "AppError"


@pytest.mark.parametrize("lib", [httpx, httpx2])
def test_exception_from_the_body_passes_through_unchanged(lib) -> None:
    error = AppError("mid-body")

    def chunks():
        yield b'data: {"id":"x","model":"m","choices":[]}\n\n'
        raise error

    def handler(request):
        return lib.Response(200, headers={"content-type": "text/event-stream"}, content=chunks())

    with instrumented() as exporter, lib.Client(transport=lib.MockTransport(handler)) as client:
        with client.stream("POST", "http://llm.internal/v1/chat/completions", json={"model": "m", "stream": True, "stream_options": {"include_usage": True}}) as response:
            with pytest.raises(AppError) as raised:
                for _ in response.iter_raw():
                    pass
    assert raised.value is error
    assert traceback.extract_tb(raised.value.__traceback__)[-1].name == "chunks"
    a = attrs(only_span(exporter))
    assert (a[sc.ERROR_TYPE], a[sc.SPANMETER_USAGE_STATUS]) == ("AppError", "incomplete")


def test_keyboard_interrupt_passes_through() -> None:
    def handler(request):
        raise KeyboardInterrupt

    with instrumented() as exporter, httpx.Client(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(KeyboardInterrupt):
            client.post("http://x/v1/messages", json={"model": "claude-haiku-4-5"})
    assert attrs(only_span(exporter))[sc.ERROR_TYPE] == "KeyboardInterrupt"


# --- everything else is untouched ---------------------------------------------------------------------


def test_non_llm_requests_make_no_span_and_are_unchanged(fake) -> None:
    fake.reset()
    with instrumented() as exporter, httpx2.Client() as client:
        client.get(fake.base_url + "/health")
        client.post(fake.openai_base_url + "/files", content=b'{"purpose":"x","stream":true}')
        client.post(fake.openai_base_url + "/threads/t_1/messages", json={"role": "user", "content": "x"})
    assert finished(exporter) == ()
    assert fake.requests[1].body == {"purpose": "x", "stream": True}


def test_suppressed_instrumentation_makes_no_span(fake) -> None:
    with instrumented() as exporter, suppress_instrumentation():
        openai.OpenAI(base_url=fake.openai_base_url, api_key="k").chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert finished(exporter) == ()


def test_uninstrument_restores_the_original_methods() -> None:
    originals = {cls: cls.__dict__["send"] for cls in (httpx.Client, httpx.AsyncClient, httpx2.Client, httpx2.AsyncClient)}
    with instrumented():
        assert all(cls.__dict__["send"] is not fn for cls, fn in originals.items())
    assert all(cls.__dict__["send"] is fn for cls, fn in originals.items())


def test_streaming_upload_body_is_never_read() -> None:
    def body():
        yield b'{"model":"m",'
        yield b'"messages":[]}'

    seen = []

    def handler(request):
        seen.append(request.read())
        return httpx.Response(200, json={"id": "x", "model": "m", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 0}})

    with instrumented() as exporter, httpx.Client(transport=httpx.MockTransport(handler)) as client:
        client.post("http://x/v1/chat/completions", content=body())
    assert seen == [b'{"model":"m","messages":[]}']
    a = attrs(only_span(exporter))
    assert sc.GEN_AI_REQUEST_MODEL not in a and a[sc.GEN_AI_RESPONSE_MODEL] == "m"


def test_every_span_ends_exactly_once(fake, caplog) -> None:
    """Read to the end then closed, closed twice, abandoned then collected: one end() each."""
    import gc
    import logging

    caplog.set_level(logging.WARNING, logger="opentelemetry.sdk.trace")
    client = openai.OpenAI(base_url=fake.openai_base_url, api_key="k", max_retries=0)
    with instrumented() as exporter:
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        list(stream)
        stream.close()
        stream.close()
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_body={"fake": {"chunks": 30}})
        next(iter(stream))
        stream.close()
        del stream
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_body={"fake": {"chunks": 30}})
        next(iter(stream))
        del stream
        gc.collect()
        with httpx2.Client() as raw, raw.stream("POST", fake.openai_base_url + "/chat/completions", json={"model": "m", "stream": True}) as response:
            response.read()
            response.close()
    statuses = sorted(attrs(s)[sc.SPANMETER_USAGE_STATUS] for s in finished(exporter))
    assert statuses == ["incomplete", "incomplete", "reported", "reported"]
    assert not [r for r in caplog.records if "ended span" in r.getMessage()]
