"""No content is ever stored, whatever a span carries: a canary through every ingestion path.

A unique string is put where prompts, completions, tool arguments, system instructions and
header values travel: span attributes of every convention listed in the reference's "Content NOT
to store", array values, span events (the GenAI content event and the deprecated per-message
events), span links, resource attributes, span names and status messages, HTTP headers of the
export itself, and malformed payloads whose refusal could quote them. They go to a real `spanmeter
serve` (log level debug) as protobuf, JSON and gzip; then through the app-side instrumentation
driving the real `openai` SDK against the fake provider, with the canary in the prompt, the
system message, tool definitions, tool-call arguments and a request header.

Afterwards the canary is in no column of any table of the database (rollups included), nor in the
service log, nor in any answer the ingest gave; while the usage spans that carried it were
metered (the content was dropped, not the call).
"""

from __future__ import annotations

import gzip
import time
import uuid

import httpx
import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tests.support.otlp import chat, span, to_json_dict, to_protobuf
from tests.support.service import running_service
from tests.support.storecheck import find_everywhere

INGEST_TOKEN = "canary-test-ingest-token"
ADMIN_TOKEN = "canary-test-admin-token"
PB = "application/x-protobuf"
JSON = "application/json"

# shared/reference/genai-usage.md, "Content NOT to store", and the header attributes.
CONTENT_KEYS = [
    "gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions",
    "gen_ai.tool.definitions", "gen_ai.tool.call.arguments", "gen_ai.tool.call.result",
    "gen_ai.retrieval.query.text", "gen_ai.retrieval.documents", "gen_ai.memory.content",
    "gen_ai.memory.query", "gen_ai.prompt", "gen_ai.completion", "gen_ai.choice",
    "gen_ai.prompt.0.content", "gen_ai.prompt.0.role", "gen_ai.completion.0.content",
    "gen_ai.completion.0.tool_calls.0.arguments", "gen_ai.request.messages",
    "input.value", "output.value",
    "llm.input_messages.0.message.content", "llm.output_messages.0.message.content",
    "llm.input_messages.0.message.tool_calls.0.tool_call.function.arguments", "llm.prompts",
    "llm.prompt_template.template", "llm.tools.0.tool.json_schema",
    "traceloop.entity.input", "traceloop.entity.output",
    "ai.prompt", "ai.prompt.messages", "ai.response.text", "ai.response.toolCalls", "ai.toolCall.args",
    "ai.toolCall.result", "ai.telemetry.metadata.prompt", "langsmith.metadata.prompt",
    "metadata.messages", "gen_ai.content.prompt", "gen_ai.content.completion",
    "http.request.header.authorization", "http.request.header.x-api-key", "http.response.header.set-cookie",
    "http.request.body", "http.response.body", "url.query", "db.query.text",
]
# Events that carry content (attributes on events, never read by the ingest).
CONTENT_EVENTS = [
    "gen_ai.client.inference.operation.details", "gen_ai.content.prompt", "gen_ai.content.completion",
    "gen_ai.system.message", "gen_ai.user.message", "gen_ai.assistant.message", "gen_ai.tool.message",
    "gen_ai.choice", "exception",
]


@pytest.fixture
def canary() -> str:
    return "cnry" + uuid.uuid4().hex


@pytest.fixture
def service(tmp_path):
    env = {"SPANMETER_INGEST_TOKEN": INGEST_TOKEN, "SPANMETER_ADMIN_TOKEN": ADMIN_TOKEN}
    with running_service(tmp_path, env=env, log_level="debug") as svc:
        yield svc


def content_attrs(canary: str) -> dict:
    attrs = {key: f"{key} says {canary}" for key in CONTENT_KEYS}
    attrs["gen_ai.input.messages"] = f'[{{"role": "user", "parts": [{{"type": "text", "content": "{canary}"}}]}}]'
    attrs["llm.input_messages"] = [f"{canary} as an array", "second"]  # an array value
    return attrs


def usage_spans(canary: str, trace: int, start_ns: int) -> list:
    """Usage spans of several conventions, each also carrying content under every content key."""
    content = content_attrs(canary)
    resource = {"service.name": "canary-svc", "gen_ai.prompt": canary, "process.command_args": (canary, "-v")}
    spans = [
        span("POST /chat " + canary, trace, 1, attrs={"user.id": "canary-user", **content}, start_ns=start_ns),
        chat(trace, 2, parent=1, model="gpt-4o-mini", input=120, output=30, start_ns=start_ns, extra=content),
        span("openinference llm", trace, 3, parent=1, start_ns=start_ns, attrs={
            "openinference.span.kind": "LLM", "llm.model_name": "gpt-4o", "llm.provider": "openai",
            "llm.token_count.prompt": 50, "llm.token_count.completion": 5, **content,
        }),
        span("ai.generateText.doGenerate", trace, 4, parent=1, start_ns=start_ns, attrs={
            "ai.model.id": "gpt-4o-mini", "ai.model.provider": "openai.chat",
            "ai.usage.promptTokens": 40, "ai.usage.completionTokens": 4, **content,
        }),
    ]
    for s in spans:
        s.resource = resource
    return spans


def with_events_links_status(body: bytes, canary: str) -> bytes:
    """Add content-carrying span events, links and status messages to every span of an export."""
    request = ExportTraceServiceRequest.FromString(body)
    text = AnyValue(string_value=f"content {canary}")
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            for s in ss.spans:
                for name in CONTENT_EVENTS:
                    event = s.events.add(name=name, time_unix_nano=s.start_time_unix_nano)
                    event.attributes.extend(
                        KeyValue(key=k, value=text)
                        for k in ("gen_ai.input.messages", "gen_ai.output.messages", "content", "exception.message")
                    )
                link = s.links.add(trace_id=s.trace_id, span_id=b"\x09" * 8)
                link.attributes.append(KeyValue(key="gen_ai.prompt", value=text))
                s.status.message = f"failed on {canary}"
    return request.SerializeToString()


def json_with_events(doc: dict, canary: str) -> dict:
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for s in ss["spans"]:
                s["events"] = [
                    {"name": name, "timeUnixNano": s["startTimeUnixNano"], "attributes": [
                        {"key": "gen_ai.input.messages", "value": {"stringValue": canary}},
                        {"key": "body", "value": {"kvlistValue": {"values": [{"key": "content", "value": {"stringValue": canary}}]}}},
                    ]}
                    for name in CONTENT_EVENTS
                ]
                s["status"] = {"code": 2, "message": canary}
                s["attributes"].append({"key": "gen_ai.tool.call.arguments", "value": {
                    "kvlistValue": {"values": [{"key": "q", "value": {"stringValue": canary}}]}}})
                s["attributes"].append({"key": "gen_ai.output.messages", "value": {"bytesValue": canary}})
    return doc


def post(svc, body: bytes, content_type: str, answers: list, **headers: str) -> httpx.Response:
    response = svc.post_traces(body, content_type, **headers)
    answers.append(response)
    return response


def test_canary_is_stored_nowhere_and_logged_nowhere(service, canary):
    svc, answers = service, []
    now = time.time_ns()
    header = {"X-Canary": canary, "User-Agent": f"app/{canary}", "X-Api-Key": canary}

    # Protobuf, plain and gzip; with events, links and status messages.
    pb = with_events_links_status(to_protobuf(usage_spans(canary, 1, now)), canary)
    assert post(svc, pb, PB, answers, **header).status_code == 200
    pb2 = with_events_links_status(to_protobuf(usage_spans(canary, 2, now)), canary)
    assert post(svc, gzip.compress(pb2), PB, answers, **{"Content-Encoding": "gzip"}).status_code == 200
    # JSON, plain and gzip, with events, kvlist and bytes values.
    js = json_with_events(to_json_dict(usage_spans(canary, 3, now)), canary)
    assert post(svc, orjson.dumps(js), JSON, answers, **header).status_code == 200
    js4 = json_with_events(to_json_dict(usage_spans(canary, 4, now)), canary)
    assert post(svc, gzip.compress(orjson.dumps(js4)), f"{JSON}; charset={canary}", answers,
                **{"Content-Encoding": "gzip"}).status_code == 200
    # Replays (a retrying exporter): content again, nothing new.
    assert post(svc, pb, PB, answers).status_code == 200

    # Refusals must not quote what they refuse: bad values, headers and over-long fields.
    bad = orjson.dumps(to_json_dict([chat(5, 1, model="gpt-4o-mini", input=1, output=1, start_ns=now)]))
    refusals = [
        (bad.replace(b'"intValue":"1"', f'"intValue":"{canary}"'.encode(), 1), JSON, {}),
        (bad.replace(b'"startTimeUnixNano":"', f'"startTimeUnixNano":"{canary}'.encode(), 1), JSON, {}),
        (bad.replace(b'"traceId":"', f'"traceId":"{canary}'.encode(), 1), JSON, {}),
        (bad.replace(b'"name":"', f'"name":{{"{canary}": 1}},"x":"'.encode(), 1), JSON, {}),
        (pb, f"text/{canary}", {}),
        (pb, PB, {"Content-Encoding": canary}),
        (b"\x0a\x05" + canary.encode(), PB, {}),
        (orjson.dumps({"resourceSpans": canary}), JSON, {}),
    ]
    statuses = [post(svc, body, content_type, answers, **extra).status_code for body, content_type, extra in refusals]
    # (A scope name that is an object is read as text, and scope names are not stored: 200.)
    assert statuses == [400, 400, 400, 200, 415, 415, 400, 400]
    long_model = to_protobuf([chat(6, 1, model=canary * 400, input=1, output=1, start_ns=now)])
    response = post(svc, long_model, PB, answers)
    assert response.status_code == 200  # refused by partial success
    # Wrong tokens carrying the canary (a token is a header value too).
    for auth in (f"Bearer {canary}", canary, f"Basic {canary}"):
        assert post(svc, pb, PB, answers, Authorization=auth).status_code == 401

    # The calls were metered: content dropped, usage kept (one semconv chat call per export;
    # the other conventions' spans count as far as their normalizers go).
    rows = svc.sql("SELECT count(), sum(sign) FROM spanmeter.usage_events WHERE service_name = 'canary-svc' "
                   "AND request_model = 'gpt-4o-mini' AND input_tokens = 120 AND output_tokens = 30")
    assert [int(v) for v in rows[0]] == [4, 4], rows

    assert_nowhere(svc, canary, answers)


def assert_nowhere(svc, canary: str, answers: list) -> None:
    log_before_search = svc.log()
    assert canary not in log_before_search
    for response in answers:
        assert canary.encode() not in response.content, response.content[:300]
        assert all(canary not in v for v in response.headers.values())
    found = find_everywhere(svc.sql, "spanmeter", canary)
    assert found == [], f"the canary is stored in {found}"
    metrics = httpx.get(svc.url + "/metrics").text
    assert canary not in metrics
    # The search queries themselves carry the canary; nothing may have logged them either.
    assert canary not in svc.log()


def test_canary_through_the_instrumented_openai_sdk(service, canary):
    """The app-side instrumentation's own spans: prompts, system message, tools and a header."""
    spanmeter = pytest.importorskip("spanmeter")
    if not hasattr(spanmeter, "SpanmeterInstrumentor"):
        pytest.skip("the app-side instrumentation (spanmeter.SpanmeterInstrumentor) is not there yet")
    fakeprovider = pytest.importorskip("spanmeter.ingest.fakeprovider")
    openai = pytest.importorskip("openai")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    svc = service
    provider = TracerProvider(resource=Resource.create({"service.name": "canary-app", "app.note": canary}))
    exporter = OTLPSpanExporter(endpoint=svc.url + "/v1/traces", headers={"Authorization": f"Bearer {INGEST_TOKEN}"})
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=50))
    instrumentor = spanmeter.SpanmeterInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    tools = [{"type": "function", "function": {
        "name": "lookup", "description": f"looks up {canary}",
        "parameters": {"type": "object", "properties": {"q": {"type": "string", "description": canary}}},
    }}]
    messages = [
        {"role": "system", "content": f"You are a helper. Secret: {canary}"},
        {"role": "user", "content": f"My prompt is {canary}"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": f'{{"q": "{canary}"}}'},
        }]},
        {"role": "tool", "tool_call_id": "call_1", "content": f"result {canary}"},
    ]
    calls = 0
    try:
        with fakeprovider.FakeProvider(chunks=3) as fake, openai.OpenAI(
            base_url=fake.openai_base_url, api_key=canary, max_retries=0, default_headers={"X-Canary": canary},
        ) as client, spanmeter.attributes(user_id="canary-sdk-user", feature="canary"):
            client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=tools)
            calls += 1
            stream = client.chat.completions.create(
                model="gpt-4o-mini", messages=messages, stream=True, stream_options={"include_usage": True},
            )
            for _ in stream:
                pass
            calls += 1
            client.responses.create(model="gpt-4o-mini", input=f"Respond to {canary}", instructions=canary)
            calls += 1
            client.embeddings.create(model="text-embedding-3-small", input=[f"embed {canary}"])
            calls += 1
        assert provider.force_flush(30_000)
    finally:
        instrumentor.uninstrument()
        provider.shutdown()

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stored = int(svc.sql("SELECT count() FROM spanmeter.usage_events WHERE user_id = 'canary-sdk-user'")[0][0])
        if stored >= calls:
            break
        time.sleep(0.2)
    assert stored == calls
    assert_nowhere(svc, canary, [])
