"""`spanmeter demo`: a fake provider plus an instrumented client, so a newcomer sees costs land.

    from spanmeter.ingest.demo import run_demo
    summary = run_demo("http://127.0.0.1:4318", users=5, calls=20)

Starts the local fake provider (`spanmeter.ingest.fakeprovider`), instruments httpx/httpx2 with
spanmeter exporting OTLP/HTTP to `endpoint` (a running `spanmeter serve`, or a collector), and
makes `calls` LLM calls through the real `openai` and `anthropic` SDKs, spread over `users`
demo users with `spanmeter.attributes(user_id=..., feature=..., team=...)`: OpenAI chat
completions (plain and streamed), OpenAI embeddings, Anthropic messages (plain and streamed),
with deterministic token counts including cache reads and writes and reasoning. Then it flushes
the spans and returns a summary (what was sent, per user, and whether the export succeeded).

Needs the `openai` and `anthropic` packages (the `dev` extra has them). The ingest token, if the
service requires one, comes from `SPANMETER_INGEST_TOKEN`; other OTLP headers from the standard
`OTEL_EXPORTER_OTLP_HEADERS`. The demo uses its own tracer provider and leaves the global one
alone; it uninstruments when done.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["run_demo"]

MODELS = {"openai": "gpt-4o-mini", "embeddings": "text-embedding-3-small", "anthropic": "claude-haiku-4-5"}
FEATURES = ("search", "support-chat", "summarize")
TEAMS = ("growth", "support")
PROMPT = [{"role": "user", "content": "Draft a friendly reply to a customer asking about their invoice."}]


def run_demo(endpoint: str = "http://127.0.0.1:4318", users: int = 5, calls: int = 20) -> dict[str, Any]:
    """Make `calls` instrumented LLM calls for `users` demo users, export to `endpoint`; a summary."""
    import anthropic
    import openai
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult

    import spanmeter
    from spanmeter._setup import traces_endpoint

    from .fakeprovider import FakeProvider

    users = max(1, users)
    url = traces_endpoint(endpoint)
    token = os.environ.get("SPANMETER_INGEST_TOKEN")
    exporter = OTLPSpanExporter(endpoint=url, headers={"Authorization": f"Bearer {token}"} if token else None)
    outcome = {"exported": 0, "failed": 0}

    def export(spans: Any) -> SpanExportResult:
        result = OTLPSpanExporter.export(exporter, spans)
        outcome["exported" if result == SpanExportResult.SUCCESS else "failed"] += len(spans)
        return result

    exporter.export = export  # type: ignore[method-assign]  # count what the service accepted
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: "spanmeter-demo"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    instrumentor = spanmeter.SpanmeterInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    instrumentor.instrument(tracer_provider=provider)

    per_user: dict[str, dict[str, Any]] = {}
    errors: list[str] = []
    try:
        with FakeProvider(chunks=8) as fake:
            oai = openai.OpenAI(base_url=fake.openai_base_url, api_key="demo", max_retries=0)
            claude = anthropic.Anthropic(base_url=fake.anthropic_base_url, api_key="demo", max_retries=0)
            for i in range(calls):
                user = f"demo-user-{i % users + 1}"
                feature = FEATURES[i % len(FEATURES)]
                team = TEAMS[(i % users) % len(TEAMS)]
                # Deterministic, varied counts: inclusive input, with cache reads on repeat calls.
                usage = {"input": 300 + (i * 137) % 900, "output": 40 + (i * 53) % 260, "cached": 128 * (i % 3), "chunks": 8}
                kind = ("openai-chat", "openai-stream", "anthropic", "anthropic-stream", "embeddings")[i % 5]
                stats = per_user.setdefault(user, {"calls": 0, "input_tokens": 0, "output_tokens": 0, "models": set()})
                try:
                    with spanmeter.attributes(user_id=user, feature=feature, team=team, session_id=f"{user}-session"):
                        model = _call(kind, oai, claude, usage)
                except Exception as exc:  # the demo goes on; the summary says what failed
                    errors.append(f"{kind} for {user}: {exc!r}")
                    continue
                stats["calls"] += 1
                stats["input_tokens"] += usage["input"]
                stats["output_tokens"] += 0 if kind == "embeddings" else usage["output"]
                stats["models"].add(model)
    finally:
        instrumentor.uninstrument()
        flushed = provider.force_flush(timeout_millis=30_000)
        provider.shutdown()

    return {
        "endpoint": url,
        "calls": sum(s["calls"] for s in per_user.values()),
        "spans_exported": outcome["exported"],
        "spans_failed": outcome["failed"],
        "export_ok": flushed and outcome["failed"] == 0 and outcome["exported"] > 0,
        "users": {u: {**s, "models": sorted(s["models"])} for u, s in sorted(per_user.items())},
        "errors": errors,
    }


def _call(kind: str, oai: Any, claude: Any, usage: dict[str, int]) -> str:
    """One demo call; returns the model used."""
    fake = {"fake": usage}
    if kind == "openai-chat":
        oai.chat.completions.create(model=MODELS["openai"], messages=PROMPT, extra_body={"fake": {**usage, "reasoning": 0}})
        return MODELS["openai"]
    if kind == "openai-stream":
        # No stream_options: spanmeter adds include_usage and hides the extra chunk from the app.
        for _ in oai.chat.completions.create(model=MODELS["openai"], messages=PROMPT, stream=True, extra_body=fake):
            pass
        return MODELS["openai"]
    if kind == "embeddings":
        oai.embeddings.create(model=MODELS["embeddings"], input=["invoice question", "refund policy"], extra_body={"fake": {"input": usage["input"]}})
        return MODELS["embeddings"]
    anthropic_usage = {**usage, "cache_write": 64 if usage["cached"] == 0 else 0}
    if kind == "anthropic":
        claude.messages.create(model=MODELS["anthropic"], max_tokens=1024, messages=PROMPT, extra_body={"fake": anthropic_usage})
    else:
        with claude.messages.stream(model=MODELS["anthropic"], max_tokens=1024, messages=PROMPT, extra_body={"fake": anthropic_usage}) as stream:
            stream.get_final_message()
    return MODELS["anthropic"]
