"""The Budgets dashboard end to end on real chDB: priced calls in through /v1/traces for users on
three tiers (sessions, a rolling window, calendar windows in UTC and in Asia/Kolkata, a per-user
override, a reservation, an unpriced call), a caps snapshot taken by the service, then every
panel's SQL expanded as Grafana and the plugin expand it (tests/support/grafana_macros.py) and run
read-only on the database. Each panel must show exactly what GET /v1/users/{id}/usage answers for
the same users at the snapshot's instant; a few of those answers are also checked by hand.

Prices: model `cap-test` costs $1 per million input tokens, so `cents=n` is $n/100.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
from pydantic import SecretStr

from tests.support.grafana_macros import QueryContext, Variable, expand
from tests.support.otlp import chat, to_protobuf

REPO = Path(__file__).resolve().parents[2]
BUDGETS = json.loads((REPO / "grafana" / "dashboards" / "budgets.json").read_text())
ADMIN = "admin-secret-for-budgets"
ADMIN_H = {"Authorization": f"Bearer {ADMIN}"}
PB = {"Content-Type": "application/x-protobuf"}
MIN, HOUR = 60_000, 3_600_000

TIERS = """
default_tier: free
timezone: UTC
warn_at: 0.8
tiers:
  free:
    caps: {session: "1.00", week: "2.00", month: "3.00"}
  pro:
    warn_at: 0.9
    caps:
      session: "10.00"
      rolling_24h: "15.00"
      week: "20.00"
      month: {limit_usd: "30.00", hard: false}
  team:
    timezone: Asia/Kolkata
    caps: {day: "4.00", month: "50.00"}
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


T0 = ms(2026, 1, 1, 9, 0)  # a Thursday: the week began on Monday 2025-12-29, the month today


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def make_app(settings, store, tmp_path, tiers: str = TIERS, **extra):
    from spanmeter.ingest.app import create_app

    (tmp_path / "tiers.yaml").write_text(tiers)
    (tmp_path / "prices.yaml").write_text(PRICES)
    return create_app(settings.model_copy(update={
        "admin_token": SecretStr(ADMIN), "tiers_file": tmp_path / "tiers.yaml",
        "prices_file": tmp_path / "prices.yaml", "caps_snapshot_seconds": 0, **extra,
    }), store=store)


@pytest.fixture
def service(settings, store, tmp_path):
    from fastapi.testclient import TestClient

    app = make_app(settings, store, tmp_path)
    with TestClient(app) as client:
        app.state.caps.clock = Clock(T0)
        yield app, client


_ids = iter(range(1, 1_000_000))


def spend(client, user: str, *, cents: int, at: int, model: str = "cap-test") -> None:
    n = next(_ids)
    body = to_protobuf([chat(n, 1, model=model, provider="openai", input=cents * 10_000, output=5, user=user,
                             start_ns=at * 1_000_000)])
    r = client.post("/v1/traces", content=body, headers=PB)
    assert r.status_code == 200, r.text


def seed(client) -> None:
    """Who is where (hand-checked in test_the_seed_as_the_api_sees_it)."""
    ok = lambda r: r.status_code == 200 or pytest.fail(r.text)  # noqa: E731
    ok(client.put("/v1/users/carol/tier", json={"tier": "pro"}, headers=ADMIN_H))
    ok(client.put("/v1/users/ivan/tier", json={"tier": "pro"}, headers=ADMIN_H))
    ok(client.put("/v1/users/frank/tier", json={"tier": "team"}, headers=ADMIN_H))
    ok(client.put("/v1/users/dave/limits", json={"caps": {"week": {"limit_usd": "5.00"}}}, headers=ADMIN_H))
    spend(client, "alice", cents=50, at=T0 - 60 * MIN)
    spend(client, "alice", cents=40, at=T0 - 30 * MIN)
    spend(client, "bob", cents=100, at=T0 - 2 * HOUR)
    spend(client, "carol", cents=200, at=T0 - 3 * HOUR)
    spend(client, "dave", cents=50, at=T0 - 10 * MIN)
    spend(client, "erin", cents=85, at=ms(2025, 12, 31, 20, 0))  # session over; last month; this week
    spend(client, "o'brien", cents=80, at=T0 - 48 * HOUR)
    spend(client, "o'brien", cents=80, at=T0 - 7 * HOUR)
    spend(client, "frank", cents=100, at=ms(2025, 12, 31, 18, 0))  # 23:30 in Kolkata: yesterday there
    spend(client, "frank", cents=300, at=ms(2025, 12, 31, 19, 0))  # 00:30 on Jan 1 in Kolkata
    spend(client, "gina", cents=5, at=T0 - 20 * MIN, model="mystery-model")  # unpriced
    spend(client, "gina", cents=120, at=T0 - 15 * MIN)
    spend(client, "ivan", cents=1500, at=T0 - 23 * HOUR)  # rolling 24h full; the session long over
    spend(client, "hank", cents=70, at=ms(2025, 12, 1, 12, 0))  # in no open window
    r = client.post("/v1/users/carol/check", json={"estimated_cost_usd": "7.00"}, headers=ADMIN_H)
    assert r.status_code == 200 and r.json()["reservation"] is not None, r.text


USERS = ["alice", "bob", "carol", "dave", "erin", "o'brien", "frank", "gina", "ivan", "hank"]


def api_usage(client, as_of: str = "2026-01-01T09:00:00.000Z") -> dict[str, dict[str, Any]]:
    """GET /usage per user: {user: {"tier": ..., "windows": {name: window}}}, active windows only."""
    out = {}
    for user in USERS:
        r = client.get(f"/v1/users/{user}/usage", headers=ADMIN_H)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["as_of"] == as_of
        windows = {w["window"]: w for w in doc["windows"]
                   if w["calls"] or Decimal(w["spent_usd"]) or Decimal(w["reserved_usd"])}
        if windows:
            out[user] = {"tier": doc["tier"], "windows": windows}
    return out


# --- the dashboard's queries, as the data source runs them ----------------------------------------


class Grafana:
    def __init__(self, client) -> None:
        self.client = client

    def run(self, sql: str) -> list[dict[str, Any]]:
        result = self.client.query(sql, settings={"readonly": 1})
        return [dict(zip(result.column_names, row)) for row in result.result_rows]

    def context(self, **selected: Any) -> QueryContext:
        base = QueryContext(datetime.fromtimestamp(T0 / 1000, UTC) - timedelta(days=30),
                            datetime.fromtimestamp(T0 / 1000, UTC), timedelta(hours=1))
        variables = {}
        for v in BUDGETS["templating"]["list"]:
            options = tuple(str(next(iter(r.values()))) for r in self.run(expand(v["query"], base)))
            current = selected.get(v["name"], ["$__all"])
            variables[v["name"]] = Variable(v["name"], current, options=options, multi=v["multi"],
                                            include_all=v["includeAll"])
        return QueryContext(base.time_from, base.time_to, base.interval, variables)

    def panel(self, title: str, ctx: QueryContext) -> list[dict[str, Any]]:
        found = [p for p in BUDGETS["panels"] if p["title"] == title and p["type"] != "row"]
        assert len(found) == 1, title
        (target,) = found[0]["targets"]
        return self.run(expand(target["rawSql"], ctx))


@pytest.fixture
def grafana(store, chdb_path, database):
    client = clickhouse_connect.get_client(dsn=f"chdb://{chdb_path}", database=database)
    yield Grafana(client)
    client.close()


@pytest.fixture
def snapshot(service):
    """The seed, one snapshot at T0 by the service's own snapshotter, and the API's answers."""
    app, client = service
    seed(client)
    written = app.state.snapshots.take()
    expected = api_usage(client)
    assert written == sum(len(u["windows"]) for u in expected.values())
    return expected


def one(rows: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(rows) == 1, rows
    return rows[0]


def usd(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def pct(value: float | None) -> Decimal | None:
    return None if value is None else Decimal(repr(value))


def capped(expected, **where) -> list[tuple[str, str, dict[str, Any]]]:
    """(user, tier, window) of the API's answers, with a cap, optionally filtered by tier/window."""
    out = []
    for user, doc in expected.items():
        if "tier" in where and doc["tier"] not in where["tier"]:
            continue
        for name, w in doc["windows"].items():
            if "window" in where and name not in where["window"]:
                continue
            out.append((user, doc["tier"], w))
    return out


# --- tests ----------------------------------------------------------------------------------------


def test_the_seed_as_the_api_sees_it(snapshot):
    """The oracle itself, checked by hand against the seed."""
    got = {u: {n: (w["spent_usd"], w["reserved_usd"], w["percent"], w["status"]) for n, w in d["windows"].items()}
           for u, d in snapshot.items()}
    assert got == {
        "alice": {"session": ("0.90", "0.00", 90.0, "warn"), "week": ("0.90", "0.00", 45.0, "ok"),
                  "month": ("0.90", "0.00", 30.0, "ok")},
        "bob": {"session": ("1.00", "0.00", 100.0, "over"), "week": ("1.00", "0.00", 50.0, "ok"),
                "month": ("1.00", "0.00", 33.3, "ok")},
        "carol": {"session": ("2.00", "7.00", 90.0, "warn"), "rolling_24h": ("2.00", "7.00", 60.0, "ok"),
                  "week": ("2.00", "7.00", 45.0, "ok"), "month": ("2.00", "7.00", 30.0, "ok")},
        "dave": {"session": ("0.50", "0.00", 50.0, "ok"), "week": ("0.50", "0.00", 10.0, "ok"),
                 "month": ("0.50", "0.00", 16.7, "ok")},
        "erin": {"week": ("0.85", "0.00", 42.5, "ok")},
        "o'brien": {"week": ("1.60", "0.00", 80.0, "warn"), "month": ("0.80", "0.00", 26.7, "ok")},
        "frank": {"day": ("3.00", "0.00", 75.0, "ok"), "month": ("3.00", "0.00", 6.0, "ok")},
        "gina": {"session": ("1.20", "0.00", 120.0, "over"), "week": ("1.20", "0.00", 60.0, "ok"),
                 "month": ("1.20", "0.00", 40.0, "ok")},
        "ivan": {"rolling_24h": ("15.00", "0.00", 100.0, "over"), "week": ("15.00", "0.00", 75.0, "ok")},
    }
    assert snapshot["frank"]["tier"] == "team" and snapshot["dave"]["windows"]["week"]["limit_usd"] == "5.00"
    assert snapshot["gina"]["windows"]["session"]["unpriced_calls"] == 1


def test_cap_status_rows_equal_the_api(snapshot, store):
    """Every stored row, column by column, is the API's window (the view is the latest snapshot)."""
    rows = store.query(f"SELECT * FROM {store.database}.cap_status_latest ORDER BY user_id, window_name")
    stored = {(r["user_id"], r["window_name"]): r for r in (dict(zip(rows.columns, row)) for row in rows.rows)}
    assert set(stored) == {(u, n) for u, d in snapshot.items() for n in d["windows"]}
    for (user, name), row in stored.items():
        w = snapshot[user]["windows"][name]
        assert utc(row["taken_at"]) == datetime(2026, 1, 1, 9, tzinfo=UTC)
        assert row["tier"] == snapshot[user]["tier"]
        assert (row["limit_usd"], row["spent_usd"], row["reserved_usd"], row["remaining_usd"]) == (
            usd(w["limit_usd"]), usd(w["spent_usd"]), usd(w["reserved_usd"]), usd(w["remaining_usd"]))
        assert row["percent"] == pct(w["percent"]) and row["status"] == w["status"]
        assert row["hard"] == w["hard"] and row["warn_at"] == usd(w["warn_at"])
        assert iso(row["window_start"]) == w["window_start"] and iso(row["resets_at"]) == w["resets_at"]
        assert (row["calls"], row["unpriced_calls"], row["estimate"]) == (w["calls"], w["unpriced_calls"],
                                                                          w["estimate"])
    assert stored[("frank", "day")]["timezone"] == "Asia/Kolkata"
    # Kolkata's day began at 18:30 UTC the day before.
    assert utc(stored[("frank", "day")]["window_start"]) == datetime(2025, 12, 31, 18, 30, tzinfo=UTC)


def utc(value: datetime) -> datetime:
    """ClickHouse's DateTime64(3, 'UTC') arrives naive (UTC) or aware, by client version."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    value = utc(value)
    return value.strftime("%Y-%m-%dT%H:%M:%S") + f".{value.microsecond // 1000:03d}Z"


@pytest.mark.parametrize("selected", [{}, {"tier": ["pro"]}, {"window": ["session", "rolling_24h"]}],
                         ids=["all", "tier=pro", "window=session+rolling"])
def test_stats(snapshot, grafana, selected):
    ctx = grafana.context(**selected)
    windows = capped(snapshot, **selected)
    users = lambda keep: len({u for u, _, w in windows if keep(w)})  # noqa: E731
    assert one(grafana.panel("Users over a cap", ctx)) == {
        "users_over": users(lambda w: w["status"] == "over"),
        "over_a_hard_cap": users(lambda w: w["status"] == "over" and w["hard"])}
    assert one(grafana.panel("Users at 80% or more of a cap", ctx)) == {
        "users": users(lambda w: w["percent"] is not None and w["percent"] >= 80)}
    assert one(grafana.panel("Users in an open window", ctx)) == {
        "users": users(lambda w: True), "users_capped": users(lambda w: w["limit_usd"] is not None)}
    if not selected:  # by hand: bob, gina (sessions) and ivan (rolling); and o'brien, alice, carol
        assert one(grafana.panel("Users over a cap", ctx)) == {"users_over": 3, "over_a_hard_cap": 3}
        assert one(grafana.panel("Users at 80% or more of a cap", ctx)) == {"users": 6}
        assert one(grafana.panel("Users in an open window", ctx)) == {"users": 9, "users_capped": 9}
    if selected == {"tier": ["pro"]}:
        assert one(grafana.panel("Users over a cap", ctx))["users_over"] == 1  # ivan


@pytest.mark.parametrize("selected", [{}, {"tier": ["free", "team"]}], ids=["all", "tier=free+team"])
def test_users_near_or_over_a_cap(snapshot, grafana, selected):
    ctx = grafana.context(**selected)
    got = grafana.panel("Users near or over a cap", ctx)
    expected = sorted(
        ({"user": u, "tier_name": tier, "cap_window": w["window"], "spent": usd(w["spent_usd"]),
          "reserved": usd(w["reserved_usd"]), "cap": usd(w["limit_usd"]), "used": pct(w["percent"]),
          "cap_status": w["status"], "cap_kind": "hard" if w["hard"] else "soft", "resets": w["resets_at"],
          "calls_unpriced": w["unpriced_calls"]}
         for u, tier, w in capped(snapshot, **selected) if w["percent"] is not None and w["percent"] >= 80),
        key=lambda r: (-r["used"], r["user"], r["cap_window"]))
    assert [{**r, "resets": iso(r["resets"])} for r in got] == expected
    if not selected:
        assert [(r["user"], r["cap_window"], r["used"]) for r in got] == [
            ("gina", "session", Decimal("120.0")), ("bob", "session", Decimal("100.0")),
            ("ivan", "rolling_24h", Decimal("100.0")), ("alice", "session", Decimal("90.0")),
            ("carol", "session", Decimal("90.0")), ("o'brien", "week", Decimal("80.0"))]
        # The session reset is 5 hours after its first call; the rolling window's when its call ages out.
        assert iso(got[1]["resets"]) == "2026-01-01T12:00:00.000Z"
        assert iso(got[2]["resets"]) == "2026-01-01T10:00:00.000Z"


def test_user_links_to_user_detail(snapshot, grafana):
    (panel,) = [p for p in BUDGETS["panels"] if p["title"] == "Users near or over a cap"]
    (link,) = [prop["value"][0] for o in panel["fieldConfig"]["overrides"] if o["matcher"]["options"] == "user"
               for prop in o["properties"] if prop["id"] == "links"]
    assert link["url"].startswith("/d/spanmeter-user-detail/") and "${__value.raw:percentencode}" in link["url"]
    (gauge,) = [o for o in panel["fieldConfig"]["overrides"] if o["matcher"]["options"] == "used"]
    props = {p["id"]: p["value"] for p in gauge["properties"]}
    assert props["custom.cellOptions"]["type"] == "gauge" and props["unit"] == "percent"


def test_users_by_highest_share(snapshot, grafana):
    got = grafana.panel("Users by their highest share of a cap", grafana.context())
    top: dict[str, Decimal] = {}
    for user, _, w in capped(snapshot):
        if w["percent"] is not None:
            top[user] = max(top.get(user, Decimal(0)), pct(w["percent"]))

    def band(p: Decimal) -> str:
        bands = [(25, "< 25%"), (50, "25-50%"), (80, "50-80%"), (100, "80-100%")]
        return next((name for bound, name in bands if p < bound), ">= 100%")

    counts: dict[str, int] = {}
    for p in sorted(top.values()):
        counts[band(p)] = counts.get(band(p), 0) + 1
    assert [(r["band"], r["users"]) for r in got] == list(counts.items())
    # erin 42.5; dave 50; frank 75; alice, carol 90; o'brien 80; bob, gina, ivan >= 100
    assert counts == {"25-50%": 1, "50-80%": 2, "80-100%": 3, ">= 100%": 3}


def test_users_per_tier(snapshot, grafana):
    got = grafana.panel("Users per tier", grafana.context())
    expected = []
    for tier in sorted({d["tier"] for d in snapshot.values()}):
        windows = capped(snapshot, tier=[tier])
        expected.append({
            "tier_name": tier,
            "users": len({u for u, _, _ in windows}),
            "at_80pct_or_more": len({u for u, _, w in windows if w["percent"] is not None and w["percent"] >= 80}),
            "over_cap": len({u for u, _, w in windows if w["status"] == "over"}),
        })
    assert got == expected
    assert [(r["tier_name"], r["users"], r["at_80pct_or_more"], r["over_cap"]) for r in got] == [
        ("free", 6, 4, 2), ("pro", 2, 2, 1), ("team", 1, 0, 0)]


def test_tier_caps_table_is_the_tiers_file(snapshot, grafana, service):
    app, client = service
    got = grafana.panel("Tier caps", grafana.context())
    limits = {}
    for tier in ("free", "pro", "team"):
        # The API's plan for a user on each tier, with no overrides: the file's caps.
        user = {"free": "alice", "pro": "ivan", "team": "frank"}[tier]
        plan = client.get(f"/v1/users/{user}/limits", headers=ADMIN_H).json()
        assert plan["tier"] == tier
        for name, cap in plan["caps"].items():
            limits[(tier, name)] = (usd(cap["limit_usd"]), usd(cap["warn_at"]), "hard" if cap["hard"] else "soft",
                                    plan["timezone"])
    assert {(r["tier_name"], r["cap_window"]): (r["cap"], r["warn_at_share"], r["cap_kind"], r["time_zone"])
            for r in got} == limits
    assert [(r["tier_name"], r["cap_window"]) for r in got] == [
        ("free", "session"), ("free", "week"), ("free", "month"),
        ("pro", "session"), ("pro", "rolling_24h"), ("pro", "week"), ("pro", "month"),
        ("team", "day"), ("team", "month")]
    assert {r["default_tier"] for r in got if r["tier_name"] == "free"} == {"default"}
    assert limits[("pro", "month")] == (Decimal("30"), Decimal("0.9"), "soft", "UTC")
    assert len({r["since"] for r in got}) == 1


def test_snapshot_freshness(snapshot, grafana):
    before = datetime.now(UTC)
    row = one(grafana.panel("Snapshot", grafana.context()))
    after = datetime.now(UTC)
    assert utc(row["taken_at_latest"]) == datetime(2026, 1, 1, 9, tzinfo=UTC)
    taken = datetime(2026, 1, 1, 9, tzinfo=UTC)
    assert int((before - taken).total_seconds()) - 1 <= row["age_seconds"] <= int((after - taken).total_seconds()) + 1


def test_variables(snapshot, grafana):
    ctx = grafana.context()
    assert ctx.variables["tier"].options == ("free", "pro", "team")
    assert ctx.variables["window"].options == ("session", "rolling_24h", "day", "week", "month")


def test_a_later_snapshot_replaces_the_earlier(service, grafana):
    """The panels read the latest snapshot only: a session that ended and a call that landed since
    change them; users without an open window leave them."""
    app, client = service
    seed(client)
    app.state.snapshots.take()
    clock = app.state.caps.clock
    clock.now = T0 + 5 * HOUR  # bob's, gina's and dave's sessions ended at 12:00, 13:40 and 13:50
    spend(client, "dave", cents=60, at=T0 + 5 * HOUR - 5 * MIN)  # dave's next session
    app.state.snapshots.take()
    expected = api_usage(client, "2026-01-01T14:00:00.000Z")
    ctx = grafana.context()
    got = {(r["user"], r["cap_window"]): r["used"] for r in grafana.panel("Users near or over a cap", ctx)}
    want = {(u, w["window"]): pct(w["percent"]) for u, _, w in capped(expected)
            if w["percent"] is not None and w["percent"] >= 80}
    assert got == want
    assert ("bob", "session") not in got and ("gina", "session") not in got
    assert expected["dave"]["windows"]["session"]["percent"] == 60.0
    assert utc(one(grafana.panel("Snapshot", ctx))["taken_at_latest"]) == datetime(2026, 1, 1, 14, tzinfo=UTC)
    # The table keeps one row per user and window; older rows merge away.
    store = app.state.store
    assert store.query(f"SELECT count() FROM {store.database}.cap_status_latest").rows[0][0] == sum(
        len(d["windows"]) for d in expected.values())


def test_tier_caps_written_only_when_changed(settings, store, tmp_path):
    from fastapi.testclient import TestClient

    def start(tiers: str) -> None:
        with TestClient(make_app(settings, store, tmp_path, tiers)):
            pass

    count = lambda: store.query(  # noqa: E731
        f"SELECT count(), uniqExact(caps_version) FROM {store.database}.tier_caps").rows[0]
    start(TIERS)
    assert count() == (9, 1)
    start(TIERS + "\n# a comment changes nothing\n")
    assert count() == (9, 1)
    start(TIERS.replace('week: "2.00"', 'week: "2.50"'))
    assert count() == (18, 2)
    current = store.query(f"SELECT tier, window_name, limit_usd FROM {store.database}.tier_caps_current "
                          "WHERE tier = 'free' ORDER BY window_name").rows
    assert current == [("free", "month", Decimal(3)), ("free", "session", Decimal(1)), ("free", "week", Decimal("2.5"))]


def test_a_last_snapshot_at_stop(settings, store, tmp_path):
    from fastapi.testclient import TestClient

    app = make_app(settings, store, tmp_path, caps_snapshot_seconds=3600)
    with TestClient(app) as client:
        app.state.caps.clock = Clock(T0)
        spend(client, "alice", cents=25, at=T0 - MIN)
        assert store.query(f"SELECT count() FROM {store.database}.cap_status").rows[0][0] == 0
    rows = store.query(f"SELECT window_name, spent_usd, percent FROM {store.database}.cap_status_latest "
                       "WHERE user_id = 'alice' ORDER BY window_name").rows
    assert rows == [("month", Decimal("0.25"), Decimal("8.3")), ("session", Decimal("0.25"), Decimal("25.0")),
                    ("week", Decimal("0.25"), Decimal("12.5"))]


def test_without_a_tiers_file_windows_are_tracked_not_capped(settings, store, grafana):
    from fastapi.testclient import TestClient

    from spanmeter.ingest.app import create_app

    app = create_app(settings.model_copy(update={"admin_token": SecretStr(ADMIN), "caps_snapshot_seconds": 0}),
                     store=store)
    with TestClient(app) as client:
        app.state.caps.clock = Clock(T0)
        spend(client, "alice", cents=30, at=T0 - MIN)  # unpriced here (no price file): calls, no spend
        app.state.snapshots.take()
    ctx = grafana.context()
    assert one(grafana.panel("Users in an open window", ctx)) == {"users": 1, "users_capped": 0}
    assert one(grafana.panel("Users over a cap", ctx)) == {"users_over": 0, "over_a_hard_cap": 0}
    assert grafana.panel("Users near or over a cap", ctx) == []
    assert {(r["tier_name"], r["cap"]) for r in grafana.panel("Tier caps", ctx)} == {("default", None)}


def test_every_panel_has_a_test():
    asserted = {"Users over a cap", "Users at 80% or more of a cap", "Users in an open window", "Snapshot",
                "Users near or over a cap", "Users by their highest share of a cap", "Users per tier", "Tier caps"}
    assert {p["title"] for p in BUDGETS["panels"] if p["type"] != "row"} == asserted
