"""The price stage: exact dollars from published prices, rate resolution, overrides, LiteLLM import.

Expected costs are worked by hand from the providers' published prices (USD per million tokens)
and compared as Decimals, so a difference of one pico-dollar fails.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from dataclasses import fields
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path

import pytest
from genai_prices import Usage, calc_price
from genai_prices.data import providers as genai_providers
from genai_prices.types import StartDateConstraint, TimeOfDateConstraint

from spanmeter.ingest.price import (
    ALWAYS,
    NO_MODEL,
    PRICED,
    UNKNOWN_MODEL,
    USAGE_MISSING,
    PriceBook,
    Prices,
    PricesFileError,
    Rate,
    canonical_provider,
    format_rates,
    load_litellm,
    load_overrides,
)
from spanmeter.ingest.records import TokenUsage, UsageRecord

FIXTURES = Path(__file__).parents[1] / "fixtures" / "prices"
EXAMPLE = Path(__file__).parents[2] / "ingest" / "prices.example.yaml"
OCT_2025 = datetime(2025, 10, 15, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return PriceBook()


def record(
    provider: str, model: str, at: datetime = OCT_2025, status: str = "reported", **tokens: int
) -> UsageRecord:
    return UsageRecord(
        trace_id=bytes(16),
        span_id=bytes(8),
        event_time_ns=int(at.timestamp()) * 10**9,
        service_name="checkout",
        provider=provider,
        operation="chat",
        request_model=model,
        response_model="",
        usage=TokenUsage(**tokens),
        usage_status=status,
    )


def priced(book: PriceBook, provider: str, model: str, at: datetime = OCT_2025, **tokens: int) -> UsageRecord:
    rec = record(provider, model, at, **tokens)
    book.price(rec)
    return rec


# --- exact dollars from published prices ------------------------------------------------------


def test_gpt_4o_mini_cached_input(book: PriceBook) -> None:
    # $0.15 input, $0.075 cached input, $0.60 output per 1M.
    rec = priced(book, "openai", "gpt-4o-mini", input=10_000, cache_read=6_000, output=500)
    # 4,000 uncached * 0.15 + 6,000 cached * 0.075 + 500 * 0.60 = 600 + 450 + 300 micro-dollars
    assert rec.cost_usd == Decimal("0.001350")
    assert rec.pricing_status == PRICED
    assert rec.price_version == "genai-prices-0.2.3:openai/gpt-4o-mini"


def test_o4_mini_reasoning_billed_as_output(book: PriceBook) -> None:
    # o4-mini: $1.10 input, $4.40 output; reasoning tokens are output tokens, billed once.
    rec = priced(book, "openai", "o4-mini-2025-04-16", input=2_000, output=3_000, reasoning=2_500)
    assert rec.cost_usd == Decimal("0.015400")  # 2,000 * 1.10 + 3,000 * 4.40 = 2,200 + 13,200


def test_gpt_5_reasoning_and_cache(book: PriceBook) -> None:
    # gpt-5: $1.25 input, $0.125 cached, $10 output.
    rec = priced(
        book, "openai", "gpt-5-2025-08-07", input=50_000, cache_read=40_000, output=8_000, reasoning=6_000
    )
    # 10,000 * 1.25 + 40,000 * 0.125 + 8,000 * 10 = 12,500 + 5,000 + 80,000 micro-dollars
    assert rec.cost_usd == Decimal("0.097500")


def test_separate_reasoning_price(book: PriceBook) -> None:
    # Perplexity sonar-deep-research: $2 input, $8 output, $3 reasoning.
    rec = priced(book, "perplexity", "sonar-deep-research", input=1_000, output=10_000, reasoning=6_000)
    # 1,000 * 2 + 4,000 * 8 + 6,000 * 3 = 2,000 + 32,000 + 18,000
    assert rec.cost_usd == Decimal("0.052000")


def test_claude_sonnet_cache_reads_and_writes(book: PriceBook) -> None:
    # Claude Sonnet 4.5: $3 input, $0.30 cache read, $3.75 cache write (5 min, 1.25x input), $15 output.
    rate = book.lookup("anthropic", "claude-sonnet-4-5-20250929", OCT_2025)
    assert rate is not None and rate.cache_write == rate.input * Decimal("1.25")
    tokens = {"input": 30_000, "cache_read": 20_000, "cache_write": 8_000, "output": 1_000}
    rec = priced(book, "anthropic", "claude-sonnet-4-5-20250929", **tokens)
    # 2,000 * 3 + 20,000 * 0.30 + 8,000 * 3.75 + 1,000 * 15 = 6,000 + 6,000 + 30,000 + 15,000
    assert rec.cost_usd == Decimal("0.057000")


def test_gemini_long_context_tier(book: PriceBook) -> None:
    # Gemini 2.5 Pro: $1.25 / $0.125 cached / $10 output up to 200k input; above, the whole request
    # is billed at $2.50 / $0.25 / $15.
    tokens = {"input": 250_000, "cache_read": 50_000, "output": 4_000, "reasoning": 1_000}
    above = priced(book, "gcp.gemini", "gemini-2.5-pro", **tokens)
    # 200,000 * 2.50 + 50,000 * 0.25 + 4,000 * 15 = 500,000 + 12,500 + 60,000
    assert above.cost_usd == Decimal("0.572500")
    at_threshold = priced(book, "gcp.gemini", "gemini-2.5-pro", input=200_000, output=1_000)
    assert at_threshold.cost_usd == Decimal("0.260000")  # 200,000 * 1.25 + 1,000 * 10: not above 200k


def test_gpt_5_4_tier_at_272k(book: PriceBook) -> None:
    # gpt-5.4: $2.50 / $0.25 cached / $15; above 272k input tokens $5 / $0.50 / $22.50.
    rec = priced(book, "openai", "gpt-5.4", input=300_000, cache_read=100_000, output=2_000)
    assert rec.cost_usd == Decimal("1.095000")  # 200,000 * 5 + 100,000 * 0.5 + 2,000 * 22.5


def test_dated_dataset_price_change(book: PriceBook) -> None:
    # o3 went from $10/$40 to $2/$8 on 2025-06-10.
    before = priced(book, "openai", "o3", datetime(2025, 6, 9, 23, 59, tzinfo=UTC), input=1_000, output=1_000)
    after = priced(book, "openai", "o3", datetime(2025, 6, 10, 0, 0, tzinfo=UTC), input=1_000, output=1_000)
    assert before.cost_usd == Decimal("0.050000")
    assert after.cost_usd == Decimal("0.010000")
    assert after.price_version == "genai-prices-0.2.3:openai/o3@2025-06-10"


def test_off_peak_window(book: PriceBook) -> None:
    # deepseek-chat in genai-prices: $0.27 / $1.10 from 00:30 to 16:30 UTC, $0.135 / $0.55 otherwise.
    nine, five_pm = datetime(2025, 10, 15, 9, tzinfo=UTC), datetime(2025, 10, 15, 17, tzinfo=UTC)
    peak = priced(book, "deepseek", "deepseek-chat", nine, input=1_000_000)
    off = priced(book, "deepseek", "deepseek-chat", five_pm, input=1_000_000)
    assert (peak.cost_usd, off.cost_usd) == (Decimal("0.27"), Decimal("0.135"))


# --- model and provider names -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "model", "version"),
    [
        ("openai", "gpt-4o-mini", "genai-prices-0.2.3:openai/gpt-4o-mini"),
        ("openai", "gpt-4o-mini-2024-07-18", "genai-prices-0.2.3:openai/gpt-4o-mini"),
        ("openai", "openai/gpt-4o-mini", "genai-prices-0.2.3:openai/gpt-4o-mini"),
        ("", "gpt-4o-mini-2024-07-18", "genai-prices-0.2.3:openai/gpt-4o-mini"),
        ("", "openai/gpt-4o-mini", "genai-prices-0.2.3:openai/gpt-4o-mini"),
        ("litellm", "openai/gpt-4o-mini", "genai-prices-0.2.3:openai/gpt-4o-mini"),
        ("anthropic", "claude-sonnet-4-5-20250929", "genai-prices-0.2.3:anthropic/claude-sonnet-4-5"),
        ("", "anthropic/claude-sonnet-4-5", "genai-prices-0.2.3:anthropic/claude-sonnet-4-5"),
        ("", "claude-sonnet-4-5", "genai-prices-0.2.3:anthropic/claude-sonnet-4-5"),
        ("gcp.gemini", "models/gemini-2.5-flash", "genai-prices-0.2.3:gcp.gemini/gemini-2.5-flash"),
        ("gemini", "gemini-2.5-flash", "genai-prices-0.2.3:gcp.gemini/gemini-2.5-flash"),
        ("vertex_ai", "gemini-2.5-flash", "genai-prices-0.2.3:gcp.gemini/gemini-2.5-flash"),
        (
            "gcp.vertex_ai",
            "projects/p/locations/us-east5/publishers/google/models/gemini-2.5-flash",
            "genai-prices-0.2.3:gcp.gemini/gemini-2.5-flash",
        ),
        ("gcp.vertex_ai", "claude-sonnet-4-5@20250929", "genai-prices-0.2.3:gcp.gemini/claude-sonnet-4-5"),
        # Azure's list falls back to OpenAI's prices for OpenAI models.
        ("az.ai.openai", "gpt-4o-mini", "genai-prices-0.2.3:openai/gpt-4o-mini"),
        (
            "aws.bedrock",
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "genai-prices-0.2.3:aws.bedrock/regional.anthropic.claude-sonnet-4-5-20250929-v1:0",
        ),
        ("xai", "grok-4-0709", "genai-prices-0.2.3:x_ai/grok-4-0709"),
    ],
)
def test_names_resolve(book: PriceBook, provider: str, model: str, version: str) -> None:
    rate = book.lookup(provider, model, OCT_2025)
    assert rate is not None and rate.version == version


def test_snapshot_and_prefix_price_the_same(book: PriceBook) -> None:
    tokens = {"input": 123_456, "cache_read": 100_000, "output": 789}
    names = [("openai", "gpt-4o-mini"), ("openai", "gpt-4o-mini-2024-07-18"), ("", "openai/gpt-4o-mini")]
    costs = {priced(book, p, m, **tokens).cost_usd for p, m in names}
    assert costs == {Decimal("0.0114918")}  # 23,456 * 0.15 + 100,000 * 0.075 + 789 * 0.60


def test_legacy_provider_names() -> None:
    assert canonical_provider("vertex_ai") == "gcp.vertex_ai"
    assert canonical_provider("gemini") == "gcp.gemini"
    assert canonical_provider("az.ai.openai") == "azure.ai.openai"
    assert canonical_provider("az.ai.inference") == "azure.ai.inference"
    assert canonical_provider("xai") == "x_ai"
    assert canonical_provider("OpenAI") == "openai"


def test_ambiguous_model_without_provider_is_unknown(book: PriceBook) -> None:
    # Eleven providers list this id at different prices: guessing one would be a made-up cost.
    assert len({r.provider for r in book.describe("meta-llama/llama-3.3-70b-instruct")}) > 1
    assert book.lookup("", "meta-llama/llama-3.3-70b-instruct", OCT_2025) is None
    # One listing only: unambiguous.
    assert book.lookup("", "llama-3.3-70b-versatile", OCT_2025).provider == "groq"  # type: ignore[union-attr]


# --- statuses -----------------------------------------------------------------------------------


def test_unknown_model(book: PriceBook) -> None:
    rec = priced(book, "openai", "gpt-4o-mini-but-not-really", input=100, output=100)
    assert (rec.cost_usd, rec.pricing_status, rec.price_version) == (None, UNKNOWN_MODEL, "")


def test_model_priced_by_the_hour_is_unknown_not_free(book: PriceBook) -> None:
    rec = priced(book, "openai", "whisper-1", input=100, output=100)
    assert (rec.cost_usd, rec.pricing_status) == (None, UNKNOWN_MODEL)


def test_no_model(book: PriceBook) -> None:
    rec = priced(book, "openai", "", input=100, output=100)
    assert (rec.cost_usd, rec.pricing_status, rec.price_version) == (None, NO_MODEL, "")


def test_missing_usage_is_never_zero(book: PriceBook) -> None:
    rec = record("openai", "gpt-4o-mini", status="missing")
    rec.cost_usd, rec.pricing_status = Decimal("1"), PRICED  # a stale price from an earlier pass
    book.price(rec)
    assert (rec.cost_usd, rec.pricing_status, rec.price_version) == (None, USAGE_MISSING, "")


def test_response_model_wins(book: PriceBook) -> None:
    rec = record("openai", "gpt-4o", input=1_000_000)
    rec.response_model = "gpt-4o-mini-2024-07-18"
    book.price(rec)
    assert rec.cost_usd == Decimal("0.15")


# --- overrides -----------------------------------------------------------------------------------


def test_override_beats_dataset() -> None:
    book = PriceBook.from_files(FIXTURES / "overrides.yaml")
    rec = priced(book, "openai", "gpt-4o-mini-2024-07-18", datetime(2026, 1, 20, tzinfo=UTC), input=1_000_000)
    assert rec.cost_usd == Decimal("0.12")
    assert rec.price_version.startswith("override:overrides.yaml:openai/gpt-4o-mini@2026-01-01#")
    # Before the first override date the dataset's list price still applies.
    new_years_eve = datetime(2025, 12, 31, 23, 0, tzinfo=UTC)
    december = priced(book, "openai", "gpt-4o-mini", new_years_eve, input=1_000_000)
    assert december.cost_usd == Decimal("0.15")
    assert december.price_version == "genai-prices-0.2.3:openai/gpt-4o-mini"


def test_override_history_january_vs_march() -> None:
    book = PriceBook.from_files(FIXTURES / "overrides.yaml")
    tokens = {"input": 40_000, "cache_read": 30_000, "output": 2_000}
    january = priced(book, "openai", "gpt-4o-mini", datetime(2026, 1, 15, 9, tzinfo=UTC), **tokens)
    march = priced(book, "openai", "gpt-4o-mini", datetime(2026, 3, 15, 9, tzinfo=UTC), **tokens)
    assert january.cost_usd == Decimal("0.003960")  # 10,000 * 0.12 + 30,000 * 0.06 + 2,000 * 0.48
    assert march.cost_usd == Decimal("0.003465")  # 10,000 * 0.105 + 30,000 * 0.0525 + 2,000 * 0.42
    assert january.price_version != march.price_version


def test_override_for_any_provider_and_alias() -> None:
    book = PriceBook.from_files(FIXTURES / "overrides.yaml")
    for provider, model in [("openai", "Qwen/Qwen2.5-Coder-32B-Instruct"), ("", "qwen2.5-coder-32B-instruct")]:
        rec = priced(book, provider, model, input=10_000, output=5_000, reasoning=1_000)
        assert rec.cost_usd == Decimal("0.002500")  # 10,000 * 0.1 + 4,000 * 0.3 + 1,000 * 0.3
        assert rec.price_version.startswith("override:overrides.yaml:*/qwen2.5-coder-32b-instruct#")


def test_override_does_not_leak_to_other_hosts() -> None:
    # An Anthropic override is not Bedrock's price: Bedrock keeps its own (regional) list price.
    book = PriceBook.from_files(EXAMPLE)
    rate = book.lookup("aws.bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0", OCT_2025)
    assert rate is not None and rate.source == "genai-prices 0.2.3" and rate.input == Decimal("3.3")


def test_example_file(tmp_path: Path) -> None:
    rates = load_overrides(EXAMPLE)
    assert {(r.provider, r.model) for r in rates} == {
        ("*", "llama-3.3-70b-instruct"),
        ("openai", "o3"),
        ("anthropic", "claude-sonnet-4-5"),
    }
    book = PriceBook(rates)
    tokens = {"input": 1_000, "cache_read": 500, "output": 100}
    may = priced(book, "openai", "o3-2025-04-16", datetime(2025, 5, 1, tzinfo=UTC), **tokens)
    june = priced(book, "openai", "o3-2025-04-16", datetime(2025, 6, 10, tzinfo=UTC), **tokens)
    assert may.cost_usd == Decimal("0.010250")  # 500 * 10 + 500 * 2.50 + 100 * 40
    assert june.cost_usd == Decimal("0.002050")  # 500 * 2 + 500 * 0.50 + 100 * 8
    # The tier from the YAML: above 200k everything at the long-context prices.
    tokens = {"input": 210_000, "cache_read": 100_000, "cache_write": 10_000, "output": 1_000}
    long = priced(book, "anthropic", "claude-sonnet-4-5", **tokens)
    assert long.cost_usd == Decimal("0.757500")  # 100k * 6 + 100k * 0.60 + 10k * 7.50 + 1k * 22.50


def test_later_file_wins_on_the_same_date(tmp_path: Path) -> None:
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("rates:\n  - {provider: openai, model: gpt-4o-mini, input: 1, output: 1}\n")
    second.write_text("rates:\n  - {provider: openai, model: gpt-4o-mini, input: 2, output: 2}\n")
    book = PriceBook.from_files(first, None, second)
    assert book.lookup("openai", "gpt-4o-mini", OCT_2025).input == Decimal(2)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rates:\n  - {provider: openai, model: m, input: 1, ouput: 2}\n", "unknown field"),
        ("rates:\n  - {provider: openai, model: m, input: -1, output: 2}\n", "non-negative"),
        ("rates:\n  - {provider: openai, model: m, input: 1}\n", "'output' is required"),
        ("rates:\n  - {provider: openai, model: m, input: .inf, output: 1}\n", "not a price"),
        ("rates:\n  - {provider: openai, model: m, input: 1, output: 1, effective_from: May}\n", "YYYY-MM-DD"),
        ("rates:\n  - {provider: openai, model: m, input: 1, output: 1, tiers: [{input: 2}]}\n", "above"),
        ("rates: [\n", "cannot read"),
    ],
)
def test_bad_prices_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(text)
    with pytest.raises(PricesFileError, match=message):
        load_overrides(path)


# --- LiteLLM's price file -----------------------------------------------------------------------


def test_litellm_import() -> None:
    rates = {(r.provider, r.model): r for r in load_litellm(FIXTURES / "litellm_model_prices_excerpt.json")}
    # sample_spec and the image model (output priced per image token) are not token rates.
    assert set(rates) == {
        ("openai", "gpt-4o-mini"),
        ("openai", "o4-mini"),
        ("anthropic", "claude-sonnet-4-5"),
        ("gcp.gemini", "gemini-2.5-pro"),
        ("aws.bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
        ("openai", "gpt-5.4"),
        ("openai", "text-embedding-3-small"),
    }
    mini = rates[("openai", "gpt-4o-mini")]
    assert (mini.input, mini.cache_read, mini.output) == (Decimal("0.15"), Decimal("0.075"), Decimal("0.6"))
    assert rates[("openai", "text-embedding-3-small")].output == 0


def test_litellm_prices_records() -> None:
    book = PriceBook.from_files(FIXTURES / "litellm_model_prices_excerpt.json", dataset=False)
    mini = priced(book, "openai", "gpt-4o-mini", input=10_000, cache_read=6_000, output=500)
    assert mini.cost_usd == Decimal("0.001350")  # same published prices as the dataset test
    assert mini.price_version.startswith("litellm:litellm_model_prices_excerpt.json:openai/gpt-4o-mini#")
    # Gemini API through LiteLLM's "gemini/" key, above its 200k tier.
    gemini = priced(book, "gcp.gemini", "gemini-2.5-pro", input=250_000, cache_read=50_000, output=4_000)
    assert gemini.cost_usd == Decimal("0.572500")
    # Bedrock's regional Claude price: $3.30 / $0.33 read / $4.125 write / $16.50 (10% over Anthropic).
    bedrock = priced(
        book, "aws.bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        input=30_000, cache_read=20_000, cache_write=8_000, output=1_000,
    )  # fmt: skip
    assert bedrock.cost_usd == Decimal("0.062700")  # 2k * 3.3 + 20k * 0.33 + 8k * 4.125 + 1k * 16.5
    assert priced(book, "openai", "gpt-image-2", input=10, output=10).pricing_status == UNKNOWN_MODEL


# --- agreement with genai-prices ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "model", "genai_provider", "tokens"),
    [
        ("openai", "gpt-4o-mini-2024-07-18", "openai", (10_000, 6_000, 0, 500, 0)),
        ("openai", "o3", "openai", (5_000, 1_000, 0, 9_000, 7_000)),
        ("openai", "gpt-5.4", "openai", (300_000, 100_000, 0, 2_000, 1_000)),
        ("anthropic", "claude-sonnet-4-5-20250929", "anthropic", (30_000, 20_000, 8_000, 1_000, 0)),
        ("anthropic", "claude-sonnet-4-5-20250929", "anthropic", (230_000, 20_000, 8_000, 1_000, 0)),
        ("anthropic", "claude-3-5-haiku-20241022", "anthropic", (7_777, 1_234, 2_345, 321, 0)),
        ("gcp.gemini", "gemini-2.5-pro", "google", (250_000, 50_000, 0, 4_000, 1_000)),
        ("gcp.gemini", "gemini-2.5-flash", "google", (12_345, 2_000, 0, 6_789, 3_000)),
        ("aws.bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0", "aws", (30_000, 20_000, 8_000, 999, 0)),
        ("deepseek", "deepseek-chat", "deepseek", (1_000_003, 7, 0, 11, 0)),
        ("perplexity", "sonar-deep-research", "perplexity", (1_000, 0, 0, 10_000, 6_000)),
        ("mistral_ai", "mistral-large-latest", "mistral", (4_321, 0, 0, 1_234, 0)),
    ],
)
@pytest.mark.parametrize("at", [datetime(2025, 3, 1, 3, tzinfo=UTC), datetime(2025, 10, 15, 20, tzinfo=UTC)])
def test_agrees_with_genai_prices(
    book: PriceBook, provider: str, model: str, genai_provider: str, tokens: tuple[int, ...], at: datetime
) -> None:
    inp, cache_read, cache_write, out, reasoning = tokens
    usage = {"cache_read": cache_read, "cache_write": cache_write, "output": out, "reasoning": reasoning}
    rec = priced(book, provider, model, at, input=inp, **usage)
    theirs = calc_price(
        Usage(
            input_tokens=inp,
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
            output_tokens=out,
            output_reasoning_tokens=reasoning,
        ),
        model,
        provider_id=genai_provider,
        genai_request_timestamp=at,
    )
    assert rec.cost_usd == theirs.total_price.quantize(Decimal("1E-12"))


def _genai_times(model: object) -> list[datetime]:
    """Days around every dated price change, and times around every off-peak window."""
    prices = model.prices if isinstance(model.prices, list) else []  # type: ignore[attr-defined]
    days = {date(2024, 3, 1)}
    hours = [time(12, 0)]
    for entry in prices:
        if isinstance(entry.constraint, StartDateConstraint):
            day = entry.constraint.start_date
            days |= {day, date.fromordinal(day.toordinal() - 1)}
        if isinstance(entry.constraint, TimeOfDateConstraint):
            clock = [(0, 10), (0, 45), (2, 0), (5, 0), (8, 0), (12, 0), (17, 0), (23, 59)]
            hours = [time(h, m) for h, m in clock]
    return [datetime.combine(d, h, tzinfo=UTC) for d in sorted(days) for h in hours]


def test_every_dataset_model_agrees_with_genai_prices(book: PriceBook) -> None:
    """Each genai-prices model, found by its own id, costs what genai-prices computes, to the
    pico-dollar, below and above every tier and on both sides of every dated change."""
    usages = [
        (12_345, 4_000, 1_111, 2_222, 1_000),
        (345_678, 100_000, 20_000, 5_000, 2_000),
        (200_000, 0, 0, 10, 0),
        (272_001, 1, 0, 10, 0),
    ]
    compared = 0
    for genai_provider in genai_providers:
        for model in genai_provider.models:
            raw = [c.prices for c in model.prices] if isinstance(model.prices, list) else [model.prices]
            if any(getattr(p, "requests_kcount", None) is not None for p in raw):
                continue  # a per-request fee: not metered by spanmeter
            if any(getattr(p, "input_mtok", None) is None and p.__dict__ for p in raw):
                assert book.lookup(genai_provider.id, model.id, OCT_2025) is None
                continue  # priced per hour/page/character: unknown to spanmeter, never $0
            for at in _genai_times(model):
                rate = book.lookup(genai_provider.id, model.id, at)
                assert rate is not None and rate.model == model.id, (genai_provider.id, model.id)
                for inp, cr, cw, out, rs in usages:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        theirs = model.calc_price(
                            Usage(
                                input_tokens=inp,
                                cache_read_tokens=cr,
                                cache_write_tokens=cw,
                                output_tokens=out,
                                output_reasoning_tokens=rs,
                            ),
                            genai_provider,
                            genai_request_timestamp=at,
                        ).total_price
                    tokens = TokenUsage(input=inp, cache_read=cr, cache_write=cw, output=out, reasoning=rs)
                    ours = rate.cost(tokens)
                    assert ours == theirs.quantize(Decimal("1E-12")), (genai_provider.id, model.id, at, inp)
                    compared += 1
    assert compared > 9_000


# --- exactness ----------------------------------------------------------------------------------


def test_money_is_decimal_never_float(book: PriceBook) -> None:
    rec = priced(book, "anthropic", "claude-sonnet-4-5", input=3, cache_read=1, cache_write=1, output=1)
    assert type(rec.cost_usd) is Decimal
    assert rec.cost_usd.as_tuple().exponent == -12  # quantized to 12 places
    assert rec.cost_usd == Decimal("0.00002205")  # 1 * 3 + 1 * 0.30 + 1 * 3.75 + 1 * 15 micro-dollars
    every = [*book.rates(), *load_overrides(FIXTURES / "overrides.yaml")]
    every += load_litellm(FIXTURES / "litellm_model_prices_excerpt.json")
    for rate in every:
        for prices in [rate.base, *(p for _, p in rate.tiers)]:
            for f in fields(Prices):
                value = getattr(prices, f.name)
                assert value is None or type(value) is Decimal, (rate.version, f.name)


def test_yaml_numbers_are_read_as_text(tmp_path: Path) -> None:
    # 0.1 has no exact float: a float anywhere on the way would not give Decimal("0.1") back.
    path = tmp_path / "p.yaml"
    path.write_text("rates:\n  - {provider: openai, model: m, input: 0.1, output: 0.3, cache_read: 1.0e-2}\n")
    (rate,) = load_overrides(path)
    assert (rate.input, rate.output, rate.cache_read) == (Decimal("0.1"), Decimal("0.3"), Decimal("0.01"))
    rec = priced(PriceBook([rate], dataset=False), "openai", "m", input=3, output=3)
    assert rec.cost_usd == Decimal("0.0000012")


def test_rate_refuses_floats() -> None:
    with pytest.raises(TypeError, match="Decimal"):
        Rate(provider="openai", model="m", effective_from=ALWAYS, input=0.15, output=Decimal(1))  # type: ignore


def test_sub_pico_prices_are_rounded_to_12_places() -> None:
    # $0.041666666666666664 per 1M (a 1/24 price in the dataset): 3 tokens cost 1.25e-7 minus a hair.
    one_24th = Decimal("0.041666666666666664")
    rate = Rate(provider="x", model="m", effective_from=ALWAYS, input=one_24th, output=Decimal(0))
    assert rate.cost(TokenUsage(input=3)) == Decimal("0.000000125000")


# --- versions and listing -----------------------------------------------------------------------


def test_versions_are_unique_and_stable_across_processes(book: PriceBook) -> None:
    versions = [r.version for r in book.rates()]
    assert len(versions) == len(set(versions))
    script = (
        "from spanmeter.ingest.price import load_overrides;"
        f"print(','.join(r.version for r in load_overrides({str(FIXTURES / 'overrides.yaml')!r})))"
    )
    runs = {
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    }
    assert runs == {",".join(r.version for r in load_overrides(FIXTURES / "overrides.yaml")) + "\n"}


def test_describe_and_table(book: PriceBook) -> None:
    rates = book.describe("o3")
    assert [r.effective_from for r in rates] == [ALWAYS, date(2025, 6, 10)]
    table = format_rates(book.describe("claude-sonnet-4-5", provider="anthropic"))
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["provider", "model", "from", "input"]
    assert lines[1].split()[:5] == ["anthropic", "claude-sonnet-4-5", "always", "3", "0.3"]
    assert lines[2].split()[:6] == ["input", ">", "200,000", "6", "0.6", "7.5"]
