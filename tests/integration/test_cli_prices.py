"""The price commands as a user runs them, against a real `spanmeter serve` on the embedded store:
prices add/list/diff, reprice (dry run, applied, again), backfill (twice) and reconcile.

alice's call: gpt-4o-mini, 10,000 in (4,000 cached), 2,000 out. At the override's typo (input 1.50):
6000*1.50 + 4000*0.075 + 2000*0.60 = 0.0105; at the published 0.15: 0.0009 + 0.0003 + 0.0012 = 0.0024.
carol's call: acme-llm-7b, 1,000 in, 100 out; unknown, then 0.50/1.50: 0.0005 + 0.00015 = 0.00065.
"""

import json
import os
import subprocess

from tests.support.otlp import chat, to_protobuf
from tests.support.service import REPO, SPANMETER, running_service

LOG = REPO / "tests" / "fixtures" / "chatlogs" / "paperdebugger.jsonl"
TYPO = """version: 1
rates:
  - provider: openai
    model: gpt-4o-mini
    effective_from: 2025-12-01
    input: 1.50
    cache_read: 0.075
    output: 0.60
"""


def cli(*args, env, check=True):
    result = subprocess.run([str(SPANMETER), *args], capture_output=True, text=True, timeout=180, env=env)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_prices_reprice_backfill_reconcile_through_the_service(tmp_path):
    prices = tmp_path / "prices.yaml"
    prices.write_text(TYPO)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPANMETER_")}
    env["SPANMETER_PRICES_FILE"] = str(prices)
    spans = to_protobuf([
        chat(1, 1, model="gpt-4o-mini", input=10_000, cache_read=4_000, output=2_000, user="alice"),
        chat(2, 1, model="acme-llm-7b", provider="acme", input=1_000, output=100, user="carol"),
    ])
    with running_service(tmp_path, env={"SPANMETER_PRICES_FILE": str(prices)}) as svc:
        assert svc.post_traces(spans).status_code == 200
        env["SPANMETER_URL"] = svc.url

        added = cli("prices", "add", "acme", "acme-llm-7b", "--input", "0.5", "--output", "1.5", "--from", "2025-01-01",
                    "--note", "contract", env=env).stdout
        assert "acme-llm-7b" in added and "reprice --since 2025-01-01" in added
        refused = cli("prices", "add", "openai", "gpt-4o-mini", "--input", "0.15", "--output", "0.6",
                      "--from", "2025-12-01", env=env, check=False)
        assert refused.returncode == 2 and "--supersede" in refused.stderr
        cli("prices", "add", "openai", "gpt-4o-mini", "--input", "0.15", "--cache-read", "0.075", "--output", "0.6",
            "--from", "2025-12-01", "--supersede", "--note", "typo fixed", env=env)
        assert prices.read_text().startswith(TYPO)  # appended: history never edited

        listed = cli("prices", "list", env=env).stdout
        assert [line.split()[1] for line in listed.splitlines()[1:]] == ["gpt-4o-mini", "gpt-4o-mini", "acme-llm-7b"]
        diff = cli("prices", "diff", env=env).stdout  # the overrides against the genai-prices dataset
        assert "acme" in diff and "(newly priced)" in diff
        assert "gpt-4o-mini" not in diff  # the superseding entry agrees with the dataset again
        typo_diff = cli("prices", "diff", str(_write(tmp_path, "typo.yaml", TYPO)), str(prices), env=env).stdout
        assert "gpt-4o-mini" in typo_diff and "1.5" in typo_diff and "0.15" in typo_diff and "-90.00%" in typo_diff

        dry = cli("reprice", "--since", "2025-12-01", "--dry-run", env=env).stdout
        assert "would correct: 2 rows (1 newly priced, 1 repriced)" in dry
        done = cli("reprice", "--since", "2025-12-01", env=env).stdout
        assert "corrected: 2 rows (1 newly priced, 1 repriced)" in done and "$0.0105 + 1 unpriced -> $0.00305" in done
        again = cli("reprice", "--since", "2025-12-01", env=env).stdout
        assert "corrected: 0 rows" in again
        rows = svc.sql("SELECT user_id, sum(cost_usd), sum(unpriced_requests) FROM spanmeter.usage_daily "
                       "GROUP BY user_id ORDER BY user_id")
        assert rows == [["alice", "0.002400000000", 0], ["carol", "0.000650000000", 0]]

        first = json.loads(cli("backfill", str(LOG), "--service", "paperdebugger", env=env).stdout)
        assert (first["calls"], first["stored"], first["duplicates"], first["estimated"]) == (8, 8, 0, 5)
        second = json.loads(cli("backfill", str(LOG), "--service", "paperdebugger", env=env).stdout)
        assert (second["stored"], second["duplicates"]) == (0, 8)
        report = cli("report", "--days", "730", env=env).stdout
        unpriced, estimated = report.split("Unpriced usage")[1].split("Estimated usage")
        assert "acme-llm-7b" not in unpriced and "(none)" in unpriced
        assert [line.split()[:4] for line in estimated.splitlines()[3:]] == [
            ["2025-06-04", "openai", "gpt-4o", "3"], ["2025-06-02", "openai", "gpt-4o-mini", "2"]]

        bill = _write(tmp_path, "bill.csv", "date,provider,model,cost_usd\n2026-01-01,openai,gpt-4o-mini,0.0024\n"
                                            "2026-01-01,acme,acme-llm-7b,0.00065\n2026-01-02,openai,gpt-4o-mini,0.50\n")
        checked = cli("reconcile", str(bill), "--provider", "csv", "--check", env=env, check=False)
        assert checked.returncode == 1, checked.stderr
        flagged = checked.stdout.split("\n\n")[0].splitlines()[2:]
        assert len(flagged) == 1 and flagged[0].split()[:3] == ["2026-01-02", "openai", "gpt-4o-mini"]
        assert "on the bill, not metered" in flagged[0]


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path
