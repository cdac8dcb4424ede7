"""The ledger's versioned schema on both backends: migrations applied at start, idempotent, an
old ledger brought forward, a newer one refused, and replicas starting at once on PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
from decimal import Decimal

import psycopg
import pytest

from services.accounting.schema import COMPONENT, MIGRATIONS, SCHEMA_VERSION
from services.accounting.store import Role, SqliteLedgerStore, UsageRow
from services.accounting.store_postgres import PostgresLedgerStore
from services.common.migrations import Dialect, Migration, SchemaTooNew, migrate
from services.common.usage import Usage
from tests.support.ledgers import LedgerBackend

SONNET = "claude-3-5-sonnet-20241022"
# A usage row as version 1 of the schema had it (no cache_creation_prompt_tokens).
V1_ROW = (
    "INSERT INTO usage (request_id, debate_id, participant, role, round_number, model, attempt, prompt_tokens, "
    "completion_tokens, cached_prompt_tokens, reasoning_tokens, estimated, cost, reservation_id, record_time_ns) "
    "VALUES ('old', 'd1', 'alice', 'debater', 1, ?, 1, 1000, 500, 0, 0, ?, '0.0105', '', 1)"
)


def describe(backend: LedgerBackend) -> dict[str, object]:
    """The ledger's tables, indexes and recorded versions (Backend.describe)."""
    return backend.describe(COMPONENT)


def test_a_new_ledger_gets_every_version_and_a_second_start_changes_nothing(ledger_backend):
    ledger_backend.open().close()
    first = describe(ledger_backend)
    assert [v for v, _ in first["versions"]] == list(range(1, SCHEMA_VERSION + 1)) == [1, 2]
    assert {c[1] for c in first["columns"] if c[0] == "usage"} >= {"request_id", "cost", "cache_creation_prompt_tokens"}
    ledger_backend.open().close()
    assert describe(ledger_backend) == first


def _make_version_1(backend: LedgerBackend) -> None:
    """A ledger at version 1, with one usage row, as the release before version 2 left it."""
    if backend.url:
        with psycopg.connect(backend.url, autocommit=True) as db, db.transaction():

            def run(statement, params):
                cursor = db.execute(statement, params)
                return cursor.fetchall() if cursor.description else []

            migrate(run, Dialect.POSTGRES, COMPONENT, MIGRATIONS[:1])
            db.execute(V1_ROW.replace("?", "%s"), (SONNET, False))
    else:
        with sqlite3.connect(backend.path) as db:
            migrate(lambda s, p: db.execute(s, p).fetchall(), Dialect.SQLITE, COMPONENT, MIGRATIONS[:1])
            db.execute(V1_ROW, (SONNET, 0))


def test_a_version_1_ledger_is_brought_forward_and_keeps_its_rows(ledger_backend):
    _make_version_1(ledger_backend)
    assert [v for v, _ in describe(ledger_backend)["versions"]] == [1]
    store = ledger_backend.open()
    try:
        rows, budget = store.snapshot("d1")
        assert [(r.request_id, r.usage, r.cost) for r in rows] == [("old", Usage(1000, 500), Decimal("0.0105"))]
        assert rows[0].usage.cache_creation_prompt_tokens == 0 and budget.spent == Decimal("0.0105")
        cache_writes = Usage(1000, 500, cache_creation_prompt_tokens=600)
        store.record(UsageRow("new", "d1", "bob", Role.DEBATER, 1, SONNET, 1, cache_writes, False, Decimal(1)))
        rows, _ = store.snapshot("d1")
        assert [r.usage.cache_creation_prompt_tokens for r in rows] == [0, 600]
    finally:
        store.close()
    brought_forward = describe(ledger_backend)
    assert [v for v, _ in brought_forward["versions"]] == [1, 2]


def test_a_ledger_brought_forward_has_the_schema_of_a_new_one(ledger_backend, tmp_path_factory, request):
    _make_version_1(ledger_backend)
    ledger_backend.open().close()
    if ledger_backend.url:
        server = request.getfixturevalue("postgres_server")
        fresh = LedgerBackend("postgresql", ledger_backend.data_dir, server.create_database())
    else:
        fresh = LedgerBackend("sqlite", tmp_path_factory.mktemp("fresh"))
    fresh.open().close()
    assert describe(ledger_backend)["columns"] == describe(fresh)["columns"]
    assert describe(ledger_backend)["indexes"] == describe(fresh)["indexes"]


def test_a_sqlite_ledger_from_before_schema_migrations_is_adopted(tmp_path):
    """Ledgers of earlier releases carry their version in PRAGMA user_version (1: before cache
    writes were kept apart): adopted as applied, then brought forward."""
    path = tmp_path / "ledger.sqlite3"
    with sqlite3.connect(path) as db:
        for statement in MIGRATIONS[0].sqlite:
            db.execute(statement.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS"))
        db.execute(V1_ROW, (SONNET, 0))
        db.execute("PRAGMA user_version = 1")
    SqliteLedgerStore(path).close()
    backend = LedgerBackend("sqlite", tmp_path)
    assert describe(backend)["versions"] == [
        (1, "usage, budgets and reservations (adopted)"),
        (2, MIGRATIONS[1].name),
    ]
    assert backend.query("SELECT cache_creation_prompt_tokens FROM usage") == [(0,)]
    assert backend.query("PRAGMA user_version") == [(SCHEMA_VERSION,)]


def test_a_ledger_migrated_by_a_newer_release_is_refused_untouched(ledger_backend):
    ledger_backend.open().close()
    ledger_backend.query(
        "INSERT INTO schema_migrations (component, version, name) VALUES (?, 3, 'future')", (COMPONENT,)
    )
    before = describe(ledger_backend)
    with pytest.raises(SchemaTooNew) as refused:
        ledger_backend.open()
    assert refused.value.reason == "SCHEMA_TOO_NEW" and "3" in refused.value.message
    assert describe(ledger_backend) == before


def test_replicas_starting_at_once_on_a_new_database_migrate_it_once(postgres_url, tmp_path):
    """Eight stores built at the same moment: the advisory lock lets one create the schema and
    the others find it applied (without it, concurrent CREATE TABLEs fail)."""
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def open_one() -> None:
        start.wait()
        try:
            PostgresLedgerStore(postgres_url).close()
        except BaseException as error:  # noqa: BLE001 (reported by the assertion below)
            errors.append(error)

    threads = [threading.Thread(target=open_one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    versions = LedgerBackend("postgresql", tmp_path, postgres_url).query("SELECT version FROM schema_migrations")
    assert sorted(versions) == [(1,), (2,)]


def test_two_components_starting_at_once_on_a_new_database_both_migrate(postgres_url, tmp_path):
    """A ledger and an orchestrator store opened at the same moment on a new database, as the
    services of `up --replicas 2` start: both create their tables through the one
    schema_migrations table (without the shared lock, CREATE TABLE IF NOT EXISTS races)."""
    made: list[str] = []
    try:
        for attempt in range(5):
            url = postgres_url if attempt == 0 else _another_database(postgres_url, attempt, made)
            _open_at_once(url, tmp_path)
    finally:
        base = postgres_url.rpartition("/")[0]
        with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
            for name in made:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _open_at_once(url: str, tmp_path) -> None:
    """Two ledgers and two orchestrator stores opened at the same moment on `url`."""
    from services.orchestrator.schema import COMPONENT as ORCHESTRATOR
    from services.orchestrator.store_postgres import PostgresStore

    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def open_one(opener) -> None:
        start.wait()
        try:
            opener(url).close()
        except BaseException as error:  # noqa: BLE001 (reported by the assertion below)
            errors.append(error)

    openers = [PostgresLedgerStore, PostgresStore, PostgresLedgerStore, PostgresStore]
    threads = [threading.Thread(target=open_one, args=(opener,)) for opener in openers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    components = LedgerBackend("postgresql", tmp_path, url).query("SELECT DISTINCT component FROM schema_migrations")
    assert sorted(components) == sorted([(COMPONENT,), (ORCHESTRATOR,)])


def _another_database(url: str, n: int, made: list[str]) -> str:
    base, _, name = url.rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}_{n}"')
    made.append(f"{name}_{n}")
    return f"{base}/{name}_{n}"


def test_the_runner_wants_versions_one_two_three_in_order():
    db = sqlite3.connect(":memory:")
    run = lambda s, p: db.execute(s, p).fetchall()  # noqa: E731
    with pytest.raises(ValueError, match="1, 2, ..."):
        migrate(run, Dialect.SQLITE, "x", (Migration(1, "a", (), ()), Migration(3, "c", (), ())))
    steps = (Migration(1, "a", ("CREATE TABLE a (x)",), ()), Migration(2, "b", ("CREATE TABLE b (x)",), ()))
    assert migrate(run, Dialect.SQLITE, "x", steps) == [1, 2]
    assert migrate(run, Dialect.SQLITE, "x", steps) == []
    # Another component in the same database keeps versions of its own.
    other = (Migration(1, "c", ("CREATE TABLE c (x)",), ()),)
    assert migrate(run, Dialect.SQLITE, "y", other) == [1]
    assert db.execute("SELECT component, version FROM schema_migrations ORDER BY 1, 2").fetchall() == [
        ("x", 1),
        ("x", 2),
        ("y", 1),
    ]
