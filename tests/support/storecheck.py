"""Questions tests ask of a spanmeter database, through any `sql(query) -> rows` function.

    rows = lambda q: store.query(q).rows                 # in-process Store
    rows = svc.sql                                        # a running `spanmeter serve`
    totals(rows, "spanmeter")        # net counts and sums, in the events and in every rollup
    double_counted(rows, "spanmeter")  # keys whose net sign is not 0 or 1: must be 0
    find_everywhere(rows, "spanmeter", "canary-...")  # every (table, column) holding the string

All of them read ClickHouse itself (system tables, every column), so they hold whatever the
schema grows into.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Rows = Callable[[str], list]


def totals(rows: Rows, db: str) -> dict[str, Any]:
    """Net requests, tokens and dollars in usage_events and in each rollup; they must agree."""
    events = rows(
        f"SELECT sum(sign), sum(toInt64(input_tokens) * sign), sum(toInt64(output_tokens) * sign), "
        f"toString(sum(toDecimal128(ifNull(cost_usd, toDecimal64(0, 12)), 12) * sign)), count() "
        f"FROM {db}.usage_events"
    )[0]
    out = {"events": tuple(_plain(v) for v in events[:4]), "event_rows": int(events[4])}
    for rollup in ("usage_hourly", "usage_daily"):
        r = rows(
            f"SELECT sum(requests), sum(input_tokens), sum(output_tokens), toString(sum(cost_usd)) FROM {db}.{rollup}"
        )[0]
        out[rollup] = tuple(_plain(v) for v in r)
    return out


def rows_fingerprint(rows: Rows, db: str, where: str = "1") -> tuple:
    """Row count and an order-independent hash of every stored column of the matching rows."""
    columns = [name for name, in rows(
        f"SELECT name FROM system.columns WHERE database = '{db}' AND table = 'usage_events' "
        "AND name != 'inserted_at' ORDER BY position"
    )]
    hashed = ", ".join(f"ifNull(toString({c}), 'NULL')" for c in columns)
    count, digest = rows(
        f"SELECT count(), toString(groupBitXor(cityHash64({hashed}))) FROM {db}.usage_events WHERE {where}"
    )[0]
    return int(count), str(digest)


def invariants(rows: Rows, db: str, where: str = "1") -> tuple:
    """In one query: the fingerprint of the rows matching `where`, the number of double-counted
    keys, and net (requests, input tokens, output tokens, dollars) of the events and each rollup."""
    columns = _columns(rows, db)
    hashed = ", ".join(f"ifNull(toString({c}), 'NULL')" for c in columns)
    money = "toString(sum(toDecimal128(ifNull(cost_usd, toDecimal64(0, 12)), 12) * sign))"
    rollup = "sum(requests), sum(input_tokens), sum(output_tokens), toString(sum(cost_usd))"
    row = rows(
        f"SELECT (SELECT (count(), toString(groupBitXor(cityHash64({hashed})))) FROM {db}.usage_events WHERE {where}), "
        f"(SELECT count() FROM (SELECT trace_id, span_id, sum(sign) AS s FROM {db}.usage_events "
        "GROUP BY trace_id, span_id HAVING s NOT IN (0, 1))), "
        f"(SELECT (sum(sign), sum(toInt64(input_tokens) * sign), sum(toInt64(output_tokens) * sign), {money}) "
        f"FROM {db}.usage_events), "
        f"(SELECT ({rollup}) FROM {db}.usage_hourly), (SELECT ({rollup}) FROM {db}.usage_daily)"
    )[0]
    fingerprint, doubles, events, hourly, daily = row
    return (tuple(fingerprint), int(doubles), *(tuple(_plain(v) for v in t) for t in (events, hourly, daily)))


_COLUMNS: dict[str, list[str]] = {}


def _columns(rows: Rows, db: str) -> list[str]:
    if db not in _COLUMNS:
        _COLUMNS[db] = [name for name, in rows(
            f"SELECT name FROM system.columns WHERE database = '{db}' AND table = 'usage_events' "
            "AND name != 'inserted_at' ORDER BY position"
        )]
    return _COLUMNS[db]


def double_counted(rows: Rows, db: str) -> int:
    """Keys whose rows net to anything but 0 (cancelled) or 1 (counted once)."""
    return int(rows(
        f"SELECT count() FROM (SELECT trace_id, span_id, sum(sign) AS s FROM {db}.usage_events "
        "GROUP BY trace_id, span_id HAVING s NOT IN (0, 1))"
    )[0][0])


def find_everywhere(rows: Rows, db: str, needle: str) -> list[tuple[str, str, int]]:
    """(table, column, rows) for every column of every table in `db` whose text holds `needle`.

    Every column is cast to text (`toString` covers FixedString ids, numbers and Nullable too),
    and materialized-view targets are plain tables here, so rollups are searched as well. The
    search is case-insensitive; binary columns are also searched for the needle's bytes.
    """
    assert "'" not in needle and "\\" not in needle
    found = []
    tables = [t for t, in rows(
        f"SELECT name FROM system.tables WHERE database = '{db}' AND engine NOT IN ('View', 'MaterializedView')"
    )]
    for table in tables:
        columns = [c for c, in rows(
            f"SELECT name FROM system.columns WHERE database = '{db}' AND table = '{table}'"
        )]
        if not columns:
            continue
        checks = ", ".join(
            f"countIf(positionCaseInsensitive(toString(`{c}`), '{needle}') > 0)" for c in columns
        )
        counts = rows(f"SELECT {checks} FROM {db}.`{table}`")[0]
        found.extend((table, c, int(n)) for c, n in zip(columns, counts) if int(n))
    return found


def _plain(value: Any) -> Any:
    if value is None:
        return 0
    if isinstance(value, str):
        return value.rstrip("0").rstrip(".") if "." in value else value
    return int(value)
