"""`base.read`: many text()/token_count() reads of a span's attributes in one call, in C when the
extension is built (ingest/_otlp.c `read_attributes`), always the answers the Python functions give."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings, strategies as st

from spanmeter.ingest.normalize import base, semconv
from spanmeter.ingest.normalize.base import COUNT, TEXT, read, read_python

native = base._native


def _canon(value):
    """A value with its type spelled out: True is not 1, 1.0 is not 1, and NaN equals NaN."""
    if isinstance(value, float):
        return ("float", struct.pack("<d", value))
    return (type(value).__name__, value)


KEYS = ("a", "b", "c")
SPEC = ((TEXT, ("a",)), (TEXT, ("a", "b", "c")), (COUNT, ("b",)), (COUNT, ("c", "a", "b")), (TEXT, ()),
        (COUNT, ("absent",)))
VALUES = st.one_of(
    st.none(), st.text(max_size=5), st.sampled_from(["", "12", " 7 ", "1e3", "-3", "٣"]),
    st.integers(), st.sampled_from([0, -1, 2**63 - 1, 2**63, 2**64, -(2**63), -(2**64), 2**200]),
    st.booleans(), st.floats(allow_nan=True, allow_infinity=True), st.lists(st.integers(), max_size=2),
)


class _Dict(dict):
    pass


@pytest.mark.skipif(native is None, reason="the compiled extension is not built")
@settings(max_examples=3000, deadline=None, database=None)
@given(attrs=st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=3), subclass=st.booleans())
def test_the_compiled_reads_answer_as_text_and_token_count(attrs, subclass):
    if subclass:
        attrs = _Dict(attrs)
    expected = [_canon(v) for v in read_python(attrs, SPEC)]
    assert [_canon(v) for v in native.read_attributes(attrs, SPEC, base.text, base.token_count)] == expected
    assert [_canon(v) for v in read(attrs, SPEC)] == expected


def test_semconv_reads_the_same_with_and_without_the_extension(monkeypatch):
    from spanmeter.ingest.records import Span

    attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "OpenAI", "gen_ai.usage.input_tokens": 12,
             "gen_ai.usage.output_tokens": "7", "gen_ai.usage.prompt_tokens": 99, "gen_ai.usage.cache_read.input_tokens": -1,
             "gen_ai.usage.reasoning.output_tokens": True, "user.id": "", "enduser.id": "bob", "session.id": 5,
             "gen_ai.agent.name": ["x"], "spanmeter.streaming": "TRUE"}
    span = Span(b"t" * 16, b"s" * 8, b"", "chat", 0, 0, attrs, {}, "", 3, 0)
    compiled = semconv.extract(span)
    monkeypatch.setattr(base, "_native", None)
    assert semconv.extract(span) == compiled
    assert (compiled.provider, compiled.input, compiled.output, compiled.cache_read, compiled.reasoning,
            compiled.user_id, compiled.session_id, compiled.agent, compiled.streaming) == (
        "openai", 12, 7, None, None, None, "5", None, True)  # an empty user.id ends the search
