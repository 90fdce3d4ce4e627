"""A small local fake LLM provider: OpenAI, Anthropic and Gemini endpoints with deterministic usage.

Used by the instrumentation tests, the end-to-end tests, the benchmarks and `spanmeter demo`.
Standard library only; no network beyond 127.0.0.1.

Starting and stopping
---------------------
    from spanmeter.ingest.fakeprovider import FakeProvider

    with FakeProvider(chunks=5, delay=0.0) as fake:           # binds 127.0.0.1 on a free port
        OpenAI(base_url=fake.openai_base_url, api_key="x")     # = fake.base_url + "/v1"
        Anthropic(base_url=fake.anthropic_base_url, api_key="x")   # = fake.base_url
        httpx.post(f"{fake.gemini_base_url}/v1beta/models/gemini-2.0-flash:generateContent", json=...)
        fake.requests        # every request received: RecordedRequest(method, path, query, headers, body)

`FakeProvider(...).start()` / `.stop()` do the same without `with`. `fake.transport(httpx)` (or
`httpx2`) is an in-process transport serving the same responses without sockets, for benchmarks:
`httpx2.Client(transport=fake.transport(httpx2))`; it works for sync and async clients
(`cache=True` replays each distinct request's response, for benchmarks).
`fake.handle(method, path_and_query, body_bytes)` returns a `FakeResponse` (status, headers,
chunks) for any other use.

Endpoints
---------
- OpenAI `POST /v1/chat/completions` (stream or not; with `stream_options.include_usage: true`
  every chunk carries `"usage": null` and a last chunk with `"choices": []` carries the usage,
  exactly like OpenAI; without it, no chunk has usage), `POST /v1/completions`,
  `POST /v1/responses` (stream events `response.created` ... `response.completed` with usage),
  `POST /v1/embeddings` (`encoding_format` float or base64). Any prefix before `/v1/...` works
  too (`/openai/deployments/{d}/chat/completions` for Azure-style clients).
- Anthropic `POST /v1/messages` (stream: `message_start` with input/cache usage, content blocks,
  `message_delta` with cumulative output usage, `message_stop`).
- Gemini `POST /v1beta/models/{model}:generateContent` and `:streamGenerateContent` (`?alt=sse`:
  `data:` events separated by CRLF CRLF like Google's; without it, a streamed JSON array). Each
  chunk carries cumulative `usageMetadata`; the last carries `finishReason`.
- `GET /health` -> 200.

Usage (deterministic)
---------------------
All counts are first decided in the semantic conventions' inclusive meaning, then written in
each provider's own shape:

- `input` (includes cache reads and writes) = `input_tokens_for(body) + cached + cache_write`,
  where `input_tokens_for` counts 3 plus the whitespace-separated words of every string found
  (recursively) under the body's `messages`, `input`, `contents`, `system`, `instructions` and
  `prompt` keys;
- `output` (includes reasoning) = `chunks + reasoning`, capped by the request's `max_tokens` /
  `max_completion_tokens` / `max_output_tokens` / `generationConfig.maxOutputTokens` (finish
  reason then `length` / `max_tokens` / `MAX_TOKENS`); an embeddings call has no output;
- `cached`, `reasoning`, `cache_write` default to 0.

Written as: OpenAI `prompt_tokens = input`, `cached_tokens = cached`, `completion_tokens = output`,
`reasoning_tokens = reasoning` (`cache_write_tokens` in `prompt_tokens_details` when non-zero, as
OpenRouter does); Anthropic `input_tokens = input - cached - cache_write` (Anthropic's raw input
excludes the cache), `cache_read_input_tokens`, `cache_creation_input_tokens`, `output_tokens`;
Gemini `promptTokenCount = input`, `cachedContentTokenCount = cached`, `candidatesTokenCount =
output - reasoning`, `thoughtsTokenCount = reasoning` (Gemini's candidates exclude thoughts).

Controls
--------
Per request, a `"fake"` object in the JSON body (`extra_body={"fake": {...}}` in the SDKs) sets
any of: `input`, `output`, `cached`, `reasoning`, `cache_write` (counts as above; `input` and
`output` replace the computed totals), `chunks` (content chunks of a stream), `delay` (seconds
before each stream chunk), `latency` (seconds before the answer's first byte, as a provider
takes to answer; spun, not slept, up to 5 ms, for a precise wait; the HTTP server only, not
the in-process transport), `error` (an HTTP status to answer with), `fail_after` (close the
connection abruptly after that many stream events), `response_model`, `finish_reason`,
`message_deltas` (Anthropic: that many cumulative `message_delta` events, last one final).
Server-wide defaults: `FakeProvider(chunks=5, delay=0.0, latency=0.0)`.

A model named `error-<status>` (e.g. `error-429`, `error-500`) answers with that status and the
provider's error body. Error answers carry `x-should-retry: false`, which the openai and anthropic
SDKs honour, so tests are not slowed by retries.

An OpenAI chat request's `service_tier` of `flex`, `priority` or `scale` is echoed in the
response (else `"default"`), as OpenAI reports the tier it served.

Response models: `gpt-4o-mini` -> `gpt-4o-mini-2024-07-18` and `gpt-4o` -> `gpt-4o-2024-08-06`
(OpenAI answers with the dated snapshot); every other model is echoed (or `response_model`).
Ids are `chatcmpl-fake-000001`, `resp_fake_000002`, `msg_fake_000003`, `gemini-fake-000004`
(one counter per server); `created` is fixed at 1700000000.
"""

from __future__ import annotations

import base64
import itertools
import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["FakeProvider", "FakeResponse", "RecordedRequest", "input_tokens_for"]

CREATED = 1700000000
_SNAPSHOTS = {"gpt-4o-mini": "gpt-4o-mini-2024-07-18", "gpt-4o": "gpt-4o-2024-08-06"}
_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet")
_TEXT_KEYS = ("messages", "input", "contents", "system", "instructions", "prompt")
_REASONS = {429: "rate_limit_error", 400: "invalid_request_error", 401: "authentication_error", 500: "api_error"}
_GOOGLE_STATUS = {429: "RESOURCE_EXHAUSTED", 400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 500: "INTERNAL"}


def input_tokens_for(body: Any) -> int:
    """The fake's uncached input count for a request body: 3 + words of its prompt strings."""
    words = 0
    if isinstance(body, dict):
        for key in _TEXT_KEYS:
            if key in body:
                words += _count_words(body[key])
    return 3 + words


def _count_words(value: Any) -> int:
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_count_words(v) for v in value)
    if isinstance(value, dict):
        return sum(_count_words(v) for v in value.values())
    return 0


@dataclass(slots=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, or the raw bytes when not JSON


@dataclass(slots=True)
class FakeResponse:
    status: int
    headers: dict[str, str]
    chunks: list[bytes]  # one element for a plain body; one per event for a stream
    stream: bool = False
    delay: float = 0.0  # before each chunk of a stream
    fail_after: int | None = None  # abort the connection after this many chunks
    latency: float = 0.0  # before the first byte (the HTTP server only)

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


@dataclass(slots=True)
class _Usage:
    input: int
    output: int
    cached: int = 0
    reasoning: int = 0
    cache_write: int = 0
    finish: str | None = None  # "length" when capped by max tokens
    visible: int = 0  # words of text (one per stream chunk)


@dataclass
class _Plan:
    """What one request asks of the fake, resolved from the body, the model and the defaults."""

    model: str
    response_model: str
    usage: _Usage
    chunks: int
    delay: float
    fail_after: int | None
    error: int | None
    finish_reason: str | None
    message_deltas: int
    controls: dict[str, Any] = field(default_factory=dict)


class FakeProvider:
    """The fake provider; see the module docstring for its API and its usage rules."""

    def __init__(
        self, *, chunks: int = 5, delay: float = 0.0, latency: float = 0.0, record: bool = True, host: str = "127.0.0.1"
    ) -> None:
        self.chunks = chunks
        self.delay = delay
        self.latency = latency
        self.record = record
        self.host = host
        self.requests: list[RecordedRequest] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> FakeProvider:
        if self._server is not None:
            return self
        handler = type("_BoundHandler", (_Handler,), {"fake": self})
        server = _Server((self.host, 0), handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="spanmeter-fakeprovider", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeProvider is not started")
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return self.base_url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.base_url

    @property
    def gemini_base_url(self) -> str:
        return self.base_url

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()

    def transport(self, lib: Any, *, cache: bool = False) -> Any:
        """An in-process `lib` transport (httpx or httpx2) serving this fake's responses.

        `cache=True` computes each distinct request's response once and replays it (same ids),
        so that a benchmark measures the client, not the fake.
        """
        return _make_transport(self, lib, cache)

    # --- the responses ------------------------------------------------------------------------

    def handle(self, method: str, target: str, body: bytes, headers: dict[str, str] | None = None) -> FakeResponse:
        resp = self._handle(method, target, body, headers)
        resp.latency = self.latency
        try:
            controls = json.loads(body).get("fake") if body and b'"latency"' in body else None
            if isinstance(controls, dict) and "latency" in controls:
                resp.latency = float(controls["latency"])
        except (ValueError, AttributeError, TypeError):
            pass
        return resp

    def _handle(self, method: str, target: str, body: bytes, headers: dict[str, str] | None = None) -> FakeResponse:
        split = urlsplit(target)
        path = split.path
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        try:
            data: Any = json.loads(body) if body else None
        except ValueError:
            data = body
        if self.record:
            with self._lock:
                self.requests.append(RecordedRequest(method, path, query, {k.lower(): v for k, v in (headers or {}).items()}, data))
        if method == "GET" and path == "/health":
            return _json(200, {"status": "ok"})
        if method != "POST" or not isinstance(data, dict):
            return _json(404 if method != "POST" else 400, {"error": {"message": f"no route {method} {path}"}})
        if path.endswith("/chat/completions"):
            return self._openai_chat(data)
        if path.endswith("/completions"):
            return self._openai_chat(data, legacy=True)
        if path.endswith("/responses"):
            return self._responses(data)
        if path.endswith("/embeddings"):
            return self._embeddings(data)
        if path.endswith("/v1/messages"):
            return self._anthropic(data)
        if path.endswith(":generateContent") or path.endswith(":streamGenerateContent"):
            model = path.rpartition(":")[0].rpartition("/")[2]
            return self._gemini(data, model, stream=path.endswith(":streamGenerateContent"), sse=query.get("alt") == "sse")
        return _json(404, {"error": {"message": f"no route {method} {path}"}})

    def _next_id(self) -> int:
        with self._lock:
            return next(self._ids)

    def _plan(self, body: dict[str, Any], model: str, embeddings: bool = False, max_tokens: Any = None) -> _Plan:
        controls = body.get("fake") if isinstance(body.get("fake"), dict) else {}
        error = controls.get("error")
        if error is None and model.startswith("error-") and model[6:].isdigit():
            error = int(model[6:])
        chunks = int(controls.get("chunks", self.chunks))
        cached = int(controls.get("cached", 0))
        reasoning = 0 if embeddings else int(controls.get("reasoning", 0))
        cache_write = int(controls.get("cache_write", 0))
        inp = int(controls["input"]) if "input" in controls else input_tokens_for(body) + cached + cache_write
        out = 0 if embeddings else (int(controls["output"]) if "output" in controls else chunks + reasoning)
        finish = None
        if not embeddings and isinstance(max_tokens, int) and max_tokens < out:
            out, finish = max_tokens, "length"
        usage = _Usage(inp, out, cached, min(reasoning, out), cache_write, finish)
        # The text is `chunks` words (one per stream chunk), fewer when capped by max tokens.
        usage.visible = chunks if finish is None else max(out - usage.reasoning, 0)
        return _Plan(
            model=model,
            response_model=str(controls.get("response_model") or _SNAPSHOTS.get(model, model)),
            usage=usage,
            chunks=chunks,
            delay=float(controls.get("delay", self.delay)),
            fail_after=controls.get("fail_after"),
            error=int(error) if error is not None else None,
            finish_reason=controls.get("finish_reason"),
            message_deltas=max(int(controls.get("message_deltas", 1)), 1),
            controls=controls,
        )

    # OpenAI chat / legacy completions

    def _openai_chat(self, body: dict[str, Any], legacy: bool = False) -> FakeResponse:
        model = str(body.get("model") or "unknown")
        cap = body.get("max_completion_tokens", body.get("max_tokens"))
        plan = self._plan(body, model, max_tokens=cap)
        if plan.error:
            return _openai_error(plan.error)
        u = plan.usage
        n = int(body.get("n") or 1)
        rid = f"{'cmpl' if legacy else 'chatcmpl'}-fake-{self._next_id():06d}"
        kind = "text_completion" if legacy else "chat.completion"
        finish = plan.finish_reason or u.finish or "stop"
        tier = body.get("service_tier") if body.get("service_tier") in ("flex", "priority", "scale") else "default"
        usage = {
            "prompt_tokens": u.input,
            "completion_tokens": u.output,
            "total_tokens": u.input + u.output,
            "prompt_tokens_details": {"cached_tokens": u.cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": u.reasoning,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        if u.cache_write:
            usage["prompt_tokens_details"]["cache_write_tokens"] = u.cache_write
        words = _words(u.visible)
        if not body.get("stream"):
            if legacy:
                choices = [{"index": i, "text": " ".join(words), "finish_reason": finish, "logprobs": None} for i in range(n)]
            else:
                choices = [
                    {
                        "index": i,
                        "message": {"role": "assistant", "content": " ".join(words), "refusal": None, "annotations": []},
                        "finish_reason": finish,
                        "logprobs": None,
                    }
                    for i in range(n)
                ]
            return _json(
                200,
                {
                    "id": rid,
                    "object": kind,
                    "created": CREATED,
                    "model": plan.response_model,
                    "choices": choices,
                    "usage": usage,
                    "service_tier": tier,
                    "system_fingerprint": "fp_fake",
                },
            )
        opts = body.get("stream_options")
        include_usage = isinstance(opts, dict) and opts.get("include_usage") is True
        kind = "text_completion" if legacy else "chat.completion.chunk"

        def chunk(choices: list[dict[str, Any]], usage_value: Any = None, with_usage: bool = include_usage) -> bytes:
            obj: dict[str, Any] = {
                "id": rid,
                "object": kind,
                "created": CREATED,
                "model": plan.response_model,
                "service_tier": tier,
                "system_fingerprint": "fp_fake",
                "choices": choices,
            }
            if with_usage:
                obj["usage"] = usage_value
            return b"data: " + _dumps(obj) + b"\n\n"

        events = []
        for i in range(n):
            if legacy:
                pieces = [{"index": i, "text": w + " ", "finish_reason": None, "logprobs": None} for w in words]
                events += [chunk([p]) for p in pieces]
                events.append(chunk([{"index": i, "text": "", "finish_reason": finish, "logprobs": None}]))
            else:
                events.append(chunk([{"index": i, "delta": {"role": "assistant", "content": "", "refusal": None}, "finish_reason": None, "logprobs": None}]))
                events += [chunk([{"index": i, "delta": {"content": w + " "}, "finish_reason": None, "logprobs": None}]) for w in words]
                events.append(chunk([{"index": i, "delta": {}, "finish_reason": finish, "logprobs": None}]))
        if include_usage:
            events.append(chunk([], usage))
        events.append(b"data: [DONE]\n\n")
        return _sse(events, plan)

    # OpenAI Responses

    def _responses(self, body: dict[str, Any]) -> FakeResponse:
        model = str(body.get("model") or "unknown")
        plan = self._plan(body, model, max_tokens=body.get("max_output_tokens"))
        if plan.error:
            return _openai_error(plan.error)
        u = plan.usage
        n = self._next_id()
        rid, mid = f"resp_fake_{n:06d}", f"msg_fake_{n:06d}"
        words = _words(u.visible)
        text = " ".join(words)
        status = "incomplete" if u.finish else "completed"
        usage = {
            "input_tokens": u.input,
            "input_tokens_details": {"cached_tokens": u.cached},
            "output_tokens": u.output,
            "output_tokens_details": {"reasoning_tokens": u.reasoning},
            "total_tokens": u.input + u.output,
        }
        message = {
            "type": "message",
            "id": mid,
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
        }

        def response(state: str, output: list[Any], usage_value: Any) -> dict[str, Any]:
            return {
                "id": rid,
                "object": "response",
                "created_at": CREATED,
                "status": state,
                "background": False,
                "error": None,
                "incomplete_details": {"reason": "max_output_tokens"} if state == "incomplete" else None,
                "instructions": None,
                "max_output_tokens": body.get("max_output_tokens"),
                "model": plan.response_model,
                "output": output,
                "parallel_tool_calls": True,
                "previous_response_id": None,
                "service_tier": "default",
                "store": True,
                "temperature": 1.0,
                "text": {"format": {"type": "text"}, "verbosity": "medium"},
                "tool_choice": "auto",
                "tools": [],
                "top_p": 1.0,
                "truncation": "disabled",
                "usage": usage_value,
                "user": None,
                "metadata": {},
            }

        if not body.get("stream"):
            return _json(200, response(status, [message], usage))
        seq = itertools.count()

        def event(kind: str, payload: dict[str, Any]) -> bytes:
            obj = {"type": kind, "sequence_number": next(seq), **payload}
            return b"event: " + kind.encode() + b"\ndata: " + _dumps(obj) + b"\n\n"

        empty = {**message, "status": "in_progress", "content": []}
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        events = [
            event("response.created", {"response": response("in_progress", [], None)}),
            event("response.in_progress", {"response": response("in_progress", [], None)}),
            event("response.output_item.added", {"output_index": 0, "item": empty}),
            event("response.content_part.added", {"item_id": mid, "output_index": 0, "content_index": 0, "part": part}),
        ]
        events += [
            event("response.output_text.delta", {"item_id": mid, "output_index": 0, "content_index": 0, "delta": w + " ", "logprobs": []})
            for w in words
        ]
        events += [
            event("response.output_text.done", {"item_id": mid, "output_index": 0, "content_index": 0, "text": text, "logprobs": []}),
            event("response.content_part.done", {"item_id": mid, "output_index": 0, "content_index": 0, "part": {**part, "text": text}}),
            event("response.output_item.done", {"output_index": 0, "item": message}),
            event(f"response.{status}", {"response": response(status, [message], usage)}),
        ]
        return _sse(events, plan)

    # OpenAI embeddings

    def _embeddings(self, body: dict[str, Any]) -> FakeResponse:
        model = str(body.get("model") or "unknown")
        plan = self._plan(body, model, embeddings=True)
        if plan.error:
            return _openai_error(plan.error)
        inputs = body.get("input")
        count = len(inputs) if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else 1
        dims = int(body.get("dimensions") or 8)
        data = []
        for i in range(count):
            vector = [round((i + 1) * 0.001 * (d + 1), 6) for d in range(dims)]
            if body.get("encoding_format") == "base64":
                value: Any = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
            else:
                value = vector
            data.append({"object": "embedding", "index": i, "embedding": value})
        usage = {"prompt_tokens": plan.usage.input, "total_tokens": plan.usage.input}
        return _json(200, {"object": "list", "data": data, "model": plan.response_model, "usage": usage})

    # Anthropic messages

    def _anthropic(self, body: dict[str, Any]) -> FakeResponse:
        model = str(body.get("model") or "unknown")
        plan = self._plan(body, model, max_tokens=body.get("max_tokens"))
        if plan.error:
            status = plan.error
            return _error(status, {"type": "error", "error": {"type": _REASONS.get(status, "api_error"), "message": f"fake error {status}"}})
        u = plan.usage
        mid = f"msg_fake_{self._next_id():06d}"
        stop = plan.finish_reason or ("max_tokens" if u.finish else "end_turn")
        words = _words(u.visible)
        raw_input = u.input - u.cached - u.cache_write
        usage = {
            "input_tokens": raw_input,
            "cache_creation_input_tokens": u.cache_write,
            "cache_read_input_tokens": u.cached,
            "output_tokens": u.output,
            "service_tier": "standard",
        }
        message = {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": plan.response_model,
            "content": [{"type": "text", "text": " ".join(words)}],
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }
        if not body.get("stream"):
            return _json(200, message)

        def event(kind: str, payload: dict[str, Any]) -> bytes:
            return b"event: " + kind.encode() + b"\ndata: " + _dumps({"type": kind, **payload}) + b"\n\n"

        start_usage = {**usage, "output_tokens": min(1, u.output)}
        events = [
            event("message_start", {"message": {**message, "content": [], "stop_reason": None, "usage": start_usage}}),
            event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
            event("ping", {}),
        ]
        events += [event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": w + " "}}) for w in words]
        events.append(event("content_block_stop", {"index": 0}))
        k = plan.message_deltas
        for i in range(1, k + 1):
            # Cumulative counts: each delta reports the total so far; the last one is final.
            partial = u.output * i // k
            events.append(
                event(
                    "message_delta",
                    {"delta": {"stop_reason": stop, "stop_sequence": None}, "usage": {"output_tokens": partial}},
                )
            )
        events.append(event("message_stop", {}))
        return _sse(events, plan)

    # Gemini

    def _gemini(self, body: dict[str, Any], model: str, stream: bool, sse: bool) -> FakeResponse:
        config = body.get("generationConfig") if isinstance(body.get("generationConfig"), dict) else {}
        plan = self._plan(body, model, max_tokens=config.get("maxOutputTokens"))
        if plan.error:
            status = plan.error
            return _error(status, {"error": {"code": status, "message": f"fake error {status}", "status": _GOOGLE_STATUS.get(status, "UNKNOWN")}})
        u = plan.usage
        rid = f"gemini-fake-{self._next_id():06d}"
        finish = plan.finish_reason or ("MAX_TOKENS" if u.finish else "STOP")
        words = _words(u.visible)

        def usage(candidates: int, thoughts: int) -> dict[str, Any]:
            meta: dict[str, Any] = {
                "promptTokenCount": u.input,
                "candidatesTokenCount": candidates,
                "totalTokenCount": u.input + candidates + thoughts,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": u.input}],
            }
            if u.cached:
                meta["cachedContentTokenCount"] = u.cached
            if thoughts:
                meta["thoughtsTokenCount"] = thoughts
            return meta

        def chunk(text: str, candidates: int, thoughts: int, last: bool) -> dict[str, Any]:
            cand: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
            if last:
                cand["finishReason"] = finish
            return {"candidates": [cand], "usageMetadata": usage(candidates, thoughts), "modelVersion": plan.response_model, "responseId": rid}

        candidates = u.output - u.reasoning  # Gemini's candidates exclude thoughts
        if not stream:
            return _json(200, chunk(" ".join(words), candidates, u.reasoning, True))
        pieces = words or [""]
        objs = [
            chunk(w + " ", (i + 1) * candidates // len(pieces), u.reasoning, i == len(pieces) - 1)
            for i, w in enumerate(pieces)
        ]
        if sse:
            events = [b"data: " + _dumps(o) + b"\r\n\r\n" for o in objs]
            return _sse(events, plan)
        parts = [(b"[" if i == 0 else b",\r\n") + _dumps(o) for i, o in enumerate(objs)] + [b"]"]
        resp = _sse(parts, plan)
        resp.headers["content-type"] = "application/json; charset=UTF-8"
        return resp


# --- helpers ------------------------------------------------------------------------------------


def _words(n: int) -> list[str]:
    return [_WORDS[i % len(_WORDS)] for i in range(n)]


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _json(status: int, obj: Any) -> FakeResponse:
    return FakeResponse(status, {"content-type": "application/json"}, [_dumps(obj)])


def _error(status: int, obj: Any) -> FakeResponse:
    resp = _json(status, obj)
    resp.headers["x-should-retry"] = "false"
    return resp


def _openai_error(status: int) -> FakeResponse:
    kind = _REASONS.get(status, "api_error")
    return _error(status, {"error": {"message": f"fake error {status}", "type": kind, "param": None, "code": kind}})


def _sse(events: list[bytes], plan: _Plan) -> FakeResponse:
    return FakeResponse(
        200,
        {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"},
        events,
        stream=True,
        delay=plan.delay,
        fail_after=plan.fail_after,
    )


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up (abandoned streams, closed keep-alive sockets) are routine here.
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeProvider  # set on the per-server subclass

    def setup(self) -> None:
        super().setup()
        # Headers, body and each stream chunk are separate writes: without TCP_NODELAY, Nagle's
        # algorithm and the client's delayed ACK stall each response by ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the access log
        pass

    def do_GET(self) -> None:  # noqa: N802
        self._serve()

    def do_POST(self) -> None:  # noqa: N802
        self._serve()

    def _serve(self) -> None:
        try:
            self._respond()
        except (BrokenPipeError, ConnectionResetError):
            # The client went away mid-stream (an abandoned stream): expected, not an error.
            self.close_connection = True

    def _respond(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        resp = self.fake.handle(self.command, self.path, body, dict(self.headers.items()))
        if resp.latency:
            _wait(resp.latency)
        self.send_response(resp.status)
        for name, value in resp.headers.items():
            self.send_header(name, value)
        if not resp.stream:
            payload = resp.body
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        for i, data in enumerate(resp.chunks):
            if resp.fail_after is not None and i >= resp.fail_after:
                # Abort mid-body: no terminating chunk, the client sees an incomplete read.
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            if resp.delay:
                time.sleep(resp.delay)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def _wait(seconds: float) -> None:
    """Sleep; up to 5 ms, spin instead: a sleep overshoots by tens of microseconds, at random,
    which would drown what a benchmark measures against this wait."""
    if seconds > 0.005:
        time.sleep(seconds)
        return
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _make_transport(fake: FakeProvider, lib: Any, cache: bool = False) -> Any:
    responses: dict[tuple[str, str, bytes], FakeResponse] = {}

    class _Stream(lib.SyncByteStream, lib.AsyncByteStream):
        def __init__(self, resp: FakeResponse) -> None:
            self._resp = resp

        def _check(self, i: int) -> None:
            if self._resp.fail_after is not None and i >= self._resp.fail_after:
                raise lib.RemoteProtocolError("fake provider closed the connection mid-body")

        def __iter__(self) -> Iterator[bytes]:
            for i, data in enumerate(self._resp.chunks):
                self._check(i)
                if self._resp.delay:
                    time.sleep(self._resp.delay)
                yield data

        async def __aiter__(self) -> Any:
            import asyncio

            for i, data in enumerate(self._resp.chunks):
                self._check(i)
                if self._resp.delay:
                    await asyncio.sleep(self._resp.delay)
                yield data

    class _Transport(lib.BaseTransport, lib.AsyncBaseTransport):
        def handle_request(self, request: Any) -> Any:
            return self._respond(request, request.read())

        async def handle_async_request(self, request: Any) -> Any:
            return self._respond(request, await request.aread())

        def _respond(self, request: Any, body: bytes) -> Any:
            target = request.url.raw_path.decode("ascii")
            key = (request.method, target, body)
            resp = responses.get(key) if cache else None
            if resp is None:
                resp = fake.handle(request.method, target, body, dict(request.headers.items()))
                if cache:
                    responses[key] = resp
            headers = dict(resp.headers)
            if not resp.stream:
                headers["content-length"] = str(len(resp.body))
            return lib.Response(resp.status, headers=headers, stream=_Stream(resp), request=request)

    return _Transport()
