"""Incremental `text/event-stream` parser, fed the response bytes as the application reads them.

`SSEParser.feed(chunk)` consumes any split of the stream (an event across chunks, several events in
one chunk, CRLF/CR/LF line endings) and calls `on_event(event_name, data)` once per dispatched
event, where `event_name` is the value of the event's `event:` field (bytes, or None) and `data`
its `data:` lines joined by `\\n`. `close()` dispatches an event the stream ended without a blank
line after: providers' last events sometimes lack it, and usage lives in the last event.

It copies nothing it does not have to: the common chunk (one whole `data: {...}\\n\\n` event) costs
one `split` and two line checks. Field names other than `event` and `data` (`id`, `retry`,
comments) are ignored, as metering needs neither.
"""

from __future__ import annotations

from collections.abc import Callable

EventHandler = Callable[[bytes | None, bytes], None]

_LF = b"\n"
_CR = b"\r"


class SSEParser:
    """Parses server-sent events incrementally; see the module docstring."""

    __slots__ = ("_on_event", "_tail", "_event", "_data")

    def __init__(self, on_event: EventHandler) -> None:
        self._on_event = on_event
        self._tail = b""  # an incomplete last line (possibly ending in a held-back CR)
        self._event: bytes | None = None
        self._data: bytes | None = None

    @property
    def idle(self) -> bool:
        """Nothing held over from earlier chunks: the next byte starts a new event."""
        return not self._tail and self._data is None and self._event is None

    def feed(self, chunk: bytes) -> None:
        if not self._tail and self._data is None and chunk.endswith(b"\n\n"):
            # Fast paths for the usual chunk, one whole event with LF endings:
            # `data: ...\n\n` (OpenAI, Gemini) or `event: ...\ndata: ...\n\n` (Anthropic, Responses).
            end = len(chunk) - 2
            nl = chunk.find(_LF)
            if nl == end:
                if chunk.startswith(b"data:") and chunk[end - 1] != 13:  # 13: CR
                    event, self._event = self._event, None
                    self._on_event(event, chunk[6:end] if chunk[5] == 32 else chunk[5:end])  # 32: space
                    return
            elif (
                chunk.find(_LF, nl + 1) == end
                and chunk.startswith(b"event:")
                and chunk.startswith(b"data:", nl + 1)
                and chunk[nl - 1] != 13
                and chunk[end - 1] != 13
            ):
                self._event = None
                d = nl + 7 if chunk[nl + 6] == 32 else nl + 6
                self._on_event(chunk[7:nl] if chunk[6] == 32 else chunk[6:nl], chunk[d:end])
                return
        buf = self._tail + chunk if self._tail else chunk
        if _CR in buf:
            # A CR at the very end may be the first half of a CRLF split across chunks: hold it.
            held = buf.endswith(_CR)
            if held:
                buf = buf[:-1]
            buf = buf.replace(b"\r\n", _LF).replace(_CR, _LF)
        else:
            held = False
        lines = buf.split(_LF)
        tail = lines.pop()
        self._tail = tail + _CR if held else tail
        for line in lines:
            self._line(line)

    def _line(self, line: bytes) -> None:
        if not line:
            data = self._data
            if data is not None:
                self._data = None
                event, self._event = self._event, None
                self._on_event(event, data)
            else:
                self._event = None
            return
        if line.startswith(b"data:"):
            value = line[6:] if line[5:6] == b" " else line[5:]
            self._data = value if self._data is None else self._data + _LF + value
        elif line.startswith(b"event:"):
            self._event = line[7:] if line[6:7] == b" " else line[6:]
        # Comments (":...") and the id/retry fields carry nothing metering needs.

    def close(self) -> None:
        """End of stream: finish a pending line and dispatch a pending event."""
        tail, self._tail = self._tail, b""
        if tail:
            self._line(tail.rstrip(_CR))
        self._line(b"")
