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
so the region is erased by moving up its length. Elsewhere (CI logs, pipes) only whole lines
are written, each of a debater's lines prefixed with its name.

Events are de-duplicated by their sequence number, so a resumed stream never prints twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO

from debate.common.v1 import common_pb2
from debate.orchestrator.v1 import orchestrator_pb2

from services.client.style import (
    Style,
    Wrapper,
    cell_len,
    clip_left,
    count,
    money,
    safe_text,
    table,
)

pb = orchestrator_pb2
TERMINAL_STATES = {
    pb.DEBATE_STATE_COMPLETED,
    pb.DEBATE_STATE_FAILED,
    pb.DEBATE_STATE_CANCELLED,
    pb.DEBATE_STATE_BUDGET_EXCEEDED,
}


def state_name(state: int) -> str:
    return pb.DebateState.Name(state).removeprefix("DEBATE_STATE_") if state in pb.DebateState.values() else str(state)


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
        self.finished = False
        self.state = pb.DEBATE_STATE_UNSPECIFIED
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
        self._line = ""  # the current partial line (on a TTY, shown in the live region)
        self._done_lines: list[str] = []  # whole lines not yet written
        self._region: list[str] = []  # the live region on screen (TTY only)
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
        details = [f"{count(final.usage.completion_tokens)} tokens"]
        if final.cost.amount and any(c not in "0." for c in final.cost.amount):
            details.append(money(final.cost.amount, final.cost.currency_code))
        if final.finish_reason == common_pb2.FINISH_REASON_LENGTH:
            details.append("cut at the turn's token limit")
        elif final.finish_reason == common_pb2.FINISH_REASON_CANCELLED:
            details.append("cancelled")
        if final.attempt > 1:
            details.append(f"attempt {final.attempt}")
        turn.footer = self._dim(" · ".join(details))
        round_turns = [t for (r, _), t in self.turns.items() if r == final.round_number]
        if all(t.done for t in round_turns):
            self.idle_status = f"the judge is scoring round {final.round_number}"

    def _on_round_assessed(self, assessed: pb.RoundAssessed) -> None:
        assessment = assessed.assessment
        number = assessment.round_number
        self.assessed.add(number)
        self.simulated |= assessment.simulated
        lines = self._assessment_lines(assessment)
        place = self.reserved.pop(number, None)
        if place is not None:
            place.lines = lines
        else:
            self._block(lines)
        if self.round_limit and number >= self.round_limit:
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
            self._block(self._cost_lines(completed.cost))

    def _on_debate_failed(self, failed: pb.DebateFailed) -> None:
        self._end(failed.state or pb.DEBATE_STATE_FAILED, failed.reason)
        s = self.style
        text = f"{s.glyph('✗', 'x')} debate ended {state_name(self.state)}"
        if failed.reason:
            text += f" ({failed.reason})"
        lines = ["", s.paint(text, "bold", "red")]
        if failed.message:
            lines.append("  " + safe_text(failed.message))
        self._block(lines)
        if failed.HasField("cost"):
            self._block(self._cost_lines(failed.cost))

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
                self.style.paint(
                    f"debate ended {state_name(summary.state)}"
                    f"{': ' + summary.end_reason if summary.end_reason else ''}",
                    "bold",
                ),
            ]
        )
        self._pump()

    def close(self) -> None:
        """Writes everything still held (incomplete turns are marked as interrupted)."""
        self._settle()
        self._closed = True
        if self._line:
            self._write("\n")
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
            self._write(turn.wrapper.finish())
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
        self._block(self._verdict_lines(verdict))

    def _end(self, state: int, reason: str = "") -> None:
        self.finished = True
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
                    self._write(line + "\n")
                self.head += 1
                continue
            self._write_turn(segment)
            if not segment.done:
                break
            self.head += 1
        self._flush()

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
            self._write(
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
            self._write(turn.wrapper.feed(turn.text[turn.written :]))
            turn.written = len(turn.text)
        if turn.done:
            self._write(turn.wrapper.finish())
            if turn.footer:
                self._write(f"  {turn.footer}\n")

    def _write_note(self, note: str) -> None:
        for line in self._wrapped(note, "  ", "yellow"):
            self._write(line + "\n")

    def _write(self, text: str) -> None:
        """Queues text; whole lines become permanent at the next flush, a partial one waits."""
        head, newline, self._line = (self._line + text).rpartition("\n")
        if newline:
            self._done_lines.append(head + "\n")

    def _flush(self) -> None:
        """Plain: writes the whole lines. TTY: also redraws the live region under them."""
        lines, self._done_lines = "".join(self._done_lines), []
        if not self.style.live:
            self.out.write(lines)
        else:
            region = self._region_lines()
            if lines or region != self._region:
                self.out.write(self._erase_region() + lines + "\n".join(region))
                self._region = region
        self.out.flush()

    def _erase_region(self) -> str:
        """Moves to the region's first row and clears to the end of the screen."""
        if not self._region:
            return ""
        up = len(self._region) - 1
        return "\r" + (f"\x1b[{up}A" if up else "") + "\x1b[J"

    def _region_lines(self) -> list[str]:
        """The live region, one terminal row a line: the partial line of the turn being
        printed, a ticker for each other debater still speaking, or what we wait for."""
        s = self.style
        lines = [self._line] if self._line else []
        if self.finished or self._closed:
            return lines
        for turn in self.segments[self.head + 1 :]:
            if isinstance(turn, TurnSegment) and turn.text and len(lines) < 8:
                index = self._colour(turn.participant)
                label = f"  {s.glyph('●', '*')} {turn.participant} {s.glyph('✓', 'done') if turn.done else s.glyph('▸', '>')} "
                room = s.width - cell_len(label) - 2
                tail = " ".join(turn.text.split())
                tail = tail if cell_len(tail) <= room else s.glyph("…", "...") + clip_left(tail, room - 3)
                lines.append(s.debater(index, label, "bold") + s.debater(index, tail, "tint", "dim"))
        at_head = self.segments[self.head] if self.head < len(self.segments) else None
        if isinstance(at_head, TurnSegment):
            waiting = "" if at_head.text else f"{at_head.participant} is thinking"
        else:
            waiting = at_head.status if at_head else self.idle_status
        if waiting and not self._line:
            lines.append(self._dim(f"  {s.glyph('⋯', '...')} {waiting}"))
        return lines

    # -- pieces -------------------------------------------------------------------------

    def _colour(self, name: str) -> int:
        return self.colours.setdefault(name, len(self.colours))

    def _name_width(self) -> int:
        return max((len(n) for n in self.colours), default=0)

    def _dim(self, text: str) -> str:
        return self.style.paint(text, "dim")

    def _name(self, name: str, *extra: str) -> str:
        return self.style.debater(self._colour(name), name, *extra)

    def _wrapped(self, text: str, indent: str = "  ", *styles: str) -> list[str]:
        wrapper = Wrapper(self.style.width, indent, len(indent), lambda w: self.style.paint(w, *styles))
        return (wrapper.feed(safe_text(text)) + wrapper.finish()).rstrip("\n").split("\n") if text.strip() else []

    def _assessment_lines(self, assessment: common_pb2.RoundAssessment) -> list[str]:
        s = self.style
        scores = list(assessment.scores)
        names = [score.debater for score in scores]
        criteria: list[str] = []
        for score in scores:
            criteria += [c.criterion for c in score.criteria if c.criterion not in criteria]
        by_debater = {score.debater: {c.criterion: c.score for c in score.criteria} for score in scores}
        rows = [
            [criterion.replace("_", " ")] + [f"{by_debater[n].get(criterion, 0):.1f}" for n in names]
            for criterion in criteria
        ]
        rows.append(["total"] + [f"{score.weighted_total:.2f}" for score in scores])
        total_row = len(rows) - 1

        def paint(row: int, column: int, cell: str) -> str:
            if row < 0:
                return s.debater(self._colour(names[column - 1]), cell, "bold") if column else s.paint(cell, "bold")
            if column == 0:
                return s.paint(cell, "bold") if row == total_row else cell
            name = names[column - 1]
            if row == total_row:
                return (
                    s.debater(self._colour(name), cell, "bold") if name == assessment.leader else s.paint(cell, "bold")
                )
            return cell

        judges = ", ".join(assessment.judge_models)
        lines = [
            "",
            s.paint(f"  Round {assessment.round_number} scores", "bold")
            + (self._dim(f"  judged by {judges}") if judges else ""),
        ]
        lines += table(s, ["criterion", *(n[:14] for n in names)], rows, paint=paint)
        star = s.glyph("★", "*")
        if assessment.tie or not assessment.leader:
            lines.append(f"  {star} " + s.paint("tie", "bold"))
        else:
            lines.append(f"  {star} leader: " + self._name(assessment.leader, "bold"))
        agreement = []
        if len(assessment.judge_models) > 1:
            agreement.append(f"judges agree {assessment.judge_agreement:.0%}")
        if assessment.ordering_agreement:
            agreement.append(f"orderings agree {assessment.ordering_agreement:.0%}")
        if agreement:
            lines.append(self._dim("  " + " · ".join(agreement)))
        lines += self._wrapped(assessment.rationale, "  ", "dim")
        if self.cost is not None and self.cost.HasField("total"):
            usage = self.cost.usage
            lines.append(
                self._dim(
                    f"  cost so far {money(self.cost.total.amount, self.cost.total.currency_code)}"
                    f" · {count(usage.total_tokens)} tokens"
                )
            )
        return lines

    def _verdict_lines(self, verdict: common_pb2.Verdict) -> list[str]:
        s = self.style
        lines = ["", s.rule("Verdict")]
        if verdict.tie or not verdict.winner:
            lines.append("  " + s.paint("A tie", "bold"))
        else:
            lines.append(f"  {s.glyph('★', '*')} Winner: " + self._name(verdict.winner, "bold"))
        lines[-1] += self._dim(f"   confidence {verdict.confidence:.0%}")
        if verdict.final_scores:
            width = max(len(f.debater) for f in verdict.final_scores)
            for final in verdict.final_scores:
                filled = round(max(0.0, min(10.0, final.score)) * 2)
                bar = s.debater(self._colour(final.debater), s.glyph("█", "#") * filled) + self._dim(
                    s.glyph("░", ".") * (20 - filled)
                )
                lines.append(f"  {self._name(final.debater.ljust(width))}  {bar}  {final.score:.2f}")
        lines.append("")
        lines += self._wrapped(verdict.summary)
        if verdict.judge_models:
            lines.append(self._dim(f"  judged by {', '.join(verdict.judge_models)}"))
        return lines

    def _cost_lines(self, cost: common_pb2.DebateCost) -> list[str]:
        s = self.style
        rows: list[list[str] | str | None] = []

        def add(title: str, cost_lines, label=lambda key: key) -> None:
            if cost_lines:
                rows.append(title)
                rows.extend(
                    [
                        f"  {label(line.key)}",
                        count(line.calls),
                        count(line.usage.prompt_tokens),
                        count(line.usage.completion_tokens),
                        count(line.usage.total_tokens),
                        money(line.cost.amount, line.cost.currency_code),
                    ]
                    for line in cost_lines
                )

        add("by participant", cost.by_participant)
        add("by role", cost.by_role, lambda key: key.removeprefix("ROLE_").lower())
        # round 0 holds what belongs to no round, the verdict: listed last
        by_round = sorted(cost.by_round, key=lambda line: (line.key == "0", int(line.key) if line.key.isdigit() else 0))
        add("by round", by_round, lambda key: ("verdict" if key == "0" else f"round {key}") if key.isdigit() else key)
        add("by model", cost.by_model)
        calls = sum(line.calls for line in cost.by_model) or sum(line.calls for line in cost.by_role)
        rows.append(None)
        rows.append(
            [
                "total",
                count(calls),
                count(cost.usage.prompt_tokens),
                count(cost.usage.completion_tokens),
                count(cost.usage.total_tokens),
                money(cost.total.amount, cost.total.currency_code),
            ]
        )
        last = len(rows) - 1
        lines = ["", s.rule("Cost")]
        lines += table(
            s,
            ["", "calls", "prompt tok", "completion tok", "total tok", "cost"],
            rows,
            paint=lambda r, c, cell: s.paint(cell, "bold") if r in (-1, last) else cell,
        )
        budget = cost.budget
        if budget.HasField("cap") and budget.cap.amount:
            lines.append(
                f"  budget {money(budget.cap.amount, budget.cap.currency_code)}: spent "
                f"{money(budget.spent.amount, budget.spent.currency_code)}, remaining "
                f"{money(budget.remaining.amount, budget.remaining.currency_code)}"
            )
        simulated = self.simulated or any(line.key.startswith("sim/") for line in cost.by_model)
        if simulated:
            lines.append(self._dim("  The built-in simulated models (sim/...) cost $0; every token count above comes"))
            lines.append(self._dim("  from the real tokenizer, exactly as a paid model's would."))
        if cost.usage.estimated:
            lines.append(self._dim("  Some counts were estimated with our tokenizer: a provider reported no usage."))
        return lines
