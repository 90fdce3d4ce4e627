"""The anthropic SDK's own spans (anthropic 2.10.0, scope com.anthropic.sdk.python): inclusive input,
cache writes under gen_ai.usage.cache_write.input_tokens; user from the application's span."""

from dataclasses import replace

import pytest

from spanmeter.ingest.normalize.anthropic_sdk import SCOPE, extract
from spanmeter.ingest.records import Span
from tests.unit.normalize.instrumentation_fixtures import MESSAGES, MESSAGES_STREAM, check, run

USER = "user-anthropic-sdk"
CASES = {"messages": replace(MESSAGES, user=USER), "messages_stream": replace(MESSAGES_STREAM, user=USER)}


@pytest.mark.parametrize("scenario", CASES)
def test_one_row_per_call(scenario):
    check("anthropic_sdk", scenario, CASES[scenario], source="anthropic_sdk")


def test_stream_is_marked_streaming():
    (r,) = run("anthropic_sdk", "messages_stream").records
    assert r.streaming


def test_compaction_iterations_are_billed_on_top():
    span = Span(b"\1" * 16, b"\1" * 8, b"", "anthropic.messages.create", 0, 1, {
        "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 10,
        "anthropic.usage.compaction.input_tokens": 5000, "anthropic.usage.compaction.output_tokens": 300,
    }, {}, scope_name=SCOPE)
    found = extract(span)
    assert (found.input, found.output) == (5100, 310)
