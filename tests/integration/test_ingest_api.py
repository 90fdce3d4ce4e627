"""The ingest end to end in process: OTLP in, exact priced rows and rollups out, on real chDB.

Expected dollars are computed by hand from the providers' published per-million-token prices:
  gpt-4o-mini        input $0.15, cached input $0.075, output $0.60
  o4-mini            input $1.10, cached input $0.275, output $4.40 (reasoning billed as output)
  claude-sonnet-4-5  input $3.00, cache write (5 min) $3.75, cache read $0.30, output $15.00
  claude-haiku-4-5   input $1.00, cache write (5 min) $1.25, cache read $0.10, output $5.00
"""

import gzip
from decimal import Decimal

import pytest

from tests.support.otlp import BASE_TIME_NS, chat, span, to_json, to_protobuf

PB = {"Content-Type": "application/x-protobuf"}
JS = {"Content-Type": "application/json"}
HOUR = 3600 * 10**9

# alice: 6000 uncached*0.15 + 4000 cached*0.075 + 2000 out*0.60 = 0.0009 + 0.0003 + 0.0012
ALICE_MINI = Decimal("0.0024")
# alice: 4000*1.10 + 1000*0.275 + 3000*4.40 = 0.0044 + 0.000275 + 0.0132
ALICE_O4 = Decimal("0.017875")
# bob (Anthropic raw counts, cache excluded): 100*3 + 20000*0.30 + 5000*3.75 + 800*15
BOB_SONNET = Decimal("0.03705")
# dave: 1000 uncached*1.00 + 1000 cached*0.10 + 100 out*5.00
DAVE_HAIKU = Decimal("0.0016")


def protobuf_export():
    return to_protobuf([
        span("POST /tutor", 1, 1, attrs={"user.id": "alice", "spanmeter.feature": "tutor"}),
        chat(1, 2, parent=1, model="gpt-4o-mini", response_model="gpt-4o-mini-2024-07-18",
             input=10_000, cache_read=4_000, output=2_000),
        chat(2, 1, model="o4-mini", input=5_000, cache_read=1_000, output=3_000, reasoning=2_000, user="alice",
             start_ns=BASE_TIME_NS + 2 * HOUR),
        chat(3, 1, model="claude-sonnet-4-5", provider="anthropic", input=100, cache_read=20_000,
             cache_write=5_000, output=800, user="bob", start_ns=BASE_TIME_NS + 5 * HOUR),
        chat(4, 1, model="acme-llm-7b", provider="acme", input=1_000, output=100, user="carol"),
    ], service="tutor-api")


def json_export():
    return to_json([
        chat(5, 1, model="claude-haiku-4-5", provider="anthropic", input=2_000, cache_read=1_000, output=100,
             user="dave"),
    ], service="grader")


def totals(store, table, key="user_id"):
    rows = store.query(
        f"SELECT {key}, sum(requests), sum(input_tokens), sum(cache_read_tokens), sum(cache_write_tokens), "
        f"sum(output_tokens), sum(reasoning_tokens), sum(cost_usd), sum(unpriced_requests) "
        f"FROM {store.database}.{table} GROUP BY {key} ORDER BY {key}"
    ).rows
    return {r[0]: r[1:] for r in rows}


def event_totals(store):
    rows = store.query(
        f"SELECT user_id, sum(sign), sum(input_tokens * sign), sum(cache_read_tokens * sign), "
        f"sum(cache_write_tokens * sign), sum(output_tokens * sign), sum(reasoning_tokens * sign), "
        f"sum(cost_usd * sign), countIf(cost_usd IS NULL) "
        f"FROM {store.database}.usage_events GROUP BY user_id ORDER BY user_id"
    ).rows
    return {r[0]: r[1:] for r in rows}


EXPECTED = {
    "alice": (2, 15_000, 5_000, 0, 5_000, 2_000, ALICE_MINI + ALICE_O4, 0),
    "bob": (1, 25_100, 20_000, 5_000, 800, 0, BOB_SONNET, 0),
    "carol": (1, 1_000, 0, 0, 100, 0, Decimal(0), 1),
    "dave": (1, 2_000, 1_000, 0, 100, 0, DAVE_HAIKU, 0),
}


# In the events, a user whose every call is unpriced has no cost at all (NULL), not $0; the
# rollups hold priced cost only (0 here) beside the unpriced count.
EXPECTED_EVENTS = {**EXPECTED, "carol": (1, 1_000, 0, 0, 100, 0, None, 1)}


def post_both(client):
    r1 = client.post("/v1/traces", content=protobuf_export(), headers=PB)
    r2 = client.post("/v1/traces", content=gzip.compress(json_export()), headers={**JS, "Content-Encoding": "gzip"})
    assert r1.status_code == 200 and r2.status_code == 200, (r1.text, r2.text)
    assert r1.headers["content-type"] == "application/x-protobuf"
    assert r2.json() == {}


def test_exact_tokens_and_dollars_per_user_in_events_and_rollups(client, store):
    post_both(client)
    assert event_totals(store) == EXPECTED_EVENTS
    assert totals(store, "usage_daily") == EXPECTED
    assert totals(store, "usage_hourly") == EXPECTED
    assert totals(store, "cost_per_user_daily") == EXPECTED


def test_rows_carry_attribution_prices_and_status(client, store):
    post_both(client)
    rows = store.query(
        f"SELECT user_id, feature, service_name, provider, response_model, cost_usd, pricing_status, price_version, "
        f"usage_status, source FROM {store.database}.usage_events ORDER BY user_id, event_time"
    ).rows
    by_model = {r[4]: r for r in rows}
    mini = by_model["gpt-4o-mini-2024-07-18"]
    assert mini[:4] == ("alice", "tutor", "tutor-api", "openai")  # user and feature from the parent span
    assert mini[5] == ALICE_MINI and mini[6] == "priced" and "gpt-4o-mini" in mini[7]
    acme = by_model["acme-llm-7b"]
    assert acme[5] is None and acme[6] == "unknown_model" and acme[7] == ""
    assert by_model["claude-haiku-4-5"][2] == "grader"
    assert {r[8] for r in rows} == {"reported"} and {r[9] for r in rows} == {"semconv"}


def test_the_same_export_twice_changes_no_total(client, store):
    post_both(client)
    post_both(client)
    client.post("/v1/traces", content=protobuf_export(), headers=PB)
    assert event_totals(store) == EXPECTED_EVENTS
    assert totals(store, "usage_daily") == EXPECTED
    assert totals(store, "usage_hourly") == EXPECTED
    count = store.query(f"SELECT count() FROM {store.database}.usage_events").rows[0][0]
    assert count == 5


def test_unknown_model_is_listed_as_unpriced(client, store):
    post_both(client)
    rows = store.query(f"SELECT provider, model, pricing_status, requests, input_tokens FROM {store.database}.unpriced_usage").rows
    assert rows == [("acme", "acme-llm-7b", "unknown_model", 1, 1000)]


@pytest.mark.parametrize(
    "body,headers,status",
    [
        (b"\x0a\x05\x0a\x03", PB, 400),  # truncated protobuf
        (b"{nope", JS, 400),
        (b"anything", {"Content-Type": "text/plain"}, 415),
        (b"\x1f\x8b\x08\x00garbage", {**PB, "Content-Encoding": "gzip"}, 400),
        (gzip.compress(b"\0" * (80 << 20)), {**PB, "Content-Encoding": "gzip"}, 413),  # 80 MiB bomb
        (b"x" * (16 * 1024 * 1024 + 1), PB, 413),
    ],
    ids=["truncated-protobuf", "bad-json", "media-type", "bad-gzip", "gzip-bomb", "oversized"],
)
def test_bad_input_gets_the_right_status_and_harms_nothing(client, store, body, headers, status):
    post_both(client)
    r = client.post("/v1/traces", content=body, headers=headers)
    assert r.status_code == status
    assert "Retry-After" not in r.headers  # 4xx: the exporter must not retry
    assert event_totals(store) == EXPECTED_EVENTS
    assert client.post("/v1/traces", content=json_export(), headers=JS).status_code == 200
    assert client.get("/readyz").status_code == 200


def test_partial_success_names_the_refused_spans(client, store):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    body = to_protobuf([chat(9, 1, model="gpt-4o-mini", input=10, output=1, user="u" * 5000),
                        chat(9, 2, model="gpt-4o-mini", input=10, output=1, user="ok")])
    r = client.post("/v1/traces", content=body, headers=PB)
    assert r.status_code == 200
    response = ExportTraceServiceResponse.FromString(r.content)
    assert response.partial_success.rejected_spans == 1
    assert "user_id longer than" in response.partial_success.error_message
    assert store.query(f"SELECT user_id FROM {store.database}.usage_events").rows == [("ok",)]


def test_sql_endpoint_is_read_only(client, store):
    post_both(client)
    ok = client.post("/v1/sql", json={"query": f"SELECT sum(input_tokens) AS t FROM {store.database}.usage_events"})
    assert ok.status_code == 200 and ok.json()["rows"] == [[43_100]]
    for query in (f"DROP TABLE {store.database}.usage_events",
                  f"INSERT INTO {store.database}.usage_events (user_id) VALUES ('mallory')",
                  "SELECT 1 INTO OUTFILE '/tmp/spanmeter-sql-escape'",
                  "SELECT * FROM file('/etc/passwd', 'LineAsString')"):
        denied = client.post("/v1/sql", json={"query": query})
        assert denied.status_code == 400 and "read" in denied.json()["message"].lower(), denied.text
    assert event_totals(store) == EXPECTED_EVENTS
    # A refused write must not leave the embedded engine read-only: ingest still stores.
    assert client.post("/v1/traces", content=to_json([chat(77, 1, model="gpt-4o-mini", input=1, output=1, user="eve")]),
                       headers=JS).status_code == 200
    assert store.query(f"SELECT count() FROM {store.database}.usage_events WHERE user_id = 'eve'").rows == [(1,)]
    bad = client.post("/v1/sql", json={"query": "SELEC nonsense"})
    assert bad.status_code == 400
