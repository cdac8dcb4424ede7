"""Human seats (issue 19 part 3): a participant whose model is `human` is played by a person, who
gives each of its turns through `SubmitTurn`.

When such a seat's turn comes (in the round's order, or beside the models' turns in a
simultaneous round), the debate waits for it:

1. The wait is opened in the store with its deadline (now + `DebateConfig.human.turn_timeout_seconds`,
   wall-clock ns), and `HumanTurnAwaited {round, participant, deadline}` is logged and committed.
   A wait opened before a restart keeps its deadline: a resumed debate logs HumanTurnAwaited again
   with the same deadline and waits until it.
2. `submit` (SubmitTurn) stores the text in the wait's row and commits before it answers, then wakes
   the waiting debate. A turn submitted before a crash is in the store, so the resumed debate plays
   it at once. On a shared store (PostgreSQL, several replicas) the debate also reads the row every
   POLL_S, which covers a submit that reached another replica; on SQLite (one process) it does not
   poll: a waiting debate costs no CPU until its submit or deadline.
3. The turn is then played as a model's is (turns.py): an attempt opened, TurnStarted, the text
   as TokenDelta(s), the turn stored, its usage (completion tokens counted with the project's
   tokenizer, services/common/tokens.py; prompt tokens 0: no model was prompted) recorded with
   accounting under the turn's usual key with the model `human`, priced at 0 (prices.toml), then
   TurnCompleted and CostUpdated. The cost table has the seat's line at 0.
4. At the deadline with no text, `HumanTurnTimedOut` is logged and the policy applies:
   - SKIP_TURN (the default): the turn is stored empty, `Turn.human.skipped` with reason
     "TIMEOUT", and announced by TurnCompleted; the next turn of the seat is awaited again.
   - FORFEIT: the same with reason "FORFEITED", and every later turn of the seat is stored the
     same way at once, without waiting. The judge is told in each such turn that the seat forfeited
     (`judge_text`).
   - END_DEBATE: the debate ends FAILED with the reason HUMAN_TURN_TIMEOUT, naming the seat and
     the round; what was spent stays recorded. (A restart before that ending is committed meets the
     same passed deadline and ends it the same way.)

Nothing here imports grpc: errors are typed (services.common.errors) and the servicer maps them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from debate.common.v1 import common_pb2 as common
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from google.rpc import error_details_pb2

from services.common.errors import DomainError, FailedPrecondition, Violations
from services.common.tokens import count_text_tokens
from services.orchestrator.events import DeltaBuffer, EventHub
from services.orchestrator.run import DebateRun, Inflight, S, turn_key
from services.orchestrator.store import DebateRow, HumanTurnRow, Store

# TurnRunner.complete: stores a finished turn, records its usage, announces it.
CompleteTurn = Callable[[DebateRun, Inflight, common.Turn, str], Awaitable[None]]

HUMAN_MODEL = "human"
DEFAULT_TURN_TIMEOUT_S = 300
MAX_TURN_TIMEOUT_S = 86_400
MAX_TEXT_CHARS = 65_536
MAX_REQUEST_ID = 128
POLL_S = 0.5  # how often a waiting debate reads its wait's row (a submit on another replica)
SKIPPED_TIMEOUT = "TIMEOUT"
SKIPPED_FORFEITED = "FORFEITED"

Policy = common.HumanTimeoutPolicy


def is_human(model: str) -> bool:
    """Whether a participant's model names a human seat (`human`)."""
    return model == HUMAN_MODEL


def has_human_seat(config: common.DebateConfig) -> bool:
    return any(is_human(p.model) for p in config.participants)


def check_config(config: common.DebateConfig, out: common.DebateConfig, v: Violations, path: str) -> None:
    """Validates `config.human` (`path`.human.*) and that no judge model is `human`, and, when the
    debate has a human seat, fills in its defaults in `out`: 300 s a turn and SKIP_TURN."""
    human = config.human
    timeout = human.turn_timeout_seconds
    if not 0 <= timeout <= MAX_TURN_TIMEOUT_S:
        v.add(f"{path}.human.turn_timeout_seconds", f"must be 1 to {MAX_TURN_TIMEOUT_S} s (0: default), got {timeout}")
    if human.timeout_policy not in Policy.values():
        v.add(f"{path}.human.timeout_policy", f"unknown policy {human.timeout_policy}")
    for i, model in enumerate(config.judge.models):
        if is_human(model):
            v.add(f"{path}.judge.models[{i}]", "a human seat is a debater's; a judge is a model")
    if has_human_seat(config):
        if timeout == 0:
            out.human.turn_timeout_seconds = DEFAULT_TURN_TIMEOUT_S
        if human.timeout_policy == Policy.HUMAN_TIMEOUT_POLICY_UNSPECIFIED:
            out.human.timeout_policy = Policy.HUMAN_TIMEOUT_POLICY_SKIP_TURN


def judge_text(turn: common.Turn) -> str:
    """The text the judge is shown for a turn: the turn's own, or for a skipped human turn a note
    saying why it is empty (the seat is not named: the judge sees debaters under labels)."""
    if not turn.human.skipped:
        return turn.text
    if turn.human.skip_reason == SKIPPED_FORFEITED:
        return "(No turn: this debater, played by a person, forfeited the debate; their remaining turns are empty.)"
    return "(No turn: this debater, played by a person, did not answer in time; the turn was skipped.)"


class HumanTurnTimeout(DomainError):
    """A human seat did not answer in time under the END_DEBATE policy: the debate ends FAILED."""

    code = "DEADLINE_EXCEEDED"
    reason = "HUMAN_TURN_TIMEOUT"


def _precondition(message: str, reason: str, subject: str, awaited: list[tuple[int, str, int]]) -> FailedPrecondition:
    """A FailedPrecondition with a PreconditionFailure detail, and which seats are awaited now in
    its ErrorInfo metadata ("awaiting": "round 2: Ann; ...", "" for none)."""
    error = FailedPrecondition(
        message,
        reason=reason,
        metadata={"awaiting": "; ".join(f"round {r}: {p}" for r, p, _ in awaited)},
    )
    error.details.append(
        error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(type=reason, subject=subject, description=message)
            ]
        )
    )
    return error


def _check_fields(config: common.DebateConfig, participant: str, round_number: int, text: str, request_id: str) -> int:
    """SubmitTurn's fields, every problem at once (InvalidArgument); the text's tokens."""
    seats = {p.name for p in config.participants}
    v = Violations()
    if len(request_id) > MAX_REQUEST_ID:
        v.add("request_id", f"must be at most {MAX_REQUEST_ID} characters")
    if not participant:
        v.add("participant", "must not be empty")
    elif participant not in seats:
        v.add("participant", f"no participant named {participant!r} in this debate")
    if not 1 <= round_number <= config.format.round_limit:
        v.add("round_number", f"must be 1 to {config.format.round_limit}, got {round_number}")
    tokens = 0
    if not text.strip():
        v.add("text", "must not be empty")
    elif len(text) > MAX_TEXT_CHARS:
        v.add("text", f"must be at most {MAX_TEXT_CHARS} characters, got {len(text)}")
    else:
        tokens = count_text_tokens(HUMAN_MODEL, text)
        limit = config.max_tokens_per_turn
        if tokens > limit:
            v.add("text", f"is {tokens} tokens; a turn is at most max_tokens_per_turn = {limit}")
    v.raise_if_any()
    return tokens


class HumanSeats:
    """Plays human seats' turns (`play`, called by TurnRunner for a `human` participant) and takes
    their text (`submit`). `complete` is TurnRunner.complete (a played turn is stored, recorded and
    announced as a model's is); `now_ns` is the wall clock (a test may pass its own)."""

    def __init__(
        self,
        store: Store,
        hub: EventHub,
        complete: CompleteTurn,
        now_ns: Callable[[], int] = time.time_ns,
    ):
        self.store = store
        self.hub = hub
        self.complete = complete
        self.now_ns = now_ns
        self._wakers: dict[tuple[str, int, str], asyncio.Event] = {}

    # ==== the debate's side =================================================================
    async def play(self, run: DebateRun, r: int, participant: common.Participant) -> None:
        """The human seat's turn of round `r`: waited for, then played, or skipped or ending the
        debate at its deadline (the module docstring). Raises HumanTurnTimeout (END_DEBATE) and
        what recording its usage raises."""
        name = participant.name
        if self._forfeited(run, name):
            self._skip(run, r, participant, SKIPPED_FORFEITED)
            return
        debate_id = run.debate_id
        row = self.store.human_turn(debate_id, r, name)
        if row is None:
            deadline_ns = self.now_ns() + run.config.human.turn_timeout_seconds * 1_000_000_000
            self.store.open_human_turn(debate_id, r, name, deadline_ns)
            row = HumanTurnRow(r, name, deadline_ns, False, "", "")
        if not row.submitted:
            awaited = pb.HumanTurnAwaited(round_number=r, participant=name)
            awaited.deadline.FromNanoseconds(row.deadline_ns)
            self.hub.emit(debate_id, human_turn_awaited=awaited)
            await self.hub.committed()  # the deadline is stored before anyone can act on it
            row = await self._wait(debate_id, row)
        if row.submitted:
            await self._speak(run, r, participant, row)
            return
        self._timed_out(run, r, participant)

    async def _wait(self, debate_id: str, row: HumanTurnRow) -> HumanTurnRow:
        """The wait's row once its text is stored, or as it is at the deadline."""
        key = (debate_id, row.round_number, row.participant)
        waker = self._wakers.setdefault(key, asyncio.Event())
        try:
            while True:
                current = self.store.human_turn(debate_id, row.round_number, row.participant)
                if current is not None and current.submitted:
                    return current
                remaining = (row.deadline_ns - self.now_ns()) / 1e9
                if remaining <= 0:
                    return current or row
                waker.clear()
                with contextlib.suppress(TimeoutError):
                    # One process a store (SQLite): every submit comes through this process's
                    # waker. A shared store: a submit may reach another replica, so read again.
                    timeout = min(remaining, POLL_S) if self.store.shared else remaining
                    await asyncio.wait_for(waker.wait(), timeout=timeout)
        finally:
            self._wakers.pop(key, None)

    async def _speak(self, run: DebateRun, r: int, participant: common.Participant, row: HumanTurnRow) -> None:
        """Plays a submitted text as the seat's turn, as a model's turn is played (turns.py)."""
        name = participant.name
        attempt = run.last_attempt.get((r, name), 0) + 1
        run.last_attempt[(r, name)] = attempt
        self.store.open_attempt(run.debate_id, r, name, attempt, "")
        self.hub.emit(
            run.debate_id,
            turn_started=pb.TurnStarted(round_number=r, participant=name, model=HUMAN_MODEL, attempt=attempt),
        )
        inflight = Inflight(
            round_number=r,
            participant=participant,
            attempt=attempt,
            messages=(),
            reservation_id="",
            parts=[row.text],
            buffer=DeltaBuffer(run.debate_id, r, name, attempt),
            answered=True,
        )
        run.inflight[(r, name)] = inflight
        for line in row.text.splitlines(keepends=True):  # TokenDelta(s), coalesced by the hub
            self.hub.add_text(inflight.buffer, line)
        self.hub.flush_text(inflight.buffer)
        tokens = count_text_tokens(HUMAN_MODEL, row.text)
        turn = common.Turn(
            round_number=r,
            participant=name,
            model=HUMAN_MODEL,
            text=row.text,
            usage=common.TokenUsage(completion_tokens=tokens, total_tokens=tokens),
            finish_reason=common.FINISH_REASON_STOP,
            attempt=attempt,
            human=common.HumanTurn(request_id=row.request_id),
        )
        await self.complete(run, inflight, turn, turn_key(run.debate_id, r, name, attempt))

    def _timed_out(self, run: DebateRun, r: int, participant: common.Participant) -> None:
        name = participant.name
        human = run.config.human
        policy = human.timeout_policy or Policy.HUMAN_TIMEOUT_POLICY_SKIP_TURN
        follows = {
            Policy.HUMAN_TIMEOUT_POLICY_SKIP_TURN: "the turn is skipped",
            Policy.HUMAN_TIMEOUT_POLICY_FORFEIT: f"{name} forfeits: their remaining turns are skipped",
            Policy.HUMAN_TIMEOUT_POLICY_END_DEBATE: "the debate ends",
        }[policy]
        message = f"{name} gave no turn in round {r} within {human.turn_timeout_seconds} s; {follows}"
        self.hub.emit(
            run.debate_id,
            human_turn_timed_out=pb.HumanTurnTimedOut(round_number=r, participant=name, policy=policy, message=message),
        )
        if policy == Policy.HUMAN_TIMEOUT_POLICY_END_DEBATE:
            raise HumanTurnTimeout(message)
        reason = SKIPPED_FORFEITED if policy == Policy.HUMAN_TIMEOUT_POLICY_FORFEIT else SKIPPED_TIMEOUT
        self._skip(run, r, participant, reason)

    def _skip(self, run: DebateRun, r: int, participant: common.Participant, reason: str) -> None:
        """Stores the seat's turn of round `r` empty (nothing was said, nothing is recorded) and
        announces it with TurnCompleted."""
        name = participant.name
        turn = common.Turn(
            round_number=r,
            participant=name,
            model=HUMAN_MODEL,
            finish_reason=common.FINISH_REASON_STOP,
            attempt=run.last_attempt.get((r, name), 0),
            human=common.HumanTurn(skipped=True, skip_reason=reason),
        )
        turn.cost.currency_code = "USD"
        turn.cost.amount = "0"
        run.turns[(r, name)] = turn
        run.transcript.add(r, name, "")
        self.store.put_turn(run.debate_id, turn, recorded=True)
        self.hub.emit(run.debate_id, turn_completed=pb.TurnCompleted(turn=turn))

    @staticmethod
    def _forfeited(run: DebateRun, name: str) -> bool:
        return any(p == name and turn.human.skip_reason == SKIPPED_FORFEITED for (_, p), turn in run.turns.items())

    # ==== the caller's side (SubmitTurn) ====================================================
    def submit(
        self, row: DebateRow, participant: str, round_number: int, text: str, request_id: str
    ) -> tuple[int, bool]:
        """Stores the text of a human seat's awaited turn, committed, and wakes the debate: the
        text's tokens and whether this request_id had given it already (then nothing is done).
        Raises InvalidArgument (field violations: request_id, participant, round_number, text) and
        FailedPrecondition: NOT_A_HUMAN_SEAT, HUMAN_TURN_NOT_AWAITED (not running, not this seat's
        turn now, or its deadline passed), HUMAN_TURN_ALREADY_SUBMITTED (under another request_id)."""
        tokens = _check_fields(row.config, participant, round_number, text, request_id)
        seats = {p.name: p for p in row.config.participants}
        debate_id = row.debate_id
        if not is_human(seats[participant].model):
            raise _precondition(
                f"{participant} is played by {seats[participant].model}, not a person",
                "NOT_A_HUMAN_SEAT",
                f"participants/{participant}",
                [],
            )
        wait = self.store.human_turn(debate_id, round_number, participant)
        if wait is not None and wait.submitted:
            if request_id and wait.request_id == request_id:
                self.hub.commit()  # a first try whose commit failed is committed now, or this one fails too
                return count_text_tokens(HUMAN_MODEL, wait.text), True
            raise _precondition(
                f"{participant}'s turn in round {round_number} was already given",
                "HUMAN_TURN_ALREADY_SUBMITTED",
                f"rounds/{round_number}/turns/{participant}",
                self.store.awaited_humans(debate_id),
            )
        awaited = self.store.awaited_humans(debate_id) if row.state == S.DEBATE_STATE_RUNNING else []
        if (round_number, participant) not in {(r, p) for r, p, _ in awaited}:
            if row.state != S.DEBATE_STATE_RUNNING:
                why = f"the debate is {S.Name(row.state)}"
            elif awaited:
                why = "the debate awaits " + ", ".join(f"{p} in round {r}" for r, p, _ in awaited)
            else:
                why = "the debate awaits no human turn now"
            raise _precondition(
                f"not {participant}'s turn in round {round_number}: {why}",
                "HUMAN_TURN_NOT_AWAITED",
                f"rounds/{round_number}/turns/{participant}",
                awaited,
            )
        assert wait is not None  # awaited: its wait is open
        if self.now_ns() >= wait.deadline_ns:
            raise _precondition(
                f"{participant}'s turn in round {round_number} passed its deadline",
                "HUMAN_TURN_NOT_AWAITED",
                f"rounds/{round_number}/turns/{participant}",
                awaited,
            )
        self.store.submit_human_turn(debate_id, round_number, participant, text, request_id)
        self.hub.commit()
        waker = self._wakers.get((debate_id, round_number, participant))
        if waker is not None:
            waker.set()
        return tokens, False

    def awaiting(self, row: DebateRow) -> pb.HumanTurnAwaited | None:
        """The human seat a running debate waits for (the first, in a simultaneous round with
        several), with its deadline; None when none is awaited."""
        if row.state != S.DEBATE_STATE_RUNNING or not has_human_seat(row.config):
            return None
        awaited = self.store.awaited_humans(row.debate_id)
        if not awaited:
            return None
        r, participant, deadline_ns = awaited[0]
        message = pb.HumanTurnAwaited(round_number=r, participant=participant)
        message.deadline.FromNanoseconds(deadline_ns)
        return message
