"""The orchestrator's schema (debates, turns, attempts, assessments, the event log), version by
version, in both dialects side by side.

Applied at start by `services.common.migrations.migrate` (component "orchestrator"), by either
store (services/orchestrator/store.py, store_postgres.py). A version means the same tables and
columns on SQLite and PostgreSQL; only the types differ (and how a table is laid out: a
version may change SQLite's alone, as 10 does, and then does nothing on PostgreSQL):

- protobuf messages (`debates.config`, `cost`, `verdict`, `turns.turn`, `assessments.assessment`,
  `events.event`): BLOB in SQLite, BYTEA in PostgreSQL;
- `debates.cost_amount`, the debate's running total in USD: an exact decimal string (TEXT, ''
  before anything was spent) in SQLite; NUMERIC (NULL before anything was spent) in PostgreSQL.
  Both stores read it back as the same string (`store.amount_text`);
- nanosecond times and sequences: INTEGER in SQLite (64-bit), BIGINT in PostgreSQL;
- flags (`verdict_recorded`, `recorded`, `open`): 0/1 in SQLite, BOOLEAN in PostgreSQL.

`debates.last_sequence` is kept for the version's shape but never read: the last sequence is
read from the events' primary key (see `store.DEBATE_COLUMNS`).

Version 1 is the schema the SQLite store created with `CREATE TABLE IF NOT EXISTS` before
`schema_migrations` existed; a SQLite file made then (it has a `debates` table and no record)
is adopted as version 1 (`SqliteStore`). A new version is appended here, never edited in place
once released: a database records which versions it has.
"""

from __future__ import annotations

from services.common.migrations import Migration, latest_version

COMPONENT = "orchestrator"

_SQLITE_V1 = (
    """CREATE TABLE debates (
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
)""",
    "CREATE UNIQUE INDEX debates_request ON debates(tenant, request_id) WHERE request_id != ''",
    "CREATE INDEX debates_list ON debates(tenant, create_ns DESC, debate_id DESC)",
    "CREATE INDEX debates_state ON debates(state)",
    """CREATE TABLE turns (
    debate_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    participant TEXT NOT NULL,
    turn BLOB NOT NULL,
    recorded INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (debate_id, round, participant)
) WITHOUT ROWID""",
    """CREATE TABLE attempts (
    debate_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    participant TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    reservation_id TEXT NOT NULL DEFAULT '',
    open INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (debate_id, round, participant, attempt)
) WITHOUT ROWID""",
    """CREATE TABLE assessments (
    debate_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    assessment BLOB NOT NULL,
    recorded INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (debate_id, round)
) WITHOUT ROWID""",
    """CREATE TABLE events (
    debate_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    event BLOB NOT NULL,
    PRIMARY KEY (debate_id, sequence)
) WITHOUT ROWID""",
)

_POSTGRES_V1 = (
    """CREATE TABLE debates (
    debate_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    request_id TEXT NOT NULL,
    config BYTEA NOT NULL,
    state INTEGER NOT NULL,
    create_ns BIGINT NOT NULL,
    update_ns BIGINT NOT NULL,
    queue_ns BIGINT NOT NULL DEFAULT 0,
    current_round INTEGER NOT NULL DEFAULT 0,
    end_reason TEXT NOT NULL DEFAULT '',
    cost_amount NUMERIC,
    cost BYTEA,
    verdict BYTEA,
    verdict_recorded BOOLEAN NOT NULL DEFAULT FALSE,
    last_sequence BIGINT NOT NULL DEFAULT 0
)""",
    "CREATE UNIQUE INDEX debates_request ON debates (tenant, request_id) WHERE request_id <> ''",
    "CREATE INDEX debates_list ON debates (tenant, create_ns DESC, debate_id DESC)",
    "CREATE INDEX debates_state ON debates (state)",
    """CREATE TABLE turns (
    debate_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    participant TEXT NOT NULL,
    turn BYTEA NOT NULL,
    recorded BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (debate_id, round, participant)
)""",
    """CREATE TABLE attempts (
    debate_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    participant TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    reservation_id TEXT NOT NULL DEFAULT '',
    open BOOLEAN NOT NULL DEFAULT TRUE,
    PRIMARY KEY (debate_id, round, participant, attempt)
)""",
    """CREATE TABLE assessments (
    debate_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    assessment BYTEA NOT NULL,
    recorded BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (debate_id, round)
)""",
    """CREATE TABLE events (
    debate_id TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    event BYTEA NOT NULL,
    PRIMARY KEY (debate_id, sequence)
)""",
)

# Version 2: leases. A replica owns a running or queued debate through its row here: `owner` (the
# replica's id), `epoch` (the fencing token, raised by every claim) and `expires_at` (renewed by
# the owner's heartbeat). SQLite has the table so versions mean the same, and never uses it (one
# process holds every debate of its file). In PostgreSQL, expires_at is the server's clock, so
# the replicas' clocks never meet; `orchestrator_fence` is the check a commit runs before its
# writes (services/orchestrator/store_postgres.py): it locks the leases of the debates written
# FOR SHARE (a takeover waits for this commit to end) and raises when one is no longer
# (owner, epoch), naming the lost debates in its DETAIL.
_SQLITE_V2 = (
    """CREATE TABLE debate_leases (
    debate_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID""",
)

_POSTGRES_V2 = (
    """CREATE TABLE debate_leases (
    debate_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
)""",
    """CREATE FUNCTION orchestrator_fence(p_owner TEXT, p_ids TEXT[], p_epochs BIGINT[]) RETURNS VOID
LANGUAGE plpgsql AS $fence$
DECLARE
    lost TEXT;
BEGIN
    PERFORM 1 FROM debate_leases WHERE debate_id = ANY(p_ids) ORDER BY debate_id FOR SHARE;
    SELECT string_agg(h.debate_id, ',') INTO lost
    FROM unnest(p_ids, p_epochs) AS h(debate_id, epoch)
    LEFT JOIN debate_leases l ON l.debate_id = h.debate_id
    WHERE l.debate_id IS NULL OR l.owner <> p_owner OR l.epoch <> h.epoch;
    IF lost IS NOT NULL THEN
        RAISE EXCEPTION 'orchestrator lease lost' USING ERRCODE = 'P0001', DETAIL = lost;
    END IF;
END
$fence$""",
)

# Version 3: a cancel asked of a replica that does not run the debate. `cancel_requested` holds
# the caller's reason ('' when none was asked): the replica that was asked writes it and sends a
# NOTIFY on `orchestrator_cancel`; the owner's listener acts on it at once, and its heartbeat reads
# it back with each renewal as a backstop (store_postgres.py). SQLite has the column and never
# writes it (one process runs every debate of its file). The index serves the cluster-wide queue:
# the QUEUED debates, oldest first (`debates_state` covers the count).
_SQLITE_V3 = (
    "ALTER TABLE debates ADD COLUMN cancel_requested TEXT NOT NULL DEFAULT ''",
    "CREATE INDEX debates_queue ON debates(state, queue_ns, create_ns)",
)
_POSTGRES_V3 = (
    "ALTER TABLE debates ADD COLUMN cancel_requested TEXT NOT NULL DEFAULT ''",
    "CREATE INDEX debates_queue ON debates (state, queue_ns, create_ns)",
)

# Version 4: human votes (issue 18 part 4). One vote per (debate, voter):
# a repeated vote replaces the row. `winner` is a participant's name, '' with `tie` (0/1 in
# SQLite, BOOLEAN in PostgreSQL); `cast_ns` is when the current vote was cast. A debate's votes
# are read and counted by debate_id (the primary key's prefix).
_SQLITE_VOTES = (
    """CREATE TABLE votes (
    debate_id TEXT NOT NULL,
    voter TEXT NOT NULL,
    winner TEXT NOT NULL,
    tie INTEGER NOT NULL DEFAULT 0,
    cast_ns INTEGER NOT NULL,
    PRIMARY KEY (debate_id, voter)
) WITHOUT ROWID""",
)
_POSTGRES_VOTES = (
    """CREATE TABLE votes (
    debate_id TEXT NOT NULL,
    voter TEXT NOT NULL,
    winner TEXT NOT NULL,
    tie BOOLEAN NOT NULL DEFAULT FALSE,
    cast_ns BIGINT NOT NULL,
    PRIMARY KEY (debate_id, voter)
)""",
)
VOTES_MIGRATION_NAME = "human votes, one per (debate, voter)"
# Version 5: tournaments and their matches (services/orchestrator/tournaments/). A match row
# holds its `Match` message (its legs name their debates), written with the debates' ids before
# they start, so a restart resumes a match's own debates and never plays it twice.
_SQLITE_TOURNAMENTS = (
    """CREATE TABLE tournaments (
    tournament_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    request_id TEXT NOT NULL,
    config BLOB NOT NULL,
    state INTEGER NOT NULL,
    create_ns INTEGER NOT NULL,
    update_ns INTEGER NOT NULL,
    end_reason TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID""",
    "CREATE UNIQUE INDEX tournaments_request ON tournaments(tenant, request_id) WHERE request_id != ''",
    "CREATE INDEX tournaments_list ON tournaments(tenant, create_ns DESC, tournament_id DESC)",
    """CREATE TABLE tournament_matches (
    tournament_id TEXT NOT NULL,
    match_index INTEGER NOT NULL,
    state INTEGER NOT NULL,
    match BLOB NOT NULL,
    PRIMARY KEY (tournament_id, match_index)
) WITHOUT ROWID""",
)
_POSTGRES_TOURNAMENTS = (
    """CREATE TABLE tournaments (
    tournament_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    request_id TEXT NOT NULL,
    config BYTEA NOT NULL,
    state INTEGER NOT NULL,
    create_ns BIGINT NOT NULL,
    update_ns BIGINT NOT NULL,
    end_reason TEXT NOT NULL DEFAULT ''
)""",
    "CREATE UNIQUE INDEX tournaments_request ON tournaments (tenant, request_id) WHERE request_id <> ''",
    "CREATE INDEX tournaments_list ON tournaments (tenant, create_ns DESC, tournament_id DESC)",
    """CREATE TABLE tournament_matches (
    tournament_id TEXT NOT NULL,
    match_index INTEGER NOT NULL,
    state INTEGER NOT NULL,
    match BYTEA NOT NULL,
    PRIMARY KEY (tournament_id, match_index)
)""",
)
# Version 6: human seats (issue 19 part 3). One row a human seat's turn that the debate has waited
# for: `deadline_ns` (wall-clock nanoseconds) is stored when the wait opens and kept by a restart,
# which resumes the same wait; `submitted`, `text` and `request_id` hold the turn given through
# SubmitTurn, stored before SubmitTurn answers, so a crash after it loses nothing
# (services/orchestrator/human_seat.py).
_HUMAN_SEAT_SQL = """CREATE TABLE human_turns (
    debate_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    participant TEXT NOT NULL,
    deadline_ns {big} NOT NULL,
    submitted {flag} NOT NULL DEFAULT {false},
    text TEXT NOT NULL DEFAULT '',
    request_id TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (debate_id, round, participant)
){tail}"""
_SQLITE_HUMAN_SEAT = (_HUMAN_SEAT_SQL.format(big="INTEGER", flag="INTEGER", false="0", tail=" WITHOUT ROWID"),)
_POSTGRES_HUMAN_SEAT = (_HUMAN_SEAT_SQL.format(big="BIGINT", flag="BOOLEAN", false="FALSE", tail=""),)

# Version 7: stops (issue 19 part 1): the stop of a debate that a stopping rule ended early.
# `stop` is a debate.orchestrator.v1.DebateStop, stored when the rule passes (before the round
# under way is cancelled: the decision is durable), then again with its estimate once it is
# announced (`announced`: DebateStopped logged).
_SQLITE_STOPS = (
    """CREATE TABLE debate_stops (
    debate_id TEXT PRIMARY KEY,
    stop BLOB NOT NULL,
    announced INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID""",
)
_POSTGRES_STOPS = (
    """CREATE TABLE debate_stops (
    debate_id TEXT PRIMARY KEY,
    stop BYTEA NOT NULL,
    announced BOOLEAN NOT NULL DEFAULT FALSE
)""",
)

# Version 8: verdict versions (issue 18 part 1, issue 19 part 4). Every
# verdict a debate was given: version 1 at its end, then each re-judging and continuation
# (services/orchestrator/verdicts.py). `entry` is a debate.orchestrator.v1.VerdictVersion (its
# progress while `done` is false: a re-judging's round scores so far); `request_id` makes a
# retried RejudgeDebate/ContinueDebate act once ('' for version 1). `debates.verdict` stays the
# latest verdict.
_SQLITE_VERDICTS = (
    """CREATE TABLE verdicts (
    debate_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    request_id TEXT NOT NULL DEFAULT '',
    reason INTEGER NOT NULL,
    entry BLOB NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    create_ns INTEGER NOT NULL,
    PRIMARY KEY (debate_id, version)
) WITHOUT ROWID""",
    "CREATE UNIQUE INDEX verdicts_request ON verdicts(debate_id, request_id) WHERE request_id != ''",
)
_POSTGRES_VERDICTS = (
    """CREATE TABLE verdicts (
    debate_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    request_id TEXT NOT NULL DEFAULT '',
    reason INTEGER NOT NULL,
    entry BYTEA NOT NULL,
    done BOOLEAN NOT NULL DEFAULT FALSE,
    create_ns BIGINT NOT NULL,
    PRIMARY KEY (debate_id, version)
)""",
    "CREATE UNIQUE INDEX verdicts_request ON verdicts (debate_id, request_id) WHERE request_id <> ''",
)

# Version 9: the debate's trace (issue 17; services/orchestrator/lifecycle.py). `trace_context` is
# a W3C `traceparent`: StartDebate's span while the debate is QUEUED (the parent of its `debate`
# span, whichever replica or process launches it), then the first run's `debate` span once it
# runs (what a resumed or taken-over run links to). Written only when traces are on ('' else).
_TRACE_CONTEXT = ("ALTER TABLE debates ADD COLUMN trace_context TEXT NOT NULL DEFAULT ''",)

# Version 10: the events table as a rowid table (SQLite only; issue 16 part 4). Keyed WITHOUT ROWID
# by (debate_id, sequence), a commit of many debates' events wrote each debate's rows into a leaf of
# its own (and split it every few commits): several hundred pages a commit at 300 debates, each a
# frame of the write-ahead log. As a rowid table the rows append to the table's last pages and only
# the primary key's index (the same (debate_id, sequence), unique, SQLite's automatic index)
# scatters, with entries a third of a row's size. Same columns and key; the rows are copied in key
# order, so a debate's stored rows stay together. PostgreSQL's heap already appends: nothing there.
_SQLITE_EVENTS_ROWID = (
    """CREATE TABLE events_v10 (
    debate_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    event BLOB NOT NULL,
    PRIMARY KEY (debate_id, sequence)
)""",
    "INSERT INTO events_v10 (debate_id, sequence, event) SELECT debate_id, sequence, event FROM events "
    "ORDER BY debate_id, sequence",
    "DROP TABLE events",
    "ALTER TABLE events_v10 RENAME TO events",
)

MIGRATIONS = (
    Migration(1, "debates, turns, attempts, assessments and events", _SQLITE_V1, _POSTGRES_V1),
    Migration(2, "debate leases (owner, epoch, expiry) and the fence of a commit", _SQLITE_V2, _POSTGRES_V2),
    Migration(3, "a cancel forwarded to the owner; the cluster-wide queue's index", _SQLITE_V3, _POSTGRES_V3),
    Migration(4, VOTES_MIGRATION_NAME, _SQLITE_VOTES, _POSTGRES_VOTES),
    Migration(5, "tournaments and their side-swapped matches", _SQLITE_TOURNAMENTS, _POSTGRES_TOURNAMENTS),
    Migration(6, "human seats: awaited turns, deadlines, submitted text", _SQLITE_HUMAN_SEAT, _POSTGRES_HUMAN_SEAT),
    Migration(7, "the stop of a debate ended early by a stopping rule", _SQLITE_STOPS, _POSTGRES_STOPS),
    Migration(8, "verdict versions (re-judgings and continuations)", _SQLITE_VERDICTS, _POSTGRES_VERDICTS),
    Migration(9, "the debate's trace context (W3C traceparent)", _TRACE_CONTEXT, _TRACE_CONTEXT),
    Migration(10, "the event log as a rowid table (SQLite; PostgreSQL unchanged)", _SQLITE_EVENTS_ROWID, ()),
)
SCHEMA_VERSION = latest_version(MIGRATIONS)
