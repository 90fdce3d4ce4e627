"""Apply the numbered SQL migrations in `spanmeter.clickhouse` (the repository's clickhouse/).

    applied = migrate(store)   # idempotent: runs what is pending, records it, returns the names

Files are frozen once landed: a checksum is recorded per version and a changed file is refused.
`{db}` in a file is replaced by the store's database name; nothing else is generated.

Two variants of the same frozen files, chosen by the environment at call time:

- **Cluster** (`SPANMETER_CLICKHOUSE_CLUSTER=<cluster>`, or `migrate(store, cluster=...)`): each
  statement is rewritten for a ClickHouse cluster by `cluster_statements`: `ON CLUSTER` on every
  DDL; each `*MergeTree` table becomes `<name>_local` with the `Replicated*MergeTree` engine
  (`/clickhouse/tables/{shard}/{database}/{table}`, `{replica}`: the servers' macros) plus a
  `Distributed` table under the original name, sharded by user where the table has `user_id`
  (a `Null` table, the rollups' feed, gets a `_local` twin and a `Distributed` table too);
  materialized views read and write the `_local` tables (each shard aggregates its own rows),
  plain views and every query keep the original names. A statement the rewrite does not know is
  refused rather than applied to one node only.
- **Access** (a ClickHouse server, not the embedded engine, with
  `SPANMETER_CLICKHOUSE_WRITER_PASSWORD` and `SPANMETER_CLICKHOUSE_READER_PASSWORD` set): after
  the schema, the `clickhouse/access/NNNN_*.sql` files create the roles and users: a writer for
  the ingest and the collector, a read-only user for Grafana and ad-hoc SQL. They are applied on
  every run (all idempotent), so changing a password is changing the variable and migrating again.
  Passwords travel as query parameters (`{writer_password:String}`), never inside the SQL text.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources

from .errors import SpanmeterError
from .store import QueryError, Store, check_identifier

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_STATEMENT_END = re.compile(r";\s*(?:\n|$)")

# ClickHouse error codes of a database or table that does not exist (yet).
_UNKNOWN_TABLE, _UNKNOWN_DATABASE = 60, 81

CLUSTER_ENV = "SPANMETER_CLICKHOUSE_CLUSTER"
LOCAL_SUFFIX = "_local"
# Replicated tables' path in ClickHouse Keeper; {shard}, {replica}, {database}, {table} are the
# servers' macros, expanded by ClickHouse itself.
REPLICA_PATH = "/clickhouse/tables/{shard}/{database}/{table}"
REPLICA_NAME = "{replica}"


class MigrationError(SpanmeterError):
    pass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self, database: str, **identifiers: str) -> list[str]:
        """The file's statements with `{db}` (and any other `{name}` given) replaced.

        Only the names given are replaced: `{writer_password:String}` stays a query parameter.
        """
        body = "\n".join(line for line in self.sql.splitlines() if not line.lstrip().startswith("--"))
        body = body.replace("{db}", database)
        for name, value in identifiers.items():
            body = body.replace("{" + name + "}", value)
        return [s.strip() for s in _STATEMENT_END.split(body) if s.strip()]


def load_migrations(folder: str | None = None) -> list[Migration]:
    """The numbered files of `spanmeter.clickhouse` (or of its subfolder `folder`), in order."""
    root = resources.files("spanmeter.clickhouse")
    if folder is not None:
        root = root.joinpath(folder)
        if not root.is_dir():
            raise MigrationError(f"spanmeter.clickhouse/{folder}/ is missing from this installation")
    found = []
    for entry in root.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a number: {versions}")
    return found


def migrate(store: Store, *, cluster: str | None = None, access: Access | None = None) -> list[str]:
    """Apply pending migrations; returns the names applied (access files are not listed).

    `cluster`: None reads SPANMETER_CLICKHOUSE_CLUSTER ("" or unset: a single server).
    `access`: None reads it from the environment (`Access.from_env`) for a server store.
    """
    db = store.database
    cluster = cluster_from_env() if cluster is None else (check_cluster(cluster) if cluster else None)
    migrations = load_migrations()
    applied = _applied(store, db)
    if applied is None or any(m.version not in applied for m in migrations):
        done = _apply_schema(store, db, migrations, applied or {}, cluster)
    else:
        _check_unchanged(migrations, applied)
        # Up to date: no DDL at all, so a least-privileged user (the ingest's writer) can start.
        done = []
    if access is None and not store.embedded:
        access = Access.from_env()
    if access is not None:
        if store.embedded:
            raise MigrationError("users and roles need a ClickHouse server: the embedded engine has no access control")
        apply_access(store, access, cluster)
    return done


def _applied(store: Store, db: str) -> dict[int, tuple[str, str]] | None:
    try:
        rows = store.query(f"SELECT version, name, checksum FROM {db}.schema_migrations").rows
    except QueryError as exc:
        if exc.code in (_UNKNOWN_TABLE, _UNKNOWN_DATABASE):
            return None
        raise
    return {v: (n, c) for v, n, c in rows}


def _check_unchanged(migrations: Iterable[Migration], applied: Mapping[int, tuple[str, str]]) -> None:
    for migration in migrations:
        if migration.version in applied:
            name, checksum = applied[migration.version]
            if checksum != migration.checksum:
                raise MigrationError(f"{migration.name} changed after it was applied as {name}: add a new migration instead")


def _apply_schema(store: Store, db: str, migrations: list[Migration], applied: Mapping[int, tuple[str, str]],
                  cluster: str | None) -> list[str]:
    on = f" ON CLUSTER {_quote(cluster)}" if cluster else ""
    store.command(f"CREATE DATABASE IF NOT EXISTS {db}{on}")
    # Replicated on every node of the cluster (one shard-independent path): any node that runs
    # migrate sees what another applied.
    engine = (f"ReplicatedMergeTree('/clickhouse/tables/{{database}}/schema_migrations', '{REPLICA_NAME}')"
              if cluster else "MergeTree")
    store.command(
        f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations{on} "
        "(version UInt32, name String, checksum String, applied_at DateTime DEFAULT now()) "
        f"ENGINE = {engine} ORDER BY version"
    )
    _check_unchanged(migrations, applied)
    local_tables = merge_tree_tables(migrations, db) if cluster else set()
    done = []
    for migration in migrations:
        if migration.version in applied:
            continue
        statements = migration.statements(db)
        if cluster:
            statements = cluster_statements(statements, cluster, db, local_tables)
        for statement in statements:
            store.command(statement)
        store.command(
            f"INSERT INTO {db}.schema_migrations (version, name, checksum) VALUES "
            "({v:UInt32}, {n:String}, {c:String})",
            {"v": migration.version, "n": migration.name, "c": migration.checksum},
        )
        done.append(migration.name)
    return done


# --- access: roles and users on a server ------------------------------------------------------

WRITER_USER_ENV, WRITER_PASSWORD_ENV = "SPANMETER_CLICKHOUSE_WRITER_USER", "SPANMETER_CLICKHOUSE_WRITER_PASSWORD"
READER_USER_ENV, READER_PASSWORD_ENV = "SPANMETER_CLICKHOUSE_READER_USER", "SPANMETER_CLICKHOUSE_READER_PASSWORD"
TRACES_DATABASE_ENV = "SPANMETER_CLICKHOUSE_TRACES_DATABASE"  # the collector's variable too


@dataclass(frozen=True)
class Access:
    """Who may do what on a ClickHouse server (clickhouse/access/)."""

    writer_password: str
    reader_password: str
    writer_user: str = "spanmeter_ingest"
    reader_user: str = "spanmeter_reader"
    traces_database: str = "otel"

    def __post_init__(self) -> None:
        for name in (self.writer_user, self.reader_user, self.traces_database):
            check_identifier(name)
        if not self.writer_password or not self.reader_password:
            raise MigrationError("empty ClickHouse password for the writer or the reader user")

    def __repr__(self) -> str:  # never print the passwords
        return f"Access(writer_user={self.writer_user!r}, reader_user={self.reader_user!r}, traces_database={self.traces_database!r})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Access | None:
        env = os.environ if env is None else env
        writer, reader = env.get(WRITER_PASSWORD_ENV, ""), env.get(READER_PASSWORD_ENV, "")
        if not writer and not reader:
            return None
        if not writer or not reader:
            raise MigrationError(f"set both {WRITER_PASSWORD_ENV} and {READER_PASSWORD_ENV}, or neither")
        return cls(
            writer_password=writer,
            reader_password=reader,
            writer_user=env.get(WRITER_USER_ENV) or cls.writer_user,
            reader_user=env.get(READER_USER_ENV) or cls.reader_user,
            traces_database=env.get(TRACES_DATABASE_ENV) or cls.traces_database,
        )

    @property
    def identifiers(self) -> dict[str, str]:
        return {"writer_user": self.writer_user, "reader_user": self.reader_user, "traces_db": self.traces_database}

    @property
    def parameters(self) -> dict[str, str]:
        return {"writer_password": self.writer_password, "reader_password": self.reader_password}


def access_statements(access: Access, database: str, cluster: str | None = None) -> list[tuple[str, dict[str, str]]]:
    """(statement, query parameters) for every access file, in order; passwords only as parameters."""
    out = []
    for migration in load_migrations("access"):
        statements = migration.statements(database, **access.identifiers)
        if cluster:
            statements = cluster_statements(statements, cluster, database, set())
        for statement in statements:
            used = set(re.findall(r"\{(\w+):String\}", statement))
            unknown = used - set(access.parameters)
            if unknown:
                raise MigrationError(f"{migration.name}: unknown parameter(s) {sorted(unknown)}")
            out.append((statement, {k: v for k, v in access.parameters.items() if k in used}))
    return out


def apply_access(store: Store, access: Access, cluster: str | None = None) -> None:
    for statement, parameters in access_statements(access, store.database, cluster):
        store.command(statement, parameters or None)


# --- the cluster variant ----------------------------------------------------------------------

_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9_.{}-]{1,128}$")


def check_cluster(name: str) -> str:
    if not _CLUSTER_NAME.match(name):
        raise MigrationError(f"not a ClickHouse cluster name: {name!r}")
    return name


def cluster_from_env(env: Mapping[str, str] | None = None) -> str | None:
    value = (os.environ if env is None else env).get(CLUSTER_ENV, "").strip()
    return check_cluster(value) if value else None


def _quote(name: str) -> str:
    return "'" + name + "'"


_CREATE_TABLE = re.compile(r"^CREATE\s+TABLE\s+(IF\s+NOT\s+EXISTS\s+)?(\w+)\.(\w+)\s*(?=\()", re.I | re.S)
_CREATE_MV = re.compile(r"^CREATE\s+MATERIALIZED\s+VIEW\s+(IF\s+NOT\s+EXISTS\s+)?(\w+)\.(\w+)\s+(.*)$", re.I | re.S)
_CREATE_VIEW = re.compile(r"^CREATE\s+(OR\s+REPLACE\s+)?VIEW\s+(IF\s+NOT\s+EXISTS\s+)?(\w+)\.(\w+)\s+(.*)$", re.I | re.S)
_ALTER_TABLE = re.compile(r"^ALTER\s+TABLE\s+(\w+)\.(\w+)\s+(.*)$", re.I | re.S)
_DROP = re.compile(r"^DROP\s+(TABLE|VIEW)\s+(IF\s+EXISTS\s+)?(\w+)\.(\w+)\s*(.*)$", re.I | re.S)
_INSERT = re.compile(r"^INSERT\s+INTO\s", re.I)
_CREATE_ROLE = re.compile(r"^CREATE\s+ROLE\s+(IF\s+NOT\s+EXISTS\s+)?(\w+)(.*)$", re.I | re.S)
_USER = re.compile(r"^(CREATE\s+USER\s+(?:IF\s+NOT\s+EXISTS\s+)?|ALTER\s+USER\s+(?:IF\s+EXISTS\s+)?)(\w+)(.*)$", re.I | re.S)
_GRANT = re.compile(r"^(GRANT|REVOKE)\s+(.*)$", re.I | re.S)
_ENGINE = re.compile(r"\bENGINE\s*=\s*(\w*)MergeTree\b", re.I)
_NULL_ENGINE = re.compile(r"\bENGINE\s*=\s*Null\b", re.I)
_COLUMN_ACTION = re.compile(r"^\s*(ADD|DROP|MODIFY|RENAME|COMMENT)\s+COLUMN\b", re.I)


def merge_tree_tables(migrations: Iterable[Migration], database: str) -> set[str]:
    """Names of every table the migrations create that gets a `_local` twin: each `*MergeTree`
    table, and each `Null` one (the rollups' feed: its rows reach the views of the shard they are
    sent to, as usage_events' rows do)."""
    names = set()
    for migration in migrations:
        for statement in migration.statements(database):
            m = _CREATE_TABLE.match(statement)
            if m:
                rest = statement[_matching_paren(statement, m.end()) + 1:]
                if _ENGINE.search(rest) or _NULL_ENGINE.search(rest):
                    names.add(m.group(3))
    return names


def cluster_statements(statements: Iterable[str], cluster: str, database: str, local_tables: set[str]) -> list[str]:
    """The cluster variant of a migration's statements (see the module docstring)."""
    on = f"ON CLUSTER {_quote(check_cluster(cluster))}"
    out: list[str] = []
    for statement in statements:
        out.extend(_cluster_statement(statement, on, cluster, database, local_tables))
    return out


def _cluster_statement(s: str, on: str, cluster: str, database: str, local_tables: set[str]) -> list[str]:
    if m := _CREATE_TABLE.match(s):
        if_not_exists, db, name = m.group(1) or "", m.group(2), m.group(3)
        close = _matching_paren(s, m.end())
        columns, rest = s[m.end():close + 1], s[close + 1:]
        if name not in local_tables:
            return [f"CREATE TABLE {if_not_exists}{db}.{name} {on} {columns}{rest}"]
        local = name + LOCAL_SUFFIX
        rest = _replicated_engine(rest, s)
        key = "cityHash64(user_id)" if re.search(r"^\s*user_id\s", columns, re.M) else "rand()"
        return [
            f"CREATE TABLE {if_not_exists}{db}.{local} {on} {columns}{rest}",
            f"CREATE TABLE {if_not_exists}{db}.{name} {on} AS {db}.{local} "
            f"ENGINE = Distributed({_quote(cluster)}, {_quote(db)}, {_quote(local)}, {key})",
        ]
    if m := _CREATE_MV.match(s):
        if_not_exists, db, name, body = m.group(1) or "", m.group(2), m.group(3), m.group(4)
        if not re.match(r"TO\s", body, re.I):
            raise MigrationError(f"a materialized view without TO has no cluster variant: {s[:80]}")
        # Each shard's view aggregates the rows that shard stores, into that shard's rollup.
        body = _to_local(body, database, local_tables)
        return [f"CREATE MATERIALIZED VIEW {if_not_exists}{db}.{name} {on} {body}"]
    if m := _CREATE_VIEW.match(s):
        replace, if_not_exists, db, name, body = m.group(1) or "", m.group(2) or "", m.group(3), m.group(4), m.group(5)
        return [f"CREATE {replace}VIEW {if_not_exists}{db}.{name} {on} {body}"]
    if m := _ALTER_TABLE.match(s):
        db, name, actions = m.groups()
        if name not in local_tables:
            return [f"ALTER TABLE {db}.{name} {on} {actions}"]
        statements = [f"ALTER TABLE {db}.{name}{LOCAL_SUFFIX} {on} {actions}"]
        # Column changes must reach the Distributed table too; indexes, TTLs, mutations must not.
        if all(_COLUMN_ACTION.match(a) for a in _split_top_level(actions, ",")):
            statements.append(f"ALTER TABLE {db}.{name} {on} {actions}")
        return statements
    if m := _DROP.match(s):
        kind, if_exists, db, name, rest = m.group(1), m.group(2) or "", m.group(3), m.group(4), m.group(5)
        statements = [f"DROP {kind} {if_exists}{db}.{name} {on} {rest}".rstrip()]
        if name in local_tables:
            statements.append(f"DROP {kind} {if_exists}{db}.{name}{LOCAL_SUFFIX} {on} {rest}".rstrip())
        return statements
    if _INSERT.match(s):
        return [s]  # through the Distributed table, once
    if m := _CREATE_ROLE.match(s):
        return [f"CREATE ROLE {m.group(1) or ''}{m.group(2)} {on}{m.group(3)}"]
    if m := _USER.match(s):
        return [f"{m.group(1)}{m.group(2)} {on}{m.group(3)}"]
    if m := _GRANT.match(s):
        return [f"{m.group(1)} {on} {m.group(2)}"]
    raise MigrationError(f"no cluster variant for this statement (extend spanmeter.ingest.migrate): {s[:120]}")


def _replicated_engine(rest: str, statement: str) -> str:
    if _NULL_ENGINE.search(rest):
        return rest  # stores nothing: nothing to replicate
    m = _ENGINE.search(rest)
    if m is None:
        raise MigrationError(f"no MergeTree engine in: {statement[:80]}")
    head = f"ENGINE = Replicated{m.group(1)}MergeTree('{REPLICA_PATH}', '{REPLICA_NAME}'"
    after = rest[m.end():]
    args = re.match(r"\s*\(", after)
    if args:
        close = _matching_paren(after, args.end() - 1)
        inner = after[args.end():close].strip()
        return rest[:m.start()] + head + (f", {inner})" if inner else ")") + after[close + 1:]
    return rest[:m.start()] + head + ")" + after


def _to_local(sql: str, database: str, local_tables: set[str]) -> str:
    def sub(m: re.Match[str]) -> str:
        return f"{m.group(1)}.{m.group(2)}{LOCAL_SUFFIX}" if m.group(2) in local_tables else m.group(0)

    return re.sub(rf"\b({re.escape(database)})\.(\w+)\b", sub, sql)


def _matching_paren(s: str, open_pos: int) -> int:
    """Index of the ')' closing the '(' at open_pos; quotes (ClickHouse's rules) are skipped."""
    depth = 0
    i = open_pos
    while i < len(s):
        c = s[i]
        if c in "'\"`":
            i = _skip_quoted(s, i)
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise MigrationError(f"unbalanced parentheses: {s[:80]}")


def _skip_quoted(s: str, pos: int) -> int:
    quote = s[pos]
    i = pos + 1
    while i < len(s):
        if s[i] == "\\":
            i += 2
        elif s[i] == quote:
            if i + 1 < len(s) and s[i + 1] == quote:
                i += 2
                continue
            return i + 1
        else:
            i += 1
    return len(s)


def _split_top_level(s: str, sep: str) -> list[str]:
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        c = s[i]
        if c in "'\"`":
            i = _skip_quoted(s, i)
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == sep and depth == 0:
            parts.append(s[start:i])
            start = i + 1
        i += 1
    parts.append(s[start:])
    return parts
