-- The rollups' views read a feed of the usage rows instead of usage_events itself.
--
-- A materialized view costs every insert into its source a fixed ~5 ms (its query planned and run,
-- a part written to its target), whatever the batch size: with eight views, a usage batch of a few
-- thousand rows cost 60-250 ms, most of an acknowledgement's wait (bench/README.md). Reading the
-- feed, the five views that read usage rows (and the three that read their targets) run when the
-- ingest writes the feed. It writes every committed batch to usage_events at once, and to the feed
-- together with the batches committed since the last feed write, at most
-- SPANMETER_ROLLUP_DELAY_MS later: events are committed per batch, the rollups' fixed cost is
-- paid once for many batches. Every other writer (repricing, backfill, the store's insert_usage)
-- writes both at once, as before.
--
-- Exactly once: a feed write carries its own deduplication token (the rollups keep 1000, see
-- 0010), and batches waiting for it are on disk beside the embedded store (the writer's
-- pending-rollups file): one re-sent after a crash writes only what is missing.
--
-- The feed stores nothing (Null engine). Its columns are usage_events' columns as the writer
-- sends them; a migration that adds a column to usage_events must add it here too.
CREATE TABLE IF NOT EXISTS {db}.usage_rollup_feed
(
    event_time          DateTime64(3, 'UTC'),
    trace_id            FixedString(16),
    span_id             FixedString(8),
    sign                Int8 DEFAULT 1,
    service_name        LowCardinality(String),
    user_id             String,
    session_id          String,
    conversation_id     String,
    feature             LowCardinality(String),
    team                LowCardinality(String),
    agent               LowCardinality(String),
    provider            LowCardinality(String),
    operation           LowCardinality(String),
    request_model       LowCardinality(String),
    response_model      LowCardinality(String),
    input_tokens        UInt32,
    cache_read_tokens   UInt32,
    cache_write_tokens  UInt32,
    output_tokens       UInt32,
    reasoning_tokens    UInt32,
    usage_status        LowCardinality(String),
    cost_usd            Nullable(Decimal(18, 12)),
    pricing_status      LowCardinality(String),
    price_version       LowCardinality(String),
    reported_cost_usd   Nullable(Decimal(18, 12)),
    streaming           Bool,
    duration_ms         UInt32,
    source              LowCardinality(String),
    inserted_at         DateTime('UTC') DEFAULT now()
)
ENGINE = Null;

-- usage_hourly_mv: as in 0002_create_usage_hourly.sql, reading the feed.
DROP VIEW IF EXISTS {db}.usage_hourly_mv;

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
FROM {db}.usage_rollup_feed AS e
GROUP BY hour, user_id, service_name, provider, model, feature, team;

-- usage_daily_mv: as in 0003_create_usage_daily.sql, reading the feed.
DROP VIEW IF EXISTS {db}.usage_daily_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.usage_daily_mv TO {db}.usage_daily AS
SELECT
    toDate(e.event_time) AS day,
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
FROM {db}.usage_rollup_feed AS e
GROUP BY day, user_id, service_name, provider, model, feature, team;

-- usage_totals_hourly_mv: as in 0013_create_usage_totals_hourly.sql, reading the feed.
DROP VIEW IF EXISTS {db}.usage_totals_hourly_mv;

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
FROM {db}.usage_rollup_feed AS e
GROUP BY hour, service_name, provider, model, feature, team, price_version, tier_input_tokens;

-- usage_user_daily_mv: as in 0014_create_usage_user_daily.sql, reading the feed.
DROP VIEW IF EXISTS {db}.usage_user_daily_mv;

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
FROM {db}.usage_rollup_feed AS e
GROUP BY day, user_id;

-- usage_user_hourly_mv: as in 0015_create_usage_user_hourly.sql, reading the feed.
DROP VIEW IF EXISTS {db}.usage_user_hourly_mv;

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
FROM {db}.usage_rollup_feed AS e
GROUP BY user_id, hour, session_id, provider, model, feature;
