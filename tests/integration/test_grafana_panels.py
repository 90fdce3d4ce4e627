"""Every target of every provisioned dashboard, expanded as Grafana and the ClickHouse plugin expand
it (tests/support/grafana_macros.py), run on ClickHouse against a seeded database; each panel must
return the numbers the seed implies, computed here in plain Python from the same seed.

The queries run the way the data source runs them: unqualified table names resolved against the
connection's default database (the data source's `defaultDatabase`), read-only.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal, localcontext
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest

from spanmeter.ingest.records import Attribution, TokenUsage, UsageRecord
from tests.support.grafana_macros import QueryContext, Variable, expand

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = {p.name: json.loads(p.read_text()) for p in sorted((REPO / "grafana" / "dashboards").glob("*.json"))}

FROM = datetime(2026, 2, 26, tzinfo=UTC)
TO = datetime(2026, 3, 21, tzinfo=UTC)
SPAN = TO - FROM  # 23 days; the previous period is [FROM - SPAN, FROM)
PICO = Decimal("0.000000000001")
OPENAI = ("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18")
ANTHROPIC = ("anthropic", "claude-sonnet-4-5", "")  # no response model: grouped on the request model
MYSTERY = ("acme", "mystery-1", "")


# --- the seed --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    key: str  # trace/span ids derive from it; rows of one call (corrections) share it
    time: datetime
    user: str
    model: tuple[str, str, str]
    cost: Decimal | None
    service: str = "api"
    team: str = ""
    feature: str = ""
    session: str = ""
    input: int = 1000
    cached: int = 0
    cache_write: int = 0
    output: int = 100
    status: str = "priced"
    sign: int = 1
    version: str = ""  # price_version; by default the model's version in RATES

    @property
    def price_version(self) -> str:
        if self.cost is None:
            return ""
        return self.version or f"v-{self.provider}-1"

    @property
    def provider(self) -> str:
        return self.model[0]

    @property
    def model_name(self) -> str:  # what the rollups group on
        return self.model[2] or self.model[1]

    @property
    def hour(self) -> datetime:
        return self.time.replace(minute=0, second=0, microsecond=0)

    @property
    def trace_id(self) -> bytes:
        return hashlib.sha256(b"trace:" + self.key.encode()).digest()[:16]

    @property
    def span_id(self) -> bytes:
        return hashlib.sha256(b"span:" + self.key.encode()).digest()[:8]


def unpriced(call: Call, status: str = "unknown_model") -> Call:
    return replace(call, cost=None, status=status)


def seed() -> list[Call]:
    calls: list[Call] = []
    hours = int(SPAN / timedelta(hours=1)) - 1  # never the boundary hour at TO
    for i in range(1, 21):
        for j in range(i):
            model = OPENAI if (i + j) % 2 else ANTHROPIC
            calls.append(Call(
                key=f"u{i:02d}-{j}",
                time=FROM + timedelta(hours=(i * 37 + j * 53) % hours, minutes=(i * 7 + j * 11) % 60,
                                      seconds=j % 60, milliseconds=(i * j) % 1000),
                user=f"u{i:02d}",
                model=model,
                # Spend grows with the cube of i: u20 is the heavy user; 12 decimal places exercised.
                cost=Decimal(i ** 3 * 1000 + j * 17 + 1) / Decimal(1_000_000) + j * PICO,
                service="api" if i % 3 else "worker",
                team=("growth", "core", "")[i % 3],
                feature=("chat", "search", "")[(i + j) % 3],
                session=f"u{i:02d}-s{j // 4}",
                input=1000 + 37 * j + i,
                cached=(200 + j) if j % 2 else 0,
                cache_write=64 if model is ANTHROPIC and j % 3 == 0 else 0,
                output=50 + 13 * j,
            ))
    # A long prompt: over the tier threshold, billed (and its cache reads saved) at tier 1 prices.
    calls.append(Call(key="u20-long", time=FROM + timedelta(days=19, hours=4), user="u20", model=ANTHROPIC,
                      cost=Decimal("1.234567890123"), service="api", team="", feature="chat", session="u20-s9",
                      input=250_000, cached=180_000, cache_write=20_000, output=2000))
    t = FROM + timedelta(days=3, hours=5, minutes=17)
    # Calls without a user: counted in totals, never in per-user panels.
    for k in range(4):
        calls.append(Call(key=f"anon-{k}", time=t + timedelta(days=4 * k), user="", model=OPENAI,
                          cost=Decimal("0.5"), feature="chat", input=800, output=40))
    calls.append(unpriced(Call(key="anon-x", time=t + timedelta(days=1), user="",
                               model=("openai", "gpt-9-preview", ""), cost=None, input=700, output=70)))
    # Unpriced calls: cost unknown, never $0.
    calls += [unpriced(Call(key=f"u05-m{k}", time=FROM + timedelta(days=10 + k, hours=2), user="u05", model=MYSTERY,
                            cost=None, service="api", team="core", feature="chat", session="u05-s0",
                            input=1500, output=300)) for k in range(2)]
    calls.append(unpriced(Call(key="u12-m0", time=FROM + timedelta(days=20, hours=9), user="u12", model=MYSTERY,
                               cost=None, service="worker", team="", feature="search", input=900, output=90)))
    calls += [unpriced(Call(key=f"only-{k}", time=FROM + timedelta(days=2 + 5 * k, hours=13), user="u-unpriced",
                            model=MYSTERY, cost=None, service="worker", team="core", feature="chat",
                            input=400, output=40)) for k in range(3)]
    # A repriced call: fact, cancellation, corrected fact (one call, cost 0.25 now).
    rt = FROM + timedelta(days=21, hours=3, minutes=3)
    repriced = Call(key="u07-repriced", time=rt, user="u07", model=OPENAI, cost=Decimal("0.5"), service="api",
                    team="core", feature="chat", session="u07-s9", input=2000, cached=500, output=200,
                    version="v-openai-0")  # a version missing from the prices table, since corrected
    calls += [repriced, replace(repriced, sign=-1), replace(repriced, cost=Decimal("0.25"), version="")]
    # A call first stored unpriced, then priced.
    late = unpriced(Call(key="u09-late", time=FROM + timedelta(days=6, hours=6), user="u09", model=OPENAI,
                         cost=None, service="worker", team="", feature="search", session="u09-s9",
                         input=1200, output=120))
    calls += [late, replace(late, sign=-1), replace(late, cost=Decimal("0.1"), status="priced")]
    # A user id that needs quoting in SQL; sessions, cached input and an unpriced call.
    ob = dict(user="o'brien", service="api", team="growth", feature="chat")
    calls += [
        Call(key="ob-0", time=FROM + timedelta(days=15, hours=8, minutes=1), model=OPENAI,
             cost=Decimal("0.010000000001"), session="ob-1", input=3000, cached=1024, output=150,
             version="v-openai-0", **ob),  # priced at a version whose rates are not in the prices table
        Call(key="ob-1", time=FROM + timedelta(days=15, hours=8, minutes=9), model=OPENAI,
             cost=Decimal("0.02"), session="ob-1", input=1000, output=90, **ob),
        unpriced(Call(key="ob-2", time=FROM + timedelta(days=15, hours=9, minutes=30), model=MYSTERY,
                      cost=None, session="ob-1", input=500, output=50, **ob)),
        Call(key="ob-3", time=FROM + timedelta(days=16, hours=1), model=ANTHROPIC,
             cost=Decimal("0.03"), session="", input=2500, cached=2000, cache_write=300, output=400,
             **{**ob, "feature": "search"}),
    ]
    # The previous period (trend), and calls outside every window.
    for i in range(1, 6):
        for k in range(2):
            calls.append(Call(key=f"prev-u{i:02d}-{k}", time=FROM - timedelta(days=3 + 7 * k, hours=i),
                              user=f"u{i:02d}", model=OPENAI, cost=Decimal("0.1") * i,
                              service="api" if i % 3 else "worker", team=("growth", "core", "")[i % 3]))
    calls.append(Call(key="prev-u20", time=FROM - timedelta(days=1, hours=4), user="u20", model=ANTHROPIC,
                      cost=Decimal("200"), service="api", team="core"))
    calls.append(Call(key="old-u03", time=datetime(2026, 1, 15, 12, tzinfo=UTC), user="u03", model=OPENAI,
                      cost=Decimal("99"), service="worker"))
    calls.append(Call(key="future-u04", time=TO + timedelta(hours=5), user="u04", model=OPENAI,
                      cost=Decimal("77"), service="api", team="growth"))
    return calls


SEED = seed()

# The prices table (clickhouse/0006): (price_version, tier, above_input_tokens, input, cache_read,
# cache_write) in USD per million tokens; None = not set (billed at the input price).
RATES = [
    ("v-openai-1", "openai", "gpt-4o-mini", 0, 0, "0.15", "0.075", None),
    ("v-anthropic-1", "anthropic", "claude-sonnet-4-5", 0, 0, "3", "0.3", "3.75"),
    ("v-anthropic-1", "anthropic", "claude-sonnet-4-5", 1, 200_000, "6", "0.6", "7.5"),
]


def seed_prices(store, rates=RATES) -> None:
    if not has_prices_table(store):
        return
    for version, provider, model, tier, above, inp, read, write in rates:
        store.command(
            f"INSERT INTO {store.database}.prices (price_version, provider, model, source, effective_from, "
            "window_utc, tier, above_input_tokens, input_per_mtok, cache_read_per_mtok, cache_write_per_mtok, "
            "cache_write_1h_per_mtok, output_per_mtok, reasoning_per_mtok) VALUES ({v:String}, {p:String}, "
            "{m:String}, 'test', '2026-01-01', '', {t:UInt8}, {a:UInt64}, {i:Decimal(18, 12)}, "
            "{r:Nullable(Decimal(18, 12))}, {w:Nullable(Decimal(18, 12))}, NULL, 1, NULL)",
            {"v": version, "p": provider, "m": model, "t": tier, "a": above, "i": inp, "r": read, "w": write},
        )


def to_record(c: Call) -> UsageRecord:
    return UsageRecord(
        trace_id=c.trace_id,
        span_id=c.span_id,
        event_time_ns=int((c.time - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1)) * 1000,
        service_name=c.service,
        provider=c.provider,
        operation="chat",
        request_model=c.model[1],
        response_model=c.model[2],
        usage=TokenUsage(input=c.input, cache_read=c.cached, cache_write=c.cache_write, output=c.output),
        attribution=Attribution(user_id=c.user, session_id=c.session, feature=c.feature, team=c.team),
        cost_usd=c.cost,
        pricing_status=c.status,
        price_version=c.price_version,
        sign=c.sign,
        source="test",
    )


# --- the oracle: what the seed implies -------------------------------------------------------


def in_period(c: Call, start: datetime = FROM, end: datetime = TO) -> bool:
    """Rollup panels: $__timeFilter(hour) keeps hours that start within [from, to]."""
    return start <= c.hour <= end


def in_period_events(c: Call) -> bool:
    """Event panels: $__timeFilter_ms(event_time) keeps calls within [from, to]."""
    return FROM <= c.time <= TO


def priced(calls: Iterable[Call]) -> Decimal:
    return sum((c.cost * c.sign for c in calls if c.cost is not None), Decimal(0))


def net(calls: Iterable[Call], attr: Callable[[Call], int] = lambda c: 1) -> int:
    return sum(attr(c) * c.sign for c in calls)


def by(calls: Iterable[Call], key: Callable[[Call], Any]) -> dict[Any, list[Call]]:
    groups: dict[Any, list[Call]] = defaultdict(list)
    for c in calls:
        groups[key(c)].append(c)
    return dict(groups)


def per_user_priced(calls: list[Call]) -> dict[str, Decimal]:
    """Attributed users with at least one priced call, and their priced spend."""
    out = {}
    for user, cs in by((c for c in calls if c.user), lambda c: c.user).items():
        if net(cs) > net(c for c in cs if c.cost is None):
            out[user] = priced(cs)
    return out


def quantile_inclusive(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (R-7; numpy's default)."""
    xs = sorted(values)
    h = (len(xs) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (h - lo) * (xs[hi] - xs[lo])


def truncate12(value: Decimal) -> Decimal:
    return value.quantize(PICO, rounding=ROUND_DOWN)


# --- running panels as Grafana would -----------------------------------------------------------


@pytest.fixture
def grafana(store, chdb_path, database):
    """A connection like the data source's: default database set, every query read-only."""
    client = clickhouse_connect.get_client(dsn=f"chdb://{chdb_path}", database=database)
    store.insert_usage([to_record(c) for c in SEED])
    seed_prices(store)
    yield Grafana(client, database)
    client.close()


class Grafana:
    def __init__(self, client, database: str) -> None:
        self.client = client
        self.database = database

    def run(self, sql: str) -> list[dict[str, Any]]:
        result = self.client.query(sql, settings={"readonly": 1})
        return [dict(zip(result.column_names, row)) for row in result.result_rows]

    def context(self, dashboard: str, interval: timedelta = timedelta(days=1), start: datetime = FROM,
                end: datetime = TO, **selected: Any) -> QueryContext:
        """Variables as Grafana resolves them: options from the variable queries, then the selection."""
        base = QueryContext(start, end, interval)
        variables: dict[str, Variable] = {}
        for v in DASHBOARDS[dashboard]["templating"]["list"]:
            if v["type"] == "constant":
                variables[v["name"]] = Variable(v["name"], selected.get(v["name"], v["query"]))
                continue
            options = tuple(str(next(iter(r.values()))) for r in self.run(expand(v["query"], base)))
            if v["name"] in selected:
                current = selected[v["name"]]
            elif v["includeAll"]:
                current = ["$__all"] if v["multi"] else "$__all"
            else:
                current = options[0] if options else ""
            variables[v["name"]] = Variable(v["name"], current, options=options, multi=v["multi"],
                                            include_all=v["includeAll"])
        return replace(base, variables=variables)

    def panel(self, dashboard: str, title: str, ctx: QueryContext) -> list[dict[str, Any]]:
        panel = find_panel(dashboard, title)
        (tgt,) = panel["targets"]
        return self.run(expand(tgt["rawSql"], ctx))


def find_panel(dashboard: str, title: str) -> dict[str, Any]:
    found = [p for p in DASHBOARDS[dashboard]["panels"] if p.get("title") == title and p["type"] != "row"]
    assert len(found) == 1, f"{dashboard}: {len(found)} panels titled {title!r}"
    return found[0]


def one(rows: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(rows) == 1, rows
    return rows[0]


def utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


OVERVIEW = "cost-overview.json"
DETAIL = "user-detail.json"

# Filters of the second run: a multi-value selection and a single value of a multi variable.
FILTERED = {"service": ["api"], "team": ["growth", "core"]}


def overview_calls(filtered: bool, start: datetime = FROM, end: datetime = TO) -> list[Call]:
    calls = [c for c in SEED if in_period(c, start, end)]
    if filtered:
        calls = [c for c in calls if c.service in FILTERED["service"] and c.team in FILTERED["team"]]
    return calls


# More selections, each variable on its own and all four at once (model: what the rollups group on).
SELECTIONS: dict[str, dict[str, list[str]]] = {
    "all": {},
    "service+team": FILTERED,
    "feature": {"feature": ["search"]},
    "model": {"model": ["claude-sonnet-4-5", "mystery-1"]},
    "every-filter": {"service": ["api"], "team": ["growth", "core"], "feature": ["chat"],
                     "model": ["claude-sonnet-4-5", "gpt-4o-mini-2024-07-18"]},
}
FILTER_ATTRIBUTES = {"service": "service", "team": "team", "feature": "feature", "model": "model_name"}


def selected_calls(selection: dict[str, list[str]], start: datetime = FROM, end: datetime = TO) -> list[Call]:
    """Calls in the range whose every filtered attribute is one of the selected values."""
    return [c for c in SEED if in_period(c, start, end)
            and all(getattr(c, FILTER_ATTRIBUTES[name]) in values for name, values in selection.items())]


# --- cost overview ---------------------------------------------------------------------------


@pytest.mark.parametrize("filtered", [False, True], ids=["all", "service+team"])
def test_spend_stats(grafana, filtered):
    ctx = grafana.context(OVERVIEW, **(FILTERED if filtered else {}))
    calls = overview_calls(filtered)
    users = per_user_priced(calls)

    assert one(grafana.panel(OVERVIEW, "Total cost", ctx)) == {"cost": priced(calls)}
    active = {u for u, cs in by((c for c in calls if c.user), lambda c: c.user).items() if net(cs) > 0}
    assert one(grafana.panel(OVERVIEW, "Active users", ctx)) == {"users": len(active)}
    assert one(grafana.panel(OVERVIEW, "Cost per active user", ctx)) == {
        "cost_per_user": truncate12(sum(users.values()) / len(users))}
    assert one(grafana.panel(OVERVIEW, "Requests", ctx)) == {"calls": net(calls)}
    assert one(grafana.panel(OVERVIEW, "Tokens", ctx)) == {
        "input": net(calls, lambda c: c.input), "cached_input": net(calls, lambda c: c.cached),
        "output": net(calls, lambda c: c.output)}
    unpriced_calls = [c for c in calls if c.cost is None]
    assert one(grafana.panel(OVERVIEW, "Unpriced usage", ctx)) == {
        "calls_unpriced": net(unpriced_calls), "tokens_unpriced": net(unpriced_calls, lambda c: c.input + c.output)}

    if not filtered:
        # Spot checks by hand: the repriced call counts once at its corrected price; the
        # unpriced-then-priced one at its price; the calls outside the period not at all.
        assert net(calls) == 210 + 1 + 4 + 1 + 2 + 1 + 3 + 1 + 1 + 4
        assert len(active) == 22  # u01..u20, u-unpriced, o'brien
        assert len(users) == 21  # u-unpriced has no priced call: no $0 user in the distribution
        assert one(grafana.panel(OVERVIEW, "Unpriced usage", ctx))["calls_unpriced"] == 1 + 2 + 1 + 3 + 1


def test_filtered_selection_quotes_values(grafana):
    """A multi-value selection becomes 'a','b' inside IN (...); All becomes 1=1."""
    ctx = grafana.context(OVERVIEW, **FILTERED)
    sql = expand(find_panel(OVERVIEW, "Requests")["targets"][0]["rawSql"], ctx)
    # Twice: the whole days' rollup and the partial days' one.
    assert sql.count("service_name IN ('api')") == 2
    assert sql.count("team IN ('growth','core')") == 2
    assert sql.count("1=1") == 4  # feature and model: All
    assert "$" not in sql


def test_month_to_date_and_forecast(grafana):
    ctx = grafana.context(OVERVIEW)
    month_start = datetime(2026, 3, 1, tzinfo=UTC)
    remaining = int((datetime(2026, 4, 1, tzinfo=UTC) - TO).total_seconds())
    assert remaining == 11 * 86400
    mtd_calls = [c for c in SEED if month_start <= c.hour <= TO]
    last7 = priced(c for c in SEED if TO - timedelta(days=7) < c.hour <= TO)
    mtd = priced(mtd_calls)
    with localcontext() as dc:
        dc.prec = 60
        rest = truncate12(last7 * remaining / 604800)

    got = one(grafana.panel(OVERVIEW, "Month to date and forecast", ctx))
    assert got == {
        "month_to_date": mtd,
        "last_7_days": last7,
        "rest_of_month": rest,
        "forecast_month_end": mtd + rest,
        "month_calls_unpriced": net(c for c in mtd_calls if c.cost is None),
    }
    # The period started in February: month to date is less than the period's total.
    assert mtd < priced(overview_calls(False))


def has_prices_table(store) -> bool:
    return bool(store.query(
        "SELECT count() FROM system.tables WHERE database = {db:String} AND name = 'price_rates'", {"db": store.database}
    ).rows[0][0])


# A rate whose tier starts below 32000 input tokens: usage_totals_hourly does not keep the input
# tokens of such calls, so the panel reads their price version's events.
LOW_TIER = ("v-openai-1", "openai", "gpt-4o-mini", 1, 1500, "0.30", "0.05", None)


def savings_from_cached_input(calls: Iterable[Call], low_tier: bool) -> dict[str, Any]:
    """The savings stat the seed implies for `calls`: each priced call using the cache at the tier of
    its price version it was billed at (the highest whose threshold its input exceeds)."""
    rates: dict[str, list[tuple[int, int, Decimal, Decimal]]] = defaultdict(list)
    for version, _, _, tier, above, inp, read, write in RATES + [LOW_TIER] * low_tier:
        i = Decimal(inp)
        rates[version].append((tier, above, i - Decimal(read or inp), Decimal(write or inp) - i))
    read_saving = write_premium = Decimal(0)
    without = 0
    for c in calls:
        if c.cost is None or not (c.cached or c.cache_write):
            continue
        tiers = sorted(rates.get(c.price_version, []))
        if not tiers:
            without += c.sign
            continue
        _, _, saving, premium = [t for t in tiers if t[0] == 0 or c.input > t[1]][-1]
        read_saving += saving * c.cached * c.sign
        write_premium += premium * c.cache_write * c.sign
    savings, premium = truncate12(read_saving / 1_000_000), truncate12(write_premium / 1_000_000)
    return {"cache_read_savings": savings, "cache_write_premium": premium, "net_savings": savings - premium,
            "calls_without_rates": without}


@pytest.mark.parametrize("low_tier", [False, True], ids=["tiers-above-32000", "a-tier-at-1500"])
def test_savings_from_cached_input(grafana, store, low_tier):
    if low_tier:
        seed_prices(store, [LOW_TIER])
    ctx = grafana.context(OVERVIEW)
    expected = savings_from_cached_input([c for c in SEED if in_period(c)], low_tier)
    assert one(grafana.panel(OVERVIEW, "Savings from cached input", ctx)) == expected
    assert expected["calls_without_rates"] == 1  # o'brien's first call; u07's repriced call was corrected
    # The long prompt saved at its tier's rate: 180k cache reads x (6 - 0.6) USD per million.
    assert expected["cache_read_savings"] >= Decimal("0.972")
    # The low tier changes what gpt-4o-mini's cached calls above 1500 input tokens saved.
    tiered = [c for c in SEED if in_period(c) and c.price_version == "v-openai-1" and c.cached and c.input > 1500]
    assert tiered and all(c.input <= 32000 for c in tiered)


def test_cached_input(grafana):
    ctx = grafana.context(OVERVIEW)
    calls = overview_calls(False)
    got = one(grafana.panel(OVERVIEW, "Cached input", ctx))
    cached, inp = net(calls, lambda c: c.cached), net(calls, lambda c: c.input)
    assert got["cached_input"] == cached
    assert got["cached_share"] == pytest.approx(cached / inp, rel=1e-12)

    rows = grafana.panel(OVERVIEW, "Cached input by model", ctx)
    expected = []
    for model, cs in by(calls, lambda c: c.model_name).items():
        i, r, w = net(cs, lambda c: c.input), net(cs, lambda c: c.cached), net(cs, lambda c: c.cache_write)
        expected.append({"model_name": model, "input": i, "cached_input": r, "cache_writes": w,
                         "cached_share": pytest.approx(r / i, rel=1e-12)})
    expected.sort(key=lambda e: (-e["cached_input"], e["model_name"]))
    assert rows == expected
    assert rows[-1]["model_name"] in ("mystery-1", "gpt-9-preview") and rows[-1]["cached_input"] == 0


@pytest.mark.parametrize(("title", "column"), [
    ("Cost by model", lambda c: c.model_name),
    ("Cost by feature", lambda c: c.feature),
    ("Cost by service", lambda c: c.service),
    ("Cost by team", lambda c: c.team),
])
@pytest.mark.parametrize("interval", [timedelta(days=1), timedelta(hours=6)], ids=["1d", "6h"])
@pytest.mark.parametrize("filtered", [False, True], ids=["all", "service+team"])
def test_cost_over_time(grafana, title, column, interval, filtered):
    ctx = grafana.context(OVERVIEW, interval=interval, **(FILTERED if filtered else {}))
    step = interval.total_seconds()
    expected: dict[tuple[datetime, str], Decimal] = {}
    groups = by(overview_calls(filtered), lambda c: (
        datetime.fromtimestamp(c.hour.timestamp() // step * step, UTC), column(c) or "(none)"))
    for key, cs in groups.items():
        if net(cs) != net(c for c in cs if c.cost is None):  # groups of only unpriced calls: no $0 bar
            expected[key] = priced(cs)
    rows = grafana.panel(OVERVIEW, title, ctx)
    assert [(utc(r["time"]), r["series"]) for r in rows] == sorted(expected)
    assert {(utc(r["time"]), r["series"]): r["cost"] for r in rows} == expected
    if title == "Cost by model" and not filtered:
        assert "mystery-1" not in {r["series"] for r in rows}
    assert len(rows) > 10


def test_cost_distribution_across_users(grafana):
    ctx = grafana.context(OVERVIEW)
    users = per_user_priced(overview_calls(False))
    costs = sorted(users.values(), reverse=True)
    total = sum(costs)
    n = len(costs)
    got = one(grafana.panel(OVERVIEW, "Cost distribution across users", ctx))
    floats = [float(v) for v in costs]
    assert got["p50"] == pytest.approx(quantile_inclusive(floats, 0.5), rel=1e-12)
    assert got["p90"] == pytest.approx(quantile_inclusive(floats, 0.9), rel=1e-12)
    assert got["p99"] == pytest.approx(quantile_inclusive(floats, 0.99), rel=1e-12)
    assert got["top_user"] == costs[0]
    top1, top10 = -(-n // 100), -(-n // 10)
    assert (n, top1, top10) == (21, 1, 3)
    assert got["top_1pct_share"] == pytest.approx(float(costs[0]) / float(total), rel=1e-12)
    assert got["top_10pct_share"] == pytest.approx(float(sum(costs[:top10])) / float(total), rel=1e-12)

    bands = grafana.panel(OVERVIEW, "Users by spend band (USD)", ctx)
    edges = [(Decimal("0.01"), "< 0.01"), (Decimal("0.1"), "0.01-0.10"), (Decimal(1), "0.10-1"),
             (Decimal(10), "1-10"), (Decimal(100), "10-100")]

    def band(cost: Decimal) -> str:
        return next((label for edge, label in edges if cost < edge), ">= 100")

    counts: dict[str, int] = defaultdict(int)
    for cost in costs:
        counts[band(cost)] += 1
    order = [label for _, label in edges] + [">= 100"]
    assert bands == [{"band": b, "users": counts[b]} for b in order if counts[b]]
    assert counts[">= 100"] == 3  # u18, u19, u20: i**3 * i / 1000 dollars


def heavy_users(start: datetime = FROM, end: datetime = TO, filtered: bool = False,
                selection: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
    """The heavy users table the seed implies for the range [start, end]: filtered on FILTERED, or
    on `selection` when given."""
    if selection is None:
        selection = FILTERED if filtered else {}
    current = selected_calls(selection, start, end)
    previous = [c for c in selected_calls(selection, start - (end - start), end) if c.hour < start]
    total = priced(current)
    expected = []
    for user, cs in by((c for c in current if c.user), lambda c: c.user).items():
        calls_n = net(cs)
        unpriced_n = net(c for c in cs if c.cost is None)
        cost = None if calls_n == unpriced_n else priced(cs)
        prev = priced(c for c in previous if c.user == user)
        expected.append({
            "user": user, "calls": calls_n, "calls_unpriced": unpriced_n, "cost": cost,
            "share": None if cost is None else pytest.approx(float(cost) / float(total), rel=1e-12),
            "tokens": net(cs, lambda c: c.input + c.output), "previous_cost": prev,
            "trend": None if cost is None or prev <= 0 else pytest.approx(float(cost - prev) / float(prev), rel=1e-12),
        })
    expected.sort(key=lambda e: (e["cost"] is None, -(e["cost"] or 0), e["user"]))
    return expected[:25]


def test_heavy_users(grafana):
    ctx = grafana.context(OVERVIEW)
    expected = heavy_users()
    rows = grafana.panel(OVERVIEW, "Heavy users", ctx)
    assert rows == expected
    assert [r["user"] for r in rows[:3]] == ["u20", "u19", "u18"]
    assert rows[-1] == {**rows[-1], "user": "u-unpriced", "cost": None}  # unknown cost, never $0, last
    u20 = next(r for r in rows if r["user"] == "u20")
    assert u20["previous_cost"] == Decimal(200) and u20["trend"] < 0


def test_unpriced_usage_by_model(grafana):
    ctx = grafana.context(OVERVIEW)
    calls = [c for c in SEED if in_period_events(c) and c.cost is None]
    expected = []
    for (provider, model, reason), cs in by(calls, lambda c: (c.provider, c.model_name, c.status)).items():
        if net(cs):
            expected.append({"provider": provider, "model_name": model, "reason": reason, "calls": net(cs),
                             "input": net(cs, lambda c: c.input), "output": net(cs, lambda c: c.output),
                             "first_seen": min(c.time for c in cs), "last_seen": max(c.time for c in cs)})
    expected.sort(key=lambda e: (-e["calls"], e["model_name"]))
    rows = grafana.panel(OVERVIEW, "Unpriced usage by model", ctx)
    for r in rows:
        r["first_seen"], r["last_seen"] = utc(r["first_seen"]), utc(r["last_seen"])
    assert rows == expected
    # u09's call was unpriced, then priced: it is not unpriced any more.
    assert [(r["model_name"], r["calls"]) for r in rows] == [("mystery-1", 7), ("gpt-9-preview", 1)]


def test_filter_variables(grafana):
    base = QueryContext(FROM, TO, timedelta(days=1))
    in_days = [c for c in SEED if FROM.date() <= c.time.date() <= TO.date()]
    variables = {v["name"]: v for v in DASHBOARDS[OVERVIEW]["templating"]["list"]}
    for name, attr in [("service", "service"), ("team", "team"), ("feature", "feature"), ("model", "model_name")]:
        rows = grafana.run(expand(variables[name]["query"], base))
        values = sorted({getattr(c, attr) for c in in_days if getattr(c, attr)})
        assert [next(iter(r.values())) for r in rows] == values, name


# --- user detail -----------------------------------------------------------------------------

OB = "o'brien"


def user_calls(user: str, events: bool = False, start: datetime = FROM, end: datetime = TO) -> list[Call]:
    return [c for c in SEED if c.user == user and (in_period_events(c) if events else in_period(c, start, end))]


def test_user_variable_orders_by_spend(grafana):
    (variable,) = [v for v in DASHBOARDS[DETAIL]["templating"]["list"] if v["name"] == "user"]
    rows = grafana.run(expand(variable["query"], QueryContext(FROM, TO, timedelta(days=1))))
    in_days = [c for c in SEED if FROM.date() <= c.time.date() <= TO.date() and c.user]
    spend = {u: priced(cs) for u, cs in by(in_days, lambda c: c.user).items()}
    assert [r["user_id"] for r in rows] == sorted(spend, key=lambda u: (-spend[u], u))
    assert rows[0]["user_id"] == "u20"


@pytest.mark.parametrize("user", [OB, "u07", "u-unpriced"])
def test_user_stats(grafana, user):
    ctx = grafana.context(DETAIL, user=user)
    calls = user_calls(user)
    total = priced(c for c in SEED if in_period(c))
    cost = priced(calls)
    assert one(grafana.panel(DETAIL, "Cost", ctx)) == {"cost": cost}
    assert one(grafana.panel(DETAIL, "Share of all spend", ctx)) == {"share": truncate12(cost / total)}
    assert one(grafana.panel(DETAIL, "Requests", ctx)) == {"calls": net(calls)}
    assert one(grafana.panel(DETAIL, "Tokens", ctx)) == {
        "input": net(calls, lambda c: c.input), "cached_input": net(calls, lambda c: c.cached),
        "output": net(calls, lambda c: c.output)}
    assert one(grafana.panel(DETAIL, "Unpriced calls", ctx)) == {"calls_unpriced": net(c for c in calls if c.cost is None)}
    sessions = {s for s, cs in by(user_calls(user), lambda c: c.session).items() if s and net(cs) > 0}
    assert one(grafana.panel(DETAIL, "Session count", ctx)) == {"sessions": len(sessions)}
    if user == OB:
        assert (cost, net(calls), sessions) == (Decimal("0.060000000001"), 4, {"ob-1"})
    if user == "u-unpriced":
        assert cost == 0 and net(calls) == 3  # the stat sums priced spend; "Unpriced calls" says why it is 0


def test_user_detail_for_a_quoted_user_id(grafana):
    ctx = grafana.context(DETAIL, user=OB)
    sql = expand(find_panel(DETAIL, "Cost")["targets"][0]["rawSql"], ctx)
    assert "user_id = 'o\\'brien'" in sql  # ${user:singlequote}: backslash-escaped, a valid ClickHouse literal

    calls = user_calls(OB)
    rows = grafana.panel(DETAIL, "Cost over time by model", ctx)
    expected = {}
    for (day, model), cs in by(calls, lambda c: (c.hour.replace(hour=0), c.model_name)).items():
        if net(cs) != net(c for c in cs if c.cost is None):
            expected[(day, model)] = priced(cs)
    assert {(utc(r["time"]), r["series"]): r["cost"] for r in rows} == expected
    assert ("mystery-1" not in {r["series"] for r in rows})

    by_model = grafana.panel(DETAIL, "By model", ctx)
    assert by_model == [
        {"provider": "openai", "model_name": OPENAI[2], "calls": 2, "input": 4000, "cached_input": 1024, "output": 240,
         "cost": Decimal("0.030000000001"), "calls_unpriced": 0},
        {"provider": "anthropic", "model_name": ANTHROPIC[1], "calls": 1, "input": 2500, "cached_input": 2000,
         "output": 400, "cost": Decimal("0.03"), "calls_unpriced": 0},
        # All its calls unpriced: cost unknown (NULL, shown as "unpriced"), never $0; sorted last.
        {"provider": "acme", "model_name": "mystery-1", "calls": 1, "input": 500, "cached_input": 0, "output": 50,
         "cost": None, "calls_unpriced": 1},
    ]
    by_feature = grafana.panel(DETAIL, "By feature", ctx)
    assert by_feature == [  # by cost: a pico-dollar decides
        {"feature_name": "chat", "calls": 3, "tokens": 4790, "cost": Decimal("0.030000000001"), "calls_unpriced": 1},
        {"feature_name": "search", "calls": 1, "tokens": 2900, "cost": Decimal("0.03"), "calls_unpriced": 0},
    ]


def sessions_table(user: str, start: datetime = FROM, end: datetime = TO) -> list[dict[str, Any]]:
    """The sessions table the seed implies: calls in the hours that start within [start, end]."""
    expected = []
    for session, cs in by(user_calls(user, start=start, end=end), lambda c: c.session).items():
        n, u = net(cs), net(c for c in cs if c.cost is None)
        if n:
            expected.append({"session": session or "(no session)", "started": min(c.time for c in cs),
                             "last_call": max(c.time for c in cs), "calls": n,
                             "input": net(cs, lambda c: c.input), "output": net(cs, lambda c: c.output),
                             "calls_unpriced": u, "cost": None if n == u else priced(cs)})
    expected.sort(key=lambda e: (-e["started"].timestamp(), e["session"]))
    return expected[:100]


def user_panel_rows(grafana: Grafana, title: str, ctx: QueryContext) -> list[dict[str, Any]]:
    rows = grafana.panel(DETAIL, title, ctx)
    for r in rows:
        for key in ("started", "last_call"):
            if key in r:
                r[key] = utc(r[key])
    return rows


def test_user_sessions(grafana):
    for user in (OB, "u07", "u20"):
        ctx = grafana.context(DETAIL, user=user)
        got = user_panel_rows(grafana, "Sessions", ctx)
        assert got == sessions_table(user), user
        if user == OB:
            # A session with priced calls and an unpriced one, and a call without a session.
            assert [(r["session"], r["calls"], r["calls_unpriced"], r["cost"]) for r in got] == [
                ("(no session)", 1, 0, Decimal("0.03")), ("ob-1", 3, 1, Decimal("0.030000000001"))]


def test_calls_table_and_trace_link(grafana):
    ctx = grafana.context(DETAIL, user="u07")
    repriced = next(c for c in SEED if c.key == "u07-repriced")
    rows = [r for r in grafana_calls(grafana, ctx) if r["trace"] == repriced.trace_id.hex()]
    # The repriced call: one row, its corrected cost, its tokens once.
    assert rows == [{**rows[0], "cost": Decimal("0.25"), "input": 2000, "cached_input": 500, "output": 200,
                     "pricing": "priced", "session": "u07-s9"}]

    ctx = grafana.context(DETAIL, user=OB, traces_table=f"{grafana.database}.otel_traces")
    calls = sorted(user_calls(OB, events=True), key=lambda c: c.time, reverse=True)
    got = grafana_calls(grafana, ctx)
    assert [r["trace"] for r in got] == [c.trace_id.hex() for c in calls]
    assert [(r["model_name"], r["cost"], r["pricing"]) for r in got] == [
        (c.model_name, c.cost, "priced" if c.cost is not None else c.status) for c in calls]
    assert got[1]["cost"] is None and got[1]["pricing"] == "unknown_model"  # unpriced: NULL, never $0

    # The trace view behind the trace id: the collector's otel_traces table (its columns, made here).
    grafana.client.command(f"""
        CREATE TABLE {grafana.database}.otel_traces (
            Timestamp DateTime64(9), TraceId String, SpanId String, ParentSpanId String,
            SpanName LowCardinality(String), SpanKind LowCardinality(String), ServiceName LowCardinality(String),
            ResourceAttributes Map(LowCardinality(String), String), SpanAttributes Map(LowCardinality(String), String),
            Duration UInt64, StatusCode LowCardinality(String), StatusMessage String
        ) ENGINE = MergeTree ORDER BY (ServiceName, SpanName, toDateTime(Timestamp))""", settings={"readonly": 0})
    clicked = calls[0]
    trace_hex = clicked.trace_id.hex()
    spans = [("POST /chat", "", "a" * 16, 0, 900_000_000), ("chat gpt-4o-mini", "a" * 16, "b" * 16, 100, 700_000_000),
             ("POST https://api.openai.com", "b" * 16, "c" * 16, 120, 650_000_000)]
    for name, parent, span, offset_ms, duration_ns in spans:
        grafana.client.command(
            f"INSERT INTO {grafana.database}.otel_traces (Timestamp, TraceId, SpanId, ParentSpanId, SpanName, "
            "ServiceName, SpanAttributes, ResourceAttributes, Duration, StatusCode) VALUES "
            "({ts:DateTime64(9)}, {t:String}, {s:String}, {p:String}, {n:String}, 'api', map('user.id', {u:String}), "
            "map('service.name', 'api'), {d:UInt64}, 'Unset')",
            parameters={"ts": clicked.time + timedelta(milliseconds=offset_ms), "t": trace_hex, "s": span, "p": parent,
                        "n": name, "u": OB, "d": duration_ns}, settings={"readonly": 0})
    grafana.client.command(
        f"INSERT INTO {grafana.database}.otel_traces (Timestamp, TraceId, SpanId, SpanName, ServiceName, Duration) "
        "VALUES (now64(9), 'ffffffffffffffffffffffffffffffff', 'dddddddddddddddd', 'other', 'api', 1)",
        settings={"readonly": 0})

    link = next(prop["value"][0] for o in find_panel(DETAIL, "Calls")["fieldConfig"]["overrides"]
                if o["matcher"]["options"] == "trace" for prop in o["properties"] if prop["id"] == "links")
    query = link["internal"]["query"]
    assert link["internal"]["datasourceUid"] == "spanmeter-clickhouse" and query["format"] == 3
    # Clicking the cell: ${__value.raw} is the trace id shown in it; then Explore runs the query.
    click = replace(ctx, scoped={"__value": {"raw": got[0]["trace"], "text": got[0]["trace"]}})
    trace = grafana.run(expand(query["rawSql"], click))
    assert [(s["traceID"], s["spanID"], s["parentSpanID"], s["operationName"]) for s in trace] == [
        (trace_hex, span, parent, name) for name, parent, span, _, _ in spans]
    assert [s["duration"] for s in trace] == pytest.approx([900.0, 700.0, 650.0])
    assert {"key": "user.id", "value": OB} in trace[0]["tags"]
    assert trace[0]["startTime"] == pytest.approx(clicked.time.timestamp() * 1000)


def grafana_calls(grafana: Grafana, ctx: QueryContext) -> list[dict[str, Any]]:
    return grafana.panel(DETAIL, "Calls", ctx)


def calls_table(calls: list[Call]) -> list[tuple[str, Decimal | None]]:
    """(trace, cost) of the Calls table the seed implies: the newest 200 calls net of corrections."""
    keys = by(calls, lambda c: c.key)
    live = [cs for cs in keys.values() if net(cs) > 0]
    live.sort(key=lambda cs: (-cs[0].time.timestamp(), cs[0].trace_id.hex()))
    out = []
    for cs in live[:200]:
        current = [c for c in cs if c.sign > 0][-1]  # the row in force: the last fact
        out.append((cs[0].trace_id.hex(), current.cost))
    return out


@pytest.mark.parametrize("churn", [False, True], ids=["newest-rows", "corrections-at-the-head"])
def test_calls_table_reads_the_newest_rows_exactly(grafana, store, churn):
    """A user with more calls than the table shows: the panel reads only the newest rows when they
    hold 200 calls net of corrections, else the whole range; either way the same 200 calls."""
    base = FROM + timedelta(days=5)
    calls: list[Call] = []
    for k in range(1300):
        c = Call(key=f"bulk-{k}", time=base + timedelta(minutes=7 * k, milliseconds=k % 5), user="bulk",
                 model=OPENAI, cost=Decimal(k + 1) / 1000, session=f"bulk-s{k // 50}")
        calls.append(c)
        if churn and k >= 700:  # the newest 600 calls all cancelled: net 0, 1,200 rows at the head
            calls.append(replace(c, sign=-1))
        elif k % 97 == 0:  # repriced: cancelled and corrected, at the call's own time
            calls += [replace(c, sign=-1), replace(c, cost=c.cost * 2)]
        elif k % 89 == 0:
            calls.append(replace(c, sign=-1))  # taken back entirely
    calls.append(unpriced(Call(key="bulk-x", time=base + timedelta(minutes=7 * 650, seconds=3), user="bulk",
                               model=MYSTERY, cost=None)))
    store.insert_usage([to_record(c) for c in calls])
    ctx = grafana.context(DETAIL, user="bulk")
    got = grafana_calls(grafana, ctx)
    assert [(r["trace"], r["cost"]) for r in got] == calls_table(calls)
    assert len(got) == 200
    if not churn:
        assert got[0]["cost"] == Decimal("1.3")  # bulk-1299, the newest
    else:
        assert got[0]["cost"] == Decimal("0.7")  # bulk-699, the newest call not taken back


# --- a range that starts and ends inside a day --------------------------------------------------

# Whole days come from the daily rollups, the partial first and last days from the hourly ones.
MID_FROM = FROM + timedelta(days=3, hours=5, minutes=13, seconds=20)
MID_TO = TO - timedelta(days=1, hours=5, minutes=31)


# Ranges without a whole day: within one day, and across one midnight.
SHORT_RANGES = {
    "weeks": (MID_FROM, MID_TO),
    "hours": (FROM + timedelta(days=10, hours=3, minutes=20), FROM + timedelta(days=10, hours=19, minutes=5)),
    "overnight": (FROM + timedelta(days=12, hours=13), FROM + timedelta(days=13, hours=11)),
}


@pytest.mark.parametrize("span", sorted(SHORT_RANGES))
@pytest.mark.parametrize("filtered", [False, True], ids=["all", "service+team"])
def test_overview_on_a_range_with_partial_days(grafana, filtered, span):
    start, end = SHORT_RANGES[span]
    ctx = grafana.context(OVERVIEW, start=start, end=end, **(FILTERED if filtered else {}))
    calls = overview_calls(filtered, start, end)
    # The seed has calls in both partial days (and, for weeks, in the previous period's).
    assert any(c.hour.date() == start.date() for c in calls) and any(c.hour.date() == end.date() for c in calls)
    users = per_user_priced(calls)
    active = {u for u, cs in by((c for c in calls if c.user), lambda c: c.user).items() if net(cs) > 0}

    assert one(grafana.panel(OVERVIEW, "Total cost", ctx)) == {"cost": priced(calls)}
    assert one(grafana.panel(OVERVIEW, "Requests", ctx)) == {"calls": net(calls)}
    assert one(grafana.panel(OVERVIEW, "Active users", ctx)) == {"users": len(active)}
    assert one(grafana.panel(OVERVIEW, "Cost per active user", ctx)) == {
        "cost_per_user": truncate12(sum(users.values()) / len(users))}
    got = one(grafana.panel(OVERVIEW, "Cost distribution across users", ctx))
    costs = sorted(users.values(), reverse=True)
    assert got["top_user"] == costs[0]
    assert got["p50"] == pytest.approx(quantile_inclusive([float(v) for v in costs], 0.5), rel=1e-12)
    assert sum(r["users"] for r in grafana.panel(OVERVIEW, "Users by spend band (USD)", ctx)) == len(users)
    expected = heavy_users(start, end, filtered)
    assert grafana.panel(OVERVIEW, "Heavy users", ctx) == expected
    if span == "weeks":
        assert any(e["previous_cost"] > 0 for e in expected)
        if not filtered:  # u01's only call is before the range; u-unpriced is active but has no priced call
            assert "u01" not in active and (len(active), len(users)) == (21, 20)


@pytest.mark.parametrize("low_tier", [False, True], ids=["tiers-above-32000", "a-tier-at-1500"])
@pytest.mark.parametrize("span", ["weeks", "overnight"])
@pytest.mark.parametrize("selection", sorted(SELECTIONS))
def test_savings_from_cached_input_filtered_on_partial_days(grafana, store, selection, span, low_tier):
    """Rollup rows of whole and partial days and, with a tier below 32000 input tokens, the events,
    under every filter."""
    if low_tier:
        seed_prices(store, [LOW_TIER])
    start, end = SHORT_RANGES[span]
    ctx = grafana.context(OVERVIEW, start=start, end=end, **SELECTIONS[selection])
    calls = selected_calls(SELECTIONS[selection], start, end)
    expected = savings_from_cached_input(calls, low_tier)
    assert one(grafana.panel(OVERVIEW, "Savings from cached input", ctx)) == expected
    assert expected["cache_read_savings"] > 0  # every case has priced calls reading the cache
    # gpt-4o-mini's calls above 1500 input tokens (billed at the low tier, so counted from their
    # events) are in the weeks, where "model" leaves them out
    low = [c for c in calls if c.price_version == "v-openai-1" and c.cached and c.input > 1500]
    assert bool(low) == (span == "weeks" and selection != "model")


@pytest.mark.parametrize("span", ["full", "weeks"])
@pytest.mark.parametrize("selection", ["feature", "model", "every-filter"])
def test_heavy_users_filtered(grafana, selection, span):
    start, end = (FROM, TO) if span == "full" else SHORT_RANGES[span]
    ctx = grafana.context(OVERVIEW, start=start, end=end, **SELECTIONS[selection])
    expected = heavy_users(start, end, selection=SELECTIONS[selection])
    assert grafana.panel(OVERVIEW, "Heavy users", ctx) == expected
    assert len(expected) >= 7 and all(e["share"] is not None for e in expected if e["cost"] is not None)


# A period whose previous one holds no call (it starts at the oldest call): every trend empty.
NO_PREVIOUS = (datetime(2026, 1, 15, 12, tzinfo=UTC), FROM + timedelta(days=3, hours=12, minutes=30))


@pytest.mark.parametrize("selection", ["all", "every-filter"])
def test_heavy_users_without_a_previous_period(grafana, selection):
    start, end = NO_PREVIOUS
    assert min(c.time for c in SEED) == start
    ctx = grafana.context(OVERVIEW, start=start, end=end, **SELECTIONS[selection])
    expected = heavy_users(start, end, selection=SELECTIONS[selection])
    rows = grafana.panel(OVERVIEW, "Heavy users", ctx)
    assert rows == expected
    assert rows and all(r["previous_cost"] == 0 and r["trend"] is None for r in rows)
    if selection == "all":
        assert next(r for r in rows if r["user"] == "u03")["cost"] >= Decimal(99)  # the oldest call


@pytest.mark.parametrize("user", [OB, "u20", "u05"])
def test_user_detail_on_a_range_with_partial_days(grafana, user):
    ctx = grafana.context(DETAIL, start=MID_FROM, end=MID_TO, user=user)
    calls = user_calls(user, start=MID_FROM, end=MID_TO)
    assert one(grafana.panel(DETAIL, "Cost", ctx)) == {"cost": priced(calls)}
    assert one(grafana.panel(DETAIL, "Requests", ctx)) == {"calls": net(calls)}
    assert one(grafana.panel(DETAIL, "Unpriced calls", ctx)) == {"calls_unpriced": net(c for c in calls if c.cost is None)}
    total = priced(c for c in SEED if in_period(c, MID_FROM, MID_TO))
    assert one(grafana.panel(DETAIL, "Share of all spend", ctx)) == {"share": truncate12(priced(calls) / total)}
    sessions = sessions_table(user, MID_FROM, MID_TO)
    assert user_panel_rows(grafana, "Sessions", ctx) == sessions
    assert one(grafana.panel(DETAIL, "Session count", ctx)) == {
        "sessions": sum(1 for r in sessions if r["session"] != "(no session)" and r["calls"] > 0)}
    assert net(calls) > 0


# --- every panel is asserted -------------------------------------------------------------------

ASSERTED = {
    OVERVIEW: {"Total cost", "Active users", "Cost per active user", "Requests", "Tokens", "Unpriced usage",
               "Month to date and forecast", "Savings from cached input", "Cached input", "Cost by model", "Cost by feature", "Cost by service",
               "Cost by team", "Cost distribution across users", "Users by spend band (USD)", "Heavy users",
               "Unpriced usage by model", "Cached input by model"},
    DETAIL: {"Cost", "Share of all spend", "Requests", "Tokens", "Unpriced calls", "Session count", "Sessions",
             "Cost over time by model", "By model", "By feature", "Calls"},
}


# Dashboards whose panels another file asserts, with its own check that every panel has a test.
ASSERTED_ELSEWHERE = {"budgets.json": "test_grafana_budgets.py"}


def test_every_panel_has_a_test():
    """A panel added to a dashboard without numbers asserted here fails this test."""
    for name, dashboard in DASHBOARDS.items():
        if name in ASSERTED_ELSEWHERE:
            assert "def test_every_panel_has_a_test(" in (Path(__file__).parent / ASSERTED_ELSEWHERE[name]).read_text()
            continue
        titles = {p["title"] for p in dashboard["panels"] if p["type"] != "row"}
        assert titles == ASSERTED.get(name, set()), name
        for panel in dashboard["panels"]:
            assert panel["type"] == "row" or len(panel["targets"]) == 1, panel["title"]
