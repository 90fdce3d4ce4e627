"""Store stage: the only module that talks to ClickHouse, always through clickhouse-connect.

    store = Store.connect("chdb:///var/lib/spanmeter", database="spanmeter")
    store.insert_usage(records)              # one insert per batch, typed Arrow columns
    store.query("SELECT ...", readonly=True)  # ad-hoc SQL, read-only at the engine level

The DSN picks the engine: `chdb://path` is ClickHouse embedded in this process (one process per
path), `http(s)://user:pass@host:8123/` a ClickHouse server. Errors are classified by ClickHouse
error code, never by message text.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import clickhouse_connect
import pyarrow as pa
import pyarrow.compute as pc
from clickhouse_connect.driver.exceptions import ClickHouseError, DatabaseError, OperationalError

from .errors import SpanmeterError, StoreUnavailable
from .records import UsageRecord

log = logging.getLogger(__name__)

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

USAGE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("event_time", "DateTime64(3, 'UTC')"),
    ("trace_id", "FixedString(16)"),
    ("span_id", "FixedString(8)"),
    ("sign", "Int8"),
    ("service_name", "LowCardinality(String)"),
    ("user_id", "String"),
    ("session_id", "String"),
    ("conversation_id", "String"),
    ("feature", "LowCardinality(String)"),
    ("team", "LowCardinality(String)"),
    ("agent", "LowCardinality(String)"),
    ("provider", "LowCardinality(String)"),
    ("operation", "LowCardinality(String)"),
    ("request_model", "LowCardinality(String)"),
    ("response_model", "LowCardinality(String)"),
    ("input_tokens", "UInt32"),
    ("cache_read_tokens", "UInt32"),
    ("cache_write_tokens", "UInt32"),
    ("output_tokens", "UInt32"),
    ("reasoning_tokens", "UInt32"),
    ("usage_status", "LowCardinality(String)"),
    ("cost_usd", "Nullable(Decimal(18, 12))"),
    ("pricing_status", "LowCardinality(String)"),
    ("price_version", "LowCardinality(String)"),
    ("reported_cost_usd", "Nullable(Decimal(18, 12))"),
    ("streaming", "Bool"),
    ("duration_ms", "UInt32"),
    ("source", "LowCardinality(String)"),
)
_USAGE_NAMES = [name for name, _ in USAGE_COLUMNS]
_USAGE_TYPES = [kind for _, kind in USAGE_COLUMNS]

# Where each column comes from in a UsageRecord (dotted: nested attribute).
_USAGE_SOURCES = {
    "event_time": "event_time_ns", "user_id": "attribution.user_id", "session_id": "attribution.session_id",
    "conversation_id": "attribution.conversation_id", "feature": "attribution.feature",
    "team": "attribution.team", "agent": "attribution.agent", "input_tokens": "usage.input",
    "cache_read_tokens": "usage.cache_read", "cache_write_tokens": "usage.cache_write",
    "output_tokens": "usage.output", "reasoning_tokens": "usage.reasoning",
}
_UINT32_MAX = 2**32 - 1


def _arrow_column(kind: str):
    """Python values -> an Arrow array ClickHouse reads as `kind` (the table's type, from USAGE_COLUMNS)."""
    simple = {
        "FixedString(16)": pa.binary(16), "FixedString(8)": pa.binary(8), "Int8": pa.int8(),
        "UInt32": pa.uint32(), "Bool": pa.bool_(), "String": pa.string(),
        "Nullable(Decimal(18, 12))": pa.decimal128(18, 12),
    }
    if kind in simple:
        arrow_type = simple[kind]
        return lambda values: pa.array(values, arrow_type)
    if kind == "LowCardinality(String)":
        # A dictionary array is what ClickHouse turns into LowCardinality without re-hashing.
        return lambda values: pa.array(values, pa.string()).dictionary_encode()
    if kind == "DateTime64(3, 'UTC')":
        def millis(nanoseconds):  # event times are after 1970: truncating is flooring
            ms = pc.divide(pa.array(nanoseconds, pa.int64()), 1_000_000)
            return ms.cast(pa.timestamp("ms", tz="UTC"))
        return millis
    raise TypeError(f"no Arrow form for ClickHouse type {kind}")


_USAGE_ARROW = [
    (name, attrgetter(_USAGE_SOURCES.get(name, name)), _arrow_column(kind)) for name, kind in USAGE_COLUMNS
]

_INSERT_SETTINGS = {
    # The writer already batches; chDB turns async inserts on by default, which holds every insert
    # back for the engine's own flush timeout.
    "async_insert": 0,
    # The rollups' views group each batch by the rollup key, so sorting and collapsing the block
    # again on insert into their SummingMergeTree is wasted (~25% of an insert's CPU). Merges
    # still sum, and every query sums.
    "optimize_on_insert": 0,
}

# ClickHouse error codes that mean "the query is wrong", not "the server is in trouble".
_USER_ERROR_CODES = frozenset({
    16,  # NO_SUCH_COLUMN_IN_TABLE
    36,  # BAD_ARGUMENTS
    42,  # NUMBER_OF_ARGUMENTS_DOESNT_MATCH
    43,  # ILLEGAL_TYPE_OF_ARGUMENT
    46,  # UNKNOWN_FUNCTION
    47,  # UNKNOWN_IDENTIFIER
    53,  # TYPE_MISMATCH
    60,  # UNKNOWN_TABLE
    62,  # SYNTAX_ERROR
    81,  # UNKNOWN_DATABASE
    164,  # READONLY
    184,  # ILLEGAL_AGGREGATION
    215,  # NOT_AN_AGGREGATE
    386,  # NO_COMMON_TYPE
    497,  # ACCESS_DENIED
})


# Root nodes of `EXPLAIN AST` for statements that only read.
_READ_STATEMENTS = frozenset({
    "SelectWithUnionQuery", "SelectIntersectExceptQuery", "ShowTables", "DescribeQuery",
    "ShowCreateTableQuery", "ExistsTableQuery", "Explain",
})


class QueryError(SpanmeterError):
    """The query itself is wrong or not allowed (400), with ClickHouse's message."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass(slots=True)
class QueryResult:
    columns: list[str]
    types: list[str]
    rows: list[tuple[Any, ...]]


def check_identifier(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a plain ClickHouse identifier: {name!r}")
    return name


def normalize_dsn(dsn: str) -> str:
    """Make a chdb:// DSN's path absolute (and create it): relative paths are from the cwd."""
    if not dsn.startswith("chdb:"):
        return dsn
    path = dsn[len("chdb:"):].lstrip("/") if not dsn.startswith("chdb:///") else dsn[len("chdb://"):]
    path = os.path.abspath(path or ".spanmeter/chdb")
    os.makedirs(path, exist_ok=True)
    return "chdb://" + path


class Store:
    def __init__(self, client: Any, database: str, *, embedded: bool) -> None:
        self.client = client
        self.database = check_identifier(database)
        self.embedded = embedded
        self.usage_table = f"{self.database}.usage_events"
        self.rollup_feed = f"{self.database}.usage_rollup_feed"
        # chDB runs queries in-process; one at a time keeps it predictable under threads.
        self._lock = threading.Lock() if embedded else None

    @classmethod
    def connect(cls, dsn: str, database: str = "spanmeter") -> Store:
        dsn = normalize_dsn(dsn)
        try:
            # A server session serialises queries; the ingest runs several at once.
            extra = {} if dsn.startswith("chdb:") else {"autogenerate_session_id": False}
            client = clickhouse_connect.get_client(dsn=dsn, **extra)
        except (ClickHouseError, OSError) as exc:
            raise StoreUnavailable(f"cannot connect to ClickHouse at {_redact(dsn)}: {exc}") from exc
        return cls(client, database, embedded=dsn.startswith("chdb:"))

    def _call(self, fn, *args, **kwargs):
        if self._lock is None:
            return fn(*args, **kwargs)
        with self._lock:
            return fn(*args, **kwargs)

    # --- writes -----------------------------------------------------------------------------

    def insert_usage(self, records: Sequence[UsageRecord], token: str | None = None) -> None:
        """Insert one batch, into usage_events and then the rollups' feed; raise StoreUnavailable
        if it was not committed.

        With a `token`, re-sending the same batch with the same token after a failure writes only
        what is missing, in the table and in every rollup (see 0010_alter_usage_deduplication_window).
        """
        if records:
            self.insert_usage_arrow(usage_arrow(records), token)

    def insert_usage_arrow(self, table: Any, token: str | None = None, *, rollups: bool = True) -> None:
        """`insert_usage` of an Arrow batch. With `rollups=False`, usage_events only: the caller
        owes the batch to `insert_rollups` (the writer, which feeds several batches at once)."""
        if token is None and rollups:
            # Both inserts need one token: ClickHouse would drop an identical block re-inserted
            # into usage_events by its content (0010's window), and the feed must drop it too.
            token = content_token(table)
        self._insert(self.usage_table, table, token)
        if rollups:
            self.insert_rollups(table, rollup_token(token))

    def insert_rollups(self, table: Any, token: str) -> None:
        """Feed committed usage rows to the rollups' views (0021); re-sent with the same token,
        only what is missing is written."""
        self._insert(self.rollup_feed, table, token)

    def _insert(self, target: str, table: Any, token: str | None) -> None:
        settings = _INSERT_SETTINGS
        if token:
            settings = {**_INSERT_SETTINGS, "insert_deduplication_token": token,
                        "deduplicate_blocks_in_dependent_materialized_views": 1}
        try:
            self._call(self.client.insert_arrow, target, table, settings=settings)
        except pa.ArrowException as exc:
            raise QueryError(f"usage rows could not be encoded: {exc}") from exc
        except (ClickHouseError, OSError) as exc:
            error = _classify(exc)
            if isinstance(error, QueryError):
                raise QueryError(f"insert of {table.num_rows} usage rows into {target} refused: {error}",
                                 error.code) from exc
            raise StoreUnavailable(f"insert of {table.num_rows} usage rows into {target} failed: {exc}") from exc

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        try:
            return self._call(self.client.command, sql, parameters=parameters)
        except (ClickHouseError, OSError) as exc:
            raise _classify(exc) from exc

    # --- reads ------------------------------------------------------------------------------

    def query(self, sql: str, parameters: dict[str, Any] | None = None, *, readonly: bool = False) -> QueryResult:
        settings = None
        if readonly:
            self._check_read_statement(sql)
            settings = {"readonly": 1}
        try:
            result = self._call(self.client.query, sql, parameters=parameters, settings=settings)
        except (ClickHouseError, OSError) as exc:
            raise _classify(exc) from exc
        return QueryResult(
            columns=list(result.column_names),
            types=[t.name for t in result.column_types],
            rows=[tuple(row) for row in result.result_rows],
        )

    def _check_read_statement(self, sql: str) -> None:
        """Refuse anything but a read statement, judged by ClickHouse's own parser.

        readonly=1 alone is not enough on chDB: a write statement refused under it leaves the
        whole embedded session read-only, and `SELECT ... INTO OUTFILE` writes a file anyway.
        """
        try:
            lines = [row[0] for row in self._call(self.client.query, "EXPLAIN AST " + sql).result_rows]
        except (ClickHouseError, OSError) as exc:
            raise _classify(exc) from exc
        root = lines[0].split(" ", 1)[0] if lines else ""
        writes_file = root == "SelectWithUnionQuery" and any(line.startswith(" Literal") for line in lines)
        if root not in _READ_STATEMENTS or writes_file:
            raise QueryError("read-only: only SELECT, SHOW, DESCRIBE, EXISTS and EXPLAIN are allowed", 164)

    def existing_keys(self, keys: Iterable[bytes]) -> set[bytes]:
        """Which (trace_id + span_id) keys already have a row: the table side of dedupe."""
        keys = list(keys)
        if not keys:
            return set()
        found: set[bytes] = set()
        for start in range(0, len(keys), 5000):
            chunk = keys[start:start + 5000]
            traces = ",".join(f"unhex('{k[:16].hex()}')" for k in chunk)
            result = self.query(
                f"SELECT DISTINCT trace_id, span_id FROM {self.usage_table} WHERE trace_id IN ({traces})"
            )
            found.update(_key_bytes(t) + _key_bytes(s) for t, s in result.rows)
        return found & set(keys)

    def recent_keys(self, since_ns: int, limit: int) -> list[bytes]:
        """Keys of facts whose event time is at or after `since_ns`, newest first, at most `limit`."""
        result = self.query(
            f"SELECT trace_id, span_id FROM {self.usage_table} "
            "WHERE event_time >= fromUnixTimestamp64Milli({since:Int64}) AND sign = 1 "
            "ORDER BY event_time DESC LIMIT {limit:UInt64}",
            {"since": since_ns // 1_000_000, "limit": limit},
        )
        return [_key_bytes(t) + _key_bytes(s) for t, s in result.rows]

    def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """One insert of `rows` into a table of this database other than usage_events (prices,
        audit records); raise StoreUnavailable if it was not committed."""
        if not rows:
            return
        target = f"{self.database}.{check_identifier(table.rsplit('.', 1)[-1])}"
        try:
            self._call(self.client.insert, target, rows, column_names=list(columns), settings={"async_insert": 0})
        except (ClickHouseError, OSError) as exc:
            raise StoreUnavailable(f"insert of {len(rows)} rows into {target} failed: {exc}") from exc

    def ping(self) -> bool:
        try:
            self._call(self.client.command, "SELECT 1")
        except (ClickHouseError, OSError):
            return False
        return True

    def close(self) -> None:
        self.client.close()


def _key_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("latin-1")
    return bytes(value)


def rollup_token(token: str) -> str:
    """The deduplication token of a batch's feed insert, from the token of its events insert."""
    return token + ":rollups"


def content_token(table: pa.Table) -> str:
    """A token naming an Arrow batch by its content (`content-<sha256>`, also a file name)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema.remove_metadata()) as out:
        out.write_table(table.replace_schema_metadata(None))
    return "content-" + hashlib.sha256(sink.getvalue()).hexdigest()


def usage_arrow(records: Sequence[UsageRecord]) -> pa.Table:
    """`usage_events` rows as an Arrow table with USAGE_COLUMNS' names and types, column by column.

    Arrow rather than clickhouse-connect's typed insert: building the Native format in Python
    (LowCardinality dictionaries above all) cost ~5 µs per row, more than the engine's insert.
    """
    arrays = []
    for name, get, to_arrow in _USAGE_ARROW:
        values = list(map(get, records))
        if name == "duration_ms":
            values = [min(v, _UINT32_MAX) for v in values]
        arrays.append(to_arrow(values))
    return pa.Table.from_arrays(arrays, names=_USAGE_NAMES)


def _classify(exc: BaseException) -> SpanmeterError:
    code = getattr(exc, "code", None)
    if isinstance(exc, DatabaseError) and code in _USER_ERROR_CODES:
        return QueryError(str(exc).split("\n", 1)[0], code)
    if isinstance(exc, (OperationalError, OSError)):
        return StoreUnavailable(f"ClickHouse unavailable: {exc}")
    if isinstance(exc, DatabaseError) and code is not None:
        return StoreUnavailable(f"ClickHouse error {code}: {str(exc).splitlines()[0]}")
    return StoreUnavailable(f"ClickHouse error: {exc}")


def _redact(dsn: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", dsn)
