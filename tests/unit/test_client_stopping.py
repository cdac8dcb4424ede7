"""The client's side of the stopping rules (issue 19 part 1): the live view and `list` say that a
debate stopped early and why, and the `debate` command's flags set the rules."""

from __future__ import annotations

import argparse
import io

import pytest
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb

from services.client.commands import debate_config, list_lines, register
from services.client.stopping import describe_stop
from services.client.style import Style
from services.client.view import DebateView

PLAIN = Style(color=False, unicode=True, width=100, live=False)
PARTICIPANTS = [
    c.Participant(name="Ada", model="sim/debater", stance="for"),
    c.Participant(name="Milo", model="sim/debater", stance="against"),
]
STOP = pb.DebateStop(
    rule=c.STOPPING_RULE_JUDGE_DECIDED,
    after_round=3,
    rounds_played=3,
    rounds_not_played=3,
    estimated_cost_avoided=c.Money(currency_code="USD", amount="0.005823"),
    reason="Ada leads round 3 by 6.18 points with confidence 1.00",
)


def test_the_stop_in_words():
    assert describe_stop(STOP) == (
        "stopped early after round 3 (the judge decided); 3 rounds not played, about $0.005823 avoided"
    )
    consensus = pb.DebateStop(rule=c.STOPPING_RULE_CONSENSUS, after_round=2)  # decided, not yet announced
    assert describe_stop(consensus) == "stopped early after round 2 (consensus)"


def test_the_live_view_shows_the_stop_and_its_reason():
    out = io.StringIO()
    view = DebateView(out, PLAIN, participants=PARTICIPANTS, round_limit=6)
    view.handle(pb.DebateEvent(sequence=1, debate_stopped=pb.DebateStopped(stop=STOP)))
    view.close()
    text = out.getvalue()
    assert "stopped early after round 3 (the judge decided); 3 rounds not played" in text
    assert "Ada leads round 3 by 6.18 points" in text


def test_a_view_ended_from_a_summary_shows_the_stop():
    out = io.StringIO()
    view = DebateView(out, PLAIN, participants=PARTICIPANTS, round_limit=6)
    view.end_from_summary(pb.DebateSummary(state=pb.DEBATE_STATE_COMPLETED, stop=STOP))
    assert "stopped early after round 3" in out.getvalue()


def test_list_says_which_debates_stopped_early():
    debates = [
        pb.DebateSummary(debate_id="d1", state=pb.DEBATE_STATE_COMPLETED, current_round=4, round_limit=6, stop=STOP),
        pb.DebateSummary(debate_id="d2", state=pb.DEBATE_STATE_COMPLETED, current_round=6, round_limit=6),
    ]
    lines = list_lines(PLAIN, debates)
    assert "stopped early after round 3" in lines[3] and "stopped" not in lines[5]
    # the rounds played, not the round under way when the stop came (current_round 4)
    assert lines[2].split()[:3] == ["d1", "completed", "3/6"] and lines[4].split()[:3] == ["d2", "completed", "6/6"]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    base = ["debate", "--topic", "t", "--debater", "A=sim/debater:x:for", "--debater", "B=sim/debater:y:against"]
    return parser.parse_args([*base, "--judge", "sim/judge", *argv])


def test_the_debate_flags_set_the_rules_and_none_by_default():
    assert not debate_config(parse()).HasField("stopping")
    config = debate_config(parse("--stop-when-decided", "2:1.5:0.8", "--stop-on-consensus", "3"))
    assert config.stopping.judge_decided == c.JudgeDecidedRule(min_rounds=2, min_margin=1.5, min_confidence=0.8)
    assert config.stopping.consensus.min_rounds == 3


def test_a_malformed_flag_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        parse("--stop-when-decided", "2:1.5")
    assert "MIN_ROUNDS:MARGIN:CONFIDENCE" in capsys.readouterr().err
