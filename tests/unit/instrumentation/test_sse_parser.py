"""The incremental SSE parser: any split of a stream gives the same events as the whole."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from spanmeter._sse import SSEParser


def parse(*chunks: bytes, close: bool = True) -> list[tuple[bytes | None, bytes]]:
    events: list[tuple[bytes | None, bytes]] = []
    parser = SSEParser(lambda event, data: events.append((event, data)))
    for chunk in chunks:
        parser.feed(chunk)
    if close:
        parser.close()
    return events


OPENAI = b'data: {"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n'
ANTHROPIC = b'event: message_start\ndata: {"x":1}\n\nevent: ping\ndata: {}\n\nevent: message_stop\ndata: {}\n\n'


def test_openai_style_events() -> None:
    assert parse(OPENAI) == [(None, b'{"a":1}'), (None, b'{"b":2}'), (None, b"[DONE]")]


def test_event_names_and_reset_between_events() -> None:
    assert parse(ANTHROPIC) == [(b"message_start", b'{"x":1}'), (b"ping", b"{}"), (b"message_stop", b"{}")]
    # An event name without data is dropped and does not leak into the next event.
    assert parse(b"event: lonely\n\ndata: x\n\n") == [(None, b"x")]


def test_crlf_and_cr_line_endings() -> None:
    assert parse(b"data: one\r\n\r\ndata: two\r\rdata: three\n\n") == [(None, b"one"), (None, b"two"), (None, b"three")]


def test_crlf_split_between_chunks_is_one_line_break() -> None:
    assert parse(b"data: one\r", b"\n\r", b"\ndata: two\r\n\r\n") == [(None, b"one"), (None, b"two")]


def test_multiline_data_comments_and_other_fields() -> None:
    stream = b": keep-alive\nid: 7\nretry: 100\ndata: line1\ndata:line2\n\n"
    assert parse(stream) == [(None, b"line1\nline2")]


def test_pending_event_dispatched_at_close_only() -> None:
    assert parse(b'data: {"usage":1}', close=False) == []
    assert parse(b'data: {"usage":1}') == [(None, b'{"usage":1}')]
    assert parse(b'data: {"usage":1}\n') == [(None, b'{"usage":1}')]


def test_data_keeps_inner_spaces_and_colons() -> None:
    assert parse(b"data:  two spaces: yes\n\n") == [(None, b" two spaces: yes")]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(OPENAI + ANTHROPIC)), max_size=12), st.booleans())
def test_any_split_gives_the_same_events(cuts: list[int], crlf: bool) -> None:
    stream = OPENAI + ANTHROPIC
    if crlf:
        stream = stream.replace(b"\n", b"\r\n")
    bounds = [0, *sorted(cuts), len(stream)]
    chunks = [stream[a:b] for a, b in zip(bounds, bounds[1:])]
    assert parse(*chunks) == parse(stream)


def reference(stream: bytes) -> list[tuple[bytes | None, bytes]]:
    """A plain reading of the SSE rules, on the whole stream at once (lenient at EOF too)."""
    events, event, data = [], None, None
    for line in stream.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n") + [b""]:
        if not line:
            if data is not None:
                events.append((event, data))
            event, data = None, None
        elif line.startswith(b"data:"):
            value = line[5:][1:] if line[5:6] == b" " else line[5:]
            data = value if data is None else data + b"\n" + value
        elif line.startswith(b"event:"):
            event = line[6:][1:] if line[6:7] == b" " else line[6:]
    return events


_line = st.one_of(
    st.builds(lambda v: b"data:" + v, st.sampled_from([b"", b" ", b" {}", b'{"a":1}', b" x y", b"  two"])),
    st.builds(lambda v: b"event:" + v, st.sampled_from([b"", b" message_start", b"ping"])),
    st.sampled_from([b": comment", b"id: 3", b"retry: 10", b""]),
)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.lists(_line, min_size=1, max_size=4), max_size=8),
    st.sampled_from([b"\n", b"\r\n", b"\r"]),
    st.lists(st.integers(min_value=0, max_value=400), max_size=8),
)
def test_matches_a_reference_reading_at_any_split(events: list[list[bytes]], eol: bytes, cuts: list[int]) -> None:
    stream = b"".join(eol.join(lines) + eol + eol for lines in events)
    bounds = [0, *sorted(min(c, len(stream)) for c in cuts), len(stream)]
    chunks = [stream[a:b] for a, b in zip(bounds, bounds[1:])]
    assert parse(*chunks) == reference(stream)
