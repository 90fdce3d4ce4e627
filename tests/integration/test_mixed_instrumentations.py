"""Two instrumentations and the anthropic SDK's own spans on one process, through the app on real
ClickHouse: every call is metered exactly once, with its user.

The fixture (tests/fixtures/instrumentations/mixed/all.json) was recorded with OpenLLMetry and
OpenInference both instrumenting openai and anthropic in the same process, the anthropic SDK's
spans on: five calls (chat, chat stream, messages, messages stream, embeddings), thirteen spans.
OpenAI calls nest OpenInference's span under OpenLLMetry's; Anthropic calls put OpenLLMetry's
span and the SDK's side by side under OpenInference's (same response id).
"""

import json
from decimal import Decimal

from tests.unit.normalize.instrumentation_fixtures import load

EXPECTED = {
    # response model: (requests, input, cache read, cache write, output, dollars)
    "gpt-4o-mini-2024-07-18": (2, 2300, 1536, 0, 510, Decimal("0.0005358")),
    "claude-sonnet-4-5-20250929": (2, 4180, 3500, 500, 440, Decimal("0.010065")),
    "text-embedding-3-small": (1, 42, 0, 0, 0, Decimal("0.00000084")),
}


def post(client, doc):
    response = client.post("/v1/traces", content=json.dumps(doc), headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text


def totals(client):
    query = ("SELECT response_model, sum(sign), sum(input_tokens * sign), sum(cache_read_tokens * sign), "
             "sum(cache_write_tokens * sign), sum(output_tokens * sign), sum(cost_usd * sign) "
             "FROM usage_events GROUP BY response_model HAVING sum(sign) != 0 ORDER BY response_model")
    by_user = ("SELECT response_model, user_id, sum(sign) FROM usage_events GROUP BY response_model, user_id "
               "HAVING sum(sign) != 0 ORDER BY response_model, user_id")
    got = {row[0]: row[1:] for row in sql(client, query)}
    users: dict[str, list] = {}
    for model, user, _ in sql(client, by_user):
        users.setdefault(model, []).append(user)
    return {model: (*row, users.get(model, [])) for model, row in got.items()}


def sql(client, query):
    table = f"{client.app.state.settings.database}.usage_events"
    response = client.post("/v1/sql", json={"query": query.replace("usage_events", table)})
    assert response.status_code == 200, response.text
    return response.json()["rows"]


def check(client):
    got = totals(client)
    assert set(got) == set(EXPECTED)
    for model, (n, inp, cr, cw, out, dollars) in EXPECTED.items():
        requests, i, r, w, o, cost, users = got[model]
        assert (requests, i, r, w, o) == (n, inp, cr, cw, out), model
        assert Decimal(str(cost)) == dollars, model
        assert users == ["user-mixed"], model


def test_one_export_every_call_once(client):
    post(client, json.loads(load("mixed", "all")))
    check(client)


def test_one_export_per_span_in_end_order_every_call_once(client):
    """As a SimpleSpanProcessor sends them: each span alone, children before their parents."""
    doc = json.loads(load("mixed", "all"))
    singles = []
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for s in ss["spans"]:
                singles.append((int(s["endTimeUnixNano"]), {"resourceSpans": [
                    {"resource": rs["resource"], "scopeSpans": [{"scope": ss["scope"], "spans": [s]}]}]}))
    for _, single in sorted(singles, key=lambda pair: pair[0]):
        post(client, single)
    check(client)


def test_a_retried_export_changes_nothing(client):
    body = json.loads(load("mixed", "all"))
    post(client, body)
    post(client, body)
    check(client)
