"""Normalizer for the Vercel AI SDK's telemetry (`experimental_telemetry: { isEnabled: true }`).

Legacy span tree: `ai.generateText` / `ai.streamText` / `ai.generateObject` / `ai.streamObject` /
`ai.embed` / `ai.embedMany` are roots whose ai.usage.* sums every step (aggregate, never counted);
`ai.*.doGenerate` / `doStream` / `doEmbed` are the provider calls. Keys: ai.usage.{inputTokens,
outputTokens} (v5+) or {promptTokens, completionTokens} (v4), ai.usage.tokens (embeddings),
ai.usage.inputTokenDetails.{cacheReadTokens,cacheWriteTokens} and
ai.usage.outputTokenDetails.reasoningTokens (v6+), ai.usage.cachedInputTokens and
ai.usage.reasoningTokens (v5), ai.model.id, ai.model.provider ("openai.chat", "anthropic.messages"),
ai.response.model, ai.telemetry.metadata.* (user, session), ai.telemetry.functionId.

v5 passes Anthropic's exclusive input count through (v6 made it inclusive): a v5-shaped Anthropic
span (cachedInputTokens, no inputTokenDetails) is marked exclusive. v7's invoke_agent/chat spans
are current semantic conventions, read by the semconv normalizer; this one still adds the
ai.telemetry.metadata attribution they carry.
"""

from __future__ import annotations

from ..records import Span
from .base import Claim, Extracted, canonical_provider, text, token_count

NAME = "vercel"
_ROOTS = {"ai.generateText", "ai.streamText", "ai.generateObject", "ai.streamObject", "ai.embed", "ai.embedMany"}
_META = "ai.telemetry.metadata."
_PROVIDERS = {
    "google": "gcp.gemini",
    "google-vertex": "gcp.vertex_ai",
    "vertex": "gcp.vertex_ai",
    "amazon-bedrock": "aws.bedrock",
    "bedrock": "aws.bedrock",
    "azure": "azure.ai.openai",
    "azure-openai": "azure.ai.openai",
    "mistral": "mistral_ai",
    "xai": "x_ai",
}


CLAIM = Claim(keys=frozenset({"ai.operationId"}), name_prefixes=("ai.",), key_prefixes=(_META,))
_ours = CLAIM


def extract(span: Span) -> Extracted | None:
    if not _ours(span):
        return None
    a = span.attributes
    operation_id = str(a.get("ai.operationId") or span.name)
    provider = _provider(text(a, ("ai.model.provider",)))
    v5_shape = "ai.usage.cachedInputTokens" in a and not any(k.startswith("ai.usage.inputTokenDetails.") for k in a)
    embed = operation_id.startswith("ai.embed")
    return Extracted(
        provider=provider,
        operation="embeddings" if embed else ("chat" if operation_id.endswith((".doGenerate", ".doStream")) else None),
        request_model=text(a, ("ai.model.id",)),
        response_model=text(a, ("ai.response.model",)),
        input=token_count(a, ("ai.usage.inputTokens", "ai.usage.promptTokens", "ai.usage.tokens")),
        output=token_count(a, ("ai.usage.outputTokens", "ai.usage.completionTokens")),
        cache_read=token_count(a, ("ai.usage.inputTokenDetails.cacheReadTokens", "ai.usage.cachedInputTokens")),
        cache_write=token_count(a, ("ai.usage.inputTokenDetails.cacheWriteTokens",)),
        reasoning=token_count(a, ("ai.usage.outputTokenDetails.reasoningTokens", "ai.usage.reasoningTokens")),
        input_excludes_cache=True if v5_shape and provider == "anthropic" else None,
        aggregate=True if operation_id in _ROOTS else None,
        response_id=text(a, ("ai.response.id",)),
        streaming=True if operation_id.endswith(".doStream") or operation_id == "ai.streamText" else None,
        user_id=text(a, tuple(_META + k for k in ("userId", "user_id", "user", "endUserId", "customerId"))),
        session_id=text(a, tuple(_META + k for k in ("sessionId", "session_id", "threadId"))),
        feature=text(a, (_META + "feature",)),
        team=text(a, (_META + "team", _META + "teamId")),
        agent=text(a, ("ai.telemetry.functionId",)),
    )


def _provider(value: str | None) -> str | None:
    """"openai.chat" -> openai, "anthropic.messages" -> anthropic, "amazon-bedrock" -> aws.bedrock."""
    if not value:
        return None
    head = value.split(".", 1)[0].lower()
    return _PROVIDERS.get(head) or canonical_provider(head)
