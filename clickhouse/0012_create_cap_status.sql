-- Caps in ClickHouse, for the Budgets dashboard and ad-hoc SQL (ingest/budgets.py writes both).
--
-- tier_caps: the caps of every tier as the service loaded them from SPANMETER_TIERS_FILE, one row
-- per (tier, window). Versioned like prices: a new set of rows (a new caps_version, a hash of the
-- effective caps) is appended only when the file's caps change, with the time the service first
-- applied them; earlier versions stay as history. A user's own overrides live in user_tiers and
-- show in cap_status.
--   window_name   session, rolling_<N>h, day, week or month; window_hours: N for rolling, the
--                 session length for session, 0 for calendar windows
--   limit_usd     NULL: the window is shown, not capped (no tiers file: every window)
CREATE TABLE IF NOT EXISTS {db}.tier_caps
(
    caps_version    String,
    tier            LowCardinality(String),
    is_default      Bool,
    window_name     LowCardinality(String),
    window_kind     LowCardinality(String),
    window_hours    UInt16,
    limit_usd       Nullable(Decimal(38, 12)),
    warn_at         Nullable(Decimal(38, 12)),
    hard            Bool,
    timezone        LowCardinality(String),
    source          String,
    effective_from  DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY (effective_from, tier, window_name);

-- cap_status: each user's standing against each of their caps, as the caps engine computes it
-- (the numbers GET /v1/users/{id}/usage answers), taken every SPANMETER_CAPS_SNAPSHOT_SECONDS and
-- at stop for every user with spend, calls or a reservation in an open window. One insert per
-- snapshot, every row stamped with the snapshot's taken_at; a user or window absent from the
-- latest snapshot has nothing in an open window. Sessions (5 hours from a user's first request)
-- cannot be computed faithfully in plain SQL: this table is how SQL sees them.
-- Replacing on (user_id, window_name): merges keep one row per user and window, so the table
-- holds about one row per window of every user ever snapshotted, whatever the snapshot interval.
-- (No TTL: a snapshot's time is the caps engine's clock, which tests set in the past.)
--   percent       (spent + reserved) / limit * 100, one decimal; NULL when not capped
--   status        ok, warn (at warn_at of the cap) or over (spent + reserved >= limit)
--   resets_at     when the window ends (calendar, session) or its oldest call leaves it (rolling)
CREATE TABLE IF NOT EXISTS {db}.cap_status
(
    taken_at        DateTime64(3, 'UTC'),
    user_id         String,
    window_name     LowCardinality(String),
    tier            LowCardinality(String),
    timezone        LowCardinality(String),
    limit_usd       Nullable(Decimal(38, 12)),
    spent_usd       Decimal(38, 12),
    reserved_usd    Decimal(38, 12),
    remaining_usd   Nullable(Decimal(38, 12)),
    percent         Nullable(Decimal(38, 1)),
    status          LowCardinality(String),
    warn_at         Nullable(Decimal(38, 12)),
    hard            Bool,
    window_start    Nullable(DateTime64(3, 'UTC')),
    resets_at       Nullable(DateTime64(3, 'UTC')),
    calls           Int64,
    unpriced_calls  Int64,
    estimate        Bool
)
ENGINE = ReplacingMergeTree(taken_at)
ORDER BY (user_id, window_name);

-- The latest snapshot: one row per user and window (LIMIT 1 BY: two replicas that snapshot in
-- the same millisecond count once).
CREATE VIEW IF NOT EXISTS {db}.cap_status_latest AS
SELECT *
FROM {db}.cap_status
WHERE taken_at = (SELECT max(taken_at) FROM {db}.cap_status)
LIMIT 1 BY user_id, window_name;

-- The tier caps in force: the latest version the service loaded.
CREATE VIEW IF NOT EXISTS {db}.tier_caps_current AS
SELECT *
FROM {db}.tier_caps
WHERE effective_from = (SELECT max(effective_from) FROM {db}.tier_caps);
