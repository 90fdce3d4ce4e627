-- One row per provider call (the leaf span that carried its usage).
-- Token columns have the GenAI semantic conventions' inclusive meaning:
--   input_tokens includes cache_read_tokens and cache_write_tokens; output_tokens includes reasoning_tokens.
-- Money is exact Decimal, NULL when the call could not be priced (pricing_status says why), never 0.
-- sign is +1 for a fact, -1 for a row that cancels an earlier one (repricing, corrections):
-- every aggregate multiplies by sign, so history stays visible and totals stay exact.
CREATE TABLE IF NOT EXISTS {db}.usage_events
(
    event_time          DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    trace_id            FixedString(16),
    span_id             FixedString(8),
    sign                Int8 DEFAULT 1,
    service_name        LowCardinality(String),
    user_id             String CODEC(ZSTD(1)),
    session_id          String CODEC(ZSTD(1)),
    conversation_id     String CODEC(ZSTD(1)),
    feature             LowCardinality(String),
    team                LowCardinality(String),
    agent               LowCardinality(String),
    provider            LowCardinality(String),
    operation           LowCardinality(String),
    request_model       LowCardinality(String),
    response_model      LowCardinality(String),
    input_tokens        UInt32 CODEC(T64, ZSTD(1)),
    cache_read_tokens   UInt32 CODEC(T64, ZSTD(1)),
    cache_write_tokens  UInt32 CODEC(T64, ZSTD(1)),
    output_tokens       UInt32 CODEC(T64, ZSTD(1)),
    reasoning_tokens    UInt32 CODEC(T64, ZSTD(1)),
    usage_status        LowCardinality(String),
    cost_usd            Nullable(Decimal(18, 12)) CODEC(ZSTD(1)),
    pricing_status      LowCardinality(String),
    price_version       LowCardinality(String),
    reported_cost_usd   Nullable(Decimal(18, 12)) CODEC(ZSTD(1)),
    streaming           Bool,
    duration_ms         UInt32 CODEC(T64, ZSTD(1)),
    source              LowCardinality(String),
    inserted_at         DateTime('UTC') DEFAULT now() CODEC(Delta, ZSTD(1)),
    INDEX idx_trace trace_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (user_id, event_time, span_id);
