"""The ingest's HTTP surface: routes wired to the pipeline stages, nothing else.

    app = create_app(Settings(clickhouse_dsn="chdb:///tmp/sm"))   # uvicorn serves it

Routes: POST /v1/traces (OTLP/HTTP), POST /v1/sql (read-only SQL, admin), GET /healthz,
GET /readyz, GET /metrics. Status codes are a contract with OTLP exporters: 400/413/415 are
never retried; 429/503 carry Retry-After and are. With a ClickHouse server unreachable at start
the service starts anyway: every /v1/ route answers 503 + Retry-After and /readyz 503 while the
store is opened again in the background every `retry_after_seconds` (an embedded store that
cannot open still stops the start).
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from contextlib import asynccontextmanager
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from google.rpc import status_pb2
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import decode as decode_stage
from .api_admin import router as admin_router
from .api_caps import router as caps_router
from .budgets import Snapshots, record_tier_caps
from .caps import Caps
from .config import Settings, get_settings
from .errors import (
    DecodeError,
    Overloaded,
    PayloadTooLarge,
    SpanmeterError,
    StoreUnavailable,
    UnsupportedMediaType,
)
from .metrics import Metrics
from .migrate import migrate
from .price import PriceBook
from .price_history import record_prices
from .store import QueryError, Store
from .workers import Preparer
from .writer import Writer

log = logging.getLogger("spanmeter.ingest")

_STATUS = {
    DecodeError: 400,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    Overloaded: 429,
    StoreUnavailable: 503,
    QueryError: 400,
}


class Unauthorized(SpanmeterError):
    pass


def create_app(settings: Settings | None = None, *, store: Store | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state = app.state
        state.prices = PriceBook.from_files(settings.prices_file)
        opener = None
        try:
            _open_store(state, settings, store)
        except StoreUnavailable as exc:
            if store is not None or settings.is_embedded:
                raise  # an embedded store that cannot open will not open by waiting
            # A ClickHouse server that is down (or still starting) must not stop the ingest: it
            # answers 503 + Retry-After, which every exporter retries, until the store opens.
            log.warning("ClickHouse unreachable at start, answering 503 and retrying every %d s: %s",
                        settings.retry_after_seconds, exc)
            opener = _StoreOpener(state, settings).start()
        state.preparer = Preparer(settings)
        state.preparer.start()
        try:
            yield
        finally:
            state.preparer.close()
            if opener is not None:
                opener.stop()
            if state.store_ready:
                state.writer.stop()
                # After the writer: the last snapshot holds every row it committed.
                state.snapshots.stop(final=bool(settings.caps_snapshot_seconds))

    app = FastAPI(title="spanmeter ingest", lifespan=lifespan)
    app.add_middleware(_StoreGate)
    app.state.settings = settings
    app.state.store_ready = False
    app.state.metrics = Metrics()
    app.include_router(admin_router)
    app.include_router(caps_router)

    @app.post("/v1/traces")
    async def export_traces(request: Request) -> Response:
        metrics: Metrics = app.state.metrics
        kind = decode_stage.answer_type(request.headers.get("content-type"))
        try:
            _authorize(request, settings.ingest_token)
            kind = decode_stage.media_type(request.headers.get("content-type"))
            # Admission before the body is read: a full pipeline answers 429 at once.
            writer: Writer = app.state.writer
            writer.check_admission(1)
            preparer: Preparer = app.state.preparer
            declared = request.headers.get("content-length")
            preparer.admit(int(declared) if declared and declared.isdigit() else 0)
            body = await _read_body(request, settings.max_body_bytes)
            # decode, span limit, normalize, pseudonymize: in a worker process when there are any.
            result = await preparer.prepare(body, kind, request.headers.get("content-encoding"))
            metrics.spans_received.inc(result.spans)
            prices: PriceBook = app.state.prices
            for record in result.records:
                prices.price(record)
                if record.cost_usd is None:
                    metrics.unpriced.labels(record.pricing_status).inc()
            _refuse_unstorable_costs(result)
            metrics.usage_records.inc(len(result.records))
            await writer.submit(result.records, result.links)
        except SpanmeterError as exc:
            return _error(exc, kind, settings, metrics)
        except Exception as exc:  # noqa: BLE001 - a bug must never lose data
            # OTLP exporters drop a batch on 500 but retry 503: an unexpected failure here is
            # ours, not the sender's, so it is answered as retryable and logged loudly.
            log.exception("unexpected failure while ingesting an export")
            return _error(StoreUnavailable(f"internal error: {type(exc).__name__}"), kind, settings, metrics)
        if result.rejected:
            metrics.rejected.inc(result.rejected)
            log.info("export: %d spans rejected: %s", result.rejected, "; ".join(result.messages[:5]))
        metrics.requests.labels("200").inc()
        message = "; ".join(result.messages[:20])
        return Response(decode_stage.encode_response(kind, result.rejected, message), media_type=kind)

    @app.post("/v1/sql")
    async def sql(request: Request) -> Response:
        try:
            _authorize(request, settings.admin_token)
            try:
                payload = orjson.loads(await _read_body(request, 1 << 20))
                query = str(payload["query"])
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                raise DecodeError('expected a JSON body {"query": "..."}') from exc
            result = app.state.store.query(query, readonly=True)
        except SpanmeterError as exc:
            return _error(exc, decode_stage.JSON, settings, app.state.metrics)
        body = {"columns": result.columns, "types": result.types, "rows": result.rows}
        return Response(orjson.dumps(body, default=_json_default), media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        ok = app.state.store_ready and app.state.store.ping()
        status = 200 if ok else 503
        return JSONResponse({"status": "ready" if ok else "store unavailable"}, status_code=status)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body of {declared} bytes exceeds {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _authorize(request: Request, token: Any) -> None:
    if token is None:
        return
    header = request.headers.get("authorization") or ""
    scheme, _, presented = header.partition(" ")
    expected = token.get_secret_value().encode()
    # Constant-time comparison; the token is never logged.
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), expected):
        raise Unauthorized("missing or wrong bearer token")


def _error(exc: SpanmeterError, kind: str, settings: Settings, metrics: Metrics) -> Response:
    status = 401 if isinstance(exc, Unauthorized) else next(
        (code for cls, code in _STATUS.items() if isinstance(exc, cls)), 500
    )
    metrics.requests.labels(str(status)).inc()
    headers = {}
    if status in (429, 503):
        headers["Retry-After"] = str(settings.retry_after_seconds)
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    log.log(logging.WARNING if status >= 500 else logging.INFO, "%d: %s", status, exc)
    # OTLP/HTTP: the error body is a google.rpc.Status in the request's encoding.
    if kind == decode_stage.PROTOBUF:
        body = status_pb2.Status(code=status, message=str(exc)).SerializeToString()
    else:
        body = orjson.dumps({"code": status, "message": str(exc)})
    return Response(body, status_code=status, media_type=kind, headers=headers)


_MAX_COST_USD = Decimal(10**6)  # usage_events.cost_usd is Decimal(18, 12)


def _refuse_unstorable_costs(result: Any) -> None:
    """A cost the column cannot hold (absurd token counts at an operator's absurd rate) would fail
    the batch insert, and with it every request sharing the batch, on every retry: refuse that
    span alone (partial success) instead."""
    if not any(r.cost_usd is not None and r.cost_usd >= _MAX_COST_USD for r in result.records):
        return
    kept = []
    for record in result.records:
        if record.cost_usd is not None and record.cost_usd >= _MAX_COST_USD:
            result.rejected += 1
            result.messages.append(f"span {record.span_id.hex()}: cost out of range")
        else:
            kept.append(record)
    result.records = kept


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")  # never exponent notation: "0E-12" reads as nonsense
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    raise TypeError(type(value).__name__)


def _record_prices(store: Store, prices: PriceBook) -> None:
    # The rates rows are priced at, for SQL joins on price_version; the meter works without them.
    try:
        record_prices(store, prices)
    except SpanmeterError as exc:
        log.warning("rates not recorded in the prices table: %s", exc)


def _open_store(state: Any, settings: Settings, store: Store | None) -> None:
    """Connect, migrate and start everything that needs the store; published on `state` only
    once all of it is up, so a failure half way leaves nothing running."""
    opened = store or Store.connect(settings.clickhouse_dsn, settings.database)
    try:
        migrate(opened)
        _record_prices(opened, state.prices)
        writer = Writer(opened, settings, state.metrics)
        caps = Caps.from_settings(opened, settings).watch(writer)
        writer.start()
    except BaseException:
        if store is None:
            opened.close()
        raise
    caps.preload()  # in the background: recent users' first checks answer from memory
    _record_tier_caps(opened, caps, settings)
    state.store, state.writer, state.caps = opened, writer, caps
    state.snapshots = Snapshots(caps, opened, every_seconds=settings.caps_snapshot_seconds).start()
    state.store_ready = True
    log.info("spanmeter ingest ready on %s (database %s)", _engine(settings), settings.database)


class _StoreOpener:
    """Retries `_open_store` in the background until ClickHouse answers."""

    def __init__(self, state: Any, settings: Settings) -> None:
        self.state, self.settings = state, settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spanmeter-store-opener", daemon=True)

    def start(self) -> _StoreOpener:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.settings.retry_after_seconds):
            try:
                _open_store(self.state, self.settings, None)
                return
            except StoreUnavailable as exc:
                log.info("ClickHouse still unreachable: %s", exc)
            except Exception:  # noqa: BLE001 - e.g. a changed migration: say so, keep trying
                log.exception("the store could not be opened")


class _StoreGate:
    """ASGI middleware: until the store is open, every /v1/ route answers 503 + Retry-After (in
    the request's OTLP encoding on /v1/traces, JSON elsewhere). Once open it only passes through."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            return await self.app(scope, receive, send)
        state = scope["app"].state
        if state.store_ready:
            return await self.app(scope, receive, send)
        exc = StoreUnavailable("ClickHouse is not reachable yet")
        if scope["path"] == "/v1/traces":
            content_type = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1")
            kind = decode_stage.answer_type(content_type)
            response = _error(exc, kind, state.settings, state.metrics)
        else:  # the usage and admin APIs' own error body
            response = Response(orjson.dumps({"code": 503, "message": str(exc)}), status_code=503,
                                media_type="application/json",
                                headers={"Retry-After": str(state.settings.retry_after_seconds)})
        await response(scope, receive, send)


def _record_tier_caps(store: Store, caps: Caps, settings: Settings) -> None:
    # The caps as SQL sees them (tier_caps); the caps themselves work without it.
    source = str(settings.tiers_file) if settings.tiers_file else "no tiers file: track only"
    try:
        record_tier_caps(store, caps.book, source=source, now_ms=time.time_ns() // 1_000_000)
    except SpanmeterError as exc:
        log.warning("tier caps not recorded in the tier_caps table: %s", exc)


def _engine(settings: Settings) -> str:
    return "embedded chDB" if settings.is_embedded else "ClickHouse server"
