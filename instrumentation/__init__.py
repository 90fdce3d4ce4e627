"""spanmeter: every LLM call your service makes becomes an OpenTelemetry span with exact token usage
and the end user it was made for.

    import spanmeter
    spanmeter.instrument()                                   # OTLP to spanmeter, httpx/httpx2 hooked
    with spanmeter.attributes(user_id="u-42", feature="search"):
        OpenAI().chat.completions.create(model="gpt-4o-mini", messages=[...])

Or, with no code change: `opentelemetry-instrument python app.py` (entry point `spanmeter`).

This package is the app-side library only; the ingest service is `spanmeter.ingest` and its
dependencies (`pip install 'spanmeter[server]'`) are never imported from here. Importing
`spanmeter` is cheap: the instrumentation's modules load when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._attribution import attributes, current_attributes

__version__ = "0.1.0"

__all__ = [
    "CapExceeded",
    "SpanmeterInstrumentor",
    "__version__",
    "attributes",
    "current_attributes",
    "enforce_caps",
    "flush",
    "instrument",
]

if TYPE_CHECKING:
    from ._caps import CapExceeded, enforce_caps
    from ._instrumentor import SpanmeterInstrumentor
    from ._recorder import flush
    from ._setup import instrument


def __getattr__(name: str) -> Any:
    # Lazy, so that `import spanmeter` (and `spanmeter.ingest`) stays light.
    if name == "SpanmeterInstrumentor":
        from ._instrumentor import SpanmeterInstrumentor

        return SpanmeterInstrumentor
    if name == "instrument":
        from ._setup import instrument

        return instrument
    if name == "flush":
        from ._recorder import flush

        return flush
    if name in ("CapExceeded", "enforce_caps"):  # opt-in per-user caps (see _caps)
        from . import _caps

        return getattr(_caps, name)
    raise AttributeError(f"module 'spanmeter' has no attribute {name!r}")
