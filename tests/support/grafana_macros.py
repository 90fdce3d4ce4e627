"""What Grafana and the grafana-clickhouse-datasource plugin do to a panel's `rawSql` before it
reaches ClickHouse, re-implemented so tests can run dashboard SQL exactly as Grafana would.

    ctx = QueryContext(time_from=..., time_to=..., interval=timedelta(hours=1),
                       variables={"service": Variable("service", ["$__all"], options=("a", "b"), multi=True, include_all=True)})
    sql = expand(target["rawSql"], ctx)      # then run `sql` on ClickHouse

The steps, in the order the plugin applies them:

1. Frontend, `Datasource.applyTemplateVariables` (src/data/CHDatasource.ts):
   a. `applyConditionalAll`: from the last `$__conditionalAll(cond, $var)` backwards, the call
      becomes `1=1` when the variable's current value is empty or All, else `cond`. Arguments are
      split by `getMacroArgs` (parentheses only, quotes are not special) and the call is replaced
      with JavaScript's `String.prototype.replace` (first occurrence, `$&`-style patterns live).
   b. `getTemplateSrv().replace(sql, scopedVars, this.format)`: Grafana's variable regex; the
      data source's format function quotes a multi-value (array) value as `'a','b'` with no
      escaping and leaves a single value raw; `${var:singlequote}` etc. pick a named format
      instead. All without a custom all value expands to every option; a custom all value is
      inserted raw. Built-ins from the request's scoped vars: `$__interval`, `$__interval_ms`;
      `$__from`/`$__to` (epoch ms) from the macro registry.
   c. Ad-hoc filters: none of spanmeter's dashboards define ad-hoc variables, so not mirrored.
2. Backend (Go), pkg/macros/statement.go `expandStatementMacros`: statement macros (`$__columns`,
   `$__rateColumns`, `$__perSecondColumns`, `$__increaseColumns`, `$__lttb`) rewrite the whole
   query. They are newer than some plugin releases, so spanmeter's dashboards never use them and
   this module refuses a query that does, rather than guess.
3. Backend, grafana/macropro `Interpolate`: `--` and `/* */` comments are blanked first (string
   literals respected), then every macro of pkg/macros/macros.go (merged over macropro's
   defaults) is expanded, longest name first; a token followed by a name character is not a
   match; `(args)` must follow the name directly; arguments split on top-level commas and trimmed;
   an unknown `$__name` is left as it is.

Mirrors: grafana/clickhouse-datasource pkg/macros/macros.go (the macro bodies below),
pkg/macros/statement.go, src/data/CHDatasource.ts; grafana/macropro parser.go, macropro.go,
defaults.go; grafana/grafana public/app/features/templating/template_srv.ts and
packages/grafana-data/src/text/... variable formats.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

ALL_VALUE = "$__all"

__all__ = ["ALL_VALUE", "MacroError", "QueryContext", "Variable", "apply_conditional_all", "expand",
           "expand_macros", "replace_variables", "strip_comments"]


class MacroError(ValueError):
    """A macro call the plugin would refuse (wrong argument count, unbalanced parentheses)."""


@dataclass(frozen=True)
class Variable:
    """A dashboard template variable as Grafana holds it at query time.

    `current` is the selected value: a string for a single-value variable, a list for a
    multi-value one; `"$__all"` (or `["$__all"]`) when All is selected. `options` are the values
    of the variable's options other than All (what All expands to without `all_value`).
    """

    name: str
    current: str | list[str]
    options: tuple[str, ...] = ()
    all_value: str | None = None
    multi: bool = False
    include_all: bool = False

    @property
    def is_all(self) -> bool:
        value = self.current
        return value == ALL_VALUE or (isinstance(value, list) and bool(value) and value[0] == ALL_VALUE)


@dataclass(frozen=True)
class QueryContext:
    time_from: datetime
    time_to: datetime
    interval: timedelta
    variables: Mapping[str, Variable] = field(default_factory=dict)
    # Extra scoped variables, e.g. a data link's `__value` ({"raw": ..., "text": ...}).
    scoped: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for t in (self.time_from, self.time_to):
            if t.tzinfo is None:
                raise ValueError("time range bounds must be timezone-aware")


def expand(raw_sql: str, ctx: QueryContext) -> str:
    """The SQL ClickHouse receives for a panel target's `rawSql`."""
    sql = apply_conditional_all(raw_sql, ctx.variables)
    sql = replace_variables(sql, ctx)
    return expand_macros(sql, ctx)


# --- 1a. $__conditionalAll (CHDatasource.applyConditionalAll) ---------------------------------

_CONDITIONAL_ALL = "$__conditionalAll("
_VAR_IN_PARAM = re.compile(r"(?<=\$\{)[\w\d]+(?=\})|(?<=\$)[\w\d]+")


def apply_conditional_all(raw_query: str, variables: Mapping[str, Variable]) -> str:
    if not raw_query:
        return raw_query
    index = raw_query.rfind(_CONDITIONAL_ALL)
    while index != -1:
        params = _get_macro_args(raw_query, index + len(_CONDITIONAL_ALL) - 1)
        if len(params) != 2:
            return raw_query
        match = _VAR_IN_PARAM.search(params[1].strip())
        phrase = params[0]
        if match:
            variable = variables.get(match.group(0))
            if variable is not None:
                value = _js_to_string(variable.current)
                if value in ("", ALL_VALUE):
                    phrase = "1=1"
        raw_query = _js_replace_first(raw_query, f"{_CONDITIONAL_ALL}{params[0]},{params[1]})", phrase)
        index = raw_query.rfind(_CONDITIONAL_ALL)
    return raw_query


def _get_macro_args(query: str, args_index: int) -> list[str]:
    """CHDatasource.getMacroArgs: split at commas of depth 1; quotes are not special."""
    args: list[str] = []
    depth = 0
    last = 1
    sub = query[args_index:]
    for m in re.finditer(r"[(),]", sub):
        found = m.group(0)
        if found == "(":
            depth += 1
        elif found == ")":
            depth -= 1
        if found == "," and depth == 1:
            args.append(sub[last:m.end() - 1])
            last = m.end()
        if depth == 0:
            args.append(sub[last:m.end() - 1])
            return args
    return []


def _js_to_string(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(_js_to_string(v) for v in value)
    if value is None:
        return ""
    return str(value)


def _js_replace_first(s: str, pattern: str, replacement: str) -> str:
    """`s.replace(pattern, replacement)` with a string pattern, as JavaScript does it."""
    pos = s.find(pattern)
    if pos == -1:
        return s
    out = []
    i = 0
    while i < len(replacement):
        c = replacement[i]
        if c == "$" and i + 1 < len(replacement):
            nxt = replacement[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "&":
                out.append(pattern)
                i += 2
                continue
            if nxt == "`":
                out.append(s[:pos])
                i += 2
                continue
            if nxt == "'":
                out.append(s[pos + len(pattern):])
                i += 2
                continue
        out.append(c)
        i += 1
    return s[:pos] + "".join(out) + s[pos + len(pattern):]


# --- 1b. template variables (TemplateSrv.replace with the data source's format) ----------------

_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}")


def _datasource_format(value: Any) -> str:
    """CHDatasource.format: arrays as 'a','b' (no escaping), anything else as it is."""
    if isinstance(value, list):
        return "'" + "','".join(_js_to_string(v) for v in value) + "'"
    return _js_to_string(value)


def _escape_quote(value: str, quote_char: str) -> str:
    return value.replace(quote_char, "\\" + quote_char)


_FORMATS: dict[str, Callable[[Any], str]] = {
    "raw": lambda v: _js_to_string(v),
    "text": lambda v: _js_to_string(v),
    "singlequote": lambda v: ",".join(f"'{_escape_quote(_js_to_string(x), chr(39))}'" for x in v)
    if isinstance(v, list) else f"'{_escape_quote(_js_to_string(v), chr(39))}'",
    "doublequote": lambda v: ",".join(f'"{_escape_quote(_js_to_string(x), chr(34))}"' for x in v)
    if isinstance(v, list) else f'"{_escape_quote(_js_to_string(v), chr(34))}"',
    "sqlstring": lambda v: "'" + "','".join(_js_to_string(x).replace("'", "''") for x in v) + "'"
    if isinstance(v, list) else "'" + _js_to_string(v).replace("'", "''") + "'",
    "csv": lambda v: ",".join(_js_to_string(x) for x in v) if isinstance(v, list) else _js_to_string(v),
    "pipe": lambda v: "|".join(_js_to_string(x) for x in v) if isinstance(v, list) else _js_to_string(v),
}


def replace_variables(target: str, ctx: QueryContext) -> str:
    def substitute(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(4)
        field_path = m.group(5)
        fmt = m.group(3) or m.group(6)
        formatter: Callable[[Any], str] = _datasource_format
        if fmt is not None:
            if fmt not in _FORMATS:
                raise NotImplementedError(f"variable format {fmt!r} is not mirrored here")
            formatter = _FORMATS[fmt]

        scoped = _scoped_value(name, field_path, ctx)
        if scoped is not None:
            return formatter(scoped)
        if name in ("__from", "__to"):
            t = ctx.time_from if name == "__from" else ctx.time_to
            return str(_unix_ms(t))
        if name == "__url_time_range":
            return f"from={_unix_ms(ctx.time_from)}&to={_unix_ms(ctx.time_to)}"

        variable = ctx.variables.get(name)
        if variable is None:
            return m.group(0)
        value: Any = variable.current
        if variable.is_all:
            if variable.all_value is not None:
                # A custom all value is inserted as it is, whatever the format (but text).
                if fmt != "text":
                    return variable.all_value
                value = variable.all_value
            else:
                value = list(variable.options)
        if value is None:
            return ""
        return formatter(value)

    return _VARIABLE.sub(substitute, target)


def _scoped_value(name: str, field_path: str | None, ctx: QueryContext) -> Any:
    if name == "__interval":
        return _format_duration(ctx.interval)
    if name == "__interval_ms":
        return str(int(ctx.interval / timedelta(milliseconds=1)))
    if name in ctx.scoped:
        value = ctx.scoped[name]
        if isinstance(value, Mapping):
            return value.get(field_path or "text")
        return value
    return None


# --- 2. statement macros (pkg/macros/statement.go) ---------------------------------------------

_STATEMENT_MACROS = ("columns", "rateColumns", "perSecondColumns", "increaseColumns", "lttb")


def _refuse_statement_macros(sql: str) -> None:
    work = strip_comments(sql)
    for m in re.finditer(r"\$__([A-Za-z0-9_]+)", work):
        if m.group(1) in _STATEMENT_MACROS and not _inside_quotes(work, m.start()):
            raise NotImplementedError(
                f"$__{m.group(1)} is a statement macro: not mirrored, and not available in every plugin release"
            )


def _inside_quotes(s: str, pos: int) -> bool:
    i = 0
    while i < pos:
        if s[i] in "'\"`":
            end = _scan_quoted_backslash(s, i)
            if end > pos:
                return True
            i = end
        else:
            i += 1
    return False


def _scan_quoted_backslash(s: str, pos: int) -> int:
    quote_char = s[pos]
    i = pos + 1
    while i < len(s):
        if s[i] == "\\" and i + 1 < len(s):
            i += 2
        elif s[i] == quote_char:
            if i + 1 < len(s) and s[i + 1] == quote_char:
                i += 2
                continue
            return i + 1
        else:
            i += 1
    return len(s)


# --- 3. macropro.Interpolate with the plugin's macros ---------------------------------------------


def strip_comments(query: str) -> str:
    """macropro.StripComments(query, LineComment|BlockComment): comments become spaces."""
    out: list[str] = []
    i = 0
    n = len(query)
    while i < n:
        c = query[i]
        if c in "'\"":
            j = _scan_string_literal(query, i)
            out.append(query[i:j])
            i = j
            continue
        if c == "-" and i + 1 < n and query[i + 1] == "-":
            j = i
            while j < n and query[j] not in "\n\r":
                j += 1
            out.append(" " * (j - i))
            i = j
            continue
        if c == "/" and i + 1 < n and query[i + 1] == "*":
            j = i + 2
            while j < n:
                if j + 1 < n and query[j] == "*" and query[j + 1] == "/":
                    j += 2
                    break
                j += 1
            out.append(" " * (j - i))
            i = j
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _scan_string_literal(s: str, pos: int) -> int:
    """macropro.scanStringLiteral: doubled quotes continue; backslash escapes are NOT recognised."""
    quote_char = s[pos]
    j = pos + 1
    while j < len(s):
        if s[j] == quote_char:
            if j + 1 < len(s) and s[j + 1] == quote_char:
                j += 2
                continue
            return j + 1
        j += 1
    return j


def _unix(t: datetime) -> int:
    return math.floor(t.timestamp())


def _unix_ms(t: datetime) -> int:
    return (t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def _to_datetime(t: datetime) -> str:
    return f"toDateTime({_unix(t)})"


def _to_datetime64(t: datetime) -> str:
    return f"fromUnixTimestamp64Milli({_unix_ms(t)})"


def _to_date(t: datetime) -> str:
    return f"toDate('{t.astimezone(UTC).strftime('%Y-%m-%d')}')"


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _args(name: str, args: Sequence[str], count: int) -> None:
    if len(args) != count:
        raise MacroError(f"$__{name}: unexpected number of arguments: expected {count} argument(s), received {len(args)}")


def _interval_seconds(ctx: QueryContext) -> int:
    return int(max(ctx.interval.total_seconds(), 1))


def _format_duration(d: timedelta) -> str:
    """macropro.FormatDuration: the largest whole unit (1h, 5m, 30s, 250ms)."""
    ms = abs(d // timedelta(milliseconds=1))
    if ms == 0:
        return "0s"
    if ms % 3_600_000 == 0:
        return f"{ms // 3_600_000}h"
    if ms % 60_000 == 0:
        return f"{ms // 60_000}m"
    if ms % 1000 == 0:
        return f"{ms // 1000}s"
    return f"{ms}ms"


def _time_boundary(name: str, op: str, t: datetime, args: Sequence[str]) -> str:
    if not args or (len(args) == 1 and args[0] == ""):
        return f"'{_rfc3339(t)}'"
    if len(args) == 1:
        return f"{args[0]} {op} '{_rfc3339(t)}'"
    raise MacroError(f"$__{name} accepts at most 1 argument (column name), got {len(args)}")


def _time_group(ctx: QueryContext, args: Sequence[str]) -> str:
    _args("timeGroup", args, 2)
    text = args[1].strip().strip("'\"")
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)", text)
    if not m:
        raise MacroError(f"$__timeGroup: invalid interval {text!r}")
    seconds = int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    return f"toStartOfInterval(toDateTime({args[0].strip()}), INTERVAL {int(round(seconds))} second)"


def _not_mirrored(name: str) -> Callable[[QueryContext, Sequence[str]], str]:
    def fn(ctx: QueryContext, args: Sequence[str]) -> str:
        raise NotImplementedError(f"$__{name} is not mirrored here")

    return fn


def _time_filter(ctx: QueryContext, args: Sequence[str]) -> str:
    _args("timeFilter", args, 1)
    c = args[0]
    return f"{c} >= {_to_datetime(ctx.time_from)} AND {c} <= {_to_datetime(ctx.time_to)}"


def _time_filter_ms(ctx: QueryContext, args: Sequence[str]) -> str:
    _args("timeFilter_ms", args, 1)
    c = args[0]
    return f"{c} >= {_to_datetime64(ctx.time_from)} AND {c} <= {_to_datetime64(ctx.time_to)}"


def _date_filter(ctx: QueryContext, args: Sequence[str]) -> str:
    _args("dateFilter", args, 1)
    c = args[0]
    return f"{c} >= {_to_date(ctx.time_from)} AND {c} <= {_to_date(ctx.time_to)}"


def _date_time_filter(ctx: QueryContext, args: Sequence[str]) -> str:
    _args("dateTimeFilter", args, 2)
    d, t = args
    date_part = f"({d} >= {_to_date(ctx.time_from)} AND {d} <= {_to_date(ctx.time_to)})"
    time_part = f"({t} >= {_to_datetime(ctx.time_from)} AND {t} <= {_to_datetime(ctx.time_to)})"
    return f"{date_part} AND {time_part}"


def _time_interval(ctx: QueryContext, args: Sequence[str]) -> str:
    _args("timeInterval", args, 1)
    return f"toStartOfInterval(toDateTime({args[0]}), INTERVAL {_interval_seconds(ctx)} second)"


def _time_interval_ms(ctx: QueryContext, args: Sequence[str]) -> str:
    _args("timeInterval_ms", args, 1)
    ms = int(max(ctx.interval // timedelta(milliseconds=1), 1))
    return f"toStartOfInterval(toDateTime64({args[0]}, 3), INTERVAL {ms} millisecond)"


MACROS: dict[str, Callable[[QueryContext, Sequence[str]], str]] = {
    # grafana/macropro defaults.go (the plugin's map is merged over these)
    "interval": lambda ctx, args: _format_duration(ctx.interval),
    "interval_ms": lambda ctx, args: str(ctx.interval // timedelta(milliseconds=1)),
    "timeFrom": lambda ctx, args: _time_boundary("timeFrom", ">=", ctx.time_from, args),
    "timeTo": lambda ctx, args: _time_boundary("timeTo", "<=", ctx.time_to, args),
    "timeGroup": _time_group,
    "table": _not_mirrored("table"),
    "column": _not_mirrored("column"),
    # grafana/clickhouse-datasource pkg/macros/macros.go
    "fromTime": lambda ctx, args: _to_datetime(ctx.time_from),
    "toTime": lambda ctx, args: _to_datetime(ctx.time_to),
    "fromTime_ms": lambda ctx, args: _to_datetime64(ctx.time_from),
    "toTime_ms": lambda ctx, args: _to_datetime64(ctx.time_to),
    "timeFilter": _time_filter,
    "timeFilter_ms": _time_filter_ms,
    "dateFilter": _date_filter,
    "dateTimeFilter": _date_time_filter,
    "dt": _date_time_filter,
    "timeInterval": _time_interval,
    "timeInterval_ms": _time_interval_ms,
    "interval_s": lambda ctx, args: str(_interval_seconds(ctx)),
}


def expand_macros(query: str, ctx: QueryContext, macros: Mapping[str, Callable[[QueryContext, Sequence[str]], str]] = MACROS) -> str:
    """expandStatementMacros, then macropro.Interpolate: the backend's half."""
    _refuse_statement_macros(query)
    result = strip_comments(query)
    names = sorted(macros, key=lambda n: (-len(n), n))
    for name in names:
        result = _replace_all_macro(result, "$__" + name, lambda raw, fn=macros[name], name=name: fn(ctx, _parse_args(name, raw)))
    return result


def _is_name_char(c: str) -> bool:
    return c == "_" or ("a" <= c <= "z") or ("A" <= c <= "Z") or ("0" <= c <= "9")


def _replace_all_macro(s: str, token: str, fn: Callable[[str], str]) -> str:
    out: list[str] = []
    while True:
        idx = s.find(token)
        if idx == -1:
            out.append(s)
            break
        after = idx + len(token)
        if after < len(s) and _is_name_char(s[after]):
            out.append(s[:after])
            s = s[after:]
            continue
        out.append(s[:idx])
        s = s[after:]
        raw = ""
        if s.startswith("("):
            end = _find_closing_paren(s, 0)
            if end != -1:
                raw = s[1:end]
                s = s[end + 1:]
        out.append(fn(raw))
    return "".join(out)


def _find_closing_paren(s: str, open_pos: int) -> int:
    depth = 0
    i = open_pos
    while i < len(s):
        c = s[i]
        if c in "'\"":
            i = _scan_string_literal(s, i)
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _parse_args(name: str, raw: str) -> list[str]:
    raw = raw.strip()
    if raw == "":
        return []
    args: list[str] = []
    depth = 0
    start = 0
    i = 0
    while i < len(raw):
        c = raw[i]
        if c in "'\"":
            i = _scan_string_literal(raw, i)
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            if depth == 0:
                raise MacroError(f"macro $__{name}: unexpected ')' at position {i}")
            depth -= 1
        elif c == "," and depth == 0:
            args.append(raw[start:i].strip())
            start = i + 1
        i += 1
    if depth != 0:
        raise MacroError(f"macro $__{name}: unbalanced parentheses in arguments")
    args.append(raw[start:].strip())
    return args
