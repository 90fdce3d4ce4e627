"""Backpressure: 503 + Retry-After when ClickHouse cannot take the rows, 429 + Retry-After when the
batch queue is full, bounded memory, and recovery without loss or double counting.

- A real `spanmeter serve` whose ClickHouse runs out of disk (the embedded store on a small tmpfs,
  filled with a ballast file: inserts fail with NOT_ENOUGH_SPACE, as on a server whose disk
  fills up). Exports get 503 + Retry-After; once the ballast is gone the exporters' retries are
  stored, once. Needs root for the mount: skipped otherwise.
- In-process: the store failing then succeeding (503, then the retry lands once); a writer held
  on a slow insert while requests pile up (429 once the queue is full, the queue never past its
  bound, everything stored once after retries).
- A real service flooded by concurrent exporters with a small queue: 429s, no 5xx, every span
  stored exactly once after retries, and its peak memory stays bounded.
- A ClickHouse server DSN on a closed port: `spanmeter serve` starts anyway and answers 503 +
  Retry-After (exporters retry), saying where it could not connect (without the password).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from spanmeter.ingest.errors import StoreUnavailable
from tests.support.otlp import chat, to_protobuf
from tests.support.service import SPANMETER, free_port, running_service
from tests.support.storecheck import double_counted, totals

PB = {"Content-Type": "application/x-protobuf"}


def export(trace: int, n: int = 1) -> bytes:
    now = time.time_ns()
    return to_protobuf([chat(trace, s, model="gpt-4o-mini", input=100, output=10, user=f"bp-{trace % 3}", start_ns=now)
                        for s in range(1, n + 1)])


# --- ClickHouse out of disk, real service ------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "spanmeter-service" / "chdb"  # the store only: the service log stays writable
    mount.mkdir(parents=True)
    if os.geteuid() != 0 or subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(mount)], capture_output=True
    ).returncode != 0:
        pytest.skip("mounting a tmpfs needs root: cannot make the store's disk fill up")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(path) -> object:
    ballast = path / "ballast"
    subprocess.run(["fallocate", "-l", "1g", str(ballast)], capture_output=True)
    with ballast.open("ab") as f:
        try:
            while shutil.disk_usage(path).free > 0:
                f.write(b"\0" * (1 << 20))
        except OSError:
            pass
    return ballast


def test_clickhouse_out_of_disk_gives_503_then_recovers_without_loss(small_disk):
    with running_service(small_disk.parent.parent, env={"SPANMETER_RETRY_AFTER_SECONDS": "2"}) as svc:
        before = [export(t) for t in range(1, 4)]
        for body in before:
            assert svc.post_traces(body).status_code == 200
        ballast = fill(small_disk)
        during = [export(t, 3) for t in range(10, 14)]
        refused = [svc.post_traces(body) for body in during]
        assert [r.status_code for r in refused] == [503] * len(during)
        assert all(r.headers["retry-after"] == "2" for r in refused)
        assert httpx.get(svc.url + "/healthz").status_code == 200  # alive, just not storing
        metrics = httpx.get(svc.url + "/metrics").text
        assert 'spanmeter_export_requests_total{status="503"} 4.0' in metrics
        ballast.unlink()
        # The exporters retry everything they were refused, and some of what was stored (a lost ack).
        for body in during + before[:1]:
            assert svc.post_traces(body).status_code == 200
        t = totals(svc.sql, "spanmeter")
        doubles = double_counted(svc.sql, "spanmeter")
    assert t["events"][:3] == (3 + 12, 100 * 15, 10 * 15)
    assert t["events"] == t["usage_daily"] == t["usage_hourly"]
    assert doubles == 0


# --- in-process: store failing, queue full ---------------------------------------------------


def test_store_failing_gives_503_with_retry_after_and_the_retry_lands_once(client, store, settings, monkeypatch):
    original = store.insert_usage_arrow

    def down(table, token=None, **kw):
        raise StoreUnavailable("ClickHouse is down")

    monkeypatch.setattr(store, "insert_usage_arrow", down)
    body = export(1, 2)
    refused = client.post("/v1/traces", content=body, headers=PB)
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == str(settings.retry_after_seconds)
    monkeypatch.setattr(store, "insert_usage_arrow", original)
    assert client.post("/v1/traces", content=body, headers=PB).status_code == 200
    assert client.post("/v1/traces", content=body, headers=PB).status_code == 200  # a replay
    rows = lambda q: store.query(q).rows  # noqa: E731
    assert totals(rows, store.database)["events"][:2] == (2, 200)


@pytest.fixture
def small_queue_client(chdb_path, database, store):
    from fastapi.testclient import TestClient

    from spanmeter.ingest.app import create_app
    from spanmeter.ingest.config import Settings

    settings = Settings(clickhouse_dsn=f"chdb://{chdb_path}", database=database, batch_max_wait_ms=5,
                        queue_max_rows=6, retry_after_seconds=3)
    with TestClient(create_app(settings, store=store)) as c:
        yield c


def test_full_queue_gives_429_with_retry_after_and_stays_bounded(small_queue_client, store, monkeypatch):
    client = small_queue_client
    writer = client.app.state.writer
    release, inserting = threading.Event(), threading.Event()
    original = store.insert_usage_arrow
    peak = [0]

    def held(table, token=None, **kw):
        inserting.set()
        release.wait(30)
        return original(table, token, **kw)

    monkeypatch.setattr(store, "insert_usage_arrow", held)
    bodies = [export(100 + i, 3) for i in range(12)]
    with ThreadPoolExecutor(12) as pool:
        first = pool.submit(client.post, "/v1/traces", content=bodies[0], headers=PB)
        assert inserting.wait(10)  # the first batch is taken and held in its insert
        rest = [pool.submit(client.post, "/v1/traces", content=b, headers=PB) for b in bodies[1:]]
        deadline = time.monotonic() + 10
        while sum(f.done() for f in rest) < len(rest) - 2 and time.monotonic() < deadline:
            peak[0] = max(peak[0], writer.queued_rows)
            time.sleep(0.01)
        peak[0] = max(peak[0], writer.queued_rows)
        release.set()
        statuses = [first.result().status_code] + [f.result().status_code for f in rest]
    refused = [i for i, r in enumerate(rest, 1) if r.result().status_code == 429]
    assert statuses.count(429) == 9 and statuses.count(200) == 3, statuses  # 3 rows held, 6 queued
    assert all(rest[i - 1].result().headers["retry-after"] == "3" for i in refused)
    assert peak[0] <= 6  # the queue never grew past its bound
    # The exporters retry after Retry-After: everything lands, once.
    for i in refused:
        assert client.post("/v1/traces", content=bodies[i], headers=PB).status_code == 200
    for body in bodies:
        assert client.post("/v1/traces", content=body, headers=PB).status_code == 200  # replays
    rows = lambda q: store.query(q).rows  # noqa: E731
    assert totals(rows, store.database)["events"][:2] == (36, 3600)
    assert double_counted(rows, store.database) == 0


# --- a flood against a real service ----------------------------------------------------------


def _hwm_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_flood_gets_429s_no_5xx_bounded_memory_and_everything_once(tmp_path):
    env = {"SPANMETER_QUEUE_MAX_ROWS": "400", "SPANMETER_BATCH_MAX_ROWS": "200"}
    with running_service(tmp_path, env=env) as svc:
        warm = svc.post_traces(export(1, 50))
        assert warm.status_code == 200
        baseline = _hwm_mib(svc.proc.pid)
        bodies = [export(1000 + i, 100) for i in range(120)]  # 12,000 calls
        statuses: list[int] = []
        lock = threading.Lock()

        def send(body: bytes) -> None:
            with httpx.Client(timeout=60) as http:
                for _ in range(200):  # bounded: an exporter's retries
                    r = http.post(svc.url + "/v1/traces", content=body, headers=PB)
                    with lock:
                        statuses.append(r.status_code)
                    if r.status_code == 200:
                        return
                    assert r.status_code == 429 and r.headers["retry-after"]
                    time.sleep(0.05)  # much shorter than Retry-After, to keep the pressure on
                raise AssertionError("never accepted")

        with ThreadPoolExecutor(24) as pool:
            list(pool.map(send, bodies))
        peak = _hwm_mib(svc.proc.pid)
        t = totals(svc.sql, "spanmeter")
        doubles = double_counted(svc.sql, "spanmeter")
    assert 429 in statuses and not [s for s in statuses if s >= 500]
    assert t["events"][:2] == (50 + 12_000, 100 * 12_050)
    assert t["events"] == t["usage_daily"]
    assert doubles == 0
    assert peak - baseline < 400, f"peak memory grew by {peak - baseline:.0f} MiB under the flood"


# --- a ClickHouse server that is not there ---------------------------------------------------


def test_server_dsn_on_a_closed_port_answers_503_without_leaking_the_password(tmp_path):
    port, own = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPANMETER_")}
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(SPANMETER), "serve", "--port", str(own), "--dsn", f"http://default:hunter2secret@127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
        )
    url = f"http://127.0.0.1:{own}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert httpx.get(url + "/readyz", timeout=5).status_code == 503
        r = httpx.post(url + "/v1/traces", content=export(1), headers=PB, timeout=10)
        assert r.status_code == 503 and r.headers["retry-after"] == "5"
    finally:
        proc.terminate()
        proc.wait(30)
    output = log.read_text()
    assert f"127.0.0.1:{port}" in output
    assert "hunter2secret" not in output
