"""The hand-off of a prepared export from a worker process: records and links survive the flat
tuples they travel as, field for field."""

from __future__ import annotations

import dataclasses
import pickle
from decimal import Decimal

from pydantic import SecretStr

from spanmeter.ingest.config import Settings
from spanmeter.ingest.privacy import pseudonymize_user_id
from spanmeter.ingest.records import Attribution, TokenUsage, UsageRecord
from spanmeter.ingest.workers import Limits, prepare, prepare_packed, unpack
from tests.support.otlp import chat, span, to_protobuf

PB = "application/x-protobuf"


def _export() -> bytes:
    return to_protobuf([
        span("invoke_agent planner", 1, 1, attrs={"gen_ai.operation.name": "invoke_agent", "user.id": "u-1",
                                                  "session.id": "s-1", "gen_ai.agent.name": "planner"}),
        chat(1, 2, parent=1, model="gpt-4o-mini", input=1200, output=80, cache_read=1000, reasoning=30,
             extra={"gen_ai.response.id": "resp-1", "spanmeter.streaming": True, "spanmeter.feature": "search",
                    "spanmeter.team": "core", "gen_ai.conversation.id": "c-9"}),
        chat(2, 1, model="claude-sonnet-4", provider="anthropic", input=10, output=5, user="u-2",
             extra={"spanmeter.usage_status": "incomplete"}),
    ])


def _limits(**overrides) -> Limits:
    return Limits.of(Settings(clickhouse_dsn="chdb://unused", **overrides))


def test_records_and_links_round_trip_through_the_packed_form():
    body = _export()
    direct = prepare(body, PB, None, _limits())
    packed = pickle.loads(pickle.dumps(prepare_packed(body, PB, None, _limits())))
    moved = unpack(packed)

    assert moved.spans == direct.spans == 3
    assert moved.records == direct.records
    assert len(moved.records) == 2
    leaf = next(r for r in moved.records if r.span_id == direct.records[0].span_id)
    assert leaf.usage == TokenUsage(input=1200, cache_read=1000, cache_write=0, output=80, reasoning=30)
    assert leaf.attribution == Attribution(user_id="u-1", session_id="s-1", conversation_id="c-9", feature="search",
                                           team="core", agent="planner")
    assert leaf.parent_span_id == direct.records[0].parent_span_id != b""
    assert leaf.streaming is True and leaf.response_id == "resp-1"
    # Every field of the record is carried (a field added to UsageRecord must be added to the pack).
    assert [f.name for f in dataclasses.fields(UsageRecord)][-6:] == [
        "reported_cost_usd", "cost_usd", "pricing_status", "price_version", "sign", "parent_span_id"]
    assert all(r.cost_usd is None and r.sign == 1 and r.price_version == "" for r in moved.records)

    # The agent span is not counted: its link lends its attribution to later exports.
    assert [tuple(link) for link in moved.links] == [tuple(link) for link in direct.links]
    assert len(moved.links) == 1
    assert moved.links[0].attribution == direct.links[0].attribution == Attribution(
        user_id="u-1", session_id="s-1", conversation_id="", feature="", team="", agent="planner")


def test_reported_costs_and_pseudonyms_are_carried_exactly():
    body = to_protobuf([chat(3, 1, model="gpt-4o", input=5, output=7, user="alice",
                             extra={"telemetry.sdk.name": "openlit", "gen_ai.usage.cost": 0.1})])
    limits = _limits(user_id_key=SecretStr("k" * 32))
    moved = unpack(pickle.loads(pickle.dumps(prepare_packed(body, PB, None, limits))))
    direct = prepare(body, PB, None, limits)
    assert moved.records == direct.records
    assert moved.records[0].reported_cost_usd == Decimal("0.100000000000")
    assert moved.records[0].attribution.user_id == pseudonymize_user_id("alice", "k" * 32) != "alice"
    assert direct.records[0].attribution.user_id == moved.records[0].attribution.user_id
