"""services.common.postgres.connect: a session stopped dead inside a transaction gives its row
locks back after IDLE_IN_TRANSACTION_TIMEOUT_S, so another replica can take its rows over."""

from __future__ import annotations

import time

import psycopg
import pytest

from services.common.postgres import IDLE_IN_TRANSACTION_TIMEOUT_S, connect


def test_a_session_idle_in_a_transaction_is_ended_and_its_locks_freed(postgres_url):
    with psycopg.connect(postgres_url, autocommit=True) as other:
        other.execute("CREATE TABLE leases (id TEXT PRIMARY KEY, owner TEXT)")
        other.execute("INSERT INTO leases VALUES ('d1', 'a')")
        stalled = connect(postgres_url)
        stalled.execute("BEGIN")
        stalled.execute("SELECT owner FROM leases WHERE id = 'd1' FOR SHARE")  # as the fence locks a lease
        # ... and the process stops here (SIGSTOP): nothing more is sent.
        with pytest.raises(psycopg.errors.LockNotAvailable):
            other.execute("SET lock_timeout = '100ms'")
            other.execute("UPDATE leases SET owner = 'b' WHERE id = 'd1'")
        time.sleep(IDLE_IN_TRANSACTION_TIMEOUT_S + 0.5)
        other.execute("UPDATE leases SET owner = 'b' WHERE id = 'd1'")  # the takeover goes through
        with pytest.raises(psycopg.Error):
            stalled.execute("SELECT 1")  # on waking, the stalled session is gone
        assert stalled.broken or stalled.closed
        stalled.close()
        assert other.execute("SELECT owner FROM leases").fetchall() == [("b",)]
