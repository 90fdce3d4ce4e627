"""`spanmeter.attributes`: scopes, decorators, tasks, threads, baggage and request-field fallback."""

from __future__ import annotations

import asyncio
import contextvars
import threading

from opentelemetry import baggage, context

import spanmeter
from spanmeter import semconv as sc
from spanmeter._attribution import resolve


def test_context_manager_sets_and_restores() -> None:
    assert resolve(None, None) == {}
    with spanmeter.attributes(user_id="u1", session_id="s1", conversation_id="c1", feature="search", team="growth"):
        assert resolve(None, None) == {
            sc.USER_ID: "u1",
            sc.SESSION_ID: "s1",
            sc.GEN_AI_CONVERSATION_ID: "c1",
            sc.SPANMETER_FEATURE: "search",
            sc.SPANMETER_TEAM: "growth",
        }
    assert resolve(None, None) == {}


def test_nested_scopes_merge_inner_wins() -> None:
    with spanmeter.attributes(user_id="outer", team="t"):
        with spanmeter.attributes(user_id="inner", feature="f"):
            assert resolve(None, None) == {sc.USER_ID: "inner", sc.SPANMETER_TEAM: "t", sc.SPANMETER_FEATURE: "f"}
        assert spanmeter.current_attributes() == {sc.USER_ID: "outer", sc.SPANMETER_TEAM: "t"}


def test_non_string_ids_are_stringified_and_none_is_ignored() -> None:
    with spanmeter.attributes(user_id=42, session_id=None):
        assert resolve(None, None) == {sc.USER_ID: "42"}


def test_decorator_sync_and_async() -> None:
    @spanmeter.attributes(feature="sync")
    def sync_fn() -> dict:
        return resolve(None, None)

    @spanmeter.attributes(feature="async")
    async def async_fn() -> dict:
        await asyncio.sleep(0)
        return resolve(None, None)

    assert sync_fn() == {sc.SPANMETER_FEATURE: "sync"}
    assert asyncio.run(async_fn()) == {sc.SPANMETER_FEATURE: "async"}
    assert sync_fn.__name__ == "sync_fn" and asyncio.iscoroutinefunction(async_fn)
    assert resolve(None, None) == {}


def test_async_with() -> None:
    async def main() -> dict:
        async with spanmeter.attributes(user_id="a"):
            return resolve(None, None)

    assert asyncio.run(main()) == {sc.USER_ID: "a"}


def test_asyncio_tasks_keep_their_own_attribution() -> None:
    async def worker(user: str) -> dict:
        with spanmeter.attributes(user_id=user):
            await asyncio.sleep(0.01)  # interleave with the other tasks
            return resolve(None, None)

    async def main() -> list[dict]:
        with spanmeter.attributes(team="t"):
            return await asyncio.gather(*(worker(f"u{i}") for i in range(5)))

    results = asyncio.run(main())
    assert results == [{sc.SPANMETER_TEAM: "t", sc.USER_ID: f"u{i}"} for i in range(5)]


def test_threads_with_copied_context_inherit() -> None:
    seen: dict[str, dict] = {}

    def work(name: str) -> None:
        seen[name] = resolve(None, None)

    with spanmeter.attributes(user_id="parent"):
        copied = threading.Thread(target=contextvars.copy_context().run, args=(work, "copied"))
        plain = threading.Thread(target=work, args=("plain",))
        copied.start(), plain.start()
        copied.join(), plain.join()
    assert seen["copied"] == {sc.USER_ID: "parent"}
    assert seen["plain"] == {}  # a bare thread starts from an empty context, as contextvars do


def test_baggage_fallback_then_request_fields() -> None:
    ctx = baggage.set_baggage("user.id", "bag-user")
    ctx = baggage.set_baggage("session.id", "bag-session", ctx)
    ctx = baggage.set_baggage("spanmeter.team", "bag-team", ctx)
    token = context.attach(ctx)
    try:
        # Scope beats baggage, baggage beats the request body.
        with spanmeter.attributes(team="scoped"):
            assert resolve("body-user", "body-conv") == {
                sc.SPANMETER_TEAM: "scoped",
                sc.USER_ID: "bag-user",
                sc.SESSION_ID: "bag-session",
                sc.GEN_AI_CONVERSATION_ID: "body-conv",
            }
    finally:
        context.detach(token)


def test_enduser_id_baggage_alias() -> None:
    token = context.attach(baggage.set_baggage("enduser.id", "e1"))
    try:
        assert resolve(None, None) == {sc.USER_ID: "e1"}
    finally:
        context.detach(token)


def test_request_fields_last() -> None:
    assert resolve("body-user", None) == {sc.USER_ID: "body-user"}
    with spanmeter.attributes(user_id="scoped"):
        assert resolve("body-user", None) == {sc.USER_ID: "scoped"}


def test_attributes_never_write_baggage() -> None:
    with spanmeter.attributes(user_id="u1"):
        assert baggage.get_all() == {}
