-- Remember the last inserted blocks' deduplication tokens on the usage table and every rollup a
-- materialized view writes. An insert is not atomic across views: ClickHouse commits the
-- usage_events part, then each view's. When an insert fails in between (disk full, a kill), the
-- writer re-sends the very same batch with the same insert_deduplication_token and
-- deduplicate_blocks_in_dependent_materialized_views = 1: the parts already written are skipped,
-- the missing ones are written, and nothing is counted twice.
ALTER TABLE {db}.usage_events MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE {db}.usage_hourly MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE {db}.usage_daily MODIFY SETTING non_replicated_deduplication_window = 1000;
