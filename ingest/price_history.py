"""Price history: compare price books, append a dated rate, record the rates in ClickHouse.

    changes = diff_books(PriceBook(), PriceBook.from_files("prices.yaml"), at=date.today())
    print(format_diff(changes))                     # which models' rates change, by how much
    append_rate("prices.yaml", provider="openai", model="gpt-x", effective_from=date(2026, 2, 1),
                prices={"input": Decimal("1.25"), "output": Decimal("10")})
    record_prices(store, book)                      # every rate into {db}.prices, once per version

History is never edited in place: `append_rate` only ever adds an entry at the end of the
overrides file, and an entry for a date that already has one is refused unless `supersede` is
set (then both stay in the file, and the later one wins, as `PriceBook` does on equal dates).
The `prices` table is keyed by `price_version`, the same string every priced usage row carries,
so ad-hoc SQL and Grafana can join a row to the exact rate that priced it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

from .price import (
    ANY_PROVIDER,
    PriceBook,
    Prices,
    PricesFileError,
    Rate,
    canonical_provider,
    load_overrides,
)

__all__ = [
    "FieldChange",
    "RateChange",
    "append_rate",
    "diff_books",
    "format_diff",
    "price_rows",
    "record_prices",
]

PRICE_FIELDS = ("input", "cache_read", "cache_write", "cache_write_1h", "output", "reasoning")


# --------------------------------------------------------------------------------------------
# Diff
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldChange:
    level: str  # "base" or "input > N"
    name: str  # input, cache_read, ...
    old: Decimal | None  # USD per million tokens as billed (a missing cache price is the input price)
    new: Decimal | None

    @property
    def delta(self) -> Decimal | None:
        return None if self.old is None or self.new is None else self.new - self.old

    @property
    def percent(self) -> Decimal | None:
        if self.delta is None or not self.old:
            return None
        return (self.delta * 100 / self.old).quantize(Decimal("0.01"))


@dataclass(frozen=True, slots=True)
class RateChange:
    provider: str
    model: str
    kind: str  # "changed", "added" (newly priced), "removed" (no longer priced)
    old: Rate | None
    new: Rate | None
    fields: tuple[FieldChange, ...] = field(default=())


def _billed(prices: Prices) -> dict[str, Decimal | None]:
    """What each kind of token is billed at, fallbacks applied (as `price.py` prices them)."""
    return {
        "input": prices.input,
        "cache_read": prices.input if prices.cache_read is None else prices.cache_read,
        "cache_write": prices.input if prices.cache_write is None else prices.cache_write,
        "cache_write_1h": prices.cache_write_1h,
        "output": prices.output,
        "reasoning": prices.output if prices.reasoning is None else prices.reasoning,
    }


def _levels(rate: Rate) -> dict[str, Prices]:
    levels = {"base": rate.base}
    levels.update({f"input > {threshold:,}": prices for threshold, prices in rate.tiers})
    return levels


_FALLBACKS = ("cache_write", "reasoning")  # billed at input/output when unpublished: shown only if published


def _field_changes(old: Rate, new: Rate) -> tuple[FieldChange, ...]:
    old_levels, new_levels = _levels(old), _levels(new)
    changes: list[FieldChange] = []
    for level in [*old_levels, *(name for name in new_levels if name not in old_levels)]:
        before = _billed(old_levels[level]) if level in old_levels else dict.fromkeys(PRICE_FIELDS)
        after = _billed(new_levels[level]) if level in new_levels else dict.fromkeys(PRICE_FIELDS)
        for name in PRICE_FIELDS:
            if before[name] == after[name]:
                continue
            published = [getattr(levels[level], name) for levels in (old_levels, new_levels) if level in levels]
            if name in _FALLBACKS and all(value is None for value in published):
                continue  # follows input/output, whose own line shows the change
            changes.append(FieldChange(level, name, before[name], after[name]))
    return tuple(changes)


def diff_books(
    old: PriceBook,
    new: PriceBook,
    *,
    at: date,
    was: date | None = None,
    models: Iterable[tuple[str, str]] | None = None,
) -> list[RateChange]:
    """The rates that differ between `old` (in effect on `was`, default `at`) and `new` (on `at`).

    `models`: (provider, model) pairs to compare; by default every model either book lists.
    A model whose rate changed only in version or source, not in any price, is left out.
    """
    was = was or at
    when_old = datetime.combine(was, time(12), UTC)
    when_new = datetime.combine(at, time(12), UTC)
    if models is None:
        keys = {(r.provider, r.model) for book in (old, new) for r in book.rates()}
    else:
        keys = set(models)
    changes: list[RateChange] = []
    for provider, model in sorted(keys):
        lookup_provider = "" if provider == ANY_PROVIDER else provider
        before = old.lookup(lookup_provider, model, when_old)
        after = new.lookup(lookup_provider, model, when_new)
        if before is None and after is None:
            continue
        if before is None:
            changes.append(RateChange(provider, model, "added", None, after))
        elif after is None:
            changes.append(RateChange(provider, model, "removed", before, None))
        else:
            fields = _field_changes(before, after)
            if fields:
                changes.append(RateChange(provider, model, "changed", before, after, fields))
    return changes


def _num(value: Decimal | None) -> str:
    if value is None:
        return "-"
    text = format(value.normalize(), "f")
    return text if "." not in text else text.rstrip("0").rstrip(".") or "0"


def format_diff(changes: Sequence[RateChange]) -> str:
    """A text table: one line per changed price (USD per million tokens), added and removed rates."""
    if not changes:
        return "no rate differs"
    rows = [("provider", "model", "level", "price", "old", "new", "change", "old version", "new version")]
    for change in changes:
        old_version = change.old.version if change.old else "-"
        new_version = change.new.version if change.new else "-"
        if change.kind == "added":
            rows.append((change.provider, change.model, "", "(newly priced)", "-", "", "", "-", new_version))
            continue
        if change.kind == "removed":
            rows.append((change.provider, change.model, "", "(no longer priced)", "", "-", "", old_version, "-"))
            continue
        for position, f in enumerate(change.fields):
            pct = f.percent
            delta = f.delta
            shown = "" if delta is None else f"{'+' if delta >= 0 else ''}{_num(delta)}"
            if pct is not None:
                shown += f" ({'+' if pct >= 0 else ''}{pct}%)"
            first = position == 0
            rows.append((
                change.provider if first else "", change.model if first else "", f.level, f.name,
                _num(f.old), _num(f.new), shown, old_version if first else "", new_version if first else "",
            ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


# --------------------------------------------------------------------------------------------
# Append a dated rate to the overrides YAML
# --------------------------------------------------------------------------------------------

_HEADER = (
    "# spanmeter price overrides (format: spanmeter's prices.example.yaml).\n"
    "# Append-only: `spanmeter prices add` adds dated entries at the end; history is never edited.\n"
    "version: 1\n"
    "rates:\n"
)


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, Decimal):
        return _num(value)
    if isinstance(value, date):
        return value.isoformat()
    text = str(value)
    # Quote every string: model names such as "o3" or "1.5-pro" must stay strings.
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def append_rate(
    path: str | Path,
    *,
    provider: str,
    model: str,
    effective_from: date,
    prices: Mapping[str, Decimal | None],
    tiers: Sequence[tuple[int, Mapping[str, Decimal]]] = (),
    note: str = "",
    supersede: bool = False,
) -> Rate:
    """Append one dated rate to the YAML overrides file (created if missing); return it as loaded.

    Refuses an entry for a (provider, model, date) the file already has unless `supersede`: a
    price that was wrong is corrected by a later entry, and the wrong one stays on record.
    """
    path = Path(path)
    if path.suffix.lower() == ".json":
        raise PricesFileError(f"{path}: a LiteLLM JSON file is imported as it is; add rates to a YAML overrides file")
    provider = provider.strip()
    provider = ANY_PROVIDER if provider == ANY_PROVIDER else canonical_provider(provider)
    existing_text = path.read_text(encoding="utf-8") if path.exists() else ""
    existing = load_overrides(path) if existing_text.strip() else []
    same_day = [
        r for r in existing
        if r.provider == provider and r.model.lower() == model.strip().lower() and r.effective_from == effective_from
    ]
    if same_day and not supersede:
        raise PricesFileError(
            f"{path.name} already has a {provider}/{model} rate from {effective_from}: history is not edited; "
            "pass --supersede to add a correcting entry for the same date (both stay in the file)"
        )
    lines = [
        f"  - provider: {_yaml_scalar(provider)}",
        f"    model: {_yaml_scalar(model.strip())}",
        f"    effective_from: {effective_from.isoformat()}",
    ]
    for name in PRICE_FIELDS:
        value = prices.get(name)
        if value is not None:
            lines.append(f"    {name}: {_num(Decimal(value))}")
    if tiers:
        lines.append("    tiers:")
        for above, level in sorted(tiers, key=lambda t: t[0]):
            lines.append(f"      - above: {int(above)}")
            for name in PRICE_FIELDS:
                if level.get(name) is not None:
                    lines.append(f"        {name}: {_num(Decimal(level[name]))}")
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    lines.append(f"    note: {_yaml_scalar((note + ' ' if note else '') + f'(added {stamp} by spanmeter prices add)')}")
    if not existing_text.strip():
        base = _HEADER
    else:
        base = existing_text if existing_text.endswith("\n") else existing_text + "\n"
    text = base + "\n".join(lines) + "\n"

    # Check the result before it replaces the file: the new entry must load as the last rate and
    # every earlier rate must load exactly as before (so `rates:` must be the file's last key).
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_text(text, encoding="utf-8")
    try:
        try:
            loaded = load_overrides(partial)
        except PricesFileError as exc:
            raise PricesFileError(
                f"{path}: cannot append: `rates:` must be the file's last top-level key, as a block list ({exc})"
            ) from exc
        # A version ends in a hash of the provider, model, date and prices (not of the file name).
        if len(loaded) != len(existing) + 1 or [r.version.rsplit("#", 1)[-1] for r in loaded[:-1]] != [
            r.version.rsplit("#", 1)[-1] for r in existing
        ]:
            raise PricesFileError(f"{path}: cannot append: `rates:` must be the file's last top-level key")
        added = loaded[-1]
        if (added.provider, added.model.lower(), added.effective_from) != (provider, model.strip().lower(), effective_from):
            raise PricesFileError(f"{path}: cannot append: the new entry did not load as written")
        os.replace(partial, path)
    finally:
        if partial.exists():
            partial.unlink()
    return load_overrides(path)[-1]


# --------------------------------------------------------------------------------------------
# The prices table
# --------------------------------------------------------------------------------------------

PRICE_TABLE_COLUMNS = (
    "price_version", "provider", "model", "source", "effective_from", "window_utc", "tier",
    "above_input_tokens", "input_per_mtok", "cache_read_per_mtok", "cache_write_per_mtok",
    "cache_write_1h_per_mtok", "output_per_mtok", "reasoning_per_mtok",
)  # fmt: skip


_PICO = Decimal("1E-12")


def _column(value: Decimal | None) -> Decimal | None:
    # Decimal(18, 12): a dataset price with more places (a float artifact such as
    # 0.18000000000000002) is rounded half-even to 12, the precision costs are computed to.
    return None if value is None else value.quantize(_PICO, rounding=ROUND_HALF_EVEN)


def price_rows(rates: Iterable[Rate]) -> list[list[Any]]:
    """One row per rate and tier (tier 0 is the base price), prices as published (None: not set)."""
    rows: list[list[Any]] = []
    for rate in rates:
        window = ""
        if rate.daily_window:
            window = f"{rate.daily_window[0].strftime('%H:%M')}-{rate.daily_window[1].strftime('%H:%M')}"
        levels = [(0, rate.base), *rate.tiers]
        for tier, (above, prices) in enumerate(levels):
            rows.append([
                rate.version, rate.provider, rate.model, rate.source,
                rate.effective_from, window, tier, above,
                *(_column(getattr(prices, name)) for name in PRICE_FIELDS),  # the columns' order
            ])
    return rows


def record_prices(store: Any, book: PriceBook) -> int:
    """Insert every rate of `book` whose version `{db}.prices` lacks; returns how many rates."""
    table = f"{store.database}.prices"
    known = {row[0] for row in store.query(f"SELECT DISTINCT price_version FROM {table}").rows}
    seen: set[str] = set()
    fresh: list[Rate] = []
    for rate in book.rates():
        if rate.version not in known and rate.version not in seen:
            seen.add(rate.version)
            fresh.append(rate)
    if fresh:
        store.insert_rows(table, PRICE_TABLE_COLUMNS, price_rows(fresh))
    return len(fresh)
