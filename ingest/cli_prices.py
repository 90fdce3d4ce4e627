"""The `spanmeter` commands for auditable prices: prices (show, list, diff, add, sync), reprice,
reconcile and backfill. Registered on the main app by `cli.py`.

On the embedded store, commands that write (reprice, backfill, prices sync) go through the running
service's admin API (`--url`, admin token from SPANMETER_ADMIN_TOKEN); with a server DSN they
connect to ClickHouse directly.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Optional

import click
import typer
from typer.core import TyperGroup

from .errors import SpanmeterError

DsnOpt = Annotated[Optional[str], typer.Option("--dsn", help="ClickHouse DSN (default: SPANMETER_CLICKHOUSE_DSN or the embedded store)")]
UrlOpt = Annotated[str, typer.Option("--url", envvar="SPANMETER_URL", help="A running spanmeter service")]
PricesFileOpt = Annotated[Optional[Path], typer.Option("--prices-file", envvar="SPANMETER_PRICES_FILE", help="Overrides: YAML, or LiteLLM's JSON")]


class _ShowByDefault(TyperGroup):
    """`spanmeter prices MODEL` means `spanmeter prices show MODEL`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["show", *args]
        return super().parse_args(ctx, args)


prices_app = typer.Typer(
    cls=_ShowByDefault,
    no_args_is_help=True,
    help="Rates: show a model's (`prices MODEL`), list, diff, add a dated rate, sync to ClickHouse.",
)


def _book(prices_file: Path | None, *, dataset: bool = True):
    from .price import PriceBook

    return PriceBook.from_files(prices_file, dataset=dataset)


def _day(text: str | None, name: str) -> date:
    if not text:
        return datetime.now(UTC).date()
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise SpanmeterError(f"{name} must be a YYYY-MM-DD date, got {text!r}") from exc


@prices_app.command("show")
def prices_show(
    model: Annotated[str, typer.Argument(help="Model name, e.g. gpt-4o-mini or openai/gpt-4o-mini")],
    provider: Annotated[Optional[str], typer.Option(help="Provider, e.g. openai, anthropic, gcp.gemini")] = None,
    prices_file: PricesFileOpt = None,
) -> None:
    """Show the rates spanmeter prices a model at (every dated rate, tiers indented)."""
    from .price import format_rates

    rates = _book(prices_file).describe(model, provider)
    if not rates:
        raise SpanmeterError(f"no price known for {model!r}: its calls are stored unpriced (cost NULL)")
    typer.echo(format_rates(rates))


@prices_app.command("list")
def prices_list(
    source: Annotated[str, typer.Option(help="overrides, dataset (genai-prices) or all")] = "overrides",
    provider: Annotated[Optional[str], typer.Option(help="Only this provider")] = None,
    model: Annotated[Optional[str], typer.Option(help="Only models whose name contains this")] = None,
    prices_file: PricesFileOpt = None,
) -> None:
    """List rates with the date each took effect and its version (what rows store as price_version)."""
    from .price import canonical_provider, format_rates

    if source not in ("overrides", "dataset", "all"):
        raise SpanmeterError("--source is overrides, dataset or all")
    if source == "overrides" and not prices_file:
        raise SpanmeterError("no overrides file: set SPANMETER_PRICES_FILE or --prices-file (or --source dataset)")
    book = _book(prices_file if source != "dataset" else None, dataset=source != "overrides")
    wanted = canonical_provider(provider) if provider else None
    rates = [
        r for r in book.rates()
        if (wanted is None or r.provider == wanted) and (not model or model.lower() in r.model.lower())
    ]
    if source == "dataset":
        rates = [r for r in rates if not r.source.startswith("override:")]
    typer.echo(format_rates(rates) if rates else "(no rates)")


@prices_app.command("diff")
def prices_diff(
    old: Annotated[Optional[Path], typer.Argument(help="Old prices file (default: the dataset alone)")] = None,
    new: Annotated[Optional[Path], typer.Argument(help="New prices file (default: --prices-file)")] = None,
    at: Annotated[Optional[str], typer.Option(help="Compare the rates in effect on this day (default today)")] = None,
    was: Annotated[Optional[str], typer.Option(help="Old side on this day instead (price history between two days)")] = None,
    prices_file: PricesFileOpt = None,
) -> None:
    """Which models' rates differ, and by how much (USD per million tokens, as billed).

    No files: what the overrides change against genai-prices. OLD NEW: two versions of a prices
    file (both over genai-prices). --was DAY: how the current rates moved between two days."""
    from .price_history import diff_books, format_diff

    day_new = _day(at, "--at")
    day_old = _day(was, "--was") if was else day_new
    models = None
    if old is not None:
        old_book = _book(old)
        new_book = _book(new or prices_file)
        models = {(r.provider, r.model) for r in old_book.rates() if r.source.startswith("override:")}
        models |= {(r.provider, r.model) for r in new_book.rates() if r.source.startswith("override:")}
    elif was:
        old_book = new_book = _book(prices_file)
    else:
        if not prices_file:
            raise SpanmeterError("nothing to compare: give OLD [NEW] files, --prices-file, or --was DAY")
        old_book, new_book = _book(None), _book(prices_file)
        models = {(r.provider, r.model) for r in new_book.rates() if r.source.startswith("override:")}
    typer.echo(format_diff(diff_books(old_book, new_book, at=day_new, was=day_old, models=models)))


def _tier(text: str) -> tuple[int, dict[str, Decimal]]:
    above, _, prices = text.partition(":")
    try:
        level = {}
        for item in prices.split(","):
            name, _, value = item.partition("=")
            name = name.strip().replace("-", "_")
            if name not in ("input", "cache_read", "cache_write", "cache_write_1h", "output", "reasoning"):
                raise ValueError(name)
            level[name] = Decimal(value.strip())
        return int(above.replace("_", "").replace(",", "")), level
    except (ValueError, InvalidOperation) as exc:
        raise SpanmeterError(f"--tier is ABOVE:input=6,output=22.5,... (got {text!r})") from exc


def _price(text: str | None, name: str) -> Decimal | None:
    if text is None:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise SpanmeterError(f"--{name} must be a decimal number, got {text!r}") from exc
    if not value.is_finite() or value < 0:
        raise SpanmeterError(f"--{name} must be a non-negative number")
    return value


@prices_app.command("add")
def prices_add(
    provider: Annotated[str, typer.Argument(help="Provider (openai, anthropic, gcp.gemini, ..., or * for any)")],
    model: Annotated[str, typer.Argument(help="Model id as spans report it")],
    input: Annotated[str, typer.Option("--input", help="USD per million input tokens")],
    output: Annotated[str, typer.Option("--output", help="USD per million output tokens")],
    cache_read: Annotated[Optional[str], typer.Option("--cache-read", help="Cached input (default: input)")] = None,
    cache_write: Annotated[Optional[str], typer.Option("--cache-write", help="Cache writes, 5-minute (default: input)")] = None,
    cache_write_1h: Annotated[Optional[str], typer.Option("--cache-write-1h")] = None,
    reasoning: Annotated[Optional[str], typer.Option("--reasoning", help="Reasoning tokens (default: output)")] = None,
    effective_from: Annotated[Optional[str], typer.Option("--from", help="UTC day the rate takes effect (default today)")] = None,
    tier: Annotated[Optional[list[str]], typer.Option("--tier", help="Long-context tier ABOVE:input=..,output=.. (repeatable)")] = None,
    note: Annotated[str, typer.Option(help="Why, where the price comes from")] = "",
    supersede: Annotated[bool, typer.Option(help="Add a correcting entry for a day that already has one")] = False,
    prices_file: PricesFileOpt = None,
) -> None:
    """Append a dated rate to the overrides file (history is never edited), then show it."""
    from .price import format_rates
    from .price_history import append_rate

    if not prices_file:
        raise SpanmeterError("which overrides file? set SPANMETER_PRICES_FILE or --prices-file")
    prices = {
        "input": _price(input, "input"), "output": _price(output, "output"),
        "cache_read": _price(cache_read, "cache-read"), "cache_write": _price(cache_write, "cache-write"),
        "cache_write_1h": _price(cache_write_1h, "cache-write-1h"), "reasoning": _price(reasoning, "reasoning"),
    }
    day = _day(effective_from, "--from")
    rate = append_rate(prices_file, provider=provider, model=model, effective_from=day, prices=prices,
                       tiers=[_tier(t) for t in tier or ()], note=note, supersede=supersede)
    typer.echo(f"added to {prices_file}:")
    typer.echo(format_rates([rate]))
    typer.echo(f"\nstored usage is priced as it was: run `spanmeter reprice --since {day}` to correct it")


@prices_app.command("sync")
def prices_sync(
    dsn: DsnOpt = None,
    url: UrlOpt = "http://127.0.0.1:4318",
    prices_file: PricesFileOpt = None,
) -> None:
    """Record the rates in ClickHouse's `prices` table (the running service also reloads them)."""
    from .cli import _settings

    settings = _settings(clickhouse_dsn=dsn)
    if settings.is_embedded:
        body = admin_post(url, "/v1/admin/prices/reload", {}, settings)
        typer.echo(f"service reloaded {body['prices_file'] or '(no overrides file)'}; {body['rates_recorded']} new rates recorded")
        return
    store = _direct_store(settings)
    from .price_history import record_prices

    typer.echo(f"{record_prices(store, _book(prices_file))} new rates recorded in {settings.database}.prices")


# --- helpers shared by the commands ------------------------------------------------------------


def admin_post(url: str, path: str, body: dict[str, Any], settings: Any, *, timeout: float | None = 60) -> dict[str, Any]:
    """POST to the running service's admin API; SpanmeterError with its message on failure."""
    import httpx

    headers = {}
    if settings.admin_token:
        headers["Authorization"] = f"Bearer {settings.admin_token.get_secret_value()}"
    try:
        response = httpx.post(f"{url.rstrip('/')}{path}", json=body, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise SpanmeterError(
            f"cannot reach the spanmeter service at {url} ({exc}); the embedded store is written through it: "
            "start it with `spanmeter serve` (or use a server DSN)"
        ) from exc
    try:
        payload = response.json()
    except ValueError:
        payload = {"message": response.text[:200]}
    if response.status_code != 200:
        raise SpanmeterError(f"{path} failed ({response.status_code}): {payload.get('message')}")
    return payload


def _direct_store(settings: Any):
    from .migrate import migrate
    from .store import Store

    store = Store.connect(settings.clickhouse_dsn, settings.database)
    migrate(store)  # idempotent: the audit tables exist before anything writes to them
    return store


def _parse_threshold(text: str) -> Decimal:
    raw = text.strip()
    try:
        value = Decimal(raw[:-1]) / 100 if raw.endswith("%") else Decimal(raw)
    except InvalidOperation as exc:
        raise SpanmeterError(f"--threshold is a percentage (1%) or a fraction (0.01), got {text!r}") from exc
    if not value.is_finite() or value < 0:
        raise SpanmeterError("--threshold must be non-negative")
    return value


# --- reprice ------------------------------------------------------------------------------------


def reprice(
    since: Annotated[str, typer.Option(help="First day (or ISO time) to reprice, UTC")],
    until: Annotated[Optional[str], typer.Option(help="End, exclusive (default: now)")] = None,
    model: Annotated[Optional[str], typer.Option(help="Only this model (or its dated snapshots)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would change; write nothing")] = False,
    unprice: Annotated[bool, typer.Option(help="Also store rows unpriced that the prices no longer price")] = False,
    settle_minutes: Annotated[int, typer.Option(help="Direct (server DSN) only: leave rows inserted this recently")] = 15,
    fmt: Annotated[str, typer.Option("--format", help="table or json")] = "table",
    dsn: DsnOpt = None,
    url: UrlOpt = "http://127.0.0.1:4318",
    prices_file: PricesFileOpt = None,
) -> None:
    """Correct stored costs to the current prices: a cancelling row and a corrected row per change.

    Every rollup stays exact, the old figure stays visible (view price_corrections), each run is
    recorded (table reprice_runs), and a second run changes nothing."""
    from .api_admin import parse_time
    from .cli import _settings
    from .reprice import RepriceSummary, format_summary, price_sources
    from .reprice import reprice as run

    settings = _settings(clickhouse_dsn=dsn)
    start = parse_time(since, "--since")
    end = parse_time(until, "--until") if until else datetime.now(UTC)
    if settings.is_embedded:
        if prices_file and settings.prices_file != prices_file:
            typer.echo("note: the service reprices with its own SPANMETER_PRICES_FILE, not --prices-file", err=True)
        body = {"since": start.isoformat(), "until": end.isoformat(), "model": model, "dry_run": dry_run,
                "unprice": unprice}
        from rich.console import Console

        with Console(stderr=True).status("repricing through the service..."):
            payload = admin_post(url, "/v1/admin/reprice", body, settings, timeout=None)
        summary = RepriceSummary.from_json(payload)
    else:
        from rich.console import Console
        from rich.progress import Progress

        from .price_history import record_prices

        store = _direct_store(settings)
        book = _book(prices_file)
        if not dry_run:
            record_prices(store, book)
        with Progress(console=Console(stderr=True), transient=True) as progress:
            task = progress.add_task("repricing (days)", total=None)
            summary = run(store, book, start, end, model=model, apply=not dry_run, unprice=unprice,
                          settle_seconds=settle_minutes * 60, price_sources=price_sources([prices_file]),
                          progress=lambda done, total: progress.update(task, completed=done, total=total))
    if fmt == "json":
        typer.echo(json.dumps(summary.to_json(), default=str, indent=1))
    else:
        typer.echo(format_summary(summary))


# --- reconcile ----------------------------------------------------------------------------------


def reconcile(
    file: Annotated[Path, typer.Argument(help="The provider's usage/cost export", exists=True, dir_okay=False)],
    provider: Annotated[str, typer.Option(help="Export format: openai, anthropic or csv")],
    threshold: Annotated[str, typer.Option(help="Relative difference to flag: 1% or 0.01")] = "1%",
    min_usd: Annotated[str, typer.Option(help="...and absolute difference to flag, USD")] = "0.01",
    min_tokens: Annotated[int, typer.Option(help="...and absolute token difference to flag")] = 1000,
    show_all: Annotated[bool, typer.Option("--all", help="Show every day and model, not only flagged ones")] = False,
    check: Annotated[bool, typer.Option(help="Exit 1 when anything is flagged")] = False,
    fmt: Annotated[str, typer.Option("--format", help="table or json")] = "table",
    dsn: DsnOpt = None,
    url: UrlOpt = "http://127.0.0.1:4318",
) -> None:
    """Compare the meter with the provider's bill per day and model; flag what differs."""
    from .cli import _settings, run_sql
    from .reconcile import compare, format_report, load_export, meter_lines, meter_sql, report_json

    if provider not in ("openai", "anthropic", "csv"):
        raise SpanmeterError("--provider is openai, anthropic or csv")
    bill = load_export(file, provider)
    if not bill:
        raise SpanmeterError(f"{file}: no usage or cost lines found")
    settings = _settings(clickhouse_dsn=dsn)
    providers = sorted({b.provider for b in bill})
    first, last = min(b.day for b in bill), max(b.day for b in bill)
    _, rows = run_sql(meter_sql(settings.database, providers, first, last), dsn=dsn, url=url)
    report = compare(bill, meter_lines(rows), relative=_parse_threshold(threshold),
                     absolute=_price(min_usd, "min-usd") or Decimal(0), min_tokens=min_tokens)
    if fmt == "json":
        typer.echo(json.dumps(report_json(report), indent=1))
    else:
        typer.echo(format_report(report, everything=show_all))
    if check and report.flagged:
        raise typer.Exit(1)


# --- backfill -----------------------------------------------------------------------------------


def backfill(
    file: Annotated[Path, typer.Argument(help="Chat log, JSON Lines: one conversation per line", exists=True, dir_okay=False)],
    service: Annotated[str, typer.Option(help="service_name of the rows")] = "backfill",
    feature: Annotated[str, typer.Option(help="feature of the rows")] = "",
    batch: Annotated[int, typer.Option(help="Records per insert / request")] = 5000,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count only; store nothing")] = False,
    dsn: DsnOpt = None,
    url: UrlOpt = "http://127.0.0.1:4318",
    prices_file: PricesFileOpt = None,
) -> None:
    """Import historical usage from chat logs: reported counts where the log has them, else counted
    offline (usage_status 'estimated'). Re-running inserts nothing twice; no content is stored."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from .backfill import BackfillStats, conversation_records, read_log
    from .cli import _settings
    from .tokens import TokenCounter

    settings = _settings(clickhouse_dsn=dsn)
    counter = TokenCounter()
    stats = BackfillStats()
    outcome = {"stored": 0, "duplicates": 0, "priced": 0, "unpriced": 0}
    bad_lines: list[int] = []
    submit = None if dry_run else _backfill_sink(settings, url, prices_file, outcome)
    pending: list[Any] = []
    size = file.stat().st_size
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), DownloadColumn(),
                  TimeRemainingColumn(), TextColumn("{task.fields[calls]} calls"), console=Console(stderr=True),
                  transient=True) as progress:
        task = progress.add_task(f"backfill {file.name}", total=size, calls=0)
        for number, done, conversation in read_log(file):
            if isinstance(conversation, Exception):
                bad_lines.append(number)
            else:
                pending.extend(conversation_records(conversation, counter, stats, service=service, feature=feature))
            if submit is not None and len(pending) >= batch:
                submit(pending)
                pending = []
            progress.update(task, completed=done, calls=stats.calls)
        if submit is not None and pending:
            submit(pending)
        if submit is not None:
            submit(None)
    summary = {
        "conversations": stats.conversations, "calls": stats.calls, "reported": stats.reported,
        "estimated": stats.estimated, **({} if dry_run else outcome),
        "skipped": stats.skipped, "unreadable_lines": bad_lines[:20], "non_text_parts_not_counted": stats.uncounted_parts,
    }
    typer.echo(json.dumps(summary, indent=1))
    if stats.estimated:
        typer.echo("estimated rows: tokens counted offline (see `SELECT * FROM estimated_usage`)", err=True)


def _backfill_sink(settings: Any, url: str, prices_file: Path | None, outcome: dict[str, int]):
    """A function taking a list of records to store (None: finish), through the service or direct."""
    from .backfill import record_to_json

    if settings.is_embedded:
        def post(records):
            if records is None:
                return
            body = admin_post(url, "/v1/admin/backfill", {"records": [record_to_json(r) for r in records]},
                              settings, timeout=600)
            for key in outcome:
                outcome[key] += body[key]
        return post

    from .metrics import Metrics
    from .writer import Writer

    store = _direct_store(settings)
    book = _book(prices_file)
    writer = Writer(store, settings, Metrics())
    writer.start()
    key = getattr(settings, "user_id_key", None)

    def direct(records):
        if records is None:
            writer.stop()
            return
        if key is not None:
            from .privacy import pseudonymize_user_id

            for r in records:
                r.attribution.user_id = pseudonymize_user_id(r.attribution.user_id, key)
        for r in records:
            book.price(r)
        result = writer.submit_nowait(records, []).result()
        outcome["stored"] += result.stored
        outcome["duplicates"] += result.duplicates
        priced = sum(1 for r in records if r.cost_usd is not None)
        outcome["priced"] += priced
        outcome["unpriced"] += len(records) - priced
    return direct
