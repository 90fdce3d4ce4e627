"""The `spanmeter` command: serve, migrate, sql, report, prices, reprice, reconcile, backfill, demo.

On the embedded store only one process may open the data path, so while `spanmeter serve` runs,
`sql` and `report` go through its read-only SQL endpoint (`--url`); with a server DSN they query
ClickHouse directly.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .cli_prices import backfill, prices_app, reconcile, reprice
from .config import Settings
from .errors import ConfigError, SpanmeterError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="LLM usage metering on OpenTelemetry.")

DsnOpt = Annotated[Optional[str], typer.Option("--dsn", help="ClickHouse DSN (default: SPANMETER_CLICKHOUSE_DSN or the embedded store)")]
UrlOpt = Annotated[str, typer.Option("--url", envvar="SPANMETER_URL", help="A running spanmeter service")]


def _settings(**overrides: Any) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="Bind address (default 127.0.0.1)")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (default 4318, OTLP/HTTP)")] = None,
    dsn: DsnOpt = None,
    database: Annotated[Optional[str], typer.Option(help="ClickHouse database")] = None,
    workers: Annotated[Optional[int], typer.Option(
        help="Processes that decode exports (default: one per core beyond the first, at most 4; 0: none)")] = None,
    log_level: str = "info",
) -> None:
    """Serve OTLP/HTTP on /v1/traces and the usage API."""
    import uvicorn

    from .app import create_app

    settings = _settings(host=host, port=port, clickhouse_dsn=dsn, database=database, ingest_workers=workers)
    check_bind(settings)
    from .store import _redact

    typer.echo(f"spanmeter: serving http://{settings.host}:{settings.port}/v1/traces, store {_redact(settings.clickhouse_dsn)}")
    from .workers import tune_gc

    tune_gc()
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port, log_level=log_level, access_log=False,
        log_config=log_config(settings, log_level),
    )


def log_config(settings: Settings, level: str) -> dict[str, Any]:
    """uvicorn's logging, plus the ingest's own loggers (refusals, limits, store trouble) at the
    same level, and every configured secret masked in every line: at `trace` uvicorn logs whole
    ASGI scopes, Authorization headers included."""
    import copy
    from urllib.parse import urlsplit

    import uvicorn.config

    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    secrets = [s.get_secret_value() for s in (settings.ingest_token, settings.admin_token, settings.user_id_key) if s]
    try:
        password = urlsplit(settings.clickhouse_dsn).password
    except ValueError:
        password = None
    if password:
        secrets.append(password)
    config["filters"] = {"secrets": {"()": RedactSecrets, "secrets": secrets}}
    for handler in config["handlers"].values():
        handler["filters"] = ["secrets"]
    own = "DEBUG" if level.lower() == "trace" else level.upper()
    config["loggers"]["spanmeter"] = {"handlers": ["default"], "level": own, "propagate": False}
    return config


class RedactSecrets:
    """A logging filter that replaces each secret in a record's message with ***."""

    def __init__(self, secrets: list[str]) -> None:
        self.secrets = [s for s in secrets if s]

    def filter(self, record: Any) -> bool:
        if self.secrets:
            message = record.getMessage()
            if any(s in message for s in self.secrets):
                for s in self.secrets:
                    message = message.replace(s, "***")
                record.msg, record.args = message, None
        return True


def check_bind(settings: Settings) -> None:
    """Without tokens the service is open to anyone who reaches it: allow that on loopback only."""
    if settings.ingest_token and settings.admin_token:
        return
    try:
        loopback = ipaddress.ip_address(settings.host).is_loopback
    except ValueError:
        loopback = settings.host == "localhost"
    if not loopback:
        raise ConfigError(
            f"refusing to bind {settings.host} without SPANMETER_INGEST_TOKEN and SPANMETER_ADMIN_TOKEN: "
            "set both, or bind 127.0.0.1"
        )


@app.command()
def migrate(dsn: DsnOpt = None, database: Annotated[Optional[str], typer.Option()] = None) -> None:
    """Apply pending ClickHouse migrations (the service also does this at start)."""
    from .migrate import migrate as run
    from .store import Store

    settings = _settings(clickhouse_dsn=dsn, database=database)
    applied = run(Store.connect(settings.clickhouse_dsn, settings.database))
    typer.echo("applied: " + ", ".join(applied) if applied else "up to date")


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="A read-only SQL query")],
    dsn: DsnOpt = None,
    url: UrlOpt = "http://127.0.0.1:4318",
    fmt: Annotated[str, typer.Option("--format", help="table or json")] = "table",
) -> None:
    """Run read-only SQL (through the running service for the embedded store)."""
    columns, rows = run_sql(query, dsn=dsn, url=url)
    if fmt == "json":
        typer.echo(json.dumps([dict(zip(columns, row)) for row in rows], default=str, indent=1))
    else:
        typer.echo(format_table(columns, rows))


# Priced cost, or NULL when nothing in the group could be priced: unpriced is never shown as $0.
# (Qualified names: the bare ones would mean the SELECT's own aliases.)
_COST = "if(sum(d.requests) = sum(d.unpriced_requests), NULL, sum(d.cost_usd))"


@app.command()
def report(
    days: Annotated[int, typer.Option(help="Period: the last N days, today included")] = 30,
    top: Annotated[int, typer.Option(help="Rows per section")] = 10,
    dsn: DsnOpt = None,
    url: UrlOpt = "http://127.0.0.1:4318",
) -> None:
    """Top users, models and features by cost, and usage that could not be priced."""
    db = _settings().database
    since = f"today() - {int(days) - 1}"
    sections = [
        ("Top users", f"SELECT user_id, sum(requests) AS requests, sum(input_tokens) AS input_tokens, "
         f"sum(output_tokens) AS output_tokens, {_COST} AS cost_usd, sum(unpriced_requests) AS unpriced "
         f"FROM {db}.usage_daily AS d WHERE day >= {since} GROUP BY user_id ORDER BY cost_usd DESC, requests DESC LIMIT {int(top)}"),
        ("Top models", f"SELECT provider, model, sum(requests) AS requests, sum(input_tokens) AS input_tokens, "
         f"sum(output_tokens) AS output_tokens, {_COST} AS cost_usd, sum(unpriced_requests) AS unpriced "
         f"FROM {db}.usage_daily AS d WHERE day >= {since} GROUP BY provider, model ORDER BY cost_usd DESC, requests DESC LIMIT {int(top)}"),
        ("Top features", f"SELECT feature, sum(requests) AS requests, {_COST} AS cost_usd, sum(unpriced_requests) AS unpriced "
         f"FROM {db}.usage_daily AS d WHERE day >= {since} GROUP BY feature ORDER BY cost_usd DESC, requests DESC LIMIT {int(top)}"),
        ("Unpriced usage (no price known: cost NULL, not $0)",
         f"SELECT provider, if(response_model != '', response_model, request_model) AS model, pricing_status, "
         f"sum(sign) AS requests, sum(toInt64(input_tokens) * sign) AS input_tokens, sum(toInt64(output_tokens) * sign) AS output_tokens "
         f"FROM {db}.usage_events WHERE cost_usd IS NULL AND event_time >= {since} "
         f"GROUP BY provider, model, pricing_status HAVING requests != 0 ORDER BY requests DESC LIMIT {int(top)}"),
        ("Estimated usage (backfilled from logs, tokens counted offline: included above, not reported by the provider)",
         f"SELECT e.day AS day, e.provider AS provider, e.model AS model, sum(e.requests) AS requests, "
         f"sum(e.input_tokens) AS input_tokens, sum(e.output_tokens) AS output_tokens, sum(e.cost_usd) AS cost_usd "
         f"FROM {db}.estimated_usage AS e WHERE e.day >= {since} GROUP BY day, provider, model "
         f"ORDER BY day DESC, cost_usd DESC LIMIT {int(top)}"),
    ]
    for title, query in sections:
        columns, rows = run_sql(query, dsn=dsn, url=url)
        typer.echo(f"\n{title} (last {days} days)")
        typer.echo(format_table(columns, rows) if rows else "  (none)")


# prices (show, list, diff, add, sync), reprice, reconcile, backfill: ingest/cli_prices.py
app.add_typer(prices_app, name="prices")
app.command()(reprice)
app.command()(reconcile)
app.command()(backfill)


@app.command()
def pseudonym(user_id: Annotated[str, typer.Argument(help="A user id as the application sends it")]) -> None:
    """Print the pseudonym a user id is stored under (keyed by SPANMETER_USER_ID_KEY)."""
    from .privacy import pseudonymize_user_id

    key = _settings().user_id_key
    if key is None:
        raise ConfigError("SPANMETER_USER_ID_KEY is not set: user ids are stored as sent")
    typer.echo(pseudonymize_user_id(user_id, key))


@app.command()
def demo(
    url: UrlOpt = "http://127.0.0.1:4318",
    users: int = 5,
    calls: int = 20,
) -> None:
    """Make LLM calls for a few users against a local fake provider, metered by the running service."""
    from .demo import run_demo

    summary = run_demo(url, users=users, calls=calls)
    typer.echo(json.dumps(summary, indent=1, default=str))
    typer.echo("now try: spanmeter report")


# --- helpers --------------------------------------------------------------------------------


def run_sql(query: str, *, dsn: str | None, url: str) -> tuple[list[str], list[list[Any]]]:
    settings = _settings(clickhouse_dsn=dsn)
    if not settings.is_embedded:
        from .store import Store

        result = Store.connect(settings.clickhouse_dsn, settings.database).query(query, readonly=True)
        return result.columns, [list(r) for r in result.rows]
    import httpx

    headers = {}
    if settings.admin_token:
        headers["Authorization"] = f"Bearer {settings.admin_token.get_secret_value()}"
    try:
        response = httpx.post(f"{url.rstrip('/')}/v1/sql", json={"query": query}, headers=headers, timeout=60)
    except httpx.HTTPError as exc:
        raise SpanmeterError(
            f"cannot reach the spanmeter service at {url} ({exc}); the embedded store is read through it: "
            "start it with `spanmeter serve` (or `make run`)"
        ) from exc
    body = response.json()
    if response.status_code != 200:
        raise SpanmeterError(f"query failed ({response.status_code}): {body.get('message')}")
    return body["columns"], body["rows"]


def format_table(columns: list[str], rows: list[list[Any]]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [all(_is_number(r[i]) for r in rows) and rows for i in range(len(columns))]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if numeric[i] else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths))).rstrip()

    out = [line(columns), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in cells)
    return "\n".join(out)


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value else "0"
    if isinstance(value, str) and _looks_decimal(value):
        return format(Decimal(value).normalize(), "f") if Decimal(value) else "0"
    return str(value)


def _looks_decimal(value: str) -> bool:
    try:
        Decimal(value)
    except Exception:  # noqa: BLE001
        return False
    return "." in value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool) or (
        isinstance(value, str) and _looks_decimal(value)
    )


def main() -> None:
    try:
        app()
    except SpanmeterError as exc:
        typer.echo(f"spanmeter: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
