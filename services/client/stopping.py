"""Stopping rules in the client (issue 19 part 1): how a debate that a rule ended early is shown
(the rule, after which round, what the stop saved: from a DebateStopped event or a debate's
summary), and the `debate` command's flags that set the rules."""

from __future__ import annotations

import argparse

from debate.common.v1 import common_pb2
from debate.orchestrator.v1 import orchestrator_pb2 as pb

from services.client.style import Style, money, safe_text

RULES = {
    common_pb2.STOPPING_RULE_JUDGE_DECIDED: "the judge decided",
    common_pb2.STOPPING_RULE_CONSENSUS: "consensus",
}


def describe_stop(stop: pb.DebateStop) -> str:
    """One line: "stopped early after round 3 (the judge decided); 3 rounds not played, about
    $0.0123 avoided"."""
    text = f"stopped early after round {stop.after_round} ({RULES.get(stop.rule, 'a stopping rule')})"
    if stop.rounds_not_played:
        rounds = "round" if stop.rounds_not_played == 1 else "rounds"
        text += f"; {stop.rounds_not_played} {rounds} not played"
        if stop.HasField("estimated_cost_avoided"):
            avoided = stop.estimated_cost_avoided
            text += f", about {money(avoided.amount, avoided.currency_code or 'USD')} avoided"
    return text


def stop_lines(s: Style, stop: pb.DebateStop) -> list[str]:
    """The view's block for a stop: the line above in bold, then the rule's reading."""
    lines = ["", s.paint(f"{s.glyph('■', '#')} {describe_stop(stop)}", "bold", "yellow")]
    if stop.reason:
        lines.append("  " + safe_text(stop.reason))
    return lines


# -- the `debate` command's flags ---------------------------------------------------------------
def add_stopping_flags(parser: argparse.ArgumentParser) -> None:
    """--stop-when-decided and --stop-on-consensus (both off by default: every round is played)."""
    parser.add_argument(
        "--stop-when-decided",
        type=_judge_decided,
        metavar="MIN_ROUNDS:MARGIN:CONFIDENCE",
        help="end the debate once the judge has decided: after MIN_ROUNDS rounds, when a round's leader is "
        "MARGIN points (0-10) ahead with a confidence of at least CONFIDENCE (0-1), e.g. 2:1.5:0.8; "
        "MIN_ROUNDS below --rounds (the last round is never checked)",
    )
    parser.add_argument(
        "--stop-on-consensus",
        type=int,
        metavar="MIN_ROUNDS",
        help="end the debate once the judge reads that the debaters' stated positions have converged, "
        "after at least MIN_ROUNDS rounds (below --rounds: the last round is never checked)",
    )


def stopping_rules(args: argparse.Namespace) -> common_pb2.StoppingRules | None:
    """The rules the flags ask for; None when neither is given."""
    decided = getattr(args, "stop_when_decided", None)
    consensus = getattr(args, "stop_on_consensus", None)
    if decided is None and consensus is None:
        return None
    rules = common_pb2.StoppingRules()
    if decided is not None:
        rules.judge_decided.CopyFrom(decided)
    if consensus is not None:
        rules.consensus.min_rounds = consensus
    return rules


def _judge_decided(text: str) -> common_pb2.JudgeDecidedRule:
    parts = text.split(":")
    try:
        if len(parts) != 3:
            raise ValueError
        return common_pb2.JudgeDecidedRule(
            min_rounds=int(parts[0]), min_margin=float(parts[1]), min_confidence=float(parts[2])
        )
    except ValueError:
        expected = "expected MIN_ROUNDS:MARGIN:CONFIDENCE such as 2:1.5:0.8"
        raise argparse.ArgumentTypeError(f"{expected}, got {text!r}") from None
