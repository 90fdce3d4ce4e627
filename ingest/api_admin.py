"""Admin routes for prices: repricing, backfill and price reloads, through the running service.

    POST /v1/admin/reprice        {"since": "2026-01-01", "until": "2026-02-01", "model": null,
                                   "dry_run": true, "unprice": false}      -> the run's summary
    POST /v1/admin/backfill       {"records": [...]}  (backfill.record_to_json; no content)
                                                                            -> stored, duplicates
    POST /v1/admin/prices/reload  re-read SPANMETER_PRICES_FILE, record the rates in `prices`

All need the admin token (none configured: open, which the CLI allows on loopback only). On the
embedded store these are the only way in while the service holds the data path; the CLI calls them.

Repricing writes through the writer's own thread (`Writer.call`), one day at a time, so ingest
batches go on between days and the writer's exactly-once and leaf-rule memory learns each
corrected figure (`Writer.recount`). Backfilled records go through `Writer.submit`, the path
every span takes: the same exactly-once keys make a re-run insert nothing twice.
"""

from __future__ import annotations

import hmac
import logging
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from .backfill import record_from_json
from .errors import ConfigError, Overloaded, SpanmeterError
from .price import PriceBook
from .price_history import record_prices
from .reprice import price_sources, reprice, reprice_day
from .store import QueryError

log = logging.getLogger("spanmeter.ingest.admin")

__all__ = ["parse_time", "reload_prices", "router"]

router = APIRouter(prefix="/v1/admin", tags=["prices"])

MAX_BACKFILL_RECORDS = 20_000
_MAX_BODY = 32 * 1024 * 1024


class _HTTPError(SpanmeterError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _require_admin(request: Request) -> None:
    token = request.app.state.settings.admin_token
    if token is None:
        return
    scheme, _, presented = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), token.get_secret_value().encode()):
        raise _HTTPError(401, "the admin token is required")


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > _MAX_BODY:
        raise _HTTPError(413, f"body exceeds {_MAX_BODY} bytes")
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError as exc:
        raise _HTTPError(400, f"expected a JSON object: {exc}") from exc
    if not isinstance(body, dict):
        raise _HTTPError(400, "expected a JSON object")
    return body


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body, default=_json_default), status_code=status, media_type="application/json")


def _error(exc: Exception, request: Request) -> Response:
    if isinstance(exc, _HTTPError):
        status = exc.status
    elif isinstance(exc, (QueryError, ConfigError)):
        status = 400  # a wrong query, or a prices file that does not load: retrying cannot help
    elif isinstance(exc, Overloaded):
        status = 429
    else:
        status = 503
    if status >= 500:
        log.warning("admin: %s", exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    response = _json({"code": status, "message": str(exc)}, status)
    if headers:
        response.headers.update(headers)
    if status in (429, 503):
        response.headers["Retry-After"] = str(request.app.state.settings.retry_after_seconds)
    return response


def parse_time(value: Any, name: str) -> datetime:
    """A date (its UTC midnight) or an ISO 8601 time (naive = UTC)."""
    if not isinstance(value, str) or not value.strip():
        raise _HTTPError(400, f"{name} must be a date or time (ISO 8601)")
    text = value.strip()
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise _HTTPError(400, f"{name}: not a date or time: {text!r}") from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def reload_prices(state: Any) -> int:
    """Re-read the price files into the running service; record new rates in `prices`."""
    state.prices = PriceBook.from_files(state.settings.prices_file)
    return record_prices(state.store, state.prices)


@router.post("/prices/reload")
async def prices_reload(request: Request) -> Response:
    try:
        _require_admin(request)
        recorded = await run_in_threadpool(reload_prices, request.app.state)
    except (SpanmeterError, OSError) as exc:
        return _error(exc, request)
    return _json({"prices_file": str(request.app.state.settings.prices_file or ""), "rates_recorded": recorded})


@router.post("/reprice")
async def reprice_route(request: Request) -> Response:
    state = request.app.state
    try:
        _require_admin(request)
        body = await _body(request)
        since = parse_time(body.get("since"), "since")
        until = parse_time(body["until"], "until") if body.get("until") else datetime.now(UTC)
        if until <= since:
            raise _HTTPError(400, "until must be after since")
        model = body.get("model") or None
        dry_run = bool(body.get("dry_run", False))
        unprice = bool(body.get("unprice", False))
        if body.get("reload_prices", True):
            # A rate just added to the overrides file applies to this run and to new spans alike.
            await run_in_threadpool(reload_prices, state)
        book: PriceBook = state.prices
        writer = state.writer

        def run_day(start: datetime, end: datetime):
            if dry_run:
                return reprice_day(state.store, book, start, end, model=model, unprice=unprice)
            return writer.call(lambda w: reprice_day(
                w.store, book, start, end, model=model, apply=True, unprice=unprice, recount=w.recount,
            )).result()

        summary = await run_in_threadpool(
            reprice, state.store, book, since, until, model=model, apply=not dry_run, unprice=unprice,
            run_day=run_day, price_sources=price_sources([state.settings.prices_file]),
        )
    except (SpanmeterError, OSError) as exc:
        return _error(exc, request)
    return _json(summary.to_json())


@router.post("/backfill")
async def backfill_route(request: Request) -> Response:
    state = request.app.state
    try:
        _require_admin(request)
        body = await _body(request)
        raw = body.get("records")
        if not isinstance(raw, list):
            raise _HTTPError(400, 'expected {"records": [...]}')
        if len(raw) > MAX_BACKFILL_RECORDS:
            raise _HTTPError(413, f"{len(raw)} records in one request, limit {MAX_BACKFILL_RECORDS}")
        try:
            records = [record_from_json(item) for item in raw]
        except ValueError as exc:
            raise _HTTPError(400, str(exc)) from exc
        key = getattr(state.settings, "user_id_key", None)
        if key is not None:
            from .privacy import pseudonymize_user_id

            for record in records:
                record.attribution.user_id = pseudonymize_user_id(record.attribution.user_id, key)
        book: PriceBook = state.prices
        for record in records:
            book.price(record)
        outcome = await state.writer.submit(records, [])
    except (SpanmeterError, OSError) as exc:
        return _error(exc, request)
    priced = sum(1 for r in records if r.cost_usd is not None)
    return _json({"stored": outcome.stored, "duplicates": outcome.duplicates, "priced": priced,
                  "unpriced": len(records) - priced})

