"""`SpanmeterInstrumentor`: the OpenTelemetry instrumentor that `opentelemetry-instrument` loads.

    SpanmeterInstrumentor().instrument(tracer_provider=provider)   # or rely on the global one

Patches `httpx` and `httpx2` (whichever the app uses; openai 3.x uses httpx2, anthropic and most
other clients httpx) lazily, through post-import hooks: instrumenting never imports either library
itself, so an app may still call `httpx2.alias_httpx()` (which must run before `import httpx`)
after `opentelemetry-instrument` has loaded us.

Keyword arguments of `instrument()`:
- `tracer_provider`: defaults to the global one.
- `inject_stream_usage`: overrides `SPANMETER_INJECT_STREAM_USAGE` (see `_config`).
- `defer_spans`: overrides `SPANMETER_DEFER_SPANS` (see `_config` and `_recorder`).
- `request_hook(span, request)`: called after the span starts, before the request is sent.
- `response_hook(span, request, response)`: called when the response headers arrive.
Hooks must not read bodies; their exceptions are logged at debug and ignored.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Collection
from typing import Any

import wrapt
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from . import _httpx, _recorder
from ._config import get_settings

_log = logging.getLogger("spanmeter.instrumentation")

_LIBRARIES = ("httpx", "httpx2")


class SpanmeterInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Usage spans for every LLM call made over httpx / httpx2; see the module docstring."""

    _hooks: _httpx.Hooks | None = None
    _patches: list[tuple[type, Any, Any]]
    _registered: bool = False

    def instrumentation_dependencies(self) -> Collection[str]:
        # Neither library is required: each is patched if and when the app imports it.
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        from . import __version__

        settings = get_settings()
        inject = kwargs.get("inject_stream_usage")
        defer = kwargs.get("defer_spans")
        provider = kwargs.get("tracer_provider")
        self._hooks = _httpx.Hooks(
            tracer=_httpx.get_tracer(provider, __version__),
            inject_stream_usage=settings.inject_stream_usage if inject is None else bool(inject),
            max_parse_bytes=settings.max_parse_bytes,
            request_hook=kwargs.get("request_hook"),
            response_hook=kwargs.get("response_hook"),
            defer=settings.defer_spans if defer is None else bool(defer),
            tracer_provider=provider,
        )
        self._patches = []
        for name in _LIBRARIES:
            if name in sys.modules:
                self._on_import(sys.modules[name])
        if not SpanmeterInstrumentor._registered:
            # wrapt offers no way to remove a hook: they stay registered and check `_hooks`.
            SpanmeterInstrumentor._registered = True
            for name in _LIBRARIES:
                wrapt.register_post_import_hook(self._on_import, name)

    def _on_import(self, module: Any) -> None:
        hooks = self._hooks
        if hooks is None:
            return
        try:
            self._patches.extend(_httpx.patch(module, hooks))
        except Exception:
            _log.debug("spanmeter: could not instrument %s", getattr(module, "__name__", module), exc_info=True)

    def _uninstrument(self, **kwargs: Any) -> None:
        hooks = self._hooks
        self._hooks = None
        if hooks is not None:
            _recorder.flush()  # spans of calls already made are recorded with this provider
            if hooks.tracer_provider is not None:
                _recorder.unwatch(hooks.tracer_provider)
        _httpx.unpatch(self._patches)
        self._patches = []
