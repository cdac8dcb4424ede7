"""Verdict versions' plain parts: the agreement of two verdicts (Kendall's tau-b against values
worked by hand), a cost line from ledger rows, and a continued debate's follow-up question in
the debaters' round instruction (only in the rounds it was asked for)."""

from __future__ import annotations

import pytest
from debate.accounting.v1 import accounting_pb2 as acc
from debate.common.v1 import common_pb2 as c

from services.common.llm.simulated.reading import parse_context
from services.orchestrator.context import ContextBuilder, Transcript
from services.orchestrator.verdicts import agreement, cost_line, kendall_tau_b


def verdict(winner: str = "", tie: bool = False, **scores: float) -> c.Verdict:
    return c.Verdict(
        winner=winner, tie=tie, final_scores=[c.FinalScore(debater=name, score=s) for name, s in scores.items()]
    )


@pytest.mark.parametrize(
    ("xs", "ys", "expected"),
    [
        ([1, 2, 3], [1, 2, 3], 1.0),
        ([1, 2, 3], [3, 2, 1], -1.0),
        # pairs (1,2) concordant, (1,3) concordant, (2,3) discordant: (2 - 1) / 3
        ([1, 2, 3], [1, 3, 2], 1 / 3),
        # a tie in x: pairs (1,2) tie in x only, (1,3) and (2,3) concordant: 2 / sqrt(2 * 3)
        ([1, 1, 2], [1, 2, 3], 2 / 6**0.5),
        ([5, 5, 5], [1, 2, 3], None),
        ([7], [7], None),
    ],
)
def test_kendall_tau_b_matches_hand_computed_values(xs, ys, expected):
    got = kendall_tau_b(xs, ys)
    assert got == expected if expected is None else got == pytest.approx(expected)


def test_agreement_compares_winners_and_score_orders():
    first = verdict("Ada", Ada=7.0, Milo=5.0, Zoe=3.0)
    same = agreement(verdict("Ada", Ada=8.0, Milo=6.0, Zoe=2.0), first, 1)
    assert (same.version, same.same_winner, same.rank_correlation) == (1, True, 1.0)
    assert same.mean_score_difference == pytest.approx((1 + 1 + 1) / 3)
    flipped = agreement(verdict("Zoe", Ada=3.0, Milo=5.0, Zoe=7.0), first, 1)
    assert not flipped.same_winner and flipped.rank_correlation == -1.0
    ties = agreement(verdict(tie=True, Ada=5.0, Milo=5.0), verdict(tie=True, Ada=4.0, Milo=4.0), 2)
    assert ties.same_winner and ties.rank_correlation == 1.0  # both order nothing
    one_tie = agreement(verdict(tie=True, Ada=5.0, Milo=5.0), verdict("Ada", Ada=6.0, Milo=4.0), 1)
    assert not one_tie.same_winner and one_tie.rank_correlation == 0.0


def test_a_cost_line_sums_ledger_rows_exactly():
    rows = [
        acc.UsageRecord(cost=c.Money(currency_code="USD", amount="0.1"), usage=c.TokenUsage(total_tokens=10)),
        acc.UsageRecord(cost=c.Money(currency_code="USD", amount="0.2"), usage=c.TokenUsage(total_tokens=5)),
    ]
    line = cost_line("v2", rows)
    assert (line.key, line.calls, line.usage.total_tokens, line.cost.amount) == ("v2", 2, 15, "0.3")


def test_a_follow_up_question_reaches_the_debaters_of_the_added_rounds_only():
    config = c.DebateConfig(
        topic="Should cities ban cars?",
        participants=[
            c.Participant(name="Ada", model="sim/debater", persona="an urbanist", stance="for"),
            c.Participant(name="Milo", model="sim/debater", persona="a driver", stance="against"),
        ],
        format=c.DebateFormat(round_limit=4),
        context=c.ContextSettings(max_tokens=4000, window_size=2),
    )
    builder = ContextBuilder(config)
    builder.questions.append((3, "What about deliveries?"))
    transcript = Transcript()
    for r in (1, 2):
        transcript.add(r, "Ada", f"Ada's argument of round {r}.")
        transcript.add(r, "Milo", f"Milo's argument of round {r}.")
    before = builder.build(config.participants[0], 2, transcript).messages[-1].content
    after = builder.build(config.participants[0], 3, transcript).messages[-1].content
    assert "deliveries" not in before and after.endswith("What about deliveries?")
    assert "(round 3 of 4)" in after
    # The simulated debater still reads the round, and answers the other side (not the question).
    read = parse_context(builder.build(config.participants[0], 3, transcript).messages)
    assert read.round_number == 3 and read.opponent == "Milo" and "round 2" in read.opponent_text
