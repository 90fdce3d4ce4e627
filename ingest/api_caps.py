"""The usage and caps API a product backend calls for its users (engine: `caps.Caps`).

    GET    /v1/users/{user_id}/usage                     admin or that user's token
    POST   /v1/users/{user_id}/check                     admin or that user's token
           {"estimated_cost_usd": "0.02", "reserve": true}   (body optional)
    DELETE /v1/users/{user_id}/reservations/{id}         admin or that user's token
    GET    /v1/users/{user_id}/limits                    admin
    PUT    /v1/users/{user_id}/tier     {"tier": "pro"}  admin
    PUT    /v1/users/{user_id}/limits   {"caps": {"week": {"limit_usd": "5.00"}, "month": null},
                                         "timezone": "Asia/Kolkata"}             admin
    POST   /v1/users/{user_id}/tokens   {"ttl_seconds": 86400}                    admin
    DELETE /v1/users/{user_id}/tokens   revoke every token of that user          admin

Money is a decimal string in and out, never a JSON number. Errors are {"code", "message"}:
401 without a valid token, 403 for a token of another user (or a user token on an admin route).

User-scoped tokens are stateless: `smu1.<issued ms>.<expires s>.<base64url user id>.<signature>`,
the signature HMAC-SHA256 over everything before it with a key derived from
SPANMETER_USER_TOKEN_SECRET (or, without one, from the admin token). Nothing is stored per token;
revoking a user's tokens stores one timestamp (tokens issued before it are refused), rotating
the secret revokes them all. Tokens are compared in constant time and never logged.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import logging
from dataclasses import dataclass
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool  # the store blocks: keep it off the event loop

from .caps import DENY, Caps, CapsError, Decision, Overrides, Plan, UserConfig, iso, money_pico, window_json
from .errors import SpanmeterError, StoreUnavailable
from .store import QueryError

log = logging.getLogger("spanmeter.ingest.caps")

router = APIRouter(prefix="/v1/users", tags=["usage and caps"])

TOKEN_VERSION = "smu1"
DEFAULT_TOKEN_TTL = 30 * 24 * 3600
MAX_TOKEN_TTL = 366 * 24 * 3600
MAX_USER_ID = 512
_MAX_BODY = 64 * 1024


class _HTTPError(SpanmeterError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Caller:
    admin: bool
    user_id: str | None = None
    issued_ms: int = 0


# --- tokens -----------------------------------------------------------------------------------


def token_key(settings: Any) -> bytes | None:
    """The HMAC key for user tokens, or None when neither secret is configured."""
    secret = settings.user_token_secret or settings.admin_token
    if secret is None:
        return None
    # A derived key: a user token never reveals anything usable as the admin token.
    return hmac.new(secret.get_secret_value().encode(), b"spanmeter user-token key v1", hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint_token(key: bytes, user_id: str, issued_ms: int, expires_s: int) -> str:
    body = f"{TOKEN_VERSION}.{issued_ms}.{expires_s}.{_b64(user_id.encode())}"
    return body + "." + _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())


def verify_token(key: bytes, token: str, now_ms: int) -> Caller | None:
    """The caller a user token names, if its signature is ours and it has not expired."""
    body, _, signature = token.rpartition(".")
    expected = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        return None
    try:
        version, issued, expires, user = body.split(".")
        user_id = _unb64(user).decode()
        issued_ms, expires_s = int(issued), int(expires)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    if version != TOKEN_VERSION or expires_s * 1000 <= now_ms:
        return None
    return Caller(False, user_id, issued_ms)


def _caller(request: Request) -> Caller:
    settings = request.app.state.settings
    header = request.headers.get("authorization") or ""
    scheme, _, presented = header.partition(" ")
    presented = presented.strip() if scheme.lower() == "bearer" else ""
    admin = settings.admin_token
    if admin is None and not presented:
        return Caller(True)  # open mode (no admin token): the CLI allows it on loopback only
    if presented and admin is not None and hmac.compare_digest(presented.encode(), admin.get_secret_value().encode()):
        return Caller(True)
    key = token_key(settings)
    if presented.startswith(TOKEN_VERSION + ".") and key is not None:
        caller = verify_token(key, presented, request.app.state.caps.clock())
        if caller is not None:
            return caller
    raise _HTTPError(401, "missing, expired or wrong bearer token")


def _require_user(request: Request, user_id: str) -> Caller:
    caller = _caller(request)
    if caller.admin:
        return caller
    if not hmac.compare_digest(caller.user_id.encode(), user_id.encode()):
        raise _HTTPError(403, "this token is for another user")
    return caller


def _require_admin(request: Request) -> None:
    if not _caller(request).admin:
        raise _HTTPError(403, "the admin token is required")


def _check_revoked(caller: Caller, config: UserConfig) -> None:
    if not caller.admin and caller.issued_ms < config.tokens_not_before_ms:
        raise _HTTPError(401, "this token has been revoked")


# --- plumbing ---------------------------------------------------------------------------------


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _error(exc: Exception, request: Request) -> Response:
    if isinstance(exc, _HTTPError):
        status = exc.status
    elif isinstance(exc, (CapsError, QueryError)):
        status = 400
    elif isinstance(exc, StoreUnavailable):
        status = 503
    else:
        status = 500
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if status == 503:
        headers["Retry-After"] = str(request.app.state.settings.retry_after_seconds)
    log.log(logging.WARNING if status >= 500 else logging.INFO, "%s %s: %d: %s",
            request.method, request.url.path.rsplit("/", 1)[-1], status, exc)
    return _json({"code": status, "message": str(exc)}, status, headers)


def _answering_errors(route: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
    """Every failure of a route becomes its status code and a {"code", "message"} body."""

    @functools.wraps(route)  # FastAPI reads the route's parameters through __wrapped__
    async def answer(*args: Any, request: Request, **kwargs: Any) -> Response:
        try:
            return await route(*args, request=request, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status code here
            return _error(exc, request)

    return answer


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > _MAX_BODY:
        raise _HTTPError(413, f"body over {_MAX_BODY} bytes")
    if not raw.strip():
        return {}
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _HTTPError(400, f"body is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise _HTTPError(400, "body must be a JSON object")
    return doc


def _user(user_id: str) -> str:
    if not user_id or len(user_id) > MAX_USER_ID:
        raise _HTTPError(400, f"user id must be 1 to {MAX_USER_ID} characters")
    return user_id


def _stored(request: Request, user_id: str) -> str:
    """The id rows are stored under: with SPANMETER_USER_ID_KEY set, the ingest keeps only a keyed
    pseudonym, so the product's own id is mapped the same way (tokens still name the real id)."""
    key = getattr(request.app.state.settings, "user_id_key", None)
    if key is None:
        return user_id
    from .privacy import pseudonymize_user_id

    return pseudonymize_user_id(user_id, key)


def _caps(request: Request) -> Caps:
    return request.app.state.caps


def _usage_json(user_id: str, plan: Plan, windows, now_ms: int) -> dict[str, Any]:
    rendered = [window_json(w) for w in windows]
    reasons = sorted({w["estimate_reason"] for w in rendered if w["estimate_reason"]})
    return {
        "user_id": user_id,
        "tier": plan.tier,
        "timezone": plan.timezone,
        "as_of": iso(now_ms),
        "estimate": bool(reasons),
        "estimate_reason": "; ".join(reasons) or None,
        "windows": rendered,
    }


def _plan_json(user_id: str, config: UserConfig, plan: Plan) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "tier": plan.tier,
        "assigned_tier": config.tier,
        "timezone": plan.timezone,
        "caps": {c.window.name: c.as_json() for c in plan.caps},
        "overrides": config.overrides.as_json(),
    }


# --- routes -----------------------------------------------------------------------------------


@router.get("/{user_id:path}/usage")
@_answering_errors
async def usage(user_id: str, request: Request) -> Response:
    caller = _require_user(request, _user(user_id))
    caps = _caps(request)
    config, plan, windows = await run_in_threadpool(caps.usage, _stored(request, user_id))
    _check_revoked(caller, config)
    return _json(_usage_json(user_id, plan, windows, caps.clock()))


@router.post("/{user_id:path}/check")
@_answering_errors
async def check(user_id: str, request: Request) -> Response:
    caller = _require_user(request, _user(user_id))
    body = await _body(request)
    unknown = set(body) - {"estimated_cost_usd", "reserve"}
    if unknown:
        raise _HTTPError(400, f"unknown fields {sorted(unknown)}")
    estimate = body.get("estimated_cost_usd")
    if estimate is not None and not isinstance(estimate, str):
        raise _HTTPError(400, 'estimated_cost_usd must be a decimal string, e.g. "0.02"')
    reserve = body.get("reserve", True)
    if not isinstance(reserve, bool):
        raise _HTTPError(400, "reserve must be true or false")
    caps, stored = _caps(request), _stored(request, user_id)
    if not caller.admin:
        config, _ = await run_in_threadpool(caps.config, stored)
        _check_revoked(caller, config)
    decision: Decision = await run_in_threadpool(caps.check, stored, estimate, reserve=reserve)
    now = caps.clock()
    return _json(_decision_json(user_id, decision, now), headers=_decision_headers(decision, now))


def _decision_json(user_id: str, d: Decision, now_ms: int) -> dict[str, Any]:
    windows = [window_json(w) for w in d.windows]
    reasons = sorted({w["estimate_reason"] for w in windows if w["estimate_reason"]})
    retry_after = None if d.retry_at_ms is None else max(0, -(-(d.retry_at_ms - now_ms) // 1000))
    return {
        "user_id": user_id,
        "decision": d.decision,
        "reason": d.reason,
        "window": d.window,
        "retry_after": retry_after,
        "resets_at": iso(d.retry_at_ms),
        "estimate": bool(reasons),
        "estimate_reason": "; ".join(reasons) or None,
        "reservation": None if d.reservation is None else {
            "id": d.reservation.id,
            "amount_usd": money_pico(d.reservation.amount_pico),
            "expires_at": iso(d.reservation.expires_ms),
        },
        "windows": windows,
    }


def _decision_headers(d: Decision, now_ms: int) -> dict[str, str]:
    if d.decision == DENY and d.retry_at_ms is not None:
        return {"Retry-After": str(max(0, -(-(d.retry_at_ms - now_ms) // 1000)))}
    return {}


@router.delete("/{user_id:path}/reservations/{reservation_id}")
@_answering_errors
async def release(user_id: str, reservation_id: str, request: Request) -> Response:
    _require_user(request, _user(user_id))
    released = _caps(request).release(_stored(request, user_id), reservation_id)
    if not released:
        raise _HTTPError(404, "no such reservation (settled, expired or released)")
    return Response(status_code=204)


@router.get("/{user_id:path}/limits")
@_answering_errors
async def get_limits(user_id: str, request: Request) -> Response:
    _require_admin(request)
    config, plan = await run_in_threadpool(_caps(request).config, _stored(request, _user(user_id)))
    return _json(_plan_json(user_id, config, plan))


@router.put("/{user_id:path}/tier")
@_answering_errors
async def put_tier(user_id: str, request: Request) -> Response:
    _require_admin(request)
    body = await _body(request)
    tier = body.get("tier")
    if not isinstance(tier, str) or set(body) != {"tier"}:
        raise _HTTPError(400, 'expected {"tier": "<name>"}')
    caps, stored = _caps(request), _stored(request, _user(user_id))
    await run_in_threadpool(caps.set_tier, stored, tier)
    config, plan = await run_in_threadpool(caps.config, stored)
    log.info("tier of a user set to %s", tier)
    return _json(_plan_json(user_id, config, plan))


@router.put("/{user_id:path}/limits")
@_answering_errors
async def put_limits(user_id: str, request: Request) -> Response:
    _require_admin(request)
    body = await _body(request)
    for spec in (body.get("caps") or {}).values() if isinstance(body.get("caps"), dict) else ():
        money = spec.get("limit_usd") if isinstance(spec, dict) else spec
        if money is not None and not isinstance(money, str):
            raise _HTTPError(400, 'limit_usd must be a decimal string (e.g. "5.00") or null')
    overrides = Overrides.parse(body)
    caps, stored = _caps(request), _stored(request, _user(user_id))
    caps.book.plan(None, overrides)  # every override must apply to a tier
    await run_in_threadpool(caps.set_overrides, stored, overrides)
    config, plan = await run_in_threadpool(caps.config, stored)
    return _json(_plan_json(user_id, config, plan))


@router.post("/{user_id:path}/tokens")
@_answering_errors
async def mint(user_id: str, request: Request) -> Response:
    _require_admin(request)
    body = await _body(request)
    ttl = body.get("ttl_seconds", DEFAULT_TOKEN_TTL)
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 60 <= ttl <= MAX_TOKEN_TTL:
        raise _HTTPError(400, f"ttl_seconds must be a whole number from 60 to {MAX_TOKEN_TTL}")
    key = token_key(request.app.state.settings)
    if key is None:
        raise _HTTPError(409, "set SPANMETER_USER_TOKEN_SECRET or SPANMETER_ADMIN_TOKEN to mint user tokens")
    now = _caps(request).clock()
    expires = now // 1000 + ttl
    token = mint_token(key, _user(user_id), now, expires)
    return _json({"user_id": user_id, "token": token, "expires_at": iso(expires * 1000)}, 201)


@router.delete("/{user_id:path}/tokens")
@_answering_errors
async def revoke(user_id: str, request: Request) -> Response:
    _require_admin(request)
    at = await run_in_threadpool(_caps(request).revoke_tokens, _stored(request, _user(user_id)))
    return _json({"user_id": user_id, "revoked_before": iso(at)})
