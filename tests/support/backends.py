"""The databases the stores' tests run on, as a pytest plugin (tests/conftest.py loads it once,
so the PostgreSQL server is one for the whole session):

- `postgres_server`: one throwaway PostgreSQL server (services.common.postgres_server) for the session,
  started the first time a test asks for it;
- `postgres_url`: a fresh, empty database on it for one test, dropped after;
- `Backend`: one test's database on one backend, a SQLite file in the test's tmp_path or a
  fresh PostgreSQL database, with `query()`, `count()` and `describe()` to look at its tables
  on a connection of their own. Each store's fixture (tests.support.ledgers' `ledger_backend`,
  tests.support.orchestrator_stores' `orchestrator_backend`) is parametrised over BACKENDS
  with `backend_for`, so a test that takes it runs once on each.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import psycopg
import pytest

from services.common.postgres_server import PostgresServer

BACKENDS = ("sqlite", "postgresql")


@dataclass(frozen=True)
class Backend:
    """One test's database: SQLite (the file SQLITE_FILE in `data_dir`), or PostgreSQL at `url`."""

    SQLITE_FILE: ClassVar[str] = "store.sqlite3"

    name: str
    data_dir: Path
    url: str = ""

    @property
    def path(self) -> Path:
        return self.data_dir / self.SQLITE_FILE

    def query(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of one statement on a connection of its own (placeholders: "?" for both backends)."""
        if self.url:
            with psycopg.connect(self.url, autocommit=True) as db:
                cursor = db.execute(statement.replace("?", "%s"), params)
                return cursor.fetchall() if cursor.description else []
        with sqlite3.connect(self.path) as db:
            return db.execute(statement, params).fetchall()

    def describe(self, component: str) -> dict[str, object]:
        """The database's tables (columns: name, type, nullability, default), indexes and the
        versions recorded for `component`, read from the database's catalogue."""
        if self.url:
            columns = self.query(
                "SELECT table_name, column_name, data_type, is_nullable, column_default "
                "FROM information_schema.columns WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
            )
            indexes = self.query("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1")
        else:
            tables = [t for (t,) in self.query("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
            columns = [
                (table, *column[1:5]) for table in tables for column in self.query(f"PRAGMA table_info({table})")
            ]
            indexes = self.query("SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' ORDER BY name")
        versions = self.query(
            "SELECT version, name FROM schema_migrations WHERE component = ? ORDER BY version", (component,)
        )
        return {"columns": columns, "indexes": indexes, "versions": versions}

    def count(self, table: str, where: str = "TRUE", params: tuple[Any, ...] = ()) -> int:
        """Rows of a table (0 when it does not exist yet)."""
        try:
            return int(self.query(f"SELECT count(*) FROM {table} WHERE {where}", params)[0][0])
        except (sqlite3.OperationalError, psycopg.errors.UndefinedTable):
            return 0


def terminate_connections(url: str) -> int:
    """Ends every other connection to `url`'s database from the server's side (as a restart or a
    failover would); how many were ended."""
    with psycopg.connect(url, autocommit=True) as admin:
        ended = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return sum(1 for (done,) in ended if done)


BackendT = TypeVar("BackendT", bound=Backend)


def backend_for(cls: type[BackendT], request: pytest.FixtureRequest, tmp_path: Path) -> BackendT:
    """The backend a fixture parametrised over BACKENDS (request.param) gives its test."""
    if request.param == "postgresql":
        return cls("postgresql", tmp_path, request.getfixturevalue("postgres_url"))
    return cls("sqlite", tmp_path)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url.rsplit("/", 1)[1])
