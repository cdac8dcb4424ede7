"""The usage ledger and budgets, behind a narrow store interface.

`LedgerStore` is what the domain needs. Two backends serve it, with the same transactions:

- `SqliteLedgerStore` (here, the default): one SQLite file, WAL mode, synchronous=FULL,
  every write a BEGIN IMMEDIATE transaction, so one writer at a time decides;
- `services.accounting.store_postgres.PostgresLedgerStore`: one PostgreSQL database shared by
  any number of accounting replicas (chosen by DATABASE_URL).

The rows, the reservation rules and the decision on a new reservation are written once, below,
and used by both; the schema, version by version, is `services.accounting.schema`. The store is
synchronous; `services.accounting.ledger` runs it on one dedicated thread so a commit never
blocks the event loop.

Money is exact: decimal strings in SQLite, summed as Decimals in Python; NUMERIC in PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import enum
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from services.accounting.schema import COMPONENT, MIGRATIONS, SCHEMA_VERSION
from services.common.errors import (
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from services.common.migrations import Dialect, migrate, sqlite_execute
from services.common.money import EXACT, exact_sum, format_amount
from services.common.usage import Usage


class Role(enum.Enum):
    DEBATER = "debater"
    JUDGE = "judge"
    VERDICT = "verdict"


@dataclass(frozen=True, slots=True)
class UsageRow:
    request_id: str
    debate_id: str
    participant: str
    role: Role
    round_number: int
    model: str
    attempt: int
    usage: Usage
    estimated: bool
    cost: Decimal
    record_time_ns: int = 0
    reservation_id: str = ""


@dataclass(frozen=True, slots=True)
class Budget:
    debate_id: str
    cap: Decimal | None
    spent: Decimal
    reserved: Decimal

    @property
    def remaining(self) -> Decimal | None:
        """cap - spent - reserved (negative when real costs overran it); None without a cap."""
        if self.cap is None:
            return None
        return EXACT.subtract(EXACT.subtract(self.cap, self.spent), self.reserved)


@dataclass(frozen=True, slots=True)
class Reservation:
    reservation_id: str
    debate_id: str
    model: str
    prompt_tokens: int
    max_completion_tokens: int
    amount: Decimal


@dataclass(frozen=True, slots=True)
class ReserveResult:
    granted: bool
    amount: Decimal
    budget: Budget
    # True when the reservation_id was already held (or closed) and this call changed nothing.
    duplicate: bool = False


class ReservationNotFound(NotFound):
    reason = "RESERVATION_NOT_FOUND"

    def __init__(self, reservation_id: str):
        super().__init__(f"no reservation {reservation_id!r}", metadata={"reservation_id": reservation_id})


# One row's outcome in a group commit: what `record` returns, or the domain error it raised.
Recorded = tuple[UsageRow, bool] | DomainError


class LedgerStore(Protocol):
    def record(self, row: UsageRow) -> tuple[UsageRow, bool]:
        """Insert the row unless its request_id exists: (the stored row, duplicate?). With
        row.reservation_id, close that held reservation in the same transaction."""

    def record_many(self, rows: Sequence[UsageRow]) -> list[Recorded]:
        """`record` for each row, all in one transaction (one commit, one fsync): in the order of
        `rows`, each row's (stored row, duplicate?) or the DomainError that refused it (its own
        savepoint rolled back; the others stand). A later row with the request_id of an earlier
        one is its duplicate. Raises, having written nothing, when anything else fails."""

    def snapshot(self, debate_id: str) -> tuple[list[UsageRow], Budget]:
        """The debate's rows and budget, read in one consistent transaction."""

    def budget(self, debate_id: str) -> Budget: ...

    def set_cap(self, debate_id: str, cap: Decimal | None) -> Budget: ...

    def reserve(self, reservation: Reservation) -> ReserveResult:
        """Hold the amount unless spent + reserved + amount would pass the cap, atomically.
        A known reservation_id returns the original grant (held or since closed) and changes
        nothing; a refusal stores nothing, so its retry is decided afresh."""

    def release(self, reservation_id: str) -> Budget: ...

    def close(self) -> None: ...


# -- the row logic both stores share (services.accounting.store_postgres imports it)

USAGE_COLUMNS = (
    "request_id, debate_id, participant, role, round_number, model, attempt, prompt_tokens, completion_tokens, "
    "cached_prompt_tokens, reasoning_tokens, estimated, cost, reservation_id, record_time_ns, "
    "cache_creation_prompt_tokens"
)
RESERVATION_COLUMNS = "debate_id, model, prompt_tokens, max_completion_tokens, amount"


def insert_usage_sql(param: str) -> str:
    """INSERT INTO usage (USAGE_COLUMNS) VALUES (...) with `param` ("?" or "%s") as the placeholder."""
    return f"INSERT INTO usage ({USAGE_COLUMNS}) VALUES ({', '.join([param] * 16)})"


def usage_values(row: UsageRow, record_time_ns: int) -> tuple[object, ...]:
    """The parameters of insert_usage_sql for `row`, recorded at `record_time_ns`. The cost is its
    exact decimal string: SQLite stores it as TEXT, PostgreSQL reads it as NUMERIC."""
    u = row.usage
    return (
        row.request_id,
        row.debate_id,
        row.participant,
        row.role.value,
        row.round_number,
        row.model,
        row.attempt,
        u.prompt_tokens,
        u.completion_tokens,
        u.cached_prompt_tokens,
        u.reasoning_tokens,
        row.estimated,
        format_amount(row.cost),
        row.reservation_id,
        record_time_ns,
        u.cache_creation_prompt_tokens,
    )


def row_from_db(r: Sequence[Any]) -> UsageRow:
    """A UsageRow from a row of `SELECT USAGE_COLUMNS` (cost as TEXT or NUMERIC, estimated as 0/1 or a bool)."""
    return UsageRow(
        request_id=r[0],
        debate_id=r[1],
        participant=r[2],
        role=Role(r[3]),
        round_number=r[4],
        model=r[5],
        attempt=r[6],
        usage=Usage(r[7], r[8], r[9], r[10], cache_creation_prompt_tokens=r[15]),
        estimated=bool(r[11]),
        cost=Decimal(r[12]),
        reservation_id=r[13],
        record_time_ns=r[14],
    )


def check_reservation_owner(row: UsageRow, owner: Sequence[Any] | None) -> None:
    """The reservation a usage row commits must exist (`owner`: its `SELECT debate_id` row, or None)
    and belong to the row's debate: ReservationNotFound or InvalidArgument otherwise."""
    if owner is None:
        raise ReservationNotFound(row.reservation_id)
    if owner[0] != row.debate_id:
        raise InvalidArgument(
            [FieldViolation("reservation_id", f"belongs to debate {owner[0]!r}, not {row.debate_id!r}")]
        )


def known_reservation(known: Sequence[Any], r: Reservation, budget: Budget) -> ReserveResult:
    """A repeat of a reservation already stored (`known`: its RESERVATION_COLUMNS): the original
    grant, changing nothing; FailedPrecondition RESERVATION_ID_REUSED when the arguments differ."""
    if tuple(known[:4]) != (r.debate_id, r.model, r.prompt_tokens, r.max_completion_tokens):
        raise FailedPrecondition(
            f"reservation {r.reservation_id!r} already exists with different arguments",
            reason="RESERVATION_ID_REUSED",
            metadata={"reservation_id": r.reservation_id},
        )
    return ReserveResult(True, Decimal(known[4]), budget, duplicate=True)


def decide(budget: Budget, r: Reservation) -> ReserveResult:
    """A new reservation against the debate's budget as it stands: refused (holding nothing)
    when spent + reserved + amount would pass the cap, else granted with the amount now held."""
    if budget.remaining is not None and r.amount > budget.remaining:
        return ReserveResult(False, r.amount, budget)
    held = Budget(budget.debate_id, budget.cap, budget.spent, EXACT.add(budget.reserved, r.amount))
    return ReserveResult(True, r.amount, held)


class SqliteLedgerStore:
    """The ledger in one SQLite file. Not thread-safe: use it from one thread at a time."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are exactly the BEGIN IMMEDIATE ... COMMIT written below.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._migrate()

    def _migrate(self) -> None:
        """Creates the schema, or brings an older ledger up to SCHEMA_VERSION (idempotent). A ledger
        from before schema_migrations kept its version in PRAGMA user_version: it is adopted. The
        pragma still mirrors the version, for the releases that read it."""
        with self._transaction() as db:
            adopted = db.execute("PRAGMA user_version").fetchone()[0]
            migrate(sqlite_execute(db), Dialect.SQLITE, COMPONENT, MIGRATIONS, adopted=adopted)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    def _transaction(self) -> _Immediate:
        return _Immediate(self._db)

    # -- the ledger

    def record(self, row: UsageRow) -> tuple[UsageRow, bool]:
        with self._transaction() as db:
            return self._record(db, row)

    def record_many(self, rows: Sequence[UsageRow]) -> list[Recorded]:
        results: list[Recorded] = []
        with self._transaction() as db:
            for row in rows:
                db.execute("SAVEPOINT usage_row")
                try:
                    results.append(self._record(db, row))
                except DomainError as refused:
                    db.execute("ROLLBACK TO usage_row")
                    results.append(refused)
                db.execute("RELEASE usage_row")
        return results

    @staticmethod
    def _record(db: sqlite3.Connection, row: UsageRow) -> tuple[UsageRow, bool]:
        """`record`'s work inside the caller's transaction."""
        first = db.execute(f"SELECT {USAGE_COLUMNS} FROM usage WHERE request_id = ?", (row.request_id,)).fetchone()
        if first is not None:
            return row_from_db(first), True
        now = time.time_ns()
        if row.reservation_id:
            owner = db.execute(
                "SELECT debate_id FROM reservations WHERE reservation_id = ?", (row.reservation_id,)
            ).fetchone()
            check_reservation_owner(row, owner)
            # A reservation released earlier (say, on a timeout) stays released: the usage
            # is still charged, since the money was spent.
            db.execute(
                "UPDATE reservations SET state = 'committed', closed_ns = ?, request_id = ? "
                "WHERE reservation_id = ? AND state = 'held'",
                (now, row.request_id, row.reservation_id),
            )
        db.execute(insert_usage_sql("?"), usage_values(row, now))
        return dataclasses.replace(row, record_time_ns=now), False

    def snapshot(self, debate_id: str) -> tuple[list[UsageRow], Budget]:
        with _Deferred(self._db) as db:
            rows = [
                row_from_db(r)
                for r in db.execute(
                    f"SELECT {USAGE_COLUMNS} FROM usage WHERE debate_id = ? ORDER BY record_time_ns, request_id",
                    (debate_id,),
                )
            ]
            return rows, self._budget(db, debate_id)

    # -- budgets

    def _budget(self, db: sqlite3.Connection, debate_id: str) -> Budget:
        cap_row = db.execute("SELECT cap FROM budgets WHERE debate_id = ?", (debate_id,)).fetchone()
        cap = Decimal(cap_row[0]) if cap_row is not None and cap_row[0] is not None else None
        spent = exact_sum(Decimal(c) for (c,) in db.execute("SELECT cost FROM usage WHERE debate_id = ?", (debate_id,)))
        reserved = exact_sum(
            Decimal(a)
            for (a,) in db.execute(
                "SELECT amount FROM reservations WHERE debate_id = ? AND state = 'held'", (debate_id,)
            )
        )
        return Budget(debate_id, cap, spent, reserved)

    def budget(self, debate_id: str) -> Budget:
        with _Deferred(self._db) as db:
            return self._budget(db, debate_id)

    def set_cap(self, debate_id: str, cap: Decimal | None) -> Budget:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO budgets (debate_id, cap) VALUES (?, ?) "
                "ON CONFLICT (debate_id) DO UPDATE SET cap = excluded.cap",
                (debate_id, None if cap is None else format_amount(cap)),
            )
            return self._budget(db, debate_id)

    def reserve(self, reservation: Reservation) -> ReserveResult:
        r = reservation
        with self._transaction() as db:
            known = db.execute(
                f"SELECT {RESERVATION_COLUMNS} FROM reservations WHERE reservation_id = ?", (r.reservation_id,)
            ).fetchone()
            if known is not None:
                return known_reservation(known, r, self._budget(db, r.debate_id))
            result = decide(self._budget(db, r.debate_id), r)
            if result.granted:
                db.execute(
                    "INSERT INTO reservations (reservation_id, debate_id, model, prompt_tokens, "
                    "max_completion_tokens, amount, state, created_ns) VALUES (?, ?, ?, ?, ?, ?, 'held', ?)",
                    (
                        r.reservation_id,
                        r.debate_id,
                        r.model,
                        r.prompt_tokens,
                        r.max_completion_tokens,
                        format_amount(r.amount),
                        time.time_ns(),
                    ),
                )
            return result

    def release(self, reservation_id: str) -> Budget:
        """Idempotent: a reservation already released or committed is left as it is."""
        with self._transaction() as db:
            known = db.execute(
                "SELECT debate_id FROM reservations WHERE reservation_id = ?", (reservation_id,)
            ).fetchone()
            if known is None:
                raise ReservationNotFound(reservation_id)
            db.execute(
                "UPDATE reservations SET state = 'released', closed_ns = ? WHERE reservation_id = ? AND state = 'held'",
                (time.time_ns(), reservation_id),
            )
            return self._budget(db, known[0])


class _Immediate:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception (domain errors included)."""

    begin = "BEGIN IMMEDIATE"

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute(self.begin)
        return self.db

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.db.execute("COMMIT")
        elif self.db.in_transaction:  # SQLite may have rolled back already (e.g. disk full)
            self.db.execute("ROLLBACK")


class _Deferred(_Immediate):
    """A read transaction: one consistent snapshot for several SELECTs."""

    begin = "BEGIN DEFERRED"
