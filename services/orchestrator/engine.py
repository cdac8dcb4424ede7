"""The debate engine: runs admitted debates round by round, durably, and resumes them.

Order of every step (what makes a restart safe):
1. a turn attempt is opened in the store (with its reservation id) and announced;
2. the model streams; text goes to the event log through the coalescing hub;
3. the finished turn is committed (not yet "recorded"), then its usage goes to accounting
   under `debates/{id}/rounds/{r}/turns/{participant}/attempts/{a}` committing the
   reservation; then the turn is marked recorded and TurnCompleted is logged, in one commit.
After a crash, a committed turn is never generated again (its usage is re-sent under the same
idempotent key if it was not marked recorded); an attempt left open is void: its
reservation is released, a TurnFailed(ORCHESTRATOR_RESTARTED) is logged and the turn runs
again as attempt a+1. Judge assessments and the verdict follow the same store, record, then
announce pattern under the judge's JudgeCall.request_id keys.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from debate.accounting.v1 import accounting_pb2 as acc
from debate.common.v1 import common_pb2 as common
from debate.judge.v1 import judge_pb2
from debate.orchestrator.v1 import orchestrator_pb2 as pb

from services.common.errors import (
    DeadlineExceeded,
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from services.common.llm.base import CompletionRequest, LLMClient, LLMError, TextDelta
from services.common.logs import debate_id_var
from services.orchestrator.clients import Accounting, Judge
from services.orchestrator.config import Limits, validate_config
from services.orchestrator.context import ContextBuilder, Transcript
from services.orchestrator.events import DeltaBuffer, EventHub
from services.orchestrator.scheduler import RUNNING, Scheduler
from services.orchestrator.store import (
    DebateRow,
    Store,
    decode_page_token,
    encode_page_token,
)

log = logging.getLogger(__name__)

S = pb.DebateState
TERMINAL = frozenset(
    {S.DEBATE_STATE_COMPLETED, S.DEBATE_STATE_FAILED, S.DEBATE_STATE_CANCELLED, S.DEBATE_STATE_BUDGET_EXCEEDED}
)
_FINISH = {"stop": common.FINISH_REASON_STOP, "length": common.FINISH_REASON_LENGTH}
ZERO = Decimal(0)


class BudgetExceeded(DomainError):
    code = "RESOURCE_EXHAUSTED"
    reason = "BUDGET_EXCEEDED"


def _first_error(group: BaseExceptionGroup) -> BaseException:
    """The error that ends the debate when several turns of a round failed at once."""
    leaves = []
    stack = [group]
    while stack:
        for error in stack.pop().exceptions:
            (stack if isinstance(error, BaseExceptionGroup) else leaves).append(error)
    for kind in (BudgetExceeded, DomainError):
        for error in leaves:
            if isinstance(error, kind):
                return error
    return leaves[0]


def turn_key(debate_id: str, round_number: int, participant: str, attempt: int) -> str:
    return f"debates/{debate_id}/rounds/{round_number}/turns/{participant}/attempts/{attempt}"


def _money(amount: Decimal) -> common.Money:
    return common.Money(currency_code="USD", amount=str(amount))


def _add_usage(total: common.TokenUsage, usage: common.TokenUsage) -> None:
    total.prompt_tokens += usage.prompt_tokens
    total.completion_tokens += usage.completion_tokens
    total.cached_prompt_tokens += usage.cached_prompt_tokens
    total.reasoning_tokens += usage.reasoning_tokens
    total.total_tokens += usage.total_tokens
    total.estimated = total.estimated or usage.estimated


@dataclass(slots=True)
class Inflight:
    """A model call under way, so a cancel can record what it spent."""

    round_number: int
    participant: common.Participant
    attempt: int
    prompt_tokens: int
    reservation_id: str
    parts: list[str]
    buffer: DeltaBuffer


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
    assess_tasks: dict[int, asyncio.Task] = field(default_factory=dict)
    inflight: dict[tuple[int, str], Inflight] = field(default_factory=dict)
    current_round: int = 0
    total: Decimal = ZERO
    usage: common.TokenUsage = field(default_factory=common.TokenUsage)
    task: asyncio.Task | None = None
    cancel_reason: str | None = None
    shutting_down: bool = False


class Engine:
    def __init__(
        self,
        store: Store,
        hub: EventHub,
        scheduler: Scheduler,
        llm: LLMClient,
        judge: Judge,
        accounting: Accounting,
        settings,
        is_known_model: Callable[[str], bool],
        count_tokens: Callable[[str, str], int] | None = None,
    ):
        self.store = store
        self.hub = hub
        self.scheduler = scheduler
        self.llm = llm
        self.judge = judge
        self.accounting = accounting
        self.settings = settings
        self.limits = Limits(settings)
        self.is_known_model = is_known_model
        self.count_tokens = count_tokens
        self.runs: dict[str, DebateRun] = {}

    # ==== public operations (called by the servicer) ========================================
    def create(self, tenant: str, config: common.DebateConfig, request_id: str) -> DebateRow:
        id_problems = []
        if len(request_id) > 128:
            id_problems.append(FieldViolation("request_id", "must be at most 128 characters"))
        elif request_id:
            existing = self.store.find_by_request(tenant, request_id)
            if existing is not None:
                return existing  # a retried create: the first debate, whatever this config says
        try:
            normalised = validate_config(config, self.limits, self.is_known_model)
        except InvalidArgument as error:
            raise InvalidArgument(id_problems + error.violations) from None
        if id_problems:
            raise InvalidArgument(id_problems)
        now = time.time_ns()
        row = DebateRow(
            str(uuid.uuid4()),
            tenant,
            request_id,
            normalised,
            S.DEBATE_STATE_CREATED,
            now,
            now,
            0,
            0,
            "",
            "",
            None,
            None,
            False,
            0,
        )
        self.store.insert_debate(row)
        self.hub.flush()
        return row

    def get_row(self, tenant: str, debate_id: str) -> DebateRow:
        """The caller's debate; another tenant's debate does not exist for them."""
        row = self.store.get_debate(debate_id) if debate_id else None
        if row is None or row.tenant != tenant:
            raise NotFound(f"debate {debate_id!r} not found", reason="DEBATE_NOT_FOUND")
        return row

    def start(self, tenant: str, debate_id: str) -> DebateRow:
        row = self.get_row(tenant, debate_id)
        if row.state in (S.DEBATE_STATE_RUNNING, S.DEBATE_STATE_QUEUED):
            return row  # a retried start changes nothing
        if row.state != S.DEBATE_STATE_CREATED:
            raise FailedPrecondition(
                f"debate is {S.Name(row.state)}; only a created debate can start", reason="DEBATE_NOT_STARTABLE"
            )
        admitted = self.scheduler.admit(debate_id)
        self.hub.open_log(debate_id, row.last_sequence).active = True
        if admitted == RUNNING:
            self._launch(row)
        else:
            self.store.update_debate(debate_id, state=S.DEBATE_STATE_QUEUED, queue_ns=time.time_ns())
            self.hub.emit(
                debate_id,
                state_changed=pb.DebateStateChanged(state=S.DEBATE_STATE_QUEUED, reason="waiting for a running slot"),
            )
        self.hub.flush()
        return self.store.get_debate(debate_id)

    async def cancel(self, tenant: str, debate_id: str, reason: str) -> DebateRow:
        row = self.get_row(tenant, debate_id)
        if row.state in TERMINAL:
            raise FailedPrecondition(f"debate already ended {S.Name(row.state)}", reason="DEBATE_ALREADY_ENDED")
        message = reason.strip()[:500] or "cancelled by the caller"
        run = self.runs.get(debate_id)
        if run is not None and run.task is not None:
            run.cancel_reason = message
            run.task.cancel()
            await asyncio.wait({run.task}, timeout=5.0)
        else:  # created or queued: nothing generates yet
            started = self.scheduler.finish(debate_id)
            self._finalize(debate_id, S.DEBATE_STATE_CANCELLED, "CANCELLED", message, None)
            self._start_queued(started)
        return self.store.get_debate(debate_id)

    def list(self, tenant: str, state: int, page_size: int, page_token: str) -> tuple[list[DebateRow], str]:
        after = None
        if page_token:
            try:
                create_ns, last_id, token_state = decode_page_token(page_token)
            except (ValueError, TypeError):
                raise InvalidArgument([FieldViolation("page_token", "not a token from a previous response")]) from None
            if token_state != state:
                raise InvalidArgument([FieldViolation("page_token", "was made for another state filter")])
            after = (create_ns, last_id)
        rows = self.store.list_debates(tenant, state, after, page_size + 1)
        token = ""
        if len(rows) > page_size:
            rows = rows[:page_size]
            token = encode_page_token(rows[-1].create_ns, rows[-1].debate_id, state)
        return rows, token

    def last_sequence(self, row: DebateRow) -> int:
        live = self.hub.get(row.debate_id)
        return live.durable if live is not None else row.last_sequence

    def transcript(self, debate_id: str) -> tuple[list[common.Turn], list[common.RoundAssessment]]:
        return [t for t, _ in self.store.turns(debate_id)], [a for a, _ in self.store.assessments(debate_id)]

    # ==== lifecycle ========================================================================
    async def resume_all(self) -> int:
        """Picks up every debate that was RUNNING or QUEUED when the process stopped."""
        rows = self.store.debates_in_states((S.DEBATE_STATE_RUNNING, S.DEBATE_STATE_QUEUED))
        for row in rows:
            self.hub.open_log(row.debate_id).active = True
            if row.state == S.DEBATE_STATE_RUNNING:
                self.scheduler.run_now(row.debate_id)
                self._launch(row, resumed=True)
            else:
                self.scheduler.admit(row.debate_id, force=True)
        self._start_queued()
        self.hub.flush()
        if rows:
            log.info("resumed %d debates", len(rows))
        return len(rows)

    async def shutdown(self) -> None:
        """Stops generating; running debates stay RUNNING in the store and resume on the next start."""
        tasks = []
        for run in self.runs.values():
            run.shutting_down = True
            if run.task is not None:
                run.task.cancel()
                tasks.append(run.task)
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)

    def _launch(self, row: DebateRow, *, resumed: bool = False) -> None:
        run = DebateRun(row.debate_id, row.config, ContextBuilder(row.config, self.count_tokens))
        self.runs[row.debate_id] = run
        if not resumed:
            self.store.update_debate(row.debate_id, state=S.DEBATE_STATE_RUNNING)
            self.hub.emit(row.debate_id, state_changed=pb.DebateStateChanged(state=S.DEBATE_STATE_RUNNING))
        self.hub.open_log(row.debate_id).active = True
        run.task = asyncio.get_running_loop().create_task(self._run(run, resumed), name=f"debate-{row.debate_id}")

    def _start_queued(self, admitted: list[str] | None = None) -> None:
        """Launches debates the scheduler moved from the queue into running slots."""
        for debate_id in self.scheduler.fill() if admitted is None else admitted:
            row = self.store.get_debate(debate_id)
            if row is not None and row.state == S.DEBATE_STATE_QUEUED:
                self._launch(row)

    # ==== one debate ===========================================================================
    async def _run(self, run: DebateRun, resumed: bool) -> None:
        debate_id_var.set(run.debate_id)
        try:
            if resumed:
                await self._recover(run)
            if run.config.HasField("budget"):
                await self.accounting.set_debate_budget(run.debate_id, run.config.budget)
            await self._play(run)
        except asyncio.CancelledError:
            if run.shutting_down:
                raise
            await self._end_cancelled(run)
        except BudgetExceeded as error:
            await self._settle_inflight(run, "BUDGET_EXCEEDED")
            await self._end(run, S.DEBATE_STATE_BUDGET_EXCEEDED, "BUDGET_EXCEEDED", error.message)
        except DomainError as error:
            log.warning("debate failed: %s: %s", error.reason, error.message)
            await self._settle_inflight(run, error.reason)
            await self._end(run, S.DEBATE_STATE_FAILED, error.reason, error.message)
        except Exception as error:
            log.exception("debate failed unexpectedly")
            await self._end(run, S.DEBATE_STATE_FAILED, "INTERNAL", f"internal error: {type(error).__name__}")
        finally:
            for task in run.assess_tasks.values():
                if task.done() and not task.cancelled():
                    task.exception()  # retrieved: it was reported through the debate's end
                task.cancel()
            if not run.shutting_down:
                self.runs.pop(run.debate_id, None)
                self._start_queued(self.scheduler.finish(run.debate_id))

    async def _recover(self, run: DebateRun) -> None:
        """Rebuilds a debate's run from the store after a restart."""
        debate_id = run.debate_id
        row = self.store.get_debate(debate_id)
        run.current_round = row.current_round
        unrecorded = []
        for turn, recorded in self.store.turns(debate_id):
            run.turns[(turn.round_number, turn.participant)] = turn
            run.transcript.add(turn.round_number, turn.participant, turn.text)
            if not recorded:
                unrecorded.append(turn)
        run.last_attempt = self.store.last_attempts(debate_id)
        for assessment, recorded in self.store.assessments(debate_id):
            if recorded:
                run.assessments[assessment.round_number] = assessment
            else:
                run.unrecorded_assessments[assessment.round_number] = assessment
        for round_number, name, attempt, reservation_id in self.store.open_attempts(debate_id):
            if reservation_id:
                await self.accounting.release_budget(reservation_id)
            self.store.close_attempt(debate_id, round_number, name, attempt)
            if (round_number, name) not in run.turns:
                self.hub.emit(
                    debate_id,
                    turn_failed=pb.TurnFailed(
                        round_number=round_number,
                        participant=name,
                        attempt=attempt,
                        reason="ORCHESTRATOR_RESTARTED",
                        message="the orchestrator restarted during this attempt; its text is void",
                        will_retry=True,
                    ),
                )
        self.hub.emit(
            debate_id,
            state_changed=pb.DebateStateChanged(
                state=S.DEBATE_STATE_RUNNING, reason="resumed after an orchestrator restart"
            ),
        )
        cost = await self.accounting.debate_cost(debate_id)
        run.total = Decimal(cost.total.amount or "0")
        run.usage.CopyFrom(cost.usage)
        self.hub.flush()
        for turn in unrecorded:
            await self._record_turn(run, turn, turn_key(debate_id, turn.round_number, turn.participant, turn.attempt))

    async def _play(self, run: DebateRun) -> None:
        config = run.config
        sequential = config.format.turn_order == common.TURN_ORDER_SEQUENTIAL
        rounds = config.format.round_limit
        first = 1
        while first <= rounds and all((first, p.name) in run.turns for p in config.participants):
            first += 1
        for r in range(1, first):
            if r not in run.assessments:
                run.assess_tasks[r] = asyncio.create_task(self._assess(run, r))
        for r in range(first, rounds + 1):
            if run.current_round < r:
                run.current_round = r
                self.store.update_debate(run.debate_id, current_round=r)
                self.hub.emit(
                    run.debate_id,
                    round_started=pb.RoundStarted(round_number=r, participants=[p.name for p in config.participants]),
                )
            todo = [p for p in config.participants if (r, p.name) not in run.turns]
            if sequential or len(todo) == 1:
                for participant in todo:
                    await self._turn(run, r, participant)
            else:
                try:
                    async with asyncio.TaskGroup() as group:
                        for participant in todo:
                            group.create_task(self._turn(run, r, participant))
                except BaseExceptionGroup as group:
                    raise _first_error(group) from None
            run.assess_tasks[r] = asyncio.create_task(self._assess(run, r))
            self._raise_judge_failure(run)
        for r in range(1, rounds + 1):
            if r in run.assess_tasks:
                await run.assess_tasks[r]
        verdict = await self._verdict(run)
        await self._complete(run, verdict)

    @staticmethod
    def _raise_judge_failure(run: DebateRun) -> None:
        """A round's assessment runs beside the next round; its failure ends the debate at once."""
        for task in run.assess_tasks.values():
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()

    # ---- turns -------------------------------------------------------------------------------
    async def _turn(self, run: DebateRun, r: int, participant: common.Participant) -> None:
        config = run.config
        name = participant.name
        debate_id = run.debate_id
        sequential = config.format.turn_order == common.TURN_ORDER_SEQUENTIAL
        attempt = run.last_attempt.get((r, name), 0)
        max_attempts = attempt + self.settings.max_turn_attempts
        while True:
            attempt += 1
            window = run.context.build(participant, r, run.transcript, include_current=sequential)
            key = turn_key(debate_id, r, name, attempt)
            reservation_id = ""
            if config.HasField("budget"):
                granted = await self.accounting.reserve_budget(
                    acc.ReserveBudgetRequest(
                        reservation_id=key,
                        debate_id=debate_id,
                        model=participant.model,
                        prompt_tokens=window.prompt_tokens,
                        max_completion_tokens=config.max_tokens_per_turn,
                    )
                )
                if not granted.granted:
                    raise BudgetExceeded(
                        f"the budget of {config.budget.amount} USD cannot cover {name}'s turn in round {r}"
                        f" (needs up to {granted.amount.amount}, {granted.remaining.amount or '0'} left);"
                        f" spent {run.total} USD"
                    )
                reservation_id = key
            run.last_attempt[(r, name)] = attempt
            self.store.open_attempt(debate_id, r, name, attempt, reservation_id)
            self.hub.emit(
                debate_id,
                turn_started=pb.TurnStarted(round_number=r, participant=name, model=participant.model, attempt=attempt),
            )
            buffer = DeltaBuffer(debate_id, r, name, attempt)
            inflight = Inflight(r, participant, attempt, window.prompt_tokens, reservation_id, [], buffer)
            run.inflight[(r, name)] = inflight
            parts = inflight.parts
            completion = None
            request = CompletionRequest(
                model=participant.model,
                messages=window.messages,
                max_tokens=config.max_tokens_per_turn,
                seed=zlib.crc32(f"{config.seed}/{r}/{name}".encode()),
                request_id=key,
            )
            add_text = self.hub.add_text
            try:
                async for event in self.llm.stream(request):
                    if type(event) is TextDelta:
                        parts.append(event.text)
                        add_text(buffer, event.text)
                    else:
                        completion = event
                if completion is None:
                    raise LLMError(
                        f"{participant.model} ended its stream without usage",
                        model=participant.model,
                        reason="PROVIDER_NO_COMPLETION",
                        retryable=True,
                    )
            except LLMError as error:
                del run.inflight[(r, name)]
                self.hub.flush_text(buffer)
                if parts:  # the provider streamed tokens before the cut, and bills them
                    await self._record_cut_call(run, inflight)
                elif reservation_id:
                    await self.accounting.release_budget(reservation_id)
                self.store.close_attempt(debate_id, r, name, attempt)
                will_retry = error.retryable and attempt < max_attempts
                self.hub.emit(
                    debate_id,
                    turn_failed=pb.TurnFailed(
                        round_number=r,
                        participant=name,
                        attempt=attempt,
                        reason=error.reason,
                        message=error.message[:500],
                        will_retry=will_retry,
                    ),
                )
                if will_retry:
                    continue
                raise
            del run.inflight[(r, name)]
            self.hub.flush_text(buffer)
            usage = completion.usage
            turn = common.Turn(
                round_number=r,
                participant=name,
                model=completion.model or participant.model,
                text="".join(parts),
                usage=common.TokenUsage(
                    prompt_tokens=usage.prompt_tokens,
                    completion_tokens=usage.completion_tokens,
                    cached_prompt_tokens=usage.cached_prompt_tokens,
                    reasoning_tokens=usage.reasoning_tokens,
                    total_tokens=usage.prompt_tokens + usage.completion_tokens,
                    estimated=usage.estimated,
                ),
                finish_reason=_FINISH.get(completion.finish_reason, common.FINISH_REASON_STOP),
                attempt=attempt,
                simulated=completion.simulated,
            )
            run.turns[(r, name)] = turn
            run.transcript.add(r, name, turn.text)
            self.store.put_turn(debate_id, turn, recorded=False)
            self.store.close_attempt(debate_id, r, name, attempt)
            await self.hub.committed()  # the turn is stored before its usage is recorded anywhere
            await self._record_turn(run, turn, key, reservation_id)
            return

    async def _record_turn(self, run: DebateRun, turn: common.Turn, key: str, reservation_id: str = "") -> None:
        reply = await self.accounting.record_usage(
            acc.RecordUsageRequest(
                request_id=key,
                debate_id=run.debate_id,
                participant=turn.participant,
                role=common.ROLE_DEBATER,
                round_number=turn.round_number,
                model=turn.model,
                attempt=turn.attempt,
                usage=turn.usage,
                reservation_id=reservation_id,
            )
        )
        turn.cost.CopyFrom(reply.record.cost)
        self.store.put_turn(run.debate_id, turn, recorded=True)
        self.hub.emit(run.debate_id, turn_completed=pb.TurnCompleted(turn=turn))
        if not reply.duplicate:
            self._add_cost(run, reply.record)
        self._emit_cost(run)

    def _add_cost(self, run: DebateRun, record: acc.UsageRecord) -> None:
        run.total += Decimal(record.cost.amount or "0")
        _add_usage(run.usage, record.usage)

    def _emit_cost(self, run: DebateRun) -> None:
        budget = common.BudgetStatus(spent=_money(run.total))
        if run.config.HasField("budget"):
            budget.cap.CopyFrom(run.config.budget)
        self.store.update_debate(run.debate_id, cost_amount=str(run.total))
        self.hub.emit(
            run.debate_id, cost_updated=pb.CostUpdated(total=_money(run.total), usage=run.usage, budget=budget)
        )

    async def _settle_inflight(self, run: DebateRun, reason: str) -> None:
        """Calls cut short (cancel, budget, failure): what they spent is recorded as an estimate."""
        for (r, name), inflight in list(run.inflight.items()):
            del run.inflight[(r, name)]
            await self._record_cut_call(run, inflight)
            self.store.close_attempt(run.debate_id, r, name, inflight.attempt)
            self.hub.flush_text(inflight.buffer)
            self.hub.emit(
                run.debate_id,
                turn_failed=pb.TurnFailed(
                    round_number=r,
                    participant=name,
                    attempt=inflight.attempt,
                    reason=reason,
                    message="the call was stopped; its text is void",
                    will_retry=False,
                ),
            )

    async def _record_cut_call(self, run: DebateRun, inflight: Inflight) -> None:
        """Records a call that did not complete, as an estimate: its prompt and the text it streamed
        (counted with our tokenizer), under its attempt's key, committing its reservation."""
        participant, r = inflight.participant, inflight.round_number
        key = turn_key(run.debate_id, r, participant.name, inflight.attempt)
        text = "".join(inflight.parts)
        completion_tokens = run.context.count(participant.model, text) if text else 0
        usage = common.TokenUsage(
            prompt_tokens=inflight.prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=inflight.prompt_tokens + completion_tokens,
            estimated=True,
        )
        try:
            reply = await self.accounting.record_usage(
                acc.RecordUsageRequest(
                    request_id=key,
                    debate_id=run.debate_id,
                    participant=participant.name,
                    role=common.ROLE_DEBATER,
                    round_number=r,
                    model=participant.model,
                    attempt=inflight.attempt,
                    usage=usage,
                    reservation_id=inflight.reservation_id,
                )
            )
            if not reply.duplicate:
                self._add_cost(run, reply.record)
        except DomainError as error:
            log.warning("could not record the usage of a cut call %s: %s", key, error.message)

    # ---- judge -----------------------------------------------------------------------------------
    def _debaters(self, config: common.DebateConfig) -> list[judge_pb2.Debater]:
        return [judge_pb2.Debater(name=p.name, stance=p.stance, persona=p.persona) for p in config.participants]

    def _round_turns(self, run: DebateRun, r: int) -> list[judge_pb2.DebaterTurn]:
        return [
            judge_pb2.DebaterTurn(debater=p.name, text=run.turns[(r, p.name)].text) for p in run.config.participants
        ]

    async def _record_judge_calls(self, run: DebateRun, calls, prefix: str, role: int, round_number: int) -> None:
        for i, call in enumerate(calls):
            reply = await self.accounting.record_usage(
                acc.RecordUsageRequest(
                    request_id=call.request_id or f"{prefix}/calls/{i + 1}",
                    debate_id=run.debate_id,
                    participant="judge",
                    role=role,
                    round_number=round_number,
                    model=call.model,
                    attempt=max(1, call.attempts),
                    usage=call.usage,
                )
            )
            if not reply.duplicate:
                self._add_cost(run, reply.record)

    async def _ask_judge(self, method, request):
        """The judge's own calls are idempotent by request_id: an unavailable judge is asked again."""
        attempts = self.settings.judge_attempts
        for attempt in range(1, attempts + 1):
            try:
                return await method(request)
            except (Unavailable, DeadlineExceeded):
                if attempt == attempts:
                    raise
                await asyncio.sleep(min(5.0, 0.5 * 2**attempt))

    async def _assess(self, run: DebateRun, r: int) -> common.RoundAssessment:
        config = run.config
        prefix = f"debates/{run.debate_id}/rounds/{r}/judge"
        assessment = run.unrecorded_assessments.pop(r, None)
        if assessment is None:
            assessment = await self._ask_judge(
                self.judge.evaluate_round,
                judge_pb2.EvaluateRoundRequest(
                    debate_id=run.debate_id,
                    topic=config.topic,
                    round_number=r,
                    debaters=self._debaters(config),
                    turns=self._round_turns(run, r),
                    judge=config.judge,
                    request_id=prefix,
                    seed=config.seed,
                ),
            )
            assessment.round_number = r
            self.store.put_assessment(run.debate_id, assessment, recorded=False)
            self.hub.flush()  # stored before its usage is recorded anywhere
        await self._record_judge_calls(run, assessment.calls, prefix, common.ROLE_JUDGE, r)
        self.store.put_assessment(run.debate_id, assessment, recorded=True)
        run.assessments[r] = assessment
        self.hub.emit(run.debate_id, round_assessed=pb.RoundAssessed(assessment=assessment))
        self._emit_cost(run)
        return assessment

    async def _verdict(self, run: DebateRun) -> common.Verdict:
        row = self.store.get_debate(run.debate_id)
        if row.verdict is not None and row.verdict_recorded:
            return common.Verdict.FromString(row.verdict)
        config = run.config
        prefix = f"debates/{run.debate_id}/verdict"
        if row.verdict is not None:  # stored, usage not recorded before a crash
            verdict = common.Verdict.FromString(row.verdict)
        else:
            rounds = [
                judge_pb2.RoundTranscript(round_number=r, turns=self._round_turns(run, r))
                for r in range(1, config.format.round_limit + 1)
            ]
            verdict = await self._ask_judge(
                self.judge.render_verdict,
                judge_pb2.RenderVerdictRequest(
                    debate_id=run.debate_id,
                    topic=config.topic,
                    debaters=self._debaters(config),
                    rounds=rounds,
                    assessments=[run.assessments[r] for r in sorted(run.assessments)],
                    judge=config.judge,
                    request_id=prefix,
                    seed=config.seed,
                ),
            )
            self.store.update_debate(run.debate_id, verdict=verdict.SerializeToString())
            self.hub.flush()
        await self._record_judge_calls(run, verdict.calls, prefix, common.ROLE_VERDICT, 0)
        self.store.update_debate(run.debate_id, verdict_recorded=True)
        self.hub.emit(run.debate_id, verdict_rendered=pb.VerdictRendered(verdict=verdict))
        return verdict

    # ---- endings -----------------------------------------------------------------------------------
    async def _final_cost(self, run: DebateRun) -> common.DebateCost:
        try:
            return await self.accounting.debate_cost(run.debate_id)
        except DomainError as error:
            log.warning("final cost unavailable: %s", error.message)
            return common.DebateCost(debate_id=run.debate_id, total=_money(run.total), usage=run.usage)

    async def _complete(self, run: DebateRun, verdict: common.Verdict) -> None:
        cost = await self._final_cost(run)
        self.store.update_debate(
            run.debate_id, state=S.DEBATE_STATE_COMPLETED, cost=cost.SerializeToString(), cost_amount=cost.total.amount
        )
        self.hub.emit(
            run.debate_id, cost_updated=pb.CostUpdated(total=cost.total, usage=cost.usage, budget=cost.budget)
        )
        self.hub.emit(run.debate_id, debate_completed=pb.DebateCompleted(verdict=verdict, cost=cost))
        self.hub.close(run.debate_id)
        self.hub.flush()

    async def _end_cancelled(self, run: DebateRun) -> None:
        await self._settle_inflight(run, "CANCELLED")
        await self._end(run, S.DEBATE_STATE_CANCELLED, "CANCELLED", run.cancel_reason or "cancelled")

    async def _end(self, run: DebateRun, state: int, reason: str, message: str) -> None:
        cost = await self._final_cost(run)
        self._finalize(run.debate_id, state, reason, message, cost)

    def _finalize(self, debate_id: str, state: int, reason: str, message: str, cost: common.DebateCost | None) -> None:
        cost = cost or common.DebateCost(debate_id=debate_id, total=_money(ZERO))
        self.store.update_debate(
            debate_id,
            state=state,
            end_reason=f"{reason}: {message}",
            cost=cost.SerializeToString(),
            cost_amount=cost.total.amount or "0",
        )
        self.hub.emit(debate_id, debate_failed=pb.DebateFailed(state=state, reason=reason, message=message, cost=cost))
        self.hub.close(debate_id)
        self.hub.flush()
