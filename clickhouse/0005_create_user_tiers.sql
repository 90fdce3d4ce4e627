-- Per-user cap settings set through the admin API (PUT /v1/users/{id}/tier, /limits, tokens).
-- An append-only log: the latest row per (user_id, setting) wins, read with
-- argMax(value, updated_at), so every change stays visible (who was on which tier, when).
--   setting 'tier'              value: a tier name from the tiers file
--   setting 'overrides'         value: JSON {"caps": {"<window>": {...} | null}, "timezone": ...}
--   setting 'tokens_not_before' value: Unix milliseconds; user tokens issued before are revoked
CREATE TABLE IF NOT EXISTS {db}.user_tiers
(
    user_id     String,
    setting     LowCardinality(String),
    value       String,
    updated_at  DateTime64(6, 'UTC')
)
ENGINE = MergeTree
ORDER BY (user_id, setting, updated_at);
