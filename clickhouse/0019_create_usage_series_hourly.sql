-- The cost-overview time series (cost by model, feature, service and team) when no dashboard
-- filter is set: one row per hour, dimension and value (model, feature, service or team), about 25
-- rows an hour where usage_totals_hourly, which keeps every combination of the four so that any
-- filter can apply, has 1,300 (figures in bench/README.md). With a filter set, the panels read
-- usage_totals_hourly. Its view reads what usage_totals_hourly's view writes: an insert costs it a
-- few hundred rows.
-- cost_usd sums priced calls only; unpriced calls are counted apart, never shown as $0.
CREATE TABLE IF NOT EXISTS {db}.usage_series_hourly
(
    dimension           LowCardinality(String),
    hour                DateTime('UTC'),
    value               LowCardinality(String),
    requests            Int64,
    cost_usd            Decimal(38, 12),
    unpriced_requests   Int64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (dimension, hour, value)
-- the writer re-sends a failed batch with its deduplication token (see 0010)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.usage_series_hourly_mv TO {db}.usage_series_hourly AS
SELECT
    d.1 AS dimension,
    h.hour AS hour,
    d.2 AS value,
    sum(h.requests) AS requests,
    sum(h.cost_usd) AS cost_usd,
    sum(h.unpriced_requests) AS unpriced_requests
FROM {db}.usage_totals_hourly AS h
ARRAY JOIN [('model', h.model), ('feature', h.feature), ('service', h.service_name), ('team', h.team)] AS d
GROUP BY dimension, hour, value;

-- Backfill from usage_totals_hourly (see 0013 for the guard).
INSERT INTO {db}.usage_series_hourly
SELECT
    d.1 AS dimension,
    h.hour AS hour,
    d.2 AS value,
    sum(h.requests) AS requests,
    sum(h.cost_usd) AS cost_usd,
    sum(h.unpriced_requests) AS unpriced_requests
FROM {db}.usage_totals_hourly AS h
ARRAY JOIN [('model', h.model), ('feature', h.feature), ('service', h.service_name), ('team', h.team)] AS d
WHERE (SELECT count() FROM {db}.usage_series_hourly) = 0
GROUP BY dimension, hour, value;
