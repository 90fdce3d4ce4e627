-- One row per applied `spanmeter reprice` run: when, over what, with which prices, and what it
-- changed. The corrections themselves are rows of usage_events (see price_corrections).
CREATE TABLE IF NOT EXISTS {db}.reprice_runs
(
    run_id           String,
    started_at       DateTime64(3, 'UTC'),
    finished_at      DateTime64(3, 'UTC'),
    since            DateTime64(3, 'UTC'),
    until            DateTime64(3, 'UTC'),
    model_filter     String,
    price_sources    String,
    rows_examined    UInt64,
    rows_corrected   UInt64,
    newly_priced     UInt64,
    repriced         UInt64,
    cost_before_usd  Decimal(38, 12),
    cost_after_usd   Decimal(38, 12)
)
ENGINE = MergeTree
ORDER BY started_at;

-- Every repricing correction: a repricing inserts, in one statement, a cancelling copy of the row
-- it corrects (sign -1, the old cost, status and price_version) and the corrected row (sign +1),
-- so both carry the same inserted_at (now() is one value per INSERT). A key corrected twice
-- appears twice, once per correction.
CREATE VIEW IF NOT EXISTS {db}.price_corrections AS
SELECT e.inserted_at AS corrected_at,
       lower(hex(e.trace_id)) AS trace_id_hex,
       lower(hex(e.span_id)) AS span_id_hex,
       any(e.event_time) AS event_time,
       any(e.user_id) AS user_id,
       any(e.provider) AS provider,
       any(if(e.response_model != '', e.response_model, e.request_model)) AS model,
       anyIf(e.pricing_status, e.sign < 0) AS old_pricing_status,
       anyIf(e.price_version, e.sign < 0) AS old_price_version,
       anyIf(e.cost_usd, e.sign < 0) AS old_cost_usd,
       anyIf(e.pricing_status, e.sign > 0) AS new_pricing_status,
       anyIf(e.price_version, e.sign > 0) AS new_price_version,
       anyIf(e.cost_usd, e.sign > 0) AS new_cost_usd
FROM {db}.usage_events AS e
GROUP BY corrected_at, e.trace_id, e.span_id
HAVING countIf(e.sign < 0) = 1 AND countIf(e.sign > 0) = 1
   -- a price correction changes the cost, status or version (the writer's attribution
   -- corrections, also a -1/+1 pair in one insert, change none of them)
   AND (old_pricing_status != new_pricing_status OR old_price_version != new_price_version
        OR ifNull(toString(old_cost_usd), 'NULL') != ifNull(toString(new_cost_usd), 'NULL'));
