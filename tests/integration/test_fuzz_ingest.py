"""Hostile input through the real ingest app on real ClickHouse (chDB): thousands of malformed and
adversarial OTLP exports, and after every one of them the contract still holds.

Each test first stores a few known calls, then lets hypothesis throw payloads at `/v1/traces`:
random bytes, mutated valid protobuf, structurally valid protobuf with absurd values (token counts,
timestamps, cyclic parent links, NaN and infinities, huge and odd strings), OTLP/JSON with wrong
types, huge numbers and deep nesting, and gzip garbage. After each payload:

- the answer is one an OTLP exporter understands: 200 (maybe with partial success), 400, 413 or 415;
  never 5xx (a 503 here would mean one bad payload poisoned a batch that others share);
- the rows stored before are byte-identical (row count and a hash of every column);
- no (trace_id, span_id) nets to more than one call, and every rollup equals the events;
and at the end the service still meters a fresh call.

Hypothesis runs without its example database (nothing written into the repository) and without
deadlines (an insert into chDB takes tens of milliseconds).
"""

from __future__ import annotations

import gzip
import json
import os
import random
import zlib

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tests.support.otlp import BASE_TIME_NS, chat, span, to_json_dict, to_protobuf
from tests.support.storecheck import invariants, rows_fingerprint

PB = "application/x-protobuf"
JSON = "application/json"
ACCEPTED = {200, 400, 413, 415}

# Examples per test; scale with SPANMETER_FUZZ_SCALE (e.g. 10 for a long local run).
SCALE = float(os.environ.get("SPANMETER_FUZZ_SCALE", "1"))


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )

# Known calls stored before the fuzzing: trace ids 1..4; fuzzed payloads reuse them on purpose
# (a replay or a mutation of a stored call must never change it).
SEED = [
    chat(1, 1, model="gpt-4o-mini", input=1000, output=200, user="seed-alice"),
    chat(2, 1, model="gpt-4o", input=500, output=50, cache_read=100, user="seed-bob"),
    span("POST /chat", 3, 1, attrs={"user.id": "seed-carol"}),
    chat(3, 2, parent=1, model="claude-sonnet-4-5", provider="anthropic", input=300, output=30),
    chat(4, 1, model="acme-unknown", provider="acme", input=10, output=1, user="seed-dave"),
]
# The seeded rows themselves. A fuzzed span may legitimately join a seeded trace (a new span id),
# and a deeper usage span may cancel a seeded parent with a sign -1 row (the leaf rule); the
# original rows stay, byte for byte.
SEED_WHERE = "sign = 1 AND (trace_id, span_id) IN (" + ",".join(
    f"(unhex('{s.trace:032x}'), unhex('{s.span:016x}'))" for s in SEED if "gen_ai.usage.input_tokens" in s.attrs
) + ")"


class Guard:
    """The stored state a hostile payload must not change, and the checks after each one."""

    def __init__(self, client, store) -> None:
        self.client = client
        self.db = store.database
        self.rows = lambda q: store.query(q).rows
        response = client.post("/v1/traces", content=to_protobuf(SEED), headers={"Content-Type": PB})
        assert response.status_code == 200, response.content
        self.seed = rows_fingerprint(self.rows, self.db, SEED_WHERE)
        assert self.seed[0] == 4
        self.statuses: dict[int, int] = {}
        self.posted = 0
        self.checked_at = self.inserts()

    def post(self, body: bytes, content_type: str = PB, encoding: str | None = None):
        headers = {"Content-Type": content_type}
        if encoding:
            headers["Content-Encoding"] = encoding
        response = self.client.post("/v1/traces", content=body, headers=headers)
        self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
        assert response.status_code in ACCEPTED, (response.status_code, response.content[:300])
        self.posted += 1
        # Only an insert changes the store: check after each payload that led to one (and every
        # 100th payload regardless), so a change is found at the payload that made it.
        inserts = self.inserts()
        if inserts != self.checked_at or self.posted % 100 == 0:
            self.check()
            self.checked_at = inserts
        return response

    def inserts(self) -> float:
        return self.client.app.state.metrics.registry.get_sample_value("spanmeter_insert_seconds_count") or 0

    def check(self) -> None:
        seed, doubles, events, hourly, daily = invariants(self.rows, self.db, SEED_WHERE)
        assert seed == self.seed, "the seeded rows changed"
        assert doubles == 0, "a call is counted more than once"
        assert events == hourly == daily, (events, hourly, daily)

    def still_serving(self) -> None:
        fresh = chat(999, 1, model="gpt-4o-mini", input=7, output=3, user="after-fuzz")
        response = self.client.post("/v1/traces", content=to_protobuf([fresh]), headers={"Content-Type": PB})
        assert response.status_code == 200
        assert self.rows(
            f"SELECT sum(input_tokens * sign) FROM {self.db}.usage_events WHERE user_id = 'after-fuzz'"
        )[0][0] == 7
        assert self.client.get("/healthz").status_code == 200
        assert self.client.get("/readyz").status_code == 200
        assert self.client.app.state.writer._thread.is_alive()
        self.check()


@pytest.fixture
def guard(client, store):
    return Guard(client, store)


# --- strategies ------------------------------------------------------------------------------

ENCODINGS = st.sampled_from([None, "gzip", "deflate", "identity", "br", "gzip, gzip", ""])
INT64 = st.integers(-(2**63), 2**63 - 1)
UINT64 = st.integers(0, 2**64 - 1)
TEXT = st.one_of(
    st.text(max_size=40),
    # Past the attribute length limit (drawn cheaply: hypothesis builds long text slowly).
    st.tuples(st.text(min_size=1, max_size=8), st.integers(1, 6000)).map(lambda t: (t[0] * t[1])[:8000]),
    st.sampled_from([
        "", "\x00", "gpt-4o-mini", "openai", "anthropic", "chat", "invoke_agent", "-1", "NaN", "1e9",
        "o1-pro", "gpt-4.5-preview", "claude-opus-4-1",  # the dearest rates: the largest costs
    ]),
)
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([float("nan"), float("inf"), -0.0, 1e300]))
TOKEN_VALUE = st.one_of(
    INT64, st.integers(0, 2**33), FLOATS, st.booleans(), TEXT,
    st.lists(st.integers(-5, 5), max_size=3),
)
# Keys metering reads, from every convention: where a wrong type or value would hurt.
KEYS = [
    "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.usage.prompt_tokens",
    "gen_ai.usage.completion_tokens", "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.reasoning.output_tokens",
    "llm.token_count.prompt", "llm.token_count.completion", "ai.usage.inputTokens", "ai.usage.outputTokens",
    "gen_ai.usage.cost", "llm.cost.total", "gen_ai.cost.total_cost", "operation.cost",
    "gen_ai.provider.name", "gen_ai.system", "gen_ai.operation.name", "gen_ai.request.model",
    "gen_ai.response.model", "gen_ai.response.id", "llm.model_name", "ai.model.id", "openinference.span.kind",
    "user.id", "enduser.id", "session.id", "gen_ai.conversation.id", "gen_ai.agent.name",
    "spanmeter.feature", "spanmeter.team", "spanmeter.streaming", "spanmeter.usage_status",
    "traceloop.association.properties.user_id", "metadata.user_api_key_user_id", "telemetry.sdk.name",
]
ATTRS = st.dictionaries(st.sampled_from(KEYS), TOKEN_VALUE, max_size=10)


def _any_value(value) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list):
        out = AnyValue()
        out.array_value.values.extend(_any_value(v) for v in value)
        return out
    return AnyValue(string_value=value)


@st.composite
def hostile_exports(draw) -> ExportTraceServiceRequest:
    """Structurally valid OTLP protobuf with adversarial content: what a decoder accepts."""
    request = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(1, 2))):
        rs = request.resource_spans.add()
        resource = draw(st.dictionaries(st.sampled_from(["service.name", "telemetry.sdk.name", "user.id"]), TOKEN_VALUE, max_size=3))
        rs.resource.attributes.extend(KeyValue(key=k, value=_any_value(v)) for k, v in resource.items())
        ss = rs.scope_spans.add()
        ss.scope.name = draw(st.sampled_from(["", "openlit", "openinference.instrumentation.openai", "ai", "x" * 300]))
        n = draw(st.integers(1, 6))
        # Few distinct ids, so parents, cycles, duplicates and the seeded traces all come up.
        ids = st.integers(1, 6)
        for _ in range(n):
            pb = ss.spans.add()
            pb.trace_id = draw(ids).to_bytes(16, "big")
            pb.span_id = draw(ids).to_bytes(8, "big")
            parent = draw(st.one_of(st.just(0), ids))
            pb.parent_span_id = parent.to_bytes(8, "big") if parent else b""
            pb.name = draw(st.sampled_from(["chat gpt-4o", "", "invoke_agent", "\u202e\u0000"]))
            pb.start_time_unix_nano = draw(st.one_of(st.just(BASE_TIME_NS), UINT64))
            pb.end_time_unix_nano = draw(st.one_of(st.just(BASE_TIME_NS + 10**9), UINT64))
            pb.kind = draw(st.integers(0, 5))
            pb.status.code = draw(st.integers(0, 2))
            attrs = draw(ATTRS)
            pb.attributes.extend(KeyValue(key=k, value=_any_value(v)) for k, v in attrs.items())
    return request


# Any JSON value, nested: what a wrong type anywhere in an OTLP/JSON document looks like.
JSON_LEAF = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20), st.sampled_from(["", "NaN", "Infinity", "-1", "1e400", "0x10", "٣", "²", " 12 "]),
)
JSON_ANY = st.recursive(JSON_LEAF, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4),
), max_leaves=12)


def _paths(node, path=()):
    yield path
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, path + (i,))


def _replace(node, path, value):
    if not path:
        return value
    node[path[0]] = _replace(node[path[0]], path[1:], value)
    return node


def _valid_json_doc() -> dict:
    return to_json_dict([
        span("POST /x", 7, 1, attrs={"user.id": "json-user", "session.id": "s"}),
        chat(7, 2, parent=1, model="gpt-4o-mini", input=12, output=3, cache_read=2, reasoning=1),
        chat(1, 1, model="gpt-4o-mini", input=1000, output=200, user="seed-alice"),  # a seeded call
    ])


# --- the tests -------------------------------------------------------------------------------


def test_random_bytes(guard):
    @fuzz(1000)
    @given(body=st.binary(max_size=600), kind=st.sampled_from([PB, JSON]), encoding=ENCODINGS)
    def run(body, kind, encoding):
        guard.post(body, kind, encoding)

    run()
    guard.still_serving()


def test_mutated_valid_protobuf(guard):
    """Bit flips, truncations, insertions and splices of a valid export that replays seeded calls."""
    @fuzz(500)
    @given(data=st.data())
    def run(data):
        specs = SEED + [chat(5, 1, model="gpt-4o-mini", input=1, output=1, user="mutant")]
        body = bytearray(to_protobuf(specs))
        rnd = random.Random(data.draw(st.integers(0, 2**32)))
        for _ in range(data.draw(st.integers(1, 6))):
            op = rnd.choice(["flip", "byte", "truncate", "insert", "splice", "delete"])
            at = rnd.randrange(len(body)) if body else 0
            if op == "flip" and body:
                body[at] ^= 1 << rnd.randrange(8)
            elif op == "byte" and body:
                body[at] = rnd.choice([0x00, 0x7F, 0x80, 0xFF, 0x0A, 0x12, 0x1A])
            elif op == "truncate":
                del body[at:]
            elif op == "insert":
                body[at:at] = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 12)))
            elif op == "splice" and body:
                start = rnd.randrange(len(body))
                body[at:at] = body[start:start + rnd.randrange(1, 40)]
            elif op == "delete":
                del body[at:at + rnd.randrange(1, 8)]
        encoding = data.draw(st.sampled_from([None, "gzip"]))
        payload = gzip.compress(bytes(body)) if encoding else bytes(body)
        guard.post(payload, PB, encoding)

    run()
    guard.still_serving()


def test_hostile_values_in_valid_protobuf(guard):
    """Absurd token counts and timestamps, NaN and infinities, cycles, duplicate and seeded ids."""
    @fuzz(350)
    @given(request=hostile_exports(), encoding=st.sampled_from([None, "gzip"]))
    def run(request, encoding):
        body = request.SerializeToString()
        guard.post(gzip.compress(body) if encoding else body, PB, encoding)

    run()
    guard.still_serving()


def test_json_with_wrong_types_anywhere(guard):
    @fuzz(450)
    @given(data=st.data())
    def run(data):
        doc = _valid_json_doc()
        paths = list(_paths(doc))
        for _ in range(data.draw(st.integers(1, 3))):
            path = data.draw(st.sampled_from(paths))
            try:
                doc = _replace(doc, path, data.draw(JSON_ANY))
            except (KeyError, IndexError, TypeError):
                continue  # an earlier replacement removed this path
            paths = list(_paths(doc))
        guard.post(json.dumps(doc).encode(), JSON, None)

    run()
    guard.still_serving()


JSON_TEXTS = st.one_of(
    st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 3000).map(lambda n: b'{"resourceSpans":' + b"[" * n + b"]" * n + b"}"),
    st.integers(1, 400).map(
        lambda n: b'{"resourceSpans":[{"resource":{"attributes":[{"key":"k","value":'
        + b'{"arrayValue":{"values":[' * n + b"]}}" * n + b"}]}}]}"
    ),
    st.sampled_from([
        b'{"resourceSpans": NaN}', b'{"resourceSpans": Infinity}', b'{"resourceSpans": [1e400]}',
        b'{"resourceSpans": "\\ud800"}', b"\xef\xbb\xbf{}", b'{"resourceSpans": []}' * 2, b"\xff\xfe{\x00}\x00",
        b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"' + b"0" * 32 + b'","spanId":"' + b"0" * 16
        + b'","startTimeUnixNano":"99999999999999999999999999999","attributes":[{"key":"gen_ai.usage.input_tokens",'
        b'"value":{"intValue":"99999999999999999999999999999"}}]}]}]}]}',
    ]),
    st.text(max_size=200).map(str.encode),
)


def test_json_texts_nan_unicode_and_deep_nesting(guard):
    @fuzz(300)
    @given(body=JSON_TEXTS, encoding=st.sampled_from([None, "gzip"]))
    def run(body, encoding):
        guard.post(gzip.compress(body) if encoding else body, JSON, encoding)

    run()
    guard.still_serving()


GZIP_GARBAGE = st.one_of(
    st.binary(max_size=300).map(lambda b: b"\x1f\x8b\x08\x00" + b),  # a gzip header, then noise
    st.binary(max_size=300).map(lambda b: gzip.compress(b)),  # valid gzip of noise
    st.tuples(st.binary(min_size=1, max_size=200), st.integers(1, 40)).map(
        lambda t: gzip.compress(to_protobuf(SEED) + t[0])[: -t[1]]  # truncated
    ),
    st.binary(max_size=64).map(lambda b: gzip.compress(to_protobuf(SEED)) + b),  # trailing bytes
    st.just(gzip.compress(to_protobuf(SEED)) * 2),  # two members
    st.integers(1, 8).map(lambda n: gzip.compress(b"\x00" * (n << 20), 9)),  # a small bomb
    st.binary(max_size=200).map(lambda b: zlib.compress(b)),
)


def test_gzip_garbage(guard):
    @fuzz(300)
    @given(body=GZIP_GARBAGE, kind=st.sampled_from([PB, JSON]), encoding=st.sampled_from(["gzip", "deflate"]))
    def run(body, kind, encoding):
        guard.post(body, kind, encoding)

    run()
    guard.still_serving()


def test_service_still_serves_after_every_kind_of_garbage(guard):
    """The fixtures above each end with a check; here one more: all kinds in one session."""
    for body, kind, encoding in [
        (b"\x0a\x80\x80\x80\x80\x10", PB, None),
        (b"[" * 100_000, JSON, None),
        (gzip.compress(b"\x00" * (80 << 20)), PB, "gzip"),
        (b"\x1f\x8b" + b"\x00" * 50, PB, "gzip"),
    ]:
        guard.post(body, kind, encoding)
    guard.still_serving()
