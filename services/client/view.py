"""The live view of a debate: DebateEvents in, terminal text out.

Events arrive interleaved (in a simultaneous round every debater streams at once, and the
judge may score round 1 while round 2 is streaming), but a reader wants each debater's turn
as one block and each round's scores right after that round. So the view keeps an ordered
list of segments (round headers, turns, score tables, the verdict, the cost table) and
prints them strictly in order: the segment at the head is printed as its text arrives (the
live part), later segments buffer until they reach the head. A round's score table is
reserved a place before the next round's header, so the next round waits for the judge in
the view, not in the engine.

On a TTY, finished lines scroll up as usual and a small live region under them is redrawn
on every event: the partial line of the turn being printed (so text appears word by word), a
one-line ticker per other debater still speaking (so every debater is seen live), or what the
debate waits for ("the judge is scoring round 1"). Every region line fits in one terminal row,
so the region is erased by moving up its length (`style.Screen` does the writing). Elsewhere
(CI logs, pipes) only whole lines are written, each of a debater's lines prefixed with its name.
The score tables, the verdict and the cost table are drawn by `panels`.

Events are de-duplicated by their sequence number, so a resumed stream never prints twice.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO

from debate.common.v1 import common_pb2
from debate.orchestrator.v1 import orchestrator_pb2

from services.client.evidence import quote_footer
from services.client.panels import assessment_lines, cost_lines, turn_details, verdict_lines, wrapped
from services.client.stopping import stop_lines
from services.client.style import Screen, Style, Wrapper, cell_len, clip_left, safe_text
from services.client.verdict_history import version_lines

pb = orchestrator_pb2
TERMINAL_STATES = {
    pb.DEBATE_STATE_COMPLETED,
    pb.DEBATE_STATE_FAILED,
    pb.DEBATE_STATE_CANCELLED,
    pb.DEBATE_STATE_BUDGET_EXCEEDED,
}


def state_name(state: int) -> str:
    if state not in pb.DebateState.values():
        return str(state)
    return pb.DebateState.Name(pb.DebateState.ValueType(state)).removeprefix("DEBATE_STATE_")


ENDINGS: dict[int, str] = {
    pb.DEBATE_STATE_COMPLETED: "debate completed",
    pb.DEBATE_STATE_FAILED: "debate failed",
    pb.DEBATE_STATE_CANCELLED: "debate cancelled",
    pb.DEBATE_STATE_BUDGET_EXCEEDED: "debate stopped: its budget is spent",
}


def ending(state: int, reason: str = "") -> str:
    """How a debate ended, in words: "debate cancelled", "debate failed (PROVIDER_ERROR: ...)".
    `reason` (a DebateFailed's reason, or a summary's end_reason "REASON: message") is added when it
    says more than the state does."""
    text = ENDINGS.get(state, f"debate ended {state_name(state)}")
    code, _, message = reason.partition(": ")
    if code.upper() == state_name(state):  # "CANCELLED" for a cancelled debate says nothing more
        reason = message
    if reason and reason.lower() not in text:
        text += f" ({reason})"
    return text


@dataclass
class Block:
    """Finished text, or a reserved place (`lines is None`) until its content arrives."""

    lines: list[str] | None
    status: str = ""  # shown on a TTY while this place waits


@dataclass
class TurnSegment:
    round: int
    participant: str
    attempt: int = 1
    text: str = ""  # received text of the current attempt
    written: int = 0  # how much of `text` went to the terminal
    notes: list[str] = field(default_factory=list)  # written after the header
    started: bool = False  # its header is written
    done: bool = False
    footer: str = ""
    wrapper: Wrapper | None = None


class DebateView:
    def __init__(
        self,
        out: TextIO,
        style: Style | None = None,
        *,
        participants: Sequence[common_pb2.Participant] = (),
        round_limit: int = 0,
    ):
        self.out = out
        self.style = style or Style.for_stream(out)
        self.round_limit = round_limit
        self.participants = {p.name: p for p in participants}
        self.colours: dict[str, int] = {p.name: i for i, p in enumerate(participants)}
        self.last_sequence = 0
        # A debate can end more than once (continued after its end: verdicts.py); the view is
        # finished at an ending at or after this sequence (0: the first).
        self.ends_after = 0
        self.finished = False
        self.state: int = pb.DEBATE_STATE_UNSPECIFIED
        self.end_reason = ""
        self.segments: list[Block | TurnSegment] = []
        self.head = 0
        self.turns: dict[tuple[int, str], TurnSegment] = {}
        self.reserved: dict[int, Block] = {}  # round -> place of its score table
        self.assessed: set[int] = set()
        self.verdict_shown = False
        self.cost: pb.CostUpdated | None = None
        self.simulated = False
        self.idle_status = "waiting for the debate to start"
        self.screen = Screen(out, self.style.live)
        self._closed = False

    # -- events -------------------------------------------------------------------------

    def handle(self, event: pb.DebateEvent) -> bool:
        """Applies one event; False (and nothing printed) for one already seen."""
        if event.sequence:
            if event.sequence <= self.last_sequence:
                return False
            self.last_sequence = event.sequence
        kind = event.WhichOneof("payload")
        if kind:
            getattr(self, f"_on_{kind}")(getattr(event, kind))
        self._pump()
        return True

    def _on_heartbeat(self, _: pb.Heartbeat) -> None:
        pass

    def _on_state_changed(self, changed: pb.DebateStateChanged) -> None:
        self.state = changed.state
        if changed.state == pb.DEBATE_STATE_QUEUED:
            self._block([self._dim(f"queued{': ' + changed.reason if changed.reason else ''}; waiting for a slot")])
        elif changed.state == pb.DEBATE_STATE_RUNNING:
            self.idle_status = "the debaters are preparing"

    def _on_round_started(self, started: pb.RoundStarted) -> None:
        number = started.round_number
        previous = number - 1
        if previous >= 1 and previous not in self.assessed and previous not in self.reserved:
            self.reserved[previous] = self._block(None, status=f"the judge is scoring round {previous}")
        of = f" of {self.round_limit}" if self.round_limit else ""
        self._block(["", self.style.rule(f"Round {number}{of}")])
        for name in started.participants:
            self._colour(name)
        self.idle_status = "the debaters are thinking"

    def _on_turn_started(self, started: pb.TurnStarted) -> None:
        turn = self._turn(started.round_number, started.participant)
        if started.attempt > turn.attempt:
            self._restart(turn, started.attempt)

    def _on_token_delta(self, delta: pb.TokenDelta) -> None:
        turn = self._turn(delta.round_number, delta.participant)
        attempt = delta.attempt or 1
        if attempt < turn.attempt or turn.done:
            return  # text of a void attempt
        if attempt > turn.attempt:
            self._restart(turn, attempt)
        turn.text += safe_text(delta.text)

    def _on_turn_failed(self, failed: pb.TurnFailed) -> None:
        turn = self._turn(failed.round_number, failed.participant)
        attempt = failed.attempt or 1
        if attempt < turn.attempt or turn.done:
            return
        what = f"attempt {attempt} failed ({failed.reason or 'error'})" + (
            f": {failed.message}" if failed.message else ""
        )
        if failed.will_retry:
            void = "" if "void" in what else "; its text is void"
            self._restart(turn, attempt + 1, note=f"{what}{void}. Retrying.")
        else:
            turn.done = True
            turn.footer = self.style.paint(f"{self.style.glyph('✗', 'x')} {what}", "red")

    # -- human seat (issue 19 part 3) --
    def _on_human_turn_awaited(self, awaited: pb.HumanTurnAwaited) -> None:
        until = time.strftime("%H:%M:%S UTC", time.gmtime(awaited.deadline.seconds))
        name = safe_text(awaited.participant)
        self._block([self._dim(f"round {awaited.round_number}: waiting for {name} (a person) until {until}")])
        self.idle_status = f"waiting for {name}'s turn (debate-engine play ID --as {name})"

    def _on_human_turn_timed_out(self, timed_out: pb.HumanTurnTimedOut) -> None:
        self._block([self.style.paint(safe_text(timed_out.message), "yellow")])

    def _on_turn_completed(self, completed: pb.TurnCompleted) -> None:
        final = completed.turn
        turn = self._turn(final.round_number, final.participant)
        if final.attempt > turn.attempt:
            self._restart(turn, final.attempt)
        text = safe_text(final.text)
        if text.startswith(turn.text):  # joined mid-turn: the rest of the text, once
            turn.text = text
        turn.done = True
        self.simulated |= final.simulated
        turn.footer = self._dim(turn_details(final)) + quote_footer(self.style, final.quotes)  # evidence
        round_turns = [t for (r, _), t in self.turns.items() if r == final.round_number]
        if all(t.done for t in round_turns):
            self.idle_status = f"the judge is scoring round {final.round_number}"

    def _on_round_assessed(self, assessed: pb.RoundAssessed) -> None:
        assessment = assessed.assessment
        number = assessment.round_number
        self.assessed.add(number)
        self.simulated |= assessment.simulated
        lines = assessment_lines(self.style, assessment, self._colour, self.cost, assessed.round_cost)
        place = self.reserved.pop(number, None)
        if place is not None:
            place.lines = lines
        else:
            self._block(lines)
        if self.round_limit and number >= self.round_limit:
            self.idle_status = "the judge is weighing the verdict"

    def _on_debate_stopped(self, stopped: pb.DebateStopped) -> None:
        self._block(stop_lines(self.style, stopped.stop))
        self.idle_status = "the judge is weighing the verdict"

    def _on_verdict_rendered(self, rendered: pb.VerdictRendered) -> None:
        self._show_verdict(rendered.verdict)

    def _on_cost_updated(self, updated: pb.CostUpdated) -> None:
        self.cost = updated

    def _on_debate_completed(self, completed: pb.DebateCompleted) -> None:
        if completed.HasField("verdict"):
            self._show_verdict(completed.verdict)
        self._end(pb.DEBATE_STATE_COMPLETED)
        if completed.HasField("cost"):
            self._block(cost_lines(self.style, completed.cost, self.simulated))

    def _on_verdict_version_rendered(self, rendered: pb.VerdictVersionRendered) -> None:
        self._settle_reserved()
        self._block(version_lines(self.style, rendered.verdict_version))

    def _on_debate_continued(self, continued: pb.DebateContinued) -> None:
        """A completed debate goes on: its rounds, scores and a new verdict follow."""
        self.finished = False
        self.verdict_shown = False
        self.round_limit = continued.round_limit
        lines = ["", self.style.paint(f"Continued: rounds {continued.first_round} to {continued.round_limit}", "bold")]
        if continued.question:
            lines.append("  follow-up question: " + safe_text(continued.question))
        self._block(lines)

    def _on_debate_failed(self, failed: pb.DebateFailed) -> None:
        self._end(failed.state or pb.DEBATE_STATE_FAILED, failed.reason)
        s = self.style
        lines = ["", s.paint(f"{s.glyph('✗', 'x')} {ending(self.state, failed.reason)}", "bold", "red")]
        if failed.message:
            lines.append("  " + safe_text(failed.message))
        self._block(lines)
        if failed.HasField("cost"):
            self._block(cost_lines(self.style, failed.cost, self.simulated))

    # -- what commands call -------------------------------------------------------------

    def notice(self, text: str) -> None:
        """A line of the client's own (a reconnect, say), printed in order with the rest."""
        self._block([self._dim(f"{self.style.glyph('↻', '*')} {text}")])
        self._pump()

    def end_from_summary(self, summary: pb.DebateSummary) -> None:
        """Ends the view when the debate is over but its final events were not seen."""
        self._end(summary.state, summary.end_reason)
        self._block(
            [
                "",
                self.style.paint(ending(summary.state, summary.end_reason), "bold"),
            ]
        )
        if summary.HasField("stop"):
            self._block(stop_lines(self.style, summary.stop))
        self._pump()

    def close(self) -> None:
        """Writes everything still held (incomplete turns are marked as interrupted)."""
        self._settle()
        self._closed = True
        if self.screen.partial:
            self.screen.write("\n")
        self._pump()

    @property
    def succeeded(self) -> bool:
        return self.finished and self.state == pb.DEBATE_STATE_COMPLETED

    # -- segments -----------------------------------------------------------------------

    def _block(self, lines: list[str] | None, status: str = "") -> Block:
        block = Block(lines, status)
        self.segments.append(block)
        return block

    def _turn(self, round_number: int, participant: str) -> TurnSegment:
        key = (round_number, participant)
        if key not in self.turns:
            self._colour(participant)
            self.turns[key] = TurnSegment(round_number, participant)
            self.segments.append(self.turns[key])
        return self.turns[key]

    def _restart(self, turn: TurnSegment, attempt: int, note: str = "") -> None:
        """A new attempt: the text of the earlier one is void."""
        if turn.started and turn.wrapper is not None:
            self.screen.write(turn.wrapper.finish())
            if note:
                self._write_note(note)
        elif note:
            turn.notes.append(note)
        turn.attempt, turn.text, turn.written = attempt, "", 0
        turn.wrapper = None

    def _show_verdict(self, verdict: common_pb2.Verdict) -> None:
        if self.verdict_shown:
            return
        self.verdict_shown = True
        self.simulated |= verdict.simulated
        self._settle_reserved()
        self._block(verdict_lines(self.style, verdict, self._colour))

    def _end(self, state: int, reason: str = "") -> None:
        self.finished = self.last_sequence >= self.ends_after
        self.state = state
        self.end_reason = reason
        self.idle_status = ""
        self._settle()

    def _settle_reserved(self) -> None:
        for place in self.reserved.values():
            place.lines = []
        self.reserved.clear()

    def _settle(self) -> None:
        self._settle_reserved()
        for turn in self.turns.values():
            if not turn.done:
                turn.done = True
                turn.footer = self.style.paint("(interrupted)", "yellow")

    # -- writing ------------------------------------------------------------------------

    def _pump(self) -> None:
        """Writes segments from the head on, as far as they are complete."""
        while self.head < len(self.segments):
            segment = self.segments[self.head]
            if isinstance(segment, Block):
                if segment.lines is None:
                    break
                for line in segment.lines:
                    self.screen.write(line + "\n")
                self.head += 1
                continue
            self._write_turn(segment)
            if not segment.done:
                break
            self.head += 1
        self.screen.flush(self._region_lines)

    def _write_turn(self, turn: TurnSegment) -> None:
        s = self.style
        index = self._colour(turn.participant)
        if not turn.started:
            turn.started = True
            p = self.participants.get(turn.participant)
            about = (
                [f"round {turn.round}"] + ([p.stance] if p and p.stance else []) + ([p.model] if p and p.model else [])
            )
            marker = s.glyph("●", "*")
            self.screen.write(
                "\n"
                + s.debater(index, f"{marker} {turn.participant}", "bold")
                + "  "
                + self._dim(" · ".join(about))
                + "\n"
            )
            for note in turn.notes:
                self._write_note(note)
        if turn.wrapper is None:
            if s.live:
                gutter, gutter_width = s.debater(index, s.glyph("  ┃ ", "  | ")), 4
            else:
                name = turn.participant.ljust(self._name_width())
                gutter, gutter_width = s.debater(index, f"  {name} {s.glyph('│', '|')} "), len(name) + 5
            turn.wrapper = Wrapper(s.width, gutter, gutter_width, lambda word: s.debater(index, word, "tint"))
        if turn.written < len(turn.text):
            self.screen.write(turn.wrapper.feed(turn.text[turn.written :]))
            turn.written = len(turn.text)
        if turn.done:
            self.screen.write(turn.wrapper.finish())
            if turn.footer:
                self.screen.write(f"  {turn.footer}\n")

    def _write_note(self, note: str) -> None:
        for line in wrapped(self.style, note, "  ", "yellow"):
            self.screen.write(line + "\n")

    def _region_lines(self) -> list[str]:
        """The live region, one terminal row a line: the partial line of the turn being
        printed, a ticker for each other debater still speaking, or what we wait for."""
        s = self.style
        lines = [self.screen.partial] if self.screen.partial else []
        if self.finished or self._closed:
            return lines
        for turn in self.segments[self.head + 1 :]:
            if isinstance(turn, TurnSegment) and turn.text and len(lines) < 8:
                index = self._colour(turn.participant)
                mark = s.glyph("✓", "done") if turn.done else s.glyph("▸", ">")
                label = f"  {s.glyph('●', '*')} {turn.participant} {mark} "
                room = s.width - cell_len(label) - 2
                tail = " ".join(turn.text.split())
                tail = tail if cell_len(tail) <= room else s.glyph("…", "...") + clip_left(tail, room - 3)
                lines.append(s.debater(index, label, "bold") + s.debater(index, tail, "tint", "dim"))
        at_head = self.segments[self.head] if self.head < len(self.segments) else None
        if isinstance(at_head, TurnSegment):
            waiting = "" if at_head.text else f"{at_head.participant} is thinking"
        else:
            waiting = at_head.status if at_head else self.idle_status
        if waiting and not self.screen.partial:
            lines.append(self._dim(f"  {s.glyph('⋯', '...')} {waiting}"))
        return lines

    # -- pieces -------------------------------------------------------------------------

    def _colour(self, name: str) -> int:
        return self.colours.setdefault(name, len(self.colours))

    def _name_width(self) -> int:
        return max((len(n) for n in self.colours), default=0)

    def _dim(self, text: str) -> str:
        return self.style.paint(text, "dim")
