-- Hourly rollup summed over users, per service, provider, model, feature, team and price version:
-- what the cost-overview dashboard reads for its totals, time series, month to date and cached
-- input (grafana/build_dashboards.py). usage_hourly keeps user_id, so with thousands of users it
-- holds about one row per two events and a 30-day panel read millions of rows; without the user
-- this is a few hundred rows per hour (figures in bench/README.md).
-- cost_usd sums priced calls only; unpriced calls are counted apart, never shown as $0.
-- The cache columns feed "Savings from cached input", which prices each call's cache reads at the
-- rate of its price_version and tier: priced_cache_* count priced calls only, and tier_input_tokens
-- keeps a call's input tokens when they exceed 32000 (the lowest tier threshold of any rate in
-- genai-prices), so the tier of every such call stays known; below it every rate is at tier 0.
-- (A prices file with a lower threshold is handled by the panel, which then reads the events.)
CREATE TABLE IF NOT EXISTS {db}.usage_totals_hourly
(
    hour                       DateTime('UTC'),
    service_name               LowCardinality(String),
    provider                   LowCardinality(String),
    model                      LowCardinality(String),
    feature                    LowCardinality(String),
    team                       LowCardinality(String),
    price_version              LowCardinality(String),
    tier_input_tokens          UInt32,
    requests                   Int64,
    input_tokens               Int64,
    cache_read_tokens          Int64,
    cache_write_tokens         Int64,
    output_tokens              Int64,
    reasoning_tokens           Int64,
    cost_usd                   Decimal(38, 12),
    unpriced_requests          Int64,
    unpriced_tokens            Int64,
    priced_cache_requests      Int64,
    priced_cache_read_tokens   Int64,
    priced_cache_write_tokens  Int64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, model, feature, service_name, provider, team, price_version, tier_input_tokens)
-- the writer re-sends a failed batch with its deduplication token (see 0010)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.usage_totals_hourly_mv TO {db}.usage_totals_hourly AS
SELECT
    toStartOfHour(e.event_time) AS hour,
    e.service_name AS service_name,
    e.provider AS provider,
    if(e.response_model != '', e.response_model, e.request_model) AS model,
    e.feature AS feature,
    e.team AS team,
    e.price_version AS price_version,
    if(e.input_tokens > 32000 AND (e.cache_read_tokens > 0 OR e.cache_write_tokens > 0), e.input_tokens, 0)
        AS tier_input_tokens,
    sum(toInt64(e.sign)) AS requests,
    sum(toInt64(e.input_tokens) * e.sign) AS input_tokens,
    sum(toInt64(e.cache_read_tokens) * e.sign) AS cache_read_tokens,
    sum(toInt64(e.cache_write_tokens) * e.sign) AS cache_write_tokens,
    sum(toInt64(e.output_tokens) * e.sign) AS output_tokens,
    sum(toInt64(e.reasoning_tokens) * e.sign) AS reasoning_tokens,
    sum(toDecimal128(ifNull(e.cost_usd, toDecimal64(0, 12)), 12) * e.sign) AS cost_usd,
    sum(if(e.cost_usd IS NULL, toInt64(e.sign), 0)) AS unpriced_requests,
    sum(if(e.cost_usd IS NULL, (toInt64(e.input_tokens) + e.output_tokens) * e.sign, 0)) AS unpriced_tokens,
    sum(if(e.cost_usd IS NOT NULL AND (e.cache_read_tokens > 0 OR e.cache_write_tokens > 0), toInt64(e.sign), 0))
        AS priced_cache_requests,
    sum(if(e.cost_usd IS NOT NULL, toInt64(e.cache_read_tokens) * e.sign, 0)) AS priced_cache_read_tokens,
    sum(if(e.cost_usd IS NOT NULL, toInt64(e.cache_write_tokens) * e.sign, 0)) AS priced_cache_write_tokens
FROM {db}.usage_events AS e
GROUP BY hour, service_name, provider, model, feature, team, price_version, tier_input_tokens;

-- Backfill from the events already stored (the view sees only new inserts), sign-aware like the
-- view. Migrations run before the ingest writes (spanmeter serve migrates at start; the compose
-- migrate job runs first); the guard keeps a re-run of an interrupted migration from adding twice.
INSERT INTO {db}.usage_totals_hourly
SELECT
    toStartOfHour(e.event_time) AS hour,
    e.service_name AS service_name,
    e.provider AS provider,
    if(e.response_model != '', e.response_model, e.request_model) AS model,
    e.feature AS feature,
    e.team AS team,
    e.price_version AS price_version,
    if(e.input_tokens > 32000 AND (e.cache_read_tokens > 0 OR e.cache_write_tokens > 0), e.input_tokens, 0)
        AS tier_input_tokens,
    sum(toInt64(e.sign)) AS requests,
    sum(toInt64(e.input_tokens) * e.sign) AS input_tokens,
    sum(toInt64(e.cache_read_tokens) * e.sign) AS cache_read_tokens,
    sum(toInt64(e.cache_write_tokens) * e.sign) AS cache_write_tokens,
    sum(toInt64(e.output_tokens) * e.sign) AS output_tokens,
    sum(toInt64(e.reasoning_tokens) * e.sign) AS reasoning_tokens,
    sum(toDecimal128(ifNull(e.cost_usd, toDecimal64(0, 12)), 12) * e.sign) AS cost_usd,
    sum(if(e.cost_usd IS NULL, toInt64(e.sign), 0)) AS unpriced_requests,
    sum(if(e.cost_usd IS NULL, (toInt64(e.input_tokens) + e.output_tokens) * e.sign, 0)) AS unpriced_tokens,
    sum(if(e.cost_usd IS NOT NULL AND (e.cache_read_tokens > 0 OR e.cache_write_tokens > 0), toInt64(e.sign), 0))
        AS priced_cache_requests,
    sum(if(e.cost_usd IS NOT NULL, toInt64(e.cache_read_tokens) * e.sign, 0)) AS priced_cache_read_tokens,
    sum(if(e.cost_usd IS NOT NULL, toInt64(e.cache_write_tokens) * e.sign, 0)) AS priced_cache_write_tokens
FROM {db}.usage_events AS e
WHERE (SELECT count() FROM {db}.usage_totals_hourly) = 0
GROUP BY hour, service_name, provider, model, feature, team, price_version, tier_input_tokens;
