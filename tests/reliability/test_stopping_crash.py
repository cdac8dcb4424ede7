"""SIGKILL of the orchestrator during a stop decision (issue 19 part 1), on both backends.

The services run as processes (tests/reliability/processes.py), on simulated models paced so that
a debater's turn and a judge call each take about a second. A 5-round debate of
`sim/debater-converging`s under the consensus rule stops after round 2: round 3 is under way when
round 2's assessment passes (or, when the judge was slower than a round, round 4: round 3 is then
played and kept). The test follows the events to that assessment, waits for the stop
decision to be in the store (debate_stops), and SIGKILLs the orchestrator at once, before the
verdict (which the test checks: no verdict is stored when it dies), then restarts it.

After the restart: the debate completes with its stop (the consensus rule, after round 2); no round
is started after the stop and no turn after the restart; DebateStopped is logged once and
DebateCompleted last; the event log is gap-free and every event seen before the kill is the stored
one; every ledger key is charged once, every finished turn once and exactly (not estimated), no row
is for a round after the cancelled one, and the debate's cost is the sum of its ledger rows.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import grpc
import pytest
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc

from tests.reliability.processes import KillableSuite

pytestmark = pytest.mark.e2e

ENV = {"SIM_TOKENS_PER_SECOND": "150", "SIM_FIRST_TOKEN_LATENCY": "0.05"}
LIMIT = 5
DONE = ("debate_completed", "debate_failed")


def _config() -> c.DebateConfig:
    return c.DebateConfig(
        topic="Should a stop survive a crash?",
        participants=[
            c.Participant(name="Ada", model="sim/debater-converging", persona="an engineer", stance="for"),
            c.Participant(name="Milo", model="sim/debater-converging", persona="an operator", stance="against"),
        ],
        judge=c.JudgeConfig(models=["sim/judge"], orderings=2),
        format=c.DebateFormat(round_limit=LIMIT, turn_order=c.TURN_ORDER_SIMULTANEOUS),
        max_tokens_per_turn=200,
        stopping=c.StoppingRules(consensus=c.ConsensusRule(min_rounds=1)),
    )


async def _follow(stub, debate_id: str, after: int, until, seen: list[pb.DebateEvent], timeout: float = 90) -> int:
    """Reads events after `after` into `seen` until `until(event)` or the end; the last sequence."""
    last = after
    stream = stub.StreamDebateEvents(
        pb.StreamDebateEventsRequest(debate_id=debate_id, after_sequence=after), timeout=timeout, wait_for_ready=True
    )
    try:
        async for reply in stream:
            event = reply.event
            if event.WhichOneof("payload") == "heartbeat" or not event.sequence:
                continue
            seen.append(event)
            last = event.sequence
            if until(event) or event.WhichOneof("payload") in DONE:
                break
    finally:
        stream.cancel()
    return last


@pytest.mark.timeout(240)
async def test_a_sigkill_during_a_stop_decision_resumes_with_the_stop(orchestrator_backend):
    suite = KillableSuite(orchestrator_backend.data_dir / "data", ENV, database_url=orchestrator_backend.url)
    try:
        await suite.start_all()
        await _scenario(suite)
    except BaseException:
        print("\n".join(suite.output[-80:]))
        raise
    finally:
        await suite.stop_all()


async def _scenario(suite: KillableSuite) -> None:
    async with grpc.aio.insecure_channel(suite.address("orchestrator")) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        created = await stub.CreateDebate(pb.CreateDebateRequest(config=_config()), timeout=30)
        debate_id = created.debate.debate_id
        await stub.StartDebate(pb.StartDebateRequest(debate_id=debate_id), timeout=30)

        before: list[pb.DebateEvent] = []
        last = await _follow(
            stub,
            debate_id,
            0,
            lambda e: e.HasField("round_assessed") and e.round_assessed.assessment.round_number == 2,
            before,
        )
        assert before[-1].HasField("round_assessed"), [e.WhichOneof("payload") for e in before]
        assert before[-1].round_assessed.assessment.consensus

        # The stop decision is stored (and committed) before the round under way is touched.
        deadline = time.monotonic() + 10
        while not suite.query("debate_stops", "SELECT 1 FROM debate_stops WHERE debate_id = ?", (debate_id,)):
            assert time.monotonic() < deadline, "no stop decision was stored"
            await asyncio.sleep(0.005)
        await suite.kill("orchestrator")
        verdict = suite.query("debates", "SELECT verdict FROM debates WHERE debate_id = ?", (debate_id,))
        assert verdict[0][0] is None, "the verdict was given before the kill: the kill missed the stop decision"
        rounds_before = max(e.round_started.round_number for e in before if e.HasField("round_started"))
        assert rounds_before >= 3  # round 3 at least had started (the judge is about as fast as a round)

        await suite.start("orchestrator")
        after: list[pb.DebateEvent] = []
        await _follow(stub, debate_id, last, lambda e: False, after)
        assert after and after[-1].HasField("debate_completed"), [e.WhichOneof("payload") for e in after]

        final = (await stub.GetDebate(pb.GetDebateRequest(debate_id=debate_id), timeout=30)).debate
        assert final.state == pb.DEBATE_STATE_COMPLETED, final.end_reason
        stop = final.stop
        assert (stop.rule, stop.after_round) == (c.STOPPING_RULE_CONSENSUS, 2)
        # Normally 2; 3 when the judge took longer than round 3 (a round finished when the stop came is kept).
        played = stop.rounds_played
        assert played in (2, 3) and stop.rounds_not_played == LIMIT - played

        stored = []
        async for reply in stub.StreamDebateEvents(pb.StreamDebateEventsRequest(debate_id=debate_id), timeout=60):
            if reply.event.sequence and reply.event.WhichOneof("payload") != "heartbeat":
                stored.append(reply.event)
                if reply.event.WhichOneof("payload") in DONE:
                    break
        assert [e.sequence for e in stored] == list(range(1, len(stored) + 1))
        by_sequence = {e.sequence: e.SerializeToString() for e in stored}
        assert all(by_sequence[e.sequence] == e.SerializeToString() for e in before + after)
        kinds = [e.WhichOneof("payload") for e in stored]
        assert kinds.count("debate_stopped") == 1 and kinds[-1] == "debate_completed"
        assert kinds.count("verdict_rendered") == 1
        # No round after the stop, and nothing played after the restart.
        assert max(e.round_started.round_number for e in stored if e.HasField("round_started")) == played + 1
        resumed = [e.WhichOneof("payload") for e in after]
        assert not {"round_started", "turn_started", "token_delta"} & set(resumed), resumed
        for event in after:
            if event.HasField("turn_failed"):
                assert event.turn_failed.round_number == played + 1 and not event.turn_failed.will_retry
            if event.HasField("turn_completed"):
                assert event.turn_completed.turn.round_number <= played + 1

        # Nothing charged twice; every finished turn exactly once; the cost is the ledger's.
        rows = suite.query(
            "usage",
            "SELECT request_id, round_number, participant, role, estimated, cost FROM usage WHERE debate_id = ?",
            (debate_id,),
        )
        keys = [row[0] for row in rows]
        assert len(keys) == len(set(keys))
        assert not [row for row in rows if row[1] > played + 1]
        for rnd in final.rounds:
            for turn in rnd.turns:
                if turn.finish_reason == c.FINISH_REASON_CANCELLED:
                    continue
                charged = [
                    r for r in rows if r[1] == turn.round_number and r[2] == turn.participant and r[3] == "debater"
                ]
                assert len(charged) == 1 and not charged[0][4], (turn.round_number, turn.participant, charged)
        assessed = {r.round_number for r in final.rounds if len(r.turns) == 2 and r.HasField("assessment")}
        assert assessed == set(range(1, played + 1))
        total = sum((Decimal(str(row[5])) for row in rows), Decimal(0))
        assert Decimal(final.cost.total.amount or "0") == total
        print(f"stop {stop.reason!r}; {len(stored)} events, {len(rows)} ledger rows, resumed: {resumed}")
