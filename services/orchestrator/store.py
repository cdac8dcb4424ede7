"""The orchestrator's durable state in SQLite (WAL): debates, turns, attempts, assessments,
verdicts and the per-debate event log.

One connection on the event loop's thread, with one open transaction that collects every
write; `commit()` ends it. The event hub commits every coalescing tick (a few tens of ms) and
the engine commits at once where an outside effect follows (before a usage is recorded).
Nothing is announced to a subscriber before the commit that stored it, so a crash can lose
only what nobody has seen: at most the last tick's token deltas of in-flight turns, whose
attempts are regenerated under a new attempt number.

WAL with synchronous=NORMAL survives a killed process (SIGKILL) without losing a commit; only a
power cut could lose the last commits, which is the trade-off the event volume asks for.
The store is a narrow interface so another database could serve.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from debate.common.v1 import common_pb2
from debate.orchestrator.v1 import orchestrator_pb2

SCHEMA = """
CREATE TABLE IF NOT EXISTS debates (
    debate_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    request_id TEXT NOT NULL,
    config BLOB NOT NULL,
    state INTEGER NOT NULL,
    create_ns INTEGER NOT NULL,
    update_ns INTEGER NOT NULL,
    queue_ns INTEGER NOT NULL DEFAULT 0,
    current_round INTEGER NOT NULL DEFAULT 0,
    end_reason TEXT NOT NULL DEFAULT '',
    cost_amount TEXT NOT NULL DEFAULT '',
    cost BLOB,
    verdict BLOB,
    verdict_recorded INTEGER NOT NULL DEFAULT 0,
    last_sequence INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS debates_request ON debates(tenant, request_id) WHERE request_id != '';
CREATE INDEX IF NOT EXISTS debates_list ON debates(tenant, create_ns DESC, debate_id DESC);
CREATE INDEX IF NOT EXISTS debates_state ON debates(state);
CREATE TABLE IF NOT EXISTS turns (
    debate_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    participant TEXT NOT NULL,
    turn BLOB NOT NULL,
    recorded INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (debate_id, round, participant)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS attempts (
    debate_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    participant TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    reservation_id TEXT NOT NULL DEFAULT '',
    open INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (debate_id, round, participant, attempt)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS assessments (
    debate_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    assessment BLOB NOT NULL,
    recorded INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (debate_id, round)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    debate_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    event BLOB NOT NULL,
    PRIMARY KEY (debate_id, sequence)
) WITHOUT ROWID;
"""


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
    cost_amount: str
    cost: bytes | None
    verdict: bytes | None
    verdict_recorded: bool
    last_sequence: int


_INSERT_COLUMNS = (
    "debate_id, tenant, request_id, config, state, create_ns, update_ns, queue_ns, current_round, "
    "end_reason, cost_amount, cost, verdict, verdict_recorded, last_sequence"
)
# The last sequence is read from the events' primary key (one index probe) rather than kept in
# the debate's row, so storing a tick's events touches no other table.
_DEBATE_COLUMNS = _INSERT_COLUMNS.replace(
    "last_sequence", "COALESCE((SELECT MAX(sequence) FROM events e WHERE e.debate_id = debates.debate_id), 0)"
)


def _debate(row: tuple[Any, ...]) -> DebateRow:
    """A row of `_DEBATE_COLUMNS`, in that order."""
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
        cost_amount=cost_amount,
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


class Store:
    def __init__(self, path: str):
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=OFF")
        self.db.executescript(SCHEMA)
        self.commits = 0

    # -- transactions -----------------------------------------------------------------
    # The connection's own flag says whether a transaction is open, so a COMMIT that failed
    # (the transaction still open, to be committed again) or a transaction SQLite rolled back
    # on an I/O error never leaves a stale flag behind.
    def _tx(self) -> sqlite3.Connection:
        if not self.db.in_transaction:
            self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def commit(self) -> None:
        if self.db.in_transaction:
            self.db.execute("COMMIT")
            self.commits += 1

    def close(self) -> None:
        try:
            self.commit()
        finally:
            self.db.close()

    # -- debates --------------------------------------------------------------------------
    def insert_debate(self, row: DebateRow) -> None:
        self._tx().execute(
            f"INSERT INTO debates ({_INSERT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
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
                row.cost_amount,
                row.cost,
                row.verdict,
                int(row.verdict_recorded),
                row.last_sequence,
            ),
        )

    def get_debate(self, debate_id: str) -> DebateRow | None:
        row = self.db.execute(f"SELECT {_DEBATE_COLUMNS} FROM debates WHERE debate_id=?", (debate_id,)).fetchone()
        return _debate(row) if row else None

    def existing_debate(self, debate_id: str) -> DebateRow:
        """A debate known to be stored (debates are never deleted); KeyError if it is not."""
        row = self.get_debate(debate_id)
        if row is None:
            raise KeyError(debate_id)
        return row

    def find_by_request(self, tenant: str, request_id: str) -> DebateRow | None:
        row = self.db.execute(
            f"SELECT {_DEBATE_COLUMNS} FROM debates WHERE tenant=? AND request_id=?", (tenant, request_id)
        ).fetchone()
        return _debate(row) if row else None

    def update_debate(self, debate_id: str, **fields: Any) -> None:
        fields.setdefault("update_ns", time.time_ns())
        if "verdict_recorded" in fields:
            fields["verdict_recorded"] = int(fields["verdict_recorded"])
        assignments = ", ".join(f"{name}=?" for name in fields)
        self._tx().execute(f"UPDATE debates SET {assignments} WHERE debate_id=?", (*fields.values(), debate_id))

    def debates_in_states(self, states: tuple[int, ...]) -> list[DebateRow]:
        marks = ",".join("?" * len(states))
        rows = self.db.execute(
            f"SELECT {_DEBATE_COLUMNS} FROM debates WHERE state IN ({marks}) ORDER BY queue_ns, create_ns", states
        ).fetchall()
        return [_debate(r) for r in rows]

    def list_debates(self, tenant: str, state: int, after: tuple[int, str] | None, limit: int) -> list[DebateRow]:
        sql = f"SELECT {_DEBATE_COLUMNS} FROM debates WHERE tenant=?"
        args: list[Any] = [tenant]
        if state:
            sql += " AND state=?"
            args.append(state)
        if after is not None:
            sql += " AND (create_ns < ? OR (create_ns = ? AND debate_id < ?))"
            args += [after[0], after[0], after[1]]
        sql += " ORDER BY create_ns DESC, debate_id DESC LIMIT ?"
        args.append(limit)
        return [_debate(r) for r in self.db.execute(sql, args).fetchall()]

    # -- turns, attempts, assessments ---------------------------------------------------
    def put_turn(self, debate_id: str, turn: common_pb2.Turn, recorded: bool) -> None:
        """A completed turn; `recorded` once accounting has confirmed its usage."""
        self._tx().execute(
            "INSERT OR REPLACE INTO turns (debate_id, round, participant, turn, recorded) VALUES (?,?,?,?,?)",
            (debate_id, turn.round_number, turn.participant, turn.SerializeToString(), int(recorded)),
        )

    def turns(self, debate_id: str) -> list[tuple[common_pb2.Turn, bool]]:
        rows = self.db.execute(
            "SELECT turn, recorded FROM turns WHERE debate_id=? ORDER BY round", (debate_id,)
        ).fetchall()
        return [(common_pb2.Turn.FromString(r[0]), bool(r[1])) for r in rows]

    def open_attempt(
        self, debate_id: str, round_number: int, participant: str, attempt: int, reservation_id: str
    ) -> None:
        self._tx().execute(
            "INSERT OR REPLACE INTO attempts (debate_id, round, participant, attempt, reservation_id, open)"
            " VALUES (?,?,?,?,?,1)",
            (debate_id, round_number, participant, attempt, reservation_id),
        )

    def close_attempt(self, debate_id: str, round_number: int, participant: str, attempt: int) -> None:
        self._tx().execute(
            "UPDATE attempts SET open=0 WHERE debate_id=? AND round=? AND participant=? AND attempt=?",
            (debate_id, round_number, participant, attempt),
        )

    def last_attempts(self, debate_id: str) -> dict[tuple[int, str], int]:
        rows = self.db.execute(
            "SELECT round, participant, MAX(attempt) FROM attempts WHERE debate_id=? GROUP BY round, participant",
            (debate_id,),
        ).fetchall()
        return {(r[0], r[1]): r[2] for r in rows}

    def open_attempts(self, debate_id: str) -> list[tuple[int, str, int, str]]:
        return self.db.execute(
            "SELECT round, participant, attempt, reservation_id FROM attempts WHERE debate_id=? AND open=1",
            (debate_id,),
        ).fetchall()

    def put_assessment(self, debate_id: str, assessment: common_pb2.RoundAssessment, recorded: bool) -> None:
        self._tx().execute(
            "INSERT OR REPLACE INTO assessments (debate_id, round, assessment, recorded) VALUES (?,?,?,?)",
            (debate_id, assessment.round_number, assessment.SerializeToString(), int(recorded)),
        )

    def assessments(self, debate_id: str) -> list[tuple[common_pb2.RoundAssessment, bool]]:
        rows = self.db.execute(
            "SELECT assessment, recorded FROM assessments WHERE debate_id=? ORDER BY round", (debate_id,)
        ).fetchall()
        return [(common_pb2.RoundAssessment.FromString(r[0]), bool(r[1])) for r in rows]

    # -- events -------------------------------------------------------------------------
    def add_events(self, rows: list[tuple[str, int, bytes]]) -> None:
        """(debate_id, sequence, event bytes) rows, of any debates, in one statement. A row
        already written (the same events again, after a write or commit that failed) is
        written over, never doubled."""
        self._tx().executemany("INSERT OR REPLACE INTO events (debate_id, sequence, event) VALUES (?,?,?)", rows)

    def read_events(self, debate_id: str, after_sequence: int, up_to: int, limit: int) -> list[tuple[int, bytes]]:
        """Events after_sequence < sequence <= up_to (the caller passes the committed watermark:
        this connection also sees its own uncommitted writes)."""
        return self.db.execute(
            "SELECT sequence, event FROM events WHERE debate_id=? AND sequence>? AND sequence<=? ORDER BY sequence"
            " LIMIT ?",
            (debate_id, after_sequence, up_to, limit),
        ).fetchall()

    def last_sequence(self, debate_id: str) -> int:
        row = self.db.execute("SELECT MAX(sequence) FROM events WHERE debate_id=?", (debate_id,)).fetchone()
        return row[0] or 0
