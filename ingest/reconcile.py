"""Reconciliation: the meter against the provider's bill, per day and model.

    bill = load_export("costs.json", "openai")        # or "anthropic", or "csv"
    meter = meter_lines(rows)                          # from meter_sql(...) over usage_daily
    report = compare(bill, meter, relative=Decimal("0.01"), absolute=Decimal("0.01"))
    print(format_report(report))

Formats read:
- openai: the Administration API's `GET /v1/organization/costs` pages (`amount.value` in USD per
  `line_item`, e.g. "gpt-4o-2024-08-06, input", or one total per day without `group_by`) and
  `GET /v1/organization/usage/completions` pages (`input_tokens` (cached included),
  `output_tokens`, `num_model_requests` per `model`); one page, a list of pages, or JSON Lines of
  pages; `results` or `result` in a bucket; buckets by `start_time` (Unix seconds, UTC day).
- anthropic: the Admin API's `GET /v1/organizations/cost_report` (`amount` is a decimal string
  in cents: "123.45" is $1.2345; per `model` when grouped by description, per day otherwise) and
  `GET /v1/organizations/usage_report/messages` (`uncached_input_tokens`, `cache_read_input_tokens`,
  `cache_creation.ephemeral_5m_input_tokens` / `_1h_`, `output_tokens` per `model`), buckets by
  `starting_at` (RFC 3339).
- csv: a header row with `date,provider,model,cost_usd` and optionally `input_tokens,output_tokens`
  (more columns are ignored); date YYYY-MM-DD (UTC), cost in USD as a decimal.

Models are matched on a key both sides share: lower case, no provider prefix, no date suffix
("gpt-4o-2024-08-06, input" and "gpt-4o-2024-08-06" are both "gpt-4o"). When the bill has only
a total per day, the meter's models of that day are summed to match it.

A line is flagged when the meter and the bill differ by more than `absolute` dollars and more
than `relative` of the bill (both, so neither cents on a tiny line nor a rounding on a big one
raise an alarm), when the meter holds unpriced calls for it (its figure is incomplete), or when
token counts differ by more than `relative` and `min_tokens`. Lines on one side only are flagged
past `absolute`.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from .errors import SpanmeterError
from .price import canonical_provider

__all__ = [
    "BillLine",
    "ExportError",
    "Line",
    "MeterLine",
    "Report",
    "compare",
    "format_report",
    "load_export",
    "meter_lines",
    "meter_sql",
    "model_key",
]

PROVIDERS = ("openai", "anthropic", "csv")
_DATE_SUFFIX = re.compile(r"[-@]20\d{2}-?[01]\d-?[0-3]\d$")
_ALL_MODELS = ""  # the model key of a whole day's total


class ExportError(SpanmeterError):
    """A provider export that cannot be read."""


@dataclass(slots=True)
class BillLine:
    day: date
    provider: str
    model: str  # as the bill names it; '' for a day's total
    cost_usd: Decimal | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    requests: int | None = None


@dataclass(slots=True)
class MeterLine:
    day: date
    provider: str
    model: str
    cost_usd: Decimal = Decimal(0)  # priced calls only
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    unpriced_requests: int = 0


@dataclass(slots=True)
class Line:
    day: date
    provider: str
    model: str  # the shared key
    bill_usd: Decimal | None = None
    meter_usd: Decimal | None = None
    bill_input: int | None = None
    bill_output: int | None = None
    meter_input: int | None = None
    meter_output: int | None = None
    meter_requests: int = 0
    unpriced_requests: int = 0
    reasons: list[str] = field(default_factory=list)

    @property
    def diff_usd(self) -> Decimal | None:
        if self.bill_usd is None and self.meter_usd is None:
            return None
        return (self.meter_usd or 0) - (self.bill_usd or 0)

    @property
    def diff_pct(self) -> Decimal | None:
        diff = self.diff_usd
        if diff is None or not self.bill_usd:
            return None
        return (diff * 100 / self.bill_usd).quantize(Decimal("0.01"))

    @property
    def flagged(self) -> bool:
        return bool(self.reasons)


@dataclass(slots=True)
class Report:
    lines: list[Line]
    bill_total_usd: Decimal
    meter_total_usd: Decimal
    relative: Decimal
    absolute: Decimal
    first_day: date | None
    last_day: date | None

    @property
    def flagged(self) -> list[Line]:
        return [line for line in self.lines if line.flagged]


def model_key(name: str | None) -> str:
    """The name both sides share: "OpenAI/GPT-4o-2024-08-06, input" -> "gpt-4o"."""
    if not name:
        return _ALL_MODELS
    text = str(name).split(",", 1)[0].strip().lower()
    text = text.rsplit("/", 1)[-1]
    text = re.sub(r"\s+", "-", text)
    return _DATE_SUFFIX.sub("", text)


# --- exports ------------------------------------------------------------------------------------


def _decimal(value: Any, where: str) -> Decimal:
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except (InvalidOperation, ValueError) as exc:
        raise ExportError(f"{where}: not an amount: {value!r}") from exc
    if not number.is_finite():
        raise ExportError(f"{where}: not an amount: {value!r}")
    return number


def _count(value: Any) -> int:
    if value is None or isinstance(value, bool):
        return 0
    return int(Decimal(str(value)))


def _documents(path: Path) -> list[Any]:
    text = path.read_text(encoding="utf-8")
    try:
        document = json.loads(text, parse_float=Decimal)
    except ValueError:
        try:  # JSON Lines: one page per line
            return [json.loads(line, parse_float=Decimal) for line in text.splitlines() if line.strip()]
        except ValueError as exc:
            raise ExportError(f"{path}: neither JSON nor JSON Lines: {exc}") from exc
    return document if isinstance(document, list) else [document]


def _buckets(documents: Iterable[Any], where: str) -> Iterable[Mapping[str, Any]]:
    for document in documents:
        if isinstance(document, Mapping) and isinstance(document.get("data"), list):
            yield from (b for b in document["data"] if isinstance(b, Mapping))
        elif isinstance(document, Mapping) and ("results" in document or "result" in document):
            yield document  # a bare bucket
        else:
            raise ExportError(f"{where}: expected pages with a `data` list of buckets")


def load_openai(documents: Iterable[Any], where: str = "export") -> list[BillLine]:
    lines: list[BillLine] = []
    for bucket in _buckets(documents, where):
        start = bucket.get("start_time")
        if start is None:
            raise ExportError(f"{where}: a bucket without start_time")
        day = datetime.fromtimestamp(int(start), UTC).date()
        for result in bucket.get("results") or bucket.get("result") or []:
            if not isinstance(result, Mapping):
                continue
            if isinstance(result.get("amount"), Mapping):  # organization.costs.result
                amount = result["amount"]
                currency = str(amount.get("currency") or "usd").lower()
                if currency != "usd":
                    raise ExportError(f"{where}: only USD amounts are compared, found {currency}")
                lines.append(BillLine(day, "openai", str(result.get("line_item") or ""),
                                      cost_usd=_decimal(amount.get("value", 0), where)))
            elif "input_tokens" in result or "output_tokens" in result:  # organization.usage.*.result
                lines.append(BillLine(day, "openai", str(result.get("model") or ""),
                                      input_tokens=_count(result.get("input_tokens")),
                                      output_tokens=_count(result.get("output_tokens")),
                                      requests=_count(result.get("num_model_requests"))))
    return lines


def _rfc3339_day(value: Any, where: str) -> date:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC).date()
    except ValueError as exc:
        raise ExportError(f"{where}: not an RFC 3339 time: {value!r}") from exc


def load_anthropic(documents: Iterable[Any], where: str = "export") -> list[BillLine]:
    lines: list[BillLine] = []
    for bucket in _buckets(documents, where):
        day = _rfc3339_day(bucket.get("starting_at"), where)
        for result in bucket.get("results") or []:
            if not isinstance(result, Mapping):
                continue
            model = str(result.get("model") or "")
            if "amount" in result:  # cost report: cents as a decimal string
                currency = str(result.get("currency") or "USD").upper()
                if currency != "USD":
                    raise ExportError(f"{where}: only USD amounts are compared, found {currency}")
                if not model and result.get("cost_type") not in (None, "tokens"):
                    model = f"({result['cost_type']})"  # web search, code execution: not tokens
                lines.append(BillLine(day, "anthropic", model,
                                      cost_usd=_decimal(result["amount"], where) / 100))
            elif "uncached_input_tokens" in result or "output_tokens" in result:  # usage report
                creation = result.get("cache_creation") or {}
                input_tokens = (_count(result.get("uncached_input_tokens")) + _count(result.get("cache_read_input_tokens"))
                                + _count(creation.get("ephemeral_5m_input_tokens"))
                                + _count(creation.get("ephemeral_1h_input_tokens")))
                lines.append(BillLine(day, "anthropic", model, input_tokens=input_tokens,
                                      output_tokens=_count(result.get("output_tokens"))))
    return lines


def load_csv(path: Path) -> list[BillLine]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"date", "provider", "model", "cost_usd"} - set(reader.fieldnames or ())
        if missing:
            raise ExportError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        lines = []
        for number, row in enumerate(reader, 2):
            where = f"{path.name}:{number}"
            try:
                day = date.fromisoformat(row["date"].strip()[:10])
            except ValueError as exc:
                raise ExportError(f"{where}: date must be YYYY-MM-DD") from exc
            cost = row.get("cost_usd", "").strip()
            inp, out = (row.get("input_tokens") or "").strip(), (row.get("output_tokens") or "").strip()
            lines.append(BillLine(
                day, canonical_provider(row["provider"]), row["model"].strip(),
                cost_usd=_decimal(cost, where) if cost else None,
                input_tokens=int(inp) if inp else None,
                output_tokens=int(out) if out else None,
            ))
        return lines


def load_export(path: str | Path, provider: str) -> list[BillLine]:
    path = Path(path)
    try:
        if provider == "csv":
            return load_csv(path)
        if provider == "openai":
            return load_openai(_documents(path), path.name)
        if provider == "anthropic":
            return load_anthropic(_documents(path), path.name)
    except OSError as exc:
        raise ExportError(f"cannot read {path}: {exc}") from exc
    raise ExportError(f"unknown export format {provider!r}: one of {', '.join(PROVIDERS)}")


# --- the meter side -----------------------------------------------------------------------------


def meter_sql(database: str, providers: Sequence[str], first_day: date, last_day: date) -> str:
    """Read-only SQL over usage_daily for the bill's days and providers (names are canonical)."""
    names = ", ".join("'" + p.replace("\\", "\\\\").replace("'", "\\'") + "'" for p in sorted(set(providers)))
    return (
        "SELECT day, provider, model, sum(requests) AS requests, sum(input_tokens) AS input_tokens, "
        "sum(output_tokens) AS output_tokens, sum(cost_usd) AS cost_usd, sum(unpriced_requests) AS unpriced "
        f"FROM {database}.usage_daily WHERE day >= toDate('{first_day.isoformat()}') "
        f"AND day <= toDate('{last_day.isoformat()}') AND provider IN ({names}) "
        "GROUP BY day, provider, model HAVING requests != 0 ORDER BY day, provider, model"
    )


def meter_lines(rows: Iterable[Sequence[Any]]) -> list[MeterLine]:
    """Rows of `meter_sql` (native values, or the JSON of the service's SQL endpoint)."""
    lines = []
    for day, provider, model, requests, inp, out, cost, unpriced in rows:
        lines.append(MeterLine(
            day=day if isinstance(day, date) else date.fromisoformat(str(day)[:10]),
            provider=provider, model=model, cost_usd=Decimal(str(cost)), requests=int(requests),
            input_tokens=int(inp), output_tokens=int(out), unpriced_requests=int(unpriced),
        ))
    return lines


# --- comparing ----------------------------------------------------------------------------------


def _add(a: Any, b: Any) -> Any:
    if b is None:
        return a
    return b if a is None else a + b


def compare(
    bill: Sequence[BillLine],
    meter: Sequence[MeterLine],
    *,
    relative: Decimal = Decimal("0.01"),
    absolute: Decimal = Decimal("0.01"),
    min_tokens: int = 1000,
) -> Report:
    """Every (day, provider, model) either side has, with the reasons it is flagged, if any."""
    totals_only = {(b.day, b.provider) for b in bill if model_key(b.model) == _ALL_MODELS}
    lines: dict[tuple[date, str, str], Line] = {}

    def line(day: date, provider: str, key: str) -> Line:
        found = lines.get((day, provider, key))
        if found is None:
            found = lines[(day, provider, key)] = Line(day, provider, key)
        return found

    for b in bill:
        entry = line(b.day, b.provider, model_key(b.model))
        entry.bill_usd = _add(entry.bill_usd, b.cost_usd)
        entry.bill_input = _add(entry.bill_input, b.input_tokens)
        entry.bill_output = _add(entry.bill_output, b.output_tokens)
    for m in meter:
        key = _ALL_MODELS if (m.day, m.provider) in totals_only else model_key(m.model)
        entry = line(m.day, m.provider, key)
        entry.meter_usd = _add(entry.meter_usd, m.cost_usd)
        entry.meter_input = _add(entry.meter_input, m.input_tokens)
        entry.meter_output = _add(entry.meter_output, m.output_tokens)
        entry.meter_requests += m.requests
        entry.unpriced_requests += m.unpriced_requests

    billed_costs = any(b.cost_usd is not None for b in bill)
    for entry in lines.values():
        _judge(entry, relative, absolute, min_tokens, billed_costs)
    ordered = sorted(lines.values(), key=lambda e: (e.day, e.provider, e.model))
    days = [e.day for e in ordered]
    return Report(
        lines=ordered,
        bill_total_usd=sum((e.bill_usd or Decimal(0) for e in ordered), Decimal(0)),
        meter_total_usd=sum((e.meter_usd or Decimal(0) for e in ordered), Decimal(0)),
        relative=relative,
        absolute=absolute,
        first_day=min(days) if days else None,
        last_day=max(days) if days else None,
    )


def _judge(entry: Line, relative: Decimal, absolute: Decimal, min_tokens: int, billed_costs: bool) -> None:
    bill_tokens = (entry.bill_input or 0) + (entry.bill_output or 0)
    on_bill = entry.bill_usd is not None or entry.bill_input is not None or entry.bill_output is not None
    if not entry.meter_requests:  # on the bill only
        if abs(entry.bill_usd or 0) > absolute or bill_tokens > min_tokens:
            entry.reasons.append("on the bill, not metered")
        return
    if not on_bill:  # metered only
        meter_tokens = (entry.meter_input or 0) + (entry.meter_output or 0)
        if (billed_costs and (entry.meter_usd or 0) > absolute) or (not billed_costs and meter_tokens > min_tokens):
            entry.reasons.append("metered, not on the bill")
    if entry.bill_usd is not None:
        diff = abs(entry.diff_usd or 0)
        if diff > absolute and diff > relative * abs(entry.bill_usd):
            entry.reasons.append("cost differs")
    for side, billed, metered in (("input", entry.bill_input, entry.meter_input),
                                  ("output", entry.bill_output, entry.meter_output)):
        if billed is None:
            continue
        gap = abs((metered or 0) - billed)
        if gap > min_tokens and gap > relative * billed:
            entry.reasons.append(f"{side} tokens differ")
    if entry.unpriced_requests:
        entry.reasons.append(f"{entry.unpriced_requests} calls unpriced in the meter")


def _usd(value: Decimal | None) -> str:
    if value is None:
        return "-"
    return format(value.normalize(), "f") if value else "0"


def _tokens(billed: int | None, metered: int | None) -> str:
    if billed is None:
        return "-"
    return f"{billed}/{metered if metered is not None else 0}"


def format_report(report: Report, *, everything: bool = False) -> str:
    shown = report.lines if everything else report.flagged
    out = []
    pct = (report.relative * 100).normalize()
    out.append(f"threshold: more than {format(pct, 'f')}% and more than ${format(report.absolute.normalize(), 'f')}")
    if shown:
        rows = [("day", "provider", "model", "bill_usd", "meter_usd", "diff_usd", "diff_%", "in bill/meter",
                 "out bill/meter", "why")]
        for e in shown:
            pct_text = "-" if e.diff_pct is None else f"{e.diff_pct:+}"
            diff = e.diff_usd
            rows.append((e.day.isoformat(), e.provider, e.model or "(all models)", _usd(e.bill_usd), _usd(e.meter_usd),
                         "-" if diff is None else ("+" if diff > 0 else "") + _usd(diff), pct_text,
                         _tokens(e.bill_input, e.meter_input), _tokens(e.bill_output, e.meter_output),
                         "; ".join(e.reasons) or "ok"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        out.extend("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows)
    else:
        out.append("no day and model differs beyond the threshold")
    diff = report.meter_total_usd - report.bill_total_usd
    rel = "" if not report.bill_total_usd else f" ({(diff * 100 / report.bill_total_usd).quantize(Decimal('0.01')):+}%)"
    span = "" if report.first_day is None else f" {report.first_day} .. {report.last_day}"
    out.append("")
    out.append(f"totals{span}: bill ${_usd(report.bill_total_usd)}, meter ${_usd(report.meter_total_usd)}, "
               f"difference {'+' if diff > 0 else ''}${_usd(diff)}{rel}; "
               f"{len(report.flagged)} of {len(report.lines)} day/model lines flagged")
    return "\n".join(out)


def report_json(report: Report) -> dict[str, Any]:
    def num(value: Decimal | None) -> str | None:
        return None if value is None else format(value, "f")

    return {
        "relative": num(report.relative), "absolute_usd": num(report.absolute),
        "bill_total_usd": num(report.bill_total_usd), "meter_total_usd": num(report.meter_total_usd),
        "lines": [{
            "day": e.day.isoformat(), "provider": e.provider, "model": e.model, "bill_usd": num(e.bill_usd),
            "meter_usd": num(e.meter_usd), "diff_usd": num(e.diff_usd), "diff_pct": num(e.diff_pct),
            "bill_input_tokens": e.bill_input, "meter_input_tokens": e.meter_input,
            "bill_output_tokens": e.bill_output, "meter_output_tokens": e.meter_output,
            "unpriced_requests": e.unpriced_requests, "flagged": e.flagged, "reasons": e.reasons,
        } for e in report.lines],
    }
