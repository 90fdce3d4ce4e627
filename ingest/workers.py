"""The CPU-bound stages of an export (decode, normalize, pseudonymize) in worker processes.

    pool = Preparer(settings)                  # SPANMETER_INGEST_WORKERS processes (0: in-process)
    prepared = await pool.prepare(body, kind, content_encoding)
    prepared.records, prepared.links, prepared.spans, prepared.rejected, prepared.messages
    pool.close()

Why processes: decoding and normalizing cost ~25 µs of Python per span, and the embedded store
lets only one process open its data, so everything else (HTTP, pricing, the writer, the engine's
insert) shares one interpreter. Only the writer needs the store: these stages run in processes of
their own and use the other cores. A worker returns each record as one flat tuple of plain values
(~1 µs per record to pack and pickle, ~2 µs to unpickle and rebuild, against ~10 for pickling the
dataclasses themselves); pricing stays in the serving process, so a price reload applies at once.

Errors keep their meaning across the process boundary: a `DecodeError` raised in a worker is a
400 here too. A worker that dies (killed, out of memory) fails the exports it held with
`StoreUnavailable` (503: the exporter retries) and the pool is started again.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import threading
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pydantic import SecretStr

from . import decode as decode_stage
from .config import Settings
from .errors import Overloaded, PayloadTooLarge, StoreUnavailable
from .normalize import Link, normalize
from .privacy import pseudonymize
from .records import Attribution, TokenUsage, UsageRecord


@dataclass(frozen=True, slots=True)
class Limits:
    """The settings the stages read, sent with every export (a few dozen bytes)."""

    max_decompressed_bytes: int
    max_spans_per_request: int
    max_attribute_length: int
    user_id_key: SecretStr | None

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(settings.max_decompressed_bytes, settings.max_spans_per_request, settings.max_attribute_length,
                   settings.user_id_key)


@dataclass(slots=True)
class Prepared:
    """An export decoded and normalized: usage records (not priced yet) and links."""

    spans: int = 0
    records: list[UsageRecord] = field(default_factory=list)
    links: list[tuple[bytes, bytes]] = field(default_factory=list)
    rejected: int = 0
    messages: list[str] = field(default_factory=list)


def prepare(body: bytes, kind: str, content_encoding: str | None, limits: Limits) -> Prepared:
    """decode -> span limit -> normalize -> pseudonymize, in the calling process."""
    spans = decode_stage.decode(body, kind, content_encoding, max_decompressed_bytes=limits.max_decompressed_bytes)
    if len(spans) > limits.max_spans_per_request:
        raise PayloadTooLarge(f"{len(spans)} spans in one request, limit {limits.max_spans_per_request}")
    result = normalize(spans, max_attribute_length=limits.max_attribute_length)
    if limits.user_id_key is not None:
        pseudonymize(result, limits.user_id_key)
    return Prepared(len(spans), result.records, result.links, result.rejected, result.messages)


def prepare_packed(body: bytes, kind: str, content_encoding: str | None, limits: Limits) -> tuple:
    """`prepare` in a worker process: the result as tuples of plain values, cheap to pickle."""
    p = prepare(body, kind, content_encoding, limits)
    return p.spans, [_pack(r) for r in p.records], [_pack_link(k) for k in p.links], p.rejected, p.messages


def unpack(packed: tuple) -> Prepared:
    spans, records, links, rejected, messages = packed
    return Prepared(spans, [_unpack(t) for t in records], [_unpack_link(t) for t in links], rejected, messages)


def _pack(r: UsageRecord) -> tuple:
    u, a = r.usage, r.attribution
    return (r.trace_id, r.span_id, r.event_time_ns, r.service_name, r.provider, r.operation, r.request_model,
            r.response_model, u.input, u.cache_read, u.cache_write, u.output, u.reasoning, a.user_id, a.session_id,
            a.conversation_id, a.feature, a.team, a.agent, r.source, r.usage_status, r.streaming, r.duration_ms,
            r.response_id, r.reported_cost_usd, r.parent_span_id)


def _unpack(t: tuple) -> UsageRecord:
    # Positional, in the dataclasses' field order (tests/unit/test_worker_handoff.py checks the round trip).
    return UsageRecord(t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], TokenUsage(t[8], t[9], t[10], t[11], t[12]),
                       Attribution(t[13], t[14], t[15], t[16], t[17], t[18]), t[19], t[20], t[21], t[22], t[23],
                       t[24], None, "", "", 1, t[25])


def _pack_link(link: tuple[bytes, bytes]) -> tuple:
    a = getattr(link, "attribution", None)
    lent = (a.user_id, a.session_id, a.conversation_id, a.feature, a.team, a.agent) if a is not None else None
    return link[0], link[1], lent


def _unpack_link(t: tuple) -> Link:
    return Link(t[0], t[1], Attribution(*t[2]) if t[2] is not None else None)


def worker_count(settings: Settings) -> int:
    """SPANMETER_INGEST_WORKERS, or by default one process per core beyond the first (at most 4)."""
    if settings.ingest_workers is not None:
        return settings.ingest_workers
    return min(max((os.cpu_count() or 1) - 1, 0), 4)


class Preparer:
    """Runs `prepare` in a pool of worker processes (or one thread of this process when there
    are none), and watches what waits for it: past `max_pending_decode_bytes` of bodies, or once
    the oldest has waited `queue_max_delay_ms`, an export is refused before it is even read
    (429), so an overloaded service answers at once instead of queueing without bound."""

    def __init__(self, settings: Settings) -> None:
        self.limits = Limits.of(settings)
        self.workers = worker_count(settings)
        self.max_pending_bytes = settings.max_pending_decode_bytes
        self.max_delay = settings.queue_max_delay_ms / 1000
        self.pending_bytes = 0
        self._started: dict[object, float] = {}  # exports in preparation -> when they arrived, oldest first
        self._pool: Executor | None = None

    def _executor(self) -> Executor:
        if self._pool is None:
            if self.workers:
                # spawn, not fork: the serving process runs chDB's threads, which a fork would
                # copy mid-flight.
                self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_init_worker, initargs=(os.getpid(),))
            else:
                # One thread: the event loop stays free to answer (429s, health checks) meanwhile.
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="spanmeter-prepare")
        return self._pool

    def start(self) -> None:
        """Start the workers now rather than on the first export (each takes ~1 s to import)."""
        pool = self._executor()
        for future in [pool.submit(_warm) for _ in range(self.workers)]:
            future.result()

    def admit(self, declared_bytes: int) -> None:
        """Refuse (429) an export that would queue past the limit; one is always admitted when
        nothing waits, whatever its size (the body limits bound it)."""
        if self.pending_bytes and self.pending_bytes + declared_bytes > self.max_pending_bytes:
            raise Overloaded(f"{self.pending_bytes} bytes of exports already waiting to be decoded")
        if self._started:
            waited = time.monotonic() - next(iter(self._started.values()))
            if waited > self.max_delay:
                raise Overloaded(f"the oldest export waiting to be decoded has waited {waited * 1000:.0f} ms")

    async def prepare(self, body: bytes, kind: str, content_encoding: str | None) -> Prepared:
        pool = self._executor()
        self.pending_bytes += len(body)
        token = object()
        self._started[token] = time.monotonic()
        try:
            if not self.workers:
                return await asyncio.wrap_future(pool.submit(prepare, body, kind, content_encoding, self.limits))
            packed = await asyncio.wrap_future(pool.submit(prepare_packed, body, kind, content_encoding, self.limits))
        except BrokenProcessPool as exc:
            if self._pool is pool:
                self._pool = None  # the next export starts a fresh pool
                pool.shutdown(wait=False, cancel_futures=True)
            raise StoreUnavailable("an ingest worker process died; retry") from exc
        finally:
            self.pending_bytes -= len(body)
            del self._started[token]
        return unpack(packed)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def tune_gc(threshold: int = 100_000) -> None:
    """The garbage collector of an ingest process (a decode worker, the serving process).

    Python traces its young objects every 700 container allocations by default. The ingest keeps
    ~15,000 of them alive per export of 1000 spans (spans, attribute dicts, records) until it is
    packed, priced, selected and stored, so at 700 they were traced over and over and moved up the
    generations: ~4 of ~23 µs per span in a worker, ~3 of ~11 in the serving process's event loop
    and hand-off (bench/ingest_threads.py). They die by reference count, not by the collector;
    cyclic garbage (an exception's traceback, asyncio's) still is collected, once `threshold`
    more container objects are alive than at the last collection: memory stays bounded.
    What exists now (imported modules, settings) lives as long as the process: frozen, it is
    never traced again."""
    gc.freeze()
    gc.set_threshold(threshold, *gc.get_threshold()[1:])


def _init_worker(parent: int) -> None:
    tune_gc()
    _exit_with_parent(parent)


def _exit_with_parent(parent: int) -> None:
    """A worker outlives a SIGKILLed service otherwise (it waits on its queue forever)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="spanmeter-parent-watch", daemon=True).start()


def _warm() -> int:
    return os.getpid()
