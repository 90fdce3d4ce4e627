"""Instructions of spanmeter's own per-call and per-chunk path, isolated, under valgrind.

    .venv/bin/python bench/instrumentation_path.py        # ~2 minutes on 2 cores

`bench/instrumentation_overhead.py` measures whole applications (the openai SDK included), whose
instruction counts swing by a few percent between runs: more than a change to spanmeter's own
code moves them. This script runs only the instrumentation's code, on a request, a response and
the chunks of a stream recorded from the fake provider, so that a before/after comparison of a
change to `instrumentation/` is exact to a few hundred instructions:

- `call`: one non-streamed chat completion through spanmeter's hook (`Hooks.begin` of a call
  whose body httpx reads, `Call.on_response`), then its record (`_recorder.drain()`: the request
  and response bodies parsed, the span started with the call's times and ended), with a
  recording SDK tracer: all of spanmeter's work for a call, wherever it runs;
- `call-on-path`: the part of `call` done inside the call (its record is left pending: it runs
  while the next call waits for its provider, see instrumentation/_recorder.py);
- `call-eager`: `call` as it was before session 4 (`Hooks.begin` with no body read: the span
  started, made current and restored during the request, then parsed and ended in
  `on_response`; still the path of streams and of calls with hooks);
- `call-unsampled`: the same with an ALWAYS_OFF sampler (spanmeter's work, no span recorded);
- `call-bare-span`: what any one-span-per-call instrumentation pays the OpenTelemetry SDK: a span
  started with 5 attributes, made current and restored, 6 more attributes, ended;
- `chunk-plain` / `chunk-strip`: a 201-content-chunk chat stream (205 chunks) read through the
  stream proxy, as the app reads it when it asked for include_usage itself / when spanmeter
  injected it and hides the usage chunk; per chunk, with the per-stream work (the span's start
  and end, the usage parse) spread over the 205 chunks;
- `chunk-none`: the same chunks read with no proxy (the floor of iterating).

Each variant runs twice under `valgrind --tool=cachegrind --cache-sim=no`, with N1 and N2
repetitions after the same warm-up and the cyclic GC off; (I(N2) - I(N1)) / (N2 - N1) is the count
per repetition. Spans go to a BatchSpanProcessor that never exports during the run.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VARIANTS = ("call", "call-on-path", "call-eager", "call-unsampled", "call-bare-span", "chunk-plain", "chunk-strip", "chunk-none")
REPS = {"call": (100, 1100), "chunk": (10, 30)}
CHUNKS = 201


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs=2, metavar=("VARIANT", "REPS"))
    parser.add_argument("--json", type=Path, default=HERE / "results" / "instrumentation_path.json")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=VARIANTS, help="count only these (quicker while iterating)")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]))
        return
    started, load = time.time(), os.getloadavg()
    env = {**os.environ, "PYTHONHASHSEED": "0"}

    def refs(variant: str, reps: int) -> int:
        out = subprocess.run(
            ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
             sys.executable, str(Path(__file__).resolve()), "--worker", variant, str(reps)],
            capture_output=True, text=True, env=env, timeout=1800,
        )
        match = re.search(r"I\s+refs:\s+([\d,]+)", out.stderr)
        if out.returncode != 0 or not match:
            raise RuntimeError(f"valgrind {variant} failed:\n{out.stderr[-2000:]}")
        return int(match.group(1).replace(",", ""))

    variants = [v for v in VARIANTS if v in args.variants]
    jobs = [(v, n) for v in variants for n in REPS[v.split("-")[0]]]
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        counts = dict(zip(jobs, pool.map(lambda job: refs(*job), jobs)))
    per = {}
    for v in variants:
        n1, n2 = REPS[v.split("-")[0]]
        per[v] = (counts[(v, n2)] - counts[(v, n1)]) / (n2 - n1)
        if v.startswith("chunk"):
            per[v] /= CHUNKS + 4  # per chunk: 201 content chunks, role, finish, usage, [DONE]
    lines = [
        f"python {platform.python_version()}, valgrind (cachegrind); load average {load[0]:.1f} "
        f"(instruction counts do not depend on it), {time.time() - started:.0f} s",
        "",
        "| variant | instructions |",
        "|---|---:|",
        *(f"| {v} {'per call' if v.startswith('call') else 'per chunk'} | {per[v]:,.0f} |" for v in variants),
        "",
    ]
    if "call" in per and "call-bare-span" in per:
        lines.append(
            f"spanmeter's own work per call on top of the SDK's span: {per['call'] - per['call-bare-span']:+,.0f} "
            f"({(per['call'] - per['call-bare-span']) / per['call']:.0%} of the call path)"
        )
    if {"chunk-plain", "chunk-strip", "chunk-none"} <= per.keys():
        lines.append(
            f"per chunk over the bare iteration: plain {per['chunk-plain'] - per['chunk-none']:+,.0f}, "
            f"strip {per['chunk-strip'] - per['chunk-none']:+,.0f}"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(per, indent=2))
    print("\n".join(lines))


def worker(variant: str, reps: int) -> None:
    sys.path.insert(0, str(REPO))
    import httpx2
    from opentelemetry import context, trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
    from opentelemetry.trace import SpanKind

    from spanmeter import _providers as P
    from spanmeter import _recorder
    from spanmeter._call import Call
    from spanmeter._httpx import Hooks
    from spanmeter._stream import stream_classes
    from spanmeter.ingest.fakeprovider import FakeProvider

    class Drop(SpanExporter):
        def export(self, spans):  # type: ignore[no-untyped-def]
            return SpanExportResult.SUCCESS

    provider = TracerProvider(sampler=ALWAYS_OFF) if variant == "call-unsampled" else TracerProvider()
    # Never exports during the run: the export thread's work is not the call's.
    provider.add_span_processor(BatchSpanProcessor(Drop(), max_queue_size=1 << 20, max_export_batch_size=1 << 20, schedule_delay_millis=1e9))
    fake = FakeProvider(record=False)
    client = httpx2.Client(transport=fake.transport(httpx2, cache=True))
    messages = [{"role": "user", "content": "Summarise the quarterly report in three bullet points."}]

    if variant.startswith("call"):
        body = json.dumps({"messages": messages, "model": "gpt-4o-mini"}).encode()
        request = client.build_request("POST", "http://fake.invalid/v1/chat/completions", content=body, headers={"content-type": "application/json"})
        response = client.send(request)
        response.read()
        if variant == "call-bare-span":
            tracer = provider.get_tracer("bench")
            start = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "server.address": "fake.invalid",
                     "spanmeter.streaming": False, "gen_ai.request.model": "gpt-4o-mini"}
            end = {"gen_ai.response.id": "chatcmpl-1", "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
                   "gen_ai.response.finish_reasons": ("stop",), "gen_ai.usage.input_tokens": 12,
                   "gen_ai.usage.output_tokens": 5, "spanmeter.usage_status": "reported"}

            def one() -> None:
                span = tracer.start_span("chat gpt-4o-mini", kind=SpanKind.CLIENT, attributes=start)
                context.detach(context.attach(trace.set_span_in_context(span)))
                span.set_attributes(end)
                span.end()

        else:
            hooks = Hooks(provider.get_tracer("spanmeter"), True, 1 << 20)
            on_path = variant == "call-on-path"
            reads_body = variant != "call-eager"
            if on_path:
                _recorder.MAX_PENDING = 1 << 30  # records pile up, never run in the window
                _recorder.IDLE_SECONDS = 1e9

            def one() -> None:
                call = hooks.begin(request, reads_body)
                call.detach(call.attach())  # type: ignore[union-attr]
                call.on_response(response, True)  # type: ignore[union-attr]
                if not on_path:
                    _recorder.drain()

    else:
        body = {"model": "gpt-4o-mini", "messages": messages, "stream": True, "fake": {"chunks": CHUNKS},
                "stream_options": {"include_usage": True}}
        chunks = list(fake.handle("POST", "/v1/chat/completions", json.dumps(body).encode()).chunks)
        assert len(chunks) == CHUNKS + 4, len(chunks)
        headers = httpx2.Response(200, headers={"content-type": "text/event-stream"})
        proxy = stream_classes(httpx2)[0]
        tracer = provider.get_tracer("spanmeter")
        strip = variant == "chunk-strip"

        if variant == "chunk-none":

            def one() -> None:
                for _ in iter(chunks):
                    pass

        else:

            def one() -> None:
                call = Call(tracer.start_span("chat gpt-4o-mini"), P.CHAT_COMPLETIONS, None, strip)
                call.on_response(headers, False)
                for _ in proxy(iter(chunks), call):
                    pass

    for _ in range(20):
        one()
    gc.collect()
    gc.disable()
    for _ in range(reps):
        one()
    if variant == "call-on-path":
        from spanmeter import _recorder

        _recorder.pending.clear()  # not recorded at exit either: only the on-path work is counted


if __name__ == "__main__":
    main()
