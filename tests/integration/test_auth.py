"""Nobody in who does not belong: bearer tokens on every endpoint that needs one, each token only
for its own scope, compared in constant time, never logged; health and metrics open and free of
secrets; without tokens, loopback only.

Every route of the app is checked, not a list kept by hand: a route that is not one of the open
ones (health, readiness, metrics, the API docs) must refuse a request with no token, with a wrong
token, and with a token of the other scope. So an endpoint added later (the caps/usage API) is
covered the day it lands.
"""

from __future__ import annotations

import hmac
import secrets

import httpx
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from spanmeter.ingest.app import create_app
from spanmeter.ingest.cli import check_bind
from spanmeter.ingest.config import Settings
from spanmeter.ingest.errors import ConfigError
from tests.support.otlp import chat, to_protobuf
from tests.support.service import running_service

INGEST = "ingest-" + "a1" * 16
ADMIN = "admin-" + "b2" * 16
OPEN = {"/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
BODY = to_protobuf([chat(1, 1, model="gpt-4o-mini", input=10, output=2, user="auth-user")])


@pytest.fixture
def authed(chdb_path, database, store):
    settings = Settings(
        clickhouse_dsn=f"chdb://{chdb_path}", database=database, batch_max_wait_ms=5,
        ingest_token=INGEST, admin_token=ADMIN,
    )
    with TestClient(create_app(settings, store=store)) as client:
        yield client


def protected_routes(app) -> list[tuple[str, str]]:
    out = []
    for route in app.routes:
        if isinstance(route, APIRoute) and route.path not in OPEN:
            path = route.path
            for name in route.param_convertors:
                path = path.replace("{" + name + "}", "x")
            out.extend((method, path) for method in sorted(route.methods - {"HEAD", "OPTIONS"}))
    return out


def call(client, method: str, path: str, authorization: str | bytes | None):
    headers = {"Content-Type": "application/x-protobuf" if path == "/v1/traces" else "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    body = BODY if path == "/v1/traces" else b'{"query": "SELECT 1"}' if path == "/v1/sql" else b"{}"
    return client.request(method, path, content=body if method in ("POST", "PUT", "PATCH") else None, headers=headers)


WRONG = [
    None,
    "",
    "Bearer",
    "Bearer ",
    f"Basic {INGEST}",
    f"Token {ADMIN}",
    INGEST,  # no scheme
    f"Bearer {INGEST[:-1]}",  # a prefix
    f"Bearer {INGEST}x",  # an extension
    f"Bearer {INGEST.upper()}",
    f"Bearer {ADMIN[:-1]}",
    ("Bearer " + "é" * 8).encode("latin-1"),  # a non-ASCII header value
]


def test_every_protected_route_refuses_missing_and_wrong_tokens(authed, store):
    routes = protected_routes(authed.app)
    assert ("POST", "/v1/traces") in routes and ("POST", "/v1/sql") in routes
    for method, path in routes:
        for authorization in WRONG:
            response = call(authed, method, path, authorization)
            assert response.status_code in (401, 403), (method, path, authorization, response.status_code)
    # Nothing got in.
    assert store.query(f"SELECT count() FROM {store.database}.usage_events").rows[0][0] == 0


def test_each_token_is_refused_outside_its_scope(authed, store):
    routes = protected_routes(authed.app)
    # The ingest token writes spans and nothing else: every other protected route refuses it.
    for method, path in routes:
        if path != "/v1/traces":
            response = call(authed, method, path, f"Bearer {INGEST}")
            assert response.status_code in (401, 403), (method, path, response.status_code)
    # The admin token cannot write spans (a leaked dashboard token must not forge usage).
    assert call(authed, "POST", "/v1/traces", f"Bearer {ADMIN}").status_code == 401
    assert store.query(f"SELECT count() FROM {store.database}.usage_events").rows[0][0] == 0
    # Each in its own scope works.
    response = call(authed, "POST", "/v1/traces", f"Bearer {INGEST}")
    assert response.status_code == 200
    assert call(authed, "POST", "/v1/traces", f"bearer  {INGEST} ").status_code == 200  # scheme is case-insensitive
    response = authed.post("/v1/sql", json={"query": f"SELECT count() FROM {store.database}.usage_events"},
                           headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 200 and response.json()["rows"] == [[1]]
    refused = call(authed, "POST", "/v1/sql", None)
    assert refused.headers["www-authenticate"] == "Bearer"


def test_tokens_are_compared_in_constant_time(authed, monkeypatch):
    """Every protected route compares through hmac.compare_digest (or secrets'), never `==`."""
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    monkeypatch.setattr(secrets, "compare_digest", spy)
    for method, path in protected_routes(authed.app):
        calls.clear()
        call(authed, method, path, f"Bearer {INGEST[:-1]}z")
        assert calls, f"{method} {path} did not compare the token with compare_digest"


def test_health_readiness_and_metrics_are_open_and_carry_no_secrets(authed):
    call(authed, "POST", "/v1/traces", f"Bearer {INGEST}")
    call(authed, "POST", "/v1/traces", f"Bearer {ADMIN}")
    for path in ("/healthz", "/readyz", "/metrics"):
        response = authed.get(path)
        assert response.status_code == 200, path
        assert INGEST not in response.text and ADMIN not in response.text
    assert 'spanmeter_export_requests_total{status="401"} 1.0' in authed.get("/metrics").text


def test_blank_tokens_are_no_tokens():
    settings = Settings(ingest_token="", admin_token="  ")
    assert settings.ingest_token is None and settings.admin_token is None


@pytest.mark.parametrize("host, ingest, admin, allowed", [
    ("127.0.0.1", None, None, True),
    ("127.0.0.2", None, None, True),
    ("::1", None, None, True),
    ("localhost", None, None, True),
    ("0.0.0.0", None, None, False),
    ("::", None, None, False),
    ("10.0.0.5", None, None, False),
    ("0.0.0.0", INGEST, None, False),  # one token leaves the other scope open
    ("0.0.0.0", None, ADMIN, False),
    ("0.0.0.0", "", "", False),  # blank is unset
    ("0.0.0.0", INGEST, ADMIN, True),
    ("example.com", None, None, False),
])
def test_without_both_tokens_only_loopback(host, ingest, admin, allowed):
    settings = Settings(host=host, ingest_token=ingest, admin_token=admin)
    if allowed:
        check_bind(settings)
    else:
        with pytest.raises(ConfigError):
            check_bind(settings)


@pytest.mark.parametrize("level", ["debug", "trace"])
def test_tokens_never_reach_the_log(tmp_path, level):
    """A real `spanmeter serve` at debug (and uvicorn's trace, which logs whole ASGI scopes): the
    tokens, right or wrong, and a ClickHouse password never appear in its output."""
    wrong = "wrong-" + "c3" * 16
    env = {"SPANMETER_INGEST_TOKEN": INGEST, "SPANMETER_ADMIN_TOKEN": ADMIN,
           "SPANMETER_USER_ID_KEY": "key-" + "d4" * 16}
    with running_service(tmp_path, env=env, log_level=level) as svc:
        assert svc.post_traces(BODY).status_code == 200
        assert svc.post_traces(BODY, Authorization=f"Bearer {wrong}").status_code == 401
        assert svc.post_traces(BODY, Authorization=f"Bearer {ADMIN}").status_code == 401
        assert svc.post_traces(b"garbage", Authorization=f"Bearer {INGEST}").status_code == 400
        assert svc.sql("SELECT count() FROM spanmeter.usage_events") == [[1]]
        r = httpx.post(svc.url + "/v1/sql", json={"query": "SELECT nonsense("}, headers=svc.headers("SPANMETER_ADMIN_TOKEN"))
        assert r.status_code == 400
        r = httpx.post(svc.url + "/v1/sql", json={"query": "SELECT 1"}, headers={"Authorization": f"Bearer {INGEST}"})
        assert r.status_code == 401
        metrics = httpx.get(svc.url + "/metrics").text
    log = svc.log()
    assert "401" in metrics and "Uvicorn running" in log
    for secret in (INGEST, ADMIN, wrong, env["SPANMETER_USER_ID_KEY"]):
        assert secret not in log, f"a secret is in the {level} log"
        assert secret not in metrics
    if level == "trace":
        assert "ASGI" in log  # uvicorn did log the scopes, with the secrets masked
