-- Hourly rollup per user and nothing else, keyed by hour: the partial first and last days of a
-- period for the cost-overview panels about users, whose whole days come from usage_user_daily
-- (grafana/build_dashboards.py). About 1,000 rows an hour where usage_hourly, which also splits by
-- model, feature, service, provider and team, has 7,000 (and still answers when a filter is set).
-- Its view reads what usage_hourly's view writes, blocks already grouped by hour and user.
-- cost_usd sums priced calls only; unpriced calls are counted apart, never shown as $0.
CREATE TABLE IF NOT EXISTS {db}.usage_users_hourly
(
    hour                DateTime('UTC'),
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
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, user_id)
-- the writer re-sends a failed batch with its deduplication token (see 0010)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.usage_users_hourly_mv TO {db}.usage_users_hourly AS
SELECT
    h.hour AS hour,
    h.user_id AS user_id,
    sum(h.requests) AS requests,
    sum(h.input_tokens) AS input_tokens,
    sum(h.cache_read_tokens) AS cache_read_tokens,
    sum(h.cache_write_tokens) AS cache_write_tokens,
    sum(h.output_tokens) AS output_tokens,
    sum(h.reasoning_tokens) AS reasoning_tokens,
    sum(h.cost_usd) AS cost_usd,
    sum(h.unpriced_requests) AS unpriced_requests,
    sum(h.unpriced_tokens) AS unpriced_tokens
FROM {db}.usage_hourly AS h
GROUP BY hour, user_id;

-- Backfill from usage_hourly (see 0013 for the guard).
INSERT INTO {db}.usage_users_hourly
SELECT
    h.hour AS hour,
    h.user_id AS user_id,
    sum(h.requests) AS requests,
    sum(h.input_tokens) AS input_tokens,
    sum(h.cache_read_tokens) AS cache_read_tokens,
    sum(h.cache_write_tokens) AS cache_write_tokens,
    sum(h.output_tokens) AS output_tokens,
    sum(h.reasoning_tokens) AS reasoning_tokens,
    sum(h.cost_usd) AS cost_usd,
    sum(h.unpriced_requests) AS unpriced_requests,
    sum(h.unpriced_tokens) AS unpriced_tokens
FROM {db}.usage_hourly AS h
WHERE (SELECT count() FROM {db}.usage_users_hourly) = 0
GROUP BY hour, user_id;
