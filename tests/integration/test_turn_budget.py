"""A turn's token budget (issue 20, item 3), through the real services: each debater is told its
budget in its prompt, the simulated debater ends its turn within it on a whole sentence, and a
turn cut by the limit is marked as cut, in the stored turn, its event and the CLI's transcript."""

from __future__ import annotations

import re

import grpc
import pytest
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc as pbg

from services.cli import main
from services.orchestrator.context import ContextBuilder, Transcript
from tests.integration.test_orchestrator_suite import INSTANT, debate_config, start_suite, stop_suite

SENTENCE_END = re.compile(r"[.!?…][\"”’)\]]*$")


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    config, procs = start_suite(str(tmp_path_factory.mktemp("suite")), INSTANT)
    yield config.orchestrator_address
    stop_suite(procs)


def run_debate(target: str, config: c.DebateConfig) -> tuple[pb.Debate, list[pb.DebateEvent]]:
    with grpc.insecure_channel(target) as channel:
        stub = pbg.OrchestratorServiceStub(channel)
        debate_id = stub.CreateDebate(pb.CreateDebateRequest(config=config), timeout=30).debate.debate_id
        stub.StartDebate(pb.StartDebateRequest(debate_id=debate_id), timeout=30)
        events = [
            r.event
            for r in stub.StreamDebateEvents(pb.StreamDebateEventsRequest(debate_id=debate_id), timeout=120)
            if r.event.WhichOneof("payload") != "heartbeat"
        ]
        return stub.GetDebate(pb.GetDebateRequest(debate_id=debate_id), timeout=30).debate, events


def test_every_debater_is_told_its_budget():
    config = debate_config(n=2, rounds=2, max_tokens_per_turn=160)
    window = ContextBuilder(config).build(config.participants[0], 1, Transcript())
    assert "\nLength: at most 160 tokens (about 96 words)" in window.messages[0].content


# 0: the orchestrator's default (512); 220: the CLI demo's; 160: the page's; 60: a tight one.
@pytest.mark.parametrize("limit", [0, 220, 160, 60])
def test_simulated_turns_end_on_a_sentence_within_the_limit(target, limit):
    debate, _ = run_debate(target, debate_config(n=4, rounds=3, max_tokens_per_turn=limit, seed=limit))
    assert debate.state == pb.DEBATE_STATE_COMPLETED
    turns = [turn for r in debate.rounds for turn in r.turns]
    assert len(turns) == 12
    for turn in turns:
        assert turn.finish_reason == c.FINISH_REASON_STOP, turn.text
        assert SENTENCE_END.search(turn.text), turn.text
        assert turn.usage.completion_tokens <= (limit or 512)
    if limit == 60:  # the budget shaped the turns: shorter than their natural length
        assert max(turn.usage.completion_tokens for turn in turns) < 100


def test_a_turn_cut_by_a_small_limit_is_marked_as_cut(target, capsys):
    debate, events = run_debate(target, debate_config(n=2, rounds=1, max_tokens_per_turn=10))
    turns = list(debate.rounds[0].turns)
    assert len(turns) == 2
    assert all(t.finish_reason == c.FINISH_REASON_LENGTH and t.usage.completion_tokens <= 10 for t in turns)
    completed = [e.turn_completed.turn for e in events if e.WhichOneof("payload") == "turn_completed"]
    assert [t.finish_reason for t in completed] == [c.FINISH_REASON_LENGTH] * 2
    # The CLI's transcript marks each cut turn.
    assert main(["attach", debate.debate_id, "--target", target]) == 0
    out = capsys.readouterr().out
    assert out.count("cut at the turn's token limit") == 2, out
