"""The hook into httpx and httpx2: `Client.send` / `AsyncClient.send`, patched on the classes.

Why `send` and not the transports' `handle_request`: `send` is public in both libraries, is
called once per request the app makes (the SDKs' retries are separate sends, each a provider
call), and sits above every transport, so calls through `MockTransport`, ASGI/WSGI transports,
httpx-aiohttp or any custom transport are metered too, where patching `HTTPTransport` would
miss them. Patching the class (not client instances) also covers clients created before
instrumentation (a module-level `OpenAI()` in an app that calls `spanmeter.instrument()` later).
When the app asked for `stream=False`, httpx has read (and decoded) the body inside `send`, and
we parse `response.content`; otherwise we wrap `response.stream` before anyone reads it.

A request that is not a POST to a recognised LLM path costs two attribute reads and a few
`str.endswith`, and goes through untouched.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.trace import SpanKind, Tracer

from . import _caps, _recorder
from . import _providers as P
from . import semconv as sc
from ._attribution import current_scope, resolve_scope
from ._call import Call, parent_unsampled
from ._stream import stream_classes

_log = logging.getLogger("spanmeter.instrumentation")

_MARK = "__spanmeter_original__"


class Hooks:
    """What the patched `send` methods share: the tracer, settings and user hooks."""

    def __init__(
        self,
        tracer: Tracer,
        inject_stream_usage: bool,
        max_parse_bytes: int,
        request_hook: Any = None,
        response_hook: Any = None,
        defer: bool = True,
        tracer_provider: Any = None,
    ) -> None:
        self.tracer = tracer
        self.inject_stream_usage = inject_stream_usage
        self.max_parse_bytes = max_parse_bytes
        self.request_hook = request_hook
        self.response_hook = response_hook
        self.defer = defer
        # Lazy calls have no span during the request (it is started when recorded): only when
        # recording is deferred, and no hook is to be handed a span.
        self.lazy_ok = defer and request_hook is None and response_hook is None
        self.tracer_provider = tracer_provider  # None: the global one, watched once it is real
        self.watching = False
        if defer and tracer_provider is not None:
            _recorder.watch(tracer_provider)
            self.watching = True

    def record(self, call: Call) -> None:
        """Record an ended call's span: at the next call's wait (see `_recorder`), or now."""
        if not self.defer:
            call._record()
            return
        if not self.watching:
            provider = trace.get_tracer_provider()
            if not isinstance(provider, trace.ProxyTracerProvider):
                _recorder.watch(provider)
                self.watching = True
        _recorder.submit(call)

    def begin(self, request: Any, reads_body: bool = False) -> Call | None:
        """A started `Call` when `request` is an LLM call, else None (and nothing else happens).

        With recording deferred and no hooks, the call is *lazy*: it has no span during the
        request; its span is started when the call is recorded, with the call's own start time,
        from what is noted here (see `start_lazy`). `reads_body`: httpx reads the whole response
        inside `send` (the app did not ask to stream it); then, unless its body asks for a
        stream, not even the request body is parsed here. A stream's request is parsed now
        (spanmeter may add include_usage to it). Under an unsampled parent a stream's span is
        started now, so that the sampler decides before the request is changed or the stream
        wrapped.
        """
        if request.method != "POST":
            return None
        url = request.url
        path = url.path
        shape = P.match_path(path)
        if shape is None or not is_instrumentation_enabled():
            return None

        try:
            body = request.content
        except Exception:  # a streaming upload: never read it
            body = None

        host = url.host
        route = _route(shape, host, path)
        lazy = self.lazy_ok
        if lazy and reads_body and (body is None or b'"stream"' not in body) and not route[3]:
            ctx = otel_context.get_current()
            return Call(None, shape, request, False, None, 1, True, self, (ctx, current_scope(), body, host, url.port, route, _UNPARSED))

        fields = P.parse_request(body, self.max_parse_bytes) if body else None
        streaming = (fields is not None and fields.stream) or route[3]
        # The context is read once here, for the baggage, the parent and the span's own context.
        ctx = otel_context.get_current()
        if lazy and parent_unsampled(ctx):
            lazy = False
        if lazy:
            span = None
            recording = True
        else:
            name, attrs = _request_span(shape, route, host, url.port, fields, current_scope(), ctx)
            span = self.tracer.start_span(name, ctx, SpanKind.CLIENT, attrs)
            recording = span.is_recording()
        strip = False
        if (
            recording  # an unsampled call's usage is never read: its request goes out as the app wrote it
            and streaming
            and shape == P.CHAT_COMPLETIONS
            and self.inject_stream_usage
            and fields is not None
            and fields.include_usage is not True
            and _accepts_stream_options(url)
        ):
            try:
                patched = P.inject_include_usage(body, fields)  # type: ignore[arg-type]
                if patched is not None:
                    request = _with_body(request, patched)
                    strip = True
            except Exception:  # the request goes out as the app wrote it (usage may then be missing)
                _log.debug("spanmeter: could not add stream_options.include_usage", exc_info=True)

        choices = fields.choices if fields is not None else 1
        if span is None:
            return Call(None, shape, request, strip, None, choices, True, self, (ctx, current_scope(), None, host, url.port, route, fields))
        if self.request_hook is not None:
            try:
                self.request_hook(span, request)
            except Exception:
                _log.debug("spanmeter: request_hook failed", exc_info=True)
        call = Call(span, shape, request, strip, self.response_hook, choices, recording, self)
        call.context = trace.set_span_in_context(span, ctx)
        return call

    def start_lazy(self, call: Call, result: dict[str, Any] | None) -> Any:
        """The span of a lazy call, started (when the call is recorded, see `_recorder`) at the
        call's start time, with its request's attributes (its body parsed here if it was not
        during the call) and then `result` (what the response said)."""
        ctx, scope, body, host, port, route, fields = call.lazy
        if fields is _UNPARSED:
            fields = P.parse_request(body, self.max_parse_bytes) if body else None
        name, attrs = _request_span(call.shape, route, host, port, fields, scope, ctx)
        if result:
            attrs.update(result)
        return self.tracer.start_span(name, ctx, SpanKind.CLIENT, attrs, start_time=call.start_time)


_UNPARSED: Any = object()  # a lazy call's request body, not parsed during the call


def _request_span(
    shape: str, route: tuple[str, str, str | None, bool], host: str, port: int | None, fields: Any, scope: Any, ctx: Any
) -> tuple[str, dict[str, Any]]:
    """The span's name and its attributes known from the request: the route, the request's
    fields, and who the call was made for (the scopes' attributes `scope`, then `ctx`'s
    baggage, then the request's own user fields)."""
    operation, provider, path_model, streaming_path = route
    if fields is not None:
        model = fields.model or path_model
        streaming = fields.stream or streaming_path
        user, conversation = fields.user, fields.conversation
    else:
        model = path_model
        streaming = streaming_path
        user = conversation = None
    attrs = _start_attributes(shape, operation, provider, host, port, model, streaming, fields)
    who = resolve_scope(scope, user, conversation, ctx)
    if who:
        attrs.update(who)
    return (f"{operation} {model}" if model else operation), attrs


def _start_attributes(
    shape: str, operation: str, provider: str, host: str, port: int | None, model: str | None, streaming: bool, fields: Any
) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        sc.GEN_AI_OPERATION_NAME: operation,
        sc.GEN_AI_PROVIDER_NAME: provider,
        sc.SERVER_ADDRESS: host,
        sc.SPANMETER_STREAMING: streaming,
    }
    if model:
        attrs[sc.GEN_AI_REQUEST_MODEL] = model
    if port is not None:
        attrs[sc.SERVER_PORT] = port
    if fields is not None and fields.service_tier and shape != P.ANTHROPIC_MESSAGES:
        attrs[sc.OPENAI_REQUEST_SERVICE_TIER] = fields.service_tier
    return attrs


# (operation, provider, model named by the path) by (shape, host, path): an app calls the same few
# URLs over and over. Bounded: cleared when full (a gateway with a path per deployment, say).
_ROUTES: dict[tuple[str, str, str], tuple[str, str, str | None, bool]] = {}
_MAX_ROUTES = 256


def _route(shape: str, host: str, path: str) -> tuple[str, str, str | None, bool]:
    """(operation, provider, model named by the path, the path itself asks for a stream)."""
    key = (shape, host, path)
    route = _ROUTES.get(key)
    if route is None:
        if len(_ROUTES) >= _MAX_ROUTES:
            _ROUTES.clear()
        route = _ROUTES[key] = (
            P.OPERATION[shape],
            P.provider_for(shape, host, path),
            P.model_from_path(shape, path),
            shape == P.GEMINI_GENERATE and path.endswith(":streamGenerateContent"),
        )
    return route


def _accepts_stream_options(url: Any) -> bool:
    # Azure OpenAI API versions before 2024-09-01-preview reject the unknown parameter (400).
    version = url.params.get("api-version")
    return version is None or version >= "2024-09-01"


def _with_body(request: Any, body: bytes) -> Any:
    """A copy of `request` with another JSON body (public API only: a new Request)."""
    headers = request.headers.copy()
    for name in ("content-length", "transfer-encoding"):
        if name in headers:
            del headers[name]
    return type(request)(request.method, request.url, headers=headers, content=body, extensions=request.extensions)


# Calls ended earlier are recorded while this one waits for its provider: httpcore calls the
# request's `trace` extension at each step, and `receive_response_headers.started` comes once the
# request is sent. The app's own trace callback, if any, is chained and put back afterwards.
_NO_HOOK: Any = object()


def _wait_hook(request: Any, is_async: bool) -> Any:
    """Set our trace callback on `request`; returns the app's own (None if it had none)."""
    try:
        extensions = request.extensions
        previous = extensions.get("trace")
        if previous is None:
            extensions["trace"] = _recorder.atrace if is_async else _recorder.trace
        else:
            extensions["trace"] = _recorder.chained(previous, is_async)
        return previous
    except Exception:
        _log.debug("spanmeter: could not set a trace extension", exc_info=True)
        return _NO_HOOK


def _unhook(request: Any, previous: Any) -> None:
    try:
        if previous is None:
            request.extensions.pop("trace", None)
        else:
            request.extensions["trace"] = previous
    except Exception:
        _log.debug("spanmeter: could not restore a trace extension", exc_info=True)


def _make_send(original: Any, hooks: Hooks, sync_proxy: type) -> Any:
    @functools.wraps(original)
    def send(client: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        warning = _caps.guard(request)  # opt-in caps: may raise spanmeter.CapExceeded, nothing sent
        try:
            call = hooks.begin(request, not kwargs.get("stream", False))
        except Exception:
            _log.debug("spanmeter: could not start a span", exc_info=True)
            call = None
        if call is None:
            return original(client, request, *args, **kwargs)
        _caps.warn(call, warning)
        sent = call.request
        wait = _wait_hook(sent, False) if _recorder.pending else _NO_HOOK
        token = call.attach()
        try:
            response = original(client, sent, *args, **kwargs)
        except BaseException as exc:
            call.fail(exc)
            raise
        finally:
            call.detach(token)
            if wait is not _NO_HOOK:
                _unhook(sent, wait)
        if _recorder.pending and wait is not _NO_HOOK:
            _recorder.drain()  # the transport is not httpcore (no wait was seen): record them now
        if call.on_response(response, not kwargs.get("stream", False)):
            try:
                response.stream = sync_proxy(response.stream, call)
            except Exception:
                _log.debug("spanmeter: could not wrap a response stream", exc_info=True)
                call.finalize("closed")
        return response

    setattr(send, _MARK, original)
    return send


def _make_async_send(original: Any, hooks: Hooks, async_proxy: type) -> Any:
    @functools.wraps(original)
    async def send(client: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        warning = await _caps.guard_async(request)  # opt-in caps, as in the sync send
        try:
            call = hooks.begin(request, not kwargs.get("stream", False))
        except Exception:
            _log.debug("spanmeter: could not start a span", exc_info=True)
            call = None
        if call is None:
            return await original(client, request, *args, **kwargs)
        _caps.warn(call, warning)
        sent = call.request
        wait = _wait_hook(sent, True) if _recorder.pending else _NO_HOOK
        token = call.attach()
        try:
            response = await original(client, sent, *args, **kwargs)
        except BaseException as exc:
            call.fail(exc)
            raise
        finally:
            call.detach(token)
            if wait is not _NO_HOOK:
                _unhook(sent, wait)
        if _recorder.pending and wait is not _NO_HOOK:
            _recorder.drain()  # the transport is not httpcore (no wait was seen): record them now
        if call.on_response(response, not kwargs.get("stream", False)):
            try:
                response.stream = async_proxy(response.stream, call)
            except Exception:
                _log.debug("spanmeter: could not wrap a response stream", exc_info=True)
                call.finalize("closed")
        return response

    setattr(send, _MARK, original)
    return send


def patch(lib: Any, hooks: Hooks) -> list[tuple[type, Any, Any]]:
    """Patch `lib.Client.send` and `lib.AsyncClient.send`; returns what `unpatch` needs."""
    sync_proxy, async_proxy = stream_classes(lib)
    done = []
    for cls, make, proxy in ((lib.Client, _make_send, sync_proxy), (lib.AsyncClient, _make_async_send, async_proxy)):
        current = cls.__dict__.get("send")
        if current is None or hasattr(current, _MARK):
            continue  # already ours (httpx aliased to httpx2 by `httpx2.alias_httpx()`)
        patched = make(current, hooks, proxy)
        cls.send = patched
        done.append((cls, current, patched))
    return done


def unpatch(patches: list[tuple[type, Any, Any]]) -> None:
    for cls, original, patched in patches:
        if cls.__dict__.get("send") is patched:
            cls.send = original
        else:
            _log.debug("spanmeter: %s.send was re-wrapped by someone else; leaving it", cls.__qualname__)


def get_tracer(tracer_provider: Any, version: str) -> Tracer:
    return trace.get_tracer("spanmeter", version, tracer_provider=tracer_provider)
