-- The rates usage rows were priced at, one row per price_version and tier, so SQL and Grafana can
-- join usage_events.price_version to the exact rate behind a cost. Written by the service at
-- start, by `spanmeter prices sync` and by every repricing; a version is written once (its
-- content never changes: override versions carry a hash of their prices).
--   tier 0 is the base price; tier N applies when a request's input tokens (cache included)
--   exceed above_input_tokens, and bills the whole request at that tier's prices.
--   A NULL cache/reasoning price means "billed at input/output": price_rates resolves that.
--   window_utc is 'HH:MM-HH:MM' for a time-of-day (off-peak) rate, '' for all day.
CREATE TABLE IF NOT EXISTS {db}.prices
(
    price_version            String,
    provider                 LowCardinality(String),
    model                    LowCardinality(String),
    source                   LowCardinality(String),
    effective_from           Date,
    window_utc               LowCardinality(String),
    tier                     UInt8,
    above_input_tokens       UInt64,
    input_per_mtok           Decimal(18, 12),
    cache_read_per_mtok      Nullable(Decimal(18, 12)),
    cache_write_per_mtok     Nullable(Decimal(18, 12)),
    cache_write_1h_per_mtok  Nullable(Decimal(18, 12)),
    output_per_mtok          Decimal(18, 12),
    reasoning_per_mtok       Nullable(Decimal(18, 12)),
    recorded_at              DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(recorded_at)
ORDER BY (price_version, tier);

-- Prices as billed, USD per million tokens: a missing cache price is the input price, a missing
-- reasoning price the output price. cached_input_saving_per_mtok is what a cache read saves over
-- an uncached input token (the "savings from cached input" panel multiplies it by
-- cache_read_tokens / 1e6 of the rows priced at this version, tier 0 unless input_tokens exceed
-- above_input_tokens).
CREATE VIEW IF NOT EXISTS {db}.price_rates AS
SELECT price_version, provider, model, source, effective_from, window_utc, tier, above_input_tokens,
       input_per_mtok,
       ifNull(cache_read_per_mtok, input_per_mtok) AS cache_read_per_mtok,
       ifNull(cache_write_per_mtok, input_per_mtok) AS cache_write_per_mtok,
       output_per_mtok,
       ifNull(reasoning_per_mtok, output_per_mtok) AS reasoning_per_mtok,
       input_per_mtok - ifNull(cache_read_per_mtok, input_per_mtok) AS cached_input_saving_per_mtok
FROM {db}.prices FINAL;
