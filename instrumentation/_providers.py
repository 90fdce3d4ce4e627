"""Provider shapes: which HTTP requests are LLM calls, and where their usage is in the response.

Recognition is by request path (so any OpenAI-compatible base URL works: OpenAI, Azure OpenAI,
OpenRouter, a LiteLLM proxy, vLLM, Ollama) and the response's content type decides how its body is
read (JSON, server-sent events, or Gemini's streamed JSON array).

Everything here is pure: bytes and dicts in, span attributes out. Usage is written in the GenAI
semantic conventions' inclusive meaning (input includes cache reads and writes, output includes
reasoning), converting each provider's own meaning:

- OpenAI chat/responses/embeddings: input already includes cached tokens, output reasoning.
- Anthropic: raw `input_tokens` EXCLUDES cache reads and writes: input = raw + read + write.
- Gemini: `promptTokenCount` includes cached content; `candidatesTokenCount` EXCLUDES thoughts:
  output = candidates + thoughts; tool-use prompt tokens are billed as input and added to it
  (so that input + output equals `totalTokenCount`).

A count the provider did not report is left out, never written as 0; sub-counts (cache reads
and writes, reasoning) are written only when non-zero, and the OpenAI service tier only when
not "default" (each span attribute costs the SDK about a microsecond).
"""

from __future__ import annotations

import json
import re
from collections import deque
from dataclasses import dataclass
from typing import Any

from . import semconv as sc

try:
    # orjson parses a chat completion in less than half json's time (2.5 against 5.7 µs for the
    # usual 600-byte body, 19 against 42 µs for 50 KB) and takes bytes as they are.
    from orjson import loads as _orjson_loads
except ImportError:  # pragma: no cover - a platform without its wheel: json does the same work
    _orjson_loads = None

_scan_once = json.JSONDecoder().scan_once


def loads(data: bytes) -> Any:
    """json.loads for bodies and events, by orjson when installed.

    What orjson refuses and json accepts (NaN, a lone surrogate escape) is handed to json, as is
    what is not JSON at all (json's error says why). The one value orjson reads differently is
    an integer beyond 64 bits (a float): no token count or id metering reads comes near that.
    """
    if _orjson_loads is not None:
        try:
            return _orjson_loads(data)
        except ValueError:
            pass
    text = data.decode("utf-8")
    try:
        return _scan_once(text, 0)[0]  # json.loads minus its wrapper (most values start at byte 0)
    except StopIteration:  # leading whitespace, or not JSON: json.loads says which
        return json.loads(text)


# --- shapes -----------------------------------------------------------------------------------

CHAT_COMPLETIONS = "openai.chat_completions"
RESPONSES = "openai.responses"
EMBEDDINGS = "openai.embeddings"
COMPLETIONS = "openai.completions"
ANTHROPIC_MESSAGES = "anthropic.messages"
GEMINI_GENERATE = "gemini.generate_content"

OPERATION = {
    CHAT_COMPLETIONS: sc.OP_CHAT,
    RESPONSES: sc.OP_CHAT,
    EMBEDDINGS: sc.OP_EMBEDDINGS,
    COMPLETIONS: sc.OP_TEXT_COMPLETION,
    ANTHROPIC_MESSAGES: sc.OP_CHAT,
    GEMINI_GENERATE: sc.OP_GENERATE_CONTENT,
}


def match_path(path: str) -> str | None:
    """The shape of a POST to `path`, or None when it is not an LLM call we meter."""
    if path.endswith("/chat/completions"):
        return CHAT_COMPLETIONS
    if path.endswith("/responses"):
        return RESPONSES
    if path.endswith("/embeddings"):
        return EMBEDDINGS
    if path.endswith("/messages"):
        # Anthropic's `/v1/messages`, not OpenAI's `/v1/threads/{id}/messages` (no usage there).
        return ANTHROPIC_MESSAGES if "/threads/" not in path else None
    if path.endswith(":generateContent") or path.endswith(":streamGenerateContent"):
        return GEMINI_GENERATE
    if path.endswith("/completions"):
        return COMPLETIONS
    return None


# Hosts whose OpenAI-compatible API belongs to a provider other than OpenAI. Values are
# semantic-convention provider names where one exists, else the provider's own short name.
_HOST_PROVIDERS = {
    "api.openai.com": sc.PROVIDER_OPENAI,
    "openrouter.ai": sc.PROVIDER_OPENROUTER,
    "api.groq.com": sc.PROVIDER_GROQ,
    "api.deepseek.com": sc.PROVIDER_DEEPSEEK,
    "api.x.ai": sc.PROVIDER_X_AI,
    "api.mistral.ai": sc.PROVIDER_MISTRAL_AI,
    "api.perplexity.ai": sc.PROVIDER_PERPLEXITY,
    "api.moonshot.ai": sc.PROVIDER_MOONSHOT_AI,
    "api.anthropic.com": sc.PROVIDER_ANTHROPIC,
    "generativelanguage.googleapis.com": sc.PROVIDER_GCP_GEMINI,
}
_AZURE_SUFFIXES = (".openai.azure.com", ".cognitiveservices.azure.com", ".services.ai.azure.com")


def provider_for(shape: str, host: str, path: str) -> str:
    """`gen_ai.provider.name` for a call: the API's owner for known hosts, else its dialect.

    A self-hosted OpenAI-compatible server (vLLM, Ollama, a LiteLLM proxy) reports "openai", the
    dialect it speaks; `server.address` tells the servers apart.
    """
    if shape == ANTHROPIC_MESSAGES:
        return sc.PROVIDER_ANTHROPIC
    if shape == GEMINI_GENERATE:
        return sc.PROVIDER_GCP_VERTEX_AI if host.endswith("aiplatform.googleapis.com") else sc.PROVIDER_GCP_GEMINI
    known = _HOST_PROVIDERS.get(host)
    if known is not None:
        return known
    if host.endswith(_AZURE_SUFFIXES) or "/openai/deployments/" in path:
        return sc.PROVIDER_AZURE_OPENAI
    return sc.PROVIDER_OPENAI


def model_from_path(shape: str, path: str) -> str | None:
    """The model a URL names: Gemini's `models/{m}:generateContent`, Azure's deployment."""
    if shape == GEMINI_GENERATE:
        head = path.rpartition(":")[0]
        name = head.rpartition("/")[2]
        return name or None
    marker = "/deployments/"
    at = path.find(marker)
    if at >= 0:
        name = path[at + len(marker) :].partition("/")[0]
        return name or None
    return None


# --- requests ---------------------------------------------------------------------------------


@dataclass(slots=True)
class RequestFields:
    """What metering needs from a request body; everything else in it is never looked at."""

    model: str | None = None
    stream: bool = False
    has_stream_options: bool = False
    include_usage: bool | None = None
    user: str | None = None  # OpenAI `user` / `safety_identifier`, Anthropic `metadata.user_id`
    conversation: str | None = None  # Responses API `conversation`
    service_tier: str | None = None
    choices: int = 1  # OpenAI `n`
    obj: dict[str, Any] | None = None  # the parsed body, when it was parsed whole


# Bodies above `max_parse_bytes` (image or document uploads) are walked instead of parsed whole:
# json.loads costs ~2 ms per MB and copies every string, while the walk below steps over the
# members of the top-level object (a string by `bytes.find`, a nested value by its brackets and
# strings only) and decodes just the values of the keys metering reads. A nested `"model"` or
# `"user"` (a tool schema, a message's metadata) is never taken for the request's own.
_TOP_LEVEL_KEYS = frozenset((b"model", b"stream", b"stream_options", b"safety_identifier", b"user", b"metadata",
                             b"conversation", b"service_tier", b"n"))
_STRUCTURE = re.compile(rb'["\[\]{}]')
_SCALAR_END = re.compile(rb"[^\s,}\]]*")
# The walk pays ~0.5 µs per string or bracket it steps over, the parse ~2 ns per byte: a body with
# more than one of those per KB (a long chat history rather than an upload) is parsed whole, the
# walk having cost at most a quarter of the parse by then.
_WALK_BYTES_PER_TOKEN = 1024


class _Dense(Exception):
    """The walk met more tokens than its budget: parse the body whole instead."""


def parse_request(body: bytes, max_parse_bytes: int) -> RequestFields | None:
    """The metering fields of a JSON request body, or None when it is not a JSON object."""
    start = 0
    n = len(body)
    while start < n and body[start] in b" \t\r\n":
        start += 1
    if start >= n or body[start] != 0x7B:  # "{"
        return None
    if n <= max_parse_bytes:
        try:
            obj = loads(body)
        except ValueError:
            return None
        if not isinstance(obj, dict):
            return None
        return _fields_from_obj(obj)
    return _scan_large(body, start)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# The top-level keys `_fields_from_obj` reads beyond `model` and `stream`: most requests have
# none of them, and one set intersection is cheaper than a lookup per key.
_RARE_KEYS = frozenset(("stream_options", "safety_identifier", "user", "metadata", "conversation", "service_tier", "n"))


def _fields_from_obj(obj: dict[str, Any]) -> RequestFields:
    f = RequestFields(obj=obj)
    value = obj.get("model")
    if isinstance(value, str) and value:
        f.model = value
    f.stream = obj.get("stream") is True
    if _RARE_KEYS.isdisjoint(obj):
        return f
    get = obj.get
    opts = get("stream_options")
    if opts is not None:
        f.has_stream_options = True
        if isinstance(opts, dict):
            value = opts.get("include_usage")
            if isinstance(value, bool):
                f.include_usage = value
    # The newer `safety_identifier` is OpenAI's replacement for `user`; prefer it.
    f.user = _str(get("safety_identifier")) or _str(get("user"))
    if f.user is None:
        meta = get("metadata")
        if isinstance(meta, dict):
            f.user = _str(meta.get("user_id"))
    conv = get("conversation")
    if conv is not None:
        if isinstance(conv, dict):
            conv = conv.get("id")
        f.conversation = _str(conv)
    value = get("service_tier")
    if isinstance(value, str) and value:
        f.service_tier = value
    n = get("n")
    if type(n) is int and n > 1:
        f.choices = n
    return f


def _scan_large(body: bytes, start: int) -> RequestFields | None:
    """The fields of a large body (`body[start]` is its `{`), from its top-level members only."""
    try:
        found = _top_level(body, start, max(len(body) // _WALK_BYTES_PER_TOKEN, 64))
    except _Dense:
        try:
            obj = loads(body)
        except ValueError:
            return None
        return _fields_from_obj(obj) if isinstance(obj, dict) else None
    except (ValueError, IndexError):
        return None  # not a well-formed object (a truncated upload): as a parse would say
    f = _fields_from_obj(found)
    f.obj = None  # only a few members were decoded: nothing to re-serialise
    return f


def _top_level(body: bytes, i: int, budget: int) -> dict[str, Any]:
    """The decoded values of the `_TOP_LEVEL_KEYS` members of the object starting at `body[i]`."""
    found: dict[str, Any] = {}
    n = len(body)
    i += 1
    while body[i] in b" \t\r\n":
        i += 1
    if body[i] == 0x7D:  # "}": the empty object
        return found
    while True:
        while body[i] in b" \t\r\n":
            i += 1
        if body[i] != 0x22:  # a member starts with its key's quote
            raise ValueError("expected a key")
        end = _string_end(body, i + 1)
        key = body[i + 1 : end - 1]
        i = end
        while body[i] in b" \t\r\n":
            i += 1
        if body[i] != 0x3A:  # ":"
            raise ValueError("expected a colon")
        i += 1
        while body[i] in b" \t\r\n":
            i += 1
        start = i
        c = body[i]
        if c == 0x22:
            i = _string_end(body, i + 1)
        elif c == 0x7B or c == 0x5B:  # "{" or "["
            i, budget = _container_end(body, i, budget)
        else:
            i = _SCALAR_END.match(body, i).end()  # type: ignore[union-attr]  # (always matches)
            if i == start:
                raise ValueError("expected a value")
        if b"\\" in key:
            key = loads(b'"' + key + b'"').encode()
        if key in _TOP_LEVEL_KEYS:
            found[key.decode()] = loads(body[start:i])  # the last of duplicate keys wins, as in json
        while i < n and body[i] in b" \t\r\n":
            i += 1
        c = body[i]
        if c == 0x7D:  # "}"
            return found
        if c != 0x2C:  # ","
            raise ValueError("expected a comma")
        i += 1


def _string_end(body: bytes, i: int) -> int:
    """The index after the closing quote of the JSON string whose content starts at `body[i]`."""
    first = i
    while True:
        at = body.find(b'"', i)
        if at < 0:
            raise ValueError("unterminated string")
        back = at
        while back > first and body[back - 1] == 0x5C:  # a quote after an odd run of backslashes is escaped
            back -= 1
        if not (at - back) & 1:
            return at + 1
        i = at + 1


def _container_end(body: bytes, i: int, budget: int) -> tuple[int, int]:
    """The index after the object or array starting at `body[i]`, and the budget left."""
    depth = 0
    search = _STRUCTURE.search
    while True:
        m = search(body, i)
        if m is None:
            raise ValueError("unterminated value")
        i = m.end()
        c = body[i - 1]
        if c == 0x22:
            i = _string_end(body, i)
        elif c == 0x7B or c == 0x5B:
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return i, budget
        budget -= 1
        if budget < 0:
            raise _Dense


def inject_include_usage(body: bytes, fields: RequestFields) -> bytes | None:
    """The body with `stream_options.include_usage: true`, or None when it cannot be added safely.

    Without stream_options the key is spliced in after the opening brace, so every other byte the
    application sent is unchanged. With stream_options present (include_usage false or absent) the
    parsed body is re-serialised with the option set.
    """
    if not fields.has_stream_options:
        at = body.find(b"{")
        return body[: at + 1] + b'"stream_options":{"include_usage":true},' + body[at + 1 :]
    obj = fields.obj
    if obj is None or not isinstance(obj.get("stream_options"), dict):
        return None
    patched = dict(obj)
    patched["stream_options"] = {**obj["stream_options"], "include_usage": True}
    return json.dumps(patched, separators=(",", ":"), ensure_ascii=False).encode()


# --- usage extraction from whole bodies -------------------------------------------------------


def _int(value: Any) -> int | None:
    return value if type(value) is int else None


def _set(out: dict[str, Any], key: str, value: Any) -> None:
    if type(value) is int:
        out[key] = value


def _sub(out: dict[str, Any], key: str, value: Any) -> None:
    # Sub-counts (cache read/write, reasoning) only when non-zero: each span attribute costs the
    # OpenTelemetry SDK ~1 µs, and a reported 0 and an absent sub-count bill the same.
    if type(value) is int and value > 0:
        out[key] = value


def _tier(out: dict[str, Any], value: Any) -> None:
    # Only a non-default service tier (flex, priority, scale) changes the price.
    if isinstance(value, str) and value and value != "default":
        out[sc.OPENAI_RESPONSE_SERVICE_TIER] = value


def openai_usage(usage: Any, out: dict[str, Any]) -> bool:
    """Chat/legacy-completions/embeddings `usage` (prompt_tokens/completion_tokens)."""
    if not isinstance(usage, dict):
        return False
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    reported = False
    if type(prompt) is int:
        out[sc.GEN_AI_USAGE_INPUT_TOKENS] = prompt
        reported = True
    if type(completion) is int:
        out[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = completion
        reported = True
    if not reported:
        return False
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict):
        if details.get("cached_tokens"):  # (a call less per body in the usual case: 0 or absent)
            _sub(out, sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, details["cached_tokens"])
        if "cache_write_tokens" in details:  # OpenRouter reports cache writes of the models behind it
            _sub(out, sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, details["cache_write_tokens"])
    elif "prompt_cache_hit_tokens" in usage:  # DeepSeek
        _sub(out, sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, usage.get("prompt_cache_hit_tokens"))
    details = usage.get("completion_tokens_details")
    if isinstance(details, dict) and details.get("reasoning_tokens"):
        _sub(out, sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, details["reasoning_tokens"])
    return True


def responses_usage(usage: Any, out: dict[str, Any]) -> bool:
    """Responses API `usage` (input_tokens/output_tokens, both inclusive)."""
    if not isinstance(usage, dict):
        return False
    inp = _int(usage.get("input_tokens"))
    outp = _int(usage.get("output_tokens"))
    if inp is None and outp is None:
        return False
    _set(out, sc.GEN_AI_USAGE_INPUT_TOKENS, inp)
    _set(out, sc.GEN_AI_USAGE_OUTPUT_TOKENS, outp)
    details = usage.get("input_tokens_details")
    if isinstance(details, dict):
        _sub(out, sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, details.get("cached_tokens"))
    details = usage.get("output_tokens_details")
    if isinstance(details, dict):
        _sub(out, sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, details.get("reasoning_tokens"))
    return True


def anthropic_usage(usage: Any, out: dict[str, Any]) -> bool:
    """Anthropic `usage`: raw input_tokens excludes cache reads and writes, so they are added."""
    if not isinstance(usage, dict):
        return False
    raw_in = _int(usage.get("input_tokens"))
    outp = _int(usage.get("output_tokens"))
    if raw_in is None and outp is None:
        return False
    read = _int(usage.get("cache_read_input_tokens"))
    write = _int(usage.get("cache_creation_input_tokens"))
    if raw_in is not None:
        out[sc.GEN_AI_USAGE_INPUT_TOKENS] = raw_in + (read or 0) + (write or 0)
    _set(out, sc.GEN_AI_USAGE_OUTPUT_TOKENS, outp)
    _sub(out, sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, read)
    _sub(out, sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, write)
    return True


def gemini_usage(meta: Any, out: dict[str, Any]) -> bool:
    """Gemini `usageMetadata`: candidates exclude thoughts, so output = candidates + thoughts."""
    if not isinstance(meta, dict):
        return False
    prompt = _int(meta.get("promptTokenCount"))
    cands = _int(meta.get("candidatesTokenCount"))
    thoughts = _int(meta.get("thoughtsTokenCount"))
    if prompt is None and cands is None and thoughts is None:
        return False
    tool = _int(meta.get("toolUsePromptTokenCount"))
    if prompt is not None:
        out[sc.GEN_AI_USAGE_INPUT_TOKENS] = prompt + (tool or 0)
    if cands is not None or thoughts is not None:
        out[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = (cands or 0) + (thoughts or 0)
    _sub(out, sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, meta.get("cachedContentTokenCount"))
    _sub(out, sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, thoughts)
    return True


def _common(obj: dict[str, Any], out: dict[str, Any], id_key: str = "id", model_key: str = "model") -> None:
    rid = obj.get(id_key)
    if isinstance(rid, str) and rid:
        out[sc.GEN_AI_RESPONSE_ID] = rid
    model = obj.get(model_key)
    if isinstance(model, str) and model:
        out[sc.GEN_AI_RESPONSE_MODEL] = model


def _choice_finish_reasons(choices: Any, key: str = "finish_reason") -> list[str] | None:
    if not isinstance(choices, list):
        return None
    reasons = []
    for choice in choices:
        if isinstance(choice, dict):
            reason = choice.get(key)
            if isinstance(reason, str):
                reasons.append(reason)
    return reasons or None


def extract_body(shape: str, obj: Any, out: dict[str, Any]) -> bool:
    """Fill `out` from a whole (non-streamed) response body; True when usage was reported."""
    if isinstance(obj, list):
        # Gemini's streamGenerateContent without alt=sse: a JSON array of cumulative chunks.
        state = GeminiStream()
        for item in obj:
            if isinstance(item, dict):
                state.on_object(item)
        return state.finish(out)
    if not isinstance(obj, dict):
        return False
    if shape == CHAT_COMPLETIONS or shape == COMPLETIONS:
        _common(obj, out)
        reasons = _choice_finish_reasons(obj.get("choices"))
        if reasons:
            out[sc.GEN_AI_RESPONSE_FINISH_REASONS] = reasons
        _tier(out, obj.get("service_tier"))
        return openai_usage(obj.get("usage"), out)
    if shape == EMBEDDINGS:
        _set_str(out, sc.GEN_AI_RESPONSE_MODEL, obj.get("model"))
        return openai_usage(obj.get("usage"), out)
    if shape == RESPONSES:
        return _responses_object(obj, out)
    if shape == ANTHROPIC_MESSAGES:
        _common(obj, out)
        reason = obj.get("stop_reason")
        if isinstance(reason, str):
            out[sc.GEN_AI_RESPONSE_FINISH_REASONS] = [reason]
        return anthropic_usage(obj.get("usage"), out)
    if shape == GEMINI_GENERATE:
        state = GeminiStream()
        state.on_object(obj)
        return state.finish(out)
    return False


def _set_str(out: dict[str, Any], key: str, value: Any) -> None:
    if isinstance(value, str) and value:
        out[key] = value


def _responses_object(obj: dict[str, Any], out: dict[str, Any]) -> bool:
    _common(obj, out)
    _tier(out, obj.get("service_tier"))
    details = obj.get("incomplete_details")
    if isinstance(details, dict) and isinstance(details.get("reason"), str):
        out[sc.GEN_AI_RESPONSE_FINISH_REASONS] = [details["reason"]]
    return responses_usage(obj.get("usage"), out)


# --- usage extraction from event streams ------------------------------------------------------
#
# Each stream state sees every event but parses only the few that carry metering data, and
# defers even those to `finish` where it can: per-chunk cost is a couple of substring checks.
# `terminal` says the provider's end-of-stream marker arrived, `final` that final usage did.


def _payload(kept: bytes) -> bytes:
    """The event data of what a stream kept: a whole `data: ...\\n\\n` chunk or the data itself
    (a chat stream's data is JSON or `[DONE]`, never text starting with `data: `)."""
    return kept[6:-2] if kept.startswith(b"data: ") else kept


class ChatStream:
    """OpenAI chat/legacy completions: id/model in every chunk, usage in a `choices: []` chunk.

    Per chunk this only keeps references: the first event (id, model) and the last few (the
    finishing chunk, the usage chunk, `[DONE]`), parsed once at the end. `_call`'s fast path keeps
    a whole one-event chunk (`data: ...` and its blank line, `_payload` cuts it at the end);
    `on_event` keeps the event's data. With several choices
    (`n` > 1) a choice may finish long before the end, so finishing chunks are also picked up
    as they pass. When spanmeter injected include_usage (`strip`), the usage chunk is spotted as
    it passes so that `_call` can cut it out of what the app reads.
    """

    __slots__ = ("first", "recent", "finishes", "final", "strip", "drop", "many")

    def __init__(self, strip: bool = False, choices: int = 1) -> None:
        self.first: bytes | None = None
        self.recent: deque[bytes] = deque(maxlen=4)
        self.finishes: list[bytes] = []
        self.final = False
        self.strip = strip
        self.drop = False
        self.many = choices > 1

    @property
    def terminal(self) -> bool:
        return bool(self.recent) and _payload(self.recent[-1]) == b"[DONE]"

    def on_event(self, event: bytes | None, data: bytes) -> None:
        if self.first is None:
            self.first = data
        self.recent.append(data)
        if self.many and (b'"finish_reason":"' in data or b'"finish_reason": "' in data):
            self.finishes.append(data)
        if self.strip:
            self.spot_injected(data)

    def spot_injected(self, data: bytes) -> None:
        """Set `drop` when `data` is the usage event (`choices: []`) that include_usage adds."""
        if b"[]" in data and (b'"choices":[]' in data or b'"choices": []' in data):
            obj = loads(data)
            if isinstance(obj, dict) and isinstance(obj.get("usage"), dict) and obj.get("choices") == []:
                self.drop = True

    def finish(self, out: dict[str, Any]) -> bool:
        # Newest first: the usage chunk and the finishing chunk also carry id and model, so the
        # first chunk is parsed only when neither arrived (an abandoned stream).
        reasons: dict[int, str] = {}
        usage: Any = None
        meta: Any = None
        for kept in (*reversed(self.recent), *self.finishes):
            data = _payload(kept)
            if data == b"[DONE]":
                continue
            finishing = b'"finish_reason":"' in data or b'"finish_reason": "' in data
            with_usage = usage is None and (b'"usage":{' in data or b'"usage": {' in data)
            if not (finishing or with_usage):
                continue
            obj = loads(data)
            if not isinstance(obj, dict):
                continue
            meta = meta or obj
            if with_usage and isinstance(obj.get("usage"), dict):
                usage = obj["usage"]
            if finishing:
                choices = obj.get("choices")
                for choice in choices if isinstance(choices, list) else ():
                    if isinstance(choice, dict) and isinstance(choice.get("finish_reason"), str):
                        index = choice.get("index")
                        reasons[index if type(index) is int else len(reasons)] = choice["finish_reason"]
            if usage is not None and reasons and not self.many:
                break
        first = _payload(self.first) if self.first is not None else None
        if meta is None and first is not None and first != b"[DONE]":
            meta = loads(first)
        if isinstance(meta, dict):
            _common(meta, out)
            _tier(out, meta.get("service_tier"))
        if reasons:
            out[sc.GEN_AI_RESPONSE_FINISH_REASONS] = [reasons[i] for i in sorted(reasons)]
        self.final = openai_usage(usage, out)
        return self.final


class ResponsesStream:
    """Responses API: model/id on response.created, usage on response.completed/incomplete/failed."""

    __slots__ = ("created", "done", "terminal", "final")

    _TERMINAL = (b"response.completed", b"response.incomplete", b"response.failed")

    def __init__(self) -> None:
        self.created: bytes | None = None
        self.done: bytes | None = None
        self.terminal = False
        self.final = False

    def on_event(self, event: bytes | None, data: bytes) -> None:
        if event is None:
            # Servers that omit `event:` lines: the type is inside the data.
            if b'"type":"response.' not in data and b'"type": "response.' not in data:
                return
            event = _responses_type(data)
        if event in self._TERMINAL:
            self.done = data
            self.terminal = True
            self.final = b'"usage":{' in data or b'"usage": {' in data
        elif event == b"response.created" and self.created is None:
            self.created = data

    def finish(self, out: dict[str, Any]) -> bool:
        for data in (self.created, self.done):
            if data is None:
                continue
            obj = loads(data)
            resp = obj.get("response") if isinstance(obj, dict) else None
            if isinstance(resp, dict):
                reported = _responses_object(resp, out)
                if data is self.done:
                    return reported
        return False


_TYPE = re.compile(rb'"type"\s*:\s*"(response\.[a-z_.]+)"')


def _responses_type(data: bytes) -> bytes | None:
    m = _TYPE.search(data)
    return m.group(1) if m else None


class AnthropicStream:
    """Anthropic: usage on message_start (input, cache) and message_delta (cumulative: last wins)."""

    __slots__ = ("start", "delta", "terminal", "final", "error")

    def __init__(self) -> None:
        self.start: bytes | None = None
        self.delta: bytes | None = None
        self.terminal = False
        self.final = False
        self.error: str | None = None

    def on_event(self, event: bytes | None, data: bytes) -> None:
        if event is None:
            # A proxy that drops `event:` lines: the type is the first key Anthropic writes.
            if data.startswith(b'{"type":"message_'):
                event = data[9 : data.find(b'"', 9)]
            else:
                return
        if event == b"message_delta":
            self.delta = data
            self.final = True
        elif event == b"message_start":
            self.start = data
        elif event == b"message_stop":
            self.terminal = True
        elif event == b"error":
            obj = loads(data)
            err = obj.get("error") if isinstance(obj, dict) else None
            if isinstance(err, dict) and isinstance(err.get("type"), str):
                self.error = err["type"]

    def finish(self, out: dict[str, Any]) -> bool:
        usage: dict[str, Any] = {}
        if self.start is not None:
            obj = loads(self.start)
            msg = obj.get("message") if isinstance(obj, dict) else None
            if isinstance(msg, dict):
                _common(msg, out)
                if isinstance(msg.get("usage"), dict):
                    usage.update(msg["usage"])
        if self.delta is not None:
            obj = loads(self.delta)
            if isinstance(obj, dict):
                # message_delta usage is cumulative: each field present replaces message_start's.
                if isinstance(obj.get("usage"), dict):
                    usage.update({k: v for k, v in obj["usage"].items() if v is not None})
                delta = obj.get("delta")
                if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
                    out[sc.GEN_AI_RESPONSE_FINISH_REASONS] = [delta["stop_reason"]]
        if self.error is not None:
            out[sc.ERROR_TYPE] = self.error
        return anthropic_usage(usage, out) if usage else False


class GeminiStream:
    """Gemini: every chunk carries cumulative usageMetadata (last wins); finishReason ends it.

    Per chunk this only keeps references to the first and the last two events; the usage of the
    chunk with finishReason (or a later one) is final.
    """

    __slots__ = ("first", "recent", "terminal", "final", "_objs")

    def __init__(self) -> None:
        self.first: bytes | None = None
        self.recent: deque[bytes] = deque(maxlen=2)
        self.terminal = False
        self.final = False
        self._objs: list[dict[str, Any]] = []  # chunks already parsed (whole-body JSON arrays)

    def on_event(self, event: bytes | None, data: bytes) -> None:
        if self.first is None:
            self.first = data
        self.recent.append(data)

    def on_object(self, obj: dict[str, Any]) -> None:
        self._objs.append(obj)

    def finish(self, out: dict[str, Any]) -> bool:
        objs = self._objs
        if not objs:
            first = [self.first] if self.first is not None and self.first not in self.recent else []
            objs = [loads(d) for d in (*first, *self.recent)]
        reported = False
        for obj in objs:
            if not isinstance(obj, dict):
                continue
            _common(obj, out, id_key="responseId", model_key="modelVersion")
            reasons = _choice_finish_reasons(obj.get("candidates"), key="finishReason")
            if reasons:
                out[sc.GEN_AI_RESPONSE_FINISH_REASONS] = reasons
                self.terminal = True
            if "usageMetadata" in obj:
                reported = gemini_usage(obj["usageMetadata"], out) or reported
                self.final = self.terminal
        return reported


class NoStream:
    """Shapes that never stream (embeddings)."""

    __slots__ = ("terminal", "final")

    def __init__(self) -> None:
        self.terminal = False
        self.final = False

    def on_event(self, event: bytes | None, data: bytes) -> None:
        pass

    def finish(self, out: dict[str, Any]) -> bool:
        return False


def new_stream_state(shape: str, strip: bool = False, choices: int = 1) -> Any:
    if shape == CHAT_COMPLETIONS or shape == COMPLETIONS:
        return ChatStream(strip, choices)
    if shape == RESPONSES:
        return ResponsesStream()
    if shape == ANTHROPIC_MESSAGES:
        return AnthropicStream()
    if shape == GEMINI_GENERATE:
        return GeminiStream()
    return NoStream()
