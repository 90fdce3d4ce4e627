"""tests/support/grafana_macros.py against the behaviour of the code it mirrors: the expected
strings are those of the plugin's own tests and sources (pkg/macros, grafana/macropro,
CHDatasource.applyConditionalAll / format, Grafana's variable formats)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.support.grafana_macros import MacroError, QueryContext, Variable, apply_conditional_all, expand, expand_macros

FROM = datetime(2014, 11, 12, 11, 45, 26, 371000, tzinfo=UTC)
TO = datetime(2015, 11, 12, 11, 45, 26, 371000, tzinfo=UTC)
CTX = QueryContext(FROM, TO, timedelta(seconds=20))


def test_time_macros():
    assert expand_macros("$__fromTime", CTX) == "toDateTime(1415792726)"
    assert expand_macros("$__toTime_ms", CTX) == "fromUnixTimestamp64Milli(1447328726371)"
    assert expand_macros("$__timeFilter(t)", CTX) == "t >= toDateTime(1415792726) AND t <= toDateTime(1447328726)"
    assert expand_macros("$__timeFilter_ms(t)", CTX) == (
        "t >= fromUnixTimestamp64Milli(1415792726371) AND t <= fromUnixTimestamp64Milli(1447328726371)")
    assert expand_macros("$__dateFilter(d)", CTX) == "d >= toDate('2014-11-12') AND d <= toDate('2015-11-12')"
    assert expand_macros("$__dt(d, t)", CTX) == (
        "(d >= toDate('2014-11-12') AND d <= toDate('2015-11-12')) AND "
        "(t >= toDateTime(1415792726) AND t <= toDateTime(1447328726))")
    assert expand_macros("$__timeInterval(col)", CTX) == "toStartOfInterval(toDateTime(col), INTERVAL 20 second)"
    assert expand_macros("$__timeInterval_ms(col)", CTX) == "toStartOfInterval(toDateTime64(col, 3), INTERVAL 20000 millisecond)"
    assert expand_macros("INTERVAL $__interval_s second", CTX) == "INTERVAL 20 second"


def test_interval_is_at_least_one_second():
    ctx = QueryContext(FROM, TO, timedelta(milliseconds=250))
    assert expand_macros("$__interval_s $__timeInterval(c)", ctx) == "1 toStartOfInterval(toDateTime(c), INTERVAL 1 second)"


def test_longest_name_first_and_whole_names_only():
    sql = "$__timeFilter_ms(a) $__timeFilter(b) $__interval_s $__intervalX $__nope(x)"
    out = expand_macros(sql, CTX)
    assert out.startswith("a >= fromUnixTimestamp64Milli(")
    assert "b >= toDateTime(" in out
    assert out.endswith(" 20 $__intervalX $__nope(x)")  # unknown names are left as they are


def test_arguments_nest_and_respect_quotes():
    assert expand_macros("$__timeFilter(toDateTime(x, 'UTC'))", CTX).startswith("toDateTime(x, 'UTC') >= toDateTime(")
    with pytest.raises(MacroError):
        expand_macros("$__timeFilter(a, b)", CTX)


def test_comments_are_blanked_before_expansion():
    out = expand_macros("SELECT 1 -- $__timeFilter(x)\n/* $__fromTime */ WHERE '--' = '--'", CTX)
    assert "$__" not in out and "toDateTime" not in out
    assert out.endswith("WHERE '--' = '--'") and len(out) == len("SELECT 1 -- $__timeFilter(x)\n/* $__fromTime */ WHERE '--' = '--'")


def test_statement_macros_are_refused_not_guessed():
    with pytest.raises(NotImplementedError):
        expand_macros("$__columns(t, k, v) FROM x", CTX)
    assert expand_macros("SELECT '$__columns(t, k, v)'", CTX) == "SELECT '$__columns(t, k, v)'"


def variables(**vs):
    return {name: v for name, v in vs.items()}


def test_conditional_all():
    vs = variables(
        svc=Variable("svc", ["$__all"], options=("a", "b"), multi=True, include_all=True),
        team=Variable("team", ["x", "y"], multi=True, include_all=True),
        empty=Variable("empty", [], multi=True),
    )
    sql = ("WHERE $__conditionalAll(s IN (${svc}), $svc) AND $__conditionalAll(t IN ($team), ${team}) "
           "AND $__conditionalAll(f(a, b) = 1, $empty) AND $__conditionalAll(z = 1, $unknown)")
    assert apply_conditional_all(sql, vs) == "WHERE 1=1 AND t IN ($team) AND 1=1 AND z = 1"
    # Exactly two arguments or the rest of the query is left alone.
    assert apply_conditional_all("$__conditionalAll(a, b, c)", vs) == "$__conditionalAll(a, b, c)"


def test_conditional_all_replacement_follows_javascript_replace():
    vs = {"v": Variable("v", "x")}
    # String.prototype.replace: "$$" in the replacement is one "$", "$`" the text before the match.
    assert apply_conditional_all("$__conditionalAll(a = '$$', $v)", vs) == "a = '$'"
    assert apply_conditional_all("x $__conditionalAll(a = '$`', $v)", vs) == "x a = 'x '"


def test_variable_formats():
    ctx = QueryContext(FROM, TO, timedelta(hours=1), {
        "multi": Variable("multi", ["a", "b'c"], multi=True),
        "single": Variable("single", "o'brien"),
        "all": Variable("all", ["$__all"], options=("p", "q"), multi=True, include_all=True),
        "custom": Variable("custom", "$__all", all_value=".*", include_all=True),
    })
    assert expand("IN ($multi)", ctx) == "IN ('a','b'c')"  # the data source's format: no escaping
    assert expand("= $single", ctx) == "= o'brien"  # a single value is inserted raw
    assert expand("= ${single:singlequote}", ctx) == "= 'o\\'brien'"
    assert expand("IN (${multi:singlequote})", ctx) == "IN ('a','b\\'c')"
    assert expand("= ${single:sqlstring}", ctx) == "= 'o''brien'"
    assert expand("IN ($all)", ctx) == "IN ('p','q')"
    assert expand("~ ${custom}", ctx) == "~ .*"
    assert expand("[[single]] $undefined ${__interval} $__interval_ms", ctx) == "o'brien $undefined 1h 3600000"
