-- Hourly rollup per user, service, provider, model, feature and team.
-- cost_usd sums priced calls only; unpriced calls are counted apart so they are never shown as $0.
CREATE TABLE IF NOT EXISTS {db}.usage_hourly
(
    hour                DateTime('UTC'),
    user_id             String,
    service_name        LowCardinality(String),
    provider            LowCardinality(String),
    model               LowCardinality(String),
    feature             LowCardinality(String),
    team                LowCardinality(String),
    requests            Int64,
    input_tokens        Int64,
    cache_read_tokens   Int64,
    cache_write_tokens  Int64,
    output_tokens       Int64,
    reasoning_tokens    Int64,
    cost_usd            Decimal(38, 12),
    unpriced_requests   Int64,
    unpriced_tokens     Int64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, user_id, model, feature, service_name, provider, team);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.usage_hourly_mv TO {db}.usage_hourly AS
SELECT
    toStartOfHour(e.event_time) AS hour,
    e.user_id AS user_id,
    e.service_name AS service_name,
    e.provider AS provider,
    if(e.response_model != '', e.response_model, e.request_model) AS model,
    e.feature AS feature,
    e.team AS team,
    sum(toInt64(e.sign)) AS requests,
    sum(toInt64(e.input_tokens) * e.sign) AS input_tokens,
    sum(toInt64(e.cache_read_tokens) * e.sign) AS cache_read_tokens,
    sum(toInt64(e.cache_write_tokens) * e.sign) AS cache_write_tokens,
    sum(toInt64(e.output_tokens) * e.sign) AS output_tokens,
    sum(toInt64(e.reasoning_tokens) * e.sign) AS reasoning_tokens,
    sum(toDecimal128(ifNull(e.cost_usd, toDecimal64(0, 12)), 12) * e.sign) AS cost_usd,
    sum(if(e.cost_usd IS NULL, toInt64(e.sign), 0)) AS unpriced_requests,
    sum(if(e.cost_usd IS NULL, (toInt64(e.input_tokens) + e.output_tokens) * e.sign, 0)) AS unpriced_tokens
FROM {db}.usage_events AS e
GROUP BY hour, user_id, service_name, provider, model, feature, team;
