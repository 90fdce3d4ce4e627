"""Spans recorded while the next call waits for its provider (instrumentation/_recorder.py): the
same spans as when recorded inside the call, recorded during the next call's wait (sync and async,
the app's own trace callback kept), none lost at flush, shutdown, idle or fork, none twice, the
backlog bounded, a broken record never stops the rest."""

from __future__ import annotations

import asyncio
import os
import time

import httpx2
import openai
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import spanmeter
from spanmeter import _recorder
from spanmeter import semconv as sc
from spanmeter._config import Settings
from spanmeter.ingest.fakeprovider import FakeProvider
from tests.unit.instrumentation.spanhelpers import attrs, finished, instrumented

MESSAGES = [{"role": "user", "content": "tell me a secret prompt"}]


@pytest.fixture(scope="module")
def fake():
    with FakeProvider(chunks=3) as f:
        yield f


def client(fake):
    return openai.OpenAI(base_url=fake.openai_base_url, api_key="k", max_retries=0)


def calls(fake, c) -> None:
    """One of each kind of call, each made for user u-1 (scope) or u-2 (request field)."""
    with spanmeter.attributes(user_id="u-1", feature="search"):
        c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, extra_body={"fake": {"cached": 3, "reasoning": 2}})
        c.embeddings.create(model="text-embedding-3-small", input=["a b c"])
        c.responses.create(model="gpt-4o-mini", input="hi", user="u-2")
        ac = openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key="k", max_retries=0)
        asyncio.run(ac.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
        list(c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
        with pytest.raises(openai.BadRequestError):
            c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, extra_body={"fake": {"error": 400}})
    c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, user="u-2")


def comparable(spans) -> list[tuple]:
    return sorted(
        (s.name, s.kind.name, s.status.status_code.name, tuple(sorted((k, str(v)) for k, v in attrs(s).items() if k != sc.GEN_AI_RESPONSE_ID)))
        for s in spans
    )


def test_deferred_spans_equal_the_spans_recorded_inside_the_call(fake) -> None:
    c = client(fake)
    with instrumented(defer_spans=False) as exporter:
        calls(fake, c)
        inline = exporter.get_finished_spans()  # no flush needed: each span ended in its call
    with instrumented(defer_spans=True) as exporter:
        calls(fake, c)
        deferred = finished(exporter)
    assert len(inline) == len(deferred) == 7
    assert comparable(inline) == comparable(deferred)
    users = sorted(attrs(s).get(sc.USER_ID) for s in deferred)
    assert users == ["u-1"] * 6 + ["u-2"]  # the scope wins over the request's own user (responses)
    chat = [attrs(s) for s in deferred if attrs(s).get(sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS) == 3]
    assert len(chat) == 1 and chat[0][sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 2
    assert chat[0][sc.SPANMETER_FEATURE] == "search"


@pytest.fixture
def no_sweep(monkeypatch):
    """The idle sweeper leaves pending calls alone during the test (deterministic)."""
    monkeypatch.setattr(_recorder, "IDLE_SECONDS", 60.0)
    _recorder.wake.set()
    yield
    _recorder.wake.set()  # back to the default period


def memory_provider():
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.fixture
def watched():
    provider, exporter = memory_provider()
    instrumentor = spanmeter.SpanmeterInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        yield provider, exporter
    finally:
        instrumentor.uninstrument()
        provider.shutdown()


def marks(provider) -> list:
    """A list that gets "recorded" whenever the provider exports a span, between whatever else
    the test appends to it (httpcore's trace events)."""
    seen: list = []

    class Mark(InMemorySpanExporter):
        def export(self, spans):
            seen.append("recorded")
            return super().export(spans)

    provider.add_span_processor(SimpleSpanProcessor(Mark()))
    return seen


def test_a_lazy_span_keeps_the_call_times_and_the_apps_parent(fake, no_sweep, watched) -> None:
    provider, exporter = watched
    with provider.get_tracer("app").start_as_current_span("handler") as parent:
        before = time.time_ns()
        client(fake).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        after = time.time_ns()
    assert [s.name for s in exporter.get_finished_spans()] == ["handler"]  # the call's: pending
    provider.force_flush()
    usage, handler = sorted(exporter.get_finished_spans(), key=lambda s: s.name)
    assert usage.name == "chat gpt-4o-mini" and usage.kind == trace.SpanKind.CLIENT
    assert before <= usage.start_time < usage.end_time <= after
    assert usage.parent.span_id == parent.get_span_context().span_id
    assert usage.context.trace_id == parent.get_span_context().trace_id
    assert attrs(usage)[sc.GEN_AI_USAGE_INPUT_TOKENS] == 9


def test_the_next_call_records_the_previous_one_while_it_waits(fake, no_sweep, watched) -> None:
    provider, exporter = watched
    seen = marks(provider)

    def app_trace(name, info):  # the app's own httpcore trace callback keeps working
        seen.append(name)

    with httpx2.Client() as http:
        body = {"model": "gpt-4o-mini", "messages": MESSAGES}
        http.post(f"{fake.openai_base_url}/chat/completions", json={**body, "user": "first"})
        assert exporter.get_finished_spans() == ()
        request = http.build_request("POST", f"{fake.openai_base_url}/chat/completions",
                                     json={**body, "user": "second"}, extensions={"trace": app_trace})
        http.send(request)
        # The first call was recorded during the second one's wait; the second is pending.
        assert [attrs(s)[sc.USER_ID] for s in exporter.get_finished_spans()] == ["first"]
        assert request.extensions["trace"] is app_trace  # put back as it was
        # ... once the request was sent and before the answer's headers arrived.
        recorded = seen.index("recorded")
        assert seen[recorded - 1] == "http11.send_request_body.complete"
        assert seen[recorded + 1] == "http11.receive_response_headers.started"
        assert "http11.response_closed.complete" in seen
    assert [attrs(s)[sc.USER_ID] for s in finished(exporter)] == ["first", "second"]


def test_async_calls_record_the_previous_one_while_they_wait(fake, no_sweep, watched) -> None:
    provider, exporter = watched
    seen = marks(provider)

    async def app_trace(name, info):
        seen.append(name)

    async def two_calls():
        async with httpx2.AsyncClient() as http:
            url = f"{fake.openai_base_url}/chat/completions"
            await http.post(url, json={"model": "gpt-4o-mini", "messages": MESSAGES, "user": "first"})
            request = http.build_request("POST", url, json={"model": "gpt-4o-mini", "messages": MESSAGES, "user": "second"},
                                         extensions={"trace": app_trace})
            await http.send(request)
            return [attrs(s)[sc.USER_ID] for s in exporter.get_finished_spans()]

    assert asyncio.run(two_calls()) == ["first"]
    recorded = seen.index("recorded")
    assert seen[recorded - 1] == "http11.send_request_body.complete"
    assert seen[recorded + 1] == "http11.receive_response_headers.started"
    assert [attrs(s)[sc.USER_ID] for s in finished(exporter)] == ["first", "second"]


def test_a_transport_without_httpcore_records_after_its_response(fake, no_sweep, watched) -> None:
    _, exporter = watched
    mock = openai.OpenAI(base_url="http://fake.invalid/v1", api_key="k", max_retries=0,
                         http_client=httpx2.Client(transport=fake.transport(httpx2)))
    mock.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, user="first")
    mock.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, user="second")
    # No httpcore, no wait to record in: the first was recorded once the second had its answer.
    assert [attrs(s)[sc.USER_ID] for s in exporter.get_finished_spans()] == ["first"]
    assert [attrs(s)[sc.USER_ID] for s in finished(exporter)] == ["first", "second"]


@pytest.mark.parametrize("how", ["force_flush", "shutdown"])
def test_the_providers_flush_and_shutdown_record_pending_calls_first(fake, no_sweep, how) -> None:
    provider, exporter = memory_provider()
    instrumentor = spanmeter.SpanmeterInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        client(fake).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert exporter.get_finished_spans() == ()
        getattr(provider, how)()
        assert [attrs(s)[sc.GEN_AI_USAGE_OUTPUT_TOKENS] for s in exporter.get_finished_spans()] == [3]
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
    assert "force_flush" not in vars(provider)  # unwrapped again by uninstrument


def test_an_idle_app_has_its_pending_calls_recorded_by_the_sweeper(fake, monkeypatch, watched) -> None:
    _, exporter = watched
    monkeypatch.setattr(_recorder, "IDLE_SECONDS", 0.05)
    _recorder.wake.set()
    client(fake).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    deadline = time.monotonic() + 5
    while not exporter.get_finished_spans() and time.monotonic() < deadline:
        time.sleep(0.02)  # no flush, no further call: the sweeper records it
    assert [s.name for s in exporter.get_finished_spans()] == ["chat gpt-4o-mini"]
    assert not _recorder.pending


def test_a_forked_child_does_not_record_the_parents_pending_calls(fake, no_sweep, watched) -> None:
    _, exporter = watched
    client(fake).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # pending
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            spanmeter.flush()
            before = len(exporter.get_finished_spans())
            client(fake).embeddings.create(model="text-embedding-3-small", input=["a"])
            spanmeter.flush()
            names = [s.name for s in exporter.get_finished_spans()]
            code = 0 if before == 0 and names == ["embeddings text-embedding-3-small"] else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert [s.name for s in finished(exporter)] == ["chat gpt-4o-mini"]


class Recordable:
    def __init__(self, log: list, fail: bool = False) -> None:
        self.log, self.fail, self.end_time = log, fail, time.time_ns()

    def _record(self) -> None:
        if self.fail:
            raise RuntimeError("boom")
        self.log.append(self)


def test_the_backlog_is_bounded_and_a_broken_record_does_not_stop_the_rest(no_sweep, monkeypatch) -> None:
    spanmeter.flush()
    monkeypatch.setattr(_recorder, "MAX_PENDING", 2)
    log: list = []
    first, broken, third = Recordable(log), Recordable(log, fail=True), Recordable(log)
    _recorder.submit(first)
    _recorder.submit(broken)
    assert log == [] and len(_recorder.pending) == 2
    _recorder.submit(third)  # over the bound: the two waiting are recorded first
    assert log == [first] and list(_recorder.pending) == [third]
    spanmeter.flush()
    assert log == [first, third] and not _recorder.pending


def test_a_body_that_asks_to_stream_is_handled_on_the_call_path(fake) -> None:
    # Raw httpx2 with `"stream": true` read whole (send(stream=False)): not lazy, so spanmeter can
    # still add include_usage before the request goes out, and usage is reported.
    fake.reset()
    with instrumented() as exporter:
        with httpx2.Client() as http:
            response = http.post(f"{fake.openai_base_url}/chat/completions",
                                 json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True})
        assert response.status_code == 200
        (span,) = finished(exporter)
    assert fake.requests[-1].body["stream_options"] == {"include_usage": True}
    a = attrs(span)
    assert a[sc.SPANMETER_STREAMING] is True and a[sc.SPANMETER_USAGE_STATUS] == "reported"
    assert a[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 3


def test_settings_read_defer_spans() -> None:
    assert Settings.from_env({}).defer_spans is True
    assert Settings.from_env({"SPANMETER_DEFER_SPANS": "false"}).defer_spans is False
    assert Settings.from_env({"SPANMETER_DEFER_SPANS": "1"}).defer_spans is True


@pytest.mark.parametrize("defer", [True, False])
def test_only_a_deferred_call_leaves_the_apps_context_current_during_the_request(fake, defer) -> None:
    seen = []

    class Transport(httpx2.HTTPTransport):
        def handle_request(self, request):
            seen.append(trace.get_current_span().get_span_context())
            return super().handle_request(request)

    with instrumented(defer_spans=defer) as exporter:
        with openai.OpenAI(base_url=fake.openai_base_url, api_key="k", max_retries=0,
                           http_client=httpx2.Client(transport=Transport())) as c:
            c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        (span,) = finished(exporter)
    if defer:  # started when recorded: during the request the app's context (none) was current
        assert not seen[0].is_valid
    else:  # recorded inside the call, current during the request, as before
        assert seen[0].span_id == span.context.span_id


@pytest.mark.parametrize("sampler", ["parent-based", "always-on"])
def test_a_call_under_an_unsampled_parent_follows_the_sampler(fake, sampler) -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON) if sampler == "parent-based" else ALWAYS_ON)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = spanmeter.SpanmeterInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    parent = SpanContext(trace_id=0x1234, span_id=0x5678, is_remote=True, trace_flags=TraceFlags(0))
    try:
        with trace.use_span(NonRecordingSpan(parent)):
            client(fake).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, user="u-7")
        spanmeter.flush()
        spans = exporter.get_finished_spans()
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
    if sampler == "parent-based":  # upstream said no: no span, nothing parsed
        assert spans == ()
    else:  # this sampler says yes anyway: the whole span, usage and user included
        (span,) = spans
        a = attrs(span)
        assert span.parent.span_id == 0x5678 and span.context.trace_id == 0x1234
        assert a[sc.GEN_AI_USAGE_INPUT_TOKENS] == 9 and a[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 3
        assert a[sc.USER_ID] == "u-7" and a[sc.SPANMETER_USAGE_STATUS] == "reported"


def test_the_fake_provider_answers_after_its_latency() -> None:
    # The overhead benchmark's socket workload gives the fake a provider's answer time (the wait
    # a record runs in); a lower bound, which a slow machine cannot make fail.
    body = {"model": "gpt-4o-mini", "messages": MESSAGES}
    with FakeProvider(latency=0.05) as slow, httpx2.Client() as http:
        started = time.perf_counter()
        assert http.post(f"{slow.openai_base_url}/chat/completions", json=body).status_code == 200
        assert time.perf_counter() - started >= 0.05
        started = time.perf_counter()
        answer = http.post(f"{slow.openai_base_url}/chat/completions", json={**body, "fake": {"latency": 0.12}})
        assert answer.json()["usage"]["completion_tokens"] == 5 and time.perf_counter() - started >= 0.12
