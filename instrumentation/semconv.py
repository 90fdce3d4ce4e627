"""Attribute names spanmeter reads and writes, mirroring the OpenTelemetry GenAI semantic conventions.

Spec of record: https://github.com/open-telemetry/semantic-conventions-genai
(model/gen-ai/registry.yaml). Names that the conventions have deprecated, and the names other
instrumentations use, live only inside the ingest's normalizers, never here.

This module has no dependencies so that the app-side instrumentation and the ingest share it.
"""

# --- GenAI operation and model ---
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_ID = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_CONVERSATION_ID = "gen_ai.conversation.id"
GEN_AI_AGENT_NAME = "gen_ai.agent.name"
GEN_AI_AGENT_ID = "gen_ai.agent.id"

# --- Usage (inclusive meaning: input includes cache reads and writes, output includes reasoning) ---
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS = "gen_ai.usage.reasoning.output_tokens"

# --- Operation names (gen_ai.operation.name values) ---
OP_CHAT = "chat"
OP_GENERATE_CONTENT = "generate_content"
OP_TEXT_COMPLETION = "text_completion"
OP_EMBEDDINGS = "embeddings"
# Aggregate operations: their usage sums their children's and must never be counted.
AGGREGATE_OPERATIONS = frozenset({"invoke_agent", "create_agent", "invoke_workflow", "plan"})

# --- Provider names (gen_ai.provider.name values) ---
PROVIDER_OPENAI = "openai"
PROVIDER_ANTHROPIC = "anthropic"
PROVIDER_GCP_GEMINI = "gcp.gemini"
PROVIDER_GCP_VERTEX_AI = "gcp.vertex_ai"
PROVIDER_AZURE_OPENAI = "azure.ai.openai"

# --- Attribution (general semantic conventions) ---
USER_ID = "user.id"
ENDUSER_ID = "enduser.id"
SESSION_ID = "session.id"
SERVICE_NAME = "service.name"
SERVER_ADDRESS = "server.address"
ERROR_TYPE = "error.type"

# --- spanmeter's own keys (no convention exists for these) ---
SPANMETER_FEATURE = "spanmeter.feature"
SPANMETER_TEAM = "spanmeter.team"
SPANMETER_STREAMING = "spanmeter.streaming"
# "reported" | "missing" | "incomplete": whether the provider's usage reached the span.
SPANMETER_USAGE_STATUS = "spanmeter.usage_status"
SPANMETER_CAP_WARNING = "spanmeter.cap_warning"

USAGE_REPORTED = "reported"
USAGE_MISSING = "missing"
USAGE_INCOMPLETE = "incomplete"

# --- Added for the app-side instrumentation ---
SERVER_PORT = "server.port"
# OpenAI's service tier changes the price (flex, priority), so it travels with the usage.
OPENAI_REQUEST_SERVICE_TIER = "openai.request.service_tier"
OPENAI_RESPONSE_SERVICE_TIER = "openai.response.service_tier"
# Provider names for OpenAI-compatible hosts (the conventions' list where it has them).
PROVIDER_OPENROUTER = "openrouter"
PROVIDER_GROQ = "groq"
PROVIDER_DEEPSEEK = "deepseek"
PROVIDER_X_AI = "x_ai"
PROVIDER_MISTRAL_AI = "mistral_ai"
PROVIDER_PERPLEXITY = "perplexity"
PROVIDER_MOONSHOT_AI = "moonshot_ai"
