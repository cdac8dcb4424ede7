"""Stopping rules as plain Python (issue 19 part 1): config validation with field details, the
rules on an assessment, the estimate of the cost avoided, the simulated debater whose stated
positions converge, and the simulated judge that reads them (and its scripted decisive variant)."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from debate.common.v1 import common_pb2 as c

from services.common.debate_rules import ModelRules
from services.common.errors import InvalidArgument
from services.common.llm.base import ChatMessage, CompletionRequest
from services.common.llm.simulated import SimulatedLLM
from services.common.llm.simulated.converging import converging_round, shared_position
from services.judge import simulated_judge
from services.judge.engine import Judge
from services.judge.model import Debater, PanelRequest, RoundCase, Turn
from services.judge.prompts import read_prompt
from services.judge.simulated_stopping import decisive_from, positions_converged, stated_position
from services.orchestrator.config import Limits, validate_config
from services.orchestrator.context import ContextBuilder
from services.orchestrator.run import DebateRun
from services.orchestrator.settings import OrchestratorSettings
from services.orchestrator.stopping import estimate_avoided, leader_margin, rounds_played, rule_passed

SETTINGS = OrchestratorSettings()


def cfg(rounds: int = 6, stopping: c.StoppingRules | None = None) -> c.DebateConfig:
    config = c.DebateConfig(
        topic="Cities should ban cars from their centres",
        participants=[
            c.Participant(name="Ada", model="sim/debater", persona="an urbanist", stance="for"),
            c.Participant(name="Bo", model="sim/debater", persona="a shopkeeper", stance="against"),
        ],
        format=c.DebateFormat(round_limit=rounds),
    )
    if stopping is not None:
        config.stopping.CopyFrom(stopping)
    return config


def validate(config: c.DebateConfig) -> c.DebateConfig:
    return validate_config(config, Limits(SETTINGS), ModelRules(SETTINGS.model_allowed))


# -- validation -----------------------------------------------------------------------------------
def test_no_stopping_rules_by_default_and_the_config_is_unchanged():
    out = validate(cfg())
    assert not out.HasField("stopping")


def test_valid_rules_are_kept_and_min_rounds_zero_means_one():
    out = validate(
        cfg(
            stopping=c.StoppingRules(
                judge_decided=c.JudgeDecidedRule(min_rounds=0, min_margin=2.5, min_confidence=0.8),
                consensus=c.ConsensusRule(min_rounds=5),
            )
        )
    )
    assert out.stopping.judge_decided.min_rounds == 1
    assert out.stopping.judge_decided.min_margin == 2.5 and out.stopping.judge_decided.min_confidence == 0.8
    assert out.stopping.consensus.min_rounds == 5  # the last round that can still stop a 6-round debate


@pytest.mark.parametrize(
    ("stopping", "field"),
    [
        (c.StoppingRules(judge_decided=c.JudgeDecidedRule(min_rounds=7)), "config.stopping.judge_decided.min_rounds"),
        (c.StoppingRules(judge_decided=c.JudgeDecidedRule(min_rounds=-1)), "config.stopping.judge_decided.min_rounds"),
        (
            c.StoppingRules(judge_decided=c.JudgeDecidedRule(min_margin=10.5)),
            "config.stopping.judge_decided.min_margin",
        ),
        (c.StoppingRules(judge_decided=c.JudgeDecidedRule(min_margin=-1)), "config.stopping.judge_decided.min_margin"),
        (
            c.StoppingRules(judge_decided=c.JudgeDecidedRule(min_margin=math.nan)),
            "config.stopping.judge_decided.min_margin",
        ),
        (
            c.StoppingRules(judge_decided=c.JudgeDecidedRule(min_confidence=1.01)),
            "config.stopping.judge_decided.min_confidence",
        ),
        (
            c.StoppingRules(judge_decided=c.JudgeDecidedRule(min_confidence=math.inf)),
            "config.stopping.judge_decided.min_confidence",
        ),
        (c.StoppingRules(consensus=c.ConsensusRule(min_rounds=9)), "config.stopping.consensus.min_rounds"),
    ],
)
def test_a_bad_rule_is_refused_with_its_field(stopping, field):
    with pytest.raises(InvalidArgument) as raised:
        validate(cfg(stopping=stopping))
    assert [v.field for v in raised.value.violations] == [field]


@pytest.mark.parametrize(
    ("rounds", "stopping", "field"),
    [
        (
            6,
            c.StoppingRules(judge_decided=c.JudgeDecidedRule(min_rounds=6)),
            "config.stopping.judge_decided.min_rounds",
        ),
        (6, c.StoppingRules(consensus=c.ConsensusRule(min_rounds=6)), "config.stopping.consensus.min_rounds"),
        (1, c.StoppingRules(consensus=c.ConsensusRule(min_rounds=0)), "config.stopping.consensus.min_rounds"),
        (
            1,
            c.StoppingRules(judge_decided=c.JudgeDecidedRule(min_rounds=1)),
            "config.stopping.judge_decided.min_rounds",
        ),
    ],
)
def test_a_rule_that_could_never_fire_is_refused(rounds, stopping, field):
    """A rule is never checked on the last round (nothing is left to save): min_rounds >= the
    round limit (0 read as 1) could never stop the debate."""
    with pytest.raises(InvalidArgument) as raised:
        validate(cfg(rounds, stopping))
    ((violation),) = raised.value.violations
    assert violation.field == field
    assert f"must be less than format.round_limit ({rounds})" in violation.description


def test_every_bad_rule_is_reported_at_once():
    stopping = c.StoppingRules(
        judge_decided=c.JudgeDecidedRule(min_rounds=8, min_margin=11, min_confidence=2),
        consensus=c.ConsensusRule(min_rounds=-3),
    )
    with pytest.raises(InvalidArgument) as raised:
        validate(cfg(stopping=stopping))
    assert sorted(v.field for v in raised.value.violations) == [
        "config.stopping.consensus.min_rounds",
        "config.stopping.judge_decided.min_confidence",
        "config.stopping.judge_decided.min_margin",
        "config.stopping.judge_decided.min_rounds",
    ]


# -- the rules --------------------------------------------------------------------------------------
def assessment(r: int, ada: float, bo: float, *, confidence: float = 1.0, consensus: bool = False):
    tie = abs(ada - bo) <= 0.25
    return c.RoundAssessment(
        round_number=r,
        scores=[c.DebaterScore(debater="Ada", weighted_total=ada), c.DebaterScore(debater="Bo", weighted_total=bo)],
        leader="" if tie else ("Ada" if ada > bo else "Bo"),
        tie=tie,
        confidence=confidence,
        consensus=consensus,
    )


JUDGE = c.StoppingRules(judge_decided=c.JudgeDecidedRule(min_rounds=2, min_margin=2.0, min_confidence=0.7))


def test_judge_decided_needs_min_rounds_margin_and_confidence():
    assert leader_margin(assessment(2, 7.0, 4.5)) == pytest.approx(2.5)
    assert rule_passed(JUDGE, assessment(1, 8.0, 2.0)) is None  # before min_rounds
    assert rule_passed(JUDGE, assessment(2, 6.0, 5.0)) is None  # margin 1 < 2
    assert rule_passed(JUDGE, assessment(2, 8.0, 2.0, confidence=0.5)) is None  # not confident enough
    assert rule_passed(JUDGE, assessment(2, 5.0, 5.0)) is None  # a tie
    rule, reason = rule_passed(JUDGE, assessment(2, 8.0, 2.0, confidence=0.9))
    assert rule == c.STOPPING_RULE_JUDGE_DECIDED and "Ada leads round 2 by 6.00" in reason


def test_consensus_needs_the_judges_reading_and_min_rounds():
    rules = c.StoppingRules(consensus=c.ConsensusRule(min_rounds=2))
    assert rule_passed(rules, assessment(1, 5, 5, consensus=True)) is None
    assert rule_passed(rules, assessment(2, 5, 5, consensus=False)) is None
    assert rule_passed(rules, assessment(2, 5, 5, consensus=True))[0] == c.STOPPING_RULE_CONSENSUS
    assert rule_passed(c.StoppingRules(), assessment(3, 9, 1, consensus=True)) is None  # no rule on


def run_with(rounds: int, turns: dict[tuple[int, str], int], amounts: dict[int, str]) -> DebateRun:
    config = cfg(rounds)
    run = DebateRun(debate_id="d", config=config, context=ContextBuilder(config, None))
    for (r, name), reason in turns.items():
        run.turns[(r, name)] = c.Turn(round_number=r, participant=name, finish_reason=reason)
    run.round_amounts = {r: Decimal(a) for r, a in amounts.items()}
    return run


def test_rounds_played_and_the_estimate_of_the_cost_avoided():
    stop, cut = c.FINISH_REASON_STOP, c.FINISH_REASON_CANCELLED
    turns = {(r, n): stop for r in (1, 2, 3) for n in ("Ada", "Bo")}
    turns[(4, "Ada")] = stop  # round 4: one turn finished, one cut by the stop
    turns[(4, "Bo")] = cut
    run = run_with(6, turns, {1: "0.010", 2: "0.012", 3: "0.014", 4: "0.005"})
    assert rounds_played(run) == 3
    # rounds 1-3 cost 0.010, 0.012, 0.014: rounds 4-6 0.016 + 0.018 + 0.020, less 0.005 the cut round spent
    assert estimate_avoided(run, 3) == Decimal("0.049")
    # a window of 2 earlier rounds: from round 3 on a round's prompts stop growing (0.014 each)
    run.config.context.window_size = 2
    assert estimate_avoided(run, 3) == Decimal("0.037")
    # one round played: its cost for each round not played
    assert estimate_avoided(run_with(6, turns, {1: "0.010", 2: "0.003"}), 1) == Decimal("0.047")
    assert estimate_avoided(run_with(6, turns, {1: "0.001", 4: "0.5"}), 3) == 0  # never below 0
    assert estimate_avoided(run, 6) == 0


# -- the simulated debater and judge ------------------------------------------------------------------
def test_the_converging_variant_names_its_round():
    assert converging_round("sim/debater-converging") == 2
    assert converging_round("sim/debater-converging@4") == 4
    assert converging_round("sim/debater") is None
    assert decisive_from("sim/judge-decisive@3") == 3 and decisive_from("sim/judge") is None


async def debater_turn(model: str, stance: str, r: int) -> str:
    messages = (
        ChatMessage("system", f"Topic: Cities should ban cars\nStance: {stance}\nPersona: a planner\nRound: {r} of 4"),
        ChatMessage("user", f"Round {r} of 4: make your argument."),
    )
    events = [e async for e in SimulatedLLM().stream(CompletionRequest(model=model, messages=messages, max_tokens=400))]
    return "".join(getattr(e, "text", "") for e in events)


async def test_converging_debaters_state_their_stance_then_the_same_position():
    early = [await debater_turn("sim/debater-converging", s, 1) for s in ("for", "against")]
    late = [await debater_turn("sim/debater-converging", s, 2) for s in ("for", "against")]
    plain = [await debater_turn("sim/debater", s, 2) for s in ("for", "against")]
    assert len({stated_position(t) for t in early}) == 2
    assert {stated_position(t) for t in late} == {
        stated_position("Position: " + shared_position("Cities should ban cars"))
    }
    assert all(stated_position(t) is None for t in plain)


@pytest.mark.parametrize(
    ("stance", "line"),
    [
        ("for", "Position: I argue for the motion."),
        ("against", "Position: I argue against the motion."),
        ("I oppose a ban", "Position: I argue against the motion."),
        ("tax the trucks, keep the cars.", "Position: my position is this: tax the trucks, keep the cars."),
        ("a trial in one district", "Position: my position is this: a trial in one district."),
    ],
)
async def test_a_converging_debater_states_its_stance_in_a_sentence(stance, line):
    """Its side when the stance gives one, else its stance as written: never "I argue for on the motion"."""
    text = await debater_turn("sim/debater-converging", stance, 1)
    assert text.splitlines()[0] == line


def round_case(texts: dict[str, str], r: int = 1, model: str = "sim/judge", consensus: bool = True) -> RoundCase:
    return RoundCase(
        debate_id="d",
        topic="Cities should ban cars",
        round_number=r,
        debaters=(Debater("Ada", "for"), Debater("Bo", "against")),
        turns=tuple(Turn(name, text) for name, text in texts.items()),
        panel=PanelRequest(models=(model,)),
        assess_consensus=consensus,
    )


def judge() -> Judge:
    return Judge(SimulatedLLM(responders={"sim/judge": simulated_judge.respond}))


AGREED = "Position: the sides agree on a trial.\n\nBecause the data shows 40 percent less traffic, we should act."
ADA = (
    "Position: ban them.\n\nBecause studies show 30 percent fewer injuries, the ban works. "
    "However, my opponent ignores it."
)
BO = "Position: keep them.\n\nShops lose trade. According to one survey, 12 shops closed."


async def test_the_simulated_judge_reads_consensus_from_the_stated_positions():
    assert (await judge().evaluate_round(round_case({"Ada": AGREED, "Bo": AGREED.upper()}))).consensus
    assert not (await judge().evaluate_round(round_case({"Ada": ADA, "Bo": BO}))).consensus
    assert not (await judge().evaluate_round(round_case({"Ada": AGREED, "Bo": "No position stated."}))).consensus
    not_asked = await judge().evaluate_round(round_case({"Ada": AGREED, "Bo": AGREED}, consensus=False))
    assert not not_asked.consensus


def test_positions_converged_reads_each_debaters_last_turn():
    prompt_turn = "<<<{t} BEGIN TURN Debater {l}>>>\n{x}\n<<<{t} END>>>"
    token = "0" * 32
    keys = 'The keys of "debaters" are exactly: "A", "B".\nThe keys of each "scores" object are exactly: "clarity".'
    text = "\n".join(prompt_turn.format(t=token, l=label, x=x) for label, x in (("A", AGREED), ("B", AGREED)))
    assert positions_converged(read_prompt(f"{text}\n{keys}"))


async def test_the_scripted_judge_is_indecisive_until_its_round_then_decisive():
    texts = {"Ada": ADA, "Bo": BO}
    before = await judge().evaluate_round(round_case(texts, r=2, model="sim/judge-decisive@3", consensus=False))
    after = await judge().evaluate_round(round_case(texts, r=3, model="sim/judge-decisive@3", consensus=False))
    assert before.tie and not before.leader and before.confidence == 1.0  # a tie every ballot agrees on
    assert not after.tie and after.leader == "Ada"
    totals = sorted((s.weighted_total for s in after.scores), reverse=True)
    assert totals[0] - totals[1] >= 2.0 and after.confidence == 1.0
