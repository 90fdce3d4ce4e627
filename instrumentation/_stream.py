"""Proxies around a response's byte stream that show each chunk to the `Call` as the app reads it.

They replace `response.stream` (an httpx/httpx2 `SyncByteStream` / `AsyncByteStream`) after the
client's `send` returns and before anyone reads the body: no byte is read by spanmeter itself,
nothing is buffered (except, when spanmeter hid the injected usage chunk, the partial event at the
end of a chunk, which an SSE reader could not use yet anyway), and the first chunk reaches the app
as soon as it arrives. The span ends exactly once: at the end of the body, on `close()`, on an
error from the network (re-raised unchanged), when the app stops iterating, or, for a stream the
app simply drops, when the garbage collector reclaims the proxy.

The classes are built per HTTP library (`stream_classes(httpx)`, `stream_classes(httpx2)`)
because each library checks `isinstance(response.stream, <its own SyncByteStream>)`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncGenerator
from typing import Any

from ._call import Call

_log = logging.getLogger("spanmeter.instrumentation")


class _SyncProxy:
    # No __slots__: the library's SyncByteStream base has a __dict__ already.

    def __init__(self, inner: Any, call: Call) -> None:
        self._inner = inner
        self._call = call

    def __iter__(self) -> Any:
        call = self._call
        feed = call.feed  # never raises; b"" when strip mode holds back a partial event
        try:
            for chunk in self._inner:
                chunk = feed(chunk)
                if chunk:
                    yield chunk
            rest = call.flush() if call.mode == 2 else b""
            if rest:
                yield rest
        except GeneratorExit:
            call.finalize("abandoned")
            raise
        except BaseException as exc:
            call.finalize("error", exc)
            raise
        call.finalize("eof")

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._call.finalize("closed")

    def __getattr__(self, name: str) -> Any:
        # `elapsed` and anything else the library or app reads from the stream it wrapped.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._inner, name)

    def __del__(self) -> None:
        call = self.__dict__.get("_call")
        if call is not None and not call.done:
            try:
                call.finalize("abandoned")
            except Exception:  # pragma: no cover - interpreter shutdown
                pass


class _AsyncProxy:
    def __init__(self, inner: Any, call: Call) -> None:
        self._inner = inner
        self._call = call

    async def __aiter__(self) -> Any:
        call = self._call
        stream = self._inner.__aiter__()
        feed = call.feed
        try:
            async for chunk in stream:
                chunk = feed(chunk)
                if chunk:
                    yield chunk
            rest = call.flush() if call.mode == 2 else b""
            if rest:
                yield rest
        except (GeneratorExit, asyncio.CancelledError):
            call.finalize("abandoned")
            raise
        except BaseException as exc:
            call.finalize("error", exc)
            raise
        finally:
            if isinstance(stream, AsyncGenerator):
                await stream.aclose()
        call.finalize("eof")

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._call.finalize("closed")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._inner, name)

    def __del__(self) -> None:
        call = self.__dict__.get("_call")
        if call is not None and not call.done:
            try:
                call.finalize("abandoned")
            except Exception:  # pragma: no cover - interpreter shutdown
                pass


@functools.lru_cache(maxsize=None)
def stream_classes(lib: Any) -> tuple[type, type]:
    """The (sync, async) proxy classes for one HTTP library module (httpx or httpx2)."""
    sync_cls = type("SpanmeterSyncStream", (_SyncProxy, lib.SyncByteStream), {"__module__": __name__})
    async_cls = type("SpanmeterAsyncStream", (_AsyncProxy, lib.AsyncByteStream), {"__module__": __name__})
    return sync_cls, async_cls
