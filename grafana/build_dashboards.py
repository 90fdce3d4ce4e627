"""Generate spanmeter's Grafana dashboards (grafana/dashboards/*.json) from one description.

    python grafana/build_dashboards.py          # rewrite the JSON files
    python grafana/build_dashboards.py --check  # exit 1 if a committed file differs

The output is committed beside this script and provisioned by
grafana/provisioning/dashboards/dashboards.yaml. Every panel queries the provisioned data source
(uid `spanmeter-clickhouse`, default database `spanmeter`) with raw SQL for the
grafana-clickhouse-datasource plugin: `$__timeFilter`, `$__timeInterval`, `$__conditionalAll`
and template variables are expanded by Grafana and the plugin, exactly as
tests/support/grafana_macros.py re-implements for tests/integration/test_grafana_panels.py.

Rules every query follows (the schema's, see clickhouse/*.sql):
- rollups (`usage_hourly`, SummingMergeTree) are read with `sum()` and `GROUP BY`; events
  (`usage_events`) multiply every aggregate by `sign`;
- `cost_usd` is priced usage only: unpriced calls are counted and shown apart, never as $0;
- an aggregate's alias never reuses a column name the same query reads.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"

DATASOURCE_UID = "spanmeter-clickhouse"
DATASOURCE_NAME = "spanmeter ClickHouse"
DATASOURCE = {"type": "grafana-clickhouse-datasource", "uid": DATASOURCE_UID}
# The plugin release pinned in docker-compose.yml (GF_INSTALL_PLUGINS); the targets record it.
PLUGIN_VERSION = "4.19.0"
# Grafana 12's dashboard schema version (the image pinned in docker-compose.yml is 12.4).
SCHEMA_VERSION = 41

# Target formats of grafana-clickhouse-datasource.
TIME_SERIES, TABLE, TRACES = 0, 1, 3

# Dashboard variable filters, applied to rollup rows (column names of usage_hourly).
ROLLUP_FILTERS = (
    "$__conditionalAll(service_name IN (${service}), $service)"
    " AND $__conditionalAll(team IN (${team}), $team)"
    " AND $__conditionalAll(feature IN (${feature}), $feature)"
    " AND $__conditionalAll(model IN (${model}), $model)"
)
EVENT_MODEL = "if(response_model != '', response_model, request_model)"
# The same filters on usage_events rows.
EVENT_FILTERS = (
    "$__conditionalAll(service_name IN (${service}), $service)"
    " AND $__conditionalAll(team IN (${team}), $team)"
    " AND $__conditionalAll(feature IN (${feature}), $feature)"
    f" AND $__conditionalAll({EVENT_MODEL} IN (${{model}}), $model)"
)
USER = "user_id = ${user:singlequote}"

# Every filter variable on All: `1=1 AND ...`; any filter set: a constant false (the plugin turns
# `$__conditionalAll(cond, $var)` into 1=1 on All, into cond otherwise). It picks between a rollup
# without the filtered columns and one with them: ClickHouse reads nothing for a branch whose WHERE
# is constant false.
NO_FILTER = " AND ".join(f"$__conditionalAll(0, ${name})" for name in ("service", "team", "feature", "model"))
FROM_TIME, TO_TIME = "$__fromTime", "$__toTime"
# The period before the picked one, of the same length (heavy users' trend).
PREVIOUS_FROM = "$__fromTime - toIntervalSecond(dateDiff('second', $__fromTime, $__toTime))"
PREVIOUS_TO = "$__fromTime - INTERVAL 1 SECOND"


def full_days(lo: str, hi: str) -> str:
    """`day` of a daily rollup: the UTC days all of whose hours start within [lo, hi]."""
    return (f"day >= toDate(toStartOfDay(({lo}) + INTERVAL 86399 SECOND, 'UTC')) "
            f"AND day < toDate(toStartOfDay(({hi}) + INTERVAL 3600 SECOND, 'UTC'))")


def edge_hours(lo: str, hi: str) -> str:
    """`hour` of an hourly rollup: the hours within [lo, hi] of the days `full_days` leaves out
    (the picked range's first and last, partial, days), as two ranges of the rollup's key."""
    first = f"toStartOfDay(({lo}) + INTERVAL 86399 SECOND, 'UTC')"
    end = f"toStartOfDay(({hi}) + INTERVAL 3600 SECOND, 'UTC')"
    return f"hour >= {lo} AND hour <= {hi} AND (hour < {first} OR hour >= greatest({first}, {end}))"


def totals_rows(columns: str, lo: str = FROM_TIME, hi: str = TO_TIME, filters: str = ROLLUP_FILTERS) -> str:
    """Rows of the rollups summed over users, with `columns`, covering exactly the hours that start
    within [lo, hi] (what `$__timeFilter(hour)` keeps), `filters` applied: whole days from
    usage_totals_daily (where `hour` is the day's start), the partial first and last days from
    usage_totals_hourly."""
    return f"""SELECT {columns} FROM (SELECT *, toDateTime(day, 'UTC') AS hour FROM usage_totals_daily)
        WHERE {full_days(lo, hi)} AND {filters}
        UNION ALL
        SELECT {columns} FROM usage_totals_hourly
        WHERE {edge_hours(lo, hi)} AND {filters}"""


def user_sums(sums: str, lo: str = FROM_TIME, hi: str = TO_TIME) -> str:
    """Per attributed user, the aggregates `sums` (e.g. "sum(requests) AS calls_n") over exactly the
    hours that start within [lo, hi] (what `$__timeFilter(hour)` keeps), in parts to be summed again:
    whole days from usage_user_daily (one row per user and day), the partial first and last days
    from usage_users_hourly (one row per user and hour); with a filter set, from usage_daily and
    usage_hourly, which split by the filtered columns."""
    days, edges = full_days(lo, hi), edge_hours(lo, hi)
    parts = [
        ("usage_user_daily", f"({NO_FILTER}) AND {days}"),
        ("usage_users_hourly", f"({NO_FILTER}) AND {edges}"),
        ("usage_daily", f"NOT ({NO_FILTER}) AND {days} AND {ROLLUP_FILTERS}"),
        ("usage_hourly", f"NOT ({NO_FILTER}) AND {edges} AND {ROLLUP_FILTERS}"),
    ]
    return "\n        UNION ALL\n        ".join(
        f"SELECT user_id, {sums} FROM {table}\n        WHERE {where} AND user_id != ''\n        GROUP BY user_id"
        for table, where in parts)


def user_rows_of_two_periods(columns: str) -> str:
    """Rows of the per-user rollups with `columns` and `current` (1 for the picked period, 0 for the
    one of the same length before it), covering exactly the hours that start within either period:
    whole days from usage_user_daily, the partial first and last days of each period from
    usage_users_hourly; with a filter set, usage_daily and usage_hourly. One read of each rollup for
    both periods, rows not grouped, users without an id included: the caller sums once. (Each
    branch of a UNION costs ~3 ms of planning on 10M events, the read or not.)"""
    days = f"(({full_days(PREVIOUS_FROM, PREVIOUS_TO)}) OR ({full_days(FROM_TIME, TO_TIME)}))"
    edges = f"(({edge_hours(PREVIOUS_FROM, PREVIOUS_TO)}) OR ({edge_hours(FROM_TIME, TO_TIME)}))"
    # A whole day of the picked period starts at or after its start; one of the previous period before.
    day_current, hour_current = f"toDateTime(day, 'UTC') >= {FROM_TIME}", f"hour >= {FROM_TIME}"
    parts = [
        ("usage_user_daily", day_current, f"({NO_FILTER}) AND {days}"),
        ("usage_users_hourly", hour_current, f"({NO_FILTER}) AND {edges}"),
        ("usage_daily", day_current, f"NOT ({NO_FILTER}) AND {days} AND {ROLLUP_FILTERS}"),
        ("usage_hourly", hour_current, f"NOT ({NO_FILTER}) AND {edges} AND {ROLLUP_FILTERS}"),
    ]
    return "\n        UNION ALL\n        ".join(
        f"SELECT user_id, {current} AS current, {columns} FROM {table}\n        WHERE {where}"
        for table, current, where in parts)


# Active users: attributed (user.id known) with net calls in the period.
ACTIVE_USERS = f"""SELECT user_id
    FROM (
        {user_sums("sum(requests) AS calls_n")}
    )
    GROUP BY user_id
    HAVING sum(calls_n) > 0"""
# Per-user priced spend: attributed users with at least one priced call, the population of every
# spend distribution (a user whose calls are all unpriced has an unknown cost, not $0).
PRICED_USERS = f"""SELECT user_id, sum(cost_n) AS cost
    FROM (
        {user_sums("sum(requests) AS calls_n, sum(unpriced_requests) AS unpriced_n, sum(cost_usd) AS cost_n")}
    )
    GROUP BY user_id
    HAVING sum(calls_n) > sum(unpriced_n)"""
# Price versions with a tier that starts below 32000 input tokens: usage_totals_hourly keeps
# the input tokens of calls above 32000 only (clickhouse/0013), so these calls' tiers need the events.
# Read from prices FINAL, the rows of the price_rates view (clickhouse/0006): through the view, the
# planning of "Savings from cached input" took ~9 ms longer on 10M events.
LOW_TIER_VERSIONS = "SELECT groupUniqArray(price_version) FROM prices FINAL WHERE tier > 0 AND above_input_tokens < 32000"
# A group's cost: NULL when every call in it is unpriced (unknown, not $0).
GROUP_COST = "if(sum(requests) = sum(unpriced_requests), NULL, sum(cost_usd))"

UNPRICED_NOTE = (
    " Cost is priced usage only: calls without a price are counted under unpriced, never as $0."
)


# --- panel helpers ---------------------------------------------------------------------------


def target(sql: str, fmt: int = TABLE, ref: str = "A") -> dict[str, Any]:
    return {
        "datasource": DATASOURCE,
        "editorType": "sql",
        "format": fmt,
        "pluginVersion": PLUGIN_VERSION,
        "queryType": {TIME_SERIES: "timeseries", TABLE: "table", TRACES: "traces"}[fmt],
        "rawSql": sql.strip(),
        "refId": ref,
    }


def _defaults(unit: str | None = None, decimals: int | None = None, **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"color": {"mode": "thresholds"},
                         "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None}]}}
    if unit:
        d["unit"] = unit
    if decimals is not None:
        d["decimals"] = decimals
    d.update(extra)
    return d


def override(field: str, **props: Any) -> dict[str, Any]:
    return {"matcher": {"id": "byName", "options": field},
            "properties": [{"id": k, "value": v} for k, v in props.items()]}


def unpriced_mapping() -> list[dict[str, Any]]:
    # NULL cost is an unpriced call: say so instead of showing an empty cell (never $0).
    return [{"type": "special", "options": {"match": "null", "result": {"text": "unpriced", "color": "orange", "index": 0}}}]


def stat(title: str, sql: str, *, unit: str | None = None, decimals: int | None = None, description: str = "",
         overrides: list[dict[str, Any]] | None = None, red_above_zero: bool = False) -> dict[str, Any]:
    defaults = _defaults(unit, decimals)
    if red_above_zero:
        defaults["thresholds"]["steps"].append({"color": "orange", "value": 1})
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": {
            "colorMode": "value", "graphMode": "none", "justifyMode": "auto", "orientation": "auto",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": "value_and_name", "wideLayout": True, "showPercentChange": False,
        },
        "targets": [target(sql)],
    }


def timeseries(title: str, sql: str, *, unit: str, series_label: str = "series", description: str = "",
               stacked: bool = True) -> dict[str, Any]:
    custom = {
        "drawStyle": "bars", "fillOpacity": 80, "lineWidth": 1, "barAlignment": 0, "showPoints": "never",
        "stacking": {"mode": "normal" if stacked else "none", "group": "A"}, "spanNulls": False,
        "axisPlacement": "auto", "gradientMode": "none",
    }
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        # Rollups are hourly: never ask for a finer bucket than the data has.
        "interval": "1h",
        "fieldConfig": {
            "defaults": {**_defaults(unit), "color": {"mode": "palette-classic"}, "custom": custom,
                         "displayName": "${__field.labels." + series_label + "}"},
            "overrides": [],
        },
        "options": {"legend": {"displayMode": "table", "placement": "right", "showLegend": True, "calcs": ["sum"]},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": [target(sql, TIME_SERIES)],
    }


def table(title: str, sql: str, *, description: str = "", overrides: list[dict[str, Any]] | None = None,
          sort_by: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {**_defaults(), "custom": {"align": "auto", "cellOptions": {"type": "auto"}}},
                        "overrides": overrides or []},
        "options": {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"], "fields": ""},
                    "sortBy": sort_by or []},
        "targets": [target(sql)],
    }


def barchart(title: str, sql: str, *, x_field: str, description: str = "") -> dict[str, Any]:
    return {
        "type": "barchart",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {**_defaults(), "color": {"mode": "palette-classic"},
                                     "custom": {"fillOpacity": 80, "lineWidth": 1}},
                        "overrides": []},
        "options": {"xField": x_field, "orientation": "vertical", "showValue": "auto", "stacking": "none",
                    "groupWidth": 0.7, "barWidth": 0.9, "legend": {"displayMode": "list", "placement": "bottom",
                                                                   "showLegend": True},
                    "tooltip": {"mode": "single", "sort": "none"}, "xTickLabelRotation": 0},
        "targets": [target(sql)],
    }


def row(title: str) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def layout(rows: list[tuple[int, list[tuple[dict[str, Any], int]]]]) -> list[dict[str, Any]]:
    """Place panels left to right, row by row: [(height, [(panel, width), ...]), ...]."""
    panels = []
    y = 0
    next_id = 1
    for height, items in rows:
        x = 0
        for panel, width in items:
            if x + width > 24:
                raise ValueError(f"row at y={y} is wider than 24: {panel['title']}")
            panel = dict(panel)
            panel["id"] = next_id
            next_id += 1
            panel["gridPos"] = {"h": height, "w": width, "x": x, "y": y}
            panels.append(panel)
            x += width
        y += height
    return panels


def query_variable(name: str, label: str, sql: str, *, multi: bool = True, include_all: bool = True) -> dict[str, Any]:
    current = ({"selected": True, "text": ["All"], "value": ["$__all"]} if include_all
               else {"selected": False, "text": "", "value": ""})
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DATASOURCE,
        "query": sql,
        "definition": sql,
        "multi": multi,
        "includeAll": include_all,
        "current": current,
        "options": [],
        "refresh": 2,  # on time range change
        "sort": 0,  # the query's own order
        "regex": "",
        "hide": 0,
        "skipUrlSync": False,
    }


def constant_variable(name: str, value: str, description: str) -> dict[str, Any]:
    return {"type": "constant", "name": name, "description": description, "query": value, "hide": 2,
            "current": {"text": value, "value": value}, "options": [{"selected": True, "text": value, "value": value}],
            "skipUrlSync": True}


def dashboard(uid: str, title: str, description: str, panels: list[dict[str, Any]],
              variables: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["spanmeter"],
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": False,
        "graphTooltip": 1,
        "timezone": "utc",
        "time": {"from": "now-30d", "to": "now"},
        "timepicker": {},
        "refresh": "5m",
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "annotations": {"list": []},
        "links": [{"type": "dashboards", "tags": ["spanmeter"], "asDropdown": False, "includeVars": False,
                   "keepTime": True, "title": "spanmeter", "icon": "external link", "targetBlank": False,
                   "tooltip": "", "url": ""}],
        "templating": {"list": variables},
        "panels": panels,
    }


def filter_variables() -> list[dict[str, Any]]:
    def values(column: str) -> str:
        return (f"SELECT DISTINCT {column} FROM usage_totals_hourly WHERE $__dateFilter(toDate(hour)) "
                f"AND {column} != '' ORDER BY {column}")

    return [
        query_variable("service", "Service", values("service_name")),
        query_variable("team", "Team", values("team")),
        query_variable("feature", "Feature", values("feature")),
        query_variable("model", "Model", values("model")),
    ]


# --- Cost overview ---------------------------------------------------------------------------


def cost_overview() -> dict[str, Any]:
    # Summed over users: the rollups without user_id, hourly for time series (~1,300 rows an hour),
    # daily plus the partial first and last days for sums over the period.
    hourly = f"FROM usage_totals_hourly\nWHERE $__timeFilter(hour) AND {ROLLUP_FILTERS}"

    def period(columns: str) -> str:
        return f"FROM (\n    {totals_rows(columns)}\n)"

    total_cost = stat("Total cost", f"SELECT sum(cost_usd) AS cost\n{period('cost_usd')}", unit="currencyUSD",
                      decimals=2, description="Priced spend in the period." + UNPRICED_NOTE)
    active_users = stat("Active users", f"SELECT count() AS users\nFROM (\n    {ACTIVE_USERS}\n)",
                        description="Users (user.id known) with at least one call in the period.")
    cost_per_user = stat(
        "Cost per active user",
        f"SELECT sum(cost) / nullIf(count(), 0) AS cost_per_user\nFROM (\n    {PRICED_USERS}\n)",
        unit="currencyUSD", decimals=4,
        description="Priced spend of attributed users divided by the users with at least one priced call "
                    "(calls without user.id excluded).",
    )
    requests = stat("Requests", f"SELECT sum(requests) AS calls\n{period('requests')}",
                    description="Provider calls (each counted once: the leaf span), net of corrections.")
    tokens = stat(
        "Tokens",
        "SELECT sum(input_tokens) AS input, sum(cache_read_tokens) AS cached_input, sum(output_tokens) AS output\n"
        + period("input_tokens, cache_read_tokens, output_tokens"),
        unit="short",
        description="Input includes cached input (cache reads and writes); output includes reasoning.",
    )
    unpriced = stat(
        "Unpriced usage",
        "SELECT sum(unpriced_requests) AS calls_unpriced, sum(unpriced_tokens) AS tokens_unpriced\n"
        + period("unpriced_requests, unpriced_tokens"),
        red_above_zero=True,
        description="Calls that could not be priced (unknown model, missing usage): their cost is unknown, not $0. "
                    "Add a price and reprice; the table below names the models.",
    )

    period_end = "toTimeZone($__toTime, 'UTC')"
    month_start = f"toDateTime(toStartOfMonth({period_end}), 'UTC')"
    week_ago = f"{period_end} - INTERVAL 7 DAY"
    month = stat(
        "Month to date and forecast",
        f"""WITH
    toTimeZone($__toTime, 'UTC') AS period_end,
    toDateTime(toStartOfMonth(period_end), 'UTC') AS month_start,
    month_start + INTERVAL 1 MONTH AS month_end,
    dateDiff('second', period_end, month_end) AS remaining_s
SELECT
    sumIf(cost_usd, hour >= month_start) AS month_to_date,
    sumIf(cost_usd, last_week) AS last_7_days,
    last_7_days * remaining_s / 604800 AS rest_of_month,
    month_to_date + rest_of_month AS forecast_month_end,
    sumIf(unpriced_requests, hour >= month_start) AS month_calls_unpriced
FROM (
    {totals_rows("cost_usd, unpriced_requests, hour, 0 AS last_week", f"least({month_start}, {week_ago})", week_ago)}
    UNION ALL
    {totals_rows("cost_usd, unpriced_requests, hour, 1 AS last_week", f"{week_ago} + INTERVAL 1 SECOND", period_end)}
)""",
        unit="currencyUSD", decimals=2,
        overrides=[override("month_calls_unpriced", unit="short", decimals=0)],
        description="Calendar month (UTC) of the time picker's end. Forecast = month to date + the last 7 days' "
                    "spend rate x the time left in the month." + UNPRICED_NOTE,
    )
    savings = stat(
        "Savings from cached input",
        f"""WITH ({LOW_TIER_VERSIONS}) AS low_tier_versions
SELECT
    sum(toDecimal128(rate.3, 12) * cache_read) / 1000000 AS cache_read_savings,
    sum(toDecimal128(rate.4, 12) * cache_write) / 1000000 AS cache_write_premium,
    cache_read_savings - cache_write_premium AS net_savings,
    sumIf(calls, no_rates) AS calls_without_rates
FROM (
    SELECT
        c.cache_read AS cache_read,
        c.cache_write AS cache_write,
        c.calls AS calls,
        -- the tier the calls were billed at: the highest whose threshold their input exceeds
        arrayLast(t -> t.2 = 0 OR c.tier_input > t.1, r.tiers) AS rate,
        empty(r.tiers) AS no_rates
    FROM (
        -- priced calls using the cache, per price version; the rollup keeps a call's input
        -- tokens (tier_input_tokens) above 32000, where tiers start
        SELECT
            0 AS from_events,
            price_version,
            tier_input_tokens AS tier_input,
            sum(priced_cache_read_tokens) AS cache_read,
            sum(priced_cache_write_tokens) AS cache_write,
            sum(priced_cache_requests) AS calls
        FROM (
            {totals_rows("price_version, tier_input_tokens, priced_cache_read_tokens, priced_cache_write_tokens, "
                         "priced_cache_requests")}
        )
        GROUP BY price_version, tier_input
        UNION ALL
        -- rates with a tier starting lower: each call's own input, from the events (read only then:
        -- notEmpty() of the scalar is a constant, and a constant false WHERE reads nothing)
        SELECT 1, price_version, input_tokens, toInt64(cache_read_tokens) * sign, toInt64(cache_write_tokens) * sign,
               toInt64(sign)
        FROM usage_events
        WHERE notEmpty(low_tier_versions) AND has(low_tier_versions, price_version)
            AND $__timeFilter(toStartOfHour(event_time)) AND cost_usd IS NOT NULL
            AND (cache_read_tokens > 0 OR cache_write_tokens > 0) AND {EVENT_FILTERS}
    ) AS c
    LEFT JOIN (
        -- price_rates' cached_input_saving_per_mtok and cache_write_per_mtok - input_per_mtok
        SELECT
            price_version,
            arraySort(t -> t.2, groupArray((above_input_tokens, tier,
                                            input_per_mtok - ifNull(cache_read_per_mtok, input_per_mtok),
                                            ifNull(cache_write_per_mtok, input_per_mtok) - input_per_mtok))) AS tiers
        FROM prices FINAL
        GROUP BY price_version
    ) AS r ON r.price_version = c.price_version
    -- a version with a tier starting below 32000 counts from its events only (filtered after the
    -- join, not with the scalar before the rollup's GROUP BY: ~5 ms less on 10M events)
    WHERE c.from_events = arrayExists(t -> t.2 > 0 AND t.1 < 32000, r.tiers)
)""",
        unit="currencyUSD", decimals=2,
        overrides=[override("calls_without_rates", unit="short", decimals=0)],
        description="What cache reads saved against the uncached input rate, at the exact rate each call was "
                    "priced at (its price_version in price_rates), and what cache writes cost above it. "
                    "Calls without rates: priced calls using the cache whose price version is not in the "
                    "prices table (their savings are not counted).",
    )
    cached = stat(
        "Cached input",
        f"""SELECT
    sum(cache_read_tokens) AS cached_input,
    sum(cache_read_tokens) / nullIf(sum(input_tokens), 0) AS cached_share
{period("cache_read_tokens, input_tokens")}""",
        unit="short",
        overrides=[override("cached_share", unit="percentunit", decimals=1)],
        description="Input tokens served from the provider's prompt cache (billed at the cache-read rate), "
                    "and their share of all input tokens.",
    )

    def over_time(column: str, label: str) -> dict[str, Any]:
        # No filter set: the rollup with one row per hour and value of this dimension
        # (usage_series_hourly); a filter set: usage_totals_hourly, which has every column.
        return timeseries(
            f"Cost by {label}",
            f"""SELECT time, if(value = '', '(none)', value) AS series, cost
FROM (
    SELECT $__timeInterval(hour) AS time, value, sum(cost_usd) AS cost
    FROM usage_series_hourly
    WHERE ({NO_FILTER}) AND dimension = '{label}' AND $__timeFilter(hour)
    GROUP BY time, value
    HAVING sum(requests) != sum(unpriced_requests)
    UNION ALL
    SELECT $__timeInterval(hour) AS time, {column} AS value, sum(cost_usd) AS cost
    FROM usage_totals_hourly
    WHERE NOT ({NO_FILTER}) AND $__timeFilter(hour) AND {ROLLUP_FILTERS}
    GROUP BY time, value
    HAVING sum(requests) != sum(unpriced_requests)
)
ORDER BY time, series""",
            unit="currencyUSD",
            description=f"Priced spend per {label} over time." + UNPRICED_NOTE,
        )

    distribution = stat(
        "Cost distribution across users",
        f"""SELECT
    quantileExactInclusive(0.5)(toFloat64(cost)) AS p50,
    quantileExactInclusive(0.9)(toFloat64(cost)) AS p90,
    quantileExactInclusive(0.99)(toFloat64(cost)) AS p99,
    max(cost) AS top_user,
    toFloat64(arraySum(arraySlice(arrayReverseSort(groupArray(cost)), 1, intDiv(count() + 99, 100))))
        / toFloat64(nullIf(sum(cost), 0)) AS top_1pct_share,
    toFloat64(arraySum(arraySlice(arrayReverseSort(groupArray(cost)), 1, intDiv(count() + 9, 10))))
        / toFloat64(nullIf(sum(cost), 0)) AS top_10pct_share
FROM (
    {PRICED_USERS}
)""",
        unit="currencyUSD", decimals=2,
        overrides=[override("top_1pct_share", unit="percentunit", decimals=1),
                   override("top_10pct_share", unit="percentunit", decimals=1)],
        description="Per-user spend in the period: percentiles (linear interpolation) and the share of attributed "
                    "spend that the top 1% and 10% of active users (rounded up, at least one) account for.",
    )
    bands = barchart(
        "Users by spend band (USD)",
        f"""SELECT
    multiIf(cost < 0.01, '< 0.01', cost < 0.1, '0.01-0.10', cost < 1, '0.10-1', cost < 10, '1-10',
            cost < 100, '10-100', '>= 100') AS band,
    count() AS users
FROM (
    {PRICED_USERS}
)
GROUP BY band
ORDER BY min(cost)""",
        x_field="band",
        description="How many active users spent how much in the period (priced spend, USD).",
    )
    heavy = table(
        "Heavy users",
        f"""SELECT
    user,
    calls,
    calls_unpriced,
    cost,
    toFloat64(cost) / toFloat64(nullIf(period_cost, 0)) AS share,
    tokens,
    previous_cost,
    if(previous_cost > 0 AND cost IS NOT NULL, toFloat64(cost - previous_cost) / toFloat64(previous_cost), NULL) AS trend
FROM (
    SELECT
        user_id AS user,
        sumIf(requests, current) AS calls,
        sumIf(unpriced_requests, current) AS calls_unpriced,
        if(calls = calls_unpriced, NULL, sumIf(cost_usd, current)) AS cost,
        -- all priced spend in the period, calls without a user included
        sum(sumIf(cost_usd, current)) OVER () AS period_cost,
        sumIf(tokens_n, current) AS tokens,
        sumIf(cost_usd, NOT current) AS previous_cost
    FROM (
        {user_rows_of_two_periods("requests, unpriced_requests, cost_usd, input_tokens + output_tokens AS tokens_n")}
    )
    GROUP BY user_id
)
WHERE user != '' AND calls != 0
ORDER BY cost DESC NULLS LAST, user ASC
LIMIT 25""",
        description="Top 25 users by priced spend in the period. Share: of all priced spend in the period. "
                    "Trend: change against the previous period of the same length (empty when it had no spend). "
                    "Click a user for the user detail dashboard.",
        overrides=[
            override("user", links=[{"title": "User detail", "url": "/d/spanmeter-user-detail/user-detail?"
                                      "var-user=${__value.raw:percentencode}&${__url_time_range}"}]),
            override("cost", unit="currencyUSD", decimals=2, mappings=unpriced_mapping()),
            override("previous_cost", unit="currencyUSD", decimals=2),
            override("share", unit="percentunit", decimals=1),
            override("trend", unit="percentunit", decimals=0),
        ],
    )
    unpriced_table = table(
        "Unpriced usage by model",
        f"""SELECT
    provider,
    {EVENT_MODEL} AS model_name,
    pricing_status AS reason,
    sum(sign) AS calls,
    sum(toInt64(input_tokens) * sign) AS input,
    sum(toInt64(output_tokens) * sign) AS output,
    min(event_time) AS first_seen,
    max(event_time) AS last_seen
FROM usage_events
WHERE $__timeFilter_ms(event_time) AND cost_usd IS NULL AND {EVENT_FILTERS}
GROUP BY provider, model_name, reason
HAVING calls != 0
ORDER BY calls DESC, model_name ASC""",
        description="What an operator must add a price for: calls stored with cost NULL, by model and reason.",
    )
    cached_table = table(
        "Cached input by model",
        f"""SELECT
    model AS model_name,
    sum(input_tokens) AS input,
    sum(cache_read_tokens) AS cached_input,
    sum(cache_write_tokens) AS cache_writes,
    sum(cache_read_tokens) / nullIf(sum(input_tokens), 0) AS cached_share
{period("model, input_tokens, cache_read_tokens, cache_write_tokens")}
GROUP BY model_name
HAVING input != 0
ORDER BY cached_input DESC, model_name ASC""",
        description="Prompt-cache use per model: input (cache included), cache reads and cache writes.",
        overrides=[override("cached_share", unit="percentunit", decimals=1)],
    )

    panels = layout([
        (1, [(row("Spend in the period"), 24)]),
        (4, [(total_cost, 4), (active_users, 4), (cost_per_user, 4), (requests, 4), (tokens, 4), (unpriced, 4)]),
        (5, [(month, 10), (savings, 8), (cached, 6)]),
        (1, [(row("Where the money goes"), 24)]),
        (8, [(over_time("model", "model"), 12), (over_time("feature", "feature"), 12)]),
        (8, [(over_time("service_name", "service"), 12), (over_time("team", "team"), 12)]),
        (1, [(row("Who spends it"), 24)]),
        (6, [(distribution, 14), (bands, 10)]),
        (11, [(heavy, 24)]),
        (1, [(row("Unpriced and cached"), 24)]),
        (8, [(unpriced_table, 14), (cached_table, 10)]),
    ])
    return dashboard(
        "spanmeter-cost-overview", "spanmeter: cost overview",
        "LLM spend from spanmeter's rollups: totals, where it goes, who spends it, where it is heading.",
        panels, filter_variables(),
    )


# --- User detail -----------------------------------------------------------------------------

TRACE_SQL = """SELECT
    TraceId AS traceID,
    SpanId AS spanID,
    ParentSpanId AS parentSpanID,
    ServiceName AS serviceName,
    SpanName AS operationName,
    multiply(toUnixTimestamp64Nano(Timestamp), 0.000001) AS startTime,
    multiply(Duration, 0.000001) AS duration,
    arrayMap(key -> map('key', key, 'value', SpanAttributes[key]), mapKeys(SpanAttributes)) AS tags,
    arrayMap(key -> map('key', key, 'value', ResourceAttributes[key]), mapKeys(ResourceAttributes)) AS serviceTags
FROM ${traces_table}
WHERE TraceId = '${__value.raw}'
ORDER BY startTime ASC
LIMIT 1000"""


def trace_link() -> dict[str, Any]:
    """A data link from a call's trace id to the trace view (Explore, the plugin's trace format)."""
    return {
        "title": "Open trace",
        "url": "",
        "internal": {
            "datasourceUid": DATASOURCE_UID,
            "datasourceName": DATASOURCE_NAME,
            "query": {**target(TRACE_SQL, TRACES), "refId": "traces"},
        },
    }


def user_detail() -> dict[str, Any]:
    # The rollup keyed by user first (usage_user_hourly): one user's panels read that user's rows.
    hourly = f"FROM usage_user_hourly\nWHERE {USER} AND $__timeFilter(hour)"
    events = f"FROM usage_events\nWHERE $__timeFilter_ms(event_time) AND {USER}"

    cost = stat("Cost", f"SELECT sum(cost_usd) AS cost\n{hourly}", unit="currencyUSD", decimals=2,
                description="Priced spend of this user in the period." + UNPRICED_NOTE)
    share = stat(
        "Share of all spend",
        f"""SELECT
    (SELECT sum(cost_usd) FROM usage_user_hourly WHERE {USER} AND $__timeFilter(hour))
        / nullIf((SELECT sum(cost_usd) FROM ({totals_rows("cost_usd", filters="1")})), 0) AS share""",
        unit="percentunit", decimals=2, description="This user's part of all priced spend in the period.",
    )
    calls = stat("Requests", f"SELECT sum(requests) AS calls\n{hourly}")
    tokens = stat(
        "Tokens",
        f"SELECT sum(input_tokens) AS input, sum(cache_read_tokens) AS cached_input, sum(output_tokens) AS output\n{hourly}",
        unit="short",
    )
    unpriced = stat("Unpriced calls", f"SELECT sum(unpriced_requests) AS calls_unpriced\n{hourly}", red_above_zero=True,
                    description="Calls of this user that could not be priced: cost unknown, not $0.")
    sessions_count = stat(
        "Session count",
        f"""SELECT count() AS sessions
FROM (
    SELECT session_id
    FROM usage_user_hourly
    WHERE {USER} AND $__timeFilter(hour) AND session_id != ''
    GROUP BY session_id
    HAVING sum(requests) > 0
)""",
        description="Distinct session.id values the application sent with this user's calls.",
    )
    over_time = timeseries(
        "Cost over time by model",
        f"""SELECT time, if(value = '', '(none)', value) AS series, cost
FROM (
    SELECT $__timeInterval(hour) AS time, model AS value, sum(cost_usd) AS cost
    {hourly}
    GROUP BY time, value
    HAVING sum(requests) != sum(unpriced_requests)
)
ORDER BY time, series""",
        unit="currencyUSD", description="Priced spend of this user per model." + UNPRICED_NOTE,
    )
    by_model = table(
        "By model",
        f"""SELECT
    provider,
    model AS model_name,
    sum(requests) AS calls,
    sum(input_tokens) AS input,
    sum(cache_read_tokens) AS cached_input,
    sum(output_tokens) AS output,
    {GROUP_COST} AS cost,
    sum(unpriced_requests) AS calls_unpriced
{hourly}
GROUP BY provider, model_name
HAVING calls != 0
ORDER BY cost DESC, model_name ASC""",
        overrides=[override("cost", unit="currencyUSD", decimals=4, mappings=unpriced_mapping())],
    )
    by_feature = table(
        "By feature",
        f"""SELECT
    if(feature = '', '(none)', feature) AS feature_name,
    sum(requests) AS calls,
    sum(input_tokens) + sum(output_tokens) AS tokens,
    {GROUP_COST} AS cost,
    sum(unpriced_requests) AS calls_unpriced
{hourly}
GROUP BY feature_name
HAVING calls != 0
ORDER BY cost DESC, feature_name ASC""",
        overrides=[override("cost", unit="currencyUSD", decimals=4, mappings=unpriced_mapping())],
    )
    sessions = table(
        "Sessions",
        f"""SELECT
    if(session_id = '', '(no session)', session_id) AS session,
    min(first_event_time) AS started,
    max(last_event_time) AS last_call,
    sum(requests) AS calls,
    sum(input_tokens) AS input,
    sum(output_tokens) AS output,
    sum(unpriced_requests) AS calls_unpriced,
    if(calls = calls_unpriced, NULL, sum(cost_usd)) AS cost
FROM usage_user_hourly
WHERE {USER} AND $__timeFilter(hour)
GROUP BY session_id
HAVING calls != 0
ORDER BY started DESC, session ASC
LIMIT 100""",
        description="The user's sessions (session.id from the application) with their calls and priced cost.",
        overrides=[override("cost", unit="currencyUSD", decimals=4, mappings=unpriced_mapping())],
    )
    recent = table(
        "Calls",
        f"""SELECT
    min(event_time) AS time,
    lower(hex(trace_id)) AS trace,
    any(session_id) AS session,
    any({EVENT_MODEL}) AS model_name,
    any(feature) AS feature_name,
    sum(toInt64(input_tokens) * sign) AS input,
    sum(toInt64(cache_read_tokens) * sign) AS cached_input,
    sum(toInt64(output_tokens) * sign) AS output,
    if(sumIf(sign, cost_usd IS NULL) > 0, NULL, sumIf(cost_usd * sign, cost_usd IS NOT NULL)) AS cost,
    if(sumIf(sign, cost_usd IS NULL) > 0, anyIf(pricing_status, cost_usd IS NULL AND sign > 0), 'priced') AS pricing
{events}
    -- only the newest rows when they hold the 200 calls (a call's rows share its time)
    AND event_time >= (
        SELECT if(countIf(net > 0) >= 200, min(first), toDateTime64(0, 3, 'UTC'))
        FROM (
            SELECT min(event_time) AS first, sum(sign) AS net
            {events}
                AND event_time >= (
                    SELECT min(event_time) FROM (
                        SELECT event_time {events}
                        ORDER BY event_time DESC
                        LIMIT 1000
                    )
                )
            GROUP BY trace_id, span_id
        )
    )
GROUP BY trace_id, span_id
HAVING sum(sign) > 0
ORDER BY time DESC, trace ASC
LIMIT 200""",
        description="The user's latest calls, one row per call net of corrections (a repriced call shows its "
                    "current cost). Click a trace id to open the trace.",
        overrides=[
            override("trace", links=[trace_link()]),
            override("cost", unit="currencyUSD", decimals=6, mappings=unpriced_mapping()),
        ],
    )

    panels = layout([
        (4, [(cost, 4), (share, 4), (calls, 4), (tokens, 4), (unpriced, 4), (sessions_count, 4)]),
        (8, [(over_time, 24)]),
        (7, [(by_model, 12), (by_feature, 12)]),
        (9, [(sessions, 24)]),
        (11, [(recent, 24)]),
    ])
    variables = [
        query_variable(
            "user", "User",
            "SELECT user_id FROM usage_user_daily WHERE $__dateFilter(day) AND user_id != '' "
            "GROUP BY user_id ORDER BY sum(cost_usd) DESC, user_id ASC LIMIT 1000",
            multi=False, include_all=False,
        ),
        constant_variable("traces_table", "otel.otel_traces",
                          "Where the collector's ClickHouse exporter writes traces (the trace links read it)."),
    ]
    return dashboard("spanmeter-user-detail", "spanmeter: user detail",
                     "One user's spend: over time, by model and feature, sessions, and each call with its trace.",
                     panels, variables)


# --- Budgets ---------------------------------------------------------------------------------
# Caps as the caps engine computes them, from the snapshot the service writes to cap_status
# (ingest/budgets.py, clickhouse/0012): sessions cannot be recomputed in SQL, so every panel reads
# the latest snapshot (the view cap_status_latest) and agrees with GET /v1/users/{id}/usage at
# the snapshot's instant. The panels show "now": the time picker does not apply.

BUDGET_FILTERS = (
    "$__conditionalAll(tier IN (${tier}), $tier)"
    " AND $__conditionalAll(window_name IN (${window}), $window)"
)
WINDOW_ORDER = ("multiIf(window_name = 'session', 0, startsWith(window_name, 'rolling_'), 1, window_name = 'day', 2, "
                "window_name = 'week', 3, 4)")
NEAR_PERCENT = 80
SNAPSHOT_NOTE = (" From the latest caps snapshot (every SPANMETER_CAPS_SNAPSHOT_SECONDS, 60 by default): the numbers "
                 "the usage API gave at that instant, reservations included. The time picker does not apply.")


def percent_gauge() -> dict[str, Any]:
    # A bar in each cell: green below 80%, orange from 80%, red from 100% (over the cap).
    return override(
        "used", unit="percent", decimals=1, min=0, max=100,
        thresholds={"mode": "absolute", "steps": [{"color": "green", "value": None},
                                                  {"color": "orange", "value": NEAR_PERCENT},
                                                  {"color": "red", "value": 100}]},
        **{"custom.cellOptions": {"type": "gauge", "mode": "basic", "valueDisplayMode": "text"}},
    )


def not_capped_mapping() -> list[dict[str, Any]]:
    return [{"type": "special", "options": {"match": "null", "result": {"text": "not capped", "index": 0}}}]


def budgets() -> dict[str, Any]:
    over = stat(
        "Users over a cap",
        f"""SELECT
    uniqExactIf(user_id, status = 'over') AS users_over,
    uniqExactIf(user_id, status = 'over' AND hard) AS over_a_hard_cap
FROM cap_status_latest
WHERE {BUDGET_FILTERS}""",
        red_above_zero=True,
        description="Users whose spend plus reservations has reached a cap. Over a hard cap, /check denies their "
                    "calls until the window resets; over a soft cap (hard: false) it warns." + SNAPSHOT_NOTE,
    )
    near = stat(
        f"Users at {NEAR_PERCENT}% or more of a cap",
        f"""SELECT uniqExactIf(user_id, percent >= {NEAR_PERCENT}) AS users
FROM cap_status_latest
WHERE {BUDGET_FILTERS}""",
        red_above_zero=True,
        description=f"Users with at least one window at {NEAR_PERCENT}% of its cap or more, those over it "
                    "included." + SNAPSHOT_NOTE,
    )
    active = stat(
        "Users in an open window",
        f"""SELECT
    uniqExact(user_id) AS users,
    uniqExactIf(user_id, limit_usd IS NOT NULL) AS users_capped
FROM cap_status_latest
WHERE {BUDGET_FILTERS}""",
        description="Users with spend, calls or a reservation in a window still open; capped: in a window "
                    "that has a cap." + SNAPSHOT_NOTE,
    )
    freshness = stat(
        "Snapshot",
        """SELECT
    max(taken_at) AS taken_at_latest,
    dateDiff('second', taken_at_latest, now64(3)) AS age_seconds
FROM cap_status""",
        overrides=[
            override("taken_at_latest", unit="dateTimeAsIso"),
            override("age_seconds", unit="s", decimals=0,
                     thresholds={"mode": "absolute", "steps": [{"color": "green", "value": None},
                                                               {"color": "orange", "value": 300},
                                                               {"color": "red", "value": 900}]}),
        ],
        description="When the caps engine last wrote its numbers, and how long ago. Older than a few intervals: "
                    "the service is stopped or cannot write to ClickHouse, and these panels are that old.",
    )
    near_table = table(
        "Users near or over a cap",
        f"""SELECT
    user_id AS user,
    tier AS tier_name,
    window_name AS cap_window,
    spent_usd AS spent,
    reserved_usd AS reserved,
    limit_usd AS cap,
    percent AS used,
    status AS cap_status,
    if(hard, 'hard', 'soft') AS cap_kind,
    resets_at AS resets,
    unpriced_calls AS calls_unpriced
FROM cap_status_latest
WHERE percent >= {NEAR_PERCENT} AND {BUDGET_FILTERS}
ORDER BY used DESC, user ASC, cap_window ASC
LIMIT 500""",
        description=f"Every window at {NEAR_PERCENT}% of its cap or more. Used = (spent + reserved) / cap. "
                    "Resets: when the window ends (session, day, week, month) or its oldest call leaves it "
                    "(rolling). Calls unpriced: their cost is not in spent (a lower bound). Click a user for "
                    "the user detail dashboard." + SNAPSHOT_NOTE,
        overrides=[
            override("user", links=[{"title": "User detail", "url": "/d/spanmeter-user-detail/user-detail?"
                                      "var-user=${__value.raw:percentencode}&${__url_time_range}"}]),
            override("spent", unit="currencyUSD", decimals=2),
            override("reserved", unit="currencyUSD", decimals=2),
            override("cap", unit="currencyUSD", decimals=2),
            percent_gauge(),
            override("resets", unit="dateTimeAsIso"),
        ],
    )
    distribution = barchart(
        "Users by their highest share of a cap",
        f"""SELECT
    multiIf(top < 25, '< 25%', top < 50, '25-50%', top < {NEAR_PERCENT}, '50-{NEAR_PERCENT}%', top < 100,
            '{NEAR_PERCENT}-100%', '>= 100%') AS band,
    count() AS users
FROM (
    SELECT user_id, max(percent) AS top
    FROM cap_status_latest
    WHERE percent IS NOT NULL AND {BUDGET_FILTERS}
    GROUP BY user_id
)
GROUP BY band
ORDER BY min(top)""",
        x_field="band",
        description="Capped users by the window closest to its cap: how much headroom the population has."
                    + SNAPSHOT_NOTE,
    )
    per_tier = barchart(
        "Users per tier",
        f"""SELECT
    tier AS tier_name,
    uniqExact(user_id) AS users,
    uniqExactIf(user_id, percent >= {NEAR_PERCENT}) AS at_{NEAR_PERCENT}pct_or_more,
    uniqExactIf(user_id, status = 'over') AS over_cap
FROM cap_status_latest
WHERE {BUDGET_FILTERS}
GROUP BY tier_name
ORDER BY tier_name""",
        x_field="tier_name",
        description="Users in an open window per tier (the tier whose caps apply to them now), those at "
                    f"{NEAR_PERCENT}% or more of a cap and those over one." + SNAPSHOT_NOTE,
    )
    tier_caps = table(
        "Tier caps",
        f"""SELECT
    tier AS tier_name,
    if(is_default, 'default', '') AS default_tier,
    window_name AS cap_window,
    limit_usd AS cap,
    warn_at AS warn_at_share,
    if(hard, 'hard', 'soft') AS cap_kind,
    timezone AS time_zone,
    effective_from AS since
FROM tier_caps_current
WHERE {BUDGET_FILTERS}
ORDER BY tier_name ASC, {WINDOW_ORDER} ASC, cap_window ASC""",
        description="The caps of each tier as the service loaded them from SPANMETER_TIERS_FILE (since: when this "
                    "version was first applied; every version is kept in tier_caps). A user's own overrides "
                    "(admin API) show in the tables above, not here. Warn at: the soft limit, a share of the cap.",
        overrides=[
            override("cap", unit="currencyUSD", decimals=2, mappings=not_capped_mapping()),
            override("warn_at_share", unit="percentunit", decimals=0),
            override("since", unit="dateTimeAsIso"),
        ],
    )

    panels = layout([
        (1, [(row("Now"), 24)]),
        (4, [(over, 6), (near, 6), (active, 6), (freshness, 6)]),
        (12, [(near_table, 24)]),
        (1, [(row("Headroom"), 24)]),
        (8, [(distribution, 12), (per_tier, 12)]),
        (1, [(row("Caps"), 24)]),
        (9, [(tier_caps, 24)]),
    ])
    variables = [
        query_variable("tier", "Tier", "SELECT tier FROM tier_caps_current GROUP BY tier ORDER BY tier"),
        query_variable(
            "window", "Window",
            "SELECT window_name FROM (SELECT window_name FROM tier_caps_current UNION ALL "
            f"SELECT window_name FROM cap_status_latest) GROUP BY window_name ORDER BY {WINDOW_ORDER}, window_name",
        ),
    ]
    return dashboard("spanmeter-budgets", "spanmeter: budgets",
                     "Users near or over their caps, from the caps engine's snapshots; the caps of each tier.",
                     panels, variables)


DASHBOARDS = {
    "cost-overview.json": cost_overview,
    "user-detail.json": user_detail,
    "budgets.json": budgets,
}


def render(build) -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a committed dashboard differs from the builder")
    args = parser.parse_args(argv)
    stale = []
    for name, build in DASHBOARDS.items():
        text = render(build)
        path = OUT / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            OUT.mkdir(exist_ok=True)
            path.write_text(text)
    if stale:
        print("stale dashboards (run python grafana/build_dashboards.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
