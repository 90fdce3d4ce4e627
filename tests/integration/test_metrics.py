"""`GET /metrics` moves as it should: spans received, usage records, rows stored, spans rejected,
unpriced records, duplicates, requests by status, insert latency and queue depth, read from the
Prometheus text the endpoint serves.

Received-side counters (spans received, usage records, rejected, unpriced) count what arrived,
retries included; rows stored and duplicates count what the writer decided at commit.
"""

from __future__ import annotations

import gzip
import threading
import time

from prometheus_client.parser import text_string_to_metric_families

from tests.support.otlp import chat, span, to_protobuf

PB = {"Content-Type": "application/x-protobuf"}


def scrape(client) -> dict[tuple, float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    out = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(metrics: dict, name: str, **labels: str) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(after: dict, before: dict, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


EXPORT = to_protobuf([
    span("POST /chat", 1, 1, attrs={"user.id": "m-user"}),  # no usage: received, not a record
    chat(1, 2, parent=1, model="gpt-4o-mini", input=100, output=10),
    chat(2, 1, model="gpt-4o", input=50, output=5, user="m-user"),
    chat(3, 1, model="acme-llm-7b", provider="acme", input=10, output=1, user="m-user"),  # no price
    chat(4, 1, model="x" * 5000, input=1, output=1),  # over the attribute limit: rejected
])


def test_counters_follow_an_export_its_replay_and_refusals(client):
    before = scrape(client)
    assert client.post("/v1/traces", content=EXPORT, headers=PB).status_code == 200
    first = scrape(client)
    assert delta(first, before, "spanmeter_spans_received_total") == 5
    assert delta(first, before, "spanmeter_usage_records_total") == 3
    assert delta(first, before, "spanmeter_spans_rejected_total") == 1
    assert delta(first, before, "spanmeter_usage_unpriced_total", reason="unknown_model") == 1
    assert delta(first, before, "spanmeter_usage_rows_stored_total") == 3
    assert delta(first, before, "spanmeter_usage_duplicates_total") == 0
    assert delta(first, before, "spanmeter_export_requests_total", status="200") == 1
    inserts = delta(first, before, "spanmeter_insert_seconds_count")
    assert inserts >= 1
    assert delta(first, before, "spanmeter_insert_seconds_sum") > 0
    # Histogram buckets are cumulative and end at the count.
    assert value(first, "spanmeter_insert_seconds_bucket", le="+Inf") == value(first, "spanmeter_insert_seconds_count")
    assert value(first, "spanmeter_queue_rows") == 0

    # A retry of the same export: received again, stored never, three duplicates.
    assert client.post("/v1/traces", content=gzip.compress(EXPORT), headers={**PB, "Content-Encoding": "gzip"}).status_code == 200
    second = scrape(client)
    assert delta(second, first, "spanmeter_spans_received_total") == 5
    assert delta(second, first, "spanmeter_usage_rows_stored_total") == 0
    assert delta(second, first, "spanmeter_usage_duplicates_total") == 3
    assert delta(second, first, "spanmeter_spans_rejected_total") == 1

    # Refusals by status; nothing received or stored.
    assert client.post("/v1/traces", content=b"\xff\xff", headers=PB).status_code == 400
    assert client.post("/v1/traces", content=EXPORT, headers={"Content-Type": "text/plain"}).status_code == 415
    assert client.post("/v1/traces", content=EXPORT, headers={**PB, "Content-Encoding": "br"}).status_code == 415
    third = scrape(client)
    assert delta(third, second, "spanmeter_export_requests_total", status="400") == 1
    assert delta(third, second, "spanmeter_export_requests_total", status="415") == 2
    assert delta(third, second, "spanmeter_spans_received_total") == 0
    assert delta(third, second, "spanmeter_usage_rows_stored_total") == 0


def test_queue_depth_shows_rows_waiting_behind_a_slow_insert(client, store, monkeypatch):
    """While one batch's insert is held, the next request's rows wait in the queue: the gauge shows
    them, and drops to 0 once both are committed."""
    release, inserting = threading.Event(), threading.Event()
    original = store.insert_usage_arrow

    def slow_insert(table, token=None, **kw):
        inserting.set()
        release.wait(30)
        return original(table, token, **kw)

    monkeypatch.setattr(store, "insert_usage_arrow", slow_insert)
    bodies = [
        to_protobuf([chat(10, 1, model="gpt-4o-mini", input=1, output=1)]),
        to_protobuf([chat(11, n, model="gpt-4o-mini", input=1, output=1) for n in range(1, 4)]),
    ]
    statuses = []
    first = threading.Thread(target=lambda: statuses.append(client.post("/v1/traces", content=bodies[0], headers=PB).status_code))
    first.start()
    assert inserting.wait(10)
    second = threading.Thread(target=lambda: statuses.append(client.post("/v1/traces", content=bodies[1], headers=PB).status_code))
    second.start()
    deadline = time.monotonic() + 10
    while value(scrape(client), "spanmeter_queue_rows") != 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert value(scrape(client), "spanmeter_queue_rows") == 3
    release.set()
    first.join(30)
    second.join(30)
    assert statuses == [200, 200]
    after = scrape(client)
    assert value(after, "spanmeter_queue_rows") == 0
    assert value(after, "spanmeter_usage_rows_stored_total") == 4
