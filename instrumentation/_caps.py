"""Opt-in enforcement of spanmeter caps, before an LLM call leaves the process.

    import spanmeter
    spanmeter.instrument()
    spanmeter.enforce_caps(endpoint="http://spanmeter:4318", token=os.environ["SPANMETER_CAPS_TOKEN"])

    with spanmeter.attributes(user_id="u-42"):
        try:
            client.chat.completions.create(...)
        except spanmeter.CapExceeded as exc:        # nothing was sent to the provider
            return f"Limit reached, try again after {exc.resets_at}"

Or with no code change, by environment: SPANMETER_ENFORCE_CAPS=true, SPANMETER_CAPS_ENDPOINT
(default: the OTLP endpoint's base, else http://127.0.0.1:4318), SPANMETER_CAPS_TOKEN (the admin
token, or a user-scoped token for a single-user process), SPANMETER_CAPS_TTL_SECONDS (3),
SPANMETER_CAPS_FAIL_OPEN (true).

For every LLM call with a user (from `spanmeter.attributes`, baggage or the request body, as for
the span), the transport hook asks `POST /v1/users/{user}/check` and:
- deny (a hard cap is reached): raises `CapExceeded` before any span starts or byte is sent;
- warn (a soft limit): the call goes ahead; its span gets `spanmeter.cap_warning` and a warning
  is logged (once per answer, not per call);
- allow, or no user on the call: nothing happens.
Answers are cached per user for `ttl_seconds` (a deny until its retry time, if sooner), so a
busy user costs one check every few seconds and enforcement adds no latency to the other calls;
the price is that a user can overshoot by the calls made within one TTL. Async clients fetch in
a worker thread, never blocking the event loop. If spanmeter cannot answer, the call goes ahead
(`fail_open`, the default; logged) or is refused with `CapExceeded` (`fail_open=False`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from opentelemetry.instrumentation.utils import is_instrumentation_enabled

from . import _providers as P
from . import semconv as sc
from ._attribution import resolve

_log = logging.getLogger("spanmeter.caps")

_TRUE = {"1", "true", "yes", "on"}
_MAX_CACHED_USERS = 50_000


class CapExceeded(Exception):
    """An LLM call refused before it was sent: the user is over a hard cap.

    Attributes: `user_id`, `window` (e.g. "session"), `reason`, `retry_after` (seconds, or None
    when no retry will help as is) and `resets_at` (ISO 8601 UTC, or None)."""

    def __init__(self, user_id: str, reason: str, window: str | None = None, retry_after: int | None = None,
                 resets_at: str | None = None) -> None:
        self.user_id = user_id
        self.reason = reason
        self.window = window
        self.retry_after = retry_after
        self.resets_at = resets_at
        super().__init__(f"spanmeter cap: LLM call for user {user_id!r} not sent: {reason}")


@dataclass(slots=True)
class _Verdict:
    decision: str  # allow | warn | deny
    reason: str
    window: str | None
    retry_after: int | None
    resets_at: str | None
    expires: float  # monotonic
    logged: bool = False


class Enforcer:
    """Asks spanmeter's check API and caches its answers; see the module docstring."""

    def __init__(self, endpoint: str, token: str | None = None, *, ttl_seconds: float = 3.0,
                 timeout_seconds: float = 1.0, fail_open: bool = True, max_parse_bytes: int = 1 << 20) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._token = token
        self.ttl = ttl_seconds
        self.timeout = timeout_seconds
        self.fail_open = fail_open
        self.max_parse_bytes = max_parse_bytes
        self._cache: dict[str, _Verdict] = {}
        self._lock = threading.Lock()
        self.fetches = 0  # answers asked of spanmeter (for tests and debugging)
        self._failing_since: float | None = None

    def __repr__(self) -> str:  # never show the token
        return f"Enforcer(endpoint={self.endpoint!r}, ttl_seconds={self.ttl})"

    # --- the transport hook's entry points ----------------------------------------------------

    def guard(self, request: Any) -> str | None:
        """Before a sync send: raise CapExceeded, or return a soft-cap warning, or None."""
        user = self._user_of(request)
        if user is None:
            return None
        verdict = self._cached(user)
        if verdict is None:
            verdict = self._fetch_safely(user)
        return self._apply(user, verdict)

    async def guard_async(self, request: Any) -> str | None:
        """Before an async send: the same, fetching in a worker thread on a cache miss."""
        user = self._user_of(request)
        if user is None:
            return None
        verdict = self._cached(user)
        if verdict is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # another event loop (trio): a short blocking fetch
                verdict = self._fetch_safely(user)
            else:
                verdict = await loop.run_in_executor(None, self._fetch_safely, user)
        return self._apply(user, verdict)

    # --- internals ----------------------------------------------------------------------------

    def _user_of(self, request: Any) -> str | None:
        # The same user the span will carry: scopes and baggage, then the request's own field.
        if request.method != "POST" or P.match_path(request.url.path) is None or not is_instrumentation_enabled():
            return None
        user = resolve(None, None).get(sc.USER_ID)
        if user:
            return user
        try:
            body = request.content
        except Exception:  # a streaming upload: never read it
            return None
        fields = P.parse_request(body, self.max_parse_bytes) if body else None
        return fields.user if fields is not None and fields.user else None

    def _cached(self, user: str) -> _Verdict | None:
        verdict = self._cache.get(user)
        if verdict is not None and verdict.expires > time.monotonic():
            return verdict
        return None

    def _apply(self, user: str, verdict: _Verdict | None) -> str | None:
        if verdict is None or verdict.decision == "allow":
            return None
        if verdict.decision == "deny":
            raise CapExceeded(user, verdict.reason, verdict.window, verdict.retry_after, verdict.resets_at)
        if not verdict.logged:
            verdict.logged = True
            _log.warning("spanmeter cap warning for user %r: %s", user, verdict.reason)
        return verdict.reason

    def _fetch_safely(self, user: str) -> _Verdict | None:
        try:
            verdict = self._fetch(user)
        except Exception as exc:  # noqa: BLE001 - the check must never break the app by itself
            now = time.monotonic()
            if self._failing_since is None or now - self._failing_since > 60:
                self._failing_since = now
                what = f"HTTP {exc.code}" if isinstance(exc, urllib.error.HTTPError) else type(exc).__name__
                if isinstance(exc, urllib.error.HTTPError) and exc.code == 404:
                    # The OTLP endpoint's base is the default: behind a collector that is not spanmeter.
                    what += "; set SPANMETER_CAPS_ENDPOINT to spanmeter itself, not a collector"
                _log.warning("spanmeter caps: no answer from %s (%s); calls %s", self.endpoint, what,
                             "go ahead" if self.fail_open else "are refused")
            if self.fail_open:
                return None
            verdict = _Verdict("deny", "the caps service did not answer", None, None, None, now + min(self.ttl, 1.0))
        else:
            self._failing_since = None
        with self._lock:
            if len(self._cache) >= _MAX_CACHED_USERS:
                self._cache.clear()
            self._cache[user] = verdict
        return verdict

    def _fetch(self, user: str) -> _Verdict:
        self.fetches += 1
        url = f"{self.endpoint}/v1/users/{quote(user, safe='')}/check"
        request = urllib.request.Request(url, data=b"{}", method="POST", headers={"Content-Type": "application/json"})
        if self._token:
            request.add_header("Authorization", f"Bearer {self._token}")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - configured URL
            doc = json.loads(response.read())
        decision = doc.get("decision")
        if decision not in ("allow", "warn", "deny"):
            raise ValueError(f"unexpected check answer {decision!r}")
        ttl = self.ttl
        retry_after = doc.get("retry_after")
        if decision == "deny" and isinstance(retry_after, int):
            ttl = min(ttl, max(retry_after, 0.05))
        return _Verdict(decision, str(doc.get("reason") or decision), doc.get("window"), retry_after,
                        doc.get("resets_at"), time.monotonic() + ttl)


_enforcer: Enforcer | None = None
_from_env_done = False
_setup_lock = threading.RLock()


def enforce_caps(*, endpoint: str | None = None, token: str | None = None, ttl_seconds: float | None = None,
                 timeout_seconds: float = 1.0, fail_open: bool | None = None, enabled: bool = True) -> Enforcer | None:
    """Turn enforcement on (or off with `enabled=False`) for every instrumented client.

    Arguments win over SPANMETER_CAPS_* variables, which win over the defaults."""
    global _enforcer, _from_env_done
    env = os.environ
    with _setup_lock:
        _from_env_done = True
        if not enabled:
            _enforcer = None
            return None
        if ttl_seconds is None:
            ttl_seconds = float(env.get("SPANMETER_CAPS_TTL_SECONDS") or 3.0)
        if fail_open is None:
            fail_open = (env.get("SPANMETER_CAPS_FAIL_OPEN") or "true").strip().lower() in _TRUE
        _enforcer = Enforcer(endpoint or _default_endpoint(env), token or env.get("SPANMETER_CAPS_TOKEN") or None,
                             ttl_seconds=ttl_seconds, timeout_seconds=timeout_seconds, fail_open=fail_open)
        return _enforcer


def current() -> Enforcer | None:
    """The active enforcer; on first use, SPANMETER_ENFORCE_CAPS=true turns it on."""
    global _from_env_done
    if not _from_env_done:
        with _setup_lock:
            if not _from_env_done:
                if (os.environ.get("SPANMETER_ENFORCE_CAPS") or "").strip().lower() in _TRUE:
                    enforce_caps()
                _from_env_done = True
    return _enforcer


def guard(request: Any) -> str | None:
    """The sync transport hook: None unless enforcement is on; raises CapExceeded on deny and
    nothing else (our own failures are logged at debug)."""
    enforcer = _enforcer if _from_env_done else current()
    if enforcer is None:
        return None
    try:
        return enforcer.guard(request)
    except CapExceeded:
        raise
    except Exception:
        _log.debug("spanmeter: cap check failed", exc_info=True)
        return None


async def guard_async(request: Any) -> str | None:
    enforcer = _enforcer if _from_env_done else current()
    if enforcer is None:
        return None
    try:
        return await enforcer.guard_async(request)
    except CapExceeded:
        raise
    except Exception:
        _log.debug("spanmeter: cap check failed", exc_info=True)
        return None


def warn(call: Any, warning: str | None) -> None:
    """Put a soft-cap warning on the call's span."""
    if warning and call is not None:
        try:
            call.attrs[sc.SPANMETER_CAP_WARNING] = warning  # set on the span when it is recorded
        except Exception:
            _log.debug("spanmeter: could not record a cap warning", exc_info=True)


def _default_endpoint(env: Any) -> str:
    explicit = (env.get("SPANMETER_CAPS_ENDPOINT") or "").strip()
    if explicit:
        return explicit
    otlp = (env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "").strip()
    return otlp.rstrip("/").removesuffix("/v1/traces") if otlp else "http://127.0.0.1:4318"
