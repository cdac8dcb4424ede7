"""Evidence across a crash: the orchestrator is SIGKILLed while a debate with source documents
runs (after round 1's turns, during round 2's stream), restarted, and the debate ends with every
turn's quotes marked as the checker marks them, those of the turns stored before the crash kept
as they were, and the documents still in the resumed debaters' windows (their turns quote them).
On both backends (the orchestrator_backend fixture)."""

from __future__ import annotations

import grpc
import pytest
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc

from services.common.quotes import SourceIndex
from tests.integration.test_evidence import SOURCES, config
from tests.reliability.processes import KillableSuite
from tests.reliability.test_crash_matrix import ENV, Watch, _follow, _wait_terminal

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(240)
async def test_quotes_survive_a_sigkill_of_the_orchestrator_and_resumed_turns_are_checked(orchestrator_backend):
    suite = KillableSuite(orchestrator_backend.data_dir / "data", ENV, database_url=orchestrator_backend.url)
    try:
        await suite.start_all()
        async with grpc.aio.insecure_channel(suite.address("orchestrator")) as channel:
            stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
            cfg = config(rounds=3)
            cfg.max_tokens_per_turn = 120
            debate_id = (await stub.CreateDebate(pb.CreateDebateRequest(config=cfg), timeout=30)).debate.debate_id
            await stub.StartDebate(pb.StartDebateRequest(debate_id=debate_id), timeout=30)
            watch = Watch()

            def in_round_two(event: pb.DebateEvent) -> bool:
                delta = event.token_delta
                return event.WhichOneof("payload") == "token_delta" and delta.round_number == 2

            await _follow(stub, debate_id, watch, 0, in_round_two)
            before = {
                (e.turn_completed.turn.round_number, e.turn_completed.turn.participant): e.turn_completed.turn
                for e in map(pb.DebateEvent.FromString, watch.events.values())
                if e.WhichOneof("payload") == "turn_completed"
            }
            assert {r for r, _ in before} == {1}
            await suite.kill("orchestrator")
            await suite.start("orchestrator")
            summary = await _wait_terminal(stub, debate_id)
            assert summary.state == pb.DEBATE_STATE_COMPLETED
            debate = (await stub.GetDebate(pb.GetDebateRequest(debate_id=debate_id), timeout=30)).debate
    except BaseException:
        print("\n".join(suite.output[-60:]))
        raise
    finally:
        await suite.stop_all()

    index = SourceIndex.of(SOURCES)
    turns = {(t.round_number, t.participant): t for r in debate.rounds for t in r.turns}
    assert len(turns) == 6
    for key, turn in turns.items():
        assert turn.quotes, key  # the resumed debaters still had the documents
        assert list(turn.quotes) == index.check_turn(turn.text), key
    for key, turn in before.items():
        assert turns[key].text == turn.text and list(turns[key].quotes) == list(turn.quotes), key
