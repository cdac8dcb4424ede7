"""The orchestrator's store on both backends for the tests, as a pytest plugin (tests/conftest.py
loads it): `orchestrator_backend`, parametrised, "sqlite" (orchestrator.sqlite3 in the test's
tmp_path) and "postgresql" (a fresh database on the session's server, tests.support.backends).
A test that takes it runs once on each, with `open()` for a store, `settings()` for
OrchestratorSettings, and `query()` and `count()` to look at its tables.

    def test_x(orchestrator_backend):
        store = orchestrator_backend.open()
        settings = OrchestratorSettings(port=0, **orchestrator_backend.settings())
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from services.orchestrator.server import STORE_FILE
from services.orchestrator.store import SqliteStore, Store
from services.orchestrator.store_postgres import PostgresStore
from tests.support.backends import BACKENDS, Backend, backend_for


@dataclass(frozen=True)
class OrchestratorBackend(Backend):
    """One test's orchestrator store on one backend: SQLite in `data_dir`, or PostgreSQL at `url`."""

    SQLITE_FILE = STORE_FILE
    opened: list[Store] = field(default_factory=list, compare=False, repr=False)

    def open(self) -> Store:
        """A new store (its own connection) on this test's database, migrated; closed after the test."""
        store: Store = PostgresStore(self.url) if self.url else SqliteStore(str(self.path))
        self.opened.append(store)
        return store

    def settings(self) -> dict[str, str]:
        """OrchestratorSettings' fields that put a service's store here."""
        return {"data_dir": str(self.data_dir), "database_url": self.url}


@pytest.fixture(params=BACKENDS)
def orchestrator_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OrchestratorBackend]:
    backend = backend_for(OrchestratorBackend, request, tmp_path)
    yield backend
    for store in backend.opened:
        with contextlib.suppress(Exception):  # closed by the test already, or its database gone
            store.close()
