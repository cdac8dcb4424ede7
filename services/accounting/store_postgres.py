"""The ledger in PostgreSQL, shared by any number of accounting replicas.

`PostgresLedgerStore` serves the `LedgerStore` interface from one database (DATABASE_URL,
`postgresql://user:password@host:port/database`), through psycopg 3's synchronous API on one
connection: `services.accounting.ledger` calls it from one dedicated thread, as it does the
SQLite store. Rows, reservation rules and decisions are the shared ones of
`services.accounting.store`; the schema is `services.accounting.schema`, migrated at start.

How concurrent replicas stay correct (READ COMMITTED, set on the connection, whatever the
server's default):

- **One usage row per request_id.** `INSERT ... ON CONFLICT (request_id) DO NOTHING RETURNING`:
  when two replicas insert the same request_id at once, the primary key makes the second wait
  for the first's transaction and then insert nothing; it reads the first row and answers
  `duplicate`. A reservation the row commits is checked after the insert and, when it is bad,
  the whole transaction (the insert too) rolls back.
- **Never past the cap.** Every write that changes a debate's money (record, reserve, release,
  set_cap) first locks that debate's row of `budgets` (`INSERT ... ON CONFLICT DO NOTHING`, then
  `SELECT ... FOR UPDATE`; a debate without a cap gets a row with a NULL cap). So the writers of
  one debate go one at a time across every replica, and the spent and reserved sums a
  reservation is decided on cannot move before it commits. Each transaction locks one debate's
  row, then at most that debate's reservation rows: a single order, so no deadlock. Debates do
  not wait for one another.
- **Consistent reads.** A debate's budget is read in one statement (one snapshot); a cost
  report reads its rows and budget in one REPEATABLE READ, READ ONLY transaction.

A lost connection (the server restarted, failed over, or the network broke) fails the call in
progress with UNAVAILABLE, which the suite's channels retry; the next call connects again. Every
call is idempotent by its key, so a retry after a commit whose answer was lost is answered from
what was stored.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal

import psycopg

from services.accounting.schema import COMPONENT, MIGRATIONS
from services.accounting.store import (
    RESERVATION_COLUMNS,
    USAGE_COLUMNS,
    Budget,
    Recorded,
    Reservation,
    ReservationNotFound,
    ReserveResult,
    UsageRow,
    check_reservation_owner,
    decide,
    insert_usage_sql,
    known_reservation,
    row_from_db,
    usage_values,
)
from services.common.errors import DomainError, Unavailable
from services.common.money import format_amount
from services.common.postgres import connect, migrate_schema

_BUDGET = """SELECT
    (SELECT cap FROM budgets WHERE debate_id = %(d)s),
    (SELECT coalesce(sum(cost), 0) FROM usage WHERE debate_id = %(d)s),
    (SELECT coalesce(sum(amount), 0) FROM reservations WHERE debate_id = %(d)s AND state = 'held')"""


class LedgerUnavailable(Unavailable):
    reason = "LEDGER_UNAVAILABLE"


class PostgresLedgerStore:
    """The ledger in a PostgreSQL database (see the module docstring). Connects and migrates the
    schema when built: psycopg.OperationalError if the server cannot be reached then,
    SchemaTooNew if a newer release migrated it. Use it from one thread at a time."""

    def __init__(self, url: str):
        self._url = url
        self._conn = connect(url)
        migrate_schema(self._conn, COMPONENT, MIGRATIONS)

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection]:
        """BEGIN ... COMMIT, or ROLLBACK on any exception (domain errors included). A lost
        connection is LedgerUnavailable, and the next transaction connects again."""
        try:
            if self._conn.closed or self._conn.broken:
                self._conn = connect(self._url)
            with self._conn.transaction():
                yield self._conn
        except psycopg.OperationalError as error:
            raise LedgerUnavailable(f"the ledger's database is unavailable: {error}") from error

    @staticmethod
    def _lock_budget(db: psycopg.Connection, debate_id: str) -> None:
        """Takes the debate's budget row lock until the transaction ends (see the module docstring)."""
        db.execute("INSERT INTO budgets (debate_id) VALUES (%s) ON CONFLICT (debate_id) DO NOTHING", (debate_id,))
        db.execute("SELECT 1 FROM budgets WHERE debate_id = %s FOR UPDATE", (debate_id,))

    @staticmethod
    def _budget(db: psycopg.Connection, debate_id: str) -> Budget:
        row = db.execute(_BUDGET, {"d": debate_id}).fetchone()
        assert row is not None  # a SELECT of three scalar subqueries returns one row
        cap, spent, reserved = row
        return Budget(debate_id, None if cap is None else Decimal(cap), Decimal(spent), Decimal(reserved))

    # -- the ledger

    def record(self, row: UsageRow) -> tuple[UsageRow, bool]:
        with self._transaction() as db:
            return self._record(db, row)

    def record_many(self, rows: Sequence[UsageRow]) -> list[Recorded]:
        """See LedgerStore.record_many. The rows go in the order of their debate ids, so that the
        budget rows a batch locks are always taken in one order (no deadlock between replicas'
        batches); each row has its own savepoint."""
        results: list[Recorded | None] = [None] * len(rows)
        with self._transaction() as db:
            for i in sorted(range(len(rows)), key=lambda i: rows[i].debate_id):
                try:
                    with db.transaction():  # a savepoint: a refused row rolls back alone
                        results[i] = self._record(db, rows[i])
                except DomainError as refused:
                    results[i] = refused
        return [result for result in results if result is not None]

    def _record(self, db: psycopg.Connection, row: UsageRow) -> tuple[UsageRow, bool]:
        """`record`'s work inside the caller's transaction."""
        self._lock_budget(db, row.debate_id)
        now = time.time_ns()
        inserted = db.execute(
            insert_usage_sql("%s") + " ON CONFLICT (request_id) DO NOTHING RETURNING request_id",
            usage_values(row, now),
        ).fetchone()
        if inserted is None:
            first = db.execute(f"SELECT {USAGE_COLUMNS} FROM usage WHERE request_id = %s", (row.request_id,)).fetchone()
            assert first is not None  # committed (ON CONFLICT waited for it) or written earlier in this batch
            return row_from_db(first), True
        if row.reservation_id:
            owner = db.execute(
                "SELECT debate_id FROM reservations WHERE reservation_id = %s", (row.reservation_id,)
            ).fetchone()
            check_reservation_owner(row, owner)  # raises: the insert above rolls back
            # A reservation released earlier stays released: the usage is still charged.
            db.execute(
                "UPDATE reservations SET state = 'committed', closed_ns = %s, request_id = %s "
                "WHERE reservation_id = %s AND state = 'held'",
                (now, row.request_id, row.reservation_id),
            )
        return dataclasses.replace(row, record_time_ns=now), False

    def snapshot(self, debate_id: str) -> tuple[list[UsageRow], Budget]:
        with self._transaction() as db:
            db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            rows = [
                row_from_db(r)
                for r in db.execute(
                    f"SELECT {USAGE_COLUMNS} FROM usage WHERE debate_id = %s ORDER BY record_time_ns, request_id",
                    (debate_id,),
                )
            ]
            return rows, self._budget(db, debate_id)

    # -- budgets

    def budget(self, debate_id: str) -> Budget:
        with self._transaction() as db:
            return self._budget(db, debate_id)

    def set_cap(self, debate_id: str, cap: Decimal | None) -> Budget:
        with self._transaction() as db:
            # The upsert locks the row, as _lock_budget does.
            db.execute(
                "INSERT INTO budgets (debate_id, cap) VALUES (%s, %s) "
                "ON CONFLICT (debate_id) DO UPDATE SET cap = excluded.cap",
                (debate_id, None if cap is None else format_amount(cap)),
            )
            return self._budget(db, debate_id)

    def _known(self, db: psycopg.Connection, reservation_id: str) -> tuple[object, ...] | None:
        return db.execute(
            f"SELECT {RESERVATION_COLUMNS} FROM reservations WHERE reservation_id = %s", (reservation_id,)
        ).fetchone()

    def reserve(self, reservation: Reservation) -> ReserveResult:
        r = reservation
        with self._transaction() as db:
            self._lock_budget(db, r.debate_id)
            known = self._known(db, r.reservation_id)
            if known is not None:
                return known_reservation(known, r, self._budget(db, r.debate_id))
            result = decide(self._budget(db, r.debate_id), r)
            if not result.granted:
                return result
            inserted = db.execute(
                "INSERT INTO reservations (reservation_id, debate_id, model, prompt_tokens, max_completion_tokens, "
                "amount, state, created_ns) VALUES (%s, %s, %s, %s, %s, %s, 'held', %s) "
                "ON CONFLICT (reservation_id) DO NOTHING RETURNING reservation_id",
                (
                    r.reservation_id,
                    r.debate_id,
                    r.model,
                    r.prompt_tokens,
                    r.max_completion_tokens,
                    format_amount(r.amount),
                    time.time_ns(),
                ),
            ).fetchone()
            if inserted is None:
                # Taken meanwhile under another debate's lock: the same id for another debate.
                known = self._known(db, r.reservation_id)
                assert known is not None
                return known_reservation(known, r, self._budget(db, r.debate_id))
            return result

    def release(self, reservation_id: str) -> Budget:
        """Idempotent: a reservation already released or committed is left as it is."""
        with self._transaction() as db:
            owner = db.execute(
                "SELECT debate_id FROM reservations WHERE reservation_id = %s", (reservation_id,)
            ).fetchone()
            if owner is None:
                raise ReservationNotFound(reservation_id)
            debate_id = str(owner[0])
            self._lock_budget(db, debate_id)
            db.execute(
                "UPDATE reservations SET state = 'released', closed_ns = %s "
                "WHERE reservation_id = %s AND state = 'held'",
                (time.time_ns(), reservation_id),
            )
            return self._budget(db, debate_id)
