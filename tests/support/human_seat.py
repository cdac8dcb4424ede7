"""Human seat tests' shared parts (issue 19 part 3): a debate config with a human seat, and a
tenant's client of the orchestrator that submits turns and follows the event log."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc as pbg

from services.common.grpc_errors import error_details
from tests.reliability.processes import KillableSuite

KEYS = {"alice": "key-alice-human-1", "bob": "key-bob-human-22"}
API_KEYS = ",".join(f"{key}={name}" for name, key in KEYS.items())
INSTANT = {"SIM_FIRST_TOKEN_LATENCY": "0", "SIM_TOKENS_PER_SECOND": "0"}
P = c.HumanTimeoutPolicy


@pytest.fixture
async def human_suite(orchestrator_backend):
    """The three services as processes (KillableSuite) on the test's store, the simulated models
    instant, with the API keys of alice and bob."""
    suite = KillableSuite(
        orchestrator_backend.data_dir / "data",
        {**INSTANT, "API_KEYS": API_KEYS},
        log_level="WARNING",
        database_url=orchestrator_backend.url,
    )
    await suite.start_all()
    yield suite
    await suite.stop_all()


def human_config(
    rounds: int = 2,
    timeout_s: int = 60,
    policy: int = P.HUMAN_TIMEOUT_POLICY_SKIP_TURN,
    order: int = c.TURN_ORDER_SEQUENTIAL,
    max_tokens_per_turn: int = 96,
) -> c.DebateConfig:
    """Ann (a person, `human`) against Milo (sim/debater); Ann speaks first in a sequential round."""
    return c.DebateConfig(
        topic="Cities should ban private cars from their centres",
        participants=[
            c.Participant(name="Ann", model="human", persona="a commuter", stance="against"),
            c.Participant(name="Milo", model="sim/debater", persona="a city planner", stance="for"),
        ],
        format=c.DebateFormat(round_limit=rounds, turn_order=order),
        max_tokens_per_turn=max_tokens_per_turn,
        human=c.HumanSeatSettings(turn_timeout_seconds=timeout_s, timeout_policy=policy),
    )


def of_kind(events: list[pb.DebateEvent], kind: str) -> list:
    return [getattr(e, kind) for e in events if e.WhichOneof("payload") == kind]


def failure(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str, list[tuple[str, str]]]:
    """A failed call's code, ErrorInfo reason and field violations."""
    info, violations = error_details(error)
    return error.code(), info.reason if info is not None else "", violations


class TenantClient:
    """One tenant's calls to the orchestrator at `address` (its API key as the bearer token)."""

    def __init__(self, address: str, tenant: str):
        self.channel = grpc.aio.insecure_channel(address)
        self.stub = pbg.OrchestratorServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {KEYS[tenant]}"),)

    async def close(self) -> None:
        await self.channel.close()

    async def create_and_start(self, config: c.DebateConfig) -> str:
        created = await self.stub.CreateDebate(pb.CreateDebateRequest(config=config), metadata=self.metadata)
        debate_id = created.debate.debate_id
        await self.stub.StartDebate(pb.StartDebateRequest(debate_id=debate_id), metadata=self.metadata)
        return debate_id

    async def get(self, debate_id: str) -> pb.Debate:
        return (await self.stub.GetDebate(pb.GetDebateRequest(debate_id=debate_id), metadata=self.metadata)).debate

    async def status(self, debate_id: str) -> pb.DebateSummary:
        request = pb.GetDebateStatusRequest(debate_id=debate_id)
        return (await self.stub.GetDebateStatus(request, metadata=self.metadata)).debate

    async def submit(
        self, debate_id: str, participant: str, round_number: int, text: str, request_id: str = ""
    ) -> pb.SubmitTurnResponse:
        request = pb.SubmitTurnRequest(
            debate_id=debate_id, participant=participant, round_number=round_number, text=text, request_id=request_id
        )
        return await self.stub.SubmitTurn(request, metadata=self.metadata)

    async def events(self, debate_id: str, after: int = 0) -> list[pb.DebateEvent]:
        """The whole log from `after` to the debate's end (heartbeats left out)."""
        call = self.stub.StreamDebateEvents(
            pb.StreamDebateEventsRequest(debate_id=debate_id, after_sequence=after), metadata=self.metadata
        )
        return [r.event async for r in call if r.event.WhichOneof("payload") != "heartbeat"]

    async def until(self, debate_id: str, kind: str, count: int = 1, timeout: float = 60) -> list[pb.DebateEvent]:
        """The log from the start until the `count`-th event of `kind` (then the stream is left)."""
        out: list[pb.DebateEvent] = []
        call = self.stub.StreamDebateEvents(pb.StreamDebateEventsRequest(debate_id=debate_id), metadata=self.metadata)

        async def read() -> None:
            seen = 0
            async for response in call:
                out.append(response.event)
                if response.event.WhichOneof("payload") == kind:
                    seen += 1
                    if seen == count:
                        return
            raise AssertionError(f"the log ended before {count} {kind}: {[e.WhichOneof('payload') for e in out]}")

        try:
            await asyncio.wait_for(read(), timeout)
        finally:
            call.cancel()
        return out
