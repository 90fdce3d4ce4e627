"""Settings of the app-side instrumentation, read from `SPANMETER_*` environment variables.

A plain dataclass rather than pydantic-settings: the instrumentation is installed into users'
services and depends on nothing beyond OpenTelemetry and wrapt. Read lazily through the cached
`get_settings()` (never at import), so tests can build their own `Settings`. Precedence: an
explicit `SpanmeterInstrumentor().instrument(...)` argument > environment > default.

- `SPANMETER_INJECT_STREAM_USAGE` (default `true`): add `stream_options.include_usage` to OpenAI
  chat streams that did not ask for it, and hide the extra usage chunk from the application.
- `SPANMETER_MAX_PARSE_BYTES` (default 1 MiB): request bodies up to this size are parsed whole for
  the model and user fields; larger ones (uploads) are only scanned near their ends.
- `SPANMETER_DEFER_SPANS` (default `true`): parse a call's bodies and record its span while the
  next LLM call waits for its provider (see `_recorder`); `false` records each span before the
  call returns.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True, slots=True)
class Settings:
    inject_stream_usage: bool = True
    max_parse_bytes: int = 1 << 20
    defer_spans: bool = True

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        default = cls()
        inject = env.get("SPANMETER_INJECT_STREAM_USAGE")
        max_parse = env.get("SPANMETER_MAX_PARSE_BYTES", "").strip()
        defer = env.get("SPANMETER_DEFER_SPANS")
        return cls(
            defer_spans=default.defer_spans if defer is None else defer.strip().lower() not in _FALSE,
            inject_stream_usage=default.inject_stream_usage if inject is None else inject.strip().lower() not in _FALSE,
            max_parse_bytes=int(max_parse) if max_parse.isdigit() else default.max_parse_bytes,
        )


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()
