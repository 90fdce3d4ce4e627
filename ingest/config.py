"""Settings of the `spanmeter serve` process, from SPANMETER_* environment variables.

Precedence: explicit argument (CLI flag) > environment > default. Nothing is read at import time:
call `get_settings()` (cached) or build `Settings(...)` yourself in tests.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DSN = "chdb://" + str(Path(".spanmeter") / "chdb")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SPANMETER_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 4318
    # chdb:///abs/path or chdb://relative/path (embedded), or http(s)://user:pass@host:8123 (server).
    clickhouse_dsn: str = DEFAULT_DSN
    database: str = "spanmeter"
    # Bearer tokens: ingest_token for POST /v1/traces, admin_token for /v1/sql and the admin API.
    # Compared in constant time, never logged. Blank means not set.
    ingest_token: SecretStr | None = None
    admin_token: SecretStr | None = None
    # Key of the keyed hash (HMAC-SHA256) that replaces every user id before it is stored
    # (ingest/privacy.py). Unset: user ids are stored as sent.
    user_id_key: SecretStr | None = None
    prices_file: Path | None = None
    # Where a batch waits while it is inserted (default: beside the embedded store, else .spanmeter/).
    state_dir: Path | None = None

    # Limits (413 past them). The decompressed limit also bounds gzip bombs.
    max_body_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    max_decompressed_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    max_spans_per_request: int = Field(default=100_000, gt=0)
    max_attribute_length: int = Field(default=4096, gt=0)

    # Group commit: a request is acknowledged once the batch holding its rows is inserted.
    batch_max_rows: int = Field(default=50_000, gt=0)
    batch_max_wait_ms: int = Field(default=50, ge=0)
    # A batch also waits as long as the previous insert took, up to this: when inserts are slow
    # (their fixed cost dominates small batches), fewer and larger ones. 0: never.
    batch_hold_ms: int = Field(default=200, ge=0)
    queue_max_rows: int = Field(default=500_000, gt=0)
    # The rollups (0021) are fed committed batches at most this long after their insert into
    # usage_events (after 0.1 s without exports, sooner), several batches at once: a feed write
    # costs the rollups' views a fixed ~40 ms however many rows it carries. Dashboards and rollup
    # reads trail usage_events by up to this; 0: every batch is fed as soon as it is committed,
    # before its requests are answered.
    rollup_delay_ms: int = Field(default=1000, ge=0)
    # Past this wait of the oldest queued rows the writer is behind: exports get 429 (before
    # being read) until it catches up, which bounds every acknowledgement's latency.
    queue_max_delay_ms: int = Field(default=1000, gt=0)
    retry_after_seconds: int = Field(default=5, gt=0)
    # Processes that decode and normalize exports (ingest/workers.py), beside the one that
    # serves HTTP and writes. Unset: one per core beyond the first, at most 4; 0: in-process.
    ingest_workers: int | None = Field(default=None, ge=0)
    # Body bytes of exports waiting to be decoded; past it an export is answered 429 before it is
    # read (an overloaded service answers at once instead of queueing without bound).
    max_pending_decode_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    # How many recent (trace_id, span_id) keys the writer remembers to keep duplicates out.
    dedupe_keys: int = Field(default=2_000_000, gt=0)

    # Caps (ingest/caps.py). No tiers file: spend per window is shown, nothing is capped.
    tiers_file: Path | None = None
    # Signs user-scoped tokens; without it the key is derived from admin_token (rotating that
    # then revokes every user token).
    user_token_secret: SecretStr | None = None
    # A user's cached spend is reloaded in the background after this long: it picks up rows
    # other processes wrote (several ingest replicas) and settings changed elsewhere. Unset:
    # 30 s on a ClickHouse server, never on embedded chDB (no other process can write to it).
    caps_refresh_seconds: float | None = Field(default=None, gt=0)
    # How long a /check's estimated cost stays reserved if its call's usage never lands.
    caps_reservation_seconds: float = Field(default=60.0, gt=0)
    caps_cache_users: int = Field(default=100_000, gt=0)
    # Every this many seconds (and at stop) the caps engine's numbers per user and window are
    # written to cap_status, for the Budgets dashboard and SQL (ingest/budgets.py). 0: never.
    caps_snapshot_seconds: float = Field(default=60.0, ge=0)

    @field_validator("ingest_token", "admin_token", "user_id_key", mode="after")
    @classmethod
    def _blank_is_unset(cls, value: SecretStr | None) -> SecretStr | None:
        # `SPANMETER_INGEST_TOKEN=` (an unset variable in a compose file) must not become a token
        # that "Bearer " with nothing after it would match.
        return value if value is not None and value.get_secret_value().strip() else None

    @property
    def is_embedded(self) -> bool:
        return self.clickhouse_dsn.startswith("chdb:")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
