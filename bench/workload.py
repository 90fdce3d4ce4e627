"""Realistic GenAI usage for the benchmarks, from one model shared by every bench script.

    exports = ExportTemplates.build(count=32, spans_per_export=1000, seed=1)
    body = exports.body(i, now_ns=time.time_ns())   # fresh random trace ids, times shifted to now
    cols = usage_arrays(10_000_000, seed=2)           # the same distributions as usage_events columns

The model ("realistic" is a claim, so it is spelled out here):
- 3,000 users, Zipf(1.1) skew: the top 1% make about a third of the calls; a user's sessions last
  up to an hour and are identified by `sess_` + 16 hex; 40% of calls also carry a conversation id.
- Traces: 1 LLM call (55%), 2-3 (25%) or 4-10 (20%); traces of 4 or more calls are agent runs with
  an `invoke_agent` parent span (an aggregate: never counted). Other calls' parent (the app's
  HTTP span) is not in the export, as when the collector routes only GenAI spans to the ingest.
  Random 16-byte trace ids and 8-byte span ids.
- Models by share of calls, with provider, dated response model and token sizes (log-normal
  medians): see `MODELS`. 30% of OpenAI/Anthropic calls read a prompt cache (30-90% of input),
  3% of Anthropic calls write one; o4-mini reports reasoning tokens (about 60% of output).
- A chat span carries ~20 attributes as the GenAI instrumentations write them (request options,
  finish reasons as an array, server address/port, attribution); each resource ~11 attributes
  (service, SDK, host, process). An export of 1000 spans is ~740 KB of protobuf from ~6 services.
"""

from __future__ import annotations

import random
import struct
import time
import uuid
from dataclasses import dataclass

import numpy as np
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

USERS = 3000
ZIPF_S = 1.1

# (share of calls, provider, request model, response model, operation, input median, output median)
MODELS = (
    (0.30, "openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", "chat", 1500, 250),
    (0.10, "openai", "gpt-4o", "gpt-4o-2024-08-06", "chat", 2500, 400),
    (0.10, "openai", "gpt-4.1-mini", "gpt-4.1-mini-2025-04-14", "chat", 3000, 300),
    (0.05, "openai", "o4-mini", "o4-mini-2025-04-16", "chat", 2000, 1500),
    (0.15, "anthropic", "claude-sonnet-4-20250514", "claude-sonnet-4-20250514", "chat", 4000, 600),
    (0.10, "anthropic", "claude-3-5-haiku-20241022", "claude-3-5-haiku-20241022", "chat", 1200, 200),
    (0.10, "gcp.gemini", "gemini-2.5-flash", "gemini-2.5-flash", "generate_content", 2000, 350),
    (0.10, "openai", "text-embedding-3-small", "text-embedding-3-small", "embeddings", 400, 0),
)
SERVERS = {"openai": "api.openai.com", "anthropic": "api.anthropic.com", "gcp.gemini": "generativelanguage.googleapis.com"}
SERVICES = ("support-bot", "search-api", "doc-summarizer", "sales-agent", "code-review", "billing-assistant")
FEATURES = ("chat", "search", "summarize", "classify", "extract", "draft-reply", "agent")
TEAMS = ("growth", "support", "platform", "sales")
AGENTS = ("triage", "researcher", "planner")

_TRACE_ID_TAG = b"\x0a\x10"  # Span.trace_id: field 1, length-delimited, 16 bytes
_START_TAG = b"\x39"  # Span.start_time_unix_nano: field 7, fixed64
_END_TAG = b"\x41"  # Span.end_time_unix_nano: field 8, fixed64
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_RESPONSE_ID = b"gen_ai.response.id\x12"
_TOKEN_KEYS = (b"gen_ai.usage.input_tokens\x12", b"gen_ai.usage.output_tokens\x12")
_BASE_NS = 1_700_000_000 * 10**9  # template times; `body()` moves them to the sender's "now"


def _zipf_weights(n: int, s: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** s
    return w / w.sum()


def _tokens(rng: random.Random, median: int, sigma: float = 0.8, cap: int = 200_000) -> int:
    return min(int(rng.lognormvariate(0, sigma) * median), cap) if median else 0


@dataclass
class _Call:
    model: tuple
    user: int
    session: str
    conversation: str
    feature: str
    team: str
    streaming: bool


def _user_context(rng: random.Random, user: int, sessions: dict[int, str]) -> tuple[str, str]:
    if user not in sessions or rng.random() < 0.05:
        sessions[user] = "sess_" + rng.randbytes(8).hex()
    conversation = "conv_" + rng.randbytes(6).hex() if rng.random() < 0.4 else ""
    return sessions[user], conversation


def _value(v) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, list):
        out = AnyValue()
        out.array_value.values.extend(_value(x) for x in v)
        return out
    return AnyValue(string_value=v)


def _set_attrs(target, attrs: dict) -> None:
    target.extend(KeyValue(key=k, value=_value(v)) for k, v in attrs.items())


def _chat_attrs(rng: random.Random, call: _Call) -> dict:
    share, provider, model, response_model, operation, in_median, out_median = call.model
    input_tokens = _tokens(rng, in_median)
    output = _tokens(rng, out_median)
    a: dict = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
    }
    if operation != "embeddings":
        a["gen_ai.request.max_tokens"] = rng.choice((1024, 2048, 4096))
        if rng.random() < 0.5:
            a["gen_ai.request.temperature"] = rng.choice((0.0, 0.2, 0.7, 1.0))
    a["gen_ai.response.model"] = response_model
    a["gen_ai.response.id"] = {"openai": "chatcmpl-", "anthropic": "msg_"}.get(provider, "resp-") + rng.randbytes(12).hex()
    if operation != "embeddings":
        a["gen_ai.response.finish_reasons"] = ["stop" if rng.random() < 0.93 else "length"]
    a["gen_ai.usage.input_tokens"] = input_tokens
    if operation != "embeddings":
        a["gen_ai.usage.output_tokens"] = output
    if provider in ("openai", "anthropic") and operation != "embeddings" and rng.random() < 0.3:
        a["gen_ai.usage.cache_read.input_tokens"] = int(input_tokens * rng.uniform(0.3, 0.9))
    if provider == "anthropic" and rng.random() < 0.03:
        a["gen_ai.usage.cache_creation.input_tokens"] = int(input_tokens * rng.uniform(0.05, 0.5))
    if model == "o4-mini":
        a["gen_ai.usage.reasoning.output_tokens"] = int(output * 0.6)
    a["server.address"] = SERVERS[provider]
    a["server.port"] = 443
    if provider == "openai":
        a["openai.response.service_tier"] = "default"
    a["user.id"] = f"user-{call.user:05d}"
    a["session.id"] = call.session
    if call.conversation:
        a["gen_ai.conversation.id"] = call.conversation
    a["spanmeter.feature"] = call.feature
    a["spanmeter.team"] = call.team
    a["spanmeter.streaming"] = call.streaming
    a["spanmeter.usage_status"] = "reported"
    return a


def _resource(rng: random.Random, service: str) -> dict:
    return {
        "service.name": service,
        "service.version": "1.%d.%d" % (rng.randrange(20), rng.randrange(10)),
        "service.instance.id": str(uuid.UUID(bytes=rng.randbytes(16))),
        "deployment.environment.name": "production",
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": "1.38.0",
        "host.name": f"ip-10-0-{rng.randrange(256)}-{rng.randrange(256)}",
        "process.pid": rng.randrange(1, 65535),
        "process.runtime.name": "cpython",
        "process.runtime.version": "3.12.7",
    }


@dataclass
class Export:
    """One template export and where its trace ids and times sit in the encoded bytes."""

    body: np.ndarray  # uint8
    trace_pos: np.ndarray  # (spans, 16) byte offsets of each span's trace id
    trace_of_span: np.ndarray  # (spans,) index of the span's trace
    traces: int
    start_pos: np.ndarray  # (spans, 8)
    end_pos: np.ndarray  # (spans, 8)
    starts: np.ndarray  # int64 ns relative to the export's "now" (negative: in the past)
    ends: np.ndarray
    spans: int
    usage_spans: int
    hex_pos: np.ndarray  # byte offsets of the hex digits of every response id
    token_pos: np.ndarray  # byte offsets of the first byte of input/output token varints


class ExportTemplates:
    """Pre-encoded exports; each `body()` call gives a new export: fresh ids, times moved to now."""

    def __init__(self, exports: list[Export], seed: int) -> None:
        self.exports = exports
        self._rng = np.random.default_rng(seed)

    @classmethod
    def build(cls, count: int = 32, spans_per_export: int = 1000, seed: int = 1) -> ExportTemplates:
        rng = random.Random(seed)
        weights = _zipf_weights(USERS, ZIPF_S)
        user_ids = np.random.default_rng(seed).choice(USERS, size=count * spans_per_export * 2, p=weights)
        resources = {s: _resource(rng, s) for s in SERVICES}
        sessions: dict[int, str] = {}
        shares = [m[0] for m in MODELS]
        exports = []
        u = 0
        for _ in range(count):
            request = ExportTraceServiceRequest()
            by_service: dict[str, list[PbSpan]] = {}
            n, n_usage, trace_index = 0, 0, 0
            span_traces: dict[int, int] = {}
            while n < spans_per_export:
                service = rng.choice(SERVICES)
                r = rng.random()
                calls = 1 if r < 0.55 else rng.randint(2, 3) if r < 0.8 else rng.randint(4, 10)
                calls = min(calls, spans_per_export - n - (1 if calls >= 4 else 0)) or 1
                user = int(user_ids[u]); u += 1
                session, conversation = _user_context(rng, user, sessions)
                feature = "agent" if calls >= 4 else rng.choice(FEATURES[:-1])
                team = TEAMS[user % len(TEAMS)]
                trace_id = rng.randbytes(16)
                t = _BASE_NS - rng.randrange(1_000_000_000)  # within the last second
                spans: list[PbSpan] = []
                parent = rng.randbytes(8)  # the app's HTTP span, routed elsewhere by the collector
                if calls >= 4 and n + calls + 1 <= spans_per_export:
                    agent = PbSpan(trace_id=trace_id, span_id=rng.randbytes(8), parent_span_id=parent,
                                   name="invoke_agent " + rng.choice(AGENTS), kind=1)
                    _set_attrs(agent.attributes, {
                        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent.name.split()[1],
                        "user.id": f"user-{user:05d}", "session.id": session, "spanmeter.feature": feature,
                        "spanmeter.team": team})
                    agent.start_time_unix_nano, agent.end_time_unix_nano = t, t + 1
                    spans.append(agent)
                    parent = agent.span_id
                for _ in range(calls):
                    call = _Call(rng.choices(MODELS, shares)[0], user, session, conversation, feature, team,
                                 rng.random() < 0.6)
                    s = PbSpan(trace_id=trace_id, span_id=rng.randbytes(8), parent_span_id=parent,
                               name=f"{call.model[4]} {call.model[2]}", kind=3)
                    _set_attrs(s.attributes, _chat_attrs(rng, call))
                    duration = int(rng.lognormvariate(0, 0.7) * 1.5e9) if call.model[4] != "embeddings" else 90_000_000
                    s.start_time_unix_nano, s.end_time_unix_nano = t, t + duration
                    t += duration + rng.randrange(50_000_000)
                    s.status.code = 0
                    spans.append(s)
                    n_usage += 1
                if len(spans) > 1 and spans[0].name.startswith("invoke_agent"):
                    spans[0].end_time_unix_nano = t
                # Exported once ended: move the whole trace back so it ended in the last second.
                back = t - _BASE_NS + rng.randrange(1_000_000_000)
                for s in spans:
                    s.start_time_unix_nano -= back
                    s.end_time_unix_nano -= back
                by_service.setdefault(service, []).extend(spans)
                span_traces.update((id(s), trace_index) for s in spans)
                trace_index += 1
                n += len(spans)
            for service, spans in by_service.items():
                rs = request.resource_spans.add()
                _set_attrs(rs.resource.attributes, resources[service])
                ss = rs.scope_spans.add()
                ss.scope.name, ss.scope.version = "spanmeter", "0.1.0"
                ss.spans.extend(spans)
            exports.append(_locate(request, span_traces, by_service, trace_index, n_usage))
        return cls(exports, seed)

    def body(self, i: int, now_ns: int | None = None) -> bytes:
        """Export `i % count` with new random trace ids and its spans ending around `now_ns`."""
        e = self.exports[i % len(self.exports)]
        now_ns = time.time_ns() if now_ns is None else now_ns
        out = e.body.copy()
        ids = self._rng.integers(0, 256, size=(e.traces, 16), dtype=np.uint8)
        out[e.trace_pos] = ids[e.trace_of_span]
        out[e.start_pos] = (e.starts + now_ns).astype("<i8").view(np.uint8).reshape(-1, 8)
        out[e.end_pos] = (e.ends + now_ns).astype("<i8").view(np.uint8).reshape(-1, 8)
        # Values that never repeat in real traffic must not repeat here either: response ids,
        # and token counts (the low 7 bits of the varint's first byte, so its length is kept).
        out[e.hex_pos] = _HEX[self._rng.integers(0, 16, size=len(e.hex_pos))]
        first = out[e.token_pos]
        out[e.token_pos] = (first & 0x80) | self._rng.integers(1, 128, size=len(first), dtype=np.uint8)
        return out.tobytes()


def _locate(request, span_traces, by_service, traces, n_usage) -> Export:
    raw = request.SerializeToString()
    # Serialization follows resource order, so walk spans in that order and find each field.
    ordered = [s for spans in by_service.values() for s in spans]
    trace_of_span = []
    trace_pos, start_pos, end_pos, starts, ends = [], [], [], [], []
    pos = 0
    for s in ordered:
        at = raw.index(_TRACE_ID_TAG + s.trace_id, pos) + 2
        trace_pos.append(at)
        st = raw.index(_START_TAG + struct.pack("<q", s.start_time_unix_nano), at) + 1
        en = raw.index(_END_TAG + struct.pack("<q", s.end_time_unix_nano), st) + 1
        start_pos.append(st)
        end_pos.append(en)
        starts.append(s.start_time_unix_nano - _BASE_NS)
        ends.append(s.end_time_unix_nano - _BASE_NS)
        trace_of_span.append(span_traces[id(s)])
        pos = en
    hex_pos, token_pos = [], []
    bounds = trace_pos[1:] + [len(raw)]
    for at, until in zip(trace_pos, bounds):
        rid = raw.find(_RESPONSE_ID, at, until)
        if rid >= 0:
            value = rid + len(_RESPONSE_ID) + 3  # past the AnyValue length, string tag and length
            length = raw[value - 1]
            hex_pos.extend(range(value + length - 24, value + length))
        for key in _TOKEN_KEYS:
            k = raw.find(key, at, until)
            if k >= 0:
                token_pos.append(k + len(key) + 2)  # AnyValue length, int_value tag
    r8 = np.arange(8)
    return Export(
        body=np.frombuffer(raw, dtype=np.uint8).copy(),
        trace_pos=np.array(trace_pos)[:, None] + np.arange(16),
        trace_of_span=np.array(trace_of_span),
        traces=traces,
        start_pos=np.array(start_pos)[:, None] + r8,
        end_pos=np.array(end_pos)[:, None] + r8,
        starts=np.array(starts, dtype=np.int64),
        ends=np.array(ends, dtype=np.int64),
        spans=len(ordered),
        usage_spans=n_usage,
        hex_pos=np.array(hex_pos, dtype=np.int64),
        token_pos=np.array(token_pos, dtype=np.int64),
    )


# --- usage_events rows, vectorised: the same model, for storage and dashboard benchmarks ---------

# USD per million tokens (input, cached input, output): close to the providers' list prices.
RATES = {
    "gpt-4o-mini": (0.15, 0.075, 0.60), "gpt-4o": (2.50, 1.25, 10.0), "gpt-4.1-mini": (0.40, 0.10, 1.60),
    "o4-mini": (1.10, 0.275, 4.40), "claude-sonnet-4-20250514": (3.0, 0.30, 15.0),
    "claude-3-5-haiku-20241022": (0.80, 0.08, 4.0), "gemini-2.5-flash": (0.30, 0.075, 2.50),
    "text-embedding-3-small": (0.02, 0.02, 0.0),
}


def usage_tables(rows: int, *, seed: int = 2, days: int = 30, end_ns: int | None = None, chunk: int = 500_000,
                 single_call_traces: bool = False):
    """Yield pyarrow Tables of `usage_events` rows (with `inserted_at`), `chunk` rows at a time,
    `rows` in all, spread over the `days` before `end_ns`; the distributions of the module docstring.

    Traces are generated whole (their calls are adjacent in time, share user, session, service,
    feature and conversation), then each chunk is sorted by time, as an ingest would write them.
    `single_call_traces`: every trace one call (the worst case for trace id compression).
    """
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    end_ns = end_ns or time.time_ns()
    start_ns = end_ns - days * 86_400 * 10**9
    user_p = _zipf_weights(USERS, ZIPF_S)
    shares = np.array([m[0] for m in MODELS])
    shares = shares / shares.sum()
    users = [f"user-{u:05d}" for u in range(USERS)]
    services, features, teams, agents = SERVICES, FEATURES, TEAMS, ("",) + AGENTS
    providers, operations = [m[1] for m in MODELS], [m[4] for m in MODELS]
    req_models, resp_models = [m[2] for m in MODELS], [m[3] for m in MODELS]
    versions = [f"genai-prices-0.2.3:{m[1]}/{m[2]}" for m in MODELS]
    in_med = np.array([m[5] for m in MODELS], dtype=float)
    out_med = np.array([m[6] for m in MODELS], dtype=float)
    rates = np.array([RATES[m[2]] for m in MODELS])
    cacheable = np.array([m[1] in ("openai", "anthropic") and m[4] != "embeddings" for m in MODELS])
    anthropic = np.array([m[1] == "anthropic" for m in MODELS])
    reasoning_model = np.array([m[2] == "o4-mini" for m in MODELS])
    embedding = np.array([m[4] == "embeddings" for m in MODELS])
    done = 0
    while done < rows:
        n_target = min(chunk, rows - done)
        # Traces: 1 call (55%), 2-3 (25%), 4-10 (20%).
        n_traces = int(n_target / 2.5) + 16
        r = rng.random(n_traces)
        calls = np.where(r < 0.55, 1, np.where(r < 0.8, rng.integers(2, 4, n_traces), rng.integers(4, 11, n_traces)))
        if single_call_traces:
            calls = np.ones(n_target + 16, dtype=np.int64)
        calls = calls[: np.searchsorted(np.cumsum(calls), n_target) + 1]
        calls[-1] -= calls.sum() - n_target
        calls = calls[calls > 0]
        t = len(calls)
        n = int(calls.sum())
        trace_of = np.repeat(np.arange(t), calls)
        first = np.repeat(np.cumsum(calls) - calls, calls)  # index of each call's trace's first call
        # Per trace
        user = rng.choice(USERS, size=t, p=user_p)
        t_start = rng.integers(start_ns, end_ns - 60 * 10**9, size=t)
        agent_trace = calls >= 4
        service = rng.integers(0, len(SERVICES), t)
        feature = np.where(agent_trace, len(FEATURES) - 1, rng.integers(0, len(FEATURES) - 1, t))
        agent = np.where(agent_trace, rng.integers(1, len(AGENTS) + 1, t), 0)
        trace_ids = rng.integers(0, 256, size=(t, 16), dtype=np.uint8)
        # A session is a user's hour; 40% of traces belong to a conversation.
        session_key = user.astype(np.int64) * 1_000_000 + (t_start // (3600 * 10**9))
        conv = rng.random(t) < 0.4
        # Per call
        model = rng.choice(len(MODELS), size=n, p=shares)
        inp = np.minimum((rng.lognormal(0, 0.8, n) * in_med[model]).astype(np.int64), 200_000)
        out = np.where(embedding[model], 0, np.minimum((rng.lognormal(0, 0.8, n) * out_med[model]).astype(np.int64), 200_000))
        cache_read = np.where(cacheable[model] & (rng.random(n) < 0.3), (inp * rng.uniform(0.3, 0.9, n)).astype(np.int64), 0)
        cache_write = np.where(anthropic[model] & (rng.random(n) < 0.03), (inp * rng.uniform(0.05, 0.5, n)).astype(np.int64), 0)
        reasoning = np.where(reasoning_model[model], (out * 0.6).astype(np.int64), 0)
        duration = np.where(embedding[model], 90, (rng.lognormal(0, 0.7, n) * 1500).astype(np.int64))
        # A trace's calls run one after another: each starts after the previous one's duration.
        steps = duration * 1_000_000 + rng.integers(0, 50_000_000, n)
        before = np.cumsum(steps) - steps
        event_ns = t_start[trace_of] + before - before[first]
        # Cost in pico-dollars: uncached input, cache reads and writes (writes at the input rate), output.
        rate = rates[model]
        uncached = np.maximum(inp - cache_read - cache_write, 0)
        pico = (uncached * rate[:, 0] + cache_read * rate[:, 1] + cache_write * rate[:, 0] * 1.25 + out * rate[:, 2]) * 1e6
        pico = np.round(pico).astype(np.int64)
        order = np.argsort(event_ns, kind="stable")
        sess_unique, sess_index = np.unique(session_key[trace_of], return_inverse=True)
        sess_names = ["sess_%016x" % (int(k) * 2654435761 % (1 << 64)) for k in sess_unique]
        conv_names = ["" if not c else "conv_%012x" % int(x) for c, x in zip(conv, rng.integers(0, 1 << 48, t))]

        def take(values: np.ndarray) -> np.ndarray:
            return values[order]

        def dict_col(index: np.ndarray, values) -> pa.Array:
            """Row i's value is values[index[i]]; Arrow wants a dictionary without repeats."""
            unique, position = np.unique(np.array(values, dtype=object), return_inverse=True)
            return pa.DictionaryArray.from_arrays(pa.array(position[take(index)].astype(np.int32)), pa.array(list(unique)))

        def fixed(ids: np.ndarray, width: int) -> pa.Array:
            return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(ids), [None, pa.py_buffer(ids.tobytes())])

        decimals = np.zeros((n, 2), dtype=np.int64)
        decimals[:, 0] = take(pico)
        lag = rng.integers(1, 30, n) * 10**9  # rows reach the table seconds after the call
        yield pa.table({
            "event_time": pa.array(take(event_ns) // 1_000_000, pa.timestamp("ms", tz="UTC")),
            "trace_id": fixed(trace_ids[take(trace_of)], 16),
            "span_id": fixed(rng.integers(0, 256, size=(n, 8), dtype=np.uint8), 8),
            "sign": pa.array(np.ones(n, dtype=np.int8)),
            "service_name": dict_col(service[trace_of], services),
            "user_id": dict_col(user[trace_of], users),
            "session_id": dict_col(sess_index, sess_names),
            "conversation_id": dict_col(trace_of, conv_names),
            "feature": dict_col(feature[trace_of], features),
            "team": dict_col(user[trace_of] % len(TEAMS), teams),
            "agent": dict_col(agent[trace_of], agents),
            "provider": dict_col(model, providers),
            "operation": dict_col(model, operations),
            "request_model": dict_col(model, req_models),
            "response_model": dict_col(model, resp_models),
            "input_tokens": pa.array(take(inp).astype(np.uint32)),
            "cache_read_tokens": pa.array(take(cache_read).astype(np.uint32)),
            "cache_write_tokens": pa.array(take(cache_write).astype(np.uint32)),
            "output_tokens": pa.array(take(np.maximum(out, reasoning)).astype(np.uint32)),
            "reasoning_tokens": pa.array(take(reasoning).astype(np.uint32)),
            "usage_status": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)), pa.array(["reported"])),
            "cost_usd": pa.Array.from_buffers(pa.decimal128(18, 12), n, [None, pa.py_buffer(decimals.tobytes())]),
            "pricing_status": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)), pa.array(["priced"])),
            "price_version": dict_col(model, versions),
            "reported_cost_usd": pa.nulls(n, pa.decimal128(18, 12)),
            "streaming": pa.array(take(rng.random(n) < 0.6)),
            "duration_ms": pa.array(take(duration).astype(np.uint32)),
            "source": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)), pa.array(["semconv"])),
            "inserted_at": pa.array((take(event_ns) + lag) // 10**9, pa.timestamp("s", tz="UTC")),
        })
        done += n
