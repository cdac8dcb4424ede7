"""What the services' PostgreSQL stores share (the accounting ledger, the orchestrator's store):
how a connection is opened, and the schema migrated on it.

Every store uses psycopg 3's synchronous API on a connection in autocommit mode, and writes its
transactions itself (`with conn.transaction()`, or BEGIN ... COMMIT), in READ COMMITTED whatever
the server's default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from services.common.migrations import Dialect, Migration, migrate

CONNECT_TIMEOUT_S = 10  # a host that does not answer fails the call instead of holding the store's thread


def connect(url: str) -> psycopg.Connection:
    """A connection to `url` (postgresql://user:password@host:port/database), in autocommit mode,
    READ COMMITTED. psycopg.OperationalError when the server cannot be reached within
    CONNECT_TIMEOUT_S seconds or refuses the connection."""
    conn = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
    conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
    return conn


def migrate_schema(conn: psycopg.Connection, component: str, migrations: Sequence[Migration]) -> list[int]:
    """Brings `component`'s schema to its latest version in one transaction on `conn` (see
    services.common.migrations: idempotent, one replica at a time, SchemaTooNew when a newer
    release migrated it). The versions applied now."""

    def run(statement: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []

    with conn.transaction():
        return migrate(run, Dialect.POSTGRES, component, migrations)
