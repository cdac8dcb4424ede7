"""The ledger's schema, version by version, in both dialects side by side.

Applied at start by `services.common.migrations.migrate` (component "ledger"), by either store.
A version means the same tables and columns on SQLite and PostgreSQL; only the types differ:

- money (`usage.cost`, `budgets.cap`, `reservations.amount`): an exact decimal string (TEXT) in
  SQLite, summed as Decimals in Python; `NUMERIC` (no precision limit, exact) in PostgreSQL,
  summed by the database;
- token counts and nanosecond times: INTEGER in SQLite (64-bit), BIGINT in PostgreSQL;
- `usage.estimated`: 0/1 in SQLite, BOOLEAN in PostgreSQL.

A new version is appended here, never edited in place once released: a database records which
versions it has, so an edited migration would never run where its older text already did.
"""

from __future__ import annotations

from services.common.migrations import Migration, latest_version

COMPONENT = "ledger"

_SQLITE_V1 = (
    """CREATE TABLE usage (
    request_id TEXT PRIMARY KEY,
    debate_id TEXT NOT NULL,
    participant TEXT NOT NULL,
    role TEXT NOT NULL,
    round_number INTEGER NOT NULL,
    model TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cached_prompt_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    estimated INTEGER NOT NULL,
    cost TEXT NOT NULL,
    reservation_id TEXT NOT NULL,
    record_time_ns INTEGER NOT NULL
)""",
    "CREATE INDEX usage_by_debate ON usage (debate_id)",
    "CREATE TABLE budgets (debate_id TEXT PRIMARY KEY, cap TEXT)",
    """CREATE TABLE reservations (
    reservation_id TEXT PRIMARY KEY,
    debate_id TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    max_completion_tokens INTEGER NOT NULL,
    amount TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('held', 'committed', 'released')),
    created_ns INTEGER NOT NULL,
    closed_ns INTEGER,
    request_id TEXT
)""",
    "CREATE INDEX reservations_held ON reservations (debate_id) WHERE state = 'held'",
)

_POSTGRES_V1 = (
    """CREATE TABLE usage (
    request_id TEXT PRIMARY KEY,
    debate_id TEXT NOT NULL,
    participant TEXT NOT NULL,
    role TEXT NOT NULL,
    round_number INTEGER NOT NULL,
    model TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cached_prompt_tokens BIGINT NOT NULL,
    reasoning_tokens BIGINT NOT NULL,
    estimated BOOLEAN NOT NULL,
    cost NUMERIC NOT NULL,
    reservation_id TEXT NOT NULL,
    record_time_ns BIGINT NOT NULL
)""",
    "CREATE INDEX usage_by_debate ON usage (debate_id)",
    "CREATE TABLE budgets (debate_id TEXT PRIMARY KEY, cap NUMERIC)",
    """CREATE TABLE reservations (
    reservation_id TEXT PRIMARY KEY,
    debate_id TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    max_completion_tokens BIGINT NOT NULL,
    amount NUMERIC NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('held', 'committed', 'released')),
    created_ns BIGINT NOT NULL,
    closed_ns BIGINT,
    request_id TEXT
)""",
    "CREATE INDEX reservations_held ON reservations (debate_id) WHERE state = 'held'",
)

MIGRATIONS = (
    Migration(1, "usage, budgets and reservations", _SQLITE_V1, _POSTGRES_V1),
    Migration(
        2,
        "cache writes (Anthropic's cache_creation_input_tokens) kept apart",
        ("ALTER TABLE usage ADD COLUMN cache_creation_prompt_tokens INTEGER NOT NULL DEFAULT 0",),
        ("ALTER TABLE usage ADD COLUMN cache_creation_prompt_tokens BIGINT NOT NULL DEFAULT 0",),
    ),
)
SCHEMA_VERSION = latest_version(MIGRATIONS)
