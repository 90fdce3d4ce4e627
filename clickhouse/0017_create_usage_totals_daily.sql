-- Daily rollup summed over users: usage_totals_hourly (0013) by day, about 1,300 rows a day instead
-- of 1,300 an hour. The cost-overview panels that sum a period read its whole days here and only
-- the period's partial first and last days from usage_totals_hourly (grafana/build_dashboards.py);
-- the time series keep the hourly rollup.
-- Its view reads what the hourly rollup's view writes, blocks already grouped by hour, so an
-- insert costs it a few hundred rows, not one per event.
-- cost_usd sums priced calls only; unpriced calls are counted apart, never shown as $0.
CREATE TABLE IF NOT EXISTS {db}.usage_totals_daily
(
    day                        Date,
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
PARTITION BY toYYYYMM(day)
ORDER BY (day, model, feature, service_name, provider, team, price_version, tier_input_tokens)
-- the writer re-sends a failed batch with its deduplication token (see 0010)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.usage_totals_daily_mv TO {db}.usage_totals_daily AS
SELECT
    toDate(h.hour) AS day,
    h.service_name AS service_name,
    h.provider AS provider,
    h.model AS model,
    h.feature AS feature,
    h.team AS team,
    h.price_version AS price_version,
    h.tier_input_tokens AS tier_input_tokens,
    sum(h.requests) AS requests,
    sum(h.input_tokens) AS input_tokens,
    sum(h.cache_read_tokens) AS cache_read_tokens,
    sum(h.cache_write_tokens) AS cache_write_tokens,
    sum(h.output_tokens) AS output_tokens,
    sum(h.reasoning_tokens) AS reasoning_tokens,
    sum(h.cost_usd) AS cost_usd,
    sum(h.unpriced_requests) AS unpriced_requests,
    sum(h.unpriced_tokens) AS unpriced_tokens,
    sum(h.priced_cache_requests) AS priced_cache_requests,
    sum(h.priced_cache_read_tokens) AS priced_cache_read_tokens,
    sum(h.priced_cache_write_tokens) AS priced_cache_write_tokens
FROM {db}.usage_totals_hourly AS h
GROUP BY day, service_name, provider, model, feature, team, price_version, tier_input_tokens;

-- Backfill from the hourly rollup (itself backfilled from the events by 0013; see 0013 for the guard).
INSERT INTO {db}.usage_totals_daily
SELECT
    toDate(h.hour) AS day,
    h.service_name AS service_name,
    h.provider AS provider,
    h.model AS model,
    h.feature AS feature,
    h.team AS team,
    h.price_version AS price_version,
    h.tier_input_tokens AS tier_input_tokens,
    sum(h.requests) AS requests,
    sum(h.input_tokens) AS input_tokens,
    sum(h.cache_read_tokens) AS cache_read_tokens,
    sum(h.cache_write_tokens) AS cache_write_tokens,
    sum(h.output_tokens) AS output_tokens,
    sum(h.reasoning_tokens) AS reasoning_tokens,
    sum(h.cost_usd) AS cost_usd,
    sum(h.unpriced_requests) AS unpriced_requests,
    sum(h.unpriced_tokens) AS unpriced_tokens,
    sum(h.priced_cache_requests) AS priced_cache_requests,
    sum(h.priced_cache_read_tokens) AS priced_cache_read_tokens,
    sum(h.priced_cache_write_tokens) AS priced_cache_write_tokens
FROM {db}.usage_totals_hourly AS h
WHERE (SELECT count() FROM {db}.usage_totals_daily) = 0
GROUP BY day, service_name, provider, model, feature, team, price_version, tier_input_tokens;
