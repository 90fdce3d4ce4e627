-- Hourly rollup per user first, then session, model, feature and provider: everything the
-- user-detail dashboard shows but its list of calls (stats, cost over time, by model, by feature,
-- sessions and their count; grafana/build_dashboards.py). Keyed by user, so one user's panels read
-- that user's rows only: it replaces the by-user projection of usage_hourly (0011, dropped by
-- 0016), and the sessions panels no longer group the user's raw events (1.4 s for a user with
-- 1.6M calls in 30 days). A session adds rows only for the hours it spans.
-- An AggregatingMergeTree: sums, plus the first and last event time of each row's calls (min/max
-- over every row, cancelled ones included, as the events give them). Always read with
-- sum()/min()/max() and GROUP BY. cost_usd sums priced calls only; unpriced calls are counted
-- apart, never shown as $0.
CREATE TABLE IF NOT EXISTS {db}.usage_user_hourly
(
    user_id             String,
    hour                DateTime('UTC'),
    session_id          String,
    provider            LowCardinality(String),
    model               LowCardinality(String),
    feature             LowCardinality(String),
    first_event_time    SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_event_time     SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    requests            SimpleAggregateFunction(sum, Int64),
    input_tokens        SimpleAggregateFunction(sum, Int64),
    cache_read_tokens   SimpleAggregateFunction(sum, Int64),
    cache_write_tokens  SimpleAggregateFunction(sum, Int64),
    output_tokens       SimpleAggregateFunction(sum, Int64),
    reasoning_tokens    SimpleAggregateFunction(sum, Int64),
    cost_usd            SimpleAggregateFunction(sum, Decimal(38, 12)),
    unpriced_requests   SimpleAggregateFunction(sum, Int64),
    unpriced_tokens     SimpleAggregateFunction(sum, Int64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (user_id, hour, session_id, model, feature, provider)
-- the writer re-sends a failed batch with its deduplication token (see 0010)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.usage_user_hourly_mv TO {db}.usage_user_hourly AS
SELECT
    e.user_id AS user_id,
    toStartOfHour(e.event_time) AS hour,
    e.session_id AS session_id,
    e.provider AS provider,
    if(e.response_model != '', e.response_model, e.request_model) AS model,
    e.feature AS feature,
    min(e.event_time) AS first_event_time,
    max(e.event_time) AS last_event_time,
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
GROUP BY user_id, hour, session_id, provider, model, feature;

-- Backfill from the events already stored, sign-aware like the view (see 0013 for the guard).
INSERT INTO {db}.usage_user_hourly
SELECT
    e.user_id AS user_id,
    toStartOfHour(e.event_time) AS hour,
    e.session_id AS session_id,
    e.provider AS provider,
    if(e.response_model != '', e.response_model, e.request_model) AS model,
    e.feature AS feature,
    min(e.event_time) AS first_event_time,
    max(e.event_time) AS last_event_time,
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
WHERE (SELECT count() FROM {db}.usage_user_hourly) = 0
GROUP BY user_id, hour, session_id, provider, model, feature;
