"""The usage and caps API end to end on real chDB: OTLP in through /v1/traces, priced rows, and
/usage and /check answering from them, with the caps engine's clock moved by hand.

Prices are made easy to read by a price override: model `cap-test` costs $1 per million input
tokens and nothing for output, so `spend(cents=n)` sends n * 10,000 input tokens = $n/100.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from tests.support.otlp import chat, to_protobuf

ADMIN = "admin-secret-for-tests"
PB = {"Content-Type": "application/x-protobuf"}
HOUR = 3_600_000
MIN = 60_000

TIERS = """
default_tier: free
warn_at: 0.8
tiers:
  free:
    caps: {session: "1.00", week: "2.00", month: "3.00"}
  pro:
    caps: {session: "10.00", week: "20.00", month: "30.00"}
"""
PRICES = """
version: 1
rates:
  - provider: "*"
    model: cap-test
    input: 1
    output: 0
"""


def ms(*args) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


T0 = ms(2026, 1, 1, 9, 0)  # a Thursday


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


def _client(settings, store, tmp_path, clock, **extra):
    from fastapi.testclient import TestClient

    from spanmeter.ingest.app import create_app

    (tmp_path / "tiers.yaml").write_text(TIERS)
    (tmp_path / "prices.yaml").write_text(PRICES)
    caps_settings = settings.model_copy(update={
        "admin_token": SecretStr(ADMIN),
        "tiers_file": tmp_path / "tiers.yaml",
        "prices_file": tmp_path / "prices.yaml",
        **extra,
    })
    app = create_app(caps_settings, store=store)
    with TestClient(app) as client:
        app.state.caps.clock = clock
        yield client


@pytest.fixture
def api(settings, store, tmp_path, clock):
    yield from _client(settings, store, tmp_path, clock)


ADMIN_H = {"Authorization": f"Bearer {ADMIN}"}
_ids = iter(range(1, 1_000_000))


def spend(client, user: str, *, cents: int, at: int, model: str = "cap-test", provider: str = "openai") -> None:
    """One priced call for `user` at `at` (epoch ms), through the OTLP endpoint."""
    n = next(_ids)
    body = to_protobuf([chat(n, 1, model=model, provider=provider, input=cents * 10_000, output=5, user=user,
                             start_ns=at * 1_000_000)])
    r = client.post("/v1/traces", content=body, headers=PB)
    assert r.status_code == 200, r.text


def check(client, user: str, estimate: str | None = None, headers=ADMIN_H, **extra):
    body = {} if estimate is None else {"estimated_cost_usd": estimate}
    body.update(extra)
    r = client.post(f"/v1/users/{user}/check", json=body, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def usage(client, user: str, headers=ADMIN_H) -> dict:
    r = client.get(f"/v1/users/{user}/usage", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def window(doc: dict, name: str) -> dict:
    return next(w for w in doc["windows"] if w["window"] == name)


# --- decisions follow spend as it lands ---------------------------------------------------------


def test_check_flips_allow_warn_deny_as_usage_lands(api, clock):
    clock.now = T0 + 10 * MIN
    assert check(api, "alice")["decision"] == "allow"  # nothing spent; the ledger is now cached

    spend(api, "alice", cents=50, at=T0)
    d = check(api, "alice")
    assert d["decision"] == "allow"
    assert window(d, "session")["spent_usd"] == "0.50"

    spend(api, "alice", cents=30, at=T0 + 5 * MIN)
    d = check(api, "alice")
    assert d["decision"] == "warn" and d["window"] == "session"
    assert window(d, "session")["percent"] == 80.0

    spend(api, "alice", cents=20, at=T0 + 6 * MIN)
    r = api.post("/v1/users/alice/check", headers=ADMIN_H)
    d = r.json()
    assert d["decision"] == "deny" and d["window"] == "session"
    assert d["resets_at"] == "2026-01-01T14:00:00.000Z"
    assert d["retry_after"] == (T0 + 5 * HOUR - clock.now) // 1000
    assert r.headers["Retry-After"] == str(d["retry_after"])

    u = usage(api, "alice")
    s = window(u, "session")
    assert (s["spent_usd"], s["limit_usd"], s["remaining_usd"], s["status"]) == ("1.00", "1.00", "0.00", "over")
    assert (s["window_start"], s["resets_at"]) == ("2026-01-01T09:00:00.000Z", "2026-01-01T14:00:00.000Z")
    assert window(u, "week")["spent_usd"] == "1.00" and window(u, "week")["window_start"] == "2025-12-29T00:00:00.000Z"
    assert window(u, "month")["percent"] == 33.3
    assert u["estimate"] is False and u["tier"] == "free"


def test_the_cached_ledger_agrees_with_a_fresh_load_from_clickhouse(api, clock):
    clock.now = T0 + HOUR
    check(api, "bob")
    for i, cents in enumerate((7, 13, 21)):
        spend(api, "bob", cents=cents, at=T0 + i * MIN)
    before = usage(api, "bob")
    api.app.state.caps.forget("bob")  # the next read loads from usage_events
    after = usage(api, "bob")
    assert before["windows"] == after["windows"]
    assert window(after, "session")["spent_usd"] == "0.41"


def test_session_chains_across_the_five_hour_boundary(api, clock):
    spend(api, "carol", cents=60, at=T0)
    clock.now = T0 + 5 * HOUR - 1
    s = window(usage(api, "carol"), "session")
    assert (s["spent_usd"], s["window_start"]) == ("0.60", "2026-01-01T09:00:00.000Z")

    clock.now = T0 + 5 * HOUR  # the session is over; no request yet: nothing in the window
    s = window(usage(api, "carol"), "session")
    assert (s["spent_usd"], s["window_start"], s["resets_at"]) == ("0.00", None, None)

    spend(api, "carol", cents=10, at=T0 + 5 * HOUR + 30 * MIN)  # starts the next session
    clock.now = T0 + 6 * HOUR
    u = usage(api, "carol")
    s = window(u, "session")
    assert (s["spent_usd"], s["window_start"], s["resets_at"]) == (
        "0.10", "2026-01-01T14:30:00.000Z", "2026-01-01T19:30:00.000Z")
    assert window(u, "week")["spent_usd"] == "0.70"


def test_a_request_that_started_first_but_landed_last_opens_the_session(api, clock):
    # Two requests open a session at once; the one that started 2 s earlier finishes last.
    spend(api, "kim", cents=5, at=T0 - 10 * HOUR)  # an earlier session, long over
    clock.now = T0 + MIN
    spend(api, "kim", cents=10, at=T0 + 2000)
    assert window(usage(api, "kim"), "session")["window_start"] == "2026-01-01T09:00:02.000Z"
    spend(api, "kim", cents=20, at=T0)
    s = window(usage(api, "kim"), "session")
    assert (s["window_start"], s["spent_usd"], s["calls"]) == ("2026-01-01T09:00:00.000Z", "0.30", 2)


def test_month_rolls_over_at_the_users_local_midnight(api, clock):
    # 18:00Z on Jan 31 is 23:30 in Kolkata; 19:00Z is 00:30 on February 1st there.
    for user in ("kolkata", "utc"):
        spend(api, user, cents=40, at=ms(2026, 1, 31, 18))
        spend(api, user, cents=25, at=ms(2026, 1, 31, 19))
    r = api.put("/v1/users/kolkata/limits", json={"timezone": "Asia/Kolkata"}, headers=ADMIN_H)
    assert r.status_code == 200 and r.json()["timezone"] == "Asia/Kolkata"

    clock.now = ms(2026, 1, 31, 18, 10)  # still January in both zones
    assert window(usage(api, "kolkata"), "month")["spent_usd"] == "0.40"  # 19:00Z is in the future
    clock.now = ms(2026, 1, 31, 20)  # February in Kolkata, January in UTC
    m = window(usage(api, "kolkata"), "month")
    assert (m["spent_usd"], m["window_start"]) == ("0.25", "2026-01-31T18:30:00.000Z")
    m = window(usage(api, "utc"), "month")
    assert (m["spent_usd"], m["window_start"], m["resets_at"]) == (
        "0.65", "2026-01-01T00:00:00.000Z", "2026-02-01T00:00:00.000Z")
    clock.now = ms(2026, 2, 1, 0, 0)  # and now February in UTC too
    assert window(usage(api, "utc"), "month")["spent_usd"] == "0.00"


# --- tiers and overrides --------------------------------------------------------------------


def test_a_tier_change_mid_window_keeps_the_spend_and_applies_the_new_caps(api, clock):
    spend(api, "dave", cents=90, at=T0)
    clock.now = T0 + HOUR
    d = check(api, "dave")
    assert d["decision"] == "warn" and window(d, "session")["limit_usd"] == "1.00"

    r = api.put("/v1/users/dave/tier", json={"tier": "pro"}, headers=ADMIN_H)
    assert r.status_code == 200 and r.json()["tier"] == "pro"
    d = check(api, "dave")
    s = window(d, "session")
    assert d["decision"] == "allow"
    assert (s["spent_usd"], s["limit_usd"], s["window_start"]) == ("0.90", "10.00", "2026-01-01T09:00:00.000Z")

    spend(api, "dave", cents=40, at=T0 + 30 * MIN)
    assert check(api, "dave")["decision"] == "allow"
    api.put("/v1/users/dave/tier", json={"tier": "free"}, headers=ADMIN_H)  # downgrade: over at once
    d = check(api, "dave")
    assert d["decision"] == "deny" and window(d, "session")["spent_usd"] == "1.30"
    assert usage(api, "dave")["tier"] == "free"

    r = api.put("/v1/users/dave/tier", json={"tier": "platinum"}, headers=ADMIN_H)
    assert r.status_code == 400 and "unknown tier" in r.json()["message"]


def test_overrides_replace_add_and_lift_caps(api, clock):
    spend(api, "erin", cents=60, at=T0)
    clock.now = T0 + HOUR
    r = api.put("/v1/users/erin/limits", headers=ADMIN_H, json={
        "caps": {"session": {"limit_usd": "0.50", "warn_at": "0.9"}, "day": "5.00", "month": None},
    })
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["caps"]["session"] == {"limit_usd": "0.50", "warn_at": "0.9", "hard": True}
    assert doc["caps"]["month"]["limit_usd"] is None and doc["caps"]["day"]["limit_usd"] == "5.00"

    d = check(api, "erin")
    assert d["decision"] == "deny" and d["window"] == "session"
    m = window(d, "month")
    assert (m["limit_usd"], m["remaining_usd"], m["percent"], m["spent_usd"]) == (None, None, None, "0.60")
    assert [w["window"] for w in d["windows"]] == ["session", "day", "week", "month"]

    # Overrides survive a tier change; clearing them restores the tier's caps.
    api.put("/v1/users/erin/tier", json={"tier": "pro"}, headers=ADMIN_H)
    assert window(usage(api, "erin"), "session")["limit_usd"] == "0.50"
    api.put("/v1/users/erin/limits", json={}, headers=ADMIN_H)
    assert window(usage(api, "erin"), "session")["limit_usd"] == "10.00"
    got = api.get("/v1/users/erin/limits", headers=ADMIN_H).json()
    assert got["assigned_tier"] == "pro" and got["overrides"] == {"caps": {}, "timezone": None}


@pytest.mark.parametrize("body", [
    {"caps": {"week": {"limit_usd": 5.0}}},  # money must be a string
    {"caps": {"week": 5}},
    {"caps": {"fortnight": "1.00"}},
    {"timezone": "Nowhere/Else"},
    {"caps": {"week": {"limit_usd": "1", "warn_at": 2}}},
])
def test_bad_overrides_are_400(api, body):
    r = api.put("/v1/users/erin/limits", json=body, headers=ADMIN_H)
    assert r.status_code == 400 and r.json()["code"] == 400


def test_check_refuses_a_float_estimate(api):
    r = api.post("/v1/users/x/check", json={"estimated_cost_usd": 0.1}, headers=ADMIN_H)
    assert r.status_code == 400 and "decimal string" in r.json()["message"]


def test_unpriced_usage_marks_the_window_as_an_estimate(api, clock):
    spend(api, "fay", cents=20, at=T0)
    spend(api, "fay", cents=20, at=T0 + MIN, model="mystery-9000", provider="acme")
    clock.now = T0 + HOUR
    u = usage(api, "fay")
    s = window(u, "session")
    assert s["spent_usd"] == "0.20" and s["calls"] == 2 and s["unpriced_calls"] == 1
    assert s["estimate"] is True and "no price" in s["estimate_reason"]
    assert u["estimate"] is True and u["estimate_reason"]


# --- concurrency and reservations -----------------------------------------------------------


def test_concurrent_checks_for_one_user_cannot_overspend(api, clock):
    spend(api, "gus", cents=90, at=T0)
    clock.now = T0 + HOUR
    barrier = threading.Barrier(16)

    def one(_):
        barrier.wait()
        return check(api, "gus", "0.04")

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, range(16)))
    passed = [a for a in answers if a["decision"] != "deny"]
    # $0.90 spent, $1.00 cap: two $0.04 calls fit, the third would make $1.02.
    assert len(passed) == 2 and all(a["reservation"] for a in passed)
    assert all(a["reason"].startswith("session cap: $0.98 of $1.00 used, a call estimated at $0.04 would go over")
               for a in answers if a["decision"] == "deny")
    s = window(usage(api, "gus"), "session")
    assert (s["spent_usd"], s["reserved_usd"], s["remaining_usd"]) == ("0.90", "0.08", "0.02")

    # A call that was not made gives its reservation back; one that was made settles it.
    rid = passed[0]["reservation"]["id"]
    assert api.delete(f"/v1/users/gus/reservations/{rid}", headers=ADMIN_H).status_code == 204
    assert api.delete(f"/v1/users/gus/reservations/{rid}", headers=ADMIN_H).status_code == 404
    spend(api, "gus", cents=4, at=T0 + HOUR)
    s = window(usage(api, "gus"), "session")
    assert (s["spent_usd"], s["reserved_usd"]) == ("0.94", "0.00")
    assert check(api, "gus", "0.04", reserve=False)["decision"] == "warn"


def test_reservations_expire(api, clock):
    clock.now = T0
    assert check(api, "hal", "0.90")["decision"] == "warn"
    assert check(api, "hal", "0.20")["decision"] == "deny"
    clock.now = T0 + 61_000  # caps_reservation_seconds (60) later: the call never reported
    assert check(api, "hal", "0.20")["decision"] == "allow"


# --- auth -----------------------------------------------------------------------------------


def mint(api, user: str, **body) -> str:
    r = api.post(f"/v1/users/{user}/tokens", json=body, headers=ADMIN_H)
    assert r.status_code == 201, r.text
    return r.json()["token"]


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_no_token_no_data(api):
    for method, path in [("GET", "usage"), ("POST", "check"), ("GET", "limits"), ("PUT", "tier"),
                         ("PUT", "limits"), ("POST", "tokens"), ("DELETE", "tokens")]:
        r = api.request(method, f"/v1/users/alice/{path}", json={"tier": "pro"})
        assert r.status_code == 401, (method, path)
        assert r.headers["WWW-Authenticate"] == "Bearer"
        assert "spent_usd" not in r.text
        r = api.request(method, f"/v1/users/alice/{path}", json={"tier": "pro"},
                        headers=bearer("not-the-admin-token"))
        assert r.status_code == 401, (method, path)


def test_a_user_token_reads_only_its_own_usage(api, clock):
    spend(api, "alice", cents=30, at=T0)
    spend(api, "bob", cents=70, at=T0)
    clock.now = T0 + HOUR
    alice = mint(api, "alice")
    assert "alice" not in alice.split(".")[-1] and ADMIN not in alice

    assert window(usage(api, "alice", headers=bearer(alice)), "session")["spent_usd"] == "0.30"
    assert check(api, "alice", headers=bearer(alice))["decision"] == "allow"
    r = api.get("/v1/users/bob/usage", headers=bearer(alice))
    assert r.status_code == 403 and "0.70" not in r.text
    assert api.post("/v1/users/bob/check", headers=bearer(alice)).status_code == 403
    # Admin routes want the admin token.
    assert api.put("/v1/users/alice/tier", json={"tier": "pro"}, headers=bearer(alice)).status_code == 403
    assert api.post("/v1/users/alice/tokens", headers=bearer(alice)).status_code == 403

    # A token altered to name another user fails its signature.
    prefix, issued, expires, _, sig = alice.split(".")
    import base64

    forged = ".".join([prefix, issued, expires, base64.urlsafe_b64encode(b"bob").rstrip(b"=").decode(), sig])
    assert api.get("/v1/users/bob/usage", headers=bearer(forged)).status_code == 401


def test_user_tokens_expire_and_can_be_revoked(api, clock):
    clock.now = T0
    short = mint(api, "ivy", ttl_seconds=60)
    assert api.get("/v1/users/ivy/usage", headers=bearer(short)).status_code == 200
    clock.now = T0 + 61_000
    assert api.get("/v1/users/ivy/usage", headers=bearer(short)).status_code == 401

    token = mint(api, "ivy")
    assert api.get("/v1/users/ivy/usage", headers=bearer(token)).status_code == 200
    clock.now += 1
    assert api.delete("/v1/users/ivy/tokens", headers=ADMIN_H).status_code == 200
    assert api.get("/v1/users/ivy/usage", headers=bearer(token)).status_code == 401
    assert api.post("/v1/users/ivy/check", headers=bearer(token)).status_code == 401
    clock.now += 1
    fresh = mint(api, "ivy")  # issued after the revocation
    assert api.get("/v1/users/ivy/usage", headers=bearer(fresh)).status_code == 200


def test_user_ids_with_slashes_and_unicode(api, clock):
    user = "org/42/ünïcode"
    spend(api, user, cents=12, at=T0)
    clock.now = T0 + MIN
    token = mint(api, user)
    from urllib.parse import quote

    r = api.get(f"/v1/users/{quote(user)}/usage", headers=bearer(token))
    assert r.status_code == 200 and r.json()["user_id"] == user
    assert window(r.json(), "session")["spent_usd"] == "0.12"


def test_with_pseudonymous_user_ids_the_api_takes_the_products_own_ids(settings, store, tmp_path, clock):
    from spanmeter.ingest.config import Settings

    if "user_id_key" not in Settings.model_fields:
        pytest.skip("user id pseudonymization is not in this build")
    from spanmeter.ingest.privacy import pseudonymize_user_id

    key = SecretStr("pseudonym-key")
    for api in _client(settings, store, tmp_path, clock, user_id_key=key):
        spend(api, "alice@example.com", cents=30, at=T0)
        clock.now = T0 + MIN
        stored = store.query(f"SELECT DISTINCT user_id FROM {store.database}.usage_events").rows
        assert stored == [(pseudonymize_user_id("alice@example.com", key),)]
        token = mint(api, "alice@example.com")
        u = usage(api, "alice@example.com", headers=bearer(token))
        assert u["user_id"] == "alice@example.com" and window(u, "session")["spent_usd"] == "0.30"
        api.put("/v1/users/alice@example.com/tier", json={"tier": "pro"}, headers=ADMIN_H)
        assert usage(api, "alice@example.com")["tier"] == "pro"


def test_user_tiers_is_an_append_only_log_with_the_latest_winning(api, store):
    for tier in ("pro", "free", "pro"):
        api.put("/v1/users/jo/tier", json={"tier": tier}, headers=ADMIN_H)
    rows = store.query(
        f"SELECT value FROM {store.database}.user_tiers WHERE user_id = 'jo' AND setting = 'tier' "
        "ORDER BY updated_at").rows
    assert [r[0] for r in rows] == ["pro", "free", "pro"]
    assert api.get("/v1/users/jo/limits", headers=ADMIN_H).json()["tier"] == "pro"


# --- the in-memory ledger against a brute-force reference -----------------------------------

from decimal import Decimal  # noqa: E402

from hypothesis import HealthCheck, given, settings as hsettings, strategies as st  # noqa: E402

PROPERTY_TIERS = {
    "default_tier": "t",
    "tiers": {"t": {"timezone": "America/Los_Angeles",
                    "caps": {"session": "1", "rolling_3h": "1", "day": "1", "week": "1", "month": "1"}}},
}
TUESDAY = ms(2026, 3, 31, 20, 0)  # LA: Tuesday 13:00 PDT, the last day of March there
_property_users = iter(range(1_000_000))


def _record(n: int, user: str, t: int, cents: int | None, sign: int = 1):
    from spanmeter.ingest.records import Attribution, TokenUsage, UsageRecord

    return UsageRecord(
        trace_id=n.to_bytes(16, "big"), span_id=n.to_bytes(8, "big"), event_time_ns=t * 1_000_000,
        service_name="svc", provider="openai", operation="chat", request_model="m", response_model="m",
        usage=TokenUsage(10, 0, 0, 5, 0), attribution=Attribution(user_id=user), sign=sign,
        cost_usd=None if cents is None else Decimal(cents) / 100, pricing_status="priced" if cents else "unknown",
    )


def _reference(rows, now: int, plan) -> dict[str, tuple[int, int, int | None]]:
    """(pico spent, calls, window start) per window, straight from the definition."""
    from spanmeter.ingest.caps import HOUR_MS, PICO, calendar_bounds, current_session, session_lookback_start, zone

    tz = zone(plan.timezone)
    out = {}
    lookback = session_lookback_start(now)
    times = sorted(r.event_time_ns // 1_000_000 for r in rows if r.sign > 0)
    session = current_session([t for t in times if t >= lookback], now, plan.session_ms)
    for cap in plan.caps:
        kind = cap.window.kind
        if kind == "session":
            if session is None:
                out["session"] = (0, 0, None)
                continue
            start, end = session[0], None
        elif kind == "rolling":
            start, end = now - cap.window.hours * HOUR_MS, None
        else:
            start, end = calendar_bounds(kind, now, tz)
        chosen = [r for r in rows if r.event_time_ns // 1_000_000 >= start
                  and (end is None or r.event_time_ns // 1_000_000 < end)]
        spent = sum(int((r.cost_usd or 0) * PICO) * r.sign for r in chosen)
        out[cap.window.name] = (spent, sum(r.sign for r in chosen), start)
    return out


@hsettings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_cached_ledgers_match_the_definition_and_a_fresh_load(store, data):
    from spanmeter.ingest.caps import Caps, TierBook, _WatchedStore
    from spanmeter.ingest.store import usage_arrow

    user = f"p{next(_property_users)}"
    clock = Clock(TUESDAY)
    caps = Caps(store, TierBook.parse(PROPERTY_TIERS), clock=clock)
    watched = _WatchedStore(store, caps)
    rows = []
    n = next(_ids) * 1000

    def new_rows(count):
        nonlocal n
        made = []
        for _ in range(count):
            n += 1
            # Times up to 3 days back, mostly within hours, in any order: spans arrive late and out
            # of order, some just before the session they would have opened.
            back = data.draw(st.one_of(st.integers(0, 8 * 60), st.integers(0, 3 * 24 * 60)))
            t = clock.now - back * MIN - data.draw(st.integers(0, 59_999))
            cents = data.draw(st.one_of(st.none(), st.integers(1, 30)))
            made.append(_record(n, user, t, cents))
            if data.draw(st.integers(0, 9)) == 0:  # now and then, a correction cancels it
                made.append(_record(n, user, t, cents, sign=-1))
        return made

    store.insert_usage(before := new_rows(data.draw(st.integers(0, 12))))
    rows += before
    for _ in range(data.draw(st.integers(1, 6))):
        batch = new_rows(data.draw(st.integers(0, 6)))
        if batch:  # as the writer commits (an Arrow batch and a token): the cached ledger sees it
            watched.insert_usage_arrow(usage_arrow(batch), f"t{n}")
        rows += batch
        clock.now += data.draw(st.integers(0, 6 * 60)) * MIN  # may cross local midnight / a month
        _, plan, windows = caps.usage(user)
        expected = _reference(rows, clock.now, plan)
        got = {w.window.name: (w.spent_pico, w.calls, w.start_ms) for w in windows}
        assert got == expected
        caps.forget(user)
        _, _, fresh = caps.usage(user)
        assert {w.window.name: (w.spent_pico, w.calls, w.start_ms) for w in fresh} == expected


def test_preload_loads_active_users_in_bulk_exactly_as_one_by_one(store):
    from spanmeter.ingest.caps import Caps, Overrides, TierBook

    clock = Clock(TUESDAY)
    book = TierBook.parse(PROPERTY_TIERS | {"tiers": {**PROPERTY_TIERS["tiers"], "pro": {"caps": {"week": "9"}}}})
    rows = [_record(9_000_000 + i, f"bulk{i % 7}", TUESDAY - (i * 37 % 4000) * MIN, None if i % 11 == 0 else i % 30 + 1)
            for i in range(300)]
    store.insert_usage(rows)
    one_by_one = Caps(store, book, clock=clock)
    one_by_one.set_tier("bulk3", "pro")
    one_by_one.set_overrides("bulk4", Overrides.parse({"timezone": "Asia/Kolkata", "caps": {"day": "0.10"}}))
    one_by_one.set_tier("idle", "pro")  # settings but no usage: loaded too

    bulk = Caps(store, book, clock=clock)
    assert bulk.preload(background=False, chunk=3) == 8
    assert set(bulk._ledgers) == {f"bulk{i}" for i in range(7)} | {"idle"}
    for user in [*(f"bulk{i}" for i in range(7)), "idle"]:
        _, plan, preloaded = bulk.usage(user)
        _, expected_plan, expected = one_by_one.usage(user)
        assert plan == expected_plan
        assert [(w.window.name, w.spent_pico, w.calls, w.unpriced_calls, w.start_ms) for w in preloaded] == \
               [(w.window.name, w.spent_pico, w.calls, w.unpriced_calls, w.start_ms) for w in expected]
    assert bulk.usage("bulk3")[1].tier == "pro" and bulk.usage("bulk4")[1].timezone == "Asia/Kolkata"


def test_rows_written_by_another_process_arrive_by_background_reload(store):
    from spanmeter.ingest.caps import Caps, TierBook

    clock = Clock(TUESDAY)
    caps = Caps(store, TierBook.parse(PROPERTY_TIERS), refresh_seconds=0.2, clock=clock)
    assert caps.check("rep").decision == "allow"
    store.insert_usage([_record(8_000_000, "rep", TUESDAY - MIN, 100)])  # not through this engine
    assert caps.check("rep").decision == "allow"  # the cached ledger has not seen it yet
    deadline = time.monotonic() + 10
    while caps.check("rep").decision != "deny":  # the stale ledger is reloaded in the background
        assert time.monotonic() < deadline, "no background reload"
        time.sleep(0.05)
    assert Caps(store, TierBook.parse(PROPERTY_TIERS), refresh_seconds=None).refresh_seconds is None


def test_a_failed_insert_and_its_resend_never_count_twice(store):
    from spanmeter.ingest.caps import Caps, TierBook, _WatchedStore
    from spanmeter.ingest.errors import StoreUnavailable
    from spanmeter.ingest.store import usage_arrow

    class WritesThenFails:
        """An insert that reaches the table but whose acknowledgement is lost."""

        def __init__(self, store):
            self.store, self.fail = store, True

        def insert_usage_arrow(self, table, token=None, **kw):
            self.store.insert_usage_arrow(table, token, **kw)
            if self.fail:
                self.fail = False
                raise StoreUnavailable("connection reset after the insert")

        def __getattr__(self, name):
            return getattr(self.store, name)

    clock = Clock(TUESDAY)
    caps = Caps(store, TierBook.parse(PROPERTY_TIERS), clock=clock)
    watched = _WatchedStore(WritesThenFails(store), caps)
    assert caps.check("flaky").decision == "allow"  # cached, empty
    table = usage_arrow([_record(7_000_000, "flaky", TUESDAY - MIN, 40), _record(7_000_001, "flaky", TUESDAY - MIN, 30)])
    with pytest.raises(StoreUnavailable):
        watched.insert_usage_arrow(table, "tok-1")
    assert "flaky" not in caps._ledgers  # dropped: the table may or may not hold the rows
    assert window_spent(caps, "flaky") == 70 * 10**10  # reloaded: they are there
    watched.insert_usage_arrow(table, "tok-1")  # the writer re-sends; deduplicated by its token
    assert window_spent(caps, "flaky") == 70 * 10**10
    assert store.query(f"SELECT count() FROM {store.database}.usage_events WHERE user_id = 'flaky'").rows == [(2,)]


def window_spent(caps, user: str) -> int:
    return next(w.spent_pico for w in caps.usage(user)[2] if w.window.name == "session")


def test_a_rolling_window_deny_says_when_enough_spend_has_aged_out(store):
    from spanmeter.ingest.caps import Caps, TierBook

    book = TierBook.parse({"tiers": {"r": {"caps": {"rolling_3h": "1.00"}}}})
    clock = Clock(TUESDAY)
    caps = Caps(store, book, clock=clock)
    store.insert_usage([_record(6_000_000, "roll", TUESDAY - 2 * HOUR, 70),
                        _record(6_000_001, "roll", TUESDAY - HOUR, 30)])
    d = caps.check("roll", reserve=False)
    assert d.decision == "deny" and d.window == "rolling_3h"
    assert d.retry_at_ms == TUESDAY + HOUR + 1  # the $0.70 call leaves the window
    d = caps.check("roll", Decimal("0.80"), reserve=False)  # needs the $0.30 gone as well
    assert d.retry_at_ms == TUESDAY + 2 * HOUR + 1
    clock.now = TUESDAY + HOUR + 1
    assert caps.check("roll", reserve=False).decision == "allow"
