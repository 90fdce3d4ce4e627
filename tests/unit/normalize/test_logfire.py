"""Logfire 5.4.0 + pydantic-ai 2.68.0: the chat span is counted, the invoke_agent span (with
gen_ai.aggregated_usage.*) never; operation.cost kept as the reported cost; user from the
application's logfire span. pydantic-ai's Anthropic model streams even for run_sync, so both
Anthropic scenarios carry the streamed usage."""

from dataclasses import replace
from decimal import Decimal

import pytest

from tests.unit.normalize.instrumentation_fixtures import CHAT, CHAT_STREAM, MESSAGES_STREAM, check, run

USER = "user-logfire"
CASES = {
    "chat": replace(CHAT, user=USER),
    "chat_stream": replace(CHAT_STREAM, user=USER),
    "messages": replace(MESSAGES_STREAM, user=USER),
    "messages_stream": replace(MESSAGES_STREAM, user=USER),
}


@pytest.mark.parametrize("scenario", CASES)
def test_one_row_per_call(scenario):
    check("logfire", scenario, CASES[scenario], source="logfire")


def test_agent_run_is_aggregate_and_reported_cost_kept():
    (r,) = run("logfire", "chat").records
    assert r.reported_cost_usd == Decimal("0.0002832")
    assert r.attribution.agent == "greeter"
    assert r.operation == "chat"


def test_v1_agent_run_span_with_plain_usage_names_is_not_counted():
    from spanmeter.ingest.decode import decode
    from spanmeter.ingest.normalize import normalize
    from tests.support.otlp import chat, span, to_protobuf

    run_span = span("agent run", 1, 1, attrs={"agent_name": "a", "logfire.span_type": "span",
                                              "gen_ai.usage.input_tokens": 300, "gen_ai.usage.output_tokens": 30})
    request = chat(1, 2, parent=1, model="gpt-4o-mini", input=300, output=30)
    records = normalize(decode(to_protobuf([run_span, request]), "application/x-protobuf")).records
    assert [r.usage.input for r in records] == [300]
