"""The ledger and budgets as plain Python: idempotency, exact sums, atomic reservations.

Every test that takes `accounting` or `ledger_backend` runs on both backends, SQLite and
PostgreSQL (tests/support/ledgers.py)."""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal

import pytest
from pydantic import ValidationError

from services.accounting.ledger import Accounting
from services.accounting.server import open_ledger
from services.accounting.settings import AccountingSettings
from services.accounting.store import (
    Reservation,
    ReservationNotFound,
    Role,
    SqliteLedgerStore,
    UsageRow,
)
from services.accounting.store_postgres import PostgresLedgerStore
from services.common.errors import FailedPrecondition, InvalidArgument, Unavailable
from services.common.pricing import ModelNotPriced, PriceBook
from services.common.usage import Usage
from tests.support.backends import terminate_connections

SONNET = "claude-3-5-sonnet-20241022"
OPUS = "claude-3-opus-20240229"
TURN_USAGE = Usage(1000, 500)


@pytest.fixture(scope="module")
def prices() -> PriceBook:
    return PriceBook()


@pytest.fixture
async def accounting(prices, ledger_backend):
    acc = Accounting(prices, ledger_backend.open())
    yield acc
    await acc.close()


def usage_call(
    request_id: str,
    *,
    debate="d1",
    participant="alice",
    role=Role.DEBATER,
    round_number=1,
    model=SONNET,
    usage=TURN_USAGE,
    **extra,
):
    return dict(
        request_id=request_id,
        debate_id=debate,
        participant=participant,
        role=role,
        round_number=round_number,
        model=model,
        attempt=1,
        usage=usage,
        **extra,
    )


def test_store_runs_wal_with_full_sync(tmp_path):
    store = SqliteLedgerStore(tmp_path / "l.sqlite3")
    try:
        assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        store.close()


async def test_a_repeat_returns_the_first_row_and_writes_nothing(accounting, ledger_backend):
    first, dup = await accounting.record_usage(**usage_call("debates/d1/rounds/1/turns/alice/attempts/1"))
    assert not dup and first.cost == Decimal("0.0105") and first.record_time_ns > 0
    again, dup = await accounting.record_usage(
        **usage_call("debates/d1/rounds/1/turns/alice/attempts/1", usage=Usage(9, 9))
    )
    assert dup and again == first
    assert ledger_backend.count() == 1


async def test_ten_concurrent_identical_records_leave_one_row(accounting, ledger_backend):
    results = await asyncio.gather(*(accounting.record_usage(**usage_call("same")) for _ in range(10)))
    assert sorted(dup for _, dup in results) == [False] + [True] * 9
    assert len({row for row, _ in results}) == 1
    assert ledger_backend.count() == 1


def test_two_connections_racing_on_one_ledger_leave_one_row(ledger_backend):
    """Like two processes or two replicas: separate connections; BEGIN IMMEDIATE (SQLite) or
    ON CONFLICT (PostgreSQL) and the primary key decide."""
    stores = [ledger_backend.open() for _ in range(2)]
    row = UsageRow("race", "d1", "alice", Role.DEBATER, 1, SONNET, 1, Usage(10, 10), False, Decimal("0.00018"))
    outcomes: list[bool] = []
    start = threading.Barrier(2)

    def hammer(store):
        start.wait()
        for _ in range(10):
            outcomes.append(store.record(row)[1])

    threads = [threading.Thread(target=hammer, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    assert outcomes.count(False) == 1 and len(outcomes) == 20
    assert ledger_backend.count() == 1


async def test_debate_total_is_the_exact_sum_of_its_parts(accounting):
    """The test plan's 3-round, 2-debater debate: sonnet turns, opus judges and verdict."""
    for r in (1, 2, 3):
        for p in ("pro", "con"):
            await accounting.record_usage(**usage_call(f"d/{r}/{p}", participant=p, round_number=r))
        await accounting.record_usage(
            **usage_call(f"d/{r}/judge", participant="judge", role=Role.JUDGE, round_number=r, model=OPUS)
        )
    await accounting.record_usage(
        **usage_call(
            "d/verdict", participant="judge", role=Role.VERDICT, round_number=3, model=OPUS, usage=Usage(2000, 1000)
        )
    )
    report = await accounting.debate_cost("d1")
    debater = accounting.calculate_cost(SONNET, Usage(1000, 500)).total
    judge = accounting.calculate_cost(OPUS, Usage(1000, 500)).total
    verdict = accounting.calculate_cost(OPUS, Usage(2000, 1000)).total
    assert (debater, judge, verdict) == (Decimal("0.0105"), Decimal("0.0525"), Decimal("0.105"))
    assert report.total.cost == 3 * 2 * debater + 3 * judge + verdict == Decimal("0.3255")
    assert report.total.calls == 10 and report.total.usage == Usage(11000, 5500)
    assert [(line.key, line.cost, line.calls) for line in report.by_role] == [
        ("debater", Decimal("0.063"), 6),
        ("judge", Decimal("0.1575"), 3),
        ("verdict", Decimal("0.105"), 1),
    ]
    assert [(line.key, line.cost) for line in report.by_model] == [
        (SONNET, Decimal("0.063")),
        (OPUS, Decimal("0.2625")),
    ]
    assert [line.key for line in report.by_round] == ["1", "2", "3"]
    assert report.by_round[2].cost == 2 * debater + judge + verdict
    assert {line.key: line.cost for line in report.by_participant} == {
        "con": 3 * debater,
        "pro": 3 * debater,
        "judge": 3 * judge + verdict,
    }
    for lines in (report.by_role, report.by_model, report.by_round, report.by_participant):
        assert sum(line.cost for line in lines) == report.total.cost
    assert report.budget.spent == report.total.cost and report.budget.cap is None


async def test_unknown_debate_costs_nothing(accounting):
    report = await accounting.debate_cost("never-seen")
    assert report.total.cost == 0 and report.by_model == []


@pytest.mark.parametrize(
    "changes,fields",
    [
        ({"usage": Usage(-1, 5)}, ["usage.prompt_tokens"]),
        ({"usage": Usage(5, -1, 0, -2)}, ["usage.completion_tokens", "usage.reasoning_tokens"]),
        ({"usage": Usage(5, 5, 6, 6)}, ["usage.cached_prompt_tokens", "usage.reasoning_tokens"]),
        ({"request_id": ""}, ["request_id"]),
        ({"request_id": "x" * 600, "debate_id": ""}, ["request_id", "debate_id"]),
        ({"model": ""}, ["model"]),
        ({"role": None, "round_number": -1}, ["role", "round_number"]),
        ({"total_tokens": 7}, ["usage.total_tokens"]),
    ],
)
async def test_bad_input_names_every_field_and_writes_nothing(accounting, ledger_backend, changes, fields):
    call = usage_call("bad")
    call.update(changes)
    with pytest.raises(InvalidArgument) as bad:
        await accounting.record_usage(**call)
    assert [v.field for v in bad.value.violations] == fields
    assert ledger_backend.count() == 0


async def test_unknown_model_is_not_found_and_writes_nothing(accounting, ledger_backend):
    with pytest.raises(ModelNotPriced):
        await accounting.record_usage(**usage_call("x", model="no-such-model"))
    assert ledger_backend.count() == 0


async def test_count_tokens_validation(accounting):
    with pytest.raises(InvalidArgument) as big:
        await accounting.count_tokens("gpt-4", "x" * (10 << 20))
    assert [v.field for v in big.value.violations] == ["text"]
    with pytest.raises(InvalidArgument) as wide:  # 400K characters of 4 UTF-8 bytes each: 1.6 MB
        await accounting.count_tokens("gpt-4", "😀" * 400_000)
    assert [v.field for v in wide.value.violations] == ["text"]
    with pytest.raises(InvalidArgument) as none:
        await accounting.count_tokens("", "")
    assert [v.field for v in none.value.violations] == ["model", "text"]
    with pytest.raises(InvalidArgument) as roles:
        await accounting.count_tokens("gpt-4", messages=[{"role": "robot", "content": "hi"}])
    assert [v.field for v in roles.value.violations] == ["messages[0].role"]
    long = await accounting.count_tokens("gpt-4", " word" * 100_000)  # counted off the event loop
    assert long.tokens == 100_000 and long.exact


# -- budgets


async def test_no_cap_always_grants(accounting):
    result = await accounting.reserve("r1", "d1", OPUS, 1_000_000, 1_000_000)
    assert result.granted and result.amount == Decimal(90) and result.budget.remaining is None
    assert result.budget.reserved == Decimal(90)


async def test_refused_reservation_says_what_is_left(accounting):
    await accounting.set_budget("d1", Decimal("0.05"))
    first = await accounting.reserve("r1", "d1", SONNET, 1000, 500)  # 0.0105
    assert first.granted and first.budget.remaining == Decimal("0.0395")
    await accounting.record_usage(**usage_call("u1", usage=Usage(1000, 100), reservation_id="r1"))  # 0.0045
    after = (await accounting.debate_cost("d1")).budget
    assert (after.spent, after.reserved, after.remaining) == (Decimal("0.0045"), 0, Decimal("0.0455"))
    big = await accounting.reserve("r2", "d1", SONNET, 10_000, 2_000)  # 0.06 > 0.0455
    assert not big.granted and big.amount == Decimal("0.06") and big.budget.remaining == Decimal("0.0455")
    assert (await accounting.debate_cost("d1")).budget.reserved == 0  # a refusal holds nothing
    exact_fit = await accounting.reserve("r3", "d1", SONNET, 0, 3033)  # 0.045495 <= 0.0455
    assert exact_fit.granted and exact_fit.budget.remaining == Decimal("0.000005")
    released = await accounting.release("r3")
    assert released.reserved == 0 and released.remaining == Decimal("0.0455")


async def test_reservations_are_idempotent_and_never_pass_the_cap_concurrently(accounting):
    await accounting.set_budget("d1", Decimal("0.1"))
    # Ten concurrent 0.0105 reservations against 0.1: exactly nine fit.
    results = await asyncio.gather(*(accounting.reserve(f"r{i}", "d1", SONNET, 1000, 500) for i in range(10)))
    assert sum(r.granted for r in results) == 9
    again = await accounting.reserve("r0", "d1", SONNET, 1000, 500)
    assert again.granted and again.duplicate and again.budget.reserved == Decimal("0.0945")
    with pytest.raises(FailedPrecondition):
        await accounting.reserve("r0", "d1", SONNET, 1000, 501)


def test_connections_racing_for_one_budget_never_pass_the_cap(ledger_backend):
    """Like replicas: eight connections reserve 0.0105 at once, 40 times, against a cap of 0.1.
    Exactly nine fit, whoever asks first (the debate's budget row lock on PostgreSQL, BEGIN
    IMMEDIATE on SQLite)."""
    owner = ledger_backend.open()
    owner.set_cap("d1", Decimal("0.1"))
    stores = [ledger_backend.open() for _ in range(8)]
    amount = Decimal("0.0105")
    granted: list[str] = []
    start = threading.Barrier(len(stores))

    def hammer(i, store):
        start.wait()
        for j in range(5):
            result = store.reserve(Reservation(f"r{i}/{j}", "d1", SONNET, 1000, 500, amount))
            if result.granted:
                assert result.budget.remaining >= 0
                granted.append(f"r{i}/{j}")

    threads = [threading.Thread(target=hammer, args=(i, s)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    budget = owner.budget("d1")
    owner.close()
    assert len(granted) == 9 and budget.reserved == 9 * amount and budget.remaining == Decimal("0.0055")
    assert ledger_backend.count("reservations") == 9


async def test_commit_charges_real_cost_in_one_transaction(accounting, ledger_backend):
    await accounting.reserve("r1", "d1", SONNET, 1000, 500)
    with pytest.raises(ReservationNotFound):
        await accounting.record_usage(**usage_call("u1", reservation_id="nope"))
    with pytest.raises(InvalidArgument):
        await accounting.record_usage(**usage_call("u1", debate="d2", reservation_id="r1"))
    assert ledger_backend.count() == 0
    assert (await accounting.debate_cost("d1")).budget.reserved == Decimal("0.0105")
    await accounting.record_usage(**usage_call("u1", reservation_id="r1"))
    budget = (await accounting.debate_cost("d1")).budget
    assert (budget.spent, budget.reserved) == (Decimal("0.0105"), 0)
    # Releasing a committed reservation changes nothing; an unknown one is an error.
    assert (await accounting.release("r1")).spent == Decimal("0.0105")
    with pytest.raises(ReservationNotFound):
        await accounting.release("nope")


async def test_cap_can_be_removed_and_is_validated(accounting):
    assert (await accounting.set_budget("d1", Decimal(1))).remaining == 1
    assert (await accounting.set_budget("d1", None)).cap is None
    with pytest.raises(InvalidArgument) as negative:
        await accounting.set_budget("d1", Decimal(-1))
    assert [v.field for v in negative.value.violations] == ["cap.amount"]


async def test_ledger_survives_a_restart(prices, ledger_backend):
    acc = Accounting(prices, ledger_backend.open())
    await acc.set_budget("d1", Decimal(5))
    await acc.record_usage(**usage_call("u1"))
    await acc.close()
    acc = Accounting(prices, ledger_backend.open())
    try:
        _, dup = await acc.record_usage(**usage_call("u1"))
        report = await acc.debate_cost("d1")
        assert dup and report.total.cost == Decimal("0.0105") and report.budget.cap == 5
    finally:
        await acc.close()


# -- choosing and reaching the backend


def test_database_url_chooses_postgresql_and_empty_keeps_sqlite(postgres_url, tmp_path):
    sqlite_store = open_ledger(AccountingSettings(data_dir=str(tmp_path)))
    postgres_store = open_ledger(AccountingSettings(data_dir=str(tmp_path), database_url=postgres_url))
    try:
        assert isinstance(sqlite_store, SqliteLedgerStore) and (tmp_path / "ledger.sqlite3").exists()
        assert isinstance(postgres_store, PostgresLedgerStore)
    finally:
        sqlite_store.close()
        postgres_store.close()
    with pytest.raises(ValidationError, match="postgresql://"):
        AccountingSettings(database_url="mysql://root@db/ledger")
    secret = AccountingSettings(database_url="postgresql://ledger:s3cret-passw0rd@db/ledger")
    assert "s3cret" not in repr(secret) and secret.database_url.get_secret_value() in secret.secret_values()


async def test_a_lost_postgresql_connection_is_unavailable_then_the_next_call_reconnects(prices, postgres_url):
    acc = Accounting(prices, PostgresLedgerStore(postgres_url))
    try:
        await acc.record_usage(**usage_call("u1"))
        assert terminate_connections(postgres_url) == 1
        with pytest.raises(Unavailable) as lost:
            await acc.record_usage(**usage_call("u2"))
        assert lost.value.reason == "LEDGER_UNAVAILABLE"
        # The retry of the same call (as the channel's retry policy sends it) is answered.
        row, dup = await acc.record_usage(**usage_call("u2"))
        assert not dup and (await acc.debate_cost("d1")).total.calls == 2
    finally:
        await acc.close()
