"""`spanmeter serve` with its ClickHouse server down at start: the service comes up anyway and
answers 503 + Retry-After (which OTLP exporters retry) on /v1/traces and the usage API, /readyz
says not ready, and it keeps trying in the background; once ClickHouse answers, everything works.
No ClickHouse server runs here: "down" is a closed port on 127.0.0.1, "up" is the embedded engine
the test switches the settings to while the service is already retrying.
"""

from __future__ import annotations

import socket
import time

import pytest
from fastapi.testclient import TestClient
from google.rpc import status_pb2
from pydantic import SecretStr

from tests.support.otlp import chat, to_json, to_protobuf

ADMIN = "admin-for-unreachable-tests"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def down(settings, tmp_path):
    from spanmeter.ingest.app import create_app

    dsn = f"http://default:secret@127.0.0.1:{closed_port()}"
    unreachable = settings.model_copy(update={
        "clickhouse_dsn": dsn, "retry_after_seconds": 1, "admin_token": SecretStr(ADMIN),
        "state_dir": tmp_path / "state", "ingest_workers": 0})
    app = create_app(unreachable)
    with TestClient(app) as client:
        yield app, client


def test_answers_503_with_retry_after_until_the_store_is_reachable(down):
    app, client = down
    assert app.state.store_ready is False
    assert client.get("/healthz").status_code == 200
    r = client.get("/readyz")
    assert (r.status_code, r.json()) == (503, {"status": "store unavailable"})

    r = client.post("/v1/traces", content=to_protobuf([chat(1, 1, model="gpt-4o-mini", input=10, output=1, user="alice")]),
                    headers={"Content-Type": "application/x-protobuf"})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    status = status_pb2.Status.FromString(r.content)  # OTLP/HTTP: a Status in the request's encoding
    assert status.code == 503 and "not reachable" in status.message

    r = client.post("/v1/traces", content=to_json([chat(2, 1, model="gpt-4o-mini", input=10, output=1, user="alice")]),
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 503 and r.headers["retry-after"] == "1" and r.json()["code"] == 503

    auth = {"Authorization": f"Bearer {ADMIN}"}
    for method, path in [("GET", "/v1/users/alice/usage"), ("POST", "/v1/users/alice/check"),
                         ("PUT", "/v1/users/alice/tier"), ("POST", "/v1/sql")]:
        r = client.request(method, path, headers=auth, json={})
        assert (r.status_code, r.headers["retry-after"], r.json()["code"]) == (503, "1", 503), path
    assert 'spanmeter_export_requests_total{status="503"} 2.0' in client.get("/metrics").text


def test_opens_the_store_once_it_answers(down, chdb_path, database):
    app, client = down
    time.sleep(1.5)  # at least one more failed attempt
    assert client.get("/readyz").status_code == 503
    # "ClickHouse comes up": the next attempt reaches a store (the embedded engine here).
    app.state.settings.clickhouse_dsn = f"chdb://{chdb_path}"
    app.state.settings.database = database
    deadline = time.monotonic() + 30
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the store never opened"
        time.sleep(0.2)
    r = client.post("/v1/traces", content=to_protobuf([chat(3, 1, model="gpt-4o-mini", user="bob", input=1000, output=10,
                                                           start_ns=time.time_ns())]),
                    headers={"Content-Type": "application/x-protobuf"})
    assert r.status_code == 200, r.text
    rows = app.state.store.query(f"SELECT user_id, input_tokens FROM {database}.usage_events").rows
    assert rows == [("bob", 1000)]
    r = client.get("/v1/users/bob/usage", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200 and {w["window"]: w["calls"] for w in r.json()["windows"]}["day"] == 1
    app.state.store.command(f"DROP DATABASE IF EXISTS {database} SYNC")


def test_an_embedded_store_opens_at_start(settings, tmp_path):
    """The embedded engine is opened at start, as before (here the tests' shared data path)."""
    from spanmeter.ingest.app import create_app

    app = create_app(settings.model_copy(update={"ingest_workers": 0, "state_dir": tmp_path / "state"}))
    with TestClient(app) as client:
        assert app.state.store_ready is True
        assert client.get("/readyz").json() == {"status": "ready"}
        r = client.post("/v1/traces", content=to_protobuf([chat(4, 1, model="gpt-4o-mini", input=5, output=1,
                                                               user="carol")]),
                        headers={"Content-Type": "application/x-protobuf"})
        assert r.status_code == 200, r.text
        assert app.state.store.query(f"SELECT user_id FROM {settings.database}.usage_events").rows == [("carol",)]
        app.state.store.command(f"DROP DATABASE IF EXISTS {settings.database} SYNC")
