-- A projection of usage_hourly ordered by user, for the per-user dashboard panels
-- (bench/dashboard_queries.py; figures in bench/README.md). The rollup's key starts with the
-- hour, and with thousands of users it holds about one row per two events, so a per-user panel
-- over 30 days read the whole of it; with the projection it reads that user's rows only
-- (user-detail's stat panels: ~80 ms -> ~10 ms on 10M events). It costs a second copy of the
-- rollup on disk and ~10 ms more per insert (measured on 5k-row batches). An aggregate projection
-- summed over users for the overview panels was measured too: it tripled the cost of an insert.
-- ClickHouse reads a projection only when it answers the query exactly; queries do not change.
-- A SummingMergeTree keeps projections only when merges rebuild them.
ALTER TABLE {db}.usage_hourly MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild';

ALTER TABLE {db}.usage_hourly ADD PROJECTION IF NOT EXISTS by_user (SELECT * ORDER BY user_id, hour);

ALTER TABLE {db}.usage_hourly MATERIALIZE PROJECTION by_user;
