"""The judge's billed calls are recorded concurrently (so accounting commits them together): each
one recorded counts in the debate's cost, and a failure is raised once all have been tried."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from debate.common.v1 import common_pb2 as common

from services.common.errors import Unavailable
from services.common.usage import Usage, usage_to_proto
from services.orchestrator.context import ContextBuilder
from services.orchestrator.judging import Judging
from services.orchestrator.run import DebateRun
from tests.support.orchestrator_fakes import MemoryAccounting


class GatedAccounting(MemoryAccounting):
    """Holds every record_usage until `expected` are in flight at once; `fail` request_ids raise."""

    def __init__(self, expected: int, fail: set[str]):
        super().__init__()
        self.expected, self.fail = expected, fail
        self.in_flight = 0
        self.most_in_flight = 0
        self.all_in = asyncio.Event()

    async def record_usage(self, request):
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        if self.in_flight >= self.expected:
            self.all_in.set()
        await asyncio.wait_for(self.all_in.wait(), 5)
        self.in_flight -= 1
        if request.request_id in self.fail:
            raise Unavailable("accounting service: UNAVAILABLE", reason="ACCOUNTING_UNAVAILABLE")
        return await super().record_usage(request)


def calls(n: int) -> list[common.JudgeCall]:
    return [
        common.JudgeCall(
            model="sim/judge",
            request_id=f"debates/d1/rounds/1/judge/calls/{i}",
            attempts=1,
            usage=usage_to_proto(Usage(prompt_tokens=100, completion_tokens=20)),
        )
        for i in range(1, n + 1)
    ]


def run() -> DebateRun:
    config = common.DebateConfig(topic="t", participants=[common.Participant(name="a", model="sim/debater")])
    return DebateRun(debate_id="d1", config=config, context=ContextBuilder(config))


async def test_the_calls_are_recorded_together_and_each_counts_once():
    accounting = GatedAccounting(expected=4, fail=set())
    judging = Judging(None, None, None, accounting, 1)  # type: ignore[arg-type]
    debate = run()
    await judging.record_calls(debate, calls(4), "debates/d1/rounds/1/judge", common.ROLE_JUDGE, 1)
    assert accounting.most_in_flight == 4
    assert len(accounting.records) == 4 and debate.total == 4 * 120 * Decimal("0.000001")
    assert debate.usage.prompt_tokens == 400


async def test_a_failed_record_is_raised_after_the_others_are_recorded():
    accounting = GatedAccounting(expected=3, fail={"debates/d1/rounds/1/judge/calls/2"})
    judging = Judging(None, None, None, accounting, 1)  # type: ignore[arg-type]
    debate = run()
    with pytest.raises(Unavailable):
        await judging.record_calls(debate, calls(3), "debates/d1/rounds/1/judge", common.ROLE_JUDGE, 1)
    assert sorted(accounting.records) == ["debates/d1/rounds/1/judge/calls/1", "debates/d1/rounds/1/judge/calls/3"]
    assert debate.total == 2 * 120 * Decimal("0.000001")


class CostCountingAccounting(MemoryAccounting):
    """Counts the ledger's answers of a debate's cost: alone (GetDebateCost) or with records."""

    def __init__(self):
        super().__init__()
        self.cost_calls = 0
        self.with_records = 0

    async def debate_cost(self, debate_id):
        self.cost_calls += 1
        return await super().debate_cost(debate_id)

    async def record_usages_then_cost(self, requests, debate_id):
        self.with_records += 1
        return await super().record_usages_then_cost(requests, debate_id)


async def test_the_verdicts_calls_bring_the_final_cost_with_them():
    accounting = CostCountingAccounting()
    judging = Judging(None, None, None, accounting, 1)  # type: ignore[arg-type]
    debate = run()
    await judging.record_calls(debate, calls(2), "debates/d1/rounds/1/judge", common.ROLE_JUDGE, 1)
    assert debate.final_cost is None and accounting.with_records == 0  # an assessment's: no cost
    records = await judging.record_calls(
        debate, calls(3)[2:], "debates/d1/verdict", common.ROLE_VERDICT, 0, with_cost=True
    )
    assert accounting.with_records == 1 and len(records) == 1
    # The cost read with the records has them all: what a GetDebateCost call now would answer.
    assert debate.final_cost is not None and debate.final_cost.total.amount == str(debate.total)
    assert debate.final_cost == await accounting.debate_cost("d1")
    # Anything recorded after it makes it stale: dropped, so the lifecycle asks the ledger again.
    await judging.record_calls(debate, calls(4)[3:], "debates/d1/rounds/1/judge", common.ROLE_JUDGE, 1)
    assert debate.final_cost is None


async def test_a_verdict_call_that_fails_keeps_no_final_cost():
    accounting = GatedAccounting(expected=2, fail={"debates/d1/rounds/1/judge/calls/2"})
    judging = Judging(None, None, None, accounting, 1)  # type: ignore[arg-type]
    debate = run()
    with pytest.raises(Unavailable):
        await judging.record_calls(debate, calls(2), "debates/d1/verdict", common.ROLE_VERDICT, 0, with_cost=True)
    assert debate.final_cost is None and "debates/d1/rounds/1/judge/calls/2" in debate.unanswered
    assert sorted(accounting.records) == ["debates/d1/rounds/1/judge/calls/1"]
