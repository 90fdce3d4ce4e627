"""Run the real `spanmeter serve` in a subprocess for integration tests.

    with running_service(tmp_path) as svc:
        svc.post_traces(body, "application/x-protobuf")
        rows = svc.sql("SELECT count() FROM spanmeter.usage_events")

The service gets its own embedded store under `tmp_path` (chDB allows one process per path),
a free port on 127.0.0.1, and is killed at the end. `svc.kill()` / `svc.start()` let a test
SIGKILL and restart it on the same port and store.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import httpx

REPO = Path(__file__).resolve().parents[2]
SPANMETER = Path(sys.executable).parent / "spanmeter"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    def __init__(self, data_dir: Path, port: int, env: dict[str, str], log_level: str = "warning") -> None:
        self.data_dir = data_dir
        self.log_level = log_level
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.log_path = data_dir / "service.log"

    def start(self, timeout: float = 60.0) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(SPANMETER), "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--dsn", f"chdb://{self.data_dir / 'chdb'}", "--log-level", self.log_level],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=str(self.data_dir),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"spanmeter serve exited {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"spanmeter serve not ready in {timeout}s:\n{self.log()}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def headers(self, token_env: str) -> dict[str, str]:
        token = self.env.get(token_env)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def post_traces(self, body: bytes, content_type: str = "application/x-protobuf", **headers: str) -> httpx.Response:
        h = {"Content-Type": content_type, **self.headers("SPANMETER_INGEST_TOKEN"), **headers}
        return httpx.post(self.url + "/v1/traces", content=body, headers=h, timeout=60)

    def wait_for_rollups(self, timeout: float = 15.0) -> None:
        """Until every committed row is in the rollups too (they trail by up to
        SPANMETER_ROLLUP_DELAY_MS): then tests read them as a dashboard would a moment later. On
        timeout, carry on: the test's own assertions say what is missing."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                metrics = httpx.get(self.url + "/metrics", timeout=5).text
            except httpx.HTTPError:
                return
            if "\nspanmeter_rollup_owed_rows 0.0" in metrics:
                return
            time.sleep(0.05)

    def sql(self, query: str) -> list[list[Any]]:
        """Read-your-writes: answered once the rollups hold every row committed so far."""
        self.wait_for_rollups()
        r = httpx.post(self.url + "/v1/sql", json={"query": query}, headers=self.headers("SPANMETER_ADMIN_TOKEN"), timeout=60)
        r.raise_for_status()
        return r.json()["rows"]


@contextmanager
def running_service(
    tmp_path: Path, env: dict[str, str] | None = None, port: int | None = None, log_level: str = "warning"
) -> Iterator[Service]:
    data_dir = Path(tmp_path) / "spanmeter-service"
    data_dir.mkdir(parents=True, exist_ok=True)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SPANMETER_")}
    full_env.update(env or {})
    svc = Service(data_dir, port or free_port(), full_env, log_level)
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()
