"""The client's live view, fed synthetic DebateEvents (no server)."""

from __future__ import annotations

import io
import re

import pytest
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb

from services.client.panels import cost_lines
from services.client.style import Style, Wrapper, money
from services.client.view import DebateView, ending

ADA_TEXT = "Cars crowd the old streets. Pedestrian zones raised footfall by a fifth in Ghent and Pontevedra."
MILO_TEXT = "Shops die when customers cannot park. A ban punishes the elderly and the trades who need vans."
PARTICIPANTS = [
    c.Participant(name="Ada", model="sim/debater", persona="economist", stance="for"),
    c.Participant(name="Milo", model="sim/debater", persona="shopkeeper", stance="against"),
]
PLAIN = Style(color=False, unicode=True, width=80, live=False)
TTY = Style(color=True, unicode=True, width=80, live=True)
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colours only


class Events:
    """Builds a numbered event log."""

    def __init__(self) -> None:
        self.log: list[pb.DebateEvent] = []

    def add(self, **payload) -> pb.DebateEvent:
        event = pb.DebateEvent(sequence=len(self.log) + 1, debate_id="d1", **payload)
        self.log.append(event)
        return event


def chunks(text: str, size: int = 7) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def assessment(number: int, leader: str = "Ada") -> c.RoundAssessment:
    def score(name: str, base: float) -> c.DebaterScore:
        return c.DebaterScore(
            debater=name,
            weighted_total=base,
            criteria=[
                c.CriterionScore(criterion=k, score=base)
                for k in ("argument_strength", "evidence", "rebuttal", "clarity")
            ],
        )

    return c.RoundAssessment(
        round_number=number,
        leader=leader,
        judge_models=["sim/judge"],
        simulated=True,
        scores=[score("Ada", 7.5 if leader == "Ada" else 6.0), score("Milo", 6.0 if leader == "Ada" else 7.5)],
        rationale=f"Round {number}: Ada brought numbers; Milo answered with anecdotes.",
    )


def cost() -> c.DebateCost:
    def line(key: str, calls: int, prompt: int, completion: int) -> c.CostLine:
        return c.CostLine(
            key=key,
            calls=calls,
            cost=c.Money(currency_code="USD", amount="0"),
            usage=c.TokenUsage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion),
        )

    return c.DebateCost(
        debate_id="d1",
        total=c.Money(currency_code="USD", amount="0.000000"),
        usage=c.TokenUsage(prompt_tokens=3000, completion_tokens=900, total_tokens=3900),
        by_participant=[line("Ada", 3, 1000, 300), line("Milo", 3, 1000, 300)],
        by_role=[
            line("ROLE_DEBATER", 6, 2000, 600),
            line("ROLE_JUDGE", 3, 800, 200),
            line("ROLE_VERDICT", 1, 200, 100),
        ],
        by_round=[line(str(r), 3, 1000, 300) for r in (1, 2, 3)],
        by_model=[line("sim/debater", 6, 2000, 600), line("sim/judge", 4, 1000, 300)],
    )


def simultaneous_debate(rounds: int = 3, *, late_judge: bool = True) -> Events:
    """Both debaters stream at once; with late_judge, round r is scored while r+1 streams."""
    e = Events()
    e.add(state_changed=pb.DebateStateChanged(state=pb.DEBATE_STATE_RUNNING))
    for r in range(1, rounds + 1):
        e.add(round_started=pb.RoundStarted(round_number=r, participants=["Ada", "Milo"]))
        for name in ("Ada", "Milo"):
            e.add(turn_started=pb.TurnStarted(round_number=r, participant=name, model="sim/debater", attempt=1))
        for a, m in zip(chunks(f"R{r} {ADA_TEXT}"), chunks(f"R{r} {MILO_TEXT}"), strict=False):
            e.add(token_delta=pb.TokenDelta(round_number=r, participant="Ada", text=a, attempt=1))
            e.add(token_delta=pb.TokenDelta(round_number=r, participant="Milo", text=m, attempt=1))
            if (
                late_judge
                and r > 1
                and len(e.log) % 9 == 0
                and not any(
                    x.HasField("round_assessed") and x.round_assessed.assessment.round_number == r - 1 for x in e.log
                )
            ):
                e.add(round_assessed=pb.RoundAssessed(assessment=assessment(r - 1)))
        for name, text in (("Ada", ADA_TEXT), ("Milo", MILO_TEXT)):
            e.add(
                turn_completed=pb.TurnCompleted(
                    turn=c.Turn(
                        round_number=r,
                        participant=name,
                        model="sim/debater",
                        text=f"R{r} {text}",
                        attempt=1,
                        simulated=True,
                        usage=c.TokenUsage(prompt_tokens=100, completion_tokens=20, total_tokens=120),
                        finish_reason=c.FINISH_REASON_STOP,
                    )
                )
            )
        e.add(
            cost_updated=pb.CostUpdated(
                total=c.Money(currency_code="USD", amount="0"), usage=c.TokenUsage(total_tokens=120 * r)
            )
        )
        if not late_judge or r == rounds:
            e.add(round_assessed=pb.RoundAssessed(assessment=assessment(r)))
    verdict = c.Verdict(
        winner="Ada",
        confidence=0.72,
        summary="Ada's evidence carried the debate.",
        simulated=True,
        final_scores=[c.FinalScore(debater="Ada", score=7.4), c.FinalScore(debater="Milo", score=6.1)],
        judge_models=["sim/judge"],
    )
    e.add(verdict_rendered=pb.VerdictRendered(verdict=verdict))
    e.add(debate_completed=pb.DebateCompleted(verdict=verdict, cost=cost()))
    return e


def render(events, style: Style = PLAIN) -> tuple[str, DebateView]:
    out = io.StringIO()
    view = DebateView(out, style, participants=PARTICIPANTS, round_limit=3)
    for event in events:
        view.handle(event)
    view.close()
    return out.getvalue(), view


def debater_text(output: str, name: str) -> str:
    """The words printed on a debater's prefixed lines (plain mode)."""
    return " ".join(
        line.split("│", 1)[1].strip()
        for line in output.splitlines()
        if line.strip().startswith(f"{name} ") and "│" in line
    )


def test_whole_debate_in_plain_mode_reads_in_order():
    output, view = render(simultaneous_debate().log)
    assert view.succeeded
    assert "\x1b" not in output
    for r in (1, 2, 3):
        assert f"R{r} {ADA_TEXT}" in debater_text(output, "Ada")
        assert f"R{r} {MILO_TEXT}" in debater_text(output, "Milo")
    # each round: header, both turns, then its scores, before the next round's header
    positions = [
        output.index(marker)
        for marker in (
            "Round 1 of 3",
            "Round 1 scores",
            "Round 2 of 3",
            "Round 2 scores",
            "Round 3 of 3",
            "Round 3 scores",
            "Verdict",
            "Cost",
        )
    ]
    assert positions == sorted(positions)
    round1 = output[output.index("Round 1 of 3") : output.index("Round 1 scores")]
    assert "R1 Cars" in round1 and "R1 Shops" in round1
    assert "leader: Ada" in output
    assert "Winner: Ada" in output and "72%" in output
    assert "total" in output and "sim/debater" in output and "simulated models" in output


def test_each_debater_turn_is_one_block_even_when_streams_interleave():
    output, _ = render(simultaneous_debate(1).log)
    lines = [line for line in output.splitlines() if "│" in line]
    speakers = [line.split("│")[0].strip() for line in lines]
    assert speakers == sorted(speakers, key=["Ada", "Milo"].index)


def screen(raw: str) -> list[str]:
    """What a terminal shows after `raw`: lines, carriage returns, cursor up, erase below."""
    lines, row, col = [""], 0, 0
    for match in re.finditer(r"\x1b\[([\d;]*)([A-Za-z])|\r|\n|[^\x1b\r\n]+", raw):
        text, code = match.group(0), match.group(2)
        if text == "\r":
            col = 0
        elif text == "\n":
            row, col = row + 1, 0
            lines += [""] * (row + 1 - len(lines))
        elif code == "A":
            row = max(0, row - int(match.group(1) or 1))
        elif code == "J":
            lines[row] = lines[row][:col]
            del lines[row + 1 :]
        elif code is None:
            lines[row] = lines[row][:col] + text + lines[row][col + len(text) :]
            col += len(text)
    return lines


def test_tokens_appear_live_for_every_debater_on_a_tty():
    out = io.StringIO()
    view = DebateView(out, TTY, participants=PARTICIPANTS, round_limit=1)
    e = Events()
    view.handle(e.add(round_started=pb.RoundStarted(round_number=1, participants=["Ada", "Milo"])))
    view.handle(e.add(turn_started=pb.TurnStarted(round_number=1, participant="Ada", attempt=1)))
    view.handle(e.add(turn_started=pb.TurnStarted(round_number=1, participant="Milo", attempt=1)))
    shown = ""
    for word in ["Cars ", "crowd ", "the ", "old ", "streets. "]:
        view.handle(e.add(token_delta=pb.TokenDelta(round_number=1, participant="Ada", text=word, attempt=1)))
        now = screen(out.getvalue())[-1]
        assert now.startswith("  ┃ ") and len(now) > len(shown)  # each delta shows at once
        shown = now
    assert shown == "  ┃ Cars crowd the old streets."
    # Milo speaks at the same time: a live ticker under Ada's text
    view.handle(e.add(token_delta=pb.TokenDelta(round_number=1, participant="Milo", text="Shops die ", attempt=1)))
    assert screen(out.getvalue())[-2:] == ["  ┃ Cars crowd the old streets.", "  ● Milo ▸ Shops die"]
    # Ada done: her turn stays above, Milo's turn is printed as a block and goes on live
    view.handle(
        e.add(
            turn_completed=pb.TurnCompleted(
                turn=c.Turn(
                    round_number=1,
                    participant="Ada",
                    text="Cars crowd the old streets. ",
                    attempt=1,
                    usage=c.TokenUsage(completion_tokens=6),
                )
            )
        )
    )
    view.handle(e.add(token_delta=pb.TokenDelta(round_number=1, participant="Milo", text="when ", attempt=1)))
    lines = screen(out.getvalue())
    assert lines[-5:] == [
        "  ┃ Cars crowd the old streets.",
        "  6 tokens",
        "",
        "● Milo  round 1 · against · sim/debater",
        "  ┃ Shops die when",
    ]
    view.handle(e.add(token_delta=pb.TokenDelta(round_number=1, participant="Milo", text="customers ", attempt=1)))
    assert screen(out.getvalue())[-1] == "  ┃ Shops die when customers"
    assert sum("Cars crowd" in line for line in screen(out.getvalue())) == 1


def test_the_tty_view_ends_with_every_turn_once_and_no_live_lines():
    out = io.StringIO()
    view = DebateView(out, TTY, participants=PARTICIPANTS, round_limit=3)
    for event in simultaneous_debate().log:
        view.handle(event)
    view.close()
    lines = screen(ANSI.sub("", out.getvalue()))
    spoken = " ".join(line.removeprefix("  ┃ ") for line in lines if line.startswith("  ┃ "))
    assert spoken == " ".join(f"R{r} {text}" for r in (1, 2, 3) for text in (ADA_TEXT, MILO_TEXT))
    assert not [line for line in lines if "▸" in line or "⋯" in line]
    assert "Winner: Ada" in "\n".join(lines)


def test_plain_mode_writes_whole_lines_only():
    out = io.StringIO()
    view = DebateView(out, PLAIN, participants=PARTICIPANTS)
    e = Events()
    view.handle(e.add(turn_started=pb.TurnStarted(round_number=1, participant="Ada", attempt=1)))
    for piece in chunks(ADA_TEXT * 3, 5):
        view.handle(e.add(token_delta=pb.TokenDelta(round_number=1, participant="Ada", text=piece, attempt=1)))
        assert out.getvalue().endswith("\n") or not out.getvalue()
    assert re.search(r"Ada +│ Cars crowd", out.getvalue())  # lines were written before the turn ended


def test_a_repeated_event_prints_nothing():
    log = simultaneous_debate(1).log
    once, _ = render(log)
    heartbeat = pb.DebateEvent(sequence=20, debate_id="d1", heartbeat=pb.Heartbeat())  # repeats the last sequence
    twice, _ = render(log[:20] + [heartbeat] + log[10:] + log)
    assert once == twice


def test_a_failed_attempt_is_marked_void_and_the_retry_shown():
    e = Events()
    e.add(turn_started=pb.TurnStarted(round_number=1, participant="Ada", attempt=1))
    e.add(token_delta=pb.TokenDelta(round_number=1, participant="Ada", text="Lost words ", attempt=1))
    e.add(
        turn_failed=pb.TurnFailed(
            round_number=1, participant="Ada", attempt=1, reason="PROVIDER_STALLED", will_retry=True
        )
    )
    e.add(token_delta=pb.TokenDelta(round_number=1, participant="Ada", text="Lost late ", attempt=1))
    e.add(token_delta=pb.TokenDelta(round_number=1, participant="Ada", text="Fresh words ", attempt=2))
    e.add(
        turn_completed=pb.TurnCompleted(turn=c.Turn(round_number=1, participant="Ada", text="Fresh words ", attempt=2))
    )
    output, _ = render(e.log)
    assert "PROVIDER_STALLED" in output and "void" in output
    assert "Lost late" not in output
    assert "Fresh words" in output


def test_joining_mid_turn_prints_the_rest_from_the_completed_turn():
    e = Events()
    e.add(token_delta=pb.TokenDelta(round_number=2, participant="Milo", text="Shops die ", attempt=1))
    e.add(
        turn_completed=pb.TurnCompleted(
            turn=c.Turn(round_number=2, participant="Milo", text="Shops die when customers cannot park.", attempt=1)
        )
    )
    output, _ = render(e.log)
    assert "Shops die when customers cannot park." in debater_text(output, "Milo")


def test_a_failed_debate_ends_the_view_with_its_reason():
    e = Events()
    e.add(round_started=pb.RoundStarted(round_number=1, participants=["Ada", "Milo"]))
    e.add(token_delta=pb.TokenDelta(round_number=1, participant="Ada", text="Half a ", attempt=1))
    e.add(
        debate_failed=pb.DebateFailed(
            state=pb.DEBATE_STATE_BUDGET_EXCEEDED,
            reason="BUDGET_EXCEEDED",
            message="the next turn would pass the $0.01 cap",
            cost=cost(),
        )
    )
    output, view = render(e.log)
    assert view.finished and not view.succeeded
    assert "✗ debate stopped: its budget is spent\n  the next turn would pass the $0.01 cap" in output
    assert "(interrupted)" in output and "Cost" in output


@pytest.mark.parametrize(
    "state, reason, expected",
    [
        # Issue 20, item 8: a cancelled debate said "debate ended CANCELLED (CANCELLED)".
        (pb.DEBATE_STATE_CANCELLED, "CANCELLED", "debate cancelled"),
        (
            pb.DEBATE_STATE_CANCELLED,
            "CANCELLED: interrupted from the terminal",
            "debate cancelled (interrupted from the terminal)",
        ),
        (pb.DEBATE_STATE_FAILED, "PROVIDER_ERROR", "debate failed (PROVIDER_ERROR)"),
        (pb.DEBATE_STATE_BUDGET_EXCEEDED, "BUDGET_EXCEEDED", "debate stopped: its budget is spent"),
        (pb.DEBATE_STATE_COMPLETED, "", "debate completed"),
    ],
)
def test_how_a_debate_ended_is_said_once(state, reason, expected):
    assert ending(state, reason) == expected


def test_a_cancelled_debate_says_so_once(capsys):
    e = Events()
    e.add(round_started=pb.RoundStarted(round_number=1, participants=["Ada", "Milo"]))
    e.add(
        debate_failed=pb.DebateFailed(
            state=pb.DEBATE_STATE_CANCELLED, reason="CANCELLED", message="cancelled from the command line"
        )
    )
    output, _ = render(e.log)
    assert output.count("cancelled") == 2, output  # the state, then the reason given
    assert "✗ debate cancelled\n  cancelled from the command line" in output and "CANCELLED" not in output


def test_model_text_cannot_drive_the_terminal():
    e = Events()
    e.add(token_delta=pb.TokenDelta(round_number=1, participant="Ada", text="hi \x1b[2Jthere\x07 ", attempt=1))
    e.add(
        token_delta=pb.TokenDelta(round_number=1, participant="Ada", text="\u202egnihton\u202c 👩\u200d🍳 ", attempt=1)
    )
    output, _ = render(e.log)
    assert "\x1b" not in output and "\x07" not in output
    assert "\u202e" not in output and "gnihton 👩\u200d🍳" in output  # no override; the chef stays whole


def test_wrapper_breaks_between_words_within_the_width():
    wrapper = Wrapper(30, "> ", 2)
    text = "".join(wrapper.feed(piece) for piece in chunks(ADA_TEXT, 3)) + wrapper.finish()
    lines = text.rstrip("\n").split("\n")
    assert all(len(line) <= 30 for line in lines)
    assert " ".join(line[2:] for line in lines) == ADA_TEXT


def test_money_is_exact_decimal_text():
    assert money("0.000000") == "$0.00"
    assert money("0.0014") == "$0.0014"
    assert money("18.000000") == "$18.00"
    assert money("") == "$0.00"
    assert money("1.5", "EUR") == "1.50 EUR"


def test_the_cost_table_says_where_counts_and_prices_come_from():
    simulated_only = "\n".join(cost_lines(PLAIN, cost(), simulated=True))
    assert "every token count above comes" in simulated_only
    assert "providers reported" not in simulated_only

    mixed = cost()
    mixed.by_model.append(
        c.CostLine(
            key="local/llama3",
            calls=3,
            cost=c.Money(currency_code="USD", amount="0.0001"),
            price_source="declared-local",
        )
    )
    text = " ".join(" ".join(cost_lines(PLAIN, mixed, simulated=True)).split())
    assert "their token counts come from the real tokenizer" in text
    assert "Other models' counts are the usage their providers reported." in text
    assert "local/llama3 is priced as declared for endpoint 'local' in LLM_ENDPOINTS." in text


def test_verdict_and_intro_wording():
    """Issue 20, item 8: "A tie   confidence 70%" and "1 rounds"."""
    from services.client.panels import verdict_lines
    from services.client.session import intro_lines

    s = Style(color=False)
    tie = verdict_lines(s, c.Verdict(tie=True, confidence=0.7), lambda name: 0)
    assert tie[2] == "  ★ A tie (confidence 70%)"
    won = verdict_lines(s, c.Verdict(winner="Ada", confidence=0.72), lambda name: 0)
    assert won[2] == "  ★ Winner: Ada (confidence 72%)"
    for rounds, said in ((1, "1 round · "), (3, "3 rounds · ")):
        config = c.DebateConfig(topic="t", format=c.DebateFormat(round_limit=rounds))
        assert said in intro_lines(s, config)[3]
