"""The orchestrator's store on both backends (the orchestrator_backend fixture: SQLite and
PostgreSQL): the versioned schema (migrated once, idempotent, an older SQLite file adopted, a
newer database refused, the same tables and columns on both), the transaction model (reads see
the writes not committed yet, other connections only what was committed), every kind of row
written and read back, a taken request_id, events written again; and on PostgreSQL, a lost
connection that loses no write and doubles none, for the store and for the event hub over it."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from decimal import Decimal

import pytest
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from pydantic import ValidationError

from services.common.migrations import Dialect, SchemaTooNew, migrate, sqlite_execute
from services.orchestrator import events as events_module
from services.orchestrator.events import EventHub
from services.orchestrator.schema import COMPONENT, MIGRATIONS, SCHEMA_VERSION
from services.orchestrator.server import open_store
from services.orchestrator.settings import OrchestratorSettings
from services.orchestrator.store import (
    GET_DEBATE,
    LAST_SEQUENCE,
    PAGE_CACHE_KIB,
    READ_EVENTS,
    DebateRow,
    SqliteStore,
    Store,
    StoreUnavailable,
    encode_page_token,
)
from services.orchestrator.store_postgres import COPY_FROM, PostgresStore
from services.orchestrator.transport import FRAMING
from tests.support.backends import terminate_connections
from tests.support.orchestrator_stores import OrchestratorBackend

S = pb.DebateState
TABLES = sorted(
    [
        "assessments",
        "attempts",
        "debate_leases",
        "debates",
        "events",
        "turns",
        "votes",
        "tournament_matches",
        "tournaments",
        "human_turns",
        "debate_stops",
        "verdicts",
    ]
)


def debate(debate_id: str, create_ns: int = 1, tenant: str = "t", request_id: str = "", **fields) -> DebateRow:
    values = {
        "debate_id": debate_id,
        "tenant": tenant,
        "request_id": request_id,
        "config": c.DebateConfig(topic=f"topic of {debate_id}"),
        "state": S.DEBATE_STATE_CREATED,
        "create_ns": create_ns,
        "update_ns": create_ns,
        "queue_ns": 0,
        "current_round": 0,
        "end_reason": "",
        "cost_amount": "",
        "cost": None,
        "verdict": None,
        "verdict_recorded": False,
        "last_sequence": 0,
    }
    values.update(fields)
    return DebateRow(**values)


def turn(round_number: int, participant: str, text: str) -> c.Turn:
    return c.Turn(round_number=round_number, participant=participant, text=text, attempt=1)


def events(debate_id: str, first: int, last: int, tag: str = "") -> list[tuple[str, int, bytes]]:
    """add_events' rows for sequences first..last, each event's bytes naming it (and `tag`)."""
    return [(debate_id, seq, f"{debate_id}/{seq}{tag}".encode()) for seq in range(first, last + 1)]


def as_read(rows: list[tuple[str, int, bytes]]) -> list[tuple[int, bytes]]:
    """The same events as read_events returns them."""
    return [(seq, data) for _, seq, data in rows]


# -- the schema -------------------------------------------------------------------------------
def test_a_new_store_gets_every_version_and_a_second_open_changes_nothing(orchestrator_backend):
    orchestrator_backend.open().close()
    first = orchestrator_backend.describe(COMPONENT)
    assert first["versions"] == [(m.version, m.name) for m in MIGRATIONS] and SCHEMA_VERSION == 10
    assert sorted({column[0] for column in first["columns"]} - {"schema_migrations"}) == TABLES
    orchestrator_backend.open().close()
    assert orchestrator_backend.describe(COMPONENT) == first


def test_both_backends_have_the_same_tables_columns_and_indexes(postgres_url, tmp_path):
    sqlite = OrchestratorBackend("sqlite", tmp_path)
    postgres = OrchestratorBackend("postgresql", tmp_path, postgres_url)
    for backend in (sqlite, postgres):
        backend.open().close()
    sqlite_shape, postgres_shape = sqlite.describe(COMPONENT), postgres.describe(COMPONENT)
    columns = [
        {(table, column) for table, column, *_ in shape["columns"] if table != "schema_migrations"}
        for shape in (sqlite_shape, postgres_shape)
    ]
    # debates 17, turns 5, attempts 6, assessments 4, events 3, leases 4, votes 5, tournaments 8, matches 4,
    # human turns 7, stops 3, verdicts 7
    assert columns[0] == columns[1] and len(columns[0]) == 17 + 5 + 6 + 4 + 3 + 4 + 5 + 8 + 4 + 7 + 3 + 7
    assert ("debates", "cancel_requested") in columns[0]  # version 3
    assert ("verdicts", "entry") in columns[0]  # version 8
    assert ("debates", "trace_context") in columns[0]  # version 9
    assert {name for name, _ in sqlite_shape["indexes"] if not name.startswith("sqlite_autoindex")} == {
        "debates_request",
        "debates_list",
        "debates_state",
        "debates_queue",
        "tournaments_request",
        "tournaments_list",
        "verdicts_request",
    }
    assert {name for name, _ in postgres_shape["indexes"] if not name.endswith("_pkey")} == {
        "debates_request",
        "debates_list",
        "debates_state",
        "debates_queue",
        "tournaments_request",
        "tournaments_list",
        "verdicts_request",
    }
    money = {(column, kind) for table, column, kind, *_ in postgres_shape["columns"] if column == "cost_amount"}
    assert money == {("cost_amount", "numeric")}


def test_a_sqlite_store_from_before_schema_migrations_is_adopted_with_its_debates(tmp_path):
    """The release before made its tables with CREATE TABLE IF NOT EXISTS and recorded no version."""
    backend = OrchestratorBackend("sqlite", tmp_path)
    with sqlite3.connect(backend.path) as db:
        for statement in MIGRATIONS[0].sqlite:
            db.execute(statement.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS"))
        db.execute(
            "INSERT INTO debates (debate_id, tenant, request_id, config, state, create_ns, update_ns, cost_amount) "
            "VALUES ('old', 't', 'req', ?, ?, 5, 5, '0.25')",
            (c.DebateConfig(topic="kept").SerializeToString(), S.DEBATE_STATE_COMPLETED),
        )
        db.execute("INSERT INTO events (debate_id, sequence, event) VALUES ('old', 1, x'01'), ('old', 2, x'02')")
    store = backend.open()
    row = store.existing_debate("old")
    assert (row.config.topic, row.state, row.cost_amount, row.last_sequence) == (
        "kept",
        S.DEBATE_STATE_COMPLETED,
        "0.25",
        2,
    )
    assert store.find_by_request("t", "req").debate_id == "old"
    store.close()
    adopted = [(1, f"{MIGRATIONS[0].name} (adopted)"), *((m.version, m.name) for m in MIGRATIONS[1:])]
    assert backend.describe(COMPONENT)["versions"] == adopted
    backend.open().close()  # adopted once
    assert backend.describe(COMPONENT)["versions"] == adopted


def test_version_10_moves_a_sqlite_event_log_to_a_rowid_table_keeping_every_row_and_the_key(tmp_path):
    """A store at version 9 (events WITHOUT ROWID) opened by this release: every event kept, read
    back in order, the table now a rowid one whose key is still unique (a row written again is
    written over), and every query of the events searches the key's index, never the table."""
    backend = OrchestratorBackend("sqlite", tmp_path)
    with sqlite3.connect(backend.path, isolation_level=None) as db:
        db.execute("BEGIN IMMEDIATE")
        migrate(sqlite_execute(db), Dialect.SQLITE, COMPONENT, MIGRATIONS[:9])
        db.execute("COMMIT")
        assert "WITHOUT ROWID" in db.execute("SELECT sql FROM sqlite_master WHERE name = 'events'").fetchone()[0]
        # Written interleaved, as the hub writes many debates' events a commit.
        rows = [row for seq in range(1, 301) for d in ("d1", "d2", "d3") for row in events(d, seq, seq)]
        db.executemany("INSERT INTO events (debate_id, sequence, event) VALUES (?, ?, ?)", rows)
        db.execute(
            "INSERT INTO debates (debate_id, tenant, request_id, config, state, create_ns, update_ns) "
            "VALUES ('d2', 't', '', x'', 1, 5, 5)"
        )
    store = backend.open()
    assert backend.describe(COMPONENT)["versions"][-1] == (10, MIGRATIONS[9].name)
    sql = backend.query("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'events'")[0][0]
    assert "WITHOUT ROWID" not in sql and "PRIMARY KEY (debate_id, sequence)" in sql
    assert backend.query("SELECT name FROM sqlite_master WHERE tbl_name = 'events' AND type = 'index'") == [
        ("sqlite_autoindex_events_1",)
    ]
    assert backend.count("events") == 900 and backend.count("sqlite_master", "name = 'events_v10'") == 0
    for d in ("d1", "d2", "d3"):
        assert store.read_events(d, 0, 300, 1000) == as_read(events(d, 1, 300))
        assert store.last_sequence(d) == 300
    assert store.existing_debate("d2").last_sequence == 300
    store.add_events(events("d2", 299, 301, tag="again"))
    store.commit()
    assert store.read_events("d2", 297, 301, 10) == as_read(events("d2", 298, 298) + events("d2", 299, 301, "again"))
    assert backend.count("events") == 901
    with pytest.raises(sqlite3.IntegrityError):
        backend.query("INSERT INTO events (debate_id, sequence, event) VALUES ('d1', 1, x'00')")
    plans = {
        statement: " ".join(
            row[3] for row in backend.query(f"EXPLAIN QUERY PLAN {statement}", ("d1",) * statement.count("?"))
        )
        for statement in (READ_EVENTS, LAST_SEQUENCE, GET_DEBATE)
    }
    for statement, plan in plans.items():  # a search of the key's index, never a scan of a table
        assert "INDEX sqlite_autoindex_events_1" in plan and "SCAN" not in plan, (statement, plan)
    assert store.db.execute("PRAGMA cache_size").fetchone()[0] == -PAGE_CACHE_KIB  # type: ignore[attr-defined]


def test_a_store_migrated_by_a_newer_release_is_refused_untouched(orchestrator_backend):
    orchestrator_backend.open().close()
    orchestrator_backend.query(
        "INSERT INTO schema_migrations (component, version, name) VALUES (?, ?, 'future')",
        (COMPONENT, SCHEMA_VERSION + 1),
    )
    before = orchestrator_backend.describe(COMPONENT)
    with pytest.raises(SchemaTooNew) as refused:
        orchestrator_backend.open()
    assert refused.value.reason == "SCHEMA_TOO_NEW" and str(SCHEMA_VERSION + 1) in refused.value.message
    assert orchestrator_backend.describe(COMPONENT) == before


# -- the transaction model --------------------------------------------------------------------
def test_reads_see_the_writes_not_committed_yet_and_other_connections_only_after_commit(orchestrator_backend):
    store = orchestrator_backend.open()
    store.insert_debate(debate("d1"))
    store.update_debate("d1", state=S.DEBATE_STATE_RUNNING, current_round=2)
    store.put_turn("d1", turn(1, "ann", "hello"), recorded=False)
    store.add_events(events("d1", 1, 3))
    assert store.existing_debate("d1").state == S.DEBATE_STATE_RUNNING and store.last_sequence("d1") == 3
    assert [t.text for t, _ in store.turns("d1")] == ["hello"]
    assert orchestrator_backend.count("debates") == 0 and orchestrator_backend.count("events") == 0
    commits = store.commits
    store.commit()
    assert store.commits == commits + 1
    assert orchestrator_backend.query("SELECT state, current_round FROM debates") == [(S.DEBATE_STATE_RUNNING, 2)]
    assert orchestrator_backend.count("events") == 3 and orchestrator_backend.count("turns") == 1
    store.commit()  # nothing to commit: no transaction
    assert store.commits == commits + 1


def test_a_running_total_is_written_once_a_commit_read_before_it_and_overridden(orchestrator_backend):
    """set_cost: the last amount set before a commit is what it commits; a read sees it before;
    update_debate(cost_amount=...) made after it wins; a debate without one keeps its own."""
    store = orchestrator_backend.open()
    for debate_id in ("d1", "d2", "d3"):
        store.insert_debate(debate(debate_id))
    store.commit()
    for amount in ("0.1", "0.25", "0.5"):
        store.set_cost("d1", amount)
    assert Decimal(store.existing_debate("d1").cost_amount) == Decimal("0.5")  # a read writes it first
    store.set_cost("d1", "0.75")
    store.set_cost("d2", "1.5")
    store.update_debate("d2", cost_amount="2", end_reason="ended")  # the later write wins
    commits = store.commits
    store.commit()
    assert store.commits == commits + 1
    store.close()

    store = orchestrator_backend.open()  # a new connection reads what was committed
    rows = {d: store.existing_debate(d) for d in ("d1", "d2", "d3")}
    assert Decimal(rows["d1"].cost_amount) == Decimal("0.75") and rows["d1"].update_ns > 1
    assert (Decimal(rows["d2"].cost_amount), rows["d2"].end_reason) == (Decimal("2"), "ended")
    assert rows["d3"].cost_amount == "" and rows["d3"].update_ns == 1
    store.set_cost("d3", "3")
    store.close()  # closing commits it
    assert Decimal(orchestrator_backend.open().existing_debate("d3").cost_amount) == Decimal("3")


def test_every_kind_of_row_is_read_back_as_written(orchestrator_backend):
    store = orchestrator_backend.open()
    for i, state in enumerate([S.DEBATE_STATE_QUEUED, S.DEBATE_STATE_RUNNING, S.DEBATE_STATE_CREATED], start=1):
        store.insert_debate(debate(f"d{i}", create_ns=i * 10, state=state, queue_ns=100 - i))
    verdict = c.Verdict(winner="ann").SerializeToString()
    store.update_debate("d1", cost_amount="0.000123400", verdict=verdict, verdict_recorded=True, end_reason="done")
    store.put_turn("d1", turn(1, "ann", "first"), recorded=False)
    store.put_turn("d1", turn(1, "ann", "first, stored again"), recorded=True)
    store.put_turn("d1", turn(2, "bo", "second"), recorded=False)
    for attempt, reservation in ((1, "r1"), (2, "r2")):
        store.open_attempt("d1", 1, "ann", attempt, reservation)
    store.close_attempt("d1", 1, "ann", 1)
    store.put_assessment("d1", c.RoundAssessment(round_number=1, rationale="even"), recorded=True)
    store.add_events(events("d1", 1, 300))
    store.commit()
    store.close()

    store = orchestrator_backend.open()  # a new connection reads what was committed
    row = store.existing_debate("d1")
    assert (row.cost_amount, row.verdict, row.verdict_recorded, row.end_reason) == ("0.0001234", verdict, True, "done")
    assert Decimal(row.cost_amount) == Decimal("0.000123400") and row.last_sequence == 300
    assert row.config.topic == "topic of d1" and row.update_ns > 10
    assert store.existing_debate("d2").cost_amount == "" and store.existing_debate("d2").verdict is None
    assert [(t.round_number, t.text, recorded) for t, recorded in store.turns("d1")] == [
        (1, "first, stored again", True),
        (2, "second", False),
    ]
    assert store.last_attempts("d1") == {(1, "ann"): 2}
    assert store.open_attempts("d1") == [(1, "ann", 2, "r2")]
    assert [(a.rationale, recorded) for a, recorded in store.assessments("d1")] == [("even", True)]
    assert store.read_events("d1", 10, 12, 100) == as_read(events("d1", 11, 12))
    assert store.read_events("d1", 0, 300, 256) == as_read(events("d1", 1, 256))
    running = (S.DEBATE_STATE_RUNNING, S.DEBATE_STATE_QUEUED)
    assert [r.debate_id for r in store.debates_in_states(running)] == ["d2", "d1"]  # oldest in the queue first
    first_page = store.list_debates("t", 0, None, 2)
    assert [r.debate_id for r in first_page] == ["d3", "d2"]
    assert [r.debate_id for r in store.list_debates("t", 0, (20, "d2"), 2)] == ["d1"]
    assert [r.debate_id for r in store.list_debates("t", S.DEBATE_STATE_RUNNING, None, 5)] == ["d2"]
    assert store.list_debates("other", 0, None, 5) == [] and store.get_debate("nope") is None
    with pytest.raises(KeyError):
        store.existing_debate("nope")
    assert encode_page_token(first_page[-1].create_ns, first_page[-1].debate_id, 0)
    if orchestrator_backend.url:  # money is NUMERIC, exact
        assert orchestrator_backend.query("SELECT cost_amount FROM debates ORDER BY debate_id") == [
            (Decimal("0.000123400"),),
            (None,),
            (None,),
        ]


def test_a_trace_context_is_stored_with_a_state_change_and_read_back(orchestrator_backend):
    """`trace_context` (schema version 9) rides in the update that changes the state and is read
    by itself: '' until written, for a debate of any other row, and for an unknown debate."""
    store = orchestrator_backend.open()
    store.insert_debate(debate("d1"))
    store.insert_debate(debate("d2"))
    assert store.trace_context("d1") == "" and store.trace_context("nope") == ""
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    store.update_debate("d1", state=S.DEBATE_STATE_RUNNING, trace_context=parent)
    store.commit()
    store.close()
    store = orchestrator_backend.open()
    assert store.trace_context("d1") == parent and store.trace_context("d2") == ""
    assert store.existing_debate("d1").state == S.DEBATE_STATE_RUNNING


def test_a_taken_request_id_returns_the_first_debate_and_stores_nothing_else(orchestrator_backend):
    first, second = orchestrator_backend.open(), orchestrator_backend.open()  # two connections
    stored = first.insert_debate(debate("d1", tenant="alice", request_id="req"))
    assert stored.debate_id == "d1"
    first.commit()
    again = second.insert_debate(debate("d2", tenant="alice", request_id="req"))
    other_tenant = second.insert_debate(debate("d3", tenant="bob", request_id="req"))
    second.commit()
    assert again.debate_id == "d1" and other_tenant.debate_id == "d3"
    assert sorted(orchestrator_backend.query("SELECT debate_id FROM debates")) == [("d1",), ("d3",)]


@pytest.mark.parametrize("count", [4, COPY_FROM + 4], ids=["few", "copied"])
def test_events_written_again_are_written_over_never_doubled(orchestrator_backend, count):
    """`count` events a tick (PostgreSQL copies them from COPY_FROM on, else inserts them)."""
    store = orchestrator_backend.open()
    store.add_events(events("d1", 1, count))
    store.add_events(events("d1", count - 1, count + 1, tag="'"))  # in the same transaction
    store.commit()
    store.add_events(events("d1", count, 2 * count, tag="''"))  # after a commit (a tick whose commit seemed to fail)
    assert store.last_sequence("d1") == 2 * count  # a read before the commit sends them
    store.commit()
    assert store.read_events("d1", 0, 10**6, 10**6) == as_read(
        events("d1", 1, count - 2) + events("d1", count - 1, count - 1, "'") + events("d1", count, 2 * count, "''")
    )
    assert orchestrator_backend.count("events") == 2 * count
    store.add_events(events("d1", 2 * count + 1, 3 * count))
    store.commit()
    assert store.last_sequence("d1") == 3 * count and orchestrator_backend.count("events") == 3 * count


# -- PostgreSQL: a lost connection ------------------------------------------------------------
@pytest.fixture
def postgres_backend(postgres_url, tmp_path) -> OrchestratorBackend:
    return OrchestratorBackend("postgresql", tmp_path, postgres_url)


def _write_a_tick(store: Store, first: int) -> None:
    store.update_debate("d1", current_round=first, cost_amount=f"0.{first}")
    store.put_turn("d1", turn(first, "ann", f"turn {first}"), recorded=True)
    store.add_events(events("d1", first, first + 99))


@pytest.mark.parametrize("sent_by_a_read", [False, True], ids=["journalled", "sent_by_a_read"])
def test_a_lost_connection_fails_the_commit_and_the_next_commit_stores_every_write_once(
    postgres_backend, sent_by_a_read
):
    store = postgres_backend.open()
    store.insert_debate(debate("d1"))
    _write_a_tick(store, 1)
    store.commit()
    _write_a_tick(store, 101)
    if sent_by_a_read:
        assert store.existing_debate("d1").current_round == 101  # the writes are in the open transaction now
    assert terminate_connections(postgres_backend.url) == 1
    with pytest.raises(StoreUnavailable) as lost:
        store.commit()
    assert lost.value.reason == "STORE_UNAVAILABLE"
    assert postgres_backend.query("SELECT current_round FROM debates") == [(1,)]  # the second tick is not stored
    _write_a_tick(store, 201)
    store.add_events(events("d1", 101, 200))  # the hub writes its pending events again
    store.commit()  # connects again
    assert postgres_backend.query("SELECT current_round, cost_amount FROM debates") == [(201, Decimal("0.201"))]
    assert postgres_backend.query("SELECT round FROM turns ORDER BY round") == [(1,), (101,), (201,)]
    sequences = [s for (s,) in postgres_backend.query("SELECT sequence FROM events ORDER BY sequence")]
    assert sequences == list(range(1, 301))


def test_a_read_on_a_lost_connection_is_unavailable_then_the_next_reconnects(postgres_backend):
    store = postgres_backend.open()
    store.insert_debate(debate("d1"))
    store.commit()
    terminate_connections(postgres_backend.url)
    with pytest.raises(StoreUnavailable):
        store.get_debate("d1")
    assert store.existing_debate("d1").debate_id == "d1"


async def test_the_hub_over_a_lost_connection_announces_nothing_then_every_event_once(postgres_backend):
    store = postgres_backend.open()
    store.insert_debate(debate("d1"))
    hub = EventHub(store, framing=FRAMING)
    hub.commit()
    hub.open_log("d1", 0).active = True
    reader = hub.subscribe("d1", 0, terminal=False, last_sequence=0)
    for i in range(3):
        hub.emit("d1", token_delta=pb.TokenDelta(round_number=1, participant="ann", text=f"w{i} ", attempt=1))
    store.update_debate("d1", current_round=1)  # a write of the engine's in the same tick
    terminate_connections(postgres_backend.url)
    with pytest.raises(StoreUnavailable):
        hub.commit()
    assert hub.get("d1").durable == 0  # nothing announced
    hub.emit("d1", token_delta=pb.TokenDelta(round_number=1, participant="ann", text="w3 ", attempt=1))
    hub.commit()
    seen = []
    async for frame in reader:
        seen.append(pb.StreamDebateEventsResponse.FromString(frame).event)
        if len(seen) == 4:
            break
    assert [(e.sequence, e.token_delta.text) for e in seen] == [(1, "w0 "), (2, "w1 "), (3, "w2 "), (4, "w3 ")]
    assert [s for (s,) in postgres_backend.query("SELECT sequence FROM events ORDER BY sequence")] == [1, 2, 3, 4]
    assert postgres_backend.query("SELECT current_round FROM debates") == [(1,)]


# -- SQLite's checkpoints, off the event loop's thread ------------------------------------------
def wal_frames(path) -> int:
    """Frames the store's write-ahead log file has room for, read from its size (a 32-byte
    header, then 24-byte frame headers each before a 4 KiB page): the log's high-water mark."""
    size = os.path.getsize(f"{path}-wal") if os.path.exists(f"{path}-wal") else 0
    return max(0, size - 32) // (24 + 4096)


async def test_sqlite_checkpoints_run_in_a_worker_thread_never_in_a_commit_on_the_loop(tmp_path, monkeypatch):
    monkeypatch.setattr(events_module, "CHECKPOINT_S", 0.05)
    path = tmp_path / "o.db"
    store = SqliteStore(str(path))
    threads: list[int] = []
    checkpoint = store.checkpoint

    def recorded() -> None:
        threads.append(threading.get_ident())
        checkpoint()

    store.checkpoint = recorded  # type: ignore[method-assign]
    # Commits on the loop's thread past SQLite's default autocheckpoint (1,000 pages) leave the
    # log whole: no checkpoint (and no fsync) in them.
    for i in range(1_200):
        store.insert_debate(debate(f"d{i}", create_ns=i, config=c.DebateConfig(topic="x" * 3_000)))
        store.commit()
    assert wal_frames(path) > 1_000
    assert os.path.getsize(path) < 1_000_000  # the rows are in the log only
    # The hub's ticker checkpoints in a worker thread; the next commit then starts the log over.
    hub = EventHub(store, framing=FRAMING, coalesce_s=0.005)
    hub.start()
    try:
        for _ in range(200):
            await asyncio.sleep(0.01)
            if threads:
                break
        while hub._checkpoint is not None:
            await asyncio.sleep(0.01)
    finally:
        await hub.stop()
    assert threads and threading.get_ident() not in threads
    assert os.path.getsize(path) > 1_200 * 3_000  # checkpointed: the rows are in the database's file
    store.insert_debate(debate("after", create_ns=10_000))
    store.commit()
    reopened = SqliteStore(str(path))
    assert reopened.get_debate("d1199") is not None and reopened.get_debate("after") is not None
    store.close()
    reopened.close()


# -- choosing the backend -----------------------------------------------------------------------
def test_database_url_chooses_postgresql_and_empty_keeps_sqlite(postgres_url, tmp_path):
    sqlite_store = open_store(OrchestratorSettings(data_dir=str(tmp_path)))
    postgres_store = open_store(OrchestratorSettings(data_dir=str(tmp_path / "pg"), database_url=postgres_url))
    try:
        assert isinstance(sqlite_store, SqliteStore) and (tmp_path / "orchestrator.sqlite3").exists()
        assert isinstance(postgres_store, PostgresStore) and not (tmp_path / "pg").exists()
    finally:
        sqlite_store.close()
        postgres_store.close()
    with pytest.raises(ValidationError, match="postgresql://"):
        OrchestratorSettings(database_url="sqlite:///var/orchestrator.sqlite3")
    secret = OrchestratorSettings(database_url="postgresql://debates:s3cret-passw0rd@db/debates")
    assert "s3cret" not in repr(secret) and secret.database_url.get_secret_value() in secret.secret_values()
