"""Pseudonymous user ids (SPANMETER_USER_ID_KEY): HMAC-SHA256 in the ingest, before storage.

Same user and key -> same pseudonym (so totals, rollups and caps per user still add up);
another key -> unrelated pseudonyms; the raw id is in no column of any table, whether the user
was on the counted span itself, lent by an ancestor in the same export, or lent by an ancestor
that arrived in an earlier export. Session and conversation ids are kept as sent.
"""

from __future__ import annotations

import os
import re
import subprocess

from fastapi.testclient import TestClient
from pydantic import SecretStr

from spanmeter.ingest.app import create_app
from spanmeter.ingest.config import Settings
from spanmeter.ingest.privacy import pseudonymize_user_id
from tests.support.otlp import chat, span, to_json, to_protobuf
from tests.support.service import SPANMETER
from tests.support.storecheck import find_everywhere

KEY = "k-" + "5e" * 16
PB = {"Content-Type": "application/x-protobuf"}


def test_pseudonym_is_keyed_stable_and_opaque():
    alice = pseudonymize_user_id("alice@example.com", SecretStr(KEY))
    assert re.fullmatch(r"u_[a-z2-7]{26}", alice)
    assert pseudonymize_user_id("alice@example.com", KEY) == alice  # same user, same key
    assert pseudonymize_user_id("alice@example.com", KEY + "x") != alice  # another key
    assert pseudonymize_user_id("bob@example.com", KEY) != alice
    assert pseudonymize_user_id("", KEY) == ""  # unknown stays unknown
    assert "alice" not in alice


def test_raw_user_ids_are_stored_nowhere(chdb_path, database, store):
    settings = Settings(clickhouse_dsn=f"chdb://{chdb_path}", database=database, batch_max_wait_ms=5, user_id_key=KEY)
    exports = [
        # On the counted span itself; twice, in protobuf and JSON.
        (to_protobuf([chat(1, 1, model="gpt-4o-mini", input=100, output=10, user="alice@example.com",
                           extra={"session.id": "sess-1", "gen_ai.conversation.id": "conv-1"})]), PB),
        (to_json([chat(2, 1, model="gpt-4o-mini", input=50, output=5, user="alice@example.com")]),
         {"Content-Type": "application/json"}),
        # Lent by an ancestor in the same export (enduser.id, another convention).
        (to_protobuf([span("POST /chat", 3, 1, attrs={"enduser.id": "bob@example.com"}),
                      chat(3, 2, parent=1, model="gpt-4o-mini", input=7, output=1)]), PB),
        # Lent by an ancestor that arrived in an earlier export.
        (to_protobuf([span("POST /chat", 4, 1, attrs={"user.id": "carol@example.com"})]), PB),
        (to_protobuf([chat(4, 2, parent=1, model="gpt-4o-mini", input=9, output=1)]), PB),
    ]
    with TestClient(create_app(settings, store=store)) as client:
        for body, headers in exports:
            assert client.post("/v1/traces", content=body, headers=headers).status_code == 200
    rows = lambda q: store.query(q).rows  # noqa: E731
    stored = dict(rows(f"SELECT user_id, sum(input_tokens) FROM {database}.usage_events GROUP BY user_id"))
    alice, bob = pseudonymize_user_id("alice@example.com", KEY), pseudonymize_user_id("bob@example.com", KEY)
    assert stored[alice] == 150 and stored[bob] == 7
    carol = pseudonymize_user_id("carol@example.com", KEY)
    # Cross-export attribution is the writer's (when it lends it); a raw id is never what lands.
    assert set(stored) <= {alice, bob, carol, ""}
    assert rows(f"SELECT sum(requests) FROM {database}.usage_daily WHERE user_id = '{alice}'")[0][0] == 2
    for raw in ("alice", "bob@", "carol@", "example.com"):
        assert find_everywhere(rows, database, raw) == [], raw
    # Session and conversation ids are kept: they identify a conversation, not a person.
    assert rows(f"SELECT session_id, conversation_id FROM {database}.usage_events WHERE user_id = '{alice}' "
                "AND session_id != ''") == [("sess-1", "conv-1")]


def test_a_different_key_gives_different_pseudonyms(chdb_path, store, database):
    body = to_protobuf([chat(1, 1, model="gpt-4o-mini", input=1, output=1, user="dave")])
    seen = []
    for key in (KEY, KEY + "-rotated"):
        db = f"{database}_{len(seen)}"
        settings = Settings(clickhouse_dsn=f"chdb://{chdb_path}", database=db, batch_max_wait_ms=5, user_id_key=key)
        with TestClient(create_app(settings, store=None)) as client:
            assert client.post("/v1/traces", content=body, headers=PB).status_code == 200
            seen.append(client.app.state.store.query(f"SELECT user_id FROM {db}.usage_events").rows[0][0])
            client.app.state.store.command(f"DROP DATABASE {db} SYNC")
    assert seen == [pseudonymize_user_id("dave", KEY), pseudonymize_user_id("dave", KEY + "-rotated")]
    assert seen[0] != seen[1]


def test_cli_prints_the_pseudonym_an_operator_looks_up():
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPANMETER_")}
    out = subprocess.run([str(SPANMETER), "pseudonym", "alice@example.com"], capture_output=True, text=True,
                         env={**env, "SPANMETER_USER_ID_KEY": KEY}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == pseudonymize_user_id("alice@example.com", KEY)
    missing = subprocess.run([str(SPANMETER), "pseudonym", "x"], capture_output=True, text=True,
                             env=env, timeout=60)
    assert missing.returncode == 2 and "SPANMETER_USER_ID_KEY" in missing.stderr
