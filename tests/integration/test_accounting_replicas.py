"""Two accounting replicas (two real grpc.aio servers in process, port 0) on one PostgreSQL
database: the ledger's idempotency and the budgets hold across them."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import grpc
import pytest
from debate.accounting.v1 import accounting_pb2 as pb
from debate.accounting.v1 import accounting_pb2_grpc
from debate.common.v1 import common_pb2

from services.accounting.server import build_service
from services.accounting.settings import AccountingSettings
from tests.support.ledgers import LedgerBackend

SONNET = "claude-3-5-sonnet-20241022"
TURN_COST = Decimal("0.0105")  # 1000 prompt + 500 completion tokens of SONNET, the worst case reserved below
REAL_COST = Decimal("0.0045")  # 1000 prompt + 100 completion tokens: what a reserved call turns out to cost


@pytest.fixture
def ledger(postgres_url, tmp_path) -> LedgerBackend:
    return LedgerBackend("postgresql", tmp_path, postgres_url)


@pytest.fixture
async def replicas(ledger):
    """Stubs of two accounting services sharing the test's database."""
    services = [await build_service(AccountingSettings(port=0, **ledger.settings())) for _ in range(2)]
    channels = []
    for svc in services:
        await svc.start()
        channels.append(grpc.aio.insecure_channel(svc.address))
    yield [accounting_pb2_grpc.AccountingServiceStub(c) for c in channels]
    for channel in channels:
        await channel.close()
    for svc in services:
        await svc.stop(grace=0)


def record(request_id: str, debate_id: str, completion_tokens: int = 500, reservation_id: str = ""):
    return pb.RecordUsageRequest(
        request_id=request_id,
        debate_id=debate_id,
        participant="pro",
        role=common_pb2.ROLE_DEBATER,
        round_number=1,
        model=SONNET,
        attempt=1,
        usage=common_pb2.TokenUsage(prompt_tokens=1000, completion_tokens=completion_tokens),
        reservation_id=reservation_id,
    )


def reserve(reservation_id: str, debate_id: str) -> pb.ReserveBudgetRequest:
    return pb.ReserveBudgetRequest(
        reservation_id=reservation_id, debate_id=debate_id, model=SONNET, prompt_tokens=1000, max_completion_tokens=500
    )


async def set_cap(stub, debate_id: str, amount: str) -> None:
    cap = common_pb2.Money(currency_code="USD", amount=amount)
    await stub.SetDebateBudget(pb.SetDebateBudgetRequest(debate_id=debate_id, cap=cap), timeout=10)


async def test_the_same_record_usage_on_both_replicas_at_once_is_one_row(replicas, ledger):
    """100 request_ids, each sent to both replicas at the same moment, all at once: one row each,
    one answer a first recording and the other `duplicate` with the same row."""
    ids = [f"debates/d1/rounds/1/turns/pro/attempts/{i}" for i in range(100)]
    replies = await asyncio.gather(*(stub.RecordUsage(record(i, "d1"), timeout=30) for i in ids for stub in replicas))
    for n, request_id in enumerate(ids):
        pair = replies[2 * n : 2 * n + 2]
        assert sorted(r.duplicate for r in pair) == [False, True], request_id
        assert pair[0].record == pair[1].record and pair[0].record.request_id == request_id
    assert ledger.count() == 100
    assert ledger.count("usage", "request_id = ?", (ids[0],)) == 1
    for stub in replicas:
        cost = (await stub.GetDebateCost(pb.GetDebateCostRequest(debate_id="d1"), timeout=10)).cost
        assert Decimal(cost.total.amount) == 100 * TURN_COST and cost.by_model[0].calls == 100


async def test_concurrent_reservations_on_both_replicas_never_pass_the_cap(replicas, ledger):
    """Twenty debates with a cap of 0.1 each; 20 reservations of 0.0105 per debate, half on each
    replica, all at once: exactly nine are granted per debate, and every grant saw room."""
    debates = [f"d{n}" for n in range(20)]
    for debate_id in debates:
        await set_cap(replicas[0], debate_id, "0.1")
    calls = [(f"{d}/r{i}", d, replicas[i % 2]) for d in debates for i in range(20)]
    replies = await asyncio.gather(*(stub.ReserveBudget(reserve(r, d), timeout=30) for r, d, stub in calls))
    for debate_id in debates:
        granted = [reply for (_, d, _), reply in zip(calls, replies, strict=True) if d == debate_id and reply.granted]
        assert len(granted) == 9, debate_id
        assert all(Decimal(reply.remaining.amount) >= 0 for reply in granted)
        budget = (await replicas[1].GetDebateCost(pb.GetDebateCostRequest(debate_id=debate_id), timeout=10)).cost
        assert Decimal(budget.budget.reserved.amount) == 9 * TURN_COST <= Decimal("0.1")
    assert ledger.count("reservations", "state = 'held'") == 9 * len(debates)


async def test_reservations_and_their_commits_on_both_replicas_keep_spent_and_reserved_within_the_cap(replicas, ledger):
    """Each replica reserves and, when granted, records the call's real cost against the
    reservation (freeing the rest), while the other does the same on the same debate. Whatever
    the interleaving, spent + reserved never passes the cap, and each reservation is committed
    exactly once."""
    await set_cap(replicas[0], "d1", "0.1")

    async def worker(stub, name: str) -> int:
        committed = 0
        for i in range(25):
            reservation_id = f"{name}/r{i}"
            held = await stub.ReserveBudget(reserve(reservation_id, "d1"), timeout=30)
            if held.granted:
                assert Decimal(held.remaining.amount) >= 0
                await stub.RecordUsage(record(f"{name}/u{i}", "d1", 100, reservation_id), timeout=30)
                committed += 1
        return committed

    committed = sum(await asyncio.gather(worker(replicas[0], "a"), worker(replicas[1], "b")))
    cost = (await replicas[0].GetDebateCost(pb.GetDebateCostRequest(debate_id="d1"), timeout=10)).cost
    spent, reserved = Decimal(cost.budget.spent.amount), Decimal(cost.budget.reserved.amount)
    assert reserved == 0 and spent == committed * REAL_COST <= Decimal("0.1")
    # A grant needs spent + reserved + 0.0105 <= 0.1: never after 20 commits (0.09), and a refusal
    # (while the other replica holds 0.0105) only once spent > 0.079, after 18 commits at least.
    assert 18 <= committed <= 20
    assert ledger.count("reservations", "state = 'committed'") == committed == ledger.count()
