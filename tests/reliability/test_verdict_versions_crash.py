"""SIGKILL during the new steps of verdict versions (issue 19's "a SIGKILL during ... a
continuation resumes correctly"; issue 18's "a retried request acts once"), with the services as
processes (tests/reliability/processes.py) on simulated models paced so that a turn takes a
fraction of a second, on both backends (SQLite files, or one PostgreSQL database).

- The orchestrator is killed while a continued debate plays its added rounds; restarted, it
  resumes the continuation: the debate completes with its rounds and verdict version 2, the
  first debate's turns and ledger rows unchanged, every turn charged once, the log gap-free.
- The orchestrator is killed while a re-judging is under way (after its first round's scores
  were recorded); a retry of the request after the restart finishes the same version: one
  ledger row per judge call of the version, the calls recorded before the crash not charged
  again, and a further retry changes nothing.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc as pbg

from tests.reliability.processes import KillableSuite

pytestmark = pytest.mark.e2e

S = pb.DebateState
ENV = {"SIM_TOKENS_PER_SECOND": "150", "SIM_FIRST_TOKEN_LATENCY": "0.05"}
SETTLE_SECONDS = 120  # guards a hang only


def _config(rounds: int) -> c.DebateConfig:
    return c.DebateConfig(
        topic="Should a crash ever lose a word?",
        participants=[
            c.Participant(name="Ada", model="sim/debater", persona="an engineer", stance="for"),
            c.Participant(name="Milo", model="sim/debater", persona="an operator", stance="against"),
        ],
        judge=c.JudgeConfig(models=["sim/judge"]),
        format=c.DebateFormat(round_limit=rounds, turn_order=c.TURN_ORDER_SIMULTANEOUS),
        max_tokens_per_turn=40,
    )


async def _wait_state(stub, debate_id: str, states: set[int]) -> pb.DebateSummary:
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        try:
            status = await stub.GetDebateStatus(
                pb.GetDebateStatusRequest(debate_id=debate_id), timeout=10, wait_for_ready=True
            )
            if status.debate.state in states:
                return status.debate
        except grpc.aio.AioRpcError as error:
            if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
        assert time.monotonic() < deadline, f"the debate did not reach {states}"
        await asyncio.sleep(0.1)


async def _until(stub, debate_id: str, after: int, reached) -> int:
    """Follows the debate's events after `after` until `reached(event)`; the last sequence read.

    The stream of a debate that has ended ends with its log. A re-judging's events come after
    it, in the same log: a stream opened before the re-judging wrote its first event (the call
    races the stream) ends at once, so the stream is opened again, after the last event read,
    until the point is reached."""
    deadline = time.monotonic() + SETTLE_SECONDS
    last = after
    while time.monotonic() < deadline:
        stream = stub.StreamDebateEvents(
            pb.StreamDebateEventsRequest(debate_id=debate_id, after_sequence=last), timeout=SETTLE_SECONDS
        )
        try:
            async for reply in stream:
                event = reply.event
                if event.WhichOneof("payload") == "heartbeat" or not event.sequence:
                    continue
                last = event.sequence
                if reached(event):
                    return last
        finally:
            stream.cancel()
        await asyncio.sleep(0.05)
    raise AssertionError(f"the point was not reached in {SETTLE_SECONDS} s (last event read: {last})")


async def _all_events(stub, debate_id: str) -> list[pb.DebateEvent]:
    stream = stub.StreamDebateEvents(pb.StreamDebateEventsRequest(debate_id=debate_id), timeout=60)
    return [r.event for r in [reply async for reply in stream] if r.event.WhichOneof("payload") != "heartbeat"]


def _ledger(suite: KillableSuite, debate_id: str) -> dict[str, tuple]:
    rows = suite.query(
        "usage",
        "SELECT request_id, role, round_number, prompt_tokens, completion_tokens, cost FROM usage WHERE debate_id = ?",
        (debate_id,),
    )
    return {row[0]: tuple(str(v) for v in row[1:]) for row in rows}


async def _retried(method, request):
    """The call, retried while the debate is busy: on PostgreSQL the killed orchestrator's lease on
    it lapses within LEASE_SECONDS (ABORTED, DEBATE_BUSY), as a client is told to."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return await method(request, timeout=60, wait_for_ready=True)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.ABORTED or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.5)


@pytest.fixture
async def suite(orchestrator_backend):
    running = KillableSuite(orchestrator_backend.data_dir / "data", ENV, database_url=orchestrator_backend.url)
    try:
        await running.start_all()
        yield running
    except BaseException:
        print("\n".join(running.output[-60:]))
        raise
    finally:
        await running.stop_all()


async def _completed_debate(stub, rounds: int) -> pb.Debate:
    created = await stub.CreateDebate(pb.CreateDebateRequest(config=_config(rounds)), timeout=30)
    debate_id = created.debate.debate_id
    await stub.StartDebate(pb.StartDebateRequest(debate_id=debate_id), timeout=30)
    summary = await _wait_state(stub, debate_id, {S.DEBATE_STATE_COMPLETED, S.DEBATE_STATE_FAILED})
    assert summary.state == S.DEBATE_STATE_COMPLETED, summary.end_reason
    return (await stub.GetDebate(pb.GetDebateRequest(debate_id=debate_id), timeout=30)).debate


@pytest.mark.timeout(240)
async def test_a_continuation_killed_mid_round_resumes_and_completes_with_version_2(suite):
    async with grpc.aio.insecure_channel(suite.address("orchestrator")) as channel:
        stub = pbg.OrchestratorServiceStub(channel)
        before = await _completed_debate(stub, rounds=1)
        debate_id = before.debate_id
        rows_before = _ledger(suite, debate_id)
        request = pb.ContinueDebateRequest(
            debate_id=debate_id, extra_rounds=2, question="And the night shift?", request_id="more"
        )
        answer = await stub.ContinueDebate(request, timeout=30)
        assert answer.verdict_version == 2 and answer.debate.state == S.DEBATE_STATE_RUNNING

        deltas = 0

        def mid_round_2(event: pb.DebateEvent) -> bool:
            nonlocal deltas
            if event.WhichOneof("payload") == "token_delta" and event.token_delta.round_number == 2:
                deltas += 1
            return deltas >= 3

        await _until(stub, debate_id, before.last_sequence, mid_round_2)
        await suite.kill("orchestrator")
        await suite.start("orchestrator")

        summary = await _wait_state(stub, debate_id, {S.DEBATE_STATE_COMPLETED, S.DEBATE_STATE_FAILED})
        assert summary.state == S.DEBATE_STATE_COMPLETED, summary.end_reason
        retried = await stub.ContinueDebate(request, timeout=30)  # acts once, after the restart too
        assert retried.verdict_version == 2 and retried.debate.round_limit == 3
        after = (await stub.GetDebate(pb.GetDebateRequest(debate_id=debate_id), timeout=30)).debate

    assert [r.round_number for r in after.rounds] == [1, 2, 3] and after.rounds[0] == before.rounds[0]
    assert [v.version for v in after.verdicts] == [1, 2] and after.verdicts[0] == before.verdicts[0]
    assert after.verdicts[1].reason == pb.VERDICT_REASON_CONTINUATION and after.verdict.version == 2
    rows_after = _ledger(suite, debate_id)
    assert {k: rows_after[k] for k in rows_before} == rows_before
    for turn in (t for r in after.rounds[1:] for t in r.turns):
        key = f"debates/{debate_id}/rounds/{turn.round_number}/turns/{turn.participant}/attempts/{turn.attempt}"
        assert key in rows_after, key  # each turn charged, under its own key, once (the key is unique)
    assert sum(1 for k in rows_after if k.startswith(f"debates/{debate_id}/verdicts/2/verdict")) == len(
        after.verdict.calls
    )
    events = await _events_of(suite, debate_id)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    kinds = [e.WhichOneof("payload") for e in events]
    assert kinds.count("debate_continued") == 1 and kinds.count("debate_completed") == 2
    reasons = [e.state_changed.reason for e in events if e.WhichOneof("payload") == "state_changed"]
    assert "continued from round 2 to 3" in reasons and "resumed after an orchestrator restart" in reasons


@pytest.mark.timeout(240)
async def test_a_rejudging_killed_mid_way_is_finished_by_its_retry_and_charged_once(suite):
    async with grpc.aio.insecure_channel(suite.address("orchestrator")) as channel:
        stub = pbg.OrchestratorServiceStub(channel)
        before = await _completed_debate(stub, rounds=3)
        debate_id = before.debate_id
        rows_before = _ledger(suite, debate_id)
        panel = c.JudgeConfig(models=["sim/judge"], orderings=2)
        request = pb.RejudgeDebateRequest(debate_id=debate_id, judge=panel, request_id="again")
        call = asyncio.ensure_future(stub.RejudgeDebate(request, timeout=60))
        # The first CostUpdated after the debate's end: round 1's new scores are recorded.
        await _until(stub, debate_id, before.last_sequence, lambda e: e.WhichOneof("payload") == "cost_updated")
        await suite.kill("orchestrator")
        with pytest.raises(grpc.aio.AioRpcError):
            await call
        recorded_before_crash = {k: v for k, v in _ledger(suite, debate_id).items() if k not in rows_before}
        assert recorded_before_crash  # the crash came mid-way
        await suite.start("orchestrator")

        answer = await _retried(stub.RejudgeDebate, request)
        version = answer.verdict_version
        again = await stub.RejudgeDebate(request, timeout=60)
        after = (await stub.GetDebate(pb.GetDebateRequest(debate_id=debate_id), timeout=30)).debate

    assert version.version == 2 and again.verdict_version == version
    assert [a.round_number for a in version.assessments] == [1, 2, 3]
    assert [v.version for v in after.verdicts] == [1, 2] and after.verdicts[0] == before.verdicts[0]
    rows_after = _ledger(suite, debate_id)
    assert {k: rows_after[k] for k in rows_before} == rows_before
    new = {k: v for k, v in rows_after.items() if k not in rows_before}
    assert {k: new[k] for k in recorded_before_crash} == recorded_before_crash
    calls = [call.request_id for a in version.assessments for call in a.calls] + [
        call.request_id for call in version.verdict.calls
    ]
    assert sorted(new) == sorted(calls) and version.cost.calls == len(new)
    events = await _events_of(suite, debate_id)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert [e.WhichOneof("payload") for e in events].count("verdict_version_rendered") == 1


async def _events_of(suite: KillableSuite, debate_id: str) -> list[pb.DebateEvent]:
    async with grpc.aio.insecure_channel(suite.address("orchestrator")) as channel:
        return await _all_events(pbg.OrchestratorServiceStub(channel), debate_id)
