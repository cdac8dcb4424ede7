"""The orchestrator's durable state: debates, turns, attempts, assessments, verdicts and the
per-debate event log, behind one narrow interface, `Store`, with two backends:

- `SqliteStore` (here, the default): one SQLite file in DATA_DIR, WAL mode;
- `services.orchestrator.store_postgres.PostgresStore`: a PostgreSQL database (DATABASE_URL).

Both have the same transaction model. One connection, used from the event loop's thread, with
one open transaction that collects every write; `commit()` ends it, and reads see the writes not
committed yet. The event hub commits every coalescing tick (a few tens of ms) and the engine
commits at once where an outside effect follows (before a usage is recorded). Nothing is
announced to a subscriber before the commit that stored it, so a crash can lose only what
nobody has seen: at most the last tick's token deltas of in-flight turns, whose attempts are
regenerated under a new attempt number. A failed commit keeps every write made since the last
commit, and the next commit that succeeds commits them all (rows written again, such as a
tick's events after a failed commit, are written over, never doubled). SQLite runs each write
at once; PostgreSQL sends them later, together (see store_postgres.py), so there a write never
fails on its own and a failure shows at the next read or commit. A PostgreSQL store that cannot
reach its database raises `StoreUnavailable`.

SQLite: WAL with synchronous=NORMAL survives a killed process (SIGKILL) without losing a commit;
only a power cut could lose the last commits, which is the trade-off the event volume asks for.

The rows, the statements (in "?" placeholders; `in_dialect` gives PostgreSQL's) and the page
tokens are written once, here, and used by both stores; the schema, version by version, is
`services.orchestrator.schema`, migrated when a store opens.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from debate.common.v1 import common_pb2
from debate.orchestrator.v1 import orchestrator_pb2

from services.common.errors import Unavailable
from services.common.migrations import Dialect, migrate, sqlite_execute
from services.common.money import format_amount
from services.orchestrator.schema import COMPONENT, MIGRATIONS


class LeaseLost(Exception):
    """A commit met debates whose lease this replica no longer holds (another replica claimed
    them: a higher epoch). Their writes are refused; the store records them in `Store.lost`."""

    def __init__(self, debate_ids: set[str]):
        super().__init__(f"lease lost on {len(debate_ids)} debates")
        self.debate_ids = debate_ids


class StoreUnavailable(Unavailable):
    """The store could not write or commit; everything pending is kept and committed by a later
    commit (the ticker's, within `coalesce_s`), so the caller may retry."""

    reason = "STORE_UNAVAILABLE"


@dataclass(slots=True)
class DebateRow:
    debate_id: str
    tenant: str
    request_id: str
    config: common_pb2.DebateConfig
    state: orchestrator_pb2.DebateState.ValueType
    create_ns: int
    update_ns: int
    queue_ns: int
    current_round: int
    end_reason: str
    cost_amount: str  # the debate's running total in USD, a decimal string ('' before anything was spent)
    cost: bytes | None
    verdict: bytes | None
    verdict_recorded: bool
    last_sequence: int


@dataclass(slots=True)
class HumanTurnRow:
    """The wait for one human seat's turn (issue 19 part 3): its deadline in wall-clock ns and,
    once SubmitTurn gave it, the text and the request_id."""

    round_number: int
    participant: str
    deadline_ns: int
    submitted: bool
    text: str
    request_id: str


# SQLite's write-ahead log: a commit on the loop's thread checkpoints only past this many pages
# (4 KiB each, 40 MiB; SQLite's default is 1,000), since the event hub checkpoints from a worker
# thread (Store.checkpoint); after a checkpoint the log file is cut back to this many bytes.
WAL_AUTOCHECKPOINT_PAGES = 10_000
WAL_SIZE_LIMIT = 64 * 1024 * 1024
# The loop's connection's page cache, in KiB (SQLite's default is 2 MiB). A commit of many debates'
# events touches a leaf of the events' key for each debate written; with the default cache most of
# them had been evicted since the last commit and were read again from the file (about 1,500 reads
# a commit at 300 debates). An upper bound: the cache grows only as pages are used.
PAGE_CACHE_KIB = 64 * 1024

INSERT_COLUMNS = (
    "debate_id, tenant, request_id, config, state, create_ns, update_ns, queue_ns, current_round, "
    "end_reason, cost_amount, cost, verdict, verdict_recorded, last_sequence"
)
# The last sequence is read from the events' primary key (one index probe) rather than kept in
# the debate's row, so storing a tick's events touches no other table.
DEBATE_COLUMNS = INSERT_COLUMNS.replace(
    "last_sequence", "COALESCE((SELECT MAX(sequence) FROM events e WHERE e.debate_id = debates.debate_id), 0)"
)

# -- the statements both stores run, with "?" placeholders (see in_dialect) ---------------------
# A debate whose id or (tenant, request_id) is taken is not inserted (insert_debate reads the one stored).
INSERT_DEBATE = f"INSERT INTO debates ({INSERT_COLUMNS}) VALUES ({', '.join('?' * 15)}) ON CONFLICT DO NOTHING"
GET_DEBATE = f"SELECT {DEBATE_COLUMNS} FROM debates WHERE debate_id = ?"
FIND_BY_REQUEST = f"SELECT {DEBATE_COLUMNS} FROM debates WHERE tenant = ? AND request_id = ?"
# The debate's trace context (schema version 9), read only when traces are on: not a DebateRow
# field, so that a debate's every read leaves it out.
TRACE_CONTEXT = "SELECT trace_context FROM debates WHERE debate_id = ?"
PUT_TURN = (
    "INSERT INTO turns (debate_id, round, participant, turn, recorded) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (debate_id, round, participant) DO UPDATE SET turn = excluded.turn, recorded = excluded.recorded"
)
TURNS = "SELECT turn, recorded FROM turns WHERE debate_id = ? ORDER BY round"
OPEN_ATTEMPT = (
    "INSERT INTO attempts (debate_id, round, participant, attempt, reservation_id, open) VALUES (?, ?, ?, ?, ?, TRUE) "
    "ON CONFLICT (debate_id, round, participant, attempt) DO UPDATE SET reservation_id = excluded.reservation_id, "
    "open = TRUE"
)
CLOSE_ATTEMPT = "UPDATE attempts SET open = FALSE WHERE debate_id = ? AND round = ? AND participant = ? AND attempt = ?"
LAST_ATTEMPTS = "SELECT round, participant, MAX(attempt) FROM attempts WHERE debate_id = ? GROUP BY round, participant"
OPEN_ATTEMPTS = "SELECT round, participant, attempt, reservation_id FROM attempts WHERE debate_id = ? AND open = TRUE"
PUT_ASSESSMENT = (
    "INSERT INTO assessments (debate_id, round, assessment, recorded) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (debate_id, round) DO UPDATE SET assessment = excluded.assessment, recorded = excluded.recorded"
)
ASSESSMENTS = "SELECT assessment, recorded FROM assessments WHERE debate_id = ? ORDER BY round"
PUT_STOP = (
    "INSERT INTO debate_stops (debate_id, stop, announced) VALUES (?, ?, ?) "
    "ON CONFLICT (debate_id) DO UPDATE SET stop = excluded.stop, announced = excluded.announced"
)
STOP = "SELECT stop, announced FROM debate_stops WHERE debate_id = ?"


def stops_sql(count: int) -> str:
    """The stops of `count` debates."""
    return f"SELECT debate_id, stop FROM debate_stops WHERE debate_id IN ({', '.join('?' * count)})"


# Verdict versions (schema version 4; services/orchestrator/verdicts.py). A version already
# stored is not inserted again (a concurrent request took the number: the caller reads back).
INSERT_VERDICT_VERSION = (
    "INSERT INTO verdicts (debate_id, version, request_id, reason, entry, done, create_ns) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
UPDATE_VERDICT_VERSION = "UPDATE verdicts SET entry = ?, done = ? WHERE debate_id = ? AND version = ?"
VERDICT_VERSIONS = "SELECT entry, done FROM verdicts WHERE debate_id = ? ORDER BY version"
VERDICT_VERSION_BY_REQUEST = "SELECT entry, done FROM verdicts WHERE debate_id = ? AND request_id = ?"
# A row already written (the same events again, after a write or commit that failed) is written over.
WRITE_EVENTS = (
    "INSERT INTO events (debate_id, sequence, event) VALUES (?, ?, ?) "
    "ON CONFLICT (debate_id, sequence) DO UPDATE SET event = excluded.event"
)
READ_EVENTS = (
    "SELECT sequence, event FROM events WHERE debate_id = ? AND sequence > ? AND sequence <= ? "
    "ORDER BY sequence LIMIT ?"
)
LAST_SEQUENCE = "SELECT MAX(sequence) FROM events WHERE debate_id = ?"
# -- human votes (i18j): one row per (debate, voter), a repeated vote written over ---------------
PUT_VOTE = (
    "INSERT INTO votes (debate_id, voter, winner, tie, cast_ns) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (debate_id, voter) DO UPDATE SET winner = excluded.winner, tie = excluded.tie, "
    "cast_ns = excluded.cast_ns"
)
HAS_VOTE = "SELECT 1 FROM votes WHERE debate_id = ? AND voter = ?"
VOTE_COUNTS = "SELECT winner, tie, COUNT(*) FROM votes WHERE debate_id = ? GROUP BY winner, tie"
TENANT_VOTE_COUNTS = (
    "SELECT v.debate_id, v.winner, v.tie, COUNT(*) FROM votes v JOIN debates d ON d.debate_id = v.debate_id "
    "WHERE d.tenant = ? GROUP BY v.debate_id, v.winner, v.tie"
)
# What a judge report reads of a tenant's debates: verdicts, round assessments, turns.
# Every verdict of the tenant's debates in a state: each finished version (verdict versions), and
# the one stored verdict of a debate that has none (ended before versions existed).
TENANT_VERDICTS = (
    "SELECT d.debate_id, v.entry, NULL, d.create_ns, v.version FROM verdicts v "
    "JOIN debates d ON d.debate_id = v.debate_id WHERE d.tenant = ? AND d.state = ? AND v.done "
    "UNION ALL SELECT d.debate_id, NULL, d.verdict, d.create_ns, 1 FROM debates d "
    "WHERE d.tenant = ? AND d.state = ? AND d.verdict IS NOT NULL "
    "AND NOT EXISTS (SELECT 1 FROM verdicts v WHERE v.debate_id = d.debate_id AND v.done) "
    "ORDER BY 4, 1, 5"
)
TENANT_ASSESSMENTS = (
    "SELECT a.debate_id, a.assessment FROM assessments a JOIN debates d ON d.debate_id = a.debate_id "
    "WHERE d.tenant = ? ORDER BY a.debate_id, a.round"
)
TENANT_TURNS = (
    "SELECT t.debate_id, t.turn FROM turns t JOIN debates d ON d.debate_id = t.debate_id "
    "WHERE d.tenant = ? ORDER BY t.debate_id, t.round"
)
# The key a vote's write is filed under (Store._write): never a debate's id, so a vote is never
# fenced by, nor refused with, the lease of the replica that runs the debate.
VOTE_WRITE_KEY = "votes/"

# -- human seats (issue 19 part 3; services/orchestrator/human_seat.py) --
# A wait opened again (a restart resuming it) keeps its first deadline.
OPEN_HUMAN_TURN = (
    "INSERT INTO human_turns (debate_id, round, participant, deadline_ns) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (debate_id, round, participant) DO NOTHING"
)
HUMAN_TURN = (
    "SELECT deadline_ns, submitted, text, request_id FROM human_turns "
    "WHERE debate_id = ? AND round = ? AND participant = ?"
)
SUBMIT_HUMAN_TURN = (
    "UPDATE human_turns SET submitted = TRUE, text = ?, request_id = ? "
    "WHERE debate_id = ? AND round = ? AND participant = ? AND submitted = FALSE"
)
# The waits still open: nothing submitted and no turn stored (a timed-out turn is stored skipped).
AWAITED_HUMANS = (
    "SELECT h.round, h.participant, h.deadline_ns FROM human_turns h WHERE h.debate_id = ? AND h.submitted = FALSE "
    "AND NOT EXISTS (SELECT 1 FROM turns t WHERE t.debate_id = h.debate_id AND t.round = h.round "
    "AND t.participant = h.participant) ORDER BY h.round, h.participant"
)
# The states of a debate someone must run (or hold in its queue): what a restart or a takeover picks up.
RUNNABLE = (orchestrator_pb2.DebateState.DEBATE_STATE_RUNNING, orchestrator_pb2.DebateState.DEBATE_STATE_QUEUED)


def in_dialect(statement: str, dialect: Dialect) -> str:
    """`statement` (written with "?" placeholders, and no "?" or "%" otherwise) in the dialect's placeholder."""
    return statement if dialect is Dialect.SQLITE else statement.replace("?", dialect.param)


@functools.cache  # a few sets of names, in the engine's code: built once each
def update_debate_sql(names: tuple[str, ...]) -> str:
    """UPDATE debates SET name = ?, ... WHERE debate_id = ? (the names are DebateRow fields, never input)."""
    return f"UPDATE debates SET {', '.join(f'{name} = ?' for name in names)} WHERE debate_id = ?"


def debates_in_states_sql(count: int) -> str:
    """The debates in any of `count` states, oldest in the queue first."""
    marks = ", ".join("?" * count)
    return f"SELECT {DEBATE_COLUMNS} FROM debates WHERE state IN ({marks}) ORDER BY queue_ns, create_ns"


def list_debates_sql(tenant: str, state: int, after: tuple[int, str] | None, limit: int) -> tuple[str, list[Any]]:
    """A page of a tenant's debates, newest first (`state` 0: any), after the (create_ns, debate_id)
    of the last one of the previous page: the statement and its parameters."""
    sql = f"SELECT {DEBATE_COLUMNS} FROM debates WHERE tenant = ?"
    args: list[Any] = [tenant]
    if state:
        sql += " AND state = ?"
        args.append(state)
    if after is not None:
        sql += " AND (create_ns < ? OR (create_ns = ? AND debate_id < ?))"
        args += [after[0], after[0], after[1]]
    sql += " ORDER BY create_ns DESC, debate_id DESC LIMIT ?"
    args.append(limit)
    return sql, args


def amount_text(value: str | Decimal | None) -> str:
    """A stored amount as DebateRow carries it, the same from either database: TEXT from SQLite or
    NUMERIC from PostgreSQL in plain notation without trailing zeros ("0.0105"), and '' (SQLite)
    or NULL (PostgreSQL), nothing spent yet, as ''."""
    if value is None or value == "":
        return ""
    return format_amount(Decimal(value))


def debate_values(row: DebateRow, amount: object) -> tuple[object, ...]:
    """The parameters of INSERT_DEBATE for `row`, its cost_amount stored as `amount`."""
    return (
        row.debate_id,
        row.tenant,
        row.request_id,
        row.config.SerializeToString(),
        row.state,
        row.create_ns,
        row.update_ns,
        row.queue_ns,
        row.current_round,
        row.end_reason,
        amount,
        row.cost,
        row.verdict,
        row.verdict_recorded,
        row.last_sequence,
    )


def debate_row(row: Sequence[Any]) -> DebateRow:
    """A row of `DEBATE_COLUMNS`, in that order, from either database."""
    (
        debate_id,
        tenant,
        request_id,
        config,
        state,
        create_ns,
        update_ns,
        queue_ns,
        current_round,
        end_reason,
        cost_amount,
        cost,
        verdict,
        verdict_recorded,
        last_sequence,
    ) = row
    return DebateRow(
        debate_id=debate_id,
        tenant=tenant,
        request_id=request_id,
        config=common_pb2.DebateConfig.FromString(config),
        state=state,
        create_ns=create_ns,
        update_ns=update_ns,
        queue_ns=queue_ns,
        current_round=current_round,
        end_reason=end_reason,
        cost_amount=amount_text(cost_amount),
        cost=cost,
        verdict=verdict,
        verdict_recorded=bool(verdict_recorded),
        last_sequence=last_sequence,
    )


def encode_page_token(create_ns: int, debate_id: str, state: int) -> str:
    raw = json.dumps([create_ns, debate_id, state], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str) -> tuple[int, str, int]:
    """Raises ValueError (or TypeError) on a token we did not make."""
    padded = token + "=" * (-len(token) % 4)
    create_ns, debate_id, state = json.loads(base64.urlsafe_b64decode(padded.encode()))
    if not isinstance(create_ns, int) or not isinstance(debate_id, str) or not isinstance(state, int):
        raise TypeError("bad page token")
    return create_ns, debate_id, state


class Store(Protocol):
    """What the engine and the event hub need of the database (see the module docstring). Used
    from one thread, the event loop's. Writes join the open transaction; reads see them before
    they are committed."""

    commits: int  # transactions committed so far
    # Leases (PostgreSQL; see store_postgres.py). `shared`: other replicas may run this
    # database's debates, so leases are claimed, renewed and checked; `lost`: debates whose
    # lease this store lost, whose writes it refuses from then on (until it claims them again).
    shared: bool
    lost: set[str]
    cancel_requests: dict[str, str]  # debate -> reason: cancels asked of another replica, found by `renew`
    _costs: dict[str, str]  # debate -> its running total set by `set_cost`, not written yet

    # -- transactions
    def commit(self) -> None:
        """Commits every write made since the last commit (nothing when there is none). Raises
        StoreUnavailable when the database cannot be reached (SQLite: sqlite3.Error); the writes
        are kept for the next commit."""

    def close(self) -> None:
        """Commits, then closes the connection."""

    def checkpoint(self) -> None:
        """Moves what the database's write-ahead log holds into its file (and the fsync that
        takes), blocking: the event hub runs it in a worker thread every CHECKPOINT_S, so that
        no checkpoint runs on the event loop's thread. Safe beside the loop's own use of the
        store (a connection of its own). Nothing here: PostgreSQL's server checkpoints itself."""
        return None

    # -- debates
    def insert_debate(self, row: DebateRow) -> DebateRow:
        """Stores a new debate and returns the stored row: `row`, or the debate stored earlier
        under the same tenant and request_id (then `row` is not stored)."""
        self._write(row.debate_id, INSERT_DEBATE, debate_values(row, self._amount(row.cost_amount)))
        if row.request_id:
            stored = self.find_by_request(row.tenant, row.request_id)
            assert stored is not None  # inserted now, or the one that was there
            return stored
        return row

    def get_debate(self, debate_id: str) -> DebateRow | None:
        rows = self._read(GET_DEBATE, (debate_id,))
        return debate_row(rows[0]) if rows else None

    def existing_debate(self, debate_id: str) -> DebateRow:
        """A debate known to be stored (debates are never deleted); KeyError if it is not."""
        row = self.get_debate(debate_id)
        if row is None:
            raise KeyError(debate_id)
        return row

    def find_by_request(self, tenant: str, request_id: str) -> DebateRow | None:
        rows = self._read(FIND_BY_REQUEST, (tenant, request_id))
        return debate_row(rows[0]) if rows else None

    def update_debate(self, debate_id: str, **fields: Any) -> None:
        """Sets DebateRow fields of a debate (update_ns: now, unless given), and `trace_context`
        (a W3C traceparent, see `trace_context`) when given, in the same statement."""
        fields.setdefault("update_ns", time.time_ns())
        if "verdict_recorded" in fields:
            fields["verdict_recorded"] = bool(fields["verdict_recorded"])
        if "cost_amount" in fields:
            fields["cost_amount"] = self._amount(fields["cost_amount"])
        self._write(debate_id, update_debate_sql(tuple(fields)), (*fields.values(), debate_id))
        if "cost_amount" in fields:
            self._costs.pop(debate_id, None)  # a running total set earlier is older than this one

    def set_cost(self, debate_id: str, amount: str) -> None:
        """Sets the debate's running total (`cost_amount`: USD, a decimal string) as
        `update_debate(cost_amount=amount)` does, but written once a transaction: the last amount
        set before a commit is written into it (update_ns: then), and before any read, which sees
        it; an `update_debate(cost_amount=...)` made after it wins. A debate whose turns end
        together (a round's) writes its row once instead of at each turn."""
        self._costs[debate_id] = amount

    def _write_costs(self) -> None:
        """Writes the running totals `set_cost` holds (each kept until its write ran); called by
        the backends before a commit and before a read."""
        while self._costs:
            debate_id, amount = next(iter(self._costs.items()))
            self.update_debate(debate_id, cost_amount=amount)  # drops it from _costs

    def trace_context(self, debate_id: str) -> str:
        """The W3C `traceparent` stored with the debate by `update_debate(trace_context=...)`:
        StartDebate's span while it is queued, its first run's `debate` span once it runs ('' when
        traces were off, or for an unknown debate). Read only when traces are on (lifecycle.py)."""
        rows = self._read(TRACE_CONTEXT, (debate_id,))
        return str(rows[0][0]) if rows else ""

    def debates_in_states(self, states: tuple[int, ...]) -> list[DebateRow]:
        """The debates in any of `states`, oldest in the queue first."""
        return [debate_row(r) for r in self._read(debates_in_states_sql(len(states)), states)]

    def list_debates(self, tenant: str, state: int, after: tuple[int, str] | None, limit: int) -> list[DebateRow]:
        """Up to `limit` of a tenant's debates, newest first (`state` 0: any), after (create_ns,
        debate_id) of the previous page's last."""
        sql, args = list_debates_sql(tenant, state, after, limit)
        return [debate_row(r) for r in self._read(sql, args)]

    # -- turns, attempts, assessments
    def put_turn(self, debate_id: str, turn: common_pb2.Turn, recorded: bool) -> None:
        """A completed turn; `recorded` once accounting has confirmed its usage."""
        values = (debate_id, turn.round_number, turn.participant, turn.SerializeToString(), recorded)
        self._write(debate_id, PUT_TURN, values)

    def turns(self, debate_id: str) -> list[tuple[common_pb2.Turn, bool]]:
        return [(common_pb2.Turn.FromString(t), bool(r)) for t, r in self._read(TURNS, (debate_id,))]

    def open_attempt(
        self, debate_id: str, round_number: int, participant: str, attempt: int, reservation_id: str
    ) -> None:
        self._write(debate_id, OPEN_ATTEMPT, (debate_id, round_number, participant, attempt, reservation_id))

    def close_attempt(self, debate_id: str, round_number: int, participant: str, attempt: int) -> None:
        self._write(debate_id, CLOSE_ATTEMPT, (debate_id, round_number, participant, attempt))

    def last_attempts(self, debate_id: str) -> dict[tuple[int, str], int]:
        """The last attempt number of each (round, participant) of the debate."""
        return {(r, p): a for r, p, a in self._read(LAST_ATTEMPTS, (debate_id,))}

    def open_attempts(self, debate_id: str) -> list[tuple[int, str, int, str]]:
        """(round, participant, attempt, reservation_id) of the debate's attempts still open."""
        return [(r, p, a, res) for r, p, a, res in self._read(OPEN_ATTEMPTS, (debate_id,))]

    def put_assessment(self, debate_id: str, assessment: common_pb2.RoundAssessment, recorded: bool) -> None:
        values = (debate_id, assessment.round_number, assessment.SerializeToString(), recorded)
        self._write(debate_id, PUT_ASSESSMENT, values)

    def assessments(self, debate_id: str) -> list[tuple[common_pb2.RoundAssessment, bool]]:
        rows = self._read(ASSESSMENTS, (debate_id,))
        return [(common_pb2.RoundAssessment.FromString(a), bool(r)) for a, r in rows]

    # -- human votes (i18j)
    def put_vote(self, debate_id: str, voter: str, winner: str, tie: bool, cast_ns: int) -> bool:
        """Stores a voter's vote on a debate, replacing the voter's earlier one (in the open
        transaction); whether there was an earlier one."""
        replaced = bool(self._read(HAS_VOTE, (debate_id, voter)))
        self._write(VOTE_WRITE_KEY + debate_id, PUT_VOTE, (debate_id, voter, winner, bool(tie), cast_ns))
        return replaced

    def vote_counts(self, debate_id: str) -> dict[tuple[str, bool], int]:
        """(winner, tie) -> votes, for the debate's choices that have any."""
        return {(w, bool(t)): int(n) for w, t, n in self._read(VOTE_COUNTS, (debate_id,))}

    def tenant_vote_counts(self, tenant: str) -> dict[str, dict[tuple[str, bool], int]]:
        """debate_id -> (winner, tie) -> votes, over the tenant's debates that have votes."""
        counts: dict[str, dict[tuple[str, bool], int]] = {}
        for debate_id, w, t, n in self._read(TENANT_VOTE_COUNTS, (tenant,)):
            counts.setdefault(debate_id, {})[(w, bool(t))] = int(n)
        return counts

    def tenant_verdicts(self, tenant: str, state: int) -> list[tuple[str, common_pb2.Verdict]]:
        """(debate_id, verdict) of every verdict of the tenant's debates in `state`: each finished
        verdict version (a re-judging's and a continuation's too), oldest debate first, then by
        version; a debate without versions gives its one stored verdict."""
        rows = self._read(TENANT_VERDICTS, (tenant, state, tenant, state))
        return [
            (
                debate_id,
                orchestrator_pb2.VerdictVersion.FromString(entry).verdict
                if entry is not None
                else common_pb2.Verdict.FromString(verdict),
            )
            for debate_id, entry, verdict, _, _ in rows
        ]

    def tenant_assessments(self, tenant: str) -> list[tuple[str, common_pb2.RoundAssessment]]:
        """(debate_id, assessment) of every round assessment stored for the tenant's debates."""
        rows = self._read(TENANT_ASSESSMENTS, (tenant,))
        return [(debate_id, common_pb2.RoundAssessment.FromString(a)) for debate_id, a in rows]

    def tenant_turns(self, tenant: str) -> list[tuple[str, common_pb2.Turn]]:
        """(debate_id, turn) of every turn stored for the tenant's debates."""
        return [(debate_id, common_pb2.Turn.FromString(t)) for debate_id, t in self._read(TENANT_TURNS, (tenant,))]

    # -- human seats (issue 19 part 3)
    def open_human_turn(self, debate_id: str, round_number: int, participant: str, deadline_ns: int) -> None:
        """Opens the wait for a human seat's turn with its deadline (wall-clock ns); a wait already
        opened (before a restart) keeps its own."""
        self._write(debate_id, OPEN_HUMAN_TURN, (debate_id, round_number, participant, deadline_ns))

    def human_turn(self, debate_id: str, round_number: int, participant: str) -> HumanTurnRow | None:
        """The wait for a human seat's turn, None when it was never opened."""
        rows = self._read(HUMAN_TURN, (debate_id, round_number, participant))
        if not rows:
            return None
        deadline_ns, submitted, text, request_id = rows[0]
        return HumanTurnRow(round_number, participant, int(deadline_ns), bool(submitted), text, request_id)

    def submit_human_turn(
        self, debate_id: str, round_number: int, participant: str, text: str, request_id: str
    ) -> None:
        """Stores the text of an open wait (a wait that has its text already is left as it is)."""
        self._write(debate_id, SUBMIT_HUMAN_TURN, (text, request_id, debate_id, round_number, participant))

    def awaited_humans(self, debate_id: str) -> list[tuple[int, str, int]]:
        """(round, participant, deadline_ns) of each open wait of the debate: no text, no turn stored."""
        return [(int(r), p, int(d)) for r, p, d in self._read(AWAITED_HUMANS, (debate_id,))]

    # -- stops (stopping rules, services/orchestrator/stopping.py)
    def put_stop(self, debate_id: str, stop: orchestrator_pb2.DebateStop, announced: bool) -> None:
        """The stop a stopping rule decided; `announced` once DebateStopped is logged."""
        self._write(debate_id, PUT_STOP, (debate_id, stop.SerializeToString(), announced))

    def stop(self, debate_id: str) -> tuple[orchestrator_pb2.DebateStop, bool] | None:
        """(the debate's stop, announced), or None when no rule stopped it."""
        rows = self._read(STOP, (debate_id,))
        return (orchestrator_pb2.DebateStop.FromString(rows[0][0]), bool(rows[0][1])) if rows else None

    def stops(self, debate_ids: Sequence[str]) -> dict[str, orchestrator_pb2.DebateStop]:
        """The stops of those of `debate_ids` a rule stopped (one read for a page of debates)."""
        if not debate_ids:
            return {}
        rows = self._read(stops_sql(len(debate_ids)), tuple(debate_ids))
        return {d: orchestrator_pb2.DebateStop.FromString(s) for d, s in rows}

    # -- verdict versions (verdicts.py)
    def insert_verdict_version(
        self, debate_id: str, entry: orchestrator_pb2.VerdictVersion, create_ns: int, *, done: bool
    ) -> None:
        """Stores a new verdict version (its number, request_id and reason from `entry`); nothing
        when that number or that request_id is taken already (read back to know which)."""
        values = (debate_id, entry.version, entry.request_id, entry.reason, entry.SerializeToString(), done, create_ns)
        self._write(debate_id, INSERT_VERDICT_VERSION, values)

    def update_verdict_version(self, debate_id: str, entry: orchestrator_pb2.VerdictVersion, *, done: bool) -> None:
        """Rewrites a stored version's entry (a re-judging's progress, or its end when `done`)."""
        self._write(debate_id, UPDATE_VERDICT_VERSION, (entry.SerializeToString(), done, debate_id, entry.version))

    def verdict_versions(self, debate_id: str) -> list[tuple[orchestrator_pb2.VerdictVersion, bool]]:
        """Every stored version of the debate, oldest first, each with whether it is done."""
        rows = self._read(VERDICT_VERSIONS, (debate_id,))
        return [(orchestrator_pb2.VerdictVersion.FromString(e), bool(d)) for e, d in rows]

    def verdict_version_by_request(
        self, debate_id: str, request_id: str
    ) -> tuple[orchestrator_pb2.VerdictVersion, bool] | None:
        rows = self._read(VERDICT_VERSION_BY_REQUEST, (debate_id, request_id))
        return (orchestrator_pb2.VerdictVersion.FromString(rows[0][0]), bool(rows[0][1])) if rows else None

    # -- events
    def add_events(self, rows: list[tuple[str, int, bytes]]) -> None:
        """(debate_id, sequence, event bytes) rows, of any debates, written together. A row
        already written (the same events again, after a write or commit that failed) is
        written over, never doubled."""

    def read_events(self, debate_id: str, after_sequence: int, up_to: int, limit: int) -> list[tuple[int, bytes]]:
        """Events after_sequence < sequence <= up_to, in order, at most `limit` (the caller passes
        the committed watermark: reads also see writes not committed yet)."""
        return [(s, e) for s, e in self._read(READ_EVENTS, (debate_id, after_sequence, up_to, limit))]

    def last_sequence(self, debate_id: str) -> int:
        rows = self._read(LAST_SEQUENCE, (debate_id,))
        return int(rows[0][0] or 0) if rows else 0

    # -- leases
    def claim(self, debate_id: str) -> bool:
        """Claims the lease of a debate about to run here (in the open transaction, committed
        with it); False when another replica holds it."""

    def claim_runnable(self, limit: int | None = None) -> list[DebateRow]:
        """Claims RUNNING or QUEUED debates whose lease is free or expired (SKIP LOCKED: one
        replica each), in the open transaction, and returns them: at most `limit` (None: every
        one), the RUNNING ones (lapsed: their owner died) first, then the queue, oldest first."""

    def holds(self, debate_id: str) -> bool:
        """Whether this replica holds the debate's lease (SQLite: always): whether its events are
        written here or followed from the database."""
        return True

    def renew(self) -> None:
        """Renews the leases held (in the open transaction); a lease another replica took is
        added to `lost`, and a cancel asked of another replica is put in `cancel_requests`."""

    def release(self, debate_id: str) -> None:
        """Gives up a debate's lease with the next commit (its ending's)."""

    def ensure_held(self, debate_id: str) -> None:
        """Raises LeaseLost when another replica took the debate (its writes are refused here):
        checked after a commit and before an outside effect follows it (a usage recorded)."""
        if debate_id in self.lost:
            raise LeaseLost({debate_id})

    # -- the cluster (PostgreSQL; a single process's SQLite store never needs these)
    def admit_queued(self, queue_limit: int) -> bool:
        """Whether the cluster-wide queue (the QUEUED debates) has a place left; the check is
        serialised with every other replica's until the open transaction commits."""

    def queue_position(self, row: DebateRow) -> int:
        """A QUEUED debate's 1-based place in the cluster-wide queue."""

    def request_cancel(self, debate_id: str, reason: str) -> None:
        """Asks the replica that runs the debate to cancel it (with the next commit)."""

    def listen(self, on_events: Callable[[dict[str, int] | None], None], on_cancel: Callable[[str, str], None]) -> None:
        """Calls, on the event loop, `on_events({debate_id: last committed sequence})` when other
        replicas commit events (None: some may have been missed, read every followed debate) and
        `on_cancel(debate_id, reason)` when a cancel is asked of this replica's debates."""
        return None

    def events_since(self, after: dict[str, int]) -> tuple[list[tuple[str, int, bytes]], set[str]]:
        """The committed events of each debate after its sequence in `after` ((debate_id,
        sequence, event) rows in order), and which of them have ended (every event read)."""
        return [], set()

    # -- what each backend provides: one write joining the open transaction, one read
    def _write(self, debate_id: str, statement: str, params: Sequence[object]) -> None:
        """Runs a write of one debate's (a statement in "?" placeholders) in the open transaction,
        opened first. Every write names its debate, as add_events' rows do: where a fencing
        token (the debate's lease epoch) will be checked."""

    def _read(self, statement: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        """The rows of a read (a statement in "?" placeholders), which sees the uncommitted writes."""

    def _amount(self, text: str) -> object:
        """How an amount DebateRow carries as a decimal string ('' for none) is stored (read back
        by `amount_text`)."""


class SqliteStore(Store):
    """The store in one SQLite file (":memory:" for none). Creates the file and its folder, and
    migrates the schema (a file made before schema_migrations existed is adopted as version 1):
    SchemaTooNew if a newer release migrated it."""

    def __init__(self, path: str):
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=OFF")
        # The event hub checkpoints from a worker thread (`checkpoint`): a commit on the loop's
        # thread checkpoints only if the log outgrows WAL_AUTOCHECKPOINT_PAGES (nobody runs the
        # hub's), and the log file is cut back to WAL_SIZE_LIMIT after a checkpoint.
        self.db.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        self.db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        self.db.execute(f"PRAGMA cache_size={-PAGE_CACHE_KIB}")  # negative: KiB, not pages
        self._checkpointer: sqlite3.Connection | None = None
        self._migrate()
        self.commits = 0
        self.shared = False  # one process a file: every lease is held, trivially
        self.lost: set[str] = set()
        self.cancel_requests: dict[str, str] = {}
        self._costs: dict[str, str] = {}

    def _migrate(self) -> None:
        db = self._tx()
        try:
            made_before = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'debates'").fetchone()
            migrate(sqlite_execute(db), Dialect.SQLITE, COMPONENT, MIGRATIONS, adopted=1 if made_before else 0)
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # -- transactions -----------------------------------------------------------------
    # The connection's own flag says whether a transaction is open, so a COMMIT that failed
    # (the transaction still open, to be committed again) or a transaction SQLite rolled back
    # on an I/O error never leaves a stale flag behind.
    def _tx(self) -> sqlite3.Connection:
        if not self.db.in_transaction:
            self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def commit(self) -> None:
        if self._costs:
            self._write_costs()
        if self.db.in_transaction:
            self.db.execute("COMMIT")
            self.commits += 1

    def close(self) -> None:
        try:
            self.commit()
        finally:
            self.db.close()
            if self._checkpointer is not None:
                self._checkpointer.close()
                self._checkpointer = None

    def checkpoint(self) -> None:
        if self.path == ":memory:":
            return
        if self._checkpointer is None:
            # Its own connection, used by one worker thread at a time (the hub runs one checkpoint
            # at most at once): the loop's connection is never waited for.
            self._checkpointer = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._checkpointer.execute("PRAGMA busy_timeout=1000")
        # PASSIVE: copies what no reader still needs and never blocks the loop's writer.
        self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _write(self, debate_id: str, statement: str, params: Sequence[object]) -> None:
        self._tx().execute(statement, params)

    def _read(self, statement: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        if self._costs:
            self._write_costs()
        return self.db.execute(statement, params).fetchall()

    def _amount(self, text: str) -> object:
        return text  # TEXT

    def add_events(self, rows: list[tuple[str, int, bytes]]) -> None:
        self._tx().executemany(WRITE_EVENTS, rows)

    def claim(self, debate_id: str) -> bool:
        return True

    def claim_runnable(self, limit: int | None = None) -> list[DebateRow]:
        return self.debates_in_states(RUNNABLE)  # one process: every one, whatever the limit

    def renew(self) -> None:
        pass

    def release(self, debate_id: str) -> None:
        pass

    # One process a file has no cluster: the lifecycle keeps its in-memory queue and runs every debate.
    def admit_queued(self, queue_limit: int) -> bool:
        raise NotImplementedError("a cluster-wide queue needs a shared store")

    def queue_position(self, row: DebateRow) -> int:
        raise NotImplementedError("a cluster-wide queue needs a shared store")

    def request_cancel(self, debate_id: str, reason: str) -> None:
        raise NotImplementedError("a cancel is forwarded only on a shared store")
