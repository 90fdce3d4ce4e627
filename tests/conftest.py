"""Shared fixtures: a real embedded ClickHouse (chDB) for the whole session, a fresh database per
test, and the ingest app on it (in-process, through FastAPI's TestClient).

chDB lets one process open one data path, so in-process tests share one path and isolate by
database; tests that need their own process use tests/support/service.py.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


@pytest.fixture(autouse=True)
def _state_dir(tmp_path, monkeypatch):
    """Each test's writer keeps its pending batch and owed rollups in its own folder, never in
    the working directory (Settings built without a state_dir read SPANMETER_STATE_DIR)."""
    monkeypatch.setenv("SPANMETER_STATE_DIR", str(tmp_path / "spanmeter-state"))


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture
def database() -> str:
    return "t_" + uuid.uuid4().hex[:12]


@pytest.fixture
def store(chdb_path, database):
    from spanmeter.ingest.migrate import migrate
    from spanmeter.ingest.store import Store

    s = Store.connect(f"chdb://{chdb_path}", database)
    migrate(s)
    yield s
    s.command(f"DROP DATABASE IF EXISTS {database} SYNC")


@pytest.fixture
def settings(chdb_path, database):
    from spanmeter.ingest.config import Settings

    # Rollups fed with each batch, before it is answered: tests read them right after an export
    # (the default delayed feed has its own tests, test_rollup_feed.py and the service's).
    return Settings(clickhouse_dsn=f"chdb://{chdb_path}", database=database, batch_max_wait_ms=5,
                    rollup_delay_ms=0)


@pytest.fixture
def client(settings, store):
    from fastapi.testclient import TestClient

    from spanmeter.ingest.app import create_app

    with TestClient(create_app(settings, store=store)) as c:
        yield c
