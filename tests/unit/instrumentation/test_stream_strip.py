"""The per-chunk path of a streamed call: the app gets exactly the bytes it would have got.

When spanmeter injected `stream_options.include_usage`, the extra `choices: []` usage event must
be cut out whatever the chunking; in every other case bytes pass through unchanged.
"""

from __future__ import annotations

import json

import httpx2
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from spanmeter import _providers as P
from spanmeter import semconv as sc
from spanmeter._call import Call
from spanmeter._stream import stream_classes

BASE = {"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o-mini-2024-07-18"}


def event(obj: object, sep: bytes = b"\n\n") -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + sep


def chat_stream(sep: bytes = b"\n\n") -> tuple[bytes, bytes]:
    """(what the server sends with include_usage, what the app would have got without it)."""
    content = [event({**BASE, "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}], "usage": None}, sep) for w in ("a", "b")]
    finish = event({**BASE, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None}, sep)
    usage = event({**BASE, "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}}, sep)
    done = b"data: [DONE]" + sep
    with_usage = b"".join(content) + finish + usage + done
    # Without include_usage OpenAI sends neither the usage event nor `"usage":null` in each chunk.
    return with_usage, with_usage.replace(usage, b"").replace(b',"usage":null', b"")


class Chunks:
    """The inner byte stream: yields the given chunks."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.closed = False

    def __iter__(self):
        yield from self.chunks

    def close(self) -> None:
        self.closed = True


def run(chunks: list[bytes], strip: bool, closed_early: bool = False) -> tuple[bytes, dict]:
    """Read `chunks` through the real stream proxy, as httpx2 would; (app bytes, span attributes)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    span = provider.get_tracer("t").start_span("chat m")
    call = Call(span, P.CHAT_COMPLETIONS, request=None, strip=strip)
    response = httpx2.Response(200, headers={"content-type": "text/event-stream"})
    assert call.on_response(response, already_read=False)
    proxy = stream_classes(httpx2)[0](Chunks(chunks), call)
    if closed_early:
        it = iter(proxy)
        out = next(it, b"")
        proxy.close()
    else:
        out = b"".join(proxy)
    (finished,) = exporter.get_finished_spans()
    return out, dict(finished.attributes or {})


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=2000), max_size=10), st.sampled_from([b"\n\n", b"\r\n\r\n"]))
def test_injected_usage_event_is_cut_out_at_any_split(cuts: list[int], sep: bytes) -> None:
    sent, expected = chat_stream(sep)
    bounds = [0, *sorted(min(c, len(sent)) for c in cuts), len(sent)]
    chunks = [sent[a:b] for a, b in zip(bounds, bounds[1:])]
    out, attributes = run(chunks, strip=True)
    assert out == expected
    assert attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] == 11
    assert attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 2
    assert attributes[sc.SPANMETER_USAGE_STATUS] == sc.USAGE_REPORTED


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=2000), max_size=10))
def test_without_injection_bytes_pass_through_unchanged(cuts: list[int]) -> None:
    sent, _ = chat_stream()
    bounds = [0, *sorted(min(c, len(sent)) for c in cuts), len(sent)]
    chunks = [sent[a:b] for a, b in zip(bounds, bounds[1:])]
    out, attributes = run(chunks, strip=False)
    assert out == sent  # the app asked for usage itself: it gets the usage chunk
    assert attributes[sc.SPANMETER_USAGE_STATUS] == sc.USAGE_REPORTED


def test_usage_event_without_trailing_blank_line_is_cut_at_flush() -> None:
    sent, _ = chat_stream()
    usage_last = sent.replace(b"data: [DONE]\n\n", b"").rstrip(b"\n")
    out, attributes = run([usage_last], strip=True)
    assert b'"usage"' not in out and out.endswith(b'"finish_reason":"stop"}]}\n\n')
    assert attributes[sc.SPANMETER_USAGE_STATUS] == sc.USAGE_REPORTED


def test_partial_events_are_held_until_complete() -> None:
    sent, _ = chat_stream()
    first_end = sent.index(b"\n\n") + 2
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    call = Call(provider.get_tracer("t").start_span("s"), P.CHAT_COMPLETIONS, request=None, strip=True)
    call.on_response(httpx2.Response(200, headers={"content-type": "text/event-stream"}), already_read=False)
    assert call.feed(sent[:10]) == b""
    assert call.feed(sent[10:first_end]) == sent[:first_end].replace(b',"usage":null', b"")


def test_parse_failure_hands_over_held_bytes_and_ends_missing() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    call = Call(provider.get_tracer("t").start_span("s"), P.CHAT_COMPLETIONS, request=None, strip=True)
    call.on_response(httpx2.Response(200, headers={"content-type": "text/event-stream"}), already_read=False)
    held = call.feed(b'data: {"partial')
    assert held == b""
    broken = b'":1,"choices":[],"usage":{not json}}\n\n'
    out = call.feed(broken)
    assert out == b'data: {"partial' + broken  # every byte reaches the app
    assert call.feed(b"data: more\n\n") == b"data: more\n\n"
    (span,) = exporter.get_finished_spans()
    assert span.attributes[sc.SPANMETER_USAGE_STATUS] == sc.USAGE_MISSING


def test_parse_failure_with_a_held_tail_owes_every_byte_once() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    call = Call(provider.get_tracer("t").start_span("s"), P.CHAT_COMPLETIONS, request=None, strip=True)
    call.on_response(httpx2.Response(200, headers={"content-type": "text/event-stream"}), already_read=False)
    chunk = b'data: {"choices":[],"usage":{broken\n\ndata: {"next":'
    assert call.feed(chunk) == chunk
    assert call.feed(b"1}\n\n") == b"1}\n\n"


def test_closed_after_done_without_usage_is_missing_not_incomplete() -> None:
    sent, expected = chat_stream()
    _, attributes = run([expected], strip=False, closed_early=True)
    assert attributes[sc.SPANMETER_USAGE_STATUS] == sc.USAGE_MISSING
    assert sc.GEN_AI_USAGE_INPUT_TOKENS not in attributes


def test_closed_mid_stream_is_incomplete() -> None:
    sent, _ = chat_stream()
    _, attributes = run([sent[:40]], strip=False, closed_early=True)
    assert attributes[sc.SPANMETER_USAGE_STATUS] == sc.USAGE_INCOMPLETE


def test_a_stream_without_event_boundaries_is_never_held_back_for_long() -> None:
    # 300 KB of "events" separated by single newlines: not SSE as announced. The app must get it.
    line = b'data: {"x":"' + b"y" * 1000 + b'"}\n'
    chunks = [line] * 300
    out, attributes = run(chunks, strip=True)
    assert out == b"".join(chunks)
    assert attributes[sc.SPANMETER_USAGE_STATUS] == sc.USAGE_MISSING


def test_chunks_after_the_span_ended_pass_through_untouched() -> None:
    # The span may end before the body does (the app closed the response, then kept reading).
    sent, _ = chat_stream()
    events = [e + b"\n\n" for e in sent.split(b"\n\n") if e]
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    call = Call(provider.get_tracer("t").start_span("s"), P.CHAT_COMPLETIONS, request=None, strip=True)
    call.on_response(httpx2.Response(200, headers={"content-type": "text/event-stream"}), already_read=False)
    assert call.feed(events[0]) == events[0].replace(b',"usage":null', b"")
    call.finalize("closed")
    assert [call.feed(e) for e in events[1:]] == events[1:]  # usage event included: no longer ours to cut
    (span,) = exporter.get_finished_spans()
    assert span.attributes[sc.SPANMETER_USAGE_STATUS] == sc.USAGE_INCOMPLETE


def test_whole_event_chunks_and_split_chunks_mix() -> None:
    # Whole-event chunks skip the SSE parser; a split event in between must not confuse it.
    sent, expected = chat_stream()
    events = [e + b"\n\n" for e in sent.split(b"\n\n") if e]
    chunks = [events[0], events[1][:7], events[1][7:] + events[2][:3], events[2][3:], *events[3:]]
    out, attributes = run(chunks, strip=True)
    assert out == expected
    assert attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] == 11 and attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 2
    assert attributes[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert attributes[sc.SPANMETER_USAGE_STATUS] == sc.USAGE_REPORTED
    out, attributes = run(chunks, strip=False)
    assert out == sent and attributes[sc.SPANMETER_USAGE_STATUS] == sc.USAGE_REPORTED
