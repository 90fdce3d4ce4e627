"""One metered LLM call: its span, what the response has told us so far, and ending it exactly once.

A `Call` is made by the transport hook when a request is recognised. The response then arrives
either already read (the client was asked for `stream=False`) and is parsed at once, or unread,
in which case `_stream` wraps its byte stream and feeds each chunk here as the application reads
it. Whatever happens (end of body, close, error, abandonment noticed by the garbage collector),
`finalize` ends the span once, with `spanmeter.usage_status`:

- `reported`: the provider's final usage was seen;
- `missing`: the response completed (or failed) without usage;
- `incomplete`: the body was abandoned or broke before its final usage; counts already reported
  (Anthropic's message_start input, say) are kept as lower bounds.

Nothing here raises into the application: every entry point catches and logs at debug level.
"""

from __future__ import annotations

import json
import logging
import re
import time
import zlib
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from . import _providers as P
from . import semconv as sc
from ._sse import SSEParser

_log = logging.getLogger("spanmeter.instrumentation")

# A body read through a stream that is not SSE (a JSON body the app streams, Gemini's JSON
# array) is copied to parse its usage at the end; beyond this size the copy stops.
_MAX_COLLECT = 8 << 20
# Large JSON bodies (embeddings) keep `model` and `usage` at the end: read them from the tail.
_TAIL_PARSE_OVER = 64 * 1024
_TAIL = 4096

_BOUNDARIES = (b"\n\n", b"\r\n\r\n", b"\r\r")
# Strip mode holds back at most this much of an unfinished event; a stream that goes this long
# without an event boundary is not what it claims, and gets passed through unstripped.
_MAX_PENDING = 256 * 1024
_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')
# With include_usage on, OpenAI adds `"usage":null` to every chunk. When spanmeter turned it on,
# the key is removed again, so the app reads the bytes it would have got (and its SDK does not
# parse an extra field per chunk). A quote inside a JSON string is escaped, so this byte sequence
# only ever matches the key itself.
_USAGE_NULL = b',"usage":null'


class Call:
    """See the module docstring. Created by `_httpx.Hooks.begin`."""

    __slots__ = (
        "span",
        "shape",
        "request",
        "attrs",
        "strip",
        "done",
        "state",
        "parser",
        "mode",
        "pending",
        "collected",
        "collected_size",
        "encoding",
        "sse",
        "response_hook",
        "choices",
        "recording",
        "context",
        "quick",
        "chat",
        "hooks",
        "lazy",
        "start_time",
        "end_time",
        "usage_status",
        "error",
        "body",
        "body_decoded",
    )

    def __init__(
        self,
        span: Span | None,
        shape: str,
        request: Any,
        strip: bool,
        response_hook: Any = None,
        choices: int = 1,
        recording: bool = True,
        hooks: Any = None,
        lazy: Any = None,
    ) -> None:
        self.span = span  # None for a lazy call until it is recorded (`_record`)
        self.shape = shape
        self.request = request
        self.attrs: dict[str, Any] = {}
        self.strip = strip  # spanmeter injected include_usage: hide the extra usage chunk
        self.done = False
        self.state: Any = None
        self.mode = 0  # 0: not parsing, 1: SSE, 2: SSE with stripping, 3: collect whole body
        self.response_hook = response_hook
        self.choices = choices
        self.recording = recording  # False: the sampler dropped the span, nothing read is kept
        self.context: Any = None  # the context to make current during the request (the span in it)
        # Who records the span (`hooks.record`: at the next call's wait, or at once) and, for a lazy
        # call (no span during the request), what `hooks.start_lazy` needs to start it.
        self.hooks = hooks
        self.lazy = lazy
        self.start_time = time.time_ns() if lazy is not None else 0
        self.body: bytes | None = None  # a whole response body, parsed when recorded
        self.body_decoded = True
        # The rest is set by `on_response`: `sse` always, the stream's fields when it wraps one.
        self.parser: SSEParser | None
        self.pending: bytes
        self.collected: list[bytes]
        self.collected_size: int
        self.encoding: str
        self.sse: bool
        # SSE modes: True while nothing is held over between chunks (no partial event in the
        # parser, no pending bytes), so a chunk of one whole `data:` event can skip the parser.
        self.quick: bool
        self.chat: P.ChatStream | None  # the state, when it is a one-choice chat stream

    # --- request phase ------------------------------------------------------------------------

    def attach(self) -> object | None:
        if self.span is None:
            return None  # a lazy call: the app's context stays current during the request
        try:
            ctx = self.context
            self.context = None
            return otel_context.attach(ctx if ctx is not None else trace.set_span_in_context(self.span))
        except Exception:
            _log.debug("spanmeter: could not activate span", exc_info=True)
            return None

    def detach(self, token: object | None) -> None:
        if token is None:
            return
        try:
            otel_context.detach(token)  # type: ignore[arg-type]
        except Exception:
            _log.debug("spanmeter: could not deactivate span", exc_info=True)

    def fail(self, exc: BaseException) -> None:
        """The request raised before a response: record the error type and end the span."""
        try:
            self.attrs[sc.ERROR_TYPE] = type(exc).__qualname__
            self._end(sc.USAGE_MISSING, error=True)
        except Exception:
            _log.debug("spanmeter: could not record a failed call", exc_info=True)

    # --- response phase -----------------------------------------------------------------------

    def on_response(self, response: Any, already_read: bool) -> bool:
        """Handle response headers (and the body when already read).

        Returns True when the caller must wrap the response's byte stream (the span then ends
        when that stream ends); False when the span has been ended here.
        """
        try:
            if self.response_hook is not None:
                self._call_hook(response)
            if not self.recording:
                # An unsampled span keeps no attribute: its body is neither parsed nor wrapped.
                self._end(sc.USAGE_MISSING)
                return False
            status = response.status_code
            if status >= 400:
                self.attrs[sc.ERROR_TYPE] = str(status)
                self._end(sc.USAGE_MISSING, error=True)
                return False
            headers = response.headers
            if already_read:  # httpx has read and decoded the body inside send
                body = response.content
                # A JSON body starts with `{` or `[`: only another start needs the content type
                # (an SSE answer to a request that did not ask to stream); headers.get is slow.
                self.sse = not body.startswith((b"{", b"[")) and "text/event-stream" in headers.get("content-type", "")
                self.body = body  # parsed when the span is recorded, off the call path
                self._end(None)
                return False
            self.sse = "text/event-stream" in headers.get("content-type", "")
            self.encoding = headers.get("content-encoding", "").strip().lower()
            if self.encoding == "identity":
                self.encoding = ""
            self.parser = None
            self.pending = b""
            self.collected = []
            self.collected_size = 0
            self.quick = False
            self.chat = None
            self.state = P.new_stream_state(self.shape, self.strip, self.choices)
            if self.sse and not self.encoding:
                self.parser = SSEParser(self.state.on_event)
                self.mode = 2 if self.strip else 1
                self.quick = True
                if type(self.state) is P.ChatStream and not self.state.many:
                    self.chat = self.state
            else:
                self.mode = 3
            return True
        except Exception:
            _log.debug("spanmeter: could not read a response", exc_info=True)
            self._end_quietly(sc.USAGE_MISSING)
            return False

    def _call_hook(self, response: Any) -> None:
        try:
            self.response_hook(self.span, self.request, response)
        except Exception:
            _log.debug("spanmeter: response_hook failed", exc_info=True)

    def _parse_body(self) -> str:
        """usage_status of the whole body kept by `on_response` or `finalize`, its usage in attrs."""
        body, decoded = self.body, self.body_decoded
        self.body = None
        status = sc.USAGE_MISSING
        try:
            if not decoded and self.encoding:
                body = _decode(body, self.encoding)
            if body:
                if self.sse:
                    state = P.new_stream_state(self.shape)
                    parser = SSEParser(state.on_event)
                    parser.feed(body)
                    parser.close()
                    status = _status(state.finish(self.attrs), state.final, True)
                elif len(body) > _TAIL_PARSE_OVER and self.shape == P.EMBEDDINGS:
                    status = _status(_tail_parse(body, self.shape, self.attrs), True, True)
                else:
                    status = _status(P.extract_body(self.shape, P.loads(body), self.attrs), True, True)
        except Exception:
            _log.debug("spanmeter: could not parse a response body", exc_info=True)
        return status

    # Per-chunk work, called by the stream proxies as the application reads. Returns the bytes
    # to hand to the application (the chunk itself, except when stripping the usage chunk).

    def feed(self, chunk: bytes) -> bytes:
        """One chunk of the body, in every mode; returns the bytes the app gets."""
        if self.quick and chunk.endswith(b"\n\n"):
            # The usual chunk: one whole `data: ...` event with LF endings and nothing held over.
            # It costs a few byte-string methods, and for a chat stream no call at all.
            end = len(chunk) - 2
            if chunk.find(b"\n") == end and chunk.startswith(b"data: ") and chunk[end - 1] != 13:  # 13: CR
                chat = self.chat
                try:
                    if chat is not None:  # the chunk itself is kept (no copy of its data)
                        if chat.first is None:
                            chat.first = chunk
                        chat.recent.append(chunk)
                        if self.mode == 1:
                            return chunk
                        out = chunk.replace(_USAGE_NULL, b"")
                        if len(out) < len(chunk):
                            return out  # it had `"usage":null`: not the usage event
                        chat.spot_injected(chunk[6:end])
                    else:
                        self.state.on_event(None, chunk[6:end])
                        if self.mode == 1:
                            return chunk
                        out = chunk.replace(_USAGE_NULL, b"")
                except Exception:
                    return self.give_up(chunk)
                if self.state.drop:
                    self.state.drop = False
                    return b""  # the chunk is the injected usage event, and only that
                return out
        return self._feed_other(chunk)

    def _feed_other(self, chunk: bytes) -> bytes:
        mode = self.mode
        if mode == 2:
            if self.pending or not chunk.endswith(b"\n\n"):
                chunk = self._feed_strip(chunk)
            else:
                try:  # whole events, several or with CRs
                    self.parser.feed(chunk)  # type: ignore[union-attr]
                except Exception:
                    return self.give_up(chunk)
                if self.state.drop:
                    self.state.drop = False
                    chunk = _cut_usage_event(chunk)
                chunk = chunk.replace(_USAGE_NULL, b"")
            # (_feed_strip may have given up holding bytes back: mode 1 from then on.)
            self.quick = self.mode != 0 and not self.pending and self.parser.idle  # type: ignore[union-attr]
            return chunk
        if mode == 3:
            if self.collected_size < _MAX_COLLECT:
                self.collected.append(chunk)
                self.collected_size += len(chunk)
        elif mode == 1:  # plain SSE, or strip mode that gave up holding bytes back
            try:
                self.parser.feed(chunk)  # type: ignore[union-attr]
            except Exception:
                return self.give_up(chunk)
            self.quick = self.parser.idle  # type: ignore[union-attr]
        return chunk

    def _feed_strip(self, chunk: bytes) -> bytes:
        # Hand the app whole events only (a partial event is useless to an SSE reader anyway), so
        # that the injected usage event can be cut out before the app sees any of its bytes.
        if self.pending:
            buf, self.pending = self.pending + chunk, b""
        else:
            buf = chunk
        try:
            if buf.endswith(b"\n\n"):
                return self._emit(buf)  # the usual chunk: whole events
            end = -1
            for sep in _BOUNDARIES:
                at = buf.rfind(sep)
                if at >= 0 and at + len(sep) > end:
                    end = at + len(sep)
            if end < 0:
                if len(buf) > _MAX_PENDING:
                    self.mode = 1  # hand everything over, parse without stripping from now on
                    self.parser.feed(buf)  # type: ignore[union-attr]
                    return buf
                self.pending = buf
                return b""
            if end == len(buf):
                return self._emit(buf)
            self.pending = buf[end:]
            return self._emit(buf[:end])
        except Exception:
            return self.give_up(buf)  # every byte of buf is owed to the app, pending included

    def _emit(self, complete: bytes) -> bytes:
        self.parser.feed(complete)  # type: ignore[union-attr]
        if self.state.drop:
            self.state.drop = False
            complete = _cut_usage_event(complete)
        return complete.replace(_USAGE_NULL, b"")

    def give_up(self, owed: bytes = b"") -> bytes:
        """Our parsing failed: stop parsing, hand over what is owed to the app, end as missing."""
        _log.debug("spanmeter: stopped parsing a response stream", exc_info=True)
        self.pending = b""
        self.mode = 0
        self.quick = False
        self._end_quietly(sc.USAGE_MISSING)
        return owed

    def flush(self) -> bytes:
        """End of body in strip mode: the bytes still held back (an event without a blank line)."""
        if self.mode != 2 or not self.pending:
            return b""
        rest, self.pending = self.pending, b""
        try:
            self.parser.feed(rest)  # type: ignore[union-attr]
            self.parser.close()  # type: ignore[union-attr]
            if self.state.drop:
                self.state.drop = False
                rest = _cut_usage_event(rest)
        except Exception:
            _log.debug("spanmeter: could not parse the end of a stream", exc_info=True)
        return rest.replace(_USAGE_NULL, b"")

    def finalize(self, how: str, exc: BaseException | None = None, end_time: int | None = None) -> None:
        """End of the body: `how` is "eof", "closed", "abandoned" or "error"."""
        if self.done:
            return
        try:
            state = self.state
            reported = False
            complete = how == "eof"
            if self.mode in (1, 2):
                if how == "eof":
                    self.parser.close()  # type: ignore[union-attr]
                reported = state.finish(self.attrs)
                complete = complete or state.terminal
            elif self.mode == 3:
                if how == "eof":
                    self.body = b"".join(self.collected)
                    self.body_decoded = False
                    self._end(None)
                    return
            if how == "error" and exc is not None:
                self.attrs[sc.ERROR_TYPE] = type(exc).__qualname__
            status = _status(reported, reported and state.final, complete)
            self._end(status, error=how == "error", end_time=end_time)
        except Exception:
            _log.debug("spanmeter: could not finalise a stream", exc_info=True)
            self._end_quietly(sc.USAGE_INCOMPLETE)

    # --- ending -------------------------------------------------------------------------------

    def _end(self, usage_status: str | None, error: bool = False, end_time: int | None = None) -> None:
        """The call is over: note when and how, and have the span recorded (see `_recorder`).
        `usage_status` None: the kept body decides it when parsed."""
        if self.done:
            return
        self.done = True
        self.end_time = time.time_ns() if end_time is None else end_time
        self.usage_status = usage_status
        self.error = error
        # Drop what the span no longer needs: a streamed response often hangs off a reference
        # cycle (the SDK's stream and its generator) that only the cyclic GC frees.
        self.request = None
        if self.state is not None:  # a stream was wrapped (its fields exist)
            self.collected = []
            self.state = self.parser = self.chat = None
            self.mode = 0  # any later chunk passes through untouched
            self.quick = False
        if self.hooks is not None:
            self.hooks.record(self)
        else:
            self._record()

    def _record(self) -> None:
        """Parse what was kept, set the attributes and end the span; a lazy call's span is
        started here, with every attribute at once (one validation pass in the SDK)."""
        span = self.span
        if span is None and parent_unsampled(self.lazy[0]):
            # Head sampling upstream said no: most samplers follow the parent, so ask before
            # parsing anything (the SDK's sampler has the last word either way).
            span = self.span = self.hooks.start_lazy(self, None)
            self.lazy = None
            if not span.is_recording():
                self.body = None
                span.end(end_time=self.end_time)
                return
        status = self.usage_status
        if status is None:
            status = self._parse_body()
        attrs = self.attrs
        attrs[sc.SPANMETER_USAGE_STATUS] = status
        if span is None:
            span = self.span = self.hooks.start_lazy(self, attrs)
            self.lazy = None
        else:
            span.set_attributes(attrs)
        if self.error or sc.ERROR_TYPE in attrs:
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=self.end_time)

    def _end_quietly(self, usage_status: str) -> None:
        try:
            self._end(usage_status)
        except Exception:
            _log.debug("spanmeter: could not end a span", exc_info=True)


def parent_unsampled(context: Any) -> bool:
    """The context's span is valid and not sampled (head sampling upstream said no)."""
    parent = trace.get_current_span(context).get_span_context()
    return parent.is_valid and not parent.trace_flags.sampled


def _status(reported: bool, final: bool, complete: bool) -> str:
    """usage_status from: any usage seen, the final usage seen, the body read to its end."""
    if reported and final:
        return sc.USAGE_REPORTED
    if complete and not reported:
        return sc.USAGE_MISSING
    return sc.USAGE_INCOMPLETE


def _cut_usage_event(buf: bytes) -> bytes:
    """`buf` without the SSE event that carries usage and `choices: []` (the injected one)."""
    for match in _USAGE_OBJECT.finditer(buf):
        start, end = _event_span(buf, match.start())
        event = buf[start:end]
        if b'"choices":[]' in event or b'"choices": []' in event:
            return buf[:start] + buf[end:]
    return buf


def _event_span(buf: bytes, pos: int) -> tuple[int, int]:
    """Start and end (after its blank line) of the SSE event containing byte `pos`."""
    start = 0
    for sep in _BOUNDARIES:
        at = buf.rfind(sep, 0, pos)
        if at >= 0 and at + len(sep) > start:
            start = at + len(sep)
    end = len(buf)
    for sep in _BOUNDARIES:
        at = buf.find(sep, pos)
        if at >= 0 and at + len(sep) < end:
            end = at + len(sep)
    return start, end


def _tail_parse(body: bytes, shape: str, out: dict[str, Any]) -> bool:
    """`model` and `usage` of a large JSON object from its last few KB (they follow `data`)."""
    tail = body[-_TAIL:].decode("utf-8", "replace")
    decoder = json.JSONDecoder()
    found: dict[str, Any] = {}
    for key in ("model", "usage"):
        at = tail.rfind(f'"{key}"')
        if at < 0:
            continue
        colon = tail.find(":", at + len(key) + 2)
        if colon < 0:
            continue
        idx = colon + 1
        while idx < len(tail) and tail[idx] in " \t\r\n":
            idx += 1
        try:
            found[key] = decoder.raw_decode(tail, idx)[0]
        except ValueError:
            continue
    if "usage" not in found:
        # Not the expected layout: pay for the whole parse rather than lose the usage.
        return P.extract_body(shape, P.loads(body), out)
    return P.extract_body(shape, found, out)


def _decode(body: bytes, encoding: str) -> bytes:
    """Undo Content-Encoding on a body we collected raw (rare: providers do not compress SSE)."""
    for coding in reversed([c.strip() for c in encoding.split(",")]):
        if coding in ("", "identity"):
            continue
        if coding in ("gzip", "x-gzip"):
            body = zlib.decompress(body, 16 + zlib.MAX_WBITS)
        elif coding == "deflate":
            try:
                body = zlib.decompress(body)
            except zlib.error:
                body = zlib.decompress(body, -zlib.MAX_WBITS)
        elif coding == "br":
            import brotli  # type: ignore[import-not-found]  # only when the app's httpx asked for br

            body = brotli.decompress(body)
        elif coding == "zstd":
            try:
                from compression import zstd  # type: ignore[import-not-found]  # Python 3.14+
            except ImportError:
                from backports import zstd  # type: ignore[import-not-found,no-redef]
            body = zstd.decompress(body)
        else:
            raise ValueError(f"unsupported content-encoding {coding!r}")
    return body
