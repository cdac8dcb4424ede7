"""Judge calibration and audits (services/orchestrator/judge_report.py) and vote tallies
(votes.py) as plain Python, over scripted verdicts, votes and assessments."""

from __future__ import annotations

import pytest
from debate.common.v1 import common_pb2 as c

from services.orchestrator.judge_report import Thresholds, audit, build_report, calibrate
from services.orchestrator.votes import TIE, tally


def verdict(winner: str = "", tie: bool = False, models: tuple[str, ...] = ("sim/judge",)) -> c.Verdict:
    return c.Verdict(winner=winner, tie=tie, judge_models=list(models))


def test_a_tally_has_a_majority_only_past_half_of_the_votes():
    assert tally(["a", "b"], {("a", False): 2, ("b", False): 1}).majority == ("a", False)
    assert tally(["a", "b"], {("a", False): 2, TIE: 2}).majority is None
    assert tally(["a", "b"], {TIE: 3, ("b", False): 2}).majority == TIE
    lines = tally(["a", "b"], {("b", False): 1}).counts
    assert lines == ((("a", False), 0), (("b", False), 1), (TIE, 0))


def test_calibration_counts_debates_with_enough_votes_and_a_strict_majority():
    verdicts = [
        ("d1", verdict("a")),  # 3 for a: agrees
        ("d2", verdict("a")),  # 2 b, 1 a: disagrees
        ("d3", verdict("b")),  # only 2 votes
        ("d4", verdict("a")),  # 2 a, 2 b: no majority
        ("d5", verdict(tie=True)),  # 3 tie of 4: agrees
        ("d6", verdict("a", models=("m1", "m2"))),  # a panel: 3 b of 3, disagrees
        ("d7", verdict("a")),  # no votes at all
    ]
    votes = {
        "d1": {("a", False): 3},
        "d2": {("b", False): 2, ("a", False): 1},
        "d3": {("b", False): 2},
        "d4": {("a", False): 2, ("b", False): 2},
        "d5": {TIE: 3, ("a", False): 1},
        "d6": {("b", False): 3},
    }
    assert calibrate(verdicts, votes, 3) == {"sim/judge": (3, 2), "m1 + m2": (1, 0)}
    assert calibrate(verdicts, votes, 2) == {"sim/judge": (4, 3), "m1 + m2": (1, 0)}
    reports = {r.judge: r for r in build_report(verdicts, votes, [], [], Thresholds(min_votes=3))}
    assert reports["sim/judge"].calibration == pytest.approx(2 / 3) and reports["m1 + m2"].calibration == 0.0


def call(model: str, ordering: tuple[str, ...], totals: dict[str, float], accepted: bool = True) -> c.JudgeCall:
    return c.JudgeCall(model=model, ordering=list(ordering), accepted=accepted, totals=totals if accepted else {})


def turn(round_number: int, name: str, tokens: int) -> c.Turn:
    return c.Turn(round_number=round_number, participant=name, usage=c.TokenUsage(completion_tokens=tokens))


def test_the_audit_compares_within_rounds_and_counts_each_round_once():
    # Three rounds of a and b; "long" scores the longer turn higher, "first" the first shown,
    # "fair" gives a the same lead whatever its length or position.
    lengths = {1: (100, 50), 2: (40, 90), 3: (70, 60)}
    turns = [("d", turn(r, n, t)) for r, (ta, tb) in lengths.items() for n, t in (("a", ta), ("b", tb))]
    assessments = []
    for r, (ta, tb) in lengths.items():
        long_totals = {"a": 5.0 + (ta > tb), "b": 5.0 + (tb > ta)}
        calls = []
        for ordering in (("a", "b"), ("b", "a")):
            calls.append(call("long", ordering, long_totals))
            calls.append(call("first", ordering, {ordering[0]: 8.0, ordering[1]: 3.0}))
            calls.append(call("fair", ordering, {"a": 6.0, "b": 4.0}))
        calls.append(call("fair", ("a", "b"), {}, accepted=False))  # a refused answer: not counted
        assessments.append(
            ("d", c.RoundAssessment(round_number=r, calls=calls, judge_models=["long", "first", "fair"]))
        )
    # one model alone in two orderings that disagreed in one round of two
    for r, agreement in ((1, 0.0), (2, 1.0)):
        calls = [call("solo", o, {"a": 1.0, "b": 2.0}) for o in (("a", "b"), ("b", "a"))]
        assessments.append(
            ("e", c.RoundAssessment(round_number=r, calls=calls, judge_models=["solo"], ordering_agreement=agreement))
        )
    result = audit(assessments, turns)
    long_length, long_position, _, _ = result["long"]
    assert (long_length.rho, long_length.points, long_position.rho) == (1.0, 3, 0.0)
    first_length, first_position, _, _ = result["first"]
    assert (first_position.rho, first_position.points, first_length.rho) == (-1.0, 3, 0.0)
    fair_length, fair_position, _, rounds = result["fair"]
    # a leads in every round: longer in rounds 1 and 3, shorter in round 2
    assert fair_length.rho == pytest.approx((1 - 1 + 1) / 3, abs=1e-4) and fair_position.rho == 0.0 and rounds == 0
    assert result["solo"][2:] == (0.5, 2)  # rounds judged alone in several orderings
    flagged = {
        r.judge: r.flags
        for r in build_report([], {}, assessments, turns, Thresholds(significance=0.3, max_ordering_disagreement=0.4))
    }
    assert flagged == {"long": ["length"], "first": ["position"], "fair": [], "solo": ["ordering"]}
