"""Recording spans while the application waits: the next LLM call's wait for its provider.

What a metered call must do while the application waits for it is small: notice the call, note
the time, keep the request and response bytes. The rest (parsing the response for its usage and
the request for its model and user, the SDK's span with its attribute validation, its
processors' `on_end`) is the call's *record*, and it is done later, at a moment when the
application is waiting anyway: when the next LLM call has sent its request and waits for the
provider's answer (httpcore's `trace` extension, `receive_response_headers.started`). An LLM
provider takes tens of milliseconds or more to answer; a record takes tens of microseconds.

    _recorder.submit(call)      # call._record() runs at the next wait, or ...
    spanmeter.flush()           # ... now: records every call still pending

No thread hands work to another on the way: CPython threads pay for every hand-off of the GIL
(measured: a background recorder thread fed per call cost ~40 µs more CPU per call than
recording inline, and a worse median; bench/README-instrumentation.md, session 4).

Nothing is lost or recorded twice:
- A call whose transport is not httpcore (an in-process mock, say) records what is pending
  right after its own response instead, on its own time.
- `flush()` runs before the tracer provider's `force_flush()` and `shutdown()` (wrapped on the
  provider instance, see `watch`) and at interpreter exit. An app that stops calling has its
  pending records done within ~`IDLE_SECONDS` by a sweeper thread that otherwise only sleeps.
- Pending records are popped one at a time from a deque: two threads draining at once never
  record the same call twice. A forked child starts with none (the parent records its own).
- At most `MAX_PENDING` calls wait: past that, the call that adds one records them all.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import deque
from typing import Any

_log = logging.getLogger("spanmeter.instrumentation")

MAX_PENDING = 1000
IDLE_SECONDS = 0.5

pending: deque[Any] = deque()  # calls ended and not yet recorded; truthy when any wait
_sweeper: threading.Thread | None = None
_lock = threading.Lock()
_exit_registered = False
wake = threading.Event()


def submit(call: Any) -> None:
    """Keep `call` for recording at the next wait (`call._record()`)."""
    if len(pending) >= MAX_PENDING:
        drain()
    pending.append(call)
    if _sweeper is None:
        _start()


def drain() -> None:
    """Record every pending call, on this thread. Never raises (it runs inside app requests)."""
    popleft = pending.popleft
    while True:
        try:
            call = popleft()
        except IndexError:
            return
        try:
            call._record()
        except Exception:
            _log.debug("spanmeter: could not record a call", exc_info=True)


def flush(timeout: float | None = None) -> bool:
    """Record every call made so far (`timeout` is accepted for the OpenTelemetry-style
    signature; the work is done on the calling thread). Always True."""
    drain()
    return True


def trace(name: str, info: Any) -> None:
    """httpcore's `trace` extension for a sync request: record pending calls once the request
    is sent and the provider is working on it."""
    if name.endswith("receive_response_headers.started"):
        drain()


async def atrace(name: str, info: Any) -> None:
    """The same for an async request (httpcore awaits the callback)."""
    if name.endswith("receive_response_headers.started"):
        drain()


def chained(previous: Any, is_async: bool) -> Any:
    """Our trace callback followed by the app's own (it may have set one)."""
    if is_async:

        async def both_async(name: str, info: Any) -> None:
            await atrace(name, info)
            await previous(name, info)

        return both_async

    def both(name: str, info: Any) -> None:
        trace(name, info)
        previous(name, info)

    return both


def _sweep() -> None:
    while True:
        wake.wait(IDLE_SECONDS)  # set: start over with the current IDLE_SECONDS (tests)
        wake.clear()
        try:
            oldest = pending[0].end_time
        except IndexError:
            continue
        except Exception:
            oldest = 0
        if time.time_ns() - oldest >= IDLE_SECONDS * 1e9:
            drain()


def _start() -> None:
    global _sweeper
    with _lock:
        if _sweeper is not None:
            return
        sweeper = threading.Thread(target=_sweep, name="spanmeter-sweeper", daemon=True)
        sweeper.start()
        _sweeper = sweeper
        global _exit_registered
        if not _exit_registered:
            # atexit runs handlers last-in first-out: registered at the first call, after the
            # tracer provider was made (the SDK registers its shutdown then), this runs first.
            atexit.register(drain)
            _exit_registered = True


def _after_fork_in_child() -> None:
    # The parent records what it had pending; the child's sweeper thread did not survive the fork.
    global _sweeper
    pending.clear()
    _sweeper = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# --- the tracer provider's own flush and shutdown -------------------------------------------

_WATCHED = "__spanmeter_recorder_watch__"


def watch(provider: Any) -> None:
    """Make `provider.force_flush()` and `provider.shutdown()` record waiting calls first.

    Wrapped on the instance, not the class, and only for providers that have both methods (the
    SDK's, and vendors' built on it); `unwatch` restores them. A proxy provider (nothing
    configured yet) is skipped: the call that first records through the real one watches it.
    """
    if provider is None or getattr(provider, _WATCHED, None) is not None:
        return
    try:
        force_flush = provider.force_flush
        shutdown = provider.shutdown
    except AttributeError:
        return

    def flushing_force_flush(*args: Any, **kwargs: Any) -> Any:
        flush()
        return force_flush(*args, **kwargs)

    def flushing_shutdown(*args: Any, **kwargs: Any) -> Any:
        flush()
        return shutdown(*args, **kwargs)

    try:
        provider.force_flush = flushing_force_flush
        provider.shutdown = flushing_shutdown
        setattr(provider, _WATCHED, (force_flush, shutdown))
    except (AttributeError, TypeError):  # a provider with __slots__ or read-only methods
        _log.debug("spanmeter: cannot wrap %r's force_flush/shutdown", provider)


def unwatch(provider: Any) -> None:
    originals = getattr(provider, _WATCHED, None)
    if originals is None:
        return
    try:
        del provider.force_flush, provider.shutdown
        delattr(provider, _WATCHED)
    except AttributeError:
        _log.debug("spanmeter: could not unwrap %r", provider)
