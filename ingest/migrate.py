"""Apply the numbered SQL migrations in `spanmeter.clickhouse` (the repository's clickhouse/).

    applied = migrate(store)   # idempotent: runs what is pending, records it, returns the names

Files are frozen once landed: a checksum is recorded per version and a changed file is refused.
`{db}` in a file is replaced by the store's database name; nothing else is generated.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from .errors import SpanmeterError
from .store import Store

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_STATEMENT_END = re.compile(r";\s*(?:\n|$)")


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

    def statements(self, database: str) -> list[str]:
        body = "\n".join(line for line in self.sql.splitlines() if not line.lstrip().startswith("--"))
        body = body.replace("{db}", database)
        return [s.strip() for s in _STATEMENT_END.split(body) if s.strip()]


def load_migrations() -> list[Migration]:
    found = []
    for entry in resources.files("spanmeter.clickhouse").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a number: {versions}")
    return found


def migrate(store: Store) -> list[str]:
    db = store.database
    store.command(f"CREATE DATABASE IF NOT EXISTS {db}")
    store.command(
        f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations "
        "(version UInt32, name String, checksum String, applied_at DateTime DEFAULT now()) "
        "ENGINE = MergeTree ORDER BY version"
    )
    applied = {v: (n, c) for v, n, c in store.query(f"SELECT version, name, checksum FROM {db}.schema_migrations").rows}
    done = []
    for migration in load_migrations():
        if migration.version in applied:
            name, checksum = applied[migration.version]
            if checksum != migration.checksum:
                raise MigrationError(f"{migration.name} changed after it was applied as {name}: add a new migration instead")
            continue
        for statement in migration.statements(db):
            store.command(statement)
        store.command(
            f"INSERT INTO {db}.schema_migrations (version, name, checksum) VALUES "
            "({v:UInt32}, {n:String}, {c:String})",
            {"v": migration.version, "n": migration.name, "c": migration.checksum},
        )
        done.append(migration.name)
    return done
