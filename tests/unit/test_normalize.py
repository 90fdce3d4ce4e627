"""Normalize stage: semconv (current and deprecated names), inclusive tokens, leaf rule, attribution."""

from spanmeter.ingest.decode import decode
from spanmeter.ingest.normalize import normalize
from tests.support.otlp import chat, span, span_id, to_protobuf


def run(specs, **kw):
    return normalize(decode(to_protobuf(specs, service="svc"), "application/x-protobuf"), **kw)


def test_current_semconv_span_becomes_one_record():
    result = run([chat(1, 1, model="gpt-4o-mini", input=1000, output=500, cache_read=200, reasoning=100, user="u1")])
    (r,) = result.records
    assert (r.provider, r.operation, r.request_model, r.response_model) == ("openai", "chat", "gpt-4o-mini", "gpt-4o-mini")
    assert (r.usage.input, r.usage.cache_read, r.usage.cache_write, r.usage.output, r.usage.reasoning) == (1000, 200, 0, 500, 100)
    assert r.attribution.user_id == "u1" and r.service_name == "svc"
    assert r.usage_status == "reported" and r.source == "semconv"


def test_deprecated_names_and_provider_values():
    attrs = {
        "gen_ai.system": "vertex_ai",
        "gen_ai.request.model": "gemini-2.5-flash",
        "gen_ai.usage.prompt_tokens": 70,
        "gen_ai.usage.completion_tokens": 30,
        "enduser.id": "bob",
    }
    (r,) = run([span("chat", 1, 1, attrs=attrs)]).records
    assert r.provider == "gcp.vertex_ai" and r.model == "gemini-2.5-flash"
    assert (r.usage.input, r.usage.output) == (70, 30)
    assert r.attribution.user_id == "bob"


def test_current_name_wins_over_deprecated_alias_never_summed():
    attrs = {"gen_ai.provider.name": "openai", "gen_ai.request.model": "m",
             "gen_ai.usage.input_tokens": 10, "gen_ai.usage.prompt_tokens": 10,
             "gen_ai.usage.output_tokens": 5, "gen_ai.usage.completion_tokens": 5}
    (r,) = run([span("chat m", 1, 1, attrs=attrs)]).records
    assert (r.usage.input, r.usage.output) == (10, 5)


def test_exclusive_cache_counts_are_made_inclusive():
    # Anthropic-shaped raw counts: 50 uncached, 1000 cache reads, 300 cache writes.
    (r,) = run([chat(1, 1, model="claude-sonnet-4-5", provider="anthropic", input=50, output=10,
                     cache_read=1000, cache_write=300)]).records
    assert (r.usage.input, r.usage.uncached_input) == (1350, 50)


def test_spans_without_usage_are_not_records():
    result = run([span("GET /", 1, 1, attrs={"http.method": "GET"}),
                  span("chat", 1, 2, parent=1, attrs={"gen_ai.operation.name": "chat"})])
    assert result.records == []


def test_missing_usage_reported_by_instrumentation_is_a_record_marked_missing():
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
             "spanmeter.usage_status": "missing"}
    (r,) = run([span("chat gpt-4o", 1, 1, attrs=attrs)]).records
    assert r.usage_status == "missing" and r.usage.input == 0


def test_leaf_rule_counts_the_deepest_usage_span_once():
    framework = chat(1, 1, model="gpt-4o", input=100, output=10)
    sdk = chat(1, 2, model="gpt-4o", input=100, output=10, parent=1)
    http = chat(1, 3, model="gpt-4o", input=100, output=10, parent=2)
    result = run([framework, http, sdk])
    assert [r.span_id for r in result.records] == [span_id(3)]
    # Every span not counted is passed on with its parent, for the writer's cross-export rule.
    assert {k[16:] for k, _ in result.links} == {span_id(2)}


def test_aggregate_spans_never_count():
    agent = span("invoke_agent a", 1, 1, attrs={"gen_ai.operation.name": "invoke_agent",
                                                "gen_ai.usage.input_tokens": 300, "gen_ai.usage.output_tokens": 30})
    result = run([agent])
    assert result.records == []


def test_attribution_comes_from_ancestors_when_the_leaf_lacks_it():
    root = span("POST /chat", 1, 1, attrs={"user.id": "carol", "session.id": "s9", "spanmeter.feature": "tutor"})
    mid = span("agent step", 1, 2, parent=1, attrs={"spanmeter.team": "physics", "user.id": "not-this-one-is-farther"})
    leaf = chat(1, 3, model="gpt-4o-mini", input=10, output=5, parent=2)
    (r,) = run([root, mid, leaf]).records
    assert r.attribution.user_id == "not-this-one-is-farther"  # the nearest ancestor wins
    assert (r.attribution.session_id, r.attribution.feature, r.attribution.team) == ("s9", "tutor", "physics")


def test_sibling_spans_of_one_response_count_once():
    a = chat(1, 2, model="gpt-4o", input=10, output=5, parent=1, extra={"gen_ai.response.id": "resp-1"})
    b = chat(1, 3, model="gpt-4o", input=10, output=5, parent=1, extra={"gen_ai.response.id": "resp-1"})
    assert len(run([a, b]).records) == 1


def test_over_long_values_and_absurd_counts_are_rejected_with_a_reason():
    long_user = chat(1, 1, model="gpt-4o", input=1, output=1, user="x" * 5000)
    huge = chat(2, 1, model="gpt-4o", input=2**40, output=1)
    ok = chat(3, 1, model="gpt-4o", input=1, output=1)
    result = run([long_user, huge, ok], max_attribute_length=4096)
    assert len(result.records) == 1 and result.rejected == 2
    assert any("user_id longer than 4096" in m for m in result.messages)
    assert any("token count out of range" in m for m in result.messages)


def test_the_root_span_lends_attribution_across_a_missing_intermediate_span():
    # request span (root, user) -> handler span (dropped by a collector filter) -> model call
    root = span("POST /chat", 1, 1, attrs={"user.id": "dora", "spanmeter.feature": "essay"})
    leaf = chat(1, 3, model="gpt-4o-mini", input=10, output=5, parent=2)
    (r,) = run([leaf, root]).records
    assert (r.attribution.user_id, r.attribution.feature) == ("dora", "essay")


def test_another_traces_root_lends_nothing():
    other_root = span("POST /chat", 2, 1, attrs={"user.id": "someone-else"})
    leaf = chat(1, 3, model="gpt-4o-mini", input=10, output=5, parent=2)
    (r,) = run([leaf, other_root]).records
    assert r.attribution.user_id == ""
