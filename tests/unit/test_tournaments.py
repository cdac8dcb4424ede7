"""Tournaments' domain code as plain Python: the simulated debater's quality, the round robin's
layout, a side-swapped match's result, and the Bradley-Terry ratings."""

from __future__ import annotations

import statistics
from decimal import Decimal

import pytest
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import tournament_pb2 as tpb

from services.common.debate_rules import ModelRules
from services.common.errors import InvalidArgument
from services.common.llm.simulated.quality import apply_quality, debater_quality, with_quality
from services.common.llm.simulated.reading import DebateContext
from services.common.llm.simulated.writer import write_debate_turn
from services.common.pricing import PriceBook
from services.judge.simulated_judge import features, scores
from services.orchestrator.config import Limits
from services.orchestrator.settings import OrchestratorSettings
from services.orchestrator.tournaments.plan import debate_config, pairings, seat_names, validate_tournament
from services.orchestrator.tournaments.ratings import Outcome, fit_ratings
from services.orchestrator.tournaments.results import decide, leg_result, score_of_a


# -- the simulated debater's quality ----------------------------------------------------------
def test_a_quality_is_read_from_the_model_name_and_plain_names_have_none():
    assert debater_quality("sim/debater-strong") == 0.9
    assert debater_quality("sim/debater-weak") == 0.1
    assert debater_quality("sim/debater@q=0.7") == 0.7
    assert debater_quality("sim/debater") is None and debater_quality("sim/debater@q=2") is None
    text = "[simulated] One. Two. Three."
    assert with_quality("sim/debater", text, 1) == text


def _mean_judged(model: str, seeds: range) -> float:
    values = []
    for seed in seeds:
        for side in ("for", "against"):
            ctx = DebateContext(
                topic="Cities should ban cars", persona="a debater", stance=side, side=side,
                round_number=1, rounds=1, opponent="", opponent_text="",
            )  # fmt: skip
            judged = scores(features(with_quality(model, write_debate_turn(ctx, seed), seed), ["B"]))
            values.append(sum(judged.values()) / len(judged))
    return statistics.mean(values)


def test_the_simulated_judge_scores_a_stronger_debater_higher_on_average():
    means = [_mean_judged(m, range(20)) for m in ("sim/debater-strong", "sim/debater-average", "sim/debater-weak")]
    assert means[0] > means[1] > means[2]


def test_a_quality_rework_is_deterministic_and_keeps_the_opening():
    text = "[simulated] Opening line. A claim. Another claim. A third one."
    once = apply_quality(text, 0.5, "sim/x", 3)
    assert once == apply_quality(text, 0.5, "sim/x", 3) and once.startswith("[simulated] Opening line.")
    assert apply_quality(text, 0.5, "sim/x", 4) != once or apply_quality(text, 0.5, "sim/x", 5) != once


# -- the round robin --------------------------------------------------------------------------
def _config(**overrides) -> tpb.TournamentConfig:
    values = dict(
        models=["sim/a-strong", "sim/b", "sim/c-weak"],
        topics=["Topic one is true", "Topic two is true"],
        judge=c.JudgeConfig(models=["sim/judge"]),
        seed=10,
    )
    values.update(overrides)
    return tpb.TournamentConfig(**values)


def test_every_pair_plays_once_per_topic_and_each_leg_swaps_the_sides():
    config = _config()
    matches = pairings(config)
    assert [(m.model_a, m.model_b, m.topic) for m in matches[:3]] == [
        ("sim/a-strong", "sim/b", "Topic one is true"),
        ("sim/a-strong", "sim/c-weak", "Topic one is true"),
        ("sim/b", "sim/c-weak", "Topic one is true"),
    ]
    assert len(matches) == 6 and [m.seed for m in matches] == list(range(10, 16))
    one, two = debate_config(config, matches[0], 1), debate_config(config, matches[0], 2)
    assert [(p.model, p.stance) for p in one.participants] == [("sim/a-strong", "for"), ("sim/b", "against")]
    assert [(p.model, p.stance) for p in two.participants] == [("sim/b", "for"), ("sim/a-strong", "against")]
    assert one.topic == two.topic and one.seed == two.seed == 10 and one.judge == two.judge


def test_seat_names_are_valid_participant_names_or_a_and_b():
    assert seat_names("sim/debater-strong", "openai/gpt-4o") == ("debater-strong", "gpt-4o")
    assert seat_names("x/same", "y/same") == ("A", "B")


def _limits_and_rules() -> tuple[Limits, ModelRules]:
    settings = OrchestratorSettings()
    return Limits(settings), ModelRules.from_settings(settings, PriceBook())


def test_a_budget_alone_is_shared_by_every_debate():
    limits, rules = _limits_and_rules()
    out = validate_tournament(_config(budget=c.Money(currency_code="USD", amount="1.2")), limits, rules)
    assert Decimal(out.debate_budget.amount) == Decimal("0.1")  # 12 debates
    assert out.format.round_limit == 1


def test_bad_configs_report_every_field():
    limits, rules = _limits_and_rules()
    with pytest.raises(InvalidArgument) as refused:
        validate_tournament(_config(models=["sim/a", "sim/a"], topics=[""], parallel_matches=-1), limits, rules)
    fields = {v.field for v in refused.value.violations}
    assert {"config.models[1]", "config.topics[0]", "config.parallel_matches"} <= fields


# -- a match's result ----------------------------------------------------------------------------
def _match(*legs: tuple[str, bool, float]) -> tpb.Match:
    match = tpb.Match(model_a="sim/a", model_b="sim/b")
    for winner, tie, margin in legs:
        match.legs.add(winner_model=winner, tie=tie, margin=margin)
    decide(match)
    return match


@pytest.mark.parametrize(
    ("legs", "winner", "tie"),
    [
        ((("sim/a", False, 2.0), ("sim/a", False, 0.5)), "sim/a", False),  # both debates
        ((("sim/b", False, -0.2), ("", True, 0.0)), "sim/b", False),  # a win and a tie
        ((("sim/a", False, 3.0), ("sim/b", False, -1.0)), "sim/a", False),  # one each: the summed margin
        ((("sim/a", False, 1.0), ("sim/b", False, -2.5)), "sim/b", False),
        ((("sim/a", False, 1.0), ("sim/b", False, -1.0)), "", True),  # one each, even margins
        ((("", True, 0.0), ("", True, 0.0)), "", True),
    ],
)
def test_a_match_goes_to_the_side_that_won_more_debates_else_to_the_summed_margin(legs, winner, tie):
    match = _match(*legs)
    assert (match.winner_model, match.tie) == (winner, tie)
    assert score_of_a(match) == (0.5 if tie else float(winner == "sim/a"))


def test_a_leg_reads_its_verdict_by_seat_name():
    match = tpb.Match(model_a="sim/debater-strong", model_b="sim/debater-weak")
    leg = match.legs.add()
    verdict = c.Verdict(
        winner="debater-weak",
        final_scores=[
            c.FinalScore(debater="debater-strong", score=6.0),
            c.FinalScore(debater="debater-weak", score=7.5),
        ],
    )
    leg_result(match, leg, verdict)
    assert leg.winner_model == "sim/debater-weak" and not leg.tie and leg.margin == pytest.approx(-1.5)


# -- ratings ---------------------------------------------------------------------------------------
def test_ratings_order_the_models_and_are_the_same_for_the_same_matches():
    outcomes = [Outcome("s", "m", 1.0), Outcome("m", "w", 1.0), Outcome("s", "w", 1.0), Outcome("s", "m", 0.5)] * 2
    first = fit_ratings(outcomes, seed=3)
    assert [r.model for r in first] == ["s", "m", "w"] and [r.rank for r in first] == [1, 2, 3]
    assert first == fit_ratings(outcomes, seed=3)
    assert all(r.low <= r.rating <= r.high for r in first)
    assert sum(r.rating for r in first) / 3 == pytest.approx(1500)
    s = first[0]
    assert (s.matches, s.wins, s.losses, s.ties) == (6, 4, 0, 2)


def test_ties_count_as_half_a_win_each():
    even = fit_ratings([Outcome("a", "b", 0.5)] * 4 + [Outcome("a", "b", 1.0), Outcome("a", "b", 0.0)])
    assert even[0].rating == pytest.approx(even[1].rating)
    assert fit_ratings([]) == []


# -- the CLI's match lines ----------------------------------------------------------------------------
def test_a_match_line_names_its_topic_its_legs_and_whose_margin_it_is():
    from debate.orchestrator.v1 import orchestrator_pb2 as opb

    from services.client.tournaments import match_lines

    done = opb.DEBATE_STATE_COMPLETED
    match = tpb.Match(
        match_index=3,
        model_a="sim/a",
        model_b="sim/b",
        topic="Cities should ban cars",
        state=tpb.MATCH_STATE_DECIDED,
        winner_model="sim/b",
        margin=-1.25,  # model_a's: sim/b is ahead
        legs=[
            tpb.MatchLeg(debate_id="d1", for_model="sim/a", debate_state=done, winner_model="sim/b", margin=-1.5),
            tpb.MatchLeg(debate_id="d2", for_model="sim/b", debate_state=done, tie=True, margin=0.25),
        ],
    )
    assert match_lines(match) == [
        "  #3   sim/a v sim/b  [decided]  sim/b wins by 1.25  · topic: Cities should ban cars",
        "       leg 1: sim/a for, sim/b against: sim/b wins by 1.50  (debate d1)",
        "       leg 2: sim/b for, sim/a against: tie (sim/a ahead by 0.25)  (debate d2)",
    ]
    running = tpb.Match(
        match_index=4,
        model_a="sim/a",
        model_b="sim/b",
        topic="T",
        state=tpb.MATCH_STATE_RUNNING,
        legs=[tpb.MatchLeg(debate_id="d3", for_model="sim/a", debate_state=opb.DEBATE_STATE_RUNNING)],
    )
    assert match_lines(running)[1] == "       leg 1: sim/a for, sim/b against: running  (debate d3)"
    won_on_debates = tpb.Match(model_a="sim/a", model_b="sim/b", winner_model="sim/a", margin=-0.5)
    assert "sim/a wins on debates won (behind by 0.50 on margin)" in match_lines(won_on_debates)[0]
