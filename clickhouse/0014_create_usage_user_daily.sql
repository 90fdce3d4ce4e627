-- Daily rollup per user and nothing else: the population of the cost-overview panels about users
-- (active users, cost per user, the spend distribution and bands, heavy users) and the user
-- picker, about one row per active user and day. usage_daily, which also splits by model,
-- feature, service, provider and team, answers the same panels when a dashboard filter is set.
-- cost_usd sums priced calls only; unpriced calls are counted apart, never shown as $0.
CREATE TABLE IF NOT EXISTS {db}.usage_user_daily
(
    day                 Date,
    user_id             String,
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
PARTITION BY toYYYYMM(day)
ORDER BY (day, user_id)
-- the writer re-sends a failed batch with its deduplication token (see 0010)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.usage_user_daily_mv TO {db}.usage_user_daily AS
SELECT
    toDate(e.event_time) AS day,
    e.user_id AS user_id,
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
GROUP BY day, user_id;

-- Backfill from the events already stored, sign-aware like the view (see 0013 for the guard).
INSERT INTO {db}.usage_user_daily
SELECT
    toDate(e.event_time) AS day,
    e.user_id AS user_id,
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
WHERE (SELECT count() FROM {db}.usage_user_daily) = 0
GROUP BY day, user_id;
