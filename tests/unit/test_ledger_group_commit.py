"""The group commit of usage rows (services/accounting/ledger.py): rows that arrive together share
one transaction, a repeated key still counts once, a refused row fails alone, a failed batch
falls back to one row per transaction, and no caller is answered before its row is committed.

Tests that take `ledger_backend` run on SQLite and PostgreSQL (tests/support/ledgers.py)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import pytest

from services.accounting.ledger import Accounting
from services.accounting.store import LedgerStore, ReservationNotFound, Role, SqliteLedgerStore, UsageRow
from services.common.errors import InvalidArgument
from services.common.pricing import PriceBook
from services.common.usage import Usage

SONNET = "claude-3-5-sonnet-20241022"
TURN_COST = Decimal("0.0105")  # 1000 prompt + 500 completion tokens of SONNET


TURN_USAGE = Usage(1000, 500)


def call(request_id: str, debate: str = "d1", usage: Usage = TURN_USAGE, **extra):
    return dict(
        request_id=request_id,
        debate_id=debate,
        participant="alice",
        role=Role.DEBATER,
        round_number=1,
        model=SONNET,
        attempt=1,
        usage=usage,
        **extra,
    )


class Spy:
    """A store that passes every call through and remembers the sizes of its batches;
    `fail_batches` makes record_many raise (writing nothing), `poison` makes one request_id's
    row raise a non-domain error wherever it is written."""

    def __init__(self, store: LedgerStore, *, fail_batches: bool = False, poison: str = ""):
        self.store = store
        self.batches: list[int] = []
        self.singles = 0
        self.fail_batches = fail_batches
        self.poison = poison

    def record(self, row: UsageRow):
        self.singles += 1
        if row.request_id == self.poison:
            raise RuntimeError("poisoned row")
        return self.store.record(row)

    def record_many(self, rows: Sequence[UsageRow]):
        self.batches.append(len(rows))
        if self.fail_batches or any(r.request_id == self.poison for r in rows):
            raise RuntimeError("the batch's transaction failed")
        return self.store.record_many(rows)

    def __getattr__(self, name):
        return getattr(self.store, name)


@pytest.fixture
async def spied(ledger_backend):
    spy = Spy(ledger_backend.open())
    accounting = Accounting(PriceBook(), spy)  # type: ignore[arg-type]
    yield accounting, spy
    await accounting.close()


async def test_concurrent_records_share_commits_and_a_repeated_key_counts_once(spied, ledger_backend):
    accounting, spy = spied
    calls = [call(f"u{i}") for i in range(10)] + [call("same") for _ in range(10)]
    results = await asyncio.gather(*(accounting.record_usage(**c) for c in calls))
    same = results[10:]
    assert sorted(dup for _, dup in same) == [False] + [True] * 9
    assert len({row for row, _ in same}) == 1  # every repeat answers the first row, as stored
    assert not any(dup for _, dup in results[:10])
    assert ledger_backend.count() == 11
    assert (await accounting.debate_cost("d1")).total.cost == 11 * TURN_COST
    # Twenty concurrent calls took fewer transactions than calls, each batch holding several.
    assert sum(spy.batches) + spy.singles == 20 and len(spy.batches) + spy.singles < 20
    assert accounting.usage_commits == len(spy.batches) + spy.singles


async def test_a_repeat_in_a_later_batch_returns_the_first_row(spied, ledger_backend):
    accounting, _ = spied
    first = await asyncio.gather(*(accounting.record_usage(**call(f"u{i}")) for i in range(3)))
    again = await asyncio.gather(
        *(accounting.record_usage(**call(f"u{i}", usage=Usage(7, 7))) for i in range(3)),
        accounting.record_usage(**call("u3")),
    )
    assert [r for r, _ in again[:3]] == [r for r, _ in first] and all(dup for _, dup in again[:3])
    assert not again[3][1] and ledger_backend.count() == 4


async def test_a_refused_row_fails_alone_and_the_rest_of_its_batch_is_recorded(spied, ledger_backend):
    accounting, spy = spied
    await accounting.reserve("r1", "d1", SONNET, 1000, 500)
    await accounting.reserve("r2", "d2", SONNET, 1000, 500)
    results = await asyncio.gather(
        accounting.record_usage(**call("u1")),
        accounting.record_usage(**call("u2", reservation_id="nope")),  # no such reservation
        accounting.record_usage(**call("u3", reservation_id="r1")),
        accounting.record_usage(**call("u4", reservation_id="r2")),  # r2 belongs to d2
        accounting.record_usage(**call("u5", debate="d2", reservation_id="r2")),
        return_exceptions=True,
    )
    assert spy.batches and max(spy.batches) >= 4  # the bad rows shared a transaction with good ones
    assert isinstance(results[1], ReservationNotFound)
    assert isinstance(results[3], InvalidArgument)
    assert [type(r) for r in (results[0], results[2], results[4])] == [tuple] * 3
    assert ledger_backend.count() == 3
    assert ledger_backend.count("usage", "request_id IN ('u2', 'u4')") == 0
    d1, d2 = (await accounting.debate_cost("d1")).budget, (await accounting.debate_cost("d2")).budget
    assert (d1.spent, d1.reserved) == (2 * TURN_COST, 0)  # u1, and u3 committed r1
    assert (d2.spent, d2.reserved) == (TURN_COST, 0)  # u5 committed r2; u4's refusal left it held until then
    # The refused keys were not spent: the right call is recorded afresh.
    _, dup = await accounting.record_usage(**call("u2"))
    assert not dup and ledger_backend.count() == 4


async def test_a_failed_batch_is_written_again_one_row_per_transaction(ledger_backend):
    spy = Spy(ledger_backend.open(), poison="u2")
    accounting = Accounting(PriceBook(), spy)  # type: ignore[arg-type]
    try:
        results = await asyncio.gather(
            *(accounting.record_usage(**call(f"u{i}")) for i in range(5)), return_exceptions=True
        )
    finally:
        await accounting.close()
    assert spy.batches == [5]  # one batch, which failed as a whole ...
    assert isinstance(results[2], RuntimeError) and str(results[2]) == "poisoned row"  # ... then one by one
    assert all(isinstance(results[i], tuple) and not results[i][1] for i in (0, 1, 3, 4))
    assert ledger_backend.count() == 4 and spy.singles == 5


def test_record_many_writes_nothing_when_a_row_fails_otherwise_than_refused(ledger_backend):
    store = ledger_backend.open()
    try:
        good = UsageRow("g1", "d1", "alice", Role.DEBATER, 1, SONNET, 1, Usage(10, 10), False, Decimal("0.0002"))
        unbindable: Any = object()  # neither sqlite3 nor psycopg can send it
        bad = UsageRow("b1", "d1", "alice", Role.DEBATER, 1, unbindable, 1, Usage(10, 10), False, Decimal(0))
        with pytest.raises(Exception) as failed:
            store.record_many([good, bad])
        assert not isinstance(failed.value, ReservationNotFound | InvalidArgument)
        assert ledger_backend.count() == 0
        # The store is usable afterwards, and a lone row in a batch is recorded.
        [(row, dup)] = store.record_many([good])
        assert not dup and row.request_id == "g1" and ledger_backend.count() == 1
    finally:
        store.close()


async def test_no_caller_is_answered_before_its_batch_is_committed(tmp_path):
    """SQLite: the ledger thread is held at the batch's COMMIT statement; until it goes on, no
    caller has its answer and another connection sees none of the rows."""
    path = tmp_path / "ledger.sqlite3"
    store = SqliteLedgerStore(path)
    at_commit, go_on = threading.Event(), threading.Event()

    def trace(statement: str) -> None:
        if statement == "COMMIT" and not go_on.is_set():
            at_commit.set()
            go_on.wait(30)

    accounting = Accounting(PriceBook(), store)
    try:
        await accounting.record_usage(**call("u0"))  # the schema is there; the trace starts now
        store._db.set_trace_callback(trace)
        tasks = [asyncio.ensure_future(accounting.record_usage(**call(f"u{i}"))) for i in range(1, 5)]
        assert await asyncio.to_thread(at_commit.wait, 30)
        await asyncio.sleep(0.05)  # time for an early answer to arrive, if there were one
        assert not any(task.done() for task in tasks)
        reader = sqlite3.connect(path)
        assert reader.execute("SELECT count(*) FROM usage").fetchone()[0] == 1  # only u0
        go_on.set()
        results = await asyncio.gather(*tasks)
        assert not any(dup for _, dup in results)
        assert reader.execute("SELECT count(*) FROM usage").fetchone()[0] == 5
        reader.close()
    finally:
        go_on.set()
        await accounting.close()


async def test_without_group_commit_each_row_has_its_own_transaction(ledger_backend):
    spy = Spy(ledger_backend.open())
    accounting = Accounting(PriceBook(), spy, group_commit=False)  # type: ignore[arg-type]
    try:
        await asyncio.gather(*(accounting.record_usage(**call(f"u{i}")) for i in range(4)))
    finally:
        await accounting.close()
    assert spy.batches == [] and spy.singles == 4 and accounting.usage_commits == 4
    assert ledger_backend.count() == 4
