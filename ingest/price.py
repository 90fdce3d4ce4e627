"""The price stage: usage record -> exact cost in USD, with the rate row that produced it.

    book = PriceBook.from_files(os.environ.get("SPANMETER_PRICES_FILE"))
    book.price(record)   # sets record.cost_usd, record.pricing_status, record.price_version

Where rates come from, highest precedence first:
1. override files, later files first: our YAML (`prices.example.yaml` documents it) or LiteLLM's
   `model_prices_and_context_window.json`;
2. the dataset shipped inside the `genai-prices` package (`genai_prices.data`). Only the bundled
   snapshot is read: its run-time price updates from the internet are never started here.

Every source becomes `Rate` rows (USD per million tokens, `Decimal`) and every cost is computed by
the same integer arithmetic below, so a dataset rate and an override are priced the same way. Money
is never a float: prices are parsed from text into `Decimal`, costs are integer pico-dollars turned
into a `Decimal` with 12 decimal places.

Cost, token counts in the semantic conventions' inclusive meaning (see `records.TokenUsage`)::

    (input - cache_read - cache_write) * input + cache_read * cache_read + cache_write * cache_write
      + (output - reasoning) * output + reasoning * (reasoning or output)      all / 1e6

A request whose input (cache included) exceeds a tier's threshold is billed entirely at that tier's
prices: genai-prices' `TieredPrices` "cliff" semantics (`total_input_tokens > tier.start`).

Which rate: an override beats the dataset for the same (provider, model) whenever one is in effect
at the call's time; within one source the latest `effective_from` on or before the call's UTC date
wins. Resolution of names (dated snapshots, provider prefixes, Bedrock ids, legacy provider names)
is cached per (provider, model), the chosen rate per (provider, model, day).

Speed (2-core dev box): a warm `price` is 1.0-1.3 µs for one model and about 2 µs per record
over a mixed batch (8 models, 3 days, one off-peak model): ~500k records/s per core. The first
call for a (provider, model) resolves its name once: 0.3-1 ms, up to ~10 ms for a name with no
or an unknown provider (every provider's list is searched). A sanity loop:

    >>> import timeit
    >>> book.price(record)  # warm the caches
    >>> timeit.timeit(lambda: book.price(record), number=200_000) / 200_000 * 1e6  # doctest: +SKIP
    1.1

Not metered: per-request and per-search fees, audio/image/video token prices, batch/flex/priority
service tiers (the record carries none of these), and 1-hour cache writes (no count for them in
the record: every cache write is billed at the 5-minute price).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from importlib.metadata import version as _dist_version
from pathlib import Path
from typing import Any

from spanmeter.ingest.errors import ConfigError
from spanmeter.ingest.records import TokenUsage, UsageRecord
from spanmeter.semconv import USAGE_MISSING as _USAGE_STATUS_MISSING

__all__ = [
    "ALWAYS",
    "DATASET_SOURCE",
    "NO_MODEL",
    "PRICED",
    "UNKNOWN_MODEL",
    "USAGE_MISSING",
    "PriceBook",
    "Prices",
    "PricesFileError",
    "Rate",
    "canonical_provider",
    "format_rates",
    "load_litellm",
    "load_overrides",
    "load_rates_file",
]

# pricing_status values, stored on every row.
PRICED = "priced"
UNKNOWN_MODEL = "unknown_model"  # no rate for this provider/model at this time: cost NULL
NO_MODEL = "no_model"  # the span named no model: cost NULL
USAGE_MISSING = "usage_missing"  # the provider's usage never reached the span: cost NULL, never $0

# effective_from of a rate that has always applied (a dataset price without a start date).
ALWAYS = date(1970, 1, 1)

_NS_PER_DAY = 86_400 * 10**9
_NS_PER_S = 10**9
_EPOCH_ORDINAL = ALWAYS.toordinal()
# Wide enough that no cost is ever rounded by precision; only quantize rounds, and only past 1e-12.
_CTX = Context(prec=60, rounding=ROUND_HALF_EVEN)
_PICO = Decimal("1E-12")
_MTOK = 6  # prices are per 10**6 tokens

_GENAI_VERSION = _dist_version("genai-prices")
DATASET_SOURCE = f"genai-prices {_GENAI_VERSION}"


class PricesFileError(ConfigError):
    """A prices file that cannot be read: bad YAML/JSON, an unknown field, a negative price."""


# --------------------------------------------------------------------------------------------
# Rates
# --------------------------------------------------------------------------------------------

_PRICE_FIELDS = ("input", "cache_read", "cache_write", "cache_write_1h", "output", "reasoning")


def _check_price(name: str, value: Any, *, optional: bool) -> Decimal | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        # A float has already lost the price it was written as; refuse it rather than guess.
        raise TypeError(f"price {name!r} must be a Decimal (or int), not {type(value).__name__}")
    value = Decimal(value)
    if not value.is_finite() or value < 0:
        raise ValueError(f"price {name!r} must be a finite non-negative number, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class Prices:
    """One level of a rate's prices, USD per million tokens.

    `cache_read` / `cache_write` None: those tokens are billed at `input` (the provider publishes no
    cache price, so cached tokens cost what uncached ones do). `reasoning` None: billed as `output`.
    """

    input: Decimal
    output: Decimal
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None
    cache_write_1h: Decimal | None = None
    reasoning: Decimal | None = None

    def __post_init__(self) -> None:
        for name in _PRICE_FIELDS:
            checked = _check_price(name, getattr(self, name), optional=name not in ("input", "output"))
            object.__setattr__(self, name, checked)


@dataclass(frozen=True, slots=True)
class Rate:
    """One row of the price book: a model's prices from a date on, USD per million tokens.

    `tiers`: ((threshold_input_tokens, Prices), ...) ascending. A request whose input tokens (cache
    included) exceed a threshold is billed entirely at the highest such tier's prices.
    `daily_window`: a UTC [start, end) time of day this rate is limited to (genai-prices' off-peak
    prices); None for all day. `version` identifies this exact row and is stored on every priced
    row as `price_version`; left empty it becomes `source:provider/model@date#<hash of the prices>`.
    `aliases`: further model names (lowercase) that resolve to this provider/model.
    """

    provider: str
    model: str
    effective_from: date
    input: Decimal
    output: Decimal
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None
    cache_write_1h: Decimal | None = None
    reasoning: Decimal | None = None
    tiers: tuple[tuple[int, Prices], ...] = ()
    source: str = ""
    version: str = ""
    daily_window: tuple[time, time] | None = None
    aliases: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        for name in _PRICE_FIELDS:
            checked = _check_price(name, getattr(self, name), optional=name not in ("input", "output"))
            object.__setattr__(self, name, checked)
        if type(self.effective_from) is not date:
            raise TypeError("effective_from must be a datetime.date (a UTC day)")
        tiers = tuple((int(threshold), prices) for threshold, prices in self.tiers)
        thresholds = [threshold for threshold, _ in tiers]
        if thresholds != sorted(set(thresholds)) or any(t < 0 for t in thresholds):
            raise ValueError("tier thresholds must be distinct, non-negative and ascending")
        if not all(isinstance(prices, Prices) for _, prices in tiers):
            raise TypeError("each tier is (threshold, Prices)")
        object.__setattr__(self, "tiers", tiers)
        object.__setattr__(self, "aliases", tuple(a.strip().lower() for a in self.aliases))
        if not self.version:
            object.__setattr__(self, "version", _content_version(self))

    @property
    def base(self) -> Prices:
        return Prices(
            input=self.input,
            output=self.output,
            cache_read=self.cache_read,
            cache_write=self.cache_write,
            cache_write_1h=self.cache_write_1h,
            reasoning=self.reasoning,
        )

    def prices_for(self, input_tokens: int) -> Prices:
        """The prices a request with this many input tokens (cache included) is billed at."""
        for threshold, prices in reversed(self.tiers):
            if input_tokens > threshold:
                return prices
        return self.base

    def cost(self, usage: TokenUsage) -> Decimal:
        """Exact cost of `usage` at this rate, quantized to 12 decimal places."""
        return _compile(self).cost(usage)


def _dec_text(value: Decimal | None) -> str:
    return "-" if value is None else format(value.normalize(_CTX), "f")


def _content_version(rate: Rate) -> str:
    """`source:provider/model@date#hash`: the hash covers every price, so editing one changes it."""
    parts = [rate.provider, rate.model, rate.effective_from.isoformat()]
    for threshold, prices in [(0, rate.base), *rate.tiers]:
        parts.append(str(threshold))
        parts.extend(_dec_text(getattr(prices, name)) for name in _PRICE_FIELDS)
    if rate.daily_window:
        parts.extend(t.isoformat() for t in rate.daily_window)
    digest = hashlib.sha256("|".join(parts).encode()).hexdigest()[:10]
    when = "" if rate.effective_from == ALWAYS else f"@{rate.effective_from.isoformat()}"
    return f"{rate.source or 'rate'}:{rate.provider}/{rate.model}{when}#{digest}"


# --------------------------------------------------------------------------------------------
# The hot path: a rate compiled to integer prices
# --------------------------------------------------------------------------------------------


class _Compiled:
    """A rate as integers: price per token in units of 10**-exp USD, so cost is int arithmetic.

    exp is 12 (pico-dollars) when every price has at most 6 decimals per million tokens, which is
    almost all of them; finer prices get a larger exp and are rounded half-even to 12 places.
    """

    __slots__ = ("base", "exp", "rate", "tiers", "version")

    def __init__(self, rate: Rate) -> None:
        levels = [rate.base, *(prices for _, prices in rate.tiers)]
        decimals = 0
        for prices in levels:
            for name in _PRICE_FIELDS:
                value = getattr(prices, name)
                if value is not None:
                    exponent = value.scaleb(_MTOK, _CTX).normalize(_CTX).as_tuple().exponent
                    decimals = max(decimals, -int(exponent))
        scale = _MTOK + decimals

        def vector(prices: Prices) -> tuple[int, int, int, int, int]:
            def units(value: Decimal) -> int:
                return int(value.scaleb(scale, _CTX))

            p_input = units(prices.input)
            p_output = units(prices.output)
            # No published cache price: cached tokens are billed at the input price.
            p_cache_read = p_input if prices.cache_read is None else units(prices.cache_read)
            p_cache_write = p_input if prices.cache_write is None else units(prices.cache_write)
            p_reasoning = p_output if prices.reasoning is None else units(prices.reasoning)
            return (p_input, p_cache_read, p_cache_write, p_output, p_reasoning)

        self.rate = rate
        self.version = rate.version
        self.exp = 12 + decimals
        self.base = vector(levels[0])
        # Highest threshold first: the first one exceeded is the tier in force.
        self.tiers = tuple((threshold, vector(prices)) for threshold, prices in reversed(rate.tiers))

    def cost(self, usage: TokenUsage) -> Decimal:
        return self.cost_of(usage.input, usage.cache_read, usage.cache_write, usage.output, usage.reasoning)

    def cost_of(self, inp: int, cache_read: int, cache_write: int, out: int, reasoning: int) -> Decimal:
        vector = self.base
        for threshold, tier in self.tiers:
            if inp > threshold:
                vector = tier
                break
        p_input, p_cache_read, p_cache_write, p_output, p_reasoning = vector
        uncached = inp - cache_read - cache_write
        if uncached < 0:
            uncached = 0
        visible = out - reasoning
        if visible < 0:
            visible = 0
        units = (
            uncached * p_input
            + cache_read * p_cache_read
            + cache_write * p_cache_write
            + visible * p_output
            + reasoning * p_reasoning
        )
        if self.exp == 12:
            return Decimal(units).scaleb(-12, _CTX)
        return Decimal(units).scaleb(-self.exp, _CTX).quantize(_PICO, context=_CTX)


_compiled_by_rate: dict[int, _Compiled] = {}


def _compile(rate: Rate) -> _Compiled:
    compiled = _compiled_by_rate.get(id(rate))
    if compiled is None or compiled.rate is not rate:
        compiled = _Compiled(rate)
        if len(_compiled_by_rate) > 50_000:
            _compiled_by_rate.clear()
        _compiled_by_rate[id(rate)] = compiled
    return compiled


def _in_window(window: tuple[int, int], second: int) -> bool:
    start, end = window
    if end < start:  # crosses midnight
        return second >= start or second < end
    return start <= second < end


def _seconds(t: time) -> int:
    if t.tzinfo is not None:
        t = datetime.combine(ALWAYS, t).astimezone(UTC).time()
    return t.hour * 3600 + t.minute * 60 + t.second


# --------------------------------------------------------------------------------------------
# Names: providers and model references
# --------------------------------------------------------------------------------------------

# Legacy gen_ai.system values, LiteLLM provider names and common spellings -> semconv names.
_PROVIDER_ALIASES = {
    "gemini": "gcp.gemini",
    "google": "gcp.gemini",
    "google_genai": "gcp.gemini",
    "google-genai": "gcp.gemini",
    "vertex_ai": "gcp.vertex_ai",
    "vertexai": "gcp.vertex_ai",
    "vertex": "gcp.vertex_ai",
    "az.ai.inference": "azure.ai.inference",
    "azure_ai": "azure.ai.inference",
    "az.ai.openai": "azure.ai.openai",
    "azure": "azure.ai.openai",
    "azure_openai": "azure.ai.openai",
    "xai": "x_ai",
    "x-ai": "x_ai",
    "mistral": "mistral_ai",
    "mistralai": "mistral_ai",
    "moonshot": "moonshot_ai",
    "moonshotai": "moonshot_ai",
    "bedrock": "aws.bedrock",
    "bedrock_converse": "aws.bedrock",
    "aws": "aws.bedrock",
    "amazon_bedrock": "aws.bedrock",
    "watsonx": "ibm.watsonx.ai",
    "cohere_chat": "cohere",
    "text-completion-openai": "openai",
    "together_ai": "together",
    "fireworks_ai": "fireworks",
}

# semconv provider -> genai-prices provider id. Gemini API and Vertex share Google's price list.
_GENAI_PROVIDER_IDS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "aws.bedrock": "aws",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "cohere": "cohere",
    "deepseek": "deepseek",
    "groq": "groq",
    "mistral_ai": "mistral",
    "moonshot_ai": "moonshotai",
    "perplexity": "perplexity",
    "x_ai": "x-ai",
}
# genai-prices provider id -> the semconv name its rates carry.
_SEMCONV_FOR_GENAI = {
    "openai": "openai",
    "anthropic": "anthropic",
    "google": "gcp.gemini",
    "aws": "aws.bedrock",
    "azure": "azure.ai.openai",
    "cohere": "cohere",
    "deepseek": "deepseek",
    "groq": "groq",
    "mistral": "mistral_ai",
    "moonshotai": "moonshot_ai",
    "perplexity": "perplexity",
    "x-ai": "x_ai",
}
# Vendor prefixes of Bedrock model ids ("us.anthropic.claude-...-v1:0") worth a second try at the
# vendor's own prices when Bedrock's list lacks the id.
_BEDROCK_VENDORS = {
    "anthropic": "anthropic",
    "openai": "openai",
    "deepseek": "deepseek",
    "mistral": "mistral_ai",
    "cohere": "cohere",
    "moonshotai": "moonshot_ai",
}
_BEDROCK_ID = re.compile(
    r"^(?:(?:us|eu|apac|ap|global|us-gov|jp|au|ca|de|in)\.)?"
    r"(anthropic|openai|deepseek|mistral|cohere|moonshotai)\.([a-z0-9].*?)(?:-v\d+(?::\d+)?|-\d+:\d+|:\d+)?$"
)
_DATE_SUFFIX = re.compile(r"[-@]20\d{2}-?[01]\d-?[0-3]\d$")
ANY_PROVIDER = "*"


def canonical_provider(name: str | None) -> str:
    """A provider name in its semantic-conventions spelling: `vertex_ai` -> `gcp.vertex_ai`."""
    name = (name or "").strip().lower()
    if name.startswith("vertex_ai"):  # LiteLLM: vertex_ai-language-models, vertex_ai-anthropic_models
        return "gcp.vertex_ai"
    return _PROVIDER_ALIASES.get(name, name)


def _prefix_provider(head: str) -> str | None:
    """The provider a `head/` model prefix names, or None when the head is not a provider."""
    canonical = canonical_provider(head)
    if canonical in _GENAI_PROVIDER_IDS or canonical != head or canonical in _KNOWN_PREFIXES:
        return canonical
    return None


_KNOWN_PREFIXES = frozenset({"openrouter", "together", "fireworks", "groq", "litellm_proxy"})


def _model_refs(model: str) -> list[tuple[str | None, str]]:
    """(provider hint, reference) pairs to try for a model name, most specific first."""
    ref = model.strip().lower()
    refs: list[tuple[str | None, str]] = [(None, ref)]
    hint: str | None = None
    while True:
        if "models/" in ref:  # "models/gemini-2.5-flash", ".../publishers/anthropic/models/claude-..."
            publisher = re.search(r"publishers/([^/]+)/models/", ref)
            if publisher:
                hint = _prefix_provider(publisher.group(1)) or hint
            ref = ref.rsplit("models/", 1)[1]
        elif ref.startswith("arn:aws:bedrock:") and "/" in ref:
            hint, ref = "aws.bedrock", ref.rsplit("/", 1)[1]
        elif "/" in ref and (prefix := _prefix_provider(ref.split("/", 1)[0])) is not None:
            hint, ref = prefix, ref.split("/", 1)[1]
        else:
            break
        if ref:
            refs.append((hint, ref))
    bedrock = _BEDROCK_ID.match(ref)
    if bedrock:
        refs.append((_BEDROCK_VENDORS[bedrock.group(1)], bedrock.group(2)))
    for ref_hint, candidate in list(refs):
        undated = _DATE_SUFFIX.sub("", candidate)
        if undated != candidate and undated:
            refs.append((ref_hint, undated))
    seen: set[tuple[str | None, str]] = set()
    return [r for r in refs if not (r in seen or seen.add(r))]


# --------------------------------------------------------------------------------------------
# The genai-prices dataset
# --------------------------------------------------------------------------------------------


class _Dataset:
    """genai-prices' bundled providers: its model matching, our `Rate`s."""

    def __init__(self) -> None:
        from genai_prices import data, data_snapshot

        self.providers = data.providers
        self.by_id = {p.id: p for p in self.providers}
        self.owner = {id(m): p for p in self.providers for m in p.models}
        self.by_model_id = {(p.id, m.id.lower()): m for p in self.providers for m in p.models}
        self._find_provider_by_id = data_snapshot.find_provider_by_id
        self._provider_cache: dict[str, Any] = {}
        self._rates: dict[int, tuple[Rate, ...]] = {}

    def provider(self, canonical: str) -> Any | None:
        """The genai-prices provider for a canonical provider name, if it knows one."""
        if canonical in self._provider_cache:
            return self._provider_cache[canonical]
        genai_id = _GENAI_PROVIDER_IDS.get(canonical)
        found = self.by_id.get(genai_id) if genai_id else None
        if found is None and canonical and canonical != ANY_PROVIDER:
            found = self._find_provider_by_id(self.providers, canonical)
        self._provider_cache[canonical] = found
        return found

    def find(self, provider: Any, ref: str) -> Any | None:
        # By its match rules (genai-prices' own), else by its id as `describe` and rows show it.
        found = provider.find_model(ref, all_providers=self.providers)
        return found or self.by_model_id.get((provider.id, ref))

    def infer(self, ref: str) -> Any | None:
        """A model named without a provider: its home provider's (genai-prices' model_match), else
        the only provider listing it. Ambiguous names resolve to nothing."""
        for provider in self.providers:
            if provider.model_match is not None and provider.model_match.is_match(ref):
                if model := self.find(provider, ref):
                    return model
        matches = {id(m): m for p in self.providers if (m := p.find_model(ref)) is not None}
        return next(iter(matches.values())) if len(matches) == 1 else None

    def rates(self, model: Any) -> tuple[Rate, ...]:
        rates = self._rates.get(id(model))
        if rates is None:
            rates = self._rates[id(model)] = tuple(self._convert(model))
        return rates

    def all_rates(self) -> Iterator[Rate]:
        for provider in self.providers:
            for model in provider.models:
                yield from self.rates(model)

    def _convert(self, model: Any) -> Iterator[Rate]:
        from genai_prices import types

        owner = self.owner[id(model)]
        provider = _SEMCONV_FOR_GENAI.get(owner.id, owner.id)
        if isinstance(model.prices, list):
            conditional = model.prices
        else:
            conditional = [types.ConditionalPrice(prices=model.prices)]
        all_levels = [_dataset_levels(entry.prices) for entry in conditional]
        if any(levels is None for levels in all_levels):
            return  # not priced per token (audio hours, pages, characters): unknown, never $0
        for position, (entry, levels) in enumerate(zip(conditional, all_levels, strict=True)):
            effective_from, window = ALWAYS, None
            if isinstance(entry.constraint, types.StartDateConstraint):
                # genai-prices uses the first price whenever no later one applies, so the first is
                # in effect from the beginning whatever its start date.
                effective_from = ALWAYS if position == 0 else entry.constraint.start_date
            elif isinstance(entry.constraint, types.TimeOfDateConstraint):
                window = (entry.constraint.start_time, entry.constraint.end_time)
            assert levels is not None
            (_, base), *tiers = levels
            when = "" if effective_from == ALWAYS else f"@{effective_from.isoformat()}"
            span = f"~{window[0].strftime('%H%M')}-{window[1].strftime('%H%M')}" if window else ""
            yield Rate(
                provider=provider,
                model=model.id,
                effective_from=effective_from,
                input=base.input,
                output=base.output,
                cache_read=base.cache_read,
                cache_write=base.cache_write,
                cache_write_1h=base.cache_write_1h,
                reasoning=base.reasoning,
                tiers=tuple(tiers),
                source=DATASET_SOURCE,
                version=f"genai-prices-{_GENAI_VERSION}:{provider}/{model.id}{when}{span}",
                daily_window=window,
            )


_DATASET_KEYS = {
    "input": "input_mtok",
    "cache_read": "cache_read_mtok",
    "cache_write": "cache_write_mtok",
    "cache_write_1h": "cache_write_1h_mtok",
    "output": "output_mtok",
    "reasoning": "output_reasoning_mtok",
}


def _dataset_levels(model_price: Any) -> list[tuple[int, Prices]] | None:
    """A genai-prices ModelPrice as [(0, base), (threshold, tier), ...].

    Each price key tiers on its own in genai-prices (a key is at its highest tier whose start the
    request's input exceeds); at every threshold any key has, take each key's price in force there.
    """
    from genai_prices.types import TieredPrices

    values = {name: getattr(model_price, key, None) for name, key in _DATASET_KEYS.items()}
    set_keys = {k for k, v in model_price.__dict__.items() if v is not None and not k.startswith("_")}
    if not set_keys:
        values["input"] = values["output"] = Decimal(0)  # an empty price list is a free model
    elif values["input"] is None:
        return None
    elif values["output"] is None:
        values["output"] = Decimal(0)  # embeddings: no output tokens to price
    thresholds = sorted({t.start for v in values.values() if isinstance(v, TieredPrices) for t in v.tiers})

    def at(value: Decimal | TieredPrices | None, level: int) -> Decimal | None:
        if not isinstance(value, TieredPrices):
            return value
        price = value.base
        for tier in sorted(value.tiers, key=lambda t: t.start):
            if tier.start <= level:
                price = tier.price
        return price

    return [(level, Prices(**{n: at(v, level) for n, v in values.items()})) for level in [-1, *thresholds]]


# --------------------------------------------------------------------------------------------
# Override files
# --------------------------------------------------------------------------------------------

_YAML_RATE_KEYS = {"provider", "model", "aliases", "effective_from", "tiers", "note", *_PRICE_FIELDS}
_YAML_TIER_KEYS = {"above", *_PRICE_FIELDS}


def _yaml_loader() -> type:
    import yaml

    class DecimalLoader(yaml.SafeLoader):
        """YAML whose numbers with a fraction become Decimal from their text, never float."""

    def construct_decimal(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Decimal:
        text = str(loader.construct_scalar(node)).replace("_", "")
        try:
            value = Decimal(text)
        except InvalidOperation as exc:
            raise PricesFileError(f"not a price: {text!r} (line {node.start_mark.line + 1})") from exc
        if not value.is_finite():
            raise PricesFileError(f"not a price: {text!r} (line {node.start_mark.line + 1})")
        return value

    DecimalLoader.add_constructor("tag:yaml.org,2002:float", construct_decimal)
    return DecimalLoader


def _to_price(value: Any, where: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise PricesFileError(f"{where}: expected a price, got {value!r}")
    try:
        price = Decimal(value) if isinstance(value, int | Decimal) else Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise PricesFileError(f"{where}: expected a price, got {value!r}") from exc
    if not price.is_finite() or price < 0:
        raise PricesFileError(f"{where}: expected a non-negative price, got {value!r}")
    return price


def _to_date(value: Any, where: str) -> date:
    if value is None:
        return ALWAYS
    if type(value) is date:
        return value
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError as exc:
        raise PricesFileError(f"{where}: effective_from must be a YYYY-MM-DD date, got {value!r}") from exc


def _override_rate(entry: Any, where: str, source: str) -> Rate:
    if not isinstance(entry, Mapping):
        raise PricesFileError(f"{where}: each rate is a mapping")
    unknown = set(entry) - _YAML_RATE_KEYS
    if unknown:
        raise PricesFileError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    for required in ("provider", "model", "input", "output"):
        if entry.get(required) is None:
            raise PricesFileError(f"{where}: {required!r} is required")
    provider = str(entry["provider"]).strip()
    provider = ANY_PROVIDER if provider == ANY_PROVIDER else canonical_provider(provider)
    aliases = entry.get("aliases") or []
    if isinstance(aliases, str) or not isinstance(aliases, list):
        raise PricesFileError(f"{where}: aliases is a list of model names")
    base = {name: _to_price(entry.get(name), f"{where}.{name}") for name in _PRICE_FIELDS}
    raw_tiers = entry.get("tiers") or []
    if not isinstance(raw_tiers, list):
        raise PricesFileError(f"{where}: tiers is a list")
    for position, raw in enumerate(raw_tiers):
        tier_where = f"{where}.tiers[{position}]"
        above = raw.get("above") if isinstance(raw, Mapping) else None
        if not isinstance(above, int) or isinstance(above, bool) or above < 0:
            raise PricesFileError(f"{tier_where}: each tier needs `above: <input tokens>`")
        unknown = set(raw) - _YAML_TIER_KEYS
        if unknown:
            raise PricesFileError(f"{tier_where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    tiers: list[tuple[int, Prices]] = []
    below = dict(base)
    for position, raw in sorted(enumerate(raw_tiers), key=lambda item: item[1]["above"]):
        tier_where = f"{where}.tiers[{position}]"
        # A price a tier leaves out stays at the level below it (per-key tiers, as in genai-prices).
        level = {n: _to_price(raw[n], f"{tier_where}.{n}") if n in raw else below[n] for n in _PRICE_FIELDS}
        tiers.append((raw["above"], Prices(**level)))
        below = level
    try:
        return Rate(
            provider=provider,
            model=str(entry["model"]).strip(),
            effective_from=_to_date(entry.get("effective_from"), where),
            tiers=tuple(tiers),
            source=source,
            aliases=tuple(str(a) for a in aliases),
            **base,
        )
    except (TypeError, ValueError) as exc:
        raise PricesFileError(f"{where}: {exc}") from exc


def load_overrides(path: str | Path) -> list[Rate]:
    """Rates from a spanmeter prices YAML file (format: `prices.example.yaml`)."""
    import yaml

    path = Path(path)
    try:
        # A SafeLoader subclass: no arbitrary objects, numbers as Decimal.
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=_yaml_loader())  # noqa: S506
    except (OSError, yaml.YAMLError) as exc:
        raise PricesFileError(f"cannot read prices file {path}: {exc}") from exc
    if document is None:
        return []
    if not isinstance(document, Mapping) or not isinstance(document.get("rates", []), list):
        raise PricesFileError(f"{path}: expected a mapping with a `rates:` list")
    if document.get("version", 1) != 1:
        raise PricesFileError(f"{path}: unsupported version {document.get('version')!r}")
    source = f"override:{path.name}"
    entries = document.get("rates") or []
    return [_override_rate(entry, f"{path.name}: rates[{i}]", source) for i, entry in enumerate(entries)]


_LITELLM_KEY = re.compile(
    r"^(input_cost_per_token|output_cost_per_token|cache_read_input_token_cost"
    r"|cache_creation_input_token_cost|cache_creation_input_token_cost_above_1hr"
    r"|output_cost_per_reasoning_token)(?:_above_(\d+)k_tokens)?$"
)
_LITELLM_FIELD = {
    "input_cost_per_token": "input",
    "output_cost_per_token": "output",
    "cache_read_input_token_cost": "cache_read",
    "cache_creation_input_token_cost": "cache_write",
    "cache_creation_input_token_cost_above_1hr": "cache_write_1h",
    "output_cost_per_reasoning_token": "reasoning",
}


_LITELLM_INPUT_ONLY_MODES = frozenset({"embedding", "rerank", "moderation"})


def load_litellm(path: str | Path, *, effective_from: date = ALWAYS) -> list[Rate]:
    """Rates from LiteLLM's `model_prices_and_context_window.json` (per-token USD prices).

    `*_above_<N>k_tokens` prices become a tier at N*1000 input tokens; batch, flex and priority
    variants, per-image, per-second and per-query prices are left out. Entries without a per-token
    input price, or without a per-token output price unless they are embeddings, are skipped.
    """
    path = Path(path)
    try:
        # parse_float=Decimal: "1.5e-07" becomes Decimal("1.5E-7") from its text, never a float.
        document = json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
    except (OSError, ValueError) as exc:
        raise PricesFileError(f"cannot read LiteLLM prices {path}: {exc}") from exc
    if not isinstance(document, Mapping):
        raise PricesFileError(f"{path}: expected a JSON object of models")
    source = f"litellm:{path.name}"
    by_key: dict[tuple[str, str], Rate] = {}
    for key, entry in document.items():
        if key == "sample_spec" or not isinstance(entry, Mapping):
            continue
        if entry.get("input_cost_per_token") is None:
            continue
        provider = canonical_provider(str(entry.get("litellm_provider") or ""))
        model = key.strip().lower()
        head, _, rest = model.partition("/")
        if rest and canonical_provider(head) == provider:
            model = rest  # "gemini/gemini-2.5-pro" under provider gemini
        levels: dict[int, dict[str, Decimal]] = {0: {}}
        for name, value in entry.items():
            match = _LITELLM_KEY.match(name)
            if not match or value is None:
                continue
            price = _to_price(value, f"{path.name}: {key}.{name}")
            assert price is not None
            threshold = int(match.group(2)) * 1000 if match.group(2) else 0
            per_mtok = Decimal(format(price.scaleb(_MTOK, _CTX).normalize(_CTX), "f"))  # 1.5E-7 -> 0.15
            levels.setdefault(threshold, {})[_LITELLM_FIELD[match.group(1)]] = per_mtok
        base = levels.pop(0)
        if "output" not in base:
            if entry.get("mode") not in _LITELLM_INPUT_ONLY_MODES:
                continue  # output priced some other way (images, audio): unknown, not $0
            base["output"] = Decimal(0)
        tiers: list[tuple[int, Prices]] = []
        below = {name: base.get(name) for name in _PRICE_FIELDS}
        for threshold in sorted(levels):
            below = {**below, **levels[threshold]}
            tiers.append((threshold, Prices(**below)))
        try:
            rate = Rate(
                provider=provider,
                model=model,
                effective_from=effective_from,
                tiers=tuple(tiers),
                source=source,
                **{name: base.get(name) for name in _PRICE_FIELDS},
            )
        except (TypeError, ValueError) as exc:
            raise PricesFileError(f"{path.name}: {key}: {exc}") from exc
        by_key[(provider, model)] = rate
    return list(by_key.values())


def load_rates_file(path: str | Path) -> list[Rate]:
    """An override file by its extension: `.json` is LiteLLM's format, anything else our YAML."""
    if Path(path).suffix.lower() == ".json":
        return load_litellm(path)
    return load_overrides(path)


# --------------------------------------------------------------------------------------------
# The book
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Resolution:
    """Where a (provider, model) name pair finds its rates: override history, then the dataset's."""

    override: tuple[Rate, ...]
    dataset: tuple[Rate, ...]


_NOTHING = _Resolution((), ())
# A day entry: one compiled rate, or (window seconds | None, compiled) choices for off-peak
# prices, or None for no rate at all.
_DayEntry = _Compiled | tuple[tuple[tuple[int, int] | None, _Compiled], ...] | None
_CACHE_LIMIT = 100_000


class PriceBook:
    """Rates from overrides and the genai-prices dataset; prices usage records.

    `overrides`: rates that beat the dataset, in load order (on equal dates a later one wins).
    `dataset=False` leaves genai-prices out (only the overrides price anything).
    """

    def __init__(self, overrides: Iterable[Rate] = (), *, dataset: bool = True) -> None:
        self._dataset = _Dataset() if dataset else None
        self._overrides: dict[tuple[str, str], list[Rate]] = {}
        self._alias: dict[tuple[str, str], tuple[str, str]] = {}
        self._override_providers: dict[str, set[str]] = {}
        for rate in overrides:
            key = (rate.provider, rate.model.strip().lower())
            self._overrides.setdefault(key, []).append(rate)
            for name in (key[1], *rate.aliases):
                self._alias.setdefault((rate.provider, name), key)
                self._override_providers.setdefault(name, set()).add(rate.provider)
        for history in self._overrides.values():
            history.sort(key=lambda r: r.effective_from)  # stable: load order breaks ties
        self._resolved: dict[tuple[str, str], _Resolution] = {}
        self._days: dict[tuple[str, str, int], _DayEntry] = {}

    @classmethod
    def from_files(cls, *paths: str | Path | None, dataset: bool = True) -> PriceBook:
        """A book with the override files in `paths` (None/empty skipped; a later file wins)."""
        rates: list[Rate] = []
        for path in paths:
            if path:
                rates.extend(load_rates_file(path))
        return cls(rates, dataset=dataset)

    # --- pricing ---

    def price(self, record: UsageRecord) -> None:
        """Set `cost_usd`, `pricing_status` and `price_version` on one record."""
        if record.usage_status == _USAGE_STATUS_MISSING:
            record.cost_usd, record.pricing_status, record.price_version = None, USAGE_MISSING, ""
            return
        model = record.response_model or record.request_model
        if not model:
            record.cost_usd, record.pricing_status, record.price_version = None, NO_MODEL, ""
            return
        ns = record.event_time_ns
        key = (record.provider, model, ns // _NS_PER_DAY)
        entry = self._days.get(key, False)
        if entry is False:
            entry = self._day_entry(key)
        if entry is not None and entry.__class__ is not _Compiled:
            second = (ns // _NS_PER_S) % 86_400
            entry = next((c for window, c in entry if window is None or _in_window(window, second)), None)
        if entry is None:
            record.cost_usd, record.pricing_status, record.price_version = None, UNKNOWN_MODEL, ""
            return
        usage = record.usage
        record.cost_usd = entry.cost_of(
            usage.input, usage.cache_read, usage.cache_write, usage.output, usage.reasoning
        )
        record.pricing_status = PRICED
        record.price_version = entry.version

    def _day_entry(self, key: tuple[str, str, int]) -> _DayEntry:
        provider, model, day_number = key
        choices = self._choices(self._resolve(provider, model), date.fromordinal(_EPOCH_ORDINAL + day_number))
        entry: _DayEntry
        if not choices:
            entry = None
        elif len(choices) == 1 and choices[0][0] is None:
            entry = _compile(choices[0][1])
        else:
            entry = tuple(
                (None if w is None else (_seconds(w[0]), _seconds(w[1])), _compile(rate))
                for w, rate in choices
            )
        if len(self._days) >= _CACHE_LIMIT:
            self._days.clear()
        self._days[key] = entry
        return entry

    @staticmethod
    def _choices(resolution: _Resolution, day: date) -> list[tuple[tuple[time, time] | None, Rate]]:
        """Rates that may apply on `day`, in the order they are tried: a windowed rate applies in
        its window only; the first rate without a window ends the list."""
        choices: list[tuple[tuple[time, time] | None, Rate]] = []
        for history in (resolution.override, resolution.dataset):
            for rate in reversed(history):  # the last rate in force wins
                if rate.effective_from > day:
                    continue
                choices.append((rate.daily_window, rate))
                if rate.daily_window is None:
                    return choices
        return choices

    # --- lookup ---

    def lookup(self, provider: str | None, model: str, at: datetime) -> Rate | None:
        """The rate a call to `model` at `provider` at time `at` (naive = UTC) is billed at."""
        at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
        second = at.hour * 3600 + at.minute * 60 + at.second
        for window, rate in self._choices(self._resolve(provider or "", model), at.date()):
            if window is None or _in_window((_seconds(window[0]), _seconds(window[1])), second):
                return rate
        return None

    def _resolve(self, provider: str, model: str) -> _Resolution:
        key = (provider, model)
        resolution = self._resolved.get(key)
        if resolution is None:
            resolution = self._resolve_uncached(provider, model)
            if len(self._resolved) >= _CACHE_LIMIT:
                self._resolved.clear()
            self._resolved[key] = resolution
        return resolution

    def _resolve_uncached(self, provider: str, model: str) -> _Resolution:
        if not model.strip():
            return _NOTHING
        canonical = canonical_provider(provider)
        refs = _model_refs(model)
        dataset_model, trust_hints = self._dataset_match(canonical, refs)
        ids = [ref for _, ref in refs]
        if dataset_model is not None:
            ids.append(dataset_model.id.lower())
        override = self._override_match(canonical, ids, refs, trust_hints)
        dataset = self._dataset.rates(dataset_model) if self._dataset and dataset_model is not None else ()
        return _Resolution(override, dataset) if override or dataset else _NOTHING

    def _dataset_match(self, canonical: str, refs: list[tuple[str | None, str]]) -> tuple[Any | None, bool]:
        """The dataset's model for these names, and whether a provider named inside the model name
        ("litellm" + "anthropic/claude-...") may stand in for the span's provider."""
        ds = self._dataset
        if ds is None:
            return None, True
        named = ds.provider(canonical) if canonical else None
        if named is not None:
            for _, ref in refs:
                if model := ds.find(named, ref):
                    return model, False
        # A provider named in the model ("openai/gpt-4o", "us.anthropic.claude-...") next.
        for hint, ref in refs:
            if hint and (hinted := ds.provider(hint)) is not None and hinted is not named:
                if model := ds.find(hinted, ref):
                    return model, True
        if named is None:  # no provider, or one genai-prices does not know: find it by name
            for _, ref in refs:
                if model := ds.infer(ref):
                    return model, True
        return None, named is None

    def _override_match(
        self, canonical: str, ids: list[str], refs: list[tuple[str | None, str]], trust_hints: bool
    ) -> tuple[Rate, ...]:
        if not self._overrides:
            return ()
        providers = [canonical] if canonical else []
        if trust_hints:
            providers += [hint for hint, _ in refs if hint and hint not in providers]
        for name in ids:
            for p in providers:
                if key := self._alias.get((p, name)):
                    return tuple(self._overrides[key])
            if key := self._alias.get((ANY_PROVIDER, name)):
                return tuple(self._overrides[key])
            if not canonical:
                owners = self._override_providers.get(name, set())
                if len(owners) == 1:  # a model only one provider's overrides name
                    return tuple(self._overrides[self._alias[(next(iter(owners)), name)]])
        return ()

    # --- listing ---

    def rates(self) -> Iterator[Rate]:
        """Every rate: overrides first, then the dataset's."""
        for history in self._overrides.values():
            yield from history
        if self._dataset is not None:
            yield from self._dataset.all_rates()

    def describe(self, model: str, provider: str | None = None) -> list[Rate]:
        """The rates `lookup` would choose among for `model` (every date). With no provider and no
        single answer, the rates of every provider that lists the model."""
        resolution = self._resolve(provider or "", model)
        if resolution is not _NOTHING or provider:
            return [*resolution.override, *resolution.dataset]
        found: list[Rate] = []
        refs = _model_refs(model)
        names = {ref for _, ref in refs}
        for (_, name), key in self._alias.items():
            if name in names:
                found.extend(r for r in self._overrides[key] if r not in found)
        if self._dataset is not None:
            for genai_provider in self._dataset.providers:
                for _, ref in refs:
                    if match := genai_provider.find_model(ref):
                        found.extend(r for r in self._dataset.rates(match) if r not in found)
                        break
        return found


def format_rates(rates: Sequence[Rate]) -> str:
    """A text table of rates, USD per million tokens; tiers on their own indented lines."""
    header = (
        "provider", "model", "from", "input", "cache_read", "cache_write", "cache_1h", "output", "reasoning",
        "version",
    )  # fmt: skip
    rows: list[tuple[str, ...]] = [header]

    def cells(prices: Prices) -> list[str]:
        def show(value: Decimal | None, fallback: str) -> str:
            return fallback if value is None else _dec_text(value)

        return [
            _dec_text(prices.input),
            show(prices.cache_read, "=input"),
            show(prices.cache_write, "=input"),
            show(prices.cache_write_1h, "-"),
            _dec_text(prices.output),
            show(prices.reasoning, "=output"),
        ]

    for rate in rates:
        when = "always" if rate.effective_from == ALWAYS else rate.effective_from.isoformat()
        if rate.daily_window:
            when += f" {rate.daily_window[0].strftime('%H:%M')}-{rate.daily_window[1].strftime('%H:%M')}Z"
        rows.append((rate.provider, rate.model, when, *cells(rate.base), rate.version))
        for threshold, prices in rate.tiers:
            rows.append(("", f"  input > {threshold:,}", "", *cells(prices), ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)
