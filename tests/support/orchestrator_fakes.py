"""In-process stand-ins for the orchestrator's collaborators, for tests and benchmarks of the
orchestrator alone: an instant (or paced) LLM, a judge and an accounting ledger that keep what
they were asked in memory. They implement the same protocols as the gRPC clients
(services/orchestrator/clients.py) and the LLM layer's LLMClient."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from decimal import Decimal

from debate.accounting.v1 import accounting_pb2 as acc
from debate.common.v1 import common_pb2 as common

from services.common.errors import DomainError
from services.common.llm.base import Completion, CompletionRequest, StreamEvent, TextDelta
from services.common.money import usd
from services.common.usage import Usage, add_token_usage, usage_to_proto

PRICE_PER_TOKEN = Decimal("0.000001")


class ScriptedLLM:
    """Streams `chunks` words per turn, `delay` seconds apart (0: instant); counts calls.

    `fail` maps a request_id to an exception raised after `fail_after` chunks.
    """

    def __init__(
        self, chunks: int = 20, delay: float = 0.0, fail: dict | None = None, fail_after: int = 2, filler: str = ""
    ):
        self.chunks = chunks
        self.filler = filler  # appended to every chunk (big events for flow-control tests)
        self.delay = delay
        self.fail = fail or {}
        self.fail_after = fail_after
        self.requests: list[CompletionRequest] = []

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        self.requests.append(request)
        name = speaker(request)
        for i in range(self.chunks):
            if request.request_id in self.fail and i == self.fail_after:
                raise self.fail.pop(request.request_id)
            if self.delay:
                await asyncio.sleep(self.delay)
            yield TextDelta(f"{name}-w{i}{self.filler} ")
        yield Completion(
            model=request.model,
            usage=Usage(prompt_tokens=len(request.messages) * 10, completion_tokens=self.chunks),
            simulated=True,
        )


def speaker(request: CompletionRequest) -> str:
    """The debater a request is for (its system prompt says "You are NAME, ...")."""
    return request.messages[0].content.rsplit("You are ", 1)[-1].split(",")[0]


class EventScriptLLM:
    """Streams, for each request, what `script(request)` returns: items yielded in order (stream
    events, or any other object, e.g. `TextDelta(text=[...])`, to feed the engine a malformed
    one), exceptions raised where they stand, `delay` seconds before each. When `script` returns
    None, `default` answers (a ScriptedLLM of 6 chunks unless given). Keeps the requests."""

    def __init__(
        self,
        script: Callable[[CompletionRequest], Sequence[object] | None],
        default: ScriptedLLM | None = None,
        delay: float = 0.0,
    ):
        self.script = script
        self.default = default or ScriptedLLM(chunks=6)
        self.delay = delay
        self.requests: list[CompletionRequest] = []

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        self.requests.append(request)
        items = self.script(request)
        if items is None:
            async for event in self.default.stream(request):
                if self.delay:
                    await asyncio.sleep(self.delay)
                yield event
            return
        for item in items:
            if self.delay:
                await asyncio.sleep(self.delay)
            if isinstance(item, BaseException):
                raise item
            yield item  # malformed on purpose, at times


class MemoryAccounting:
    """A ledger keyed by request_id, with budgets and reservations like the accounting service."""

    def __init__(self):
        self.records: dict[str, acc.UsageRecord] = {}
        self.duplicates = 0
        self.caps: dict[str, Decimal] = {}
        self.reservations: dict[str, tuple[str, Decimal]] = {}
        self.released: list[str] = []

    def _spent(self, debate_id: str) -> Decimal:
        return sum((Decimal(r.cost.amount) for r in self.records.values() if r.debate_id == debate_id), Decimal(0))

    def _reserved(self, debate_id: str) -> Decimal:
        return sum((a for d, a in self.reservations.values() if d == debate_id), Decimal(0))

    async def record_usage(self, request):
        if request.request_id in self.records:
            self.duplicates += 1
            return acc.RecordUsageResponse(record=self.records[request.request_id], duplicate=True)
        cost = PRICE_PER_TOKEN * request.usage.total_tokens
        record = acc.UsageRecord(
            request_id=request.request_id,
            debate_id=request.debate_id,
            participant=request.participant,
            role=request.role,
            round_number=request.round_number,
            model=request.model,
            attempt=request.attempt,
            usage=request.usage,
            cost=usd(cost),
        )
        self.records[request.request_id] = record
        self.reservations.pop(request.reservation_id, None)
        return acc.RecordUsageResponse(record=record)

    async def record_usages_then_cost(self, requests, debate_id):
        """Each request through `record_usage` (so a subclass's faults apply), then the cost."""
        outcomes = await asyncio.gather(*(self.record_usage(r) for r in requests), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, DomainError):
                raise outcome
        return list(outcomes), await self.debate_cost(debate_id)

    async def reserve_budget(self, request):
        amount = PRICE_PER_TOKEN * (request.prompt_tokens + request.max_completion_tokens)
        cap = self.caps.get(request.debate_id)
        remaining = None if cap is None else cap - self._spent(request.debate_id) - self._reserved(request.debate_id)
        money = usd(amount)
        if remaining is not None and amount > remaining:
            return acc.ReserveBudgetResponse(granted=False, amount=money, remaining=usd(remaining))
        self.reservations[request.reservation_id] = (request.debate_id, amount)
        return acc.ReserveBudgetResponse(granted=True, amount=money)

    async def release_budget(self, reservation_id):
        self.released.append(reservation_id)
        self.reservations.pop(reservation_id, None)

    async def set_debate_budget(self, debate_id, cap):
        if cap is None:
            self.caps.pop(debate_id, None)
        else:
            self.caps[debate_id] = Decimal(cap.amount)

    async def debate_cost(self, debate_id):
        rows = [r for r in self.records.values() if r.debate_id == debate_id]
        total = common.TokenUsage()
        for r in rows:
            add_token_usage(total, r.usage)
        return common.DebateCost(
            debate_id=debate_id,
            usage=total,
            total=usd(self._spent(debate_id)),
        )


class MemoryJudge:
    """Scores by text length: the longest turn leads; the verdict sums the leads."""

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.rounds: list[int] = []
        self.verdicts = 0

    async def evaluate_round(self, request):
        if self.delay:
            await asyncio.sleep(self.delay)
        self.rounds.append(request.round_number)
        scores = [
            common.DebaterScore(debater=t.debater, weighted_total=min(10.0, len(t.text) / 50)) for t in request.turns
        ]
        leader = max(scores, key=lambda s: s.weighted_total).debater if scores else ""
        call = common.JudgeCall(
            model="sim/judge",
            request_id=f"{request.request_id}/sim-judge/1",
            attempts=1,
            usage=usage_to_proto(Usage(prompt_tokens=100, completion_tokens=20)),
            simulated=True,
        )
        return common.RoundAssessment(
            round_number=request.round_number,
            scores=scores,
            leader=leader,
            judge_models=list(request.judge.models),
            calls=[call],
            simulated=True,
        )

    async def render_verdict(self, request):
        self.verdicts += 1
        leads: dict[str, int] = {}
        for assessment in request.assessments:
            leads[assessment.leader] = leads.get(assessment.leader, 0) + 1
        winner = max(leads, key=leads.get) if leads else ""
        call = common.JudgeCall(
            model="sim/judge",
            request_id=f"{request.request_id}/sim-judge/1",
            attempts=1,
            usage=usage_to_proto(Usage(prompt_tokens=300, completion_tokens=40)),
            simulated=True,
        )
        return common.Verdict(
            winner=winner,
            confidence=0.7,
            summary="by rounds led",
            calls=[call],
            simulated=True,
            final_scores=[
                common.FinalScore(debater=d.name, score=float(leads.get(d.name, 0))) for d in request.debaters
            ],
        )
