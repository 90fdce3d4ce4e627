"""Decode and normalize in worker processes (SPANMETER_INGEST_WORKERS): a worker that dies fails
only the exports it held, with a retryable 503, and the pool comes back; exports waiting for a
busy worker past SPANMETER_MAX_PENDING_DECODE_BYTES get 429 + Retry-After before being read.
Both end with every call stored once after the exporters' retries."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from spanmeter.ingest.app import create_app
from tests.support.otlp import chat, to_protobuf
from tests.support.storecheck import double_counted, totals

PB = {"Content-Type": "application/x-protobuf"}


def export(trace: int, n: int) -> bytes:
    now = time.time_ns()
    return to_protobuf([chat(trace, s, model="gpt-4o-mini", input=100, output=10, user=f"w-{trace}", start_ns=now)
                        for s in range(1, n + 1)])


@pytest.fixture
def worker_client(settings, store):
    with TestClient(create_app(settings.model_copy(update={"ingest_workers": 1, "retry_after_seconds": 2,
                                                           "max_pending_decode_bytes": 1}), store=store)) as c:
        yield c


@pytest.fixture
def delay_client(settings, store):
    with TestClient(create_app(settings.model_copy(update={"ingest_workers": 1, "retry_after_seconds": 2,
                                                           "queue_max_delay_ms": 300}), store=store)) as c:
        yield c


def _worker_pids(client) -> list[int]:
    pool = client.app.state.preparer._pool
    return [p.pid for p in pool._processes.values()]


def test_a_killed_worker_gives_503_then_the_pool_comes_back(worker_client, store):
    client = worker_client
    assert client.post("/v1/traces", content=export(1, 4), headers=PB).status_code == 200
    [pid] = _worker_pids(client)
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    body = export(2, 5)
    refused = client.post("/v1/traces", content=body, headers=PB)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "2"
    # The exporter retries: a fresh worker decodes it.
    assert client.post("/v1/traces", content=body, headers=PB).status_code == 200
    assert _worker_pids(client) != [pid]
    assert client.post("/v1/traces", content=body, headers=PB).status_code == 200  # a replay
    rows = lambda q: store.query(q).rows  # noqa: E731
    assert totals(rows, store.database)["events"][:3] == (9, 900, 90)
    assert double_counted(rows, store.database) == 0


def test_exports_waiting_for_a_busy_worker_get_429_before_being_read(worker_client, store):
    client = worker_client
    assert client.post("/v1/traces", content=export(10, 1), headers=PB).status_code == 200
    [pid] = _worker_pids(client)
    first, second = export(11, 3), export(12, 2)
    os.kill(pid, signal.SIGSTOP)  # the worker is busy: the first export waits for it
    try:
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(client.post, "/v1/traces", content=first, headers=PB)
            deadline = time.monotonic() + 10
            while client.app.state.preparer.pending_bytes == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert client.app.state.preparer.pending_bytes == len(first)
            refused = client.post("/v1/traces", content=second, headers=PB)
            assert refused.status_code == 429 and refused.headers["retry-after"] == "2"
            assert not waiting.done()
            os.kill(pid, signal.SIGCONT)
            assert waiting.result(30).status_code == 200
    finally:
        os.kill(pid, signal.SIGCONT)
    assert client.app.state.preparer.pending_bytes == 0
    assert client.post("/v1/traces", content=second, headers=PB).status_code == 200  # the retry
    rows = lambda q: store.query(q).rows  # noqa: E731
    assert totals(rows, store.database)["events"][:3] == (6, 600, 60)
    assert double_counted(rows, store.database) == 0


def test_an_export_waiting_past_the_delay_budget_gets_429_for_the_next(delay_client, store):
    client = delay_client
    assert client.post("/v1/traces", content=export(20, 1), headers=PB).status_code == 200
    [pid] = _worker_pids(client)
    first, second = export(21, 3), export(22, 2)
    os.kill(pid, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(client.post, "/v1/traces", content=first, headers=PB)
            deadline = time.monotonic() + 10
            while client.app.state.preparer.pending_bytes == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            # Well under the byte budget (16 MiB), but queued behind an export 300 ms old.
            accepted_while_fresh = client.app.state.preparer.pending_bytes
            time.sleep(0.5)
            refused = client.post("/v1/traces", content=second, headers=PB)
            assert refused.status_code == 429 and refused.headers["retry-after"] == "2"
            assert b"waited" in refused.content
            os.kill(pid, signal.SIGCONT)
            assert waiting.result(30).status_code == 200
    finally:
        os.kill(pid, signal.SIGCONT)
    assert accepted_while_fresh == len(first)
    assert client.post("/v1/traces", content=second, headers=PB).status_code == 200
    rows = lambda q: store.query(q).rows  # noqa: E731
    assert totals(rows, store.database)["events"][:3] == (6, 600, 60)
    assert double_counted(rows, store.database) == 0


def test_a_worker_collects_its_young_objects_rarely(settings):
    """Each export keeps ~15,000 container objects alive until it is packed: the worker's
    collector waits for 100,000 of them (workers.tune_gc) instead of tracing them every 700."""
    import gc

    from spanmeter.ingest.workers import Preparer

    preparer = Preparer(settings.model_copy(update={"ingest_workers": 1}))
    try:
        preparer.start()
        threshold = preparer._executor().submit(gc.get_threshold).result(timeout=60)
    finally:
        preparer.close()
    assert threshold[0] == 100_000
