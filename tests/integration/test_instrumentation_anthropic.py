"""The real `anthropic` SDK (over httpx) against the fake provider: every span attribute, exactly."""

from __future__ import annotations

import asyncio
import gc

import anthropic
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import spanmeter
from spanmeter import SpanmeterInstrumentor
from spanmeter import semconv as sc
from spanmeter.ingest.fakeprovider import FakeProvider
from tests.unit.instrumentation.spanhelpers import attrs, finished, instrumented, only_span

MODEL = "claude-haiku-4-5"
MESSAGES = [{"role": "user", "content": "a secret prompt"}]
# The fake's counts: input (inclusive) 100 = 73 uncached + 20 cache reads + 7 cache writes.
CONTROLS = {"fake": {"input": 100, "cached": 20, "cache_write": 7, "output": 12, "message_deltas": 3}}


@pytest.fixture(scope="module")
def fake():
    with FakeProvider(chunks=4) as f:
        yield f


@pytest.fixture
def exporter(fake):
    fake.reset()
    with instrumented() as exp:
        yield exp


@pytest.fixture
def client(fake):
    return anthropic.Anthropic(base_url=fake.anthropic_base_url, api_key="k", max_retries=0)


@pytest.fixture
def aclient(fake):
    return anthropic.AsyncAnthropic(base_url=fake.anthropic_base_url, api_key="k", max_retries=0)


def base(fake, streaming: bool, model: str = MODEL) -> dict:
    return {
        sc.GEN_AI_OPERATION_NAME: "chat",
        sc.GEN_AI_PROVIDER_NAME: "anthropic",
        sc.GEN_AI_REQUEST_MODEL: model,
        sc.SERVER_ADDRESS: "127.0.0.1",
        sc.SERVER_PORT: fake.port,
        sc.SPANMETER_STREAMING: streaming,
    }


def reported(fake, streaming: bool, rid: str) -> dict:
    return {
        **base(fake, streaming),
        sc.GEN_AI_RESPONSE_ID: rid,
        sc.GEN_AI_RESPONSE_MODEL: MODEL,
        sc.GEN_AI_RESPONSE_FINISH_REASONS: ["end_turn"],
        sc.GEN_AI_USAGE_INPUT_TOKENS: 100,  # raw input_tokens was 73: made inclusive
        sc.GEN_AI_USAGE_OUTPUT_TOKENS: 12,  # last cumulative message_delta, not the sum
        sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 20,
        sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: 7,
        sc.SPANMETER_USAGE_STATUS: "reported",
    }


def test_messages_sync(fake, exporter, client) -> None:
    message = client.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES, extra_body=CONTROLS)
    assert message.usage.input_tokens == 73
    span = only_span(exporter)
    assert span.name == "chat claude-haiku-4-5" and span.kind.name == "CLIENT"
    assert attrs(span) == reported(fake, False, message.id)
    assert all("secret" not in str(v) and "alpha" not in str(v) for v in span.attributes.values())


def test_messages_stream_raw_events(fake, exporter, client) -> None:
    events = list(client.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES, stream=True, extra_body=CONTROLS))
    assert [e.type for e in events].count("message_delta") == 3
    assert attrs(only_span(exporter)) == reported(fake, True, events[0].message.id)


def test_messages_stream_helper(fake, exporter, client) -> None:
    with client.messages.stream(model=MODEL, max_tokens=100, messages=MESSAGES, extra_body=CONTROLS) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "alpha bravo charlie delta "
    assert final.usage.output_tokens == 12
    assert attrs(only_span(exporter)) == reported(fake, True, final.id)


def test_async_messages_and_stream(fake, exporter, aclient) -> None:
    async def main():
        message = await aclient.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES, extra_body=CONTROLS)
        async with aclient.messages.stream(model=MODEL, max_tokens=100, messages=MESSAGES, extra_body=CONTROLS) as stream:
            async for _ in stream.text_stream:
                pass
            final = await stream.get_final_message()
        await aclient.close()
        return message, final

    message, final = asyncio.run(main())
    first, second = sorted(finished(exporter), key=lambda s: s.start_time)
    assert attrs(first) == reported(fake, False, message.id)
    assert attrs(second) == reported(fake, True, final.id)


def test_stream_abandoned_half_way_keeps_exact_input_as_incomplete(fake, exporter, client) -> None:
    stream = client.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES, stream=True, extra_body={"fake": {**CONTROLS["fake"], "chunks": 40}})
    it = iter(stream)
    start = next(it)
    next(it)
    stream.close()
    span = only_span(exporter)
    assert attrs(span) == {
        **base(fake, True),
        sc.GEN_AI_RESPONSE_ID: start.message.id,
        sc.GEN_AI_RESPONSE_MODEL: MODEL,
        # message_start's counts: input exact, output only what was reported so far (a lower bound).
        sc.GEN_AI_USAGE_INPUT_TOKENS: 100,
        sc.GEN_AI_USAGE_OUTPUT_TOKENS: 1,
        sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 20,
        sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: 7,
        sc.SPANMETER_USAGE_STATUS: "incomplete",
    }


def test_async_stream_abandoned_ends_span(fake, exporter, aclient) -> None:
    async def main():
        stream = await aclient.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES, stream=True, extra_body={"fake": {"chunks": 40}})
        async for event in stream:
            if event.type == "content_block_delta":
                break
        await stream.close()
        await aclient.close()

    asyncio.run(main())
    gc.collect()
    assert attrs(only_span(exporter))[sc.SPANMETER_USAGE_STATUS] == "incomplete"


@pytest.mark.parametrize(("status", "exc"), [(429, anthropic.RateLimitError), (529, anthropic.APIStatusError), (400, anthropic.BadRequestError)])
def test_http_errors(fake, exporter, client, status, exc) -> None:
    with pytest.raises(exc) as raised:
        client.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES, extra_body={"fake": {"error": status}})
    assert raised.value.status_code == status
    span = only_span(exporter)
    assert attrs(span) == {**base(fake, False), sc.ERROR_TYPE: str(status), sc.SPANMETER_USAGE_STATUS: "missing"}
    assert span.status.status_code.name == "ERROR"


def test_metadata_user_id_fallback_and_scope(fake, exporter, client) -> None:
    client.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES, metadata={"user_id": "anthropic-user"})
    with spanmeter.attributes(user_id="scoped", feature="chatbot"):
        client.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES, metadata={"user_id": "anthropic-user"})
    fallback, scoped = (attrs(s) for s in sorted(finished(exporter), key=lambda s: s.start_time))
    assert fallback[sc.USER_ID] == "anthropic-user"
    assert (scoped[sc.USER_ID], scoped[sc.SPANMETER_FEATURE]) == ("scoped", "chatbot")


def test_sdk_own_usage_span_is_the_parent_of_ours(fake) -> None:
    """anthropic 2.x traces its calls itself: its span wraps ours, which is the leaf to count.

    Both carry usage and the same response id; the ingest's leaf rule keeps ours (the deepest)
    and drops the SDK's, so a call counts once.
    """
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = SpanmeterInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        traced = anthropic.Anthropic(base_url=fake.anthropic_base_url, api_key="k", max_retries=0, open_telemetry={"tracer_provider": provider})
        message = traced.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES, extra_body=CONTROLS)
    finally:
        instrumentor.uninstrument()
    spans = finished(exporter)
    ours = only_span(exporter)
    (sdk,) = [s for s in spans if s is not ours]
    assert sdk.instrumentation_scope.name == "com.anthropic.sdk.python"
    assert ours.parent is not None and ours.parent.span_id == sdk.context.span_id
    assert sdk.attributes["gen_ai.response.id"] == ours.attributes[sc.GEN_AI_RESPONSE_ID] == message.id
    assert sdk.attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] == ours.attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] == 100
