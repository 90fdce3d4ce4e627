"""End to end: an instrumented app -> a running `spanmeter serve` -> rows with user, tokens, dollars.

The app is this test process: the real openai and anthropic SDKs against the fake provider,
spanmeter's instrumentation exporting OTLP/HTTP protobuf to the service, like a service that
called `spanmeter.instrument()`. The anthropic client also emits its own usage span (anthropic
2.x does): the call must still be one row.
"""

from __future__ import annotations

import time
from decimal import Decimal

import anthropic
import openai
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

import spanmeter
from spanmeter.ingest.fakeprovider import FakeProvider
from tests.support.service import running_service

# USD per million tokens. Reasoning has no price of its own: billed at the output price.
PRICES = """
version: 1
rates:
  - provider: "*"
    model: e2e-gpt
    input: 2
    cache_read: 1
    output: 10
  - provider: anthropic
    model: e2e-claude
    input: 3
    cache_read: "0.3"
    cache_write: "3.75"
    output: 15
"""
MESSAGES = [{"role": "user", "content": "a prompt that must never be stored"}]


@pytest.fixture
def service(tmp_path):
    prices = tmp_path / "prices.yaml"
    prices.write_text(PRICES)
    with running_service(tmp_path, env={"SPANMETER_PRICES_FILE": str(prices)}) as svc:
        yield svc


def rows_when_ready(svc, query: str, expected: int, timeout: float = 30.0) -> list:
    deadline = time.monotonic() + timeout
    while True:
        rows = svc.sql(query)
        if len(rows) >= expected or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def test_instrumented_app_to_rows_with_user_tokens_and_dollars(service) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "e2e-app"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=service.url + "/v1/traces")))
    instrumentor = spanmeter.SpanmeterInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        with FakeProvider(chunks=5) as fake:
            oai = openai.OpenAI(base_url=fake.openai_base_url, api_key="k", max_retries=0)
            claude = anthropic.Anthropic(
                base_url=fake.anthropic_base_url, api_key="k", max_retries=0, open_telemetry={"tracer_provider": provider}
            )
            with spanmeter.attributes(user_id="alice", feature="search", team="growth"):
                oai.chat.completions.create(
                    model="e2e-gpt", messages=MESSAGES, extra_body={"fake": {"input": 1000, "cached": 400, "output": 300, "reasoning": 100}}
                )
            with spanmeter.attributes(user_id="bob", session_id="s-1"):
                # No include_usage asked: spanmeter adds it, the app never sees the usage chunk.
                chunks = list(oai.chat.completions.create(model="e2e-gpt", messages=MESSAGES, stream=True, extra_body={"fake": {"input": 500, "output": 50}}))
                assert all(c.choices for c in chunks)
            with spanmeter.attributes(user_id="carol", conversation_id="conv-9"):
                with claude.messages.stream(
                    model="e2e-claude",
                    max_tokens=500,
                    messages=MESSAGES,
                    extra_body={"fake": {"input": 2000, "cached": 600, "cache_write": 400, "output": 200, "message_deltas": 2}},
                ) as stream:
                    stream.get_final_message()
    finally:
        instrumentor.uninstrument()
        provider.shutdown()  # flushes the batch to the service

    rows = rows_when_ready(
        service,
        "SELECT user_id, session_id, conversation_id, feature, team, service_name, provider, operation, request_model, "
        "response_model, input_tokens, cache_read_tokens, cache_write_tokens, output_tokens, reasoning_tokens, "
        "usage_status, streaming, toString(cost_usd), pricing_status FROM spanmeter.usage_events ORDER BY user_id",
        expected=3,
    )
    # One row per provider call: carol's call also has the anthropic SDK's own span, not counted again.
    assert [r[:17] for r in rows] == [
        ["alice", "", "", "search", "growth", "e2e-app", "openai", "chat", "e2e-gpt", "e2e-gpt", 1000, 400, 0, 300, 100, "reported", False],
        ["bob", "s-1", "", "", "", "e2e-app", "openai", "chat", "e2e-gpt", "e2e-gpt", 500, 0, 0, 50, 0, "reported", True],
        ["carol", "", "conv-9", "", "", "e2e-app", "anthropic", "chat", "e2e-claude", "e2e-claude", 2000, 600, 400, 200, 0, "reported", True],
    ]
    dollars = {r[0]: Decimal(r[17]) for r in rows}
    assert dollars == {
        # 600 uncached x $2 + 400 cached x $1 + 300 output (100 of them reasoning) x $10, per million
        "alice": Decimal("0.0046"),
        # 500 x $2 + 50 x $10
        "bob": Decimal("0.0015"),
        # 1000 uncached x $3 + 600 read x $0.30 + 400 written x $3.75 + 200 output x $15
        "carol": Decimal("0.00768"),
    }
    assert {r[18] for r in rows} == {"priced"}
    # No content reached the store.
    assert service.sql("SELECT count() FROM spanmeter.usage_events WHERE positionCaseInsensitive(user_id, 'prompt') > 0") == [[0]]
