"""Turn generation: one debater's turn of a round, from its budget reservation to its recorded
usage, and the settlement of calls cut short.

Order of every step (what makes a restart safe):
1. a turn attempt is opened in the store (with its reservation id) and announced;
2. the model streams; text goes to the event log through the coalescing hub;
3. the finished turn is committed (not yet "recorded"), then its usage goes to accounting
   under `debates/{id}/rounds/{r}/turns/{participant}/attempts/{a}` committing the
   reservation; then the turn is marked recorded and TurnCompleted is logged, in one commit.
After a crash, a committed turn is never generated again (its usage is re-sent under the same
idempotent key if it was not marked recorded); an attempt left open is void (lifecycle.py
releases its reservation and logs a TurnFailed(ORCHESTRATOR_RESTARTED)) and the turn runs
again as attempt a+1.

A call that fails before its end is retried as a new attempt while it is retryable and
attempts remain; the tokens a provider streamed before a cut are billed, so they are recorded
as an estimate (our tokenizer's count) under the attempt's key.
"""

from __future__ import annotations

import logging
import zlib
from typing import cast

from debate.accounting.v1 import accounting_pb2 as acc
from debate.common.v1 import common_pb2 as common
from debate.orchestrator.v1 import orchestrator_pb2 as pb

from services.common.errors import DomainError
from services.common.llm.base import Completion, CompletionRequest, LLMClient, LLMError, TextDelta
from services.common.usage import Usage, usage_to_proto
from services.orchestrator.context import Window
from services.orchestrator.events import DeltaBuffer, EventHub
from services.orchestrator.peers import Accounting
from services.orchestrator.run import BudgetExceeded, DebateRun, Inflight, announce_cost, turn_key
from services.orchestrator.store import Store

log = logging.getLogger(__name__)

_FINISH = {"stop": common.FINISH_REASON_STOP, "length": common.FINISH_REASON_LENGTH}


class TurnRunner:
    """Runs turns of debates: `max_attempts` attempts a turn at most (settings.max_turn_attempts)."""

    def __init__(self, store: Store, hub: EventHub, llm: LLMClient, accounting: Accounting, max_attempts: int):
        self.store = store
        self.hub = hub
        self.llm = llm
        self.accounting = accounting
        self.max_attempts = max_attempts

    async def run(self, run: DebateRun, r: int, participant: common.Participant) -> None:
        """Generates, stores and records the turn of `participant` in round `r`. Raises
        BudgetExceeded when the budget cannot cover an attempt, LLMError when the last attempt
        fails, and what accounting raises."""
        name = participant.name
        sequential = run.config.format.turn_order == common.TURN_ORDER_SEQUENTIAL
        attempt = run.last_attempt.get((r, name), 0)
        max_attempts = attempt + self.max_attempts
        while True:
            attempt += 1
            window = run.context.build(participant, r, run.transcript, include_current=sequential)
            key = turn_key(run.debate_id, r, name, attempt)
            reservation_id = await self._reserve(run, r, participant, window, key)
            inflight = self._open(run, r, participant, attempt, window.prompt_tokens, reservation_id)
            try:
                completion = await self._stream(run, inflight, window, key)
            except LLMError as error:
                will_retry = error.retryable and attempt < max_attempts
                await self._fail(run, inflight, error, will_retry)
                if will_retry:
                    continue
                raise
            await self._complete(run, inflight, completion, key)
            return

    async def _reserve(self, run: DebateRun, r: int, participant: common.Participant, window: Window, key: str) -> str:
        """The attempt's reservation id ("" without a budget); raises BudgetExceeded if refused."""
        config = run.config
        if not config.HasField("budget"):
            return ""
        granted = await self.accounting.reserve_budget(
            acc.ReserveBudgetRequest(
                reservation_id=key,
                debate_id=run.debate_id,
                model=participant.model,
                prompt_tokens=window.prompt_tokens,
                max_completion_tokens=config.max_tokens_per_turn,
            )
        )
        if not granted.granted:
            raise BudgetExceeded(
                f"the budget of {config.budget.amount} USD cannot cover {participant.name}'s turn in round {r}"
                f" (needs up to {granted.amount.amount}, {granted.remaining.amount or '0'} left);"
                f" spent {run.total} USD"
            )
        return key

    def _open(
        self,
        run: DebateRun,
        r: int,
        participant: common.Participant,
        attempt: int,
        prompt_tokens: int,
        reservation_id: str,
    ) -> Inflight:
        """Opens the attempt in the store, announces it, and tracks it as in flight."""
        name = participant.name
        run.last_attempt[(r, name)] = attempt
        self.store.open_attempt(run.debate_id, r, name, attempt, reservation_id)
        self.hub.emit(
            run.debate_id,
            turn_started=pb.TurnStarted(round_number=r, participant=name, model=participant.model, attempt=attempt),
        )
        buffer = DeltaBuffer(run.debate_id, r, name, attempt)
        inflight = Inflight(
            round_number=r,
            participant=participant,
            attempt=attempt,
            prompt_tokens=prompt_tokens,
            reservation_id=reservation_id,
            parts=[],
            buffer=buffer,
        )
        run.inflight[(r, name)] = inflight
        return inflight

    async def _stream(self, run: DebateRun, inflight: Inflight, window: Window, key: str) -> Completion:
        """Streams the model's text into the attempt's parts and the hub; its Completion, or
        LLMError (PROVIDER_NO_COMPLETION when the stream ends without usage)."""
        config, participant = run.config, inflight.participant
        request = CompletionRequest(
            model=participant.model,
            messages=window.messages,
            max_tokens=config.max_tokens_per_turn,
            seed=zlib.crc32(f"{config.seed}/{inflight.round_number}/{participant.name}".encode()),
            request_id=key,
        )
        parts, buffer = inflight.parts, inflight.buffer
        add_text = self.hub.add_text
        completion = None
        async for event in self.llm.stream(request):
            if type(event) is TextDelta:
                parts.append(event.text)
                add_text(buffer, event.text)
            else:
                completion = cast(Completion, event)
        if completion is None:
            raise LLMError(
                f"{participant.model} ended its stream without usage",
                model=participant.model,
                reason="PROVIDER_NO_COMPLETION",
                retryable=True,
            )
        return completion

    async def _fail(self, run: DebateRun, inflight: Inflight, error: LLMError, will_retry: bool) -> None:
        """A failed attempt: what it streamed is recorded (or its reservation released), the
        attempt is closed and a TurnFailed logged."""
        r, name, attempt = inflight.round_number, inflight.participant.name, inflight.attempt
        del run.inflight[(r, name)]
        self.hub.flush_text(inflight.buffer)
        if inflight.parts:  # the provider streamed tokens before the cut, and bills them
            await self._record_cut_call(run, inflight)
        elif inflight.reservation_id:
            await self.accounting.release_budget(inflight.reservation_id)
        self.store.close_attempt(run.debate_id, r, name, attempt)
        self.hub.emit(
            run.debate_id,
            turn_failed=pb.TurnFailed(
                round_number=r,
                participant=name,
                attempt=attempt,
                reason=error.reason,
                message=error.message[:500],
                will_retry=will_retry,
            ),
        )

    async def _complete(self, run: DebateRun, inflight: Inflight, completion: Completion, key: str) -> None:
        """Stores the finished turn, waits for its commit, then records its usage."""
        r, participant, attempt = inflight.round_number, inflight.participant, inflight.attempt
        name = participant.name
        del run.inflight[(r, name)]
        self.hub.flush_text(inflight.buffer)
        turn = common.Turn(
            round_number=r,
            participant=name,
            model=completion.model or participant.model,
            text="".join(inflight.parts),
            usage=usage_to_proto(completion.usage),
            finish_reason=_FINISH.get(completion.finish_reason, common.FINISH_REASON_STOP),
            attempt=attempt,
            simulated=completion.simulated,
        )
        run.turns[(r, name)] = turn
        run.transcript.add(r, name, turn.text)
        self.store.put_turn(run.debate_id, turn, recorded=False)
        self.store.close_attempt(run.debate_id, r, name, attempt)
        await self.hub.committed()  # the turn is stored before its usage is recorded anywhere
        await self.record(run, turn, key, inflight.reservation_id)

    async def record(self, run: DebateRun, turn: common.Turn, key: str, reservation_id: str = "") -> None:
        """Records a stored turn's usage under `key` (committing its reservation), marks it
        recorded and logs TurnCompleted and the new cost. Also re-sends, after a restart, the
        usage of a turn stored but not yet recorded (the key makes it count once)."""
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
        run.add_cost(reply)
        announce_cost(self.store, self.hub, run)

    async def settle_inflight(self, run: DebateRun, reason: str) -> None:
        """Calls cut short (cancel, budget, failure): what they spent is recorded as an estimate,
        their attempts closed and a TurnFailed(`reason`) logged for each."""
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
        usage = usage_to_proto(
            Usage(prompt_tokens=inflight.prompt_tokens, completion_tokens=completion_tokens, estimated=True)
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
            run.add_cost(reply)
        except DomainError as error:
            log.warning("could not record the usage of a cut call %s: %s", key, error.message)
