"""Provider shapes: path recognition, request fields, include_usage injection, usage extraction."""

from __future__ import annotations

import json

import pytest

from spanmeter import _providers as P
from spanmeter import semconv as sc
from spanmeter._sse import SSEParser


@pytest.mark.parametrize(
    ("path", "shape"),
    [
        ("/v1/chat/completions", P.CHAT_COMPLETIONS),
        ("/openai/deployments/my-gpt/chat/completions", P.CHAT_COMPLETIONS),  # Azure
        ("/api/v1/chat/completions", P.CHAT_COMPLETIONS),  # OpenRouter
        ("/v1beta/openai/chat/completions", P.CHAT_COMPLETIONS),  # Gemini's OpenAI dialect
        ("/v1/responses", P.RESPONSES),
        ("/v1/embeddings", P.EMBEDDINGS),
        ("/openai/deployments/emb/embeddings", P.EMBEDDINGS),
        ("/v1/completions", P.COMPLETIONS),
        ("/v1/messages", P.ANTHROPIC_MESSAGES),
        ("/v1beta/models/gemini-2.5-flash:generateContent", P.GEMINI_GENERATE),
        ("/v1beta/models/gemini-2.5-flash:streamGenerateContent", P.GEMINI_GENERATE),
        ("/v1/projects/p/locations/us/publishers/google/models/gemini-2.5-pro:generateContent", P.GEMINI_GENERATE),
        # Not LLM calls:
        ("/v1/threads/thread_1/messages", None),
        ("/v1/messages/count_tokens", None),
        ("/v1/responses/resp_1", None),
        ("/v1/models", None),
        ("/v1/files", None),
        ("/", None),
    ],
)
def test_match_path(path: str, shape: str | None) -> None:
    assert P.match_path(path) == shape


@pytest.mark.parametrize(
    ("shape", "host", "path", "provider"),
    [
        (P.CHAT_COMPLETIONS, "api.openai.com", "/v1/chat/completions", "openai"),
        (P.CHAT_COMPLETIONS, "myres.openai.azure.com", "/openai/deployments/d/chat/completions", "azure.ai.openai"),
        (P.CHAT_COMPLETIONS, "gateway.internal", "/openai/deployments/d/chat/completions", "azure.ai.openai"),
        (P.CHAT_COMPLETIONS, "openrouter.ai", "/api/v1/chat/completions", "openrouter"),
        (P.CHAT_COMPLETIONS, "localhost", "/v1/chat/completions", "openai"),  # vLLM / Ollama / LiteLLM
        (P.CHAT_COMPLETIONS, "generativelanguage.googleapis.com", "/v1beta/openai/chat/completions", "gcp.gemini"),
        (P.ANTHROPIC_MESSAGES, "litellm.internal", "/v1/messages", "anthropic"),
        (P.GEMINI_GENERATE, "generativelanguage.googleapis.com", "/v1beta/models/g:generateContent", "gcp.gemini"),
        (P.GEMINI_GENERATE, "us-central1-aiplatform.googleapis.com", "/v1/x/models/g:generateContent", "gcp.vertex_ai"),
    ],
)
def test_provider_for(shape: str, host: str, path: str, provider: str) -> None:
    assert P.provider_for(shape, host, path) == provider


def test_model_from_path() -> None:
    assert P.model_from_path(P.GEMINI_GENERATE, "/v1beta/models/gemini-2.5-flash:generateContent") == "gemini-2.5-flash"
    assert P.model_from_path(P.CHAT_COMPLETIONS, "/openai/deployments/prod-gpt/chat/completions") == "prod-gpt"
    assert P.model_from_path(P.CHAT_COMPLETIONS, "/v1/chat/completions") is None


def test_parse_request_fields() -> None:
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "secret prompt"}],
        "stream": True,
        "stream_options": {"include_usage": False},
        "user": "legacy-user",
        "safety_identifier": "hashed-user",
        "service_tier": "flex",
    }
    f = P.parse_request(json.dumps(body).encode(), 1 << 20)
    assert f is not None
    assert (f.model, f.stream, f.has_stream_options, f.include_usage) == ("gpt-4o-mini", True, True, False)
    assert (f.user, f.service_tier, f.conversation) == ("hashed-user", "flex", None)


def test_parse_request_anthropic_user_and_responses_conversation() -> None:
    f = P.parse_request(b'{"model":"claude-haiku-4-5","metadata":{"user_id":"u-7"}}', 1 << 20)
    assert f is not None and f.user == "u-7"
    f = P.parse_request(b'{"model":"gpt-4o","conversation":{"id":"conv_1"}}', 1 << 20)
    assert f is not None and f.conversation == "conv_1"
    f = P.parse_request(b'{"model":"gpt-4o","conversation":"conv_2","user":"u"}', 1 << 20)
    assert f is not None and (f.conversation, f.user) == ("conv_2", "u")


@pytest.mark.parametrize("body", [b"", b"[1,2]", b"not json", b"--boundary\r\nContent-Disposition", b"{broken"])
def test_parse_request_skips_non_json_objects(body: bytes) -> None:
    assert P.parse_request(body, 1 << 20) is None


def test_large_body_scanned_near_its_ends() -> None:
    image = "A" * 3_000_000
    body = json.dumps(
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}}]}], "model": "gpt-4o", "stream": True, "user": "u-big"}
    ).encode()
    f = P.parse_request(body, max_parse_bytes=1 << 20)
    assert f is not None and f.obj is None  # not parsed whole
    assert (f.model, f.stream, f.has_stream_options, f.user) == ("gpt-4o", True, False, "u-big")


# A tool whose parameters have a nested "model" object and a nested "user" string property, and
# a message that carries its own "user", "model", "stream" and "stream_options" keys: none of them
# is the request's.
NESTED_TOOL = {
    "type": "function",
    "function": {
        "name": "pick",
        "parameters": {"type": "object", "properties": {"model": {"type": "string", "user": "schema-user"}, "user": {"type": "string"}}},
    },
}
NESTED_MESSAGE = {"role": "user", "model": "nested-model", "user": "nested-user", "stream": True, "stream_options": {"include_usage": True},
                  "metadata": {"user_id": "nested-meta"}, "content": [{"type": "image_url", "image_url": {"url": "B" * 2_000_000}}]}


def big_body(members: list[tuple[str, object]]) -> bytes:
    body = json.dumps(dict(members)).encode()
    assert len(body) > 1 << 20
    return body


@pytest.mark.parametrize(
    "members",
    [
        # the nested keys first (tools and messages before the request's own, as the openai SDK writes them)
        [("tools", [NESTED_TOOL]), ("messages", [NESTED_MESSAGE]), ("model", "gpt-4o"), ("user", "u-top")],
        # the nested keys last (a tail scan met them first)
        [("model", "gpt-4o"), ("user", "u-top"), ("messages", [NESTED_MESSAGE]), ("tools", [NESTED_TOOL])],
        # top-level keys on both sides of the upload, nested ones on both sides of those
        [("tools", [NESTED_TOOL]), ("model", "gpt-4o"), ("messages", [NESTED_MESSAGE]), ("user", "u-top"), ("tool_choice", {"user": "x", "model": "y"})],
    ],
)
def test_large_body_takes_only_top_level_keys(members: list[tuple[str, object]]) -> None:
    f = P.parse_request(big_body(members), max_parse_bytes=1 << 20)
    assert f is not None and f.obj is None  # walked, not parsed whole
    assert (f.model, f.user, f.stream, f.has_stream_options, f.include_usage) == ("gpt-4o", "u-top", False, False, None)


def test_large_body_without_top_level_model_or_user() -> None:
    f = P.parse_request(big_body([("tools", [NESTED_TOOL]), ("messages", [NESTED_MESSAGE])]), max_parse_bytes=1 << 20)
    assert f is not None
    assert (f.model, f.user, f.stream, f.has_stream_options) == (None, None, False, False)


def test_large_body_all_metering_fields() -> None:
    members = [
        ("messages", [NESTED_MESSAGE]),
        ("model", "claude-sonnet-4-5"),
        ("metadata", {"user_id": "u-anthropic"}),
        ("stream", True),
        ("stream_options", {"include_usage": False}),
        ("service_tier", "flex"),
        ("conversation", {"id": "conv_big"}),
        ("n", 3),
    ]
    f = P.parse_request(big_body(members), max_parse_bytes=1 << 20)
    assert f is not None and f.obj is None
    assert (f.model, f.user, f.stream, f.has_stream_options, f.include_usage) == ("claude-sonnet-4-5", "u-anthropic", True, True, False)
    assert (f.service_tier, f.conversation, f.choices) == ("flex", "conv_big", 3)
    # stream_options present and the body not kept whole: no re-serialisation of a 2 MB body
    assert P.inject_include_usage(big_body(members), f) is None


def test_large_body_strings_with_escapes_and_brackets() -> None:
    # Quotes, backslashes and brackets inside strings must not end a string or move the depth.
    tricky = 'a \\" } ] { [ "model": "fake", "user": "fake" \\\\' + "C" * 1_500_000 + '\\\\" "user": "no" \\'
    members = [("messages", [{"role": "user", "content": tricky}, {"role": "user", "content": '{"model": "x"'}]),
               ("model", "gpt-4.1"), ("safety_identifier", "hashed"), ("user", "legacy")]
    body = json.dumps(dict(members), indent=1).encode()  # whitespace between every token
    f = P.parse_request(b" \n" + body, max_parse_bytes=1 << 20)
    assert f is not None and f.obj is None
    assert (f.model, f.user) == ("gpt-4.1", "hashed")


def test_large_body_escaped_key() -> None:
    body = b'{"messages":[{"content":"' + b"D" * (2 << 20) + b'"}],"\\u006dodel":"gpt-4o","user" : "u-esc"}'
    f = P.parse_request(body, max_parse_bytes=1 << 20)
    assert f is not None and (f.model, f.user) == ("gpt-4o", "u-esc")


def test_large_dense_body_is_parsed_whole() -> None:
    # A long chat history (many small strings) is cheaper to parse whole than to walk.
    history = [{"role": "user", "content": f"message {i}", "user": "nested"} for i in range(40_000)]
    body = big_body([("messages", history), ("model", "gpt-4o"), ("user", "u-dense")])
    f = P.parse_request(body, max_parse_bytes=1 << 20)
    assert f is not None and f.obj is not None
    assert (f.model, f.user) == ("gpt-4o", "u-dense")


@pytest.mark.parametrize("cut", [10, 1_000_000, -30, -1])
def test_large_truncated_body_is_not_an_object(cut: int) -> None:
    body = big_body([("messages", [NESTED_MESSAGE]), ("model", "gpt-4o"), ("user", "u-top")])
    assert P.parse_request(body[:cut] + b" " * (2 << 20), max_parse_bytes=1 << 20) is None


def test_inject_splices_without_touching_other_bytes() -> None:
    body = b'{"messages":[{"role":"user","content":"hi"}],"model":"m","stream":true}'
    f = P.parse_request(body, 1 << 20)
    assert f is not None
    out = P.inject_include_usage(body, f)
    assert out == b'{"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}],"model":"m","stream":true}'
    assert json.loads(out)["stream_options"] == {"include_usage": True}


def test_inject_keeps_other_stream_options() -> None:
    body = b'{"model":"m","stream":true,"stream_options":{"include_usage":false,"include_obfuscation":false}}'
    f = P.parse_request(body, 1 << 20)
    assert f is not None
    out = P.inject_include_usage(body, f)
    assert out is not None
    assert json.loads(out) == {"model": "m", "stream": True, "stream_options": {"include_usage": True, "include_obfuscation": False}}


@pytest.mark.parametrize("fast", [True, False], ids=["orjson", "json"])
def test_loads_reads_what_json_reads(monkeypatch: pytest.MonkeyPatch, fast: bool) -> None:
    if not fast:
        monkeypatch.setattr(P, "_orjson_loads", None)
    assert P.loads(b' {"a": [1, 2.5, null, true], "b": "\\u00e9t\xc3\xa9"} ') == {"a": [1, 2.5, None, True], "b": "\u00e9t\u00e9"}
    # What orjson refuses and json accepts goes to json.
    assert P.loads(b'"\\ud800"') == "\ud800"
    nan = P.loads(b"[NaN]")[0]
    assert nan != nan
    for bad in (b"", b"{", b"not json", b"\xff"):
        with pytest.raises(ValueError):
            P.loads(bad)


# --- extraction from whole bodies ---


def extract(shape: str, obj: object) -> tuple[bool, dict]:
    out: dict = {}
    return P.extract_body(shape, obj, out), out


def test_openai_chat_body() -> None:
    ok, out = extract(
        P.CHAT_COMPLETIONS,
        {
            "id": "chatcmpl-1",
            "model": "gpt-4o-2024-08-06",
            "service_tier": "flex",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"content": "SECRET"}}, {"index": 1, "finish_reason": "length"}],
            "usage": {
                "prompt_tokens": 100,
                "completion_tokens": 40,
                "prompt_tokens_details": {"cached_tokens": 60},
                "completion_tokens_details": {"reasoning_tokens": 25},
            },
        },
    )
    assert ok
    assert out == {
        sc.GEN_AI_RESPONSE_ID: "chatcmpl-1",
        sc.GEN_AI_RESPONSE_MODEL: "gpt-4o-2024-08-06",
        sc.GEN_AI_RESPONSE_FINISH_REASONS: ["stop", "length"],
        sc.OPENAI_RESPONSE_SERVICE_TIER: "flex",
        sc.GEN_AI_USAGE_INPUT_TOKENS: 100,  # OpenAI's prompt_tokens already include cached
        sc.GEN_AI_USAGE_OUTPUT_TOKENS: 40,  # and completion_tokens include reasoning
        sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 60,
        sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: 25,
    }


def test_openai_compatible_variants() -> None:
    # OpenRouter: cache writes inside prompt_tokens_details.
    _, out = extract(P.CHAT_COMPLETIONS, {"usage": {"prompt_tokens": 50, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 10, "cache_write_tokens": 30}}})
    assert out[sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] == 30
    # DeepSeek: prompt_cache_hit_tokens.
    _, out = extract(P.CHAT_COMPLETIONS, {"usage": {"prompt_tokens": 50, "completion_tokens": 5, "prompt_cache_hit_tokens": 20, "prompt_cache_miss_tokens": 30}})
    assert out[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 20


def test_zero_sub_counts_and_default_tier_are_left_out() -> None:
    ok, out = extract(
        P.CHAT_COMPLETIONS,
        {"service_tier": "default", "usage": {"prompt_tokens": 5, "completion_tokens": 0, "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}},
    )
    assert ok and out == {sc.GEN_AI_USAGE_INPUT_TOKENS: 5, sc.GEN_AI_USAGE_OUTPUT_TOKENS: 0}


def test_missing_usage_is_not_zero() -> None:
    ok, out = extract(P.CHAT_COMPLETIONS, {"id": "x", "model": "m", "choices": []})
    assert not ok
    assert not any(k.startswith("gen_ai.usage") for k in out)
    ok, out = extract(P.CHAT_COMPLETIONS, {"usage": None})
    assert not ok and out == {}
    # Booleans are not counts.
    ok, out = extract(P.CHAT_COMPLETIONS, {"usage": {"prompt_tokens": True}})
    assert not ok and out == {}


def test_responses_body() -> None:
    ok, out = extract(
        P.RESPONSES,
        {
            "id": "resp_1",
            "model": "o4-mini",
            "status": "incomplete",
            "incomplete_details": {"reason": "max_output_tokens"},
            "usage": {"input_tokens": 30, "input_tokens_details": {"cached_tokens": 10}, "output_tokens": 20, "output_tokens_details": {"reasoning_tokens": 15}},
        },
    )
    assert ok
    assert out == {
        sc.GEN_AI_RESPONSE_ID: "resp_1",
        sc.GEN_AI_RESPONSE_MODEL: "o4-mini",
        sc.GEN_AI_RESPONSE_FINISH_REASONS: ["max_output_tokens"],
        sc.GEN_AI_USAGE_INPUT_TOKENS: 30,
        sc.GEN_AI_USAGE_OUTPUT_TOKENS: 20,
        sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 10,
        sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: 15,
    }


def test_embeddings_body_has_no_output() -> None:
    ok, out = extract(P.EMBEDDINGS, {"data": [], "model": "text-embedding-3-small", "usage": {"prompt_tokens": 8, "total_tokens": 8}})
    assert ok
    assert out == {sc.GEN_AI_RESPONSE_MODEL: "text-embedding-3-small", sc.GEN_AI_USAGE_INPUT_TOKENS: 8}


def test_anthropic_input_made_inclusive() -> None:
    ok, out = extract(
        P.ANTHROPIC_MESSAGES,
        {
            "id": "msg_1",
            "model": "claude-haiku-4-5-20251001",
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 73, "cache_read_input_tokens": 20, "cache_creation_input_tokens": 7, "output_tokens": 9},
        },
    )
    assert ok
    assert out == {
        sc.GEN_AI_RESPONSE_ID: "msg_1",
        sc.GEN_AI_RESPONSE_MODEL: "claude-haiku-4-5-20251001",
        sc.GEN_AI_RESPONSE_FINISH_REASONS: ["end_turn"],
        sc.GEN_AI_USAGE_INPUT_TOKENS: 100,  # 73 raw + 20 read + 7 written
        sc.GEN_AI_USAGE_OUTPUT_TOKENS: 9,
        sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 20,
        sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: 7,
    }


def test_gemini_output_includes_thoughts_and_input_tool_use() -> None:
    ok, out = extract(
        P.GEMINI_GENERATE,
        {
            "candidates": [{"finishReason": "STOP"}],
            "usageMetadata": {
                "promptTokenCount": 50,
                "cachedContentTokenCount": 30,
                "candidatesTokenCount": 12,
                "thoughtsTokenCount": 40,
                "toolUsePromptTokenCount": 5,
                "totalTokenCount": 107,
            },
            "modelVersion": "gemini-2.5-flash",
            "responseId": "r1",
        },
    )
    assert ok
    assert out == {
        sc.GEN_AI_RESPONSE_ID: "r1",
        sc.GEN_AI_RESPONSE_MODEL: "gemini-2.5-flash",
        sc.GEN_AI_RESPONSE_FINISH_REASONS: ["STOP"],
        sc.GEN_AI_USAGE_INPUT_TOKENS: 55,
        sc.GEN_AI_USAGE_OUTPUT_TOKENS: 52,  # 12 candidates + 40 thoughts; 55 + 52 == totalTokenCount
        sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 30,
        sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: 40,
    }


def test_gemini_json_array_stream_takes_last_cumulative_usage() -> None:
    chunks = [
        {"candidates": [{}], "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 1}, "responseId": "r"},
        {"candidates": [{"finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 6}, "responseId": "r"},
    ]
    ok, out = extract(P.GEMINI_GENERATE, chunks)
    assert ok
    assert out[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 6 and out[sc.GEN_AI_USAGE_INPUT_TOKENS] == 10


# --- extraction from event streams ---


def run_stream(shape: str, stream: bytes, strip: bool = False) -> tuple[object, bool, dict]:
    state = P.new_stream_state(shape, strip)
    parser = SSEParser(state.on_event)
    parser.feed(stream)
    parser.close()
    out: dict = {}
    return state, state.finish(out), out


def sse(*objs: object) -> bytes:
    return b"".join(b"data: " + (o if isinstance(o, bytes) else json.dumps(o).encode()) + b"\n\n" for o in objs)


def test_chat_stream_with_usage_chunk() -> None:
    base = {"id": "c1", "model": "gpt-4o-mini-2024-07-18", "service_tier": "priority"}
    stream = sse(
        {**base, "choices": [{"index": 0, "delta": {"content": "SECRET"}, "finish_reason": None}], "usage": None},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None},
        {**base, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3}},
        b"[DONE]",
    )
    state, ok, out = run_stream(P.CHAT_COMPLETIONS, stream, strip=True)
    assert ok and state.final and state.terminal and state.drop  # type: ignore[attr-defined]
    assert out == {
        sc.GEN_AI_RESPONSE_ID: "c1",
        sc.GEN_AI_RESPONSE_MODEL: "gpt-4o-mini-2024-07-18",
        sc.OPENAI_RESPONSE_SERVICE_TIER: "priority",
        sc.GEN_AI_RESPONSE_FINISH_REASONS: ["stop"],
        sc.GEN_AI_USAGE_INPUT_TOKENS: 9,
        sc.GEN_AI_USAGE_OUTPUT_TOKENS: 3,
    }


def test_chat_stream_without_usage() -> None:
    stream = sse({"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}, b"[DONE]")
    state, ok, out = run_stream(P.CHAT_COMPLETIONS, stream)
    assert not ok and state.terminal and not state.final  # type: ignore[attr-defined]
    assert not any(k.startswith("gen_ai.usage") for k in out)


def test_chat_stream_usage_on_a_content_chunk_is_kept() -> None:
    # Some compatible servers put usage on the last chunk that still has choices: never drop it.
    stream = sse({"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}})
    state, ok, _ = run_stream(P.CHAT_COMPLETIONS, stream, strip=True)
    assert ok and not state.drop  # type: ignore[attr-defined]


def test_responses_stream() -> None:
    created = {"type": "response.created", "response": {"id": "resp_1", "model": "gpt-4o", "usage": None}}
    delta = {"type": "response.output_text.delta", "delta": "SECRET"}
    done = {"type": "response.completed", "response": {"id": "resp_1", "model": "gpt-4o", "usage": {"input_tokens": 5, "output_tokens": 7}}}
    stream = b"".join(
        b"event: " + o["type"].encode() + b"\ndata: " + json.dumps(o).encode() + b"\n\n" for o in (created, delta, done)  # type: ignore[union-attr]
    )
    state, ok, out = run_stream(P.RESPONSES, stream)
    assert ok and state.final  # type: ignore[attr-defined]
    assert out == {sc.GEN_AI_RESPONSE_ID: "resp_1", sc.GEN_AI_RESPONSE_MODEL: "gpt-4o", sc.GEN_AI_USAGE_INPUT_TOKENS: 5, sc.GEN_AI_USAGE_OUTPUT_TOKENS: 7}
    # Without `event:` lines the type inside the data is used.
    state, ok, out = run_stream(P.RESPONSES, sse(created, delta, done))
    assert ok and out[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 7


def anthropic_stream(*deltas: int, stop: bool = True) -> bytes:
    events = [("message_start", {"type": "message_start", "message": {"id": "msg_1", "model": "claude-haiku-4-5", "usage": {"input_tokens": 10, "cache_read_input_tokens": 4, "cache_creation_input_tokens": 2, "output_tokens": 1}}})]
    events += [("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": d}}) for d in deltas]
    if stop:
        events.append(("message_stop", {"type": "message_stop"}))
    return b"".join(b"event: " + n.encode() + b"\ndata: " + json.dumps(o).encode() + b"\n\n" for n, o in events)


def test_anthropic_stream_cumulative_delta_last_wins() -> None:
    state, ok, out = run_stream(P.ANTHROPIC_MESSAGES, anthropic_stream(3, 8, 12))
    assert ok and state.final  # type: ignore[attr-defined]
    assert out == {
        sc.GEN_AI_RESPONSE_ID: "msg_1",
        sc.GEN_AI_RESPONSE_MODEL: "claude-haiku-4-5",
        sc.GEN_AI_RESPONSE_FINISH_REASONS: ["end_turn"],
        sc.GEN_AI_USAGE_INPUT_TOKENS: 16,
        sc.GEN_AI_USAGE_OUTPUT_TOKENS: 12,  # not 3 + 8 + 12
        sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 4,
        sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: 2,
    }


def test_anthropic_stream_cut_before_delta_is_not_final() -> None:
    state, ok, out = run_stream(P.ANTHROPIC_MESSAGES, anthropic_stream(stop=False))
    assert ok and not state.final and not state.terminal  # type: ignore[attr-defined]
    assert out[sc.GEN_AI_USAGE_INPUT_TOKENS] == 16  # exact already: lower bounds for the rest


def test_anthropic_stream_error_event() -> None:
    stream = anthropic_stream(stop=False) + b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"x"}}\n\n'
    _, _, out = run_stream(P.ANTHROPIC_MESSAGES, stream)
    assert out[sc.ERROR_TYPE] == "overloaded_error"


def test_gemini_sse_stream_last_cumulative_usage() -> None:
    def chunk(n: int, last: bool) -> dict:
        cand = {"content": {"parts": [{"text": "SECRET"}]}} | ({"finishReason": "STOP"} if last else {})
        return {"candidates": [cand], "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": n, "thoughtsTokenCount": 4}, "modelVersion": "gemini-2.5-flash", "responseId": "g1"}

    stream = b"".join(b"data: " + json.dumps(chunk(n, n == 6)).encode() + b"\r\n\r\n" for n in (2, 4, 6))
    state, ok, out = run_stream(P.GEMINI_GENERATE, stream)
    assert ok and state.final and state.terminal  # type: ignore[attr-defined]
    assert out == {
        sc.GEN_AI_RESPONSE_ID: "g1",
        sc.GEN_AI_RESPONSE_MODEL: "gemini-2.5-flash",
        sc.GEN_AI_RESPONSE_FINISH_REASONS: ["STOP"],
        sc.GEN_AI_USAGE_INPUT_TOKENS: 10,
        sc.GEN_AI_USAGE_OUTPUT_TOKENS: 10,
        sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: 4,
    }
    # Cut before the finishing chunk: usage seen, but not final.
    state, ok, _ = run_stream(P.GEMINI_GENERATE, stream.split(b"\r\n\r\n")[0] + b"\r\n\r\n")
    assert ok and not state.final  # type: ignore[attr-defined]
