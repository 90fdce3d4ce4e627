"""Who an LLM call was made for: `spanmeter.attributes(...)`, OTel baggage, the request's own fields.

    with spanmeter.attributes(user_id="u-42", feature="search"):
        client.chat.completions.create(...)      # the usage span carries user.id and spanmeter.feature

    @spanmeter.attributes(team="growth")          # also on `async def` functions
    def handler(...): ...

Values live in a `contextvars.ContextVar`, so they follow asyncio tasks (which copy the context
when created) and threads started with `contextvars.copy_context().run(...)`; nested scopes merge,
the inner value winning per key. Each key is resolved in order: the innermost `attributes()` scope,
then W3C baggage (keys `user.id`, `enduser.id`, `session.id`, `gen_ai.conversation.id`,
`spanmeter.feature`, `spanmeter.team`), then the request body (OpenAI `safety_identifier`/`user`,
Anthropic `metadata.user_id`, Responses `conversation`).

`attributes()` never writes baggage: baggage travels in headers to every downstream service,
including the LLM provider, and user ids should not.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from typing import Any, TypeVar

from opentelemetry import baggage
from opentelemetry.context import Context

from . import semconv as sc

F = TypeVar("F", bound=Callable[..., Any])

_CURRENT: ContextVar[Mapping[str, str] | None] = ContextVar("spanmeter_attributes", default=None)

ATTRIBUTE_KEYS = (sc.USER_ID, sc.SESSION_ID, sc.GEN_AI_CONVERSATION_ID, sc.SPANMETER_FEATURE, sc.SPANMETER_TEAM)

# Baggage keys read as a fallback, by the span attribute they fill; first present wins.
_BAGGAGE_KEYS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (sc.USER_ID, (sc.USER_ID, sc.ENDUSER_ID)),
    (sc.SESSION_ID, (sc.SESSION_ID,)),
    (sc.GEN_AI_CONVERSATION_ID, (sc.GEN_AI_CONVERSATION_ID,)),
    (sc.SPANMETER_FEATURE, (sc.SPANMETER_FEATURE,)),
    (sc.SPANMETER_TEAM, (sc.SPANMETER_TEAM,)),
)


class attributes:  # noqa: N801 - used like a function: `with spanmeter.attributes(...)`
    """Attribute the LLM calls made inside this scope to a user, session, conversation, feature, team.

    Use as a context manager (`with` / `async with`) or as a decorator on sync or async functions.
    `None` leaves a key to the enclosing scope. One instance may decorate functions that run
    concurrently; as a context manager, enter a given instance once at a time (make a new one
    per `with`, as the examples do).
    """

    __slots__ = ("_values", "_tokens")

    def __init__(
        self,
        *,
        user_id: str | int | None = None,
        session_id: str | int | None = None,
        conversation_id: str | int | None = None,
        feature: str | None = None,
        team: str | None = None,
    ) -> None:
        given = (
            (sc.USER_ID, user_id),
            (sc.SESSION_ID, session_id),
            (sc.GEN_AI_CONVERSATION_ID, conversation_id),
            (sc.SPANMETER_FEATURE, feature),
            (sc.SPANMETER_TEAM, team),
        )
        self._values: dict[str, str] = {key: str(value) for key, value in given if value is not None}
        self._tokens: list[Token[Mapping[str, str] | None]] = []

    def _push(self) -> Token[Mapping[str, str] | None]:
        outer = _CURRENT.get()
        merged = {**outer, **self._values} if outer else self._values
        return _CURRENT.set(merged)

    def __enter__(self) -> attributes:
        self._tokens.append(self._push())
        return self

    def __exit__(self, *exc_info: object) -> None:
        _CURRENT.reset(self._tokens.pop())

    async def __aenter__(self) -> attributes:
        return self.__enter__()

    async def __aexit__(self, *exc_info: object) -> None:
        self.__exit__()

    def __call__(self, func: F) -> F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                token = self._push()
                try:
                    return await func(*args, **kwargs)
                finally:
                    _CURRENT.reset(token)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = self._push()
            try:
                return func(*args, **kwargs)
            finally:
                _CURRENT.reset(token)

        return wrapper  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"spanmeter.attributes({self._values!r})"


def current_attributes() -> dict[str, str]:
    """The attributes in effect here from `attributes()` scopes (not baggage nor request fields)."""
    return dict(_CURRENT.get() or {})


def current_scope() -> Mapping[str, str] | None:
    """What the `attributes()` scopes say right now (never changed in place: safe to keep and
    resolve later, on another thread, with `resolve_scope`)."""
    return _CURRENT.get()


def resolve(user: str | None, conversation: str | None, context: Context | None = None) -> dict[str, str]:
    """Span attributes for a call: scopes, then baggage (of `context`, else the current one),
    then the request's own fields."""
    return resolve_scope(_CURRENT.get(), user, conversation, context)


def resolve_scope(
    scoped: Mapping[str, str] | None, user: str | None, conversation: str | None, context: Context | None
) -> dict[str, str]:
    """`resolve` with the scopes' attributes as they were when the call was made."""
    result = dict(scoped) if scoped else {}
    if len(result) < len(ATTRIBUTE_KEYS):
        bag = baggage.get_all(context)
        if bag:
            for key, sources in _BAGGAGE_KEYS:
                if key in result:
                    continue
                for source in sources:
                    value = bag.get(source)
                    if value:
                        result[key] = str(value)
                        break
        if user is not None and sc.USER_ID not in result:
            result[sc.USER_ID] = user
        if conversation is not None and sc.GEN_AI_CONVERSATION_ID not in result:
            result[sc.GEN_AI_CONVERSATION_ID] = conversation
    return result
