"""Opt-in cap enforcement in the instrumentation, end to end: the real `openai` SDK against the
fake provider, its spans exported over OTLP to a real ingest (uvicorn on 127.0.0.1, chDB), and
the instrumentation asking that ingest's /check before each call.

The ingest prices model `cap-test` at $1 per million input tokens and nothing for output, and the
fake provider is told to report 400,000 input tokens: every call costs exactly $0.40 against the
free tier's $1.00 session cap (warn from 80%).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from contextlib import contextmanager

import openai
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import SecretStr

import spanmeter
from spanmeter import _caps
from spanmeter import semconv as sc
from spanmeter.ingest.fakeprovider import FakeProvider

ADMIN = "admin-token-for-caps-tests"
TIERS = """
default_tier: free
warn_at: 0.8
tiers:
  free:
    caps: {session: "1.00", week: "2.00"}
"""
PRICES = """
version: 1
rates:
  - provider: "*"
    model: cap-test
    input: 1
    output: 0
"""
FORTY_CENTS = {"fake": {"input": 400_000, "output": 5}}
MESSAGES = [{"role": "user", "content": "hello"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ingest(settings, store, tmp_path):
    """The ingest app served over real HTTP; yields its base URL."""
    import uvicorn

    from spanmeter.ingest.app import create_app

    (tmp_path / "tiers.yaml").write_text(TIERS)
    (tmp_path / "prices.yaml").write_text(PRICES)
    app = create_app(settings.model_copy(update={
        "admin_token": SecretStr(ADMIN), "tiers_file": tmp_path / "tiers.yaml",
        "prices_file": tmp_path / "prices.yaml",
    }), store=store)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "ingest did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def fake():
    with FakeProvider(chunks=3) as f:
        yield f


@contextmanager
def instrumented_to(url: str):
    """Spans to memory (to inspect) and over OTLP to the ingest, synchronously at span end."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{url}/v1/traces")))
    instrumentor = spanmeter.SpanmeterInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        yield memory
    finally:
        instrumentor.uninstrument()
        provider.shutdown()


@pytest.fixture
def spans(ingest):
    with instrumented_to(ingest) as memory:
        yield memory
    spanmeter.enforce_caps(enabled=False)


@pytest.fixture
def client(fake):
    with openai.OpenAI(base_url=fake.openai_base_url, api_key="k", max_retries=0) as c:
        yield c


def call(client, user: str, **kw):
    with spanmeter.attributes(user_id=user):
        result = client.chat.completions.create(model="cap-test", messages=MESSAGES, extra_body=FORTY_CENTS, **kw)
    # Spans are recorded (and so exported) on spanmeter's background thread: let the call's
    # span reach the ingest before the test's next cap check.
    assert spanmeter.flush(10)
    return result


def ours(memory):
    assert spanmeter.flush(10)
    return [s for s in memory.get_finished_spans() if s.instrumentation_scope.name == "spanmeter"]


def test_a_user_over_the_hard_cap_gets_cap_exceeded_and_nothing_is_sent(ingest, spans, fake, client, caplog):
    enforcer = spanmeter.enforce_caps(endpoint=ingest, token=ADMIN, ttl_seconds=0)  # ask every time
    call(client, "u1")  # $0.40
    call(client, "u1")  # $0.80: from here on, over 80% of the session cap
    with caplog.at_level(logging.WARNING, logger="spanmeter.caps"):
        call(client, "u1")  # warned, still sent: $1.20
    warned = ours(spans)[-1]
    assert "session" in warned.attributes[sc.SPANMETER_CAP_WARNING]
    assert any("cap warning" in r.getMessage() and "u1" in r.getMessage() for r in caplog.records)
    assert all(sc.SPANMETER_CAP_WARNING not in s.attributes for s in ours(spans)[:2])

    sent, finished = len(fake.requests), len(ours(spans))
    with pytest.raises(spanmeter.CapExceeded) as raised:
        call(client, "u1")
    exc = raised.value
    assert (exc.user_id, exc.window) == ("u1", "session")
    assert 4 * 3600 < exc.retry_after <= 5 * 3600 and exc.resets_at.endswith("Z")
    assert "u1" in str(exc) and "session cap reached" in str(exc)
    assert len(fake.requests) == sent and len(ours(spans)) == finished  # no request, no span
    # Streams go through the same guard; other users are not affected.
    with pytest.raises(spanmeter.CapExceeded):
        call(client, "u1", stream=True)
    assert call(client, "u2").usage.prompt_tokens == 400_000
    assert enforcer.fetches == 6


def test_answers_are_cached_so_a_busy_user_costs_one_check_per_ttl(ingest, spans, client):
    enforcer = spanmeter.enforce_caps(endpoint=ingest, token=ADMIN, ttl_seconds=30)
    started = time.perf_counter()
    for _ in range(5):
        call(client, "u3")  # $2.00 in all: past the cap, but the cached "allow" holds
    assert enforcer.fetches == 1
    enforcer._cache.clear()  # the TTL runs out
    with pytest.raises(spanmeter.CapExceeded):
        call(client, "u3")
    for _ in range(3):
        with pytest.raises(spanmeter.CapExceeded):  # the deny is cached too: no more checks
            call(client, "u3")
    assert enforcer.fetches == 2
    assert time.perf_counter() - started < 30


def test_async_clients_are_guarded_without_blocking_the_loop(ingest, spans, fake):
    spanmeter.enforce_caps(endpoint=ingest, token=ADMIN, ttl_seconds=0)

    async def scenario():
        aclient = openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key="k", max_retries=0)
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        beat = asyncio.create_task(ticker())
        with spanmeter.attributes(user_id="u4"):
            for _ in range(3):
                await aclient.chat.completions.create(model="cap-test", messages=MESSAGES, extra_body=FORTY_CENTS)
            assert spanmeter.flush(10)  # the spans reach the ingest (recorded in the background)
            with pytest.raises(spanmeter.CapExceeded):
                await aclient.chat.completions.create(model="cap-test", messages=MESSAGES, extra_body=FORTY_CENTS)
        beat.cancel()
        await aclient.close()
        return ticks

    assert asyncio.run(scenario()) > 0


def test_the_user_from_the_request_body_is_enforced_too(ingest, spans, client):
    spanmeter.enforce_caps(endpoint=ingest, token=ADMIN, ttl_seconds=0)
    for _ in range(3):
        client.chat.completions.create(model="cap-test", messages=MESSAGES, extra_body=FORTY_CENTS, user="u5")
    assert spanmeter.flush(10)
    with pytest.raises(spanmeter.CapExceeded):
        client.chat.completions.create(model="cap-test", messages=MESSAGES, extra_body=FORTY_CENTS, user="u5")
    assert spanmeter.flush(10)
    # A call with no user at all is never checked.
    client.chat.completions.create(model="cap-test", messages=MESSAGES, extra_body=FORTY_CENTS)


def test_when_spanmeter_does_not_answer_calls_go_ahead_unless_fail_closed(spans, client, caplog):
    dead = f"http://127.0.0.1:{free_port()}"
    spanmeter.enforce_caps(endpoint=dead, token=ADMIN, ttl_seconds=0, timeout_seconds=0.5)
    with caplog.at_level(logging.WARNING, logger="spanmeter.caps"):
        assert call(client, "u6").usage.prompt_tokens == 400_000
    assert any("no answer" in r.getMessage() for r in caplog.records)
    assert ADMIN not in caplog.text

    spanmeter.enforce_caps(endpoint=dead, token=ADMIN, ttl_seconds=0, timeout_seconds=0.5, fail_open=False)
    with pytest.raises(spanmeter.CapExceeded, match="did not answer"):
        call(client, "u6")


def test_an_endpoint_that_is_not_spanmeter_says_so(fake, spans, client, caplog):
    # A collector, or anything else, at the endpoint: 404 for /v1/users/...; the call goes ahead.
    spanmeter.enforce_caps(endpoint=fake.base_url, ttl_seconds=0)
    with caplog.at_level(logging.WARNING, logger="spanmeter.caps"):
        assert call(client, "u9").usage.prompt_tokens == 400_000
    assert "HTTP 404" in caplog.text and "SPANMETER_CAPS_ENDPOINT" in caplog.text


def test_a_wrong_token_fails_like_an_outage_and_never_leaks(ingest, spans, client, caplog):
    secret = "tok-zz9-plural-z-alpha"
    spanmeter.enforce_caps(endpoint=ingest, token=secret, ttl_seconds=0)
    with caplog.at_level(logging.DEBUG):
        call(client, "u7")  # 401 from the check: fail open
    assert "HTTP 401" in caplog.text
    assert secret not in caplog.text and secret not in repr(_caps.current())


def test_enforcement_is_off_unless_asked_and_the_environment_can_turn_it_on(ingest, spans, client, monkeypatch):
    monkeypatch.setattr(_caps, "_enforcer", None)
    monkeypatch.setattr(_caps, "_from_env_done", False)
    monkeypatch.delenv("SPANMETER_ENFORCE_CAPS", raising=False)
    for _ in range(4):
        call(client, "u8")  # $1.60: nobody asks
    assert _caps.current() is None

    monkeypatch.setattr(_caps, "_from_env_done", False)
    monkeypatch.setenv("SPANMETER_ENFORCE_CAPS", "true")
    monkeypatch.setenv("SPANMETER_CAPS_ENDPOINT", ingest)
    monkeypatch.setenv("SPANMETER_CAPS_TOKEN", ADMIN)
    with pytest.raises(spanmeter.CapExceeded):
        call(client, "u8")
    assert _caps.current().endpoint == ingest
