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
attempts remain. A failed call the provider billed (it answered before failing: anything
streamed, or `LLMError.billed`) is recorded as an estimate under the attempt's key (its prompt,
plus the answer and reasoning text it streamed, counted with our tokenizer), committing its
reservation; only a call the provider never accepted has its reservation released. N billed
attempts make N ledger rows.

Reasoning text (`ReasoningDelta`) is billed but never speech: it is kept on the attempt for
that estimate only, never sent as a TokenDelta, stored in the turn or shown to the next debater.

No exception of a turn escapes as an internal error. Anything other than a `DomainError` that
the provider's stream raises (TypeError, KeyError, ...), or an event the engine cannot use
(text that is not a `str`, an unknown event, a Completion whose fields do not fit), fails the
attempt with the stable reason `PROVIDER_BAD_RESPONSE` (`ProviderBadResponse`, not retryable:
the same request meets the same payload): a TurnFailed event is logged, its usage settled as
above, the traceback logged at error level, and the debate ends FAILED with that reason.
Text with lone surrogates (not UTF-8) has them replaced with U+FFFD.
"""

from __future__ import annotations

import asyncio
import logging
import zlib

from debate.accounting.v1 import accounting_pb2 as acc
from debate.common.v1 import common_pb2 as common
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from opentelemetry.trace import Tracer

from services.common.errors import DomainError
from services.common.llm.base import (
    ChatMessage,
    Completion,
    CompletionRequest,
    LLMClient,
    LLMError,
    ProviderError,
    ReasoningDelta,
    TextDelta,
    stream_to,
)
from services.common.llm.simulated import is_simulated
from services.common.tokens import count_message_tokens
from services.common.usage import Usage, usage_to_proto
from services.orchestrator.context import Window
from services.orchestrator.events import DeltaBuffer, EventHub, TextRejected
from services.orchestrator.human_seat import HumanSeats, is_human
from services.orchestrator.peers import Accounting
from services.orchestrator.run import BudgetExceeded, DebateRun, Inflight, announce_cost, turn_key
from services.orchestrator.store import Store

log = logging.getLogger(__name__)

_FINISH = {"stop": common.FINISH_REASON_STOP, "length": common.FINISH_REASON_LENGTH}


class ProviderBadResponse(ProviderError):
    """A model call whose stream raised something other than a DomainError, or sent an event the
    engine cannot use (text that is not a string, an unknown event, a malformed Completion).
    Not retryable: the same request meets the same payload."""

    reason = "PROVIDER_BAD_RESPONSE"


def _checked_text(text: object, model: str) -> str:
    """A delta's text as a `str`. Raises ProviderBadResponse for anything else (e.g. a list of
    content blocks the provider edge did not read); lone surrogates become U+FFFD."""
    if type(text) is not str:
        if not isinstance(text, str):
            raise ProviderBadResponse(
                f"{model} streamed text of type {type(text).__name__}, not a string", model=model, billed=True
            )
        text = str(text)
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:  # a surrogate pair is joined; a lone surrogate is replaced
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _check_quotes(run: DebateRun, text: str) -> list[common.Quote]:
    """The turn's marked quotes checked against the debate's documents (services/common/quotes.py).
    Run in a worker thread: the documents' index is built at the first turn (about 50 ms for the
    largest sources) and a quote not found is compared with every document (bench_evidence)."""
    return run.source_index().check_turn(text)


class TurnRunner:
    """Runs turns of debates: `max_attempts` attempts a turn at most (settings.max_turn_attempts).
    `tracer` (None: traces off) makes each turn a `turn` span (debate.id, debate.round_number,
    debate.participant, gen_ai.request.model, debate.turn.attempts), the parent of its model calls'
    `chat` spans (services.common.tracing.TracedLLM), its reservation and its usage record."""

    def __init__(
        self,
        store: Store,
        hub: EventHub,
        llm: LLMClient,
        accounting: Accounting,
        max_attempts: int,
        tracer: Tracer | None = None,
    ):
        self.tracer = tracer
        self.store = store
        self.hub = hub
        self.llm = llm
        self.accounting = accounting
        self.max_attempts = max_attempts
        self.human: HumanSeats | None = None  # human seats (issue 19 part 3): set by the engine

    async def run(self, run: DebateRun, r: int, participant: common.Participant) -> None:
        """Generates, stores and records the turn of `participant` in round `r`. Raises
        BudgetExceeded when the budget cannot cover an attempt, the DomainError of the last
        attempt when it fails (an LLMError; ProviderBadResponse for any other exception of the
        stream or a payload it cannot use), and what accounting raises."""
        if self.tracer is None:
            await self._run(run, r, participant)
            return
        with self.tracer.start_as_current_span(
            "turn",
            attributes={
                "debate.id": run.debate_id,
                "debate.round_number": r,
                "debate.participant": participant.name,
                "gen_ai.request.model": participant.model,
            },
        ) as span:
            try:
                await self._run(run, r, participant)
            finally:
                span.set_attribute("debate.turn.attempts", run.last_attempt.get((r, participant.name), 0))

    async def _run(self, run: DebateRun, r: int, participant: common.Participant) -> None:
        if self.human is not None and is_human(participant.model):  # a person plays it (human_seat.py)
            await self.human.play(run, r, participant)
            return
        name = participant.name
        sequential = run.config.format.turn_order == common.TURN_ORDER_SEQUENTIAL
        attempt = run.last_attempt.get((r, name), 0)
        max_attempts = attempt + self.max_attempts
        while True:
            attempt += 1
            window = run.context.build(participant, r, run.transcript, include_current=sequential)
            key = turn_key(run.debate_id, r, name, attempt)
            reservation_id = await self._reserve(run, r, participant, window, key)
            inflight = self._open(run, r, participant, attempt, window.messages, reservation_id)
            try:
                completion = await self._stream(run, inflight, window, key)
                turn = self._finish(inflight, completion)
            except Exception as caught:  # CancelledError passes: the lifecycle settles the call
                error = self._turn_error(inflight, caught, key)
                will_retry = isinstance(error, LLMError) and error.retryable and attempt < max_attempts
                await self._fail(run, inflight, error, will_retry)
                if will_retry:
                    continue
                if error is caught:
                    raise
                raise error from caught
            await self._complete(run, inflight, turn, key)
            return

    @staticmethod
    def _turn_error(inflight: Inflight, caught: Exception, key: str) -> DomainError:
        """The typed error of a failed attempt: a DomainError as it is; anything else a
        ProviderBadResponse (billed if the provider sent anything), its traceback logged."""
        if isinstance(caught, DomainError):
            return caught
        model = inflight.participant.model
        log.error("%s: %s's response could not be used", key, model, exc_info=caught)
        detail = str(caught)[:200]
        return ProviderBadResponse(
            f"{model} sent a response the engine cannot use ({type(caught).__name__}{': ' if detail else ''}{detail})",
            model=model,
            billed=inflight.answered,
        )

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
        messages: tuple[ChatMessage, ...],
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
            messages=messages,
            reservation_id=reservation_id,
            parts=[],
            buffer=buffer,
        )
        run.inflight[(r, name)] = inflight
        return inflight

    async def _stream(self, run: DebateRun, inflight: Inflight, window: Window, key: str) -> Completion:
        """Streams the model's answer text into the attempt's parts and the hub, and its
        reasoning text into `reasoning_parts` only; its Completion. Raises the stream's errors,
        LLMError (PROVIDER_NO_COMPLETION) when the stream ends without usage, and
        ProviderBadResponse for an event it cannot use."""
        config, participant = run.config, inflight.participant
        request = CompletionRequest(
            model=participant.model,
            messages=window.messages,
            max_tokens=config.max_tokens_per_turn,
            seed=zlib.crc32(f"{config.seed}/{inflight.round_number}/{participant.name}".encode()),
            request_id=key,
        )
        parts, reasoning, buffer = inflight.parts, inflight.reasoning_parts, inflight.buffer
        add_text = self.hub.add_text
        model = participant.model

        def sink(event: TextDelta | ReasoningDelta) -> None:
            # Called for each delta, in order; on the lean providers inside the network read's own
            # callback (stream_to): no task step nor async generator between a chunk and the hub.
            inflight.answered = True
            if type(event) is TextDelta or isinstance(event, TextDelta):
                text = event.text
                if type(text) is not str or not text.isascii():  # else _checked_text returns it as is
                    text = _checked_text(text, model)
                parts.append(text)
                add_text(buffer, text)
            elif isinstance(event, ReasoningDelta):
                reasoning.append(_checked_text(event.text, model))
            else:
                raise ProviderBadResponse(
                    f"{model} streamed an event of type {type(event).__name__}", model=model, billed=True
                )

        completion = await stream_to(self.llm, request, sink)
        inflight.answered = True
        return completion

    def _finish(self, inflight: Inflight, completion: Completion) -> common.Turn:
        """The finished turn: its text flushed to the hub, the Turn built from the Completion.
        Raises TextRejected when the hub could not take its text, and what a malformed
        Completion raises (TypeError, AttributeError, ...)."""
        buffer, participant = inflight.buffer, inflight.participant
        self.hub.flush_text(buffer)
        if buffer.failed is not None:
            raise TextRejected(buffer.failed)
        return common.Turn(
            round_number=inflight.round_number,
            participant=participant.name,
            model=completion.model or participant.model,
            text="".join(inflight.parts),
            usage=usage_to_proto(completion.usage),
            finish_reason=_FINISH.get(completion.finish_reason, common.FINISH_REASON_STOP),
            attempt=inflight.attempt,
            simulated=completion.simulated,
        )

    async def _fail(self, run: DebateRun, inflight: Inflight, error: DomainError, will_retry: bool) -> None:
        """A failed attempt: a call the provider billed is recorded as an estimate (else its
        reservation released), the attempt is closed and a TurnFailed logged."""
        r, name, attempt = inflight.round_number, inflight.participant.name, inflight.attempt
        del run.inflight[(r, name)]
        self.hub.flush_text(inflight.buffer)
        billed = inflight.answered or inflight.parts or inflight.reasoning_parts or getattr(error, "billed", False)
        if billed:  # the provider accepted the call (and streamed what it streamed): it bills it
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

    async def _complete(self, run: DebateRun, inflight: Inflight, turn: common.Turn, key: str) -> None:
        """Stores the finished turn, waits for its commit, then records its usage."""
        r, name, attempt = inflight.round_number, inflight.participant.name, inflight.attempt
        if run.config.sources:  # evidence: quotes checked off the loop, the call still in flight if cut here
            turn.quotes.extend(await asyncio.to_thread(_check_quotes, run, turn.text))
        del run.inflight[(r, name)]
        run.turns[(r, name)] = turn
        run.transcript.add(r, name, turn.text)
        self.store.put_turn(run.debate_id, turn, recorded=False)
        self.store.close_attempt(run.debate_id, r, name, attempt)
        await self.hub.committed()  # the turn is stored before its usage is recorded anywhere
        self.store.ensure_held(run.debate_id)  # stored by this replica, not refused: it may record
        await self.record(run, turn, key, inflight.reservation_id)

    complete = _complete  # human_seat.py plays a submitted human turn through it

    async def record(self, run: DebateRun, turn: common.Turn, key: str, reservation_id: str = "") -> None:
        """Records a stored turn's usage under `key` (committing its reservation), marks it
        recorded and logs TurnCompleted and the new cost. Also re-sends, after a restart, the
        usage of a turn stored but not yet recorded (the key makes it count once)."""
        try:
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
        except DomainError:
            run.unanswered.add(key)
            raise
        turn.cost.CopyFrom(reply.record.cost)
        self.store.put_turn(run.debate_id, turn, recorded=True)
        self.hub.emit(run.debate_id, turn_completed=pb.TurnCompleted(turn=turn))
        run.add_cost(reply)
        announce_cost(self.store, self.hub, run)

    async def settle_inflight(self, run: DebateRun, reason: str, *, keep_partial: bool = False) -> None:
        """Calls cut short (cancel, budget, failure): what they spent is recorded as an estimate,
        their attempts closed and a TurnFailed(`reason`) logged for each. `keep_partial` (a debate
        stopped by a stopping rule): the text each streamed is also stored as a turn with
        FINISH_REASON_CANCELLED and the estimate's usage and cost (recorded: its usage is)."""
        for (r, name), inflight in list(run.inflight.items()):
            del run.inflight[(r, name)]
            reply = await self._record_cut_call(run, inflight)
            if keep_partial and reply is not None:
                self.store.put_turn(run.debate_id, _cancelled_turn(inflight, reply), recorded=True)
            self.store.close_attempt(run.debate_id, r, name, inflight.attempt)
            self.hub.flush_text(inflight.buffer)
            self.hub.emit(
                run.debate_id,
                turn_failed=pb.TurnFailed(
                    round_number=r,
                    participant=name,
                    attempt=inflight.attempt,
                    reason=reason,
                    message=(
                        "the call was stopped; its partial text is kept as a cancelled turn"
                        if keep_partial
                        else "the call was stopped; its text is void"
                    ),
                    will_retry=False,
                ),
            )

    async def settle_interrupted(
        self, run: DebateRun, open_attempts: list[tuple[int, str, int, str]]
    ) -> list[tuple[int, str, int]]:
        """After a restart or a takeover: settles the attempts the stopped process left open whose
        turn was not stored, given as the store's (round, participant, attempt, reservation_id).
        An attempt whose text had reached the event log had been answered by its provider, which
        bills it: it is recorded as an estimate under its own key (its prompt rebuilt from the
        stored turns, as it was sent, and that text; text of the last few milliseconds before
        the stop, never committed, is missing from it), committing its reservation, as a call
        cut short is. An attempt with no text logged has its reservation released: whether the
        provider had accepted it is not known. Returns the attempts recorded."""
        streamed = self._logged_text(run.debate_id, {(r, p, a) for r, p, a, _ in open_attempts})
        participants = {p.name: p for p in run.config.participants}
        sequential = run.config.format.turn_order == common.TURN_ORDER_SEQUENTIAL
        recorded = []
        for r, name, attempt, reservation_id in open_attempts:
            text = streamed.get((r, name, attempt), "")
            participant = participants.get(name)
            if text and participant is not None:
                window = run.context.build(participant, r, run.transcript, include_current=sequential)
                inflight = Inflight(
                    round_number=r,
                    participant=participant,
                    attempt=attempt,
                    messages=window.messages,
                    reservation_id=reservation_id,
                    parts=[text],
                    buffer=DeltaBuffer(run.debate_id, r, name, attempt),
                    answered=True,
                )
                await self._record_cut_call(run, inflight)
                recorded.append((r, name, attempt))
            elif reservation_id:
                await self.accounting.release_budget(reservation_id)
        return recorded

    def _logged_text(self, debate_id: str, attempts: set[tuple[int, str, int]]) -> dict[tuple[int, str, int], str]:
        """The answer text of each of `attempts` (round, participant, attempt) in the debate's
        committed event log (its TokenDeltas), read a page at a time."""
        parts: dict[tuple[int, str, int], list[str]] = {}
        if not attempts:
            return {}
        up_to = self.store.last_sequence(debate_id)
        after = 0
        while after < up_to:
            page = self.store.read_events(debate_id, after, up_to, 2_000)
            if not page:
                break
            for sequence, data in page:
                after = sequence
                event = pb.DebateEvent.FromString(data)
                if event.WhichOneof("payload") == "token_delta":
                    delta = event.token_delta
                    key = (delta.round_number, delta.participant, delta.attempt)
                    if key in attempts:
                        parts.setdefault(key, []).append(delta.text)
        return {key: "".join(texts) for key, texts in parts.items()}

    async def _record_cut_call(self, run: DebateRun, inflight: Inflight) -> acc.RecordUsageResponse | None:
        """Records a call that did not complete, as an estimate: its prompt as sent (counted as the
        provider edge estimates a call with no usage, chat format included) and the answer and
        reasoning text it streamed (counted with our tokenizer; the reasoning also as
        reasoning_tokens), under its attempt's key, committing its reservation."""
        participant, r = inflight.participant, inflight.round_number
        key = turn_key(run.debate_id, r, participant.name, inflight.attempt)
        count = run.context.count
        text, reasoning = "".join(inflight.parts), "".join(inflight.reasoning_parts)
        reasoning_tokens = count(participant.model, reasoning) if reasoning else 0
        completion_tokens = (count(participant.model, text) if text else 0) + reasoning_tokens
        usage = usage_to_proto(
            Usage(
                prompt_tokens=count_message_tokens(participant.model, [m.as_dict() for m in inflight.messages]),
                completion_tokens=completion_tokens,
                reasoning_tokens=reasoning_tokens,
                estimated=True,
            )
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
            run.unanswered.add(key)
            log.warning("could not record the usage of a cut call %s: %s", key, error.message)
            return None
        return reply


def _cancelled_turn(inflight: Inflight, reply: acc.RecordUsageResponse) -> common.Turn:
    """A call cut short as a turn: the text it streamed, FINISH_REASON_CANCELLED, the usage and
    cost recorded for it."""
    return common.Turn(
        round_number=inflight.round_number,
        participant=inflight.participant.name,
        model=inflight.participant.model,
        text="".join(inflight.parts),
        usage=reply.record.usage,
        cost=reply.record.cost,
        finish_reason=common.FINISH_REASON_CANCELLED,
        attempt=inflight.attempt,
        simulated=is_simulated(inflight.participant.model),
    )
