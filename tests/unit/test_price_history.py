"""Price history: appending dated rates (never editing history), diffs between books and days,
the rows recorded in the `prices` table."""

from datetime import date
from decimal import Decimal

import pytest

from spanmeter.ingest.price import PriceBook, PricesFileError, load_overrides
from spanmeter.ingest.price_history import append_rate, diff_books, format_diff, price_rows

D = Decimal


def test_append_creates_the_file_and_keeps_every_earlier_entry(tmp_path):
    path = tmp_path / "prices.yaml"
    first = append_rate(path, provider="openai", model="o3", effective_from=date(2025, 4, 16),
                        prices={"input": D(10), "cache_read": D("2.5"), "output": D(40)}, note="launch")
    assert (first.provider, first.model, first.effective_from, first.input, first.cache_read) == (
        "openai", "o3", date(2025, 4, 16), D(10), D("2.5"))
    before = path.read_text()
    append_rate(path, provider="openai", model="o3", effective_from=date(2025, 6, 10),
                prices={"input": D(2), "cache_read": D("0.5"), "output": D(8)},
                tiers=[(200_000, {"input": D(4), "output": D(16)})])
    assert path.read_text().startswith(before)  # appended, nothing above it touched
    rates = load_overrides(path)
    assert [(r.effective_from, r.input) for r in rates] == [(date(2025, 4, 16), D(10)), (date(2025, 6, 10), D(2))]
    assert rates[1].tiers[0][0] == 200_000 and rates[1].tiers[0][1].output == D(16)
    assert rates[1].tiers[0][1].cache_read == D("0.5")  # a price a tier leaves out stays at the level below


def test_a_day_that_has_a_rate_is_corrected_by_a_superseding_entry_only(tmp_path):
    path = tmp_path / "prices.yaml"
    append_rate(path, provider="acme", model="m-1", effective_from=date(2026, 1, 1),
                prices={"input": D(15), "output": D(60)})
    with pytest.raises(PricesFileError, match="history is not edited"):
        append_rate(path, provider="acme", model="m-1", effective_from=date(2026, 1, 1),
                    prices={"input": D("1.5"), "output": D(6)})
    append_rate(path, provider="acme", model="m-1", effective_from=date(2026, 1, 1),
                prices={"input": D("1.5"), "output": D(6)}, supersede=True)
    assert len(load_overrides(path)) == 2  # the wrong one stays on record
    book = PriceBook.from_files(path, dataset=False)
    from datetime import UTC, datetime

    assert book.lookup("acme", "m-1", datetime(2026, 3, 1, tzinfo=UTC)).input == D("1.5")  # the later one wins


def test_append_refuses_a_file_it_cannot_append_to(tmp_path):
    path = tmp_path / "prices.yaml"
    path.write_text("rates:\n  - {provider: openai, model: x, input: 1, output: 2}\nversion: 1\n")
    with pytest.raises(PricesFileError, match="last top-level key"):
        append_rate(path, provider="openai", model="y", effective_from=date(2026, 1, 1),
                    prices={"input": D(1), "output": D(2)})
    assert "model: y" not in path.read_text()
    with pytest.raises(PricesFileError, match="LiteLLM"):
        append_rate(tmp_path / "prices.json", provider="openai", model="y", effective_from=date(2026, 1, 1),
                    prices={"input": D(1), "output": D(2)})


def test_diff_names_the_models_whose_rates_change_and_by_how_much(tmp_path):
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    append_rate(old, provider="acme", model="kept", effective_from=date(2025, 1, 1), prices={"input": D(1), "output": D(2)})
    append_rate(old, provider="acme", model="cut", effective_from=date(2025, 1, 1), prices={"input": D(4), "output": D(8)})
    append_rate(old, provider="acme", model="gone", effective_from=date(2025, 1, 1), prices={"input": D(1), "output": D(1)})
    append_rate(new, provider="acme", model="kept", effective_from=date(2025, 1, 1), prices={"input": D(1), "output": D(2)})
    append_rate(new, provider="acme", model="cut", effective_from=date(2025, 1, 1), prices={"input": D(4), "output": D(8)})
    append_rate(new, provider="acme", model="cut", effective_from=date(2026, 2, 1),
                prices={"input": D(3), "cache_read": D("0.3"), "output": D(8)})
    append_rate(new, provider="acme", model="new", effective_from=date(2025, 1, 1), prices={"input": D(1), "output": D(1)})
    changes = diff_books(PriceBook.from_files(old, dataset=False), PriceBook.from_files(new, dataset=False),
                         at=date(2026, 3, 1))
    assert [(c.model, c.kind) for c in changes] == [("cut", "changed"), ("gone", "removed"), ("new", "added")]
    cut = changes[0]
    assert [(f.level, f.name, f.old, f.new, f.delta, f.percent) for f in cut.fields] == [
        ("base", "input", D(4), D(3), D(-1), D("-25.00")),
        ("base", "cache_read", D(4), D("0.3"), D("-3.7"), D("-92.50")),  # was billed at input: now its own
    ]
    text = format_diff(changes)
    assert "-1 (-25.00%)" in text and "(no longer priced)" in text and "(newly priced)" in text
    # Before the cut took effect nothing differs for "cut".
    earlier = diff_books(PriceBook.from_files(old, dataset=False), PriceBook.from_files(new, dataset=False),
                         at=date(2026, 1, 1))
    assert [c.model for c in earlier] == ["gone", "new"]
    # One book between two days: its own price history.
    book = PriceBook.from_files(new, dataset=False)
    assert [c.model for c in diff_books(book, book, was=date(2026, 1, 1), at=date(2026, 3, 1))] == ["cut"]


def test_price_rows_hold_every_tier_at_the_columns_precision():
    book = PriceBook()
    rates = book.describe("claude-sonnet-4-5", "anthropic")
    rows = price_rows(rates)
    assert [(r[2], r[6], r[7], r[8], r[9], r[10], r[12]) for r in rows] == [
        ("claude-sonnet-4-5", 0, 0, D(3), D("0.3"), D("3.75"), D(15)),
        ("claude-sonnet-4-5", 1, 200_000, D(6), D("0.6"), D("7.5"), D("22.5")),
    ]
    assert all(r[0] == rates[0].version for r in rows)
