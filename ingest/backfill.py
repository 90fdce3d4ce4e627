"""Backfill: usage rows from historical chat logs, for the time before spans were metered.

    counter = TokenCounter()
    for offset, conversation in read_log("conversations.jsonl"):
        records = conversation_records(conversation, counter, stats)   # priced and stored later

The log is JSON Lines, one conversation per line (a MongoDB export in relaxed or canonical JSON
works as is: `{"$oid": ...}` ids and `{"$date": ...}` times are understood):

    {"conversation_id": "c-1", "user_id": "u-42", "model": "gpt-4o", "provider": "openai",
     "created_at": "2025-03-01T10:00:00Z",
     "messages": [
       {"role": "system", "content": "You review LaTeX papers."},
       {"role": "user", "content": "Check section 2", "timestamp": "2025-03-01T10:00:05Z"},
       {"role": "assistant", "content": "Section 2 ...", "timestamp": "2025-03-01T10:00:09Z",
        "model": "gpt-4o-2024-08-06",
        "usage": {"prompt_tokens": 1234, "completion_tokens": 321}}]}

Field names also accepted: `_id`/`id` (conversation), `user`/`userId`, `model_slug` (PaperDebugger),
`updated_at`, `openai_chat_history_completion` for `messages`, and `branches` (a list of
`{"id", "messages" | "openai_chat_history_completion"}`: message edits, each branch replaying the
shared beginning of the conversation). Message times: `timestamp`, `created_at`, `time`; content:
a string or a list of `{"type": "text", "text": ...}` parts.

Each assistant message is one provider call. Its input is every message before it, its output
the message itself. Where the message carries `usage` (OpenAI chat or Responses, Anthropic, Gemini
`usageMetadata`, or spanmeter's own `input_tokens/cache_read_tokens/...`) those counts are used
(`usage_status = 'reported'`); otherwise the tokens are counted offline (`tokens.TokenCounter`)
and the row is `usage_status = 'estimated'`. A call with no time of its own takes the
conversation's time plus its position in milliseconds.

Ids are derived from the conversation id and the call's position (or message id), so re-running a
backfill inserts nothing twice: the writer's exactly-once keys see the same (trace_id, span_id).
A position shared by branches (the replayed beginning) is one call, counted once. Message content
is read to count tokens and dropped: no text reaches a record, a request or the store.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from .price import canonical_provider
from .records import Attribution, TokenUsage, UsageRecord
from .tokens import TokenCounter

__all__ = [
    "ESTIMATED",
    "SOURCE",
    "BackfillStats",
    "conversation_records",
    "read_log",
    "record_from_json",
    "record_to_json",
    "reported_usage",
]

ESTIMATED = "estimated"  # usage_status of rows whose tokens were counted here, not reported
REPORTED = "reported"
SOURCE = "backfill"
_ID_DOMAIN = b"spanmeter-backfill\0"


@dataclass(slots=True)
class BackfillStats:
    conversations: int = 0
    calls: int = 0
    reported: int = 0
    estimated: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> conversations
    uncounted_parts: int = 0  # non-text parts (images, files) an estimate could not count

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


# --- reading ----------------------------------------------------------------------------------


def read_log(path: str | Path) -> Iterator[tuple[int, int, Any]]:
    """(line number, bytes read so far, parsed line or an Exception) for each non-blank line."""
    with open(path, "rb") as handle:
        done = 0
        for number, line in enumerate(handle, 1):
            done += len(line)
            if not line.strip():
                continue
            try:
                yield number, done, json.loads(line, parse_float=Decimal)
            except ValueError as exc:
                yield number, done, exc


def _unwrap(value: Any) -> Any:
    """MongoDB extended JSON to plain values: {"$oid": x} -> x, {"$date": ...} -> the date."""
    if isinstance(value, Mapping) and len(value) == 1:
        (key, inner), = value.items()
        if key in ("$oid", "$numberLong", "$numberInt", "$numberDecimal", "$date", "$uuid"):
            return _unwrap(inner)
    return value


def _first(obj: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        value = obj.get(key)
        if value is not None and value != "":
            return _unwrap(value)
    return None


def _time_ns(value: Any) -> int | None:
    value = _unwrap(value)
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float | Decimal):
        number = Decimal(value)
        # Seconds, milliseconds or nanoseconds since the epoch, told apart by size.
        if number > 10**17:
            return int(number)
        if number > 10**11:
            return int(number * 10**6)
        return int(number * 10**9)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return _time_ns(int(text))
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return int(parsed.timestamp()) * 10**9 + parsed.microsecond * 1000
    return None


def _provider_for(model: str) -> str:
    name = model.lower().rsplit("/", 1)[-1]
    if name.startswith(("gpt-", "o1", "o3", "o4", "chatgpt", "text-embedding", "davinci", "babbage")):
        return "openai"
    if name.startswith("claude"):
        return "anthropic"
    if name.startswith("gemini"):
        return "gcp.gemini"
    return ""


def _int(value: Any) -> int:
    value = _unwrap(value)
    try:
        return max(int(value), 0) if value is not None and not isinstance(value, bool) else 0
    except (TypeError, ValueError):
        return 0


def reported_usage(usage: Any, provider: str = "") -> TokenUsage | None:
    """Token counts from a provider's usage object, in the inclusive meaning; None if it has none."""
    if not isinstance(usage, Mapping):
        return None
    u = usage
    if "prompt_tokens" in u or "completion_tokens" in u:  # OpenAI chat completions
        details = u.get("prompt_tokens_details") or {}
        out_details = u.get("completion_tokens_details") or {}
        inp, out = _int(u.get("prompt_tokens")), _int(u.get("completion_tokens"))
        cache_read, cache_write, reasoning = _int(details.get("cached_tokens")), 0, _int(out_details.get("reasoning_tokens"))
    elif "promptTokenCount" in u or "prompt_token_count" in u:  # Gemini: thoughts are billed as output
        inp = _int(_first(u, "promptTokenCount", "prompt_token_count"))
        cache_read = _int(_first(u, "cachedContentTokenCount", "cached_content_token_count"))
        reasoning = _int(_first(u, "thoughtsTokenCount", "thoughts_token_count"))
        out = _int(_first(u, "candidatesTokenCount", "candidates_token_count")) + reasoning
        cache_write = 0
    elif "input_tokens" in u or "output_tokens" in u:
        inp, out = _int(u.get("input_tokens")), _int(u.get("output_tokens"))
        anthropic_keys = "cache_read_input_tokens" in u or "cache_creation_input_tokens" in u
        if anthropic_keys or canonical_provider(provider) == "anthropic":
            # Anthropic's input_tokens leaves out cache reads and writes.
            cache_read = _int(u.get("cache_read_input_tokens"))
            cache_write = _int(u.get("cache_creation_input_tokens"))
            inp += cache_read + cache_write
            reasoning = 0
        else:  # OpenAI Responses, or spanmeter's own names: inclusive already
            details = u.get("input_tokens_details") or {}
            out_details = u.get("output_tokens_details") or {}
            cache_read = _int(details.get("cached_tokens") or u.get("cache_read_tokens"))
            cache_write = _int(u.get("cache_write_tokens"))
            reasoning = _int(out_details.get("reasoning_tokens") or u.get("reasoning_tokens"))
    else:
        return None
    return TokenUsage(input=inp, cache_read=cache_read, cache_write=cache_write, output=max(out, reasoning),
                      reasoning=reasoning)


def _branches(conversation: Mapping[str, Any]) -> list[tuple[str, list[Mapping[str, Any]]]]:
    branches = conversation.get("branches")
    found: list[tuple[str, list[Mapping[str, Any]]]] = []
    if isinstance(branches, list) and branches:
        for position, branch in enumerate(branches):
            if not isinstance(branch, Mapping):
                continue
            messages = _first(branch, "messages", "openai_chat_history_completion")
            if isinstance(messages, list):
                found.append((str(_first(branch, "id", "_id") or position), messages))
        if found:
            return found
    messages = _first(conversation, "messages", "openai_chat_history_completion")
    return [("", messages)] if isinstance(messages, list) else []


def _fingerprint(previous: bytes, message: Mapping[str, Any]) -> bytes:
    """A running hash of a branch's messages so far (kept in memory only): equal prefixes of two
    branches are the same calls."""
    body = json.dumps([message.get("role"), message.get("content"), message.get("tool_calls")],
                      sort_keys=True, default=str).encode()
    return hashlib.sha256(previous + body).digest()


def conversation_records(
    conversation: Any,
    counter: TokenCounter,
    stats: BackfillStats,
    *,
    service: str = SOURCE,
    feature: str = "",
) -> list[UsageRecord]:
    """Usage records (unpriced) for each assistant message of one logged conversation."""
    if not isinstance(conversation, Mapping):
        stats.skip("not a JSON object")
        return []
    conversation_id = _first(conversation, "conversation_id", "_id", "id", "conversationId")
    if conversation_id is None:
        stats.skip("no conversation id")
        return []
    conversation_id = str(conversation_id)
    user = _first(conversation, "user_id", "userId", "user")
    if isinstance(user, Mapping):
        user = _first(user, "id", "_id", "user_id")
    model = str(_first(conversation, "model", "model_slug", "language_model") or "")
    provider = canonical_provider(str(_first(conversation, "provider") or "")) or _provider_for(model)
    start_ns = _time_ns(_first(conversation, "created_at", "createdAt", "timestamp", "updated_at", "updatedAt"))
    branches = _branches(conversation)
    if not branches:
        stats.skip("no messages")
        return []
    stats.conversations += 1
    trace_id = hashlib.sha256(_ID_DOMAIN + conversation_id.encode()).digest()[:16]
    records: list[UsageRecord] = []
    seen_prefixes: dict[bytes, str] = {}
    seen_keys: set[str] = set()
    for branch_id, messages in branches:
        prefix = b""
        for position, message in enumerate(messages):
            if not isinstance(message, Mapping):
                continue
            prefix = _fingerprint(prefix, message)
            if message.get("role") != "assistant":
                continue
            message_id = _first(message, "id", "messageId", "message_id")
            if message_id is not None:
                key = f"m:{message_id}"
            else:
                # The first branch to reach this exact history names the call: branches replaying
                # it name the same call.
                key = seen_prefixes.setdefault(prefix, f"p:{branch_id}:{position}")
            if key in seen_keys:
                continue
            seen_keys.add(key)
            record = _call(message, messages[:position], model, provider, counter, stats)
            if record is None:
                continue
            when = _time_ns(_first(message, "timestamp", "created_at", "createdAt", "time"))
            if when is None:
                if start_ns is None:
                    stats.skip("no time")
                    continue
                when = start_ns + position * 1_000_000
            record.trace_id = trace_id
            record.span_id = hashlib.sha256(_ID_DOMAIN + conversation_id.encode() + b"\0" + key.encode()).digest()[:8]
            record.event_time_ns = when
            record.service_name = service
            record.attribution = Attribution(
                user_id=str(user or ""),
                session_id=str(_first(conversation, "session_id", "sessionId") or ""),
                conversation_id=conversation_id,
                feature=feature,
            )
            records.append(record)
    stats.calls += len(records)
    return records


def _call(
    message: Mapping[str, Any],
    history: list[Any],
    model: str,
    provider: str,
    counter: TokenCounter,
    stats: BackfillStats,
) -> UsageRecord | None:
    response_model = str(_first(message, "model") or "")
    call_model = response_model or model
    call_provider = canonical_provider(str(_first(message, "provider") or "")) or provider or _provider_for(call_model)
    usage = reported_usage(_first(message, "usage", "token_usage", "usage_metadata", "usageMetadata"), call_provider)
    if usage is not None:
        status = REPORTED
        stats.reported += 1
    else:
        if not call_model:
            stats.skip("no model to count tokens for")
            return None
        before = counter.uncounted_parts
        inputs = [m for m in history if isinstance(m, Mapping)]
        usage = TokenUsage(
            input=counter.count_messages(call_model, inputs),
            output=counter.count_message(call_model, {"content": message.get("content"),
                                                      "tool_calls": message.get("tool_calls")}),
        )
        stats.uncounted_parts += counter.uncounted_parts - before
        status = ESTIMATED
        stats.estimated += 1
    return UsageRecord(
        trace_id=b"",
        span_id=b"",
        event_time_ns=0,
        service_name="",
        provider=call_provider,
        operation="chat",
        request_model=model or response_model,
        response_model=response_model,
        usage=usage,
        source=SOURCE,
        usage_status=status,
    )


# --- the wire form between the CLI and the service ----------------------------------------------

_RECORD_KEYS = ("provider", "operation", "request_model", "response_model", "service_name", "source", "usage_status")


def record_to_json(record: UsageRecord) -> dict[str, Any]:
    """A backfill record as JSON for POST /v1/admin/backfill: counts and ids, never content."""
    a, u = record.attribution, record.usage
    body = {key: getattr(record, key) for key in _RECORD_KEYS}
    body.update({
        "trace_id": record.trace_id.hex(), "span_id": record.span_id.hex(), "event_time_ns": record.event_time_ns,
        "user_id": a.user_id, "session_id": a.session_id, "conversation_id": a.conversation_id,
        "feature": a.feature, "input": u.input, "cache_read": u.cache_read, "cache_write": u.cache_write,
        "output": u.output, "reasoning": u.reasoning,
    })
    return body


def record_from_json(body: Mapping[str, Any]) -> UsageRecord:
    """The inverse of `record_to_json`; raises ValueError on a malformed record."""
    try:
        trace_id, span_id = bytes.fromhex(body["trace_id"]), bytes.fromhex(body["span_id"])
        if len(trace_id) != 16 or len(span_id) != 8:
            raise ValueError("trace_id must be 16 bytes and span_id 8, in hex")
        counts = [int(body.get(name) or 0) for name in ("input", "cache_read", "cache_write", "output", "reasoning")]
        if any(c < 0 or c >= 2**32 for c in counts):
            raise ValueError("token counts must be 0 <= n < 2**32")
        status = str(body.get("usage_status") or REPORTED)
        if status not in (REPORTED, ESTIMATED):
            raise ValueError(f"usage_status must be {REPORTED!r} or {ESTIMATED!r}")
        return UsageRecord(
            trace_id=trace_id,
            span_id=span_id,
            event_time_ns=int(body["event_time_ns"]),
            service_name=str(body.get("service_name") or SOURCE),
            provider=canonical_provider(str(body.get("provider") or "")),
            operation=str(body.get("operation") or "chat"),
            request_model=str(body.get("request_model") or ""),
            response_model=str(body.get("response_model") or ""),
            usage=TokenUsage(*counts),
            attribution=Attribution(
                user_id=str(body.get("user_id") or ""),
                session_id=str(body.get("session_id") or ""),
                conversation_id=str(body.get("conversation_id") or ""),
                feature=str(body.get("feature") or ""),
            ),
            source=SOURCE,
            usage_status=status,
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed backfill record: {exc!r}") from exc
