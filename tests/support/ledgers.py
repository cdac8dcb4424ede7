"""The ledger's backends for the tests, as a pytest plugin (tests/conftest.py loads it):
`ledger_backend`, parametrised, "sqlite" (a file in the test's tmp_path) and "postgresql" (a
fresh database on the session's server, tests.support.backends): a test that takes it runs once
on each, with `open()` for a store on the test's ledger, `settings()` for AccountingSettings,
and `count()` to look at its tables.

    def test_x(ledger_backend):
        store = ledger_backend.open()
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.accounting.store import LedgerStore, SqliteLedgerStore
from services.accounting.store_postgres import PostgresLedgerStore
from tests.support.backends import BACKENDS, Backend, backend_for

LEDGER_FILE = "ledger.sqlite3"


@dataclass(frozen=True)
class LedgerBackend(Backend):
    """One test's ledger on one backend: SQLite in `data_dir`, or PostgreSQL at `url`."""

    SQLITE_FILE = LEDGER_FILE

    def open(self) -> LedgerStore:
        """A new store (its own connection) on this test's ledger, migrated."""
        if self.url:
            return PostgresLedgerStore(self.url)
        return SqliteLedgerStore(self.path)

    def settings(self) -> dict[str, str]:
        """AccountingSettings' fields that put a service's ledger here."""
        return {"data_dir": str(self.data_dir), "ledger_file": LEDGER_FILE, "database_url": self.url}

    def count(self, table: str = "usage", where: str = "TRUE", params: tuple[Any, ...] = ()) -> int:
        """Rows of a ledger table, usage by default (0 when it does not exist yet)."""
        return super().count(table, where, params)


@pytest.fixture(params=BACKENDS)
def ledger_backend(request: pytest.FixtureRequest, tmp_path: Path) -> LedgerBackend:
    return backend_for(LedgerBackend, request, tmp_path)
