"""The terminal client's cost figures after each round (issue 20, item 4): the round's own cost,
from RoundAssessed (the line the cost table will show for the round, the judge's calls
included), and the running total from the CostUpdated logged before it."""

from __future__ import annotations

import io

from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb

from services.client.style import Style
from services.client.view import DebateView

PLAIN = Style(color=False, unicode=True, width=100, live=False)
PEOPLE = [c.Participant(name="Ada", model="sim/debater"), c.Participant(name="Milo", model="sim/debater")]


def usd(amount: str) -> c.Money:
    return c.Money(currency_code="USD", amount=amount)


def scored(round_number: int, round_cost: c.CostLine | None) -> pb.RoundAssessed:
    assessment = c.RoundAssessment(
        round_number=round_number,
        leader="Ada",
        scores=[
            c.DebaterScore(
                debater="Ada", weighted_total=7.0, criteria=[c.CriterionScore(criterion="clarity", score=7)]
            ),
            c.DebaterScore(
                debater="Milo", weighted_total=6.0, criteria=[c.CriterionScore(criterion="clarity", score=6)]
            ),
        ],
    )
    return pb.RoundAssessed(assessment=assessment, round_cost=round_cost)


def render(*payloads: dict) -> str:
    out = io.StringIO()
    view = DebateView(out, PLAIN, participants=PEOPLE, round_limit=2)
    for sequence, payload in enumerate(payloads, start=1):
        view.handle(pb.DebateEvent(sequence=sequence, **payload))
    view.close()
    return out.getvalue()


def test_each_round_shows_its_own_cost_and_the_running_total_with_the_judge():
    round_cost = c.CostLine(key="1", usage=c.TokenUsage(total_tokens=3805), cost=usd("0.0123"), calls=3)
    text = render(
        {"round_started": pb.RoundStarted(round_number=1, participants=["Ada", "Milo"])},
        {"cost_updated": pb.CostUpdated(total=usd("0.0123"), usage=c.TokenUsage(total_tokens=3805))},
        {"round_assessed": scored(1, round_cost)},
    )
    assert "round 1 cost $0.0123 · 3,805 tokens; cost so far $0.0123 · 3,805 tokens" in text


def test_a_round_logged_before_rounds_carried_their_cost_shows_the_running_total_only():
    text = render(
        {"cost_updated": pb.CostUpdated(total=usd("0"), usage=c.TokenUsage(total_tokens=577))},
        {"round_assessed": scored(1, None)},
    )
    assert "cost so far $0.00 · 577 tokens" in text
    assert "round 1 cost" not in text
