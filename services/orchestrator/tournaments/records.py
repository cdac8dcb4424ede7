"""A tournament's rows in the orchestrator's store (schema.py, version "tournaments and their
side-swapped matches"): `tournaments` (config, state, tenant, request_id) and
`tournament_matches` (each match's `Match` message, whose legs name their debates).

The statements are written once with "?" placeholders and run through the store's own write and
read (its open transaction, either dialect: `Store._write` and `Store._read`), so a tournament's
writes commit with the debates' writes, in the same order. A write names the tournament where
a debate write names its debate (the key PostgreSQL's fence checks leases by; a tournament
holds none, so none is checked).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from debate.orchestrator.v1 import tournament_pb2 as tpb

from services.orchestrator.store import Store

T = tpb.TournamentState
M = tpb.MatchState

_COLUMNS = "tournament_id, tenant, request_id, config, state, create_ns, update_ns, end_reason"
INSERT_TOURNAMENT = f"INSERT INTO tournaments ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
GET_TOURNAMENT = f"SELECT {_COLUMNS} FROM tournaments WHERE tournament_id = ?"
FIND_TOURNAMENT = f"SELECT {_COLUMNS} FROM tournaments WHERE tenant = ? AND request_id = ?"
TOURNAMENTS_IN_STATE = f"SELECT {_COLUMNS} FROM tournaments WHERE state = ? ORDER BY create_ns"
UPDATE_TOURNAMENT = "UPDATE tournaments SET state = ?, end_reason = ?, update_ns = ? WHERE tournament_id = ?"
PUT_MATCH = (
    "INSERT INTO tournament_matches (tournament_id, match_index, state, match) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (tournament_id, match_index) DO UPDATE SET state = excluded.state, match = excluded.match"
)
MATCHES = "SELECT match FROM tournament_matches WHERE tournament_id = ? ORDER BY match_index"
DECIDED_OF_TENANT = (
    "SELECT m.match FROM tournament_matches m JOIN tournaments t ON t.tournament_id = m.tournament_id "
    "WHERE t.tenant = ? AND m.state = ? ORDER BY t.create_ns, m.tournament_id, m.match_index"
)


@dataclass(slots=True)
class TournamentRow:
    tournament_id: str
    tenant: str
    request_id: str
    config: tpb.TournamentConfig
    state: tpb.TournamentState.ValueType
    create_ns: int
    update_ns: int
    end_reason: str


def _row(values: tuple[Any, ...]) -> TournamentRow:
    tournament_id, tenant, request_id, config, state, create_ns, update_ns, end_reason = values
    return TournamentRow(
        tournament_id,
        tenant,
        request_id,
        tpb.TournamentConfig.FromString(bytes(config)),
        state,
        create_ns,
        update_ns,
        end_reason,
    )


def list_sql(tenant: str, after: tuple[int, str] | None, limit: int) -> tuple[str, list[Any]]:
    """A page of a tenant's tournaments, newest first, after (create_ns, tournament_id)."""
    sql = f"SELECT {_COLUMNS} FROM tournaments WHERE tenant = ?"
    args: list[Any] = [tenant]
    if after is not None:
        sql += " AND (create_ns < ? OR (create_ns = ? AND tournament_id < ?))"
        args += [after[0], after[0], after[1]]
    sql += " ORDER BY create_ns DESC, tournament_id DESC LIMIT ?"
    return sql, [*args, limit]


class TournamentRecords:
    """Tournaments and matches in `store` (see the module docstring). Writes join the store's
    open transaction; the caller commits (`store.commit()`) before any outside effect."""

    def __init__(self, store: Store):
        self.store = store

    def insert(self, row: TournamentRow, matches: list[tpb.Match]) -> TournamentRow:
        """Stores a new tournament with its matches; returns the stored row: `row`, or the one
        stored earlier under the same tenant and request_id (then nothing is written)."""
        if row.request_id:
            existing = self.find_by_request(row.tenant, row.request_id)
            if existing is not None:
                return existing
        values = (
            row.tournament_id,
            row.tenant,
            row.request_id,
            row.config.SerializeToString(),
            row.state,
            row.create_ns,
            row.update_ns,
            row.end_reason,
        )
        self.store._write(row.tournament_id, INSERT_TOURNAMENT, values)
        for match in matches:
            self.put_match(row.tournament_id, match)
        return row

    def get(self, tournament_id: str) -> TournamentRow | None:
        rows = self.store._read(GET_TOURNAMENT, (tournament_id,))
        return _row(rows[0]) if rows else None

    def find_by_request(self, tenant: str, request_id: str) -> TournamentRow | None:
        rows = self.store._read(FIND_TOURNAMENT, (tenant, request_id))
        return _row(rows[0]) if rows else None

    def in_state(self, state: tpb.TournamentState.ValueType) -> list[TournamentRow]:
        return [_row(r) for r in self.store._read(TOURNAMENTS_IN_STATE, (state,))]

    def page(self, tenant: str, after: tuple[int, str] | None, limit: int) -> list[TournamentRow]:
        sql, args = list_sql(tenant, after, limit)
        return [_row(r) for r in self.store._read(sql, args)]

    def set_state(self, tournament_id: str, state: tpb.TournamentState.ValueType, end_reason: str = "") -> None:
        self.store._write(tournament_id, UPDATE_TOURNAMENT, (state, end_reason, time.time_ns(), tournament_id))

    def put_match(self, tournament_id: str, match: tpb.Match) -> None:
        values = (tournament_id, match.match_index, match.state, match.SerializeToString())
        self.store._write(tournament_id, PUT_MATCH, values)

    def matches(self, tournament_id: str) -> list[tpb.Match]:
        return [tpb.Match.FromString(bytes(m)) for (m,) in self.store._read(MATCHES, (tournament_id,))]

    def decided_matches_of(self, tenant: str) -> list[tpb.Match]:
        """Every decided match of the tenant's tournaments, oldest tournament first."""
        rows = self.store._read(DECIDED_OF_TENANT, (tenant, M.MATCH_STATE_DECIDED))
        return [tpb.Match.FromString(bytes(m)) for (m,) in rows]
