"""One running debate in memory (`DebateRun`), shared by the three parts of the engine: the
turn runner (turns.py), the judging steps (judging.py) and the lifecycle (lifecycle.py).

It holds what the store holds for the debate (turns, assessments, the last attempt of each
turn) plus what only a live run has: the tasks of assessments under way, the model calls in
flight, and the running total of what the debate has spent. The store stays the truth: after
a restart a run is rebuilt from it (lifecycle.py).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TypeAlias

from debate.accounting.v1 import accounting_pb2 as acc
from debate.common.v1 import common_pb2 as common
from debate.orchestrator.v1 import orchestrator_pb2 as pb

from services.common.errors import DomainError
from services.common.llm.base import ChatMessage
from services.common.money import ZERO, usd
from services.common.quotes import SourceIndex
from services.common.usage import add_token_usage
from services.orchestrator.context import ContextBuilder, Transcript
from services.orchestrator.events import DeltaBuffer, EventHub
from services.orchestrator.store import Store

S = pb.DebateState
State: TypeAlias = pb.DebateState.ValueType
TERMINAL = frozenset(
    {S.DEBATE_STATE_COMPLETED, S.DEBATE_STATE_FAILED, S.DEBATE_STATE_CANCELLED, S.DEBATE_STATE_BUDGET_EXCEEDED}
)


class BudgetExceeded(DomainError):
    code = "RESOURCE_EXHAUSTED"
    reason = "BUDGET_EXCEEDED"


def turn_key(debate_id: str, round_number: int, participant: str, attempt: int) -> str:
    """The idempotency key of one turn attempt: its reservation and its usage record."""
    return f"debates/{debate_id}/rounds/{round_number}/turns/{participant}/attempts/{attempt}"


@dataclass(slots=True)
class Inflight:
    """A model call under way, so a cancel or a failure can record what it spent: `messages` is
    the prompt as sent, `parts` the answer text streamed so far (the speech), `reasoning_parts`
    the reasoning text (billed, never speech), and `answered` is True once the provider sent
    anything (it bills the call)."""

    round_number: int
    participant: common.Participant
    attempt: int
    messages: tuple[ChatMessage, ...]
    reservation_id: str
    parts: list[str]
    buffer: DeltaBuffer
    reasoning_parts: list[str] = field(default_factory=list)
    answered: bool = False


@dataclass
class DebateRun:
    debate_id: str
    config: common.DebateConfig
    context: ContextBuilder
    transcript: Transcript = field(default_factory=Transcript)
    turns: dict[tuple[int, str], common.Turn] = field(default_factory=dict)
    last_attempt: dict[tuple[int, str], int] = field(default_factory=dict)
    assessments: dict[int, common.RoundAssessment] = field(default_factory=dict)
    # Stored before a crash but their judge calls not yet recorded: recorded, not asked again.
    unrecorded_assessments: dict[int, common.RoundAssessment] = field(default_factory=dict)
    assess_tasks: dict[int, asyncio.Task[common.RoundAssessment]] = field(default_factory=dict)
    inflight: dict[tuple[int, str], Inflight] = field(default_factory=dict)
    current_round: int = 0
    total: Decimal = ZERO  # USD spent, as accounting priced it
    usage: common.TokenUsage = field(default_factory=common.TokenUsage)
    # The same sums per round (0: the verdict): USD, and the calls and tokens as CostLines.
    round_amounts: dict[int, Decimal] = field(default_factory=dict)
    round_lines: dict[int, common.CostLine] = field(default_factory=dict)
    # Keys whose RecordUsage failed with no answer: the row may have been stored all the same, so
    # a later try's "duplicate" for one of them is a row not counted yet.
    unanswered: set[str] = field(default_factory=set)
    # The verdict version this run ends with (1; a continuation's later one, verdicts.py), the
    # ledger rows of its verdict's calls once recorded, and why a run that resumes resumes.
    verdict_version: int = 1
    verdict_records: list[acc.UsageRecord] = field(default_factory=list)
    # The ledger's cost of the debate, read with the verdict's records (`Judging.verdict`): the
    # final cost, unless anything is recorded after it (`add_cost` then drops it).
    final_cost: common.DebateCost | None = None
    resume_reason: str = "resumed after an orchestrator restart"
    task: asyncio.Task[None] | None = None
    cancel_reason: str | None = None
    shutting_down: bool = False
    # Stopping rules (stopping.py): the round being played, as a task a stop cancels; the stop
    # once decided (stored), and whether DebateStopped was logged.
    round_task: asyncio.Task[None] | None = None
    stop: pb.DebateStop | None = None
    stop_announced: bool = False
    _source_index: SourceIndex | None = None

    def source_index(self) -> SourceIndex:
        """The debate's documents, normalised once, that each turn's quotes are checked against."""
        if self._source_index is None:
            self._source_index = SourceIndex.of(self.config.sources)
        return self._source_index

    def add_cost(self, reply: acc.RecordUsageResponse) -> None:
        """Adds a recorded usage's cost and tokens to the running total (a duplicate was
        counted when it was first recorded, unless that try had no answer: `unanswered`)."""
        record = reply.record
        if not reply.duplicate or record.request_id in self.unanswered:
            self.unanswered.discard(record.request_id)
            self.final_cost = None
            amount = Decimal(record.cost.amount or "0")
            self.total += amount
            add_token_usage(self.usage, record.usage)
            r = record.round_number
            self.round_amounts[r] = self.round_amounts.get(r, ZERO) + amount
            line = self.round_lines.get(r)
            if line is None:
                line = self.round_lines[r] = common.CostLine(key=str(r))
            line.calls += 1
            add_token_usage(line.usage, record.usage)

    def round_cost(self, round_number: int) -> common.CostLine:
        """What round `round_number` (0: the verdict) has cost so far: its recorded calls, their
        tokens and USD, the line that GetDebateCost's by_round gives for the round (a new message)."""
        line = common.CostLine(key=str(round_number), cost=usd(self.round_amounts.get(round_number, ZERO)))
        if round_number in self.round_lines:
            line.MergeFrom(self.round_lines[round_number])
        return line

    def restore_cost(self, cost: common.DebateCost) -> None:
        """The running totals from accounting's breakdown, when a run is rebuilt after a restart."""
        self.total = Decimal(cost.total.amount or "0")
        self.usage.CopyFrom(cost.usage)
        rounds = [line for line in cost.by_round if line.key.isdigit()]
        self.round_amounts = {int(line.key): Decimal(line.cost.amount or "0") for line in rounds}
        self.round_lines = {
            int(line.key): common.CostLine(key=line.key, usage=line.usage, calls=line.calls) for line in rounds
        }


def announce_cost(store: Store, hub: EventHub, run: DebateRun) -> None:
    """Stores the debate's running total, then logs a CostUpdated with it and the budget: every
    call recorded so far, the judge's included."""
    budget = common.BudgetStatus(spent=usd(run.total))
    if run.config.HasField("budget"):
        budget.cap.CopyFrom(run.config.budget)
    store.set_cost(run.debate_id, str(run.total))
    hub.emit(run.debate_id, cost_updated=pb.CostUpdated(total=usd(run.total), usage=run.usage, budget=budget))
