-- Column codecs of usage_events, chosen on 10M realistic events (bench/storage_bytes.py; figures in
-- bench/README.md): 35.4 -> 33.7 bytes per event on disk after OPTIMIZE FINAL.
-- - ZSTD instead of the default LZ4 on the LowCardinality columns' index streams and on streaming:
--   a model, provider or feature carries a few bits per row, which LZ4 leaves at ~0.5 byte;
-- - ZSTD on trace_id: the calls of one trace sit next to each other in the sort order;
-- - T64 before ZSTD on the costs: a call's cost in pico-dollars uses ~35 of the Decimal's 64 bits;
-- - ZSTD(3) on session_id, whose values repeat within a user's sorted rows.
-- span_id (8 random bytes) does not compress; event_time, the token counts and duration_ms keep
-- the codecs of 0001, which measured best. Parts written before this keep their codecs until merged.
ALTER TABLE {db}.usage_events
    MODIFY COLUMN trace_id CODEC(ZSTD(1)),
    MODIFY COLUMN sign CODEC(ZSTD(1)),
    MODIFY COLUMN service_name CODEC(ZSTD(1)),
    MODIFY COLUMN session_id CODEC(ZSTD(3)),
    MODIFY COLUMN feature CODEC(ZSTD(1)),
    MODIFY COLUMN team CODEC(ZSTD(1)),
    MODIFY COLUMN agent CODEC(ZSTD(1)),
    MODIFY COLUMN provider CODEC(ZSTD(1)),
    MODIFY COLUMN operation CODEC(ZSTD(1)),
    MODIFY COLUMN request_model CODEC(ZSTD(1)),
    MODIFY COLUMN response_model CODEC(ZSTD(1)),
    MODIFY COLUMN usage_status CODEC(ZSTD(1)),
    MODIFY COLUMN cost_usd CODEC(T64, ZSTD(1)),
    MODIFY COLUMN pricing_status CODEC(ZSTD(1)),
    MODIFY COLUMN price_version CODEC(ZSTD(1)),
    MODIFY COLUMN reported_cost_usd CODEC(T64, ZSTD(1)),
    MODIFY COLUMN streaming CODEC(ZSTD(1)),
    MODIFY COLUMN source CODEC(ZSTD(1));
