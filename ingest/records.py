"""Plain data passed between the ingest's stages: decode -> normalize -> price -> store.

`Span` is what decode produces from OTLP; `UsageRecord` is one provider call's usage, the unit
that is priced and stored (one row of `spanmeter.usage_events`). No I/O, no behaviour beyond
small derived properties.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

AttrValue = str | bool | int | float | list[Any]


@dataclass(slots=True)
class Span:
    """One decoded OTLP span: ids as raw bytes, times in Unix nanoseconds."""

    trace_id: bytes  # 16 bytes
    span_id: bytes  # 8 bytes
    parent_span_id: bytes  # 8 bytes, or b"" for a root span
    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, AttrValue]
    resource: dict[str, AttrValue]  # shared by every span of one resource
    scope_name: str = ""
    kind: int = 0
    status_code: int = 0  # 0 unset, 1 ok, 2 error


@dataclass(slots=True)
class TokenUsage:
    """Token counts in the semantic conventions' inclusive meaning.

    `input` includes cache reads and cache writes; `output` includes reasoning. A count the
    source did not report is 0 here, and `UsageRecord.usage_status` says whether the whole
    usage was reported at all.
    """

    input: int = 0
    cache_read: int = 0
    cache_write: int = 0
    output: int = 0
    reasoning: int = 0

    @property
    def uncached_input(self) -> int:
        return max(self.input - self.cache_read - self.cache_write, 0)


@dataclass(slots=True)
class Attribution:
    """Who and what a call was for. Empty string means unknown."""

    user_id: str = ""
    session_id: str = ""
    conversation_id: str = ""
    feature: str = ""
    team: str = ""
    agent: str = ""

    def fill_from(self, other: Attribution) -> None:
        """Take every field this one lacks from `other` (an ancestor's attribution)."""
        # Spelled out rather than a loop over __slots__: the ingest calls this per span.
        if not self.user_id and other.user_id:
            self.user_id = other.user_id
        if not self.session_id and other.session_id:
            self.session_id = other.session_id
        if not self.conversation_id and other.conversation_id:
            self.conversation_id = other.conversation_id
        if not self.feature and other.feature:
            self.feature = other.feature
        if not self.team and other.team:
            self.team = other.team
        if not self.agent and other.agent:
            self.agent = other.agent

    def complete(self) -> bool:
        return bool(self.user_id and self.session_id and self.conversation_id and self.feature
                    and self.team and self.agent)


@dataclass(slots=True)
class UsageRecord:
    """One provider call's usage: a row of `spanmeter.usage_events` before and after pricing."""

    trace_id: bytes
    span_id: bytes
    event_time_ns: int
    service_name: str
    provider: str
    operation: str
    request_model: str
    response_model: str
    usage: TokenUsage
    attribution: Attribution = field(default_factory=Attribution)
    source: str = ""  # which normalizer produced it
    usage_status: str = "reported"  # reported | missing | incomplete | estimated
    streaming: bool = False
    duration_ms: int = 0
    response_id: str = ""
    reported_cost_usd: Decimal | None = None
    # Filled by the price stage.
    cost_usd: Decimal | None = None
    pricing_status: str = ""
    price_version: str = ""
    sign: int = 1
    parent_span_id: bytes = b""  # not stored: the writer's leaf rule across exports needs it

    @property
    def model(self) -> str:
        """The model a call is priced and grouped on: the response model when known."""
        return self.response_model or self.request_model
