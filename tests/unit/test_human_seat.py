"""The human seat's rules as plain Python (issue 19 part 3): the config's validation and defaults,
what the judge is shown for a skipped turn, and the CLI's countdown."""

from __future__ import annotations

import pytest
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb

from services.client.play import remaining, turn_lines
from services.client.style import Style
from services.common.errors import InvalidArgument, Violations
from services.orchestrator.human_seat import check_config, judge_text

P = c.HumanTimeoutPolicy


def config(*models: str, timeout: int = 0, policy: int = 0) -> c.DebateConfig:
    cfg = c.DebateConfig(participants=[c.Participant(name=f"p{i}", model=m) for i, m in enumerate(models)])
    if timeout or policy:
        cfg.human.turn_timeout_seconds = timeout
        cfg.human.timeout_policy = policy  # type: ignore[assignment]
    return cfg


def checked(cfg: c.DebateConfig) -> c.DebateConfig:
    out = c.DebateConfig()
    out.CopyFrom(cfg)
    v = Violations()
    check_config(cfg, out, v, "config")
    v.raise_if_any()
    return out


def test_a_debate_with_a_human_seat_gets_the_defaults_and_one_without_is_left_as_it_is():
    out = checked(config("human", "sim/debater"))
    assert (out.human.turn_timeout_seconds, out.human.timeout_policy) == (300, P.HUMAN_TIMEOUT_POLICY_SKIP_TURN)
    assert not checked(config("sim/debater", "sim/debater")).HasField("human")
    out = checked(config("human", "sim/debater", timeout=5, policy=P.HUMAN_TIMEOUT_POLICY_FORFEIT))
    assert (out.human.turn_timeout_seconds, out.human.timeout_policy) == (5, P.HUMAN_TIMEOUT_POLICY_FORFEIT)


@pytest.mark.parametrize(
    ("timeout", "policy", "fields"),
    [
        (-1, 0, ["config.human.turn_timeout_seconds"]),
        (86_401, 0, ["config.human.turn_timeout_seconds"]),
        (10, 7, ["config.human.timeout_policy"]),
        (-3, -1, ["config.human.turn_timeout_seconds", "config.human.timeout_policy"]),
    ],
)
def test_bad_human_settings_are_named_field_by_field(timeout, policy, fields):
    with pytest.raises(InvalidArgument) as refused:
        checked(config("human", "sim/debater", timeout=timeout, policy=policy))
    assert [v.field for v in refused.value.violations] == fields


def test_the_judge_is_told_why_a_human_turn_is_empty_without_the_seat_being_named():
    spoke = c.Turn(participant="Ann", text="Buses first.", human=c.HumanTurn(request_id="r"))
    assert judge_text(spoke) == "Buses first."
    timed_out = c.Turn(participant="Ann", human=c.HumanTurn(skipped=True, skip_reason="TIMEOUT"))
    forfeited = c.Turn(participant="Ann", human=c.HumanTurn(skipped=True, skip_reason="FORFEITED"))
    assert "did not answer in time" in judge_text(timed_out) and "Ann" not in judge_text(timed_out)
    assert "forfeited" in judge_text(forfeited) and "Ann" not in judge_text(forfeited)
    assert judge_text(c.Turn(participant="Milo", text="Cars out.")) == "Cars out."


def test_the_countdown_reads_minutes_and_seconds_and_stops_at_zero():
    now = 1_000_000_000_000
    assert remaining(now + 245 * 10**9, now) == "4m 05s"
    assert remaining(now + 9 * 10**9, now) == "9s"
    assert remaining(now - 10**9, now) == "0s"


def test_a_judge_cannot_be_a_human_seat():
    cfg = config("human", "sim/debater")
    cfg.judge.models.extend(["sim/judge", "human"])
    with pytest.raises(InvalidArgument) as refused:
        checked(cfg)
    assert [v.field for v in refused.value.violations] == ["config.judge.models[1]"]


def test_the_terminal_view_shows_the_wait_and_a_timeout():
    import io

    from debate.orchestrator.v1 import orchestrator_pb2 as pb

    from services.client.view import DebateView

    out = io.StringIO()
    view = DebateView(out, participants=[c.Participant(name="Ann", model="human")], round_limit=1)
    awaited = pb.HumanTurnAwaited(round_number=1, participant="Ann")
    awaited.deadline.FromSeconds(3600 + 125)
    view.handle(pb.DebateEvent(sequence=1, human_turn_awaited=awaited))
    timed_out = pb.HumanTurnTimedOut(round_number=1, participant="Ann", message="Ann gave no turn in round 1")
    view.handle(pb.DebateEvent(sequence=2, human_turn_timed_out=timed_out))
    view.close()
    text = out.getvalue()
    assert "round 1: waiting for Ann (a person) until 01:02:05 UTC" in text
    assert "Ann gave no turn in round 1" in text


@pytest.mark.parametrize(
    ("order", "shown"),
    [
        (c.TURN_ORDER_SIMULTANEOUS, ["round 1, Milo:", "M1"]),  # round 2's other turn: not yet
        (c.TURN_ORDER_UNSPECIFIED, ["round 1, Milo:", "M1"]),  # the default is simultaneous
        (c.TURN_ORDER_SEQUENTIAL, ["round 1, Milo:", "M1", "round 2, Milo:", "M2"]),  # Milo spoke first
    ],
)
def test_play_shows_the_seat_only_what_the_models_of_its_round_see(order, shown):
    """Ann (human) is awaited in round 2 and Milo's round 2 turn is stored: in the simultaneous
    format Ann does not see it before she speaks (no model of the round sees the others'), in the
    sequential one she does (Milo spoke before her)."""
    debate = pb.Debate(config=c.DebateConfig(format=c.DebateFormat(round_limit=3, turn_order=order)))
    debate.rounds.add(
        round_number=1, turns=[c.Turn(participant="Ann", text="A1"), c.Turn(participant="Milo", text="M1")]
    )
    debate.rounds.add(round_number=2, turns=[c.Turn(participant="Milo", text="M2")])
    debate.awaiting_human.round_number, debate.awaiting_human.participant = 2, "Ann"
    assert turn_lines(Style(color=False), debate, "Ann") == shown
