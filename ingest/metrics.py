"""Prometheus metrics of one ingest process (`GET /metrics`), in their own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("spanmeter_export_requests", "OTLP export requests by HTTP status", ["status"], registry=r)
        self.spans_received = Counter("spanmeter_spans_received", "Spans decoded from exports", registry=r)
        self.usage_records = Counter("spanmeter_usage_records", "Usage records normalized from spans", registry=r)
        self.rows_stored = Counter("spanmeter_usage_rows_stored", "Usage rows committed to ClickHouse", registry=r)
        self.rejected = Counter("spanmeter_spans_rejected", "Spans refused (partial success)", registry=r)
        self.unpriced = Counter("spanmeter_usage_unpriced", "Usage records that could not be priced", ["reason"], registry=r)
        self.duplicates = Counter("spanmeter_usage_duplicates", "Usage records already stored (retries, replays)", registry=r)
        self.insert_seconds = Histogram(
            "spanmeter_insert_seconds", "Latency of one batch insert", registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.rollup_seconds = Histogram(
            "spanmeter_rollup_feed_seconds", "Latency of one write of committed batches to the rollups", registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.rollup_owed_rows = Gauge(
            "spanmeter_rollup_owed_rows", "Usage rows committed to usage_events, not yet in the rollups", registry=r)
        self.queue_rows = Gauge("spanmeter_queue_rows", "Usage rows waiting for the next batch insert", registry=r)
