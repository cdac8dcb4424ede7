"""Verdict versions through the orchestrator alone (a real gRPC channel, both stores), its
collaborators the in-process stand-ins of tests/support/orchestrator_fakes.py, which count what
they were asked: a re-judging calls no debater model (the counting LLM sees no request) and asks
the judge for every round and a verdict under its own keys, priced (the stand-in accounting's
prices are not $0) into the version's cost and the debate's; a continuation's follow-up question
reaches the debaters of the added rounds only."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import grpc
import pytest
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc as pbg

from services.orchestrator.server import build_service
from services.orchestrator.settings import OrchestratorSettings
from tests.support.orchestrator_fakes import MemoryAccounting, MemoryJudge, ScriptedLLM

S = pb.DebateState
QUESTION = "What about deliveries?"


@pytest.fixture
async def engine(orchestrator_backend):
    llm, accounting, judge = ScriptedLLM(chunks=6), MemoryAccounting(), MemoryJudge()
    settings = OrchestratorSettings(port=0, **orchestrator_backend.settings())
    service = await build_service(settings, llm=llm, judge=judge, accounting=accounting)
    port = await service.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield pbg.OrchestratorServiceStub(channel), llm, judge, accounting
    await channel.close()
    await service.stop(0)


async def completed(stub, debate_id: str) -> pb.Debate:
    deadline = time.monotonic() + 30
    while True:
        debate = (await stub.GetDebate(pb.GetDebateRequest(debate_id=debate_id))).debate
        if debate.state == S.DEBATE_STATE_COMPLETED:
            return debate
        assert debate.state in (S.DEBATE_STATE_RUNNING, S.DEBATE_STATE_QUEUED), debate.end_reason
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


def cost(records) -> Decimal:
    return sum((Decimal(r.cost.amount) for r in records), Decimal(0))


async def test_rejudging_calls_no_debater_and_a_follow_up_question_reaches_only_the_added_rounds(engine):
    stub, llm, judge, accounting = engine
    config = c.DebateConfig(
        topic="Should cities ban cars?",
        participants=[
            c.Participant(name="Ada", model="sim/debater", persona="an urbanist", stance="for"),
            c.Participant(name="Milo", model="sim/debater", persona="a driver", stance="against"),
        ],
        format=c.DebateFormat(round_limit=2),
    )
    debate_id = (await stub.CreateDebate(pb.CreateDebateRequest(config=config))).debate.debate_id
    await stub.StartDebate(pb.StartDebateRequest(debate_id=debate_id))
    before = await completed(stub, debate_id)
    asked = len(llm.requests)
    assert asked == 4 and sorted(judge.rounds) == [1, 2] and judge.verdicts == 1
    keys_before = set(accounting.records)

    request = pb.RejudgeDebateRequest(
        debate_id=debate_id, judge=c.JudgeConfig(models=["sim/judge"], orderings=2), request_id="r1"
    )
    version = (await stub.RejudgeDebate(request)).verdict_version
    assert len(llm.requests) == asked  # no debater model was called
    assert sorted(judge.rounds) == [1, 1, 2, 2] and judge.verdicts == 2
    new = [accounting.records[k] for k in set(accounting.records) - keys_before]
    assert sorted(r.request_id for r in new) == sorted(
        [f"debates/{debate_id}/verdicts/2/rounds/{r}/judge/sim-judge/1" for r in (1, 2)]
        + [f"debates/{debate_id}/verdicts/2/verdict/sim-judge/1"]
    )
    assert cost(new) > 0 and Decimal(version.cost.cost.amount) == cost(new)
    after = (await stub.GetDebate(pb.GetDebateRequest(debate_id=debate_id))).debate
    assert (
        Decimal(after.cost.total.amount)
        == cost(accounting.records.values())
        == cost(new) + Decimal(before.cost.total.amount)
    )
    await stub.RejudgeDebate(request)  # a retry: the judge is not asked again, nothing recorded
    assert judge.verdicts == 2 and len(accounting.records) == len(keys_before) + len(new)

    await stub.ContinueDebate(
        pb.ContinueDebateRequest(debate_id=debate_id, extra_rounds=1, question=QUESTION, request_id="c1")
    )
    await completed(stub, debate_id)
    added = llm.requests[asked:]
    assert len(added) == 2 and all(QUESTION in r.messages[-1].content for r in added)
    assert "(round 3 of 3)" in added[0].messages[-1].content
    assert not any(QUESTION in m.content for r in llm.requests[:asked] for m in r.messages)
    assert sorted(judge.rounds) == [1, 1, 2, 2, 3] and judge.verdicts == 3  # round 3 scored once, one verdict
