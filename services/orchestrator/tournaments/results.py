"""A leg's result from its debate's verdict, and a side-swapped match's result from its two legs.

A match's result (the `Match` message says the same): a model wins the match when it won more of
the two debates than the other (two wins, or a win and a tie), or as many and its margin summed
over both debates is positive (margin: its final score minus the other's, 0 to 10 scale); a tie
otherwise. So a model that won only on the easier side, by less than it lost on the other, does
not win the match.
"""

from __future__ import annotations

from debate.common.v1 import common_pb2 as common
from debate.orchestrator.v1 import tournament_pb2 as tpb

from services.orchestrator.tournaments.plan import seat_names

MARGIN_EPSILON = 1e-9  # summed margins closer to 0 than this are a tie


def leg_result(match: tpb.Match, leg: tpb.MatchLeg, verdict: common.Verdict) -> None:
    """Fills the leg's winner_model, tie and margin (model_a's) from its debate's verdict."""
    name_a, name_b = seat_names(match.model_a, match.model_b)
    scores = {s.debater: s.score for s in verdict.final_scores}
    leg.margin = scores.get(name_a, 0.0) - scores.get(name_b, 0.0)
    leg.tie = verdict.tie or not verdict.winner
    leg.winner_model = "" if leg.tie else {name_a: match.model_a, name_b: match.model_b}.get(verdict.winner, "")


def decide(match: tpb.Match) -> None:
    """Sets the match's winner_model, tie and margin from its two decided legs."""
    wins_a = sum(leg.winner_model == match.model_a for leg in match.legs)
    wins_b = sum(leg.winner_model == match.model_b for leg in match.legs)
    match.margin = sum(leg.margin for leg in match.legs)
    if wins_a != wins_b:
        match.winner_model = match.model_a if wins_a > wins_b else match.model_b
    elif abs(match.margin) > MARGIN_EPSILON:
        match.winner_model = match.model_a if match.margin > 0 else match.model_b
    else:
        match.winner_model = ""
    match.tie = not match.winner_model


def score_of_a(match: tpb.Match) -> float:
    """model_a's points from a decided match: 1 a win, 0.5 a tie, 0 a loss."""
    return 0.5 if match.tie else float(match.winner_model == match.model_a)
