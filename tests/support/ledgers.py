"""The ledger's backends for the tests, as a pytest plugin (tests/conftest.py loads it once, so
the PostgreSQL server is one for the whole session):

- `postgres_server`: one throwaway PostgreSQL server (tests.support.postgres) for the session,
  started the first time a test asks for it;
- `postgres_url`: a fresh, empty database on it for one test, dropped after;
- `ledger_backend`: parametrised, "sqlite" (a file in the test's tmp_path) and "postgresql" (a
  fresh database): a test that takes it runs once on each, with `open()` for a store on the
  test's ledger, `settings()` for AccountingSettings, and `count()` to look at its tables.

    def test_x(ledger_backend):
        store = ledger_backend.open()
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from services.accounting.store import LedgerStore, SqliteLedgerStore
from services.accounting.store_postgres import PostgresLedgerStore
from tests.support.postgres import PostgresServer

BACKENDS = ("sqlite", "postgresql")
LEDGER_FILE = "ledger.sqlite3"


@dataclass(frozen=True)
class LedgerBackend:
    """One test's ledger on one backend: SQLite in `data_dir`, or PostgreSQL at `url`."""

    name: str
    data_dir: Path
    url: str = ""

    @property
    def path(self) -> Path:
        return self.data_dir / LEDGER_FILE

    def open(self) -> LedgerStore:
        """A new store (its own connection) on this test's ledger, migrated."""
        if self.url:
            return PostgresLedgerStore(self.url)
        return SqliteLedgerStore(self.path)

    def settings(self) -> dict[str, str]:
        """AccountingSettings' fields that put a service's ledger here."""
        return {"data_dir": str(self.data_dir), "ledger_file": LEDGER_FILE, "database_url": self.url}

    def query(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of one statement on a connection of its own (placeholders: "?" for both backends)."""
        if self.url:
            with psycopg.connect(self.url, autocommit=True) as db:
                cursor = db.execute(statement.replace("?", "%s"), params)
                return cursor.fetchall() if cursor.description else []
        with sqlite3.connect(self.path) as db:
            return db.execute(statement, params).fetchall()

    def count(self, table: str = "usage", where: str = "TRUE", params: tuple[Any, ...] = ()) -> int:
        """Rows of a ledger table (0 when it does not exist yet)."""
        try:
            return int(self.query(f"SELECT count(*) FROM {table} WHERE {where}", params)[0][0])
        except (sqlite3.OperationalError, psycopg.errors.UndefinedTable):
            return 0


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url.rsplit("/", 1)[1])


@pytest.fixture(params=BACKENDS)
def ledger_backend(request: pytest.FixtureRequest, tmp_path: Path) -> LedgerBackend:
    if request.param == "postgresql":
        return LedgerBackend("postgresql", tmp_path, request.getfixturevalue("postgres_url"))
    return LedgerBackend("sqlite", tmp_path)
