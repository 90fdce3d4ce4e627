"""The real `openai` SDK (over httpx2) against the fake provider: every span attribute, exactly."""

from __future__ import annotations

import asyncio
import gc
import json

import httpx2
import openai
import pytest

import spanmeter
from spanmeter import semconv as sc
from spanmeter._config import get_settings
from spanmeter.ingest.fakeprovider import FakeProvider
from tests.unit.instrumentation.spanhelpers import attrs, finished, instrumented, only_span

MESSAGES = [{"role": "user", "content": "tell me a secret prompt"}]
# 3 + words("user tell me a secret prompt") = 9 fresh input tokens by the fake's rule.
FRESH_INPUT = 9
WORDS = ["alpha", "bravo", "charlie", "delta", "echo"]


@pytest.fixture(scope="module")
def fake():
    with FakeProvider(chunks=5) as f:
        yield f


@pytest.fixture
def exporter(fake):
    fake.reset()
    with instrumented() as exp:
        yield exp


@pytest.fixture
def client(fake):
    with openai.OpenAI(base_url=fake.openai_base_url, api_key="k", max_retries=0) as c:
        yield c


@pytest.fixture
def aclient(fake):
    return openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key="k", max_retries=0)


def base(fake, streaming: bool, model: str = "gpt-4o-mini", operation: str = "chat") -> dict:
    return {
        sc.GEN_AI_OPERATION_NAME: operation,
        sc.GEN_AI_PROVIDER_NAME: "openai",
        sc.GEN_AI_REQUEST_MODEL: model,
        sc.SERVER_ADDRESS: "127.0.0.1",
        sc.SERVER_PORT: fake.port,
        sc.SPANMETER_STREAMING: streaming,
    }


def chat_result(fake, streaming: bool, rid: str, **usage: int) -> dict:
    result = {
        **base(fake, streaming),
        sc.GEN_AI_RESPONSE_ID: rid,
        sc.GEN_AI_RESPONSE_MODEL: "gpt-4o-mini-2024-07-18",
        sc.GEN_AI_RESPONSE_FINISH_REASONS: ["stop"],
        sc.GEN_AI_USAGE_INPUT_TOKENS: usage["input"],
        sc.GEN_AI_USAGE_OUTPUT_TOKENS: usage["output"],
        sc.SPANMETER_USAGE_STATUS: "reported",
    }
    # Sub-counts appear when non-zero; the "default" service tier does not appear.
    if usage.get("cached"):
        result[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = usage["cached"]
    if usage.get("reasoning"):
        result[sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] = usage["reasoning"]
    return result


def assert_no_content(span) -> None:
    for value in (span.attributes or {}).values():
        text = str(value)
        assert "secret" not in text and "prompt" not in text and "alpha" not in text and "bravo" not in text


# --- chat completions ---------------------------------------------------------------------------


def test_chat_sync(fake, exporter, client) -> None:
    result = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_body={"fake": {"cached": 20, "reasoning": 7, "chunks": 4}}
    )
    assert result.usage.prompt_tokens == FRESH_INPUT + 20
    span = only_span(exporter)
    assert span.name == "chat gpt-4o-mini"
    assert span.kind.name == "CLIENT"
    assert attrs(span) == chat_result(fake, False, result.id, input=FRESH_INPUT + 20, output=11, cached=20, reasoning=7)
    assert span.status.status_code.name == "UNSET"
    assert_no_content(span)


def test_chat_stream_gets_usage_injected_and_app_sees_no_extra_chunk(fake, exporter, client) -> None:
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    chunks = list(stream)
    # The app code that does chunk.choices[0] unguarded keeps working: no `choices: []` chunk.
    assert all(c.choices for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "".join(w + " " for w in WORDS)
    assert all(c.usage is None for c in chunks)
    assert fake.requests[-1].body["stream_options"] == {"include_usage": True}
    span = only_span(exporter)
    assert attrs(span) == chat_result(fake, True, chunks[0].id, input=FRESH_INPUT, output=5)
    assert_no_content(span)


def test_chat_stream_with_app_asking_for_usage_is_untouched(fake, exporter, client) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}, extra_body={"fake": {"reasoning": 2}}
    )
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 7  # the app asked: it gets it
    span = only_span(exporter)
    assert attrs(span) == chat_result(fake, True, chunks[0].id, input=FRESH_INPUT, output=7, reasoning=2)


def test_chat_stream_injection_disabled_records_missing_not_zero(fake, client, monkeypatch) -> None:
    monkeypatch.setenv("SPANMETER_INJECT_STREAM_USAGE", "false")
    get_settings.cache_clear()
    try:
        with instrumented() as exporter:
            chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    finally:
        get_settings.cache_clear()
    assert "stream_options" not in fake.requests[-1].body
    span = only_span(exporter)
    assert attrs(span) == {
        **base(fake, True),
        sc.GEN_AI_RESPONSE_ID: chunks[0].id,
        sc.GEN_AI_RESPONSE_MODEL: "gpt-4o-mini-2024-07-18",
        sc.GEN_AI_RESPONSE_FINISH_REASONS: ["stop"],
        sc.SPANMETER_USAGE_STATUS: "missing",
    }


def test_injection_off_by_instrument_argument(fake, client) -> None:
    with instrumented(inject_stream_usage=False) as exporter:
        list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    assert "stream_options" not in fake.requests[-1].body
    assert attrs(only_span(exporter))[sc.SPANMETER_USAGE_STATUS] == "missing"


def test_chat_async_and_async_stream(fake, exporter, aclient) -> None:
    async def main():
        result = await aclient.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        stream = await aclient.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        chunks = [c async for c in stream]
        await aclient.close()
        return result, chunks

    result, chunks = asyncio.run(main())
    assert all(c.choices for c in chunks)
    first, second = sorted(finished(exporter), key=lambda s: s.start_time)
    assert attrs(first) == chat_result(fake, False, result.id, input=FRESH_INPUT, output=5)
    assert attrs(second) == chat_result(fake, True, chunks[0].id, input=FRESH_INPUT, output=5)


def test_service_tier_travels_with_the_usage(fake, exporter, client) -> None:
    list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, service_tier="flex", stream=True))
    a = attrs(only_span(exporter))
    assert (a[sc.OPENAI_REQUEST_SERVICE_TIER], a[sc.OPENAI_RESPONSE_SERVICE_TIER]) == ("flex", "flex")


def test_multiple_choices_finish_reasons(fake, exporter, client) -> None:
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, n=2, max_tokens=3)
    a = attrs(only_span(exporter))
    assert a[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ["length", "length"]
    assert a[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 3


# --- abandoned, failed, errors -------------------------------------------------------------------


def test_stream_closed_half_way_is_incomplete(fake, exporter, client) -> None:
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_body={"fake": {"chunks": 50}})
    it = iter(stream)
    first = next(it)
    next(it)
    stream.close()
    span = only_span(exporter)
    assert attrs(span) == {
        **base(fake, True),
        sc.GEN_AI_RESPONSE_ID: first.id,
        sc.GEN_AI_RESPONSE_MODEL: "gpt-4o-mini-2024-07-18",
        sc.SPANMETER_USAGE_STATUS: "incomplete",
    }
    assert span.status.status_code.name == "UNSET"  # abandoning is the app's choice, not an error


def test_stream_dropped_without_close_ends_at_gc(fake, exporter, client) -> None:
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_body={"fake": {"chunks": 50}})
    it = iter(stream)
    next(it)
    assert finished(exporter) == ()
    del it, stream
    gc.collect()
    assert attrs(only_span(exporter))[sc.SPANMETER_USAGE_STATUS] == "incomplete"


def test_stream_broken_by_the_network(fake, exporter, client) -> None:
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_body={"fake": {"fail_after": 3}})
    with pytest.raises(openai.APIConnectionError) as raised:
        list(stream)
    # The SDK wraps the transport error; the span records what the HTTP layer saw.
    assert isinstance(raised.value.__cause__, httpx2.RemoteProtocolError)
    span = only_span(exporter)
    a = attrs(span)
    assert a[sc.ERROR_TYPE] == "RemoteProtocolError"
    assert a[sc.SPANMETER_USAGE_STATUS] == "incomplete"
    assert span.status.status_code.name == "ERROR"


@pytest.mark.parametrize(("model", "exc", "status"), [("error-429", openai.RateLimitError, "429"), ("error-500", openai.InternalServerError, "500")])
def test_http_errors(fake, exporter, client, model, exc, status) -> None:
    with pytest.raises(exc):
        client.chat.completions.create(model=model, messages=MESSAGES)
    span = only_span(exporter)
    assert attrs(span) == {**base(fake, False, model=model), sc.ERROR_TYPE: status, sc.SPANMETER_USAGE_STATUS: "missing"}
    assert span.status.status_code.name == "ERROR"


def test_http_error_on_a_stream(fake, exporter, client) -> None:
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="error-429", messages=MESSAGES, stream=True)
    assert attrs(only_span(exporter))[sc.ERROR_TYPE] == "429"


def test_connection_error(exporter) -> None:
    dead = openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.APIConnectionError):
        dead.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    a = attrs(only_span(exporter))
    assert a[sc.ERROR_TYPE] == "ConnectError" and a[sc.SPANMETER_USAGE_STATUS] == "missing"
    assert a[sc.SERVER_PORT] == 9


def test_sdk_retries_are_separate_provider_calls(fake, exporter) -> None:
    retrying = openai.OpenAI(base_url=fake.openai_base_url, api_key="k", max_retries=1)
    with pytest.raises(openai.RateLimitError):
        retrying.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, extra_body={"fake": {"error": 429}}, extra_headers={})
    # The fake says x-should-retry: false, so one attempt, one span.
    assert len(finished(exporter)) == 1


# --- responses, embeddings, legacy completions, Azure --------------------------------------------


def responses_result(fake, streaming: bool, rid: str) -> dict:
    return {
        **base(fake, streaming),
        sc.GEN_AI_RESPONSE_ID: rid,
        sc.GEN_AI_RESPONSE_MODEL: "gpt-4o-mini-2024-07-18",
        sc.GEN_AI_USAGE_INPUT_TOKENS: 40,
        sc.GEN_AI_USAGE_OUTPUT_TOKENS: 25,
        sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 30,
        sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: 20,
        sc.SPANMETER_USAGE_STATUS: "reported",
    }


def test_responses_sync_and_stream(fake, exporter, client) -> None:
    controls = {"fake": {"input": 40, "cached": 30, "reasoning": 20}}
    result = client.responses.create(model="gpt-4o-mini", input="a secret prompt", extra_body=controls)
    events = list(client.responses.create(model="gpt-4o-mini", input="a secret prompt", stream=True, extra_body=controls))
    first, second = sorted(finished(exporter), key=lambda s: s.start_time)
    assert attrs(first) == responses_result(fake, False, result.id)
    assert attrs(second) == responses_result(fake, True, events[-1].response.id)
    assert events[-1].type == "response.completed"


def test_responses_async_stream(fake, exporter, aclient) -> None:
    async def main():
        stream = await aclient.responses.create(model="gpt-4o-mini", input="x", stream=True, extra_body={"fake": {"input": 40, "cached": 30, "reasoning": 20}})
        events = [e async for e in stream]
        await aclient.close()
        return events

    events = asyncio.run(main())
    assert attrs(only_span(exporter)) == responses_result(fake, True, events[-1].response.id)


def test_responses_conversation_and_safety_identifier(fake, exporter, client) -> None:
    client.responses.create(model="gpt-4o-mini", input="x", safety_identifier="hashed-42", extra_body={"conversation": "conv_9"})
    a = attrs(only_span(exporter))
    assert (a[sc.USER_ID], a[sc.GEN_AI_CONVERSATION_ID]) == ("hashed-42", "conv_9")


def test_embeddings_sync_and_async(fake, exporter, client, aclient) -> None:
    client.embeddings.create(model="text-embedding-3-small", input=["one two", "three"])

    async def main():
        await aclient.embeddings.create(model="text-embedding-3-small", input="one two three", encoding_format="float")
        await aclient.close()

    asyncio.run(main())
    expected = {
        **base(fake, False, model="text-embedding-3-small", operation="embeddings"),
        sc.GEN_AI_RESPONSE_MODEL: "text-embedding-3-small",
        sc.GEN_AI_USAGE_INPUT_TOKENS: 6,  # 3 + three words
        sc.SPANMETER_USAGE_STATUS: "reported",
    }
    spans = sorted(finished(exporter), key=lambda s: s.start_time)
    assert [s.name for s in spans] == ["embeddings text-embedding-3-small"] * 2
    assert [attrs(s) for s in spans] == [expected, expected]


def test_large_embeddings_body_read_from_its_tail(fake, exporter, client) -> None:
    result = client.embeddings.create(model="text-embedding-3-small", input=["w"] * 200, dimensions=256, encoding_format="float")
    assert len(result.data) == 200
    assert attrs(only_span(exporter))[sc.GEN_AI_USAGE_INPUT_TOKENS] == 203


def test_large_request_body_top_level_model_and_user(fake, exporter, client) -> None:
    # Over max_parse_bytes (1 MiB) the request is walked, not parsed; a tool schema's nested
    # "model" and a message's own "user" come before the request's top-level ones.
    tool = {"type": "function", "function": {"name": "pick", "parameters": {
        "type": "object", "properties": {"model": {"type": "string"}, "user": {"type": "string", "default": "schema-user"}}}}}
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 1_500_000}}
    messages = [{"role": "user", "name": "nested", "content": [{"type": "text", "text": "look"}, image]}]
    result = client.chat.completions.create(model="gpt-4o", messages=messages, tools=[tool], user="u-top",
                                            extra_body={"metadata": {"user": "meta-user", "model": "meta-model"}})
    assert len(json.dumps(fake.requests[-1].body)) > 1 << 20
    assert attrs(only_span(exporter)) == {
        **base(fake, False, model="gpt-4o"),
        sc.USER_ID: "u-top",
        sc.GEN_AI_RESPONSE_ID: result.id,
        sc.GEN_AI_RESPONSE_MODEL: "gpt-4o-2024-08-06",
        sc.GEN_AI_RESPONSE_FINISH_REASONS: ["stop"],
        sc.GEN_AI_USAGE_INPUT_TOKENS: result.usage.prompt_tokens,
        sc.GEN_AI_USAGE_OUTPUT_TOKENS: result.usage.completion_tokens,
        sc.SPANMETER_USAGE_STATUS: "reported",
    }


@pytest.mark.parametrize("how", ["unsampled parent", "sampler says no"])
def test_unsampled_call_is_left_alone(fake, how) -> None:
    # A span the sampler drops keeps nothing. Under a parent that head sampling dropped, the
    # call's span is asked for before anything else: its request goes out as the app wrote it
    # (no include_usage added), its stream is not wrapped, and the stream's unsampled span is
    # current during the request. A sampler that drops a root span answers only when the span
    # is started, which for a call recorded later (see _recorder) is after the call: the stream
    # then gets include_usage added and hidden again, as a sampled one would, so the app reads
    # the same chunks either way; no span is exported.
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    seen = []

    class Transport(httpx2.HTTPTransport):
        def handle_request(self, request):
            seen.append(trace.get_current_span().get_span_context())
            return super().handle_request(request)

    fake.reset()
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF) if how == "sampler says no" else TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = spanmeter.SpanmeterInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    parent = SpanContext(trace_id=7, span_id=8, is_remote=True, trace_flags=TraceFlags(0))
    try:
        with openai.OpenAI(base_url=fake.openai_base_url, api_key="k", max_retries=0, http_client=httpx2.Client(transport=Transport())) as c:
            with trace.use_span(NonRecordingSpan(parent if how == "unsampled parent" else trace.INVALID_SPAN_CONTEXT)):
                chunks = list(c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
                result = c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
    assert len(chunks) == 7 and all(chunk.choices and chunk.usage is None for chunk in chunks)  # role, 5 words, finish
    assert result.usage.completion_tokens == 5
    assert finished(exporter) == ()
    assert len(seen) == 2
    if how == "unsampled parent":
        assert "stream_options" not in fake.requests[0].body
        assert seen[0].is_valid and not seen[0].trace_flags.sampled and seen[0].span_id != 8  # the stream's own span
        assert seen[1].span_id == 8  # a non-streamed call: the app's context stays current
    else:
        assert fake.requests[0].body["stream_options"] == {"include_usage": True}
        assert not seen[0].is_valid and not seen[1].is_valid


def test_legacy_completions(fake, exporter, client) -> None:
    result = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="one two")
    a = attrs(only_span(exporter))
    assert a[sc.GEN_AI_OPERATION_NAME] == "text_completion"
    assert (a[sc.GEN_AI_RESPONSE_ID], a[sc.GEN_AI_USAGE_INPUT_TOKENS], a[sc.GEN_AI_USAGE_OUTPUT_TOKENS]) == (result.id, 5, 5)


def test_azure_client(fake, exporter) -> None:
    azure = openai.AzureOpenAI(azure_endpoint=fake.base_url, api_version="2024-10-21", api_key="k", max_retries=0)
    chunks = list(azure.chat.completions.create(model="prod-gpt4o", messages=MESSAGES, stream=True))
    assert fake.requests[-1].path == "/openai/deployments/prod-gpt4o/chat/completions"
    assert fake.requests[-1].body["stream_options"] == {"include_usage": True}
    a = attrs(only_span(exporter))
    assert (a[sc.GEN_AI_PROVIDER_NAME], a[sc.GEN_AI_REQUEST_MODEL], a[sc.SPANMETER_USAGE_STATUS]) == ("azure.ai.openai", "prod-gpt4o", "reported")
    assert all(c.choices for c in chunks)


def test_azure_old_api_version_gets_no_injection(fake, exporter) -> None:
    azure = openai.AzureOpenAI(azure_endpoint=fake.base_url, api_version="2024-06-01", api_key="k", max_retries=0)
    list(azure.chat.completions.create(model="prod-gpt4o", messages=MESSAGES, stream=True))
    assert "stream_options" not in fake.requests[-1].body
    assert attrs(only_span(exporter))[sc.SPANMETER_USAGE_STATUS] == "missing"


# --- attribution ------------------------------------------------------------------------------


def test_attribution_scope_and_request_field_fallback(fake, exporter, client) -> None:
    with spanmeter.attributes(user_id="u-1", session_id="s-1", conversation_id="c-1", feature="search", team="growth"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, user="body-user")
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, user="body-user")
    scoped, fallback = (attrs(s) for s in sorted(finished(exporter), key=lambda s: s.start_time))
    assert {k: scoped[k] for k in (sc.USER_ID, sc.SESSION_ID, sc.GEN_AI_CONVERSATION_ID, sc.SPANMETER_FEATURE, sc.SPANMETER_TEAM)} == {
        sc.USER_ID: "u-1",
        sc.SESSION_ID: "s-1",
        sc.GEN_AI_CONVERSATION_ID: "c-1",
        sc.SPANMETER_FEATURE: "search",
        sc.SPANMETER_TEAM: "growth",
    }
    assert fallback[sc.USER_ID] == "body-user"


def test_attribution_across_concurrent_async_calls(fake, exporter, aclient) -> None:
    @spanmeter.attributes(feature="batch")
    async def one(user: str):
        with spanmeter.attributes(user_id=user):
            stream = await aclient.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_body={"fake": {"delay": 0.002}})
            return [c async for c in stream][0].id

    async def main():
        ids = await asyncio.gather(*(one(f"user-{i}") for i in range(6)))
        await aclient.close()
        return ids

    ids = asyncio.run(main())
    by_id = {attrs(s)[sc.GEN_AI_RESPONSE_ID]: attrs(s) for s in finished(exporter)}
    assert {by_id[rid][sc.USER_ID] for rid in ids} == {f"user-{i}" for i in range(6)}
    for i, rid in enumerate(ids):
        assert by_id[rid][sc.USER_ID] == f"user-{i}" and by_id[rid][sc.SPANMETER_FEATURE] == "batch"


def test_span_is_child_of_the_app_span(fake, exporter, client) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("app")
    with tracer.start_as_current_span("handler") as parent:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    span = only_span(exporter)
    assert span.parent is not None and span.parent.span_id == parent.get_span_context().span_id
    assert span.context.trace_id == parent.get_span_context().trace_id


def test_attribution_in_threads_started_with_copied_context(fake, exporter, client) -> None:
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    def work(i: int) -> str:
        with spanmeter.attributes(session_id=f"s-{i}"):
            return client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).id

    with spanmeter.attributes(user_id="threaded", team="ops"), ThreadPoolExecutor(4) as pool:
        # Each task runs in a copy of the submitting thread's context, taken at submit time.
        futures = [pool.submit(contextvars.copy_context().run, work, i) for i in range(8)]
        ids = [f.result() for f in futures]
    by_id = {attrs(s)[sc.GEN_AI_RESPONSE_ID]: attrs(s) for s in finished(exporter)}
    for i, rid in enumerate(ids):
        assert (by_id[rid][sc.USER_ID], by_id[rid][sc.SPANMETER_TEAM], by_id[rid][sc.SESSION_ID]) == ("threaded", "ops", f"s-{i}")


def test_baggage_fallback(fake, exporter, client) -> None:
    from opentelemetry import baggage, context

    token = context.attach(baggage.set_baggage("user.id", "from-baggage", baggage.set_baggage("spanmeter.feature", "bag-feature")))
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, user="from-body")
    finally:
        context.detach(token)
    a = attrs(only_span(exporter))
    assert (a[sc.USER_ID], a[sc.SPANMETER_FEATURE]) == ("from-baggage", "bag-feature")


def test_no_content_anywhere_on_spans(fake, exporter, client) -> None:
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    client.responses.create(model="gpt-4o-mini", input="tell me a secret prompt")
    for span in finished(exporter):
        assert span.events == () and span.links == ()
        assert_no_content(span)
        assert not any(k.startswith(("gen_ai.input", "gen_ai.output", "gen_ai.prompt", "gen_ai.completion", "http.request.header")) for k in span.attributes)


def test_injected_stream_reads_byte_for_byte_like_the_uninjected_one(fake, client) -> None:
    import re

    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}

    def read() -> bytes:
        with httpx2.Client() as raw, raw.stream("POST", fake.openai_base_url + "/chat/completions", json=body) as response:
            return re.sub(rb"chatcmpl-fake-\d+", b"ID", b"".join(response.iter_raw()))

    plain = read()
    with instrumented() as exporter:
        metered = read()
    assert metered == plain and b"usage" not in metered
    assert fake.requests[-1].body["stream_options"] == {"include_usage": True}
    assert attrs(only_span(exporter))[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 5
