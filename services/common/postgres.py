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
# A session left idle inside a transaction this long is ended by the server, and its row locks
# with it. A replica stopped dead mid-transaction (SIGSTOP, a frozen VM, a debugger) would
# otherwise hold the rows another replica needs to take its debates over (the debates it
# updated, the leases its fence locked FOR SHARE) for as long as it stays stopped. Far above the
# idle time of a healthy transaction (the orchestrator's lasts one tick, 25 ms; the ledger's none)
# and equal to the default lease (5 s), so a stall shorter than a lease never costs a
# connection; a replica stopped past it, when it wakes, finds its connection gone, connects
# again and replays its journal, which the fence then refuses. A takeover of a replica stopped
# mid-transaction comes at most this long after the stop (plus a heartbeat), whatever the lease.
IDLE_IN_TRANSACTION_TIMEOUT_S = 5


def connect(url: str) -> psycopg.Connection:
    """A connection to `url` (postgresql://user:password@host:port/database), in autocommit mode,
    READ COMMITTED, ended by the server when idle inside a transaction for
    IDLE_IN_TRANSACTION_TIMEOUT_S. psycopg.OperationalError when the server cannot be reached
    within CONNECT_TIMEOUT_S seconds or refuses the connection."""
    conn = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
    conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
    conn.execute(f"SET idle_in_transaction_session_timeout = {IDLE_IN_TRANSACTION_TIMEOUT_S * 1000}")
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
