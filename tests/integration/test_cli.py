"""The `spanmeter` command as a user runs it: a real `spanmeter serve` process, the README's curl
example, `report`, `sql`, `migrate`, and the refusal to serve beyond loopback without tokens."""

import subprocess
import time

from tests.support.otlp import chat, to_protobuf
from tests.support.service import REPO, SPANMETER, running_service


def cli(*args, env=None, check=True):
    result = subprocess.run([str(SPANMETER), *args], capture_output=True, text=True, timeout=120, env=env)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_readme_example_then_report_shows_costs_and_unpriced_usage(tmp_path):
    now_ns = str(time.time_ns())
    example = (REPO / "examples" / "first-span.json").read_text().replace("NOW", now_ns).encode()
    unknown = to_protobuf([chat(7, 1, model="acme-llm-7b", provider="acme", input=1000, output=100, user="carol",
                                start_ns=time.time_ns())])
    with running_service(tmp_path) as svc:
        assert svc.post_traces(example, "application/json").status_code == 200
        assert svc.post_traces(unknown).status_code == 200
        svc.wait_for_rollups()  # the report reads the daily rollup, which trails by up to 1 s
        out = cli("report", "--url", svc.url).stdout
        sql = cli("sql", "--url", svc.url, "--format", "json",
                  "SELECT user_id, cost_usd, pricing_status FROM spanmeter.usage_events ORDER BY user_id").stdout
    users = out.split("Top users")[1].split("Top models")[0]
    # alice: 8000*0.15 + 4000*0.075 + 800*0.60 per million = $0.00198; bob: 100*3 + 20000*0.30 + 5000*3.75 + 800*15
    assert "alice" in users and "0.00198" in users
    assert "bob" in users and "0.03705" in users
    carol = next(line for line in users.splitlines() if line.startswith("carol"))
    assert carol.split()[-2:] == ["NULL", "1"]  # never $0: cost NULL, one unpriced call
    unpriced = out.split("Unpriced usage")[1]
    assert "acme-llm-7b" in unpriced and "unknown_model" in unpriced
    assert '"pricing_status": "unknown_model"' in sql and '"cost_usd": null' in sql


def test_sql_without_a_running_service_says_how_to_start_it(tmp_path):
    result = cli("sql", "--url", "http://127.0.0.1:9", "SELECT 1", check=False)
    assert result.returncode == 2 and "spanmeter serve" in result.stderr


def test_refuses_to_bind_beyond_loopback_without_tokens(tmp_path):
    result = cli("serve", "--host", "0.0.0.0", "--dsn", f"chdb://{tmp_path}/x", check=False)
    assert result.returncode == 2
    assert "SPANMETER_INGEST_TOKEN" in result.stderr


def test_migrate_creates_the_schema_once(tmp_path):
    dsn = f"chdb://{tmp_path}/store"
    first = cli("migrate", "--dsn", dsn).stdout
    assert "0001_create_usage_events.sql" in first
    assert cli("migrate", "--dsn", dsn).stdout.strip() == "up to date"


def test_prices_shows_rates_and_long_context_tiers():
    out = cli("prices", "claude-sonnet-4-5", "--provider", "anthropic").stdout
    lines = out.splitlines()
    base = lines[1].split()
    assert base[:3] == ["anthropic", "claude-sonnet-4-5", "always"]
    assert base[3:8] == ["3", "0.3", "3.75", "6", "15"]
    assert "input > 200,000" in lines[2] and lines[2].split()[3:8] == ["6", "0.6", "7.5", "12", "22.5"]
    missing = cli("prices", "acme-llm-7b", check=False)
    assert missing.returncode == 2 and "unpriced" in missing.stderr
