"""`run_demo` against a running `spanmeter serve`: every demo call lands as one priced row."""

from __future__ import annotations

import time

from spanmeter.ingest.demo import run_demo
from tests.support.service import running_service


def test_demo_calls_land_as_rows(tmp_path) -> None:
    with running_service(tmp_path) as svc:
        summary = run_demo(svc.url, users=3, calls=10)
        assert summary["export_ok"] and summary["errors"] == []
        assert summary["calls"] == 10 and summary["spans_exported"] == 10
        assert sorted(summary["users"]) == ["demo-user-1", "demo-user-2", "demo-user-3"]
        deadline = time.monotonic() + 30
        while True:
            rows = svc.sql(
                "SELECT user_id, count(), sum(input_tokens), sum(output_tokens), countIf(cost_usd IS NULL) "
                "FROM spanmeter.usage_events GROUP BY user_id ORDER BY user_id"
            )
            if sum(r[1] for r in rows) >= 10 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        (user, s["calls"], s["input_tokens"], s["output_tokens"]) for user, s in summary["users"].items()
    ]
    assert all(r[4] == 0 for r in rows), rows  # every demo model is priced


def test_demo_reports_an_unreachable_endpoint() -> None:
    summary = run_demo("http://127.0.0.1:9", users=1, calls=2)
    assert summary["calls"] == 2 and not summary["export_ok"] and summary["spans_exported"] == 0
