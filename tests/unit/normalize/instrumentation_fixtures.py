"""Load a recorded instrumentation fixture (tests/fixtures/instrumentations/<library>/<scenario>.json)
and run it through decode -> normalize -> price, as the ingest does.

Expected dollars in the tests are worked out by hand from the providers' list prices (USD per
million tokens), not read back from the price book:
    gpt-4o-mini            input 0.15, cached input 0.075, output 0.60
    claude-sonnet-4-5      input 3.00, cache read 0.30, cache write (5 min) 3.75, output 15.00
    text-embedding-3-small input 0.02
and the fake provider's fixed usage (fake_provider.USAGE):
    chat            1200 in (1024 cached), 300 out       -> $0.0002832
    chat_stream     1100 in (512 cached), 210 out        -> $0.0002526
    embeddings      42 in                                -> $0.00000084
    messages        100 + 2000 read + 500 write, 250 out -> $0.006525
    messages_stream 80 + 1500 read, 190 out              -> $0.00354
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from spanmeter.ingest.decode import JSON, decode
from spanmeter.ingest.normalize import Normalized, normalize
from spanmeter.ingest.price import PriceBook

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "instrumentations"

GPT = ("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18")
EMBED = ("openai", "text-embedding-3-small", "text-embedding-3-small")
CLAUDE = ("anthropic", "claude-sonnet-4-5", "claude-sonnet-4-5-20250929")


@dataclass(frozen=True)
class Expect:
    """One provider call's row: (provider, request model, response model), token counts in the
    inclusive meaning (input, cache_read, cache_write, output, reasoning), user, dollars."""

    model: tuple[str, str, str]
    tokens: tuple[int, int, int, int, int]
    user: str
    dollars: str


CHAT = Expect(GPT, (1200, 1024, 0, 300, 0), "", "0.0002832")
CHAT_STREAM = Expect(GPT, (1100, 512, 0, 210, 0), "", "0.0002526")
EMBEDDINGS = Expect(EMBED, (42, 0, 0, 0, 0), "", "0.00000084")
MESSAGES = Expect(CLAUDE, (2600, 2000, 500, 250, 0), "", "0.006525")
MESSAGES_STREAM = Expect(CLAUDE, (1580, 1500, 0, 190, 0), "", "0.00354")


def load(library: str, scenario: str) -> bytes:
    return (FIXTURES / library / f"{scenario}.json").read_bytes()


def metadata(library: str, scenario: str) -> dict:
    return json.loads(load(library, scenario))["_fixture"]


@lru_cache(maxsize=1)
def book() -> PriceBook:
    return PriceBook.from_files()


def run(library: str, scenario: str) -> Normalized:
    result = normalize(decode(load(library, scenario), JSON))
    for record in result.records:
        book().price(record)
    return result


def check(library: str, scenario: str, expect: Expect, *, source: str, session: str = "") -> None:
    """Exactly one usage row, with these tokens, model, user and dollars."""
    result = run(library, scenario)
    assert result.rejected == 0, result.messages
    assert len(result.records) == 1, [(r.source, r.span_id.hex()) for r in result.records]
    (r,) = result.records
    u = r.usage
    assert (r.provider, r.request_model, r.response_model) == expect.model
    assert (u.input, u.cache_read, u.cache_write, u.output, u.reasoning) == expect.tokens
    assert r.attribution.user_id == expect.user
    assert r.source == source
    if session:
        assert r.attribution.session_id == session
    assert r.pricing_status == "priced"
    assert r.cost_usd == Decimal(expect.dollars)
