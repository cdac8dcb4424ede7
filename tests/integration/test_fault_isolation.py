"""A fault in one debate never reaches another debate or another tenant, over the orchestrator's
real gRPC API (in-process judge, accounting and a scripted model from orchestrator_fakes).

One of alice's debaters gets a payload the engine cannot use (answer text as a list of content
blocks, or a TypeError in the middle of the stream) while bob's debate runs beside it and carol
keeps creating and starting debates. Alice's debate ends FAILED with a TurnFailed and a
DebateFailed of the stable reason PROVIDER_BAD_RESPONSE, the attempt's usage recorded as an
estimate; bob's and carol's debates complete, and no call of anyone answers INTERNAL."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc as pbg

from services.common.llm.base import CompletionRequest, TextDelta
from services.common.money import usd
from services.orchestrator.run import turn_key
from services.orchestrator.server import build_service
from services.orchestrator.settings import OrchestratorSettings
from tests.support.orchestrator_fakes import EventScriptLLM, MemoryAccounting, MemoryJudge, speaker

S = pb.DebateState
KEYS = {"alice": "key-alice-123", "bob": "key-bob-4567", "carol": "key-carol-890"}
BAD = "PROVIDER_BAD_RESPONSE"

FAULTS = {
    # every chunk after the first: as a provider that sends content blocks does
    "text_as_a_list_of_blocks": [TextDelta("Cars "), *[TextDelta([{"type": "text", "text": " word"}])] * 60],
    "type_error_mid_stream": [TextDelta("Cars "), TextDelta("choke "), TypeError("string indices must be integers")],
}


def config(rounds: int) -> c.DebateConfig:
    return c.DebateConfig(
        topic="Should cities ban cars from their centres?",
        participants=[
            c.Participant(name="ada", model="sim/debater", persona="an engineer", stance="for"),
            c.Participant(name="milo", model="sim/debater", persona="a historian", stance="against"),
        ],
        format=c.DebateFormat(round_limit=rounds),
        budget=usd("5"),
    )


class Tenant:
    def __init__(self, stub: pbg.OrchestratorServiceStub, name: str):
        self.stub, self.metadata = stub, (("authorization", f"Bearer {KEYS[name]}"),)

    async def create(self, rounds: int) -> str:
        request = pb.CreateDebateRequest(config=config(rounds))
        return (await self.stub.CreateDebate(request, metadata=self.metadata)).debate.debate_id

    async def start(self, debate_id: str) -> None:
        await self.stub.StartDebate(pb.StartDebateRequest(debate_id=debate_id), metadata=self.metadata)

    async def events(self, debate_id: str) -> list[pb.DebateEvent]:
        call = self.stub.StreamDebateEvents(pb.StreamDebateEventsRequest(debate_id=debate_id), metadata=self.metadata)
        return [r.event async for r in call if r.event.WhichOneof("payload") != "heartbeat"]

    async def get(self, debate_id: str) -> pb.Debate:
        return (await self.stub.GetDebate(pb.GetDebateRequest(debate_id=debate_id), metadata=self.metadata)).debate


def of_kind(events: list[pb.DebateEvent], kind: str) -> list:
    return [getattr(e, kind) for e in events if e.WhichOneof("payload") == kind]


@pytest.mark.parametrize("fault", FAULTS, ids=list(FAULTS))
async def test_a_faulty_debate_fails_alone_while_other_tenants_go_on(tmp_path, fault):
    faulty: set[str] = set()

    def script(request: CompletionRequest):
        if request.request_id.split("/")[1] in faulty and speaker(request) == "milo":
            return FAULTS[fault]
        return None

    accounting = MemoryAccounting()
    settings = OrchestratorSettings(
        port=0, data_dir=str(tmp_path), api_keys=",".join(f"{key}={name}" for name, key in KEYS.items())
    )
    service = await build_service(
        settings, llm=EventScriptLLM(script, delay=0.002), judge=MemoryJudge(), accounting=accounting
    )
    port = await service.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = pbg.OrchestratorServiceStub(channel)
    alice, bob, carol = (Tenant(stub, name) for name in ("alice", "bob", "carol"))
    try:
        healthy = await bob.create(rounds=3)
        await bob.start(healthy)
        broken = await alice.create(rounds=2)
        faulty.add(broken)
        await alice.start(broken)

        async def carol_keeps_working() -> list[str]:
            ids = []
            for _ in range(6):
                debate_id = await carol.create(rounds=1)
                await carol.start(debate_id)
                ids.append(debate_id)
                await asyncio.sleep(0.005)
            return ids

        carols, broken_events, healthy_events = await asyncio.gather(
            carol_keeps_working(), alice.events(broken), bob.events(healthy)
        )

        # alice's debate: FAILED with the stable reason, its failed turn logged and settled
        failed = of_kind(broken_events, "turn_failed")
        assert [(f.round_number, f.attempt, f.reason, f.will_retry) for f in failed if f.participant == "milo"] == [
            (1, 1, BAD, False)
        ]
        # ada speaks at the same time (the simultaneous format): her call, if still under way, is
        # stopped and settled with the debate's reason
        assert all(f.reason == BAD and not f.will_retry for f in failed)
        (ending,) = of_kind(broken_events, "debate_failed")
        assert ending.state == S.DEBATE_STATE_FAILED and ending.reason == BAD
        debate = await alice.get(broken)
        assert debate.state == S.DEBATE_STATE_FAILED and debate.end_reason.startswith(f"{BAD}: ")
        assert "INTERNAL" not in debate.end_reason
        record = accounting.records[turn_key(broken, 1, "milo", 1)]
        assert record.usage.estimated and record.usage.prompt_tokens > 0 and record.usage.completion_tokens > 0
        assert not [k for k, (d, _) in accounting.reservations.items() if d == broken]
        assert "word" not in "".join(d.text for d in of_kind(broken_events, "token_delta"))

        # bob's debate beside it, and carol's started meanwhile: complete, gap-free
        assert [e.sequence for e in healthy_events] == list(range(1, len(healthy_events) + 1))
        assert of_kind(healthy_events, "turn_failed") == [] and of_kind(healthy_events, "debate_completed")
        for debate_id in carols:
            assert of_kind(await carol.events(debate_id), "debate_completed")

        # and every tenant can still create and start debates afterwards
        for tenant in (bob, carol, alice):
            debate_id = await tenant.create(rounds=1)
            await tenant.start(debate_id)
            assert of_kind(await tenant.events(debate_id), "debate_completed")
            assert (await tenant.get(debate_id)).state == S.DEBATE_STATE_COMPLETED
    finally:
        await channel.close()
        await service.stop(0)
