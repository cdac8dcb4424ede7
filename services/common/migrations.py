"""Versioned schemas: one small migration runner for SQLite and PostgreSQL.

A component's schema (the accounting ledger, say) is an ordered tuple of `Migration`s numbered
1, 2, 3, ... with no gaps; each carries its statements for both dialects side by side, so a
version means the same tables and columns on either backend. The database records what it has
in a `schema_migrations` table, one row per (component, version) applied, so several
components can share one PostgreSQL database.

`migrate` runs inside one transaction that the caller has opened (and commits): it takes the
schema lock, creates `schema_migrations` if needed, and applies every migration not recorded
yet, in order, recording each. So it is idempotent (a second run applies nothing), all or
nothing (DDL is transactional in both databases), and safe when several replicas start at
once: the lock makes the second wait and then find everything applied.

- SQLite: the caller's `BEGIN IMMEDIATE` is the lock (one writer per file).
- PostgreSQL: `pg_advisory_xact_lock` on one key for the whole `schema_migrations` table
  (every component creates and writes it: two components starting at once on a new database,
  such as an orchestrator and an accounting of `up --replicas`, would otherwise race in
  CREATE TABLE IF NOT EXISTS), then on a key derived from the component's name; both taken
  before anything else and released by the transaction's end.

A database whose records name a version this code does not know was migrated by a newer
release: `SchemaTooNew` (FAILED_PRECONDITION), and nothing is touched. A database made before
`schema_migrations` existed (the SQLite ledger kept its version in PRAGMA user_version) is
adopted: `adopted=N` records versions 1..N as applied without running them, once, when the
component has no record yet.
"""

from __future__ import annotations

import enum
import hashlib
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from services.common.errors import FailedPrecondition

# Runs one statement with its parameters (the dialect's placeholder) and returns the rows it
# produced (none for DDL): each backend passes a small function over its own connection.
Execute = Callable[[str, Sequence[object]], list[tuple[Any, ...]]]


def sqlite_execute(db: sqlite3.Connection) -> Execute:
    """`Execute` over a sqlite3 connection (PostgreSQL's is services.common.postgres.migrate_schema's)."""
    return lambda statement, params: db.execute(statement, params).fetchall()


class Dialect(enum.Enum):
    SQLITE = "sqlite"
    POSTGRES = "postgres"

    @property
    def param(self) -> str:
        """The placeholder of a query parameter: ? (sqlite3) or %s (psycopg)."""
        return "?" if self is Dialect.SQLITE else "%s"


_TABLE = {
    Dialect.SQLITE: (
        "CREATE TABLE IF NOT EXISTS schema_migrations (component TEXT NOT NULL, version INTEGER NOT NULL, "
        "name TEXT NOT NULL, applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP, PRIMARY KEY (component, version))"
    ),
    Dialect.POSTGRES: (
        "CREATE TABLE IF NOT EXISTS schema_migrations (component TEXT NOT NULL, version INTEGER NOT NULL, "
        "name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (component, version))"
    ),
}


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of a schema: `version` (1, 2, ...), a short `name` saying what it changes, and
    its statements in each dialect (run in order, no parameters)."""

    version: int
    name: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]

    def statements(self, dialect: Dialect) -> tuple[str, ...]:
        return self.sqlite if dialect is Dialect.SQLITE else self.postgres


class SchemaTooNew(FailedPrecondition):
    reason = "SCHEMA_TOO_NEW"

    def __init__(self, component: str, unknown: Sequence[int], latest: int):
        super().__init__(
            f"the {component} schema has version(s) {', '.join(map(str, unknown))} applied, but this release knows "
            f"versions up to {latest}: the database was migrated by a newer release",
            metadata={"component": component, "latest_known": str(latest)},
        )


def latest_version(migrations: Sequence[Migration]) -> int:
    """The version a database has once every migration is applied (0 for none); ValueError
    unless the versions are 1, 2, ... in order."""
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migration versions must be 1, 2, ... in order, got {versions}")
    return len(versions)


SHARED_LOCK = "*"  # the lock_key name of the lock every component takes first


def lock_key(component: str) -> int:
    """The PostgreSQL advisory lock key (a signed 64-bit integer) of a component's schema."""
    digest = hashlib.blake2b(f"schema_migrations/{component}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def applied_versions(execute: Execute, dialect: Dialect, component: str) -> list[int]:
    """The versions recorded for `component`, in order (none before the first migrate)."""
    p = dialect.param
    return [
        v for (v,) in execute(f"SELECT version FROM schema_migrations WHERE component = {p} ORDER BY 1", (component,))
    ]


def migrate(
    execute: Execute,
    dialect: Dialect,
    component: str,
    migrations: Sequence[Migration],
    *,
    adopted: int = 0,
) -> list[int]:
    """Brings `component`'s schema to the latest version, inside the caller's transaction (see
    the module docstring). Returns the versions applied now, in order ([] when up to date).

    Raises SchemaTooNew when the database records a version past the last migration, and
    ValueError when `migrations` are not numbered 1, 2, ... or `adopted` is past the last."""
    latest = latest_version(migrations)
    p = dialect.param
    if dialect is Dialect.POSTGRES:
        # Always in this order (the shared lock first), so two migrations never wait on each other crosswise.
        execute(f"SELECT pg_advisory_xact_lock({p})", (lock_key(SHARED_LOCK),))
        execute(f"SELECT pg_advisory_xact_lock({p})", (lock_key(component),))
    execute(_TABLE[dialect], ())
    applied = set(applied_versions(execute, dialect, component))
    unknown = sorted(v for v in applied if v > latest)
    if unknown:
        raise SchemaTooNew(component, unknown, latest)
    record = f"INSERT INTO schema_migrations (component, version, name) VALUES ({p}, {p}, {p})"
    if not applied and adopted:
        if adopted > latest:
            raise ValueError(f"adopted version {adopted} is past the last migration, {latest}")
        for m in migrations[:adopted]:
            execute(record, (component, m.version, f"{m.name} (adopted)"))
            applied.add(m.version)
    done = []
    for m in migrations:
        if m.version in applied:
            continue
        for statement in m.statements(dialect):
            execute(statement, ())
        execute(record, (component, m.version, m.name))
        done.append(m.version)
    return done
