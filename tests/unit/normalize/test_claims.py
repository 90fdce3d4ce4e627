"""Library normalizers recognise their spans by a declared `Claim`; the union of every claim is
asked once per span, and a span no library claims is read by the conventions' normalizer alone."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from spanmeter.ingest import normalize
from spanmeter.ingest.normalize import NORMALIZERS, openllmetry, semconv
from spanmeter.ingest.records import Span

KEYS = sorted({k for m in normalize._LIBRARIES for k in m.CLAIM.keys}
              | {p + "x" for m in normalize._LIBRARIES for p in m.CLAIM.key_prefixes}
              | {"gen_ai.usage.input_tokens", "telemetry.sdk.name", "gen_ai.framework", "x\nlangsmith.y", "langsmith"})
SCOPES = sorted({s for m in normalize._LIBRARIES for s in m.CLAIM.scopes}
                | {p + "v1" for m in normalize._LIBRARIES for p in m.CLAIM.scope_prefixes}
                | {"", "opentelemetry.instrumentation.openai_v2", "opentelemetry.instrumentation.", "openlit"})
VALUES = st.sampled_from(["openlit", "litellm", "x", "", 1, None, ["openlit"]])


@st.composite
def spans(draw) -> Span:
    attrs = draw(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=4))
    resource = draw(st.dictionaries(st.sampled_from(["telemetry.sdk.name", "service.name"]), VALUES, max_size=2))
    return Span(b"t" * 16, b"s" * 8, b"", draw(st.sampled_from(["chat", "ai.generateText", "ai", ""])), 0, 0,
                attrs, resource, draw(st.sampled_from(SCOPES)), 3, 0)


@settings(max_examples=2000, deadline=None, database=None)
@given(span=spans())
def test_the_union_holds_exactly_when_one_library_claims_the_span(span):
    claimed = [m.NAME for m in normalize._LIBRARIES if m.CLAIM(span)]
    assert normalize._ANY_LIBRARY(span) == bool(claimed)
    # A normalizer whose claim does not hold reads nothing: the fast path loses nothing.
    for name, extract in NORMALIZERS:
        if name != semconv.NAME and name not in claimed:
            assert extract(span) is None
    # And extract() gives what asking every normalizer in order gives.
    merged, source = None, ""
    for name, extract in NORMALIZERS:
        found = extract(span)
        if found is not None:
            if merged is None:
                merged = found
            else:
                merged.merge(found)
            source = source or name
    assert normalize.extract(span) == (merged, source)


def test_openllmetry_claims_its_packages_scopes_and_nothing_else():
    def claims(scope: str) -> bool:
        return openllmetry.CLAIM(Span(b"t" * 16, b"s" * 8, b"", "", 0, 0, {}, {}, scope, 3, 0))

    assert claims("opentelemetry.instrumentation.openai")
    assert claims("opentelemetry.instrumentation.openai.v1")
    assert claims("opentelemetry.instrumentation.langchain")
    assert not claims("opentelemetry.instrumentation.openai_v2")  # contrib's, plain conventions
    assert not claims("opentelemetry.instrumentation.httpx")
    assert not claims("opentelemetry.instrumentation.")
    assert not claims("xopentelemetry.instrumentation.openai")


def test_every_library_normalizer_has_a_claim():
    assert {m.NAME for m in normalize._LIBRARIES} == {name for name, _ in NORMALIZERS} - {semconv.NAME}
