"""The test plan's scenarios (sections 2 to 4) over real gRPC channels, against the three real
services started as processes (accounting, judge, orchestrator) with the simulated models made
instant. Figures are printed by tests/benchmarks/bench_orchestrator.py, not asserted here."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time

import grpc
import pytest
from debate.accounting.v1 import accounting_pb2 as acc
from debate.accounting.v1 import accounting_pb2_grpc as accg
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc as pbg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.auth import bearer_metadata
from services.launcher import SuiteConfig
from tests.helpers import ROOT, free_port

S = pb.DebateState
ENDED = ("debate_completed", "debate_failed")
SERVICES = ("accounting", "judge", "orchestrator")  # no gateway: these tests speak gRPC
INSTANT = {"SIM_FIRST_TOKEN_LATENCY": "0", "SIM_TOKENS_PER_SECOND": "0"}


def start_suite(data_dir: str, extra_env: dict[str, str] | None = None) -> tuple[SuiteConfig, list[subprocess.Popen]]:
    """The three services as processes, SERVING. Returns the config and the processes."""
    config = SuiteConfig(
        orchestrator_port=free_port(),
        judge_port=free_port(),
        accounting_port=free_port(),
        data_dir=data_dir,
        log_level="WARNING",
        extra_env=dict(extra_env or {}),
    )
    specs = [spec for spec in config.process_specs() if spec.name in SERVICES]
    procs = []
    for spec in specs:
        with open(os.path.join(data_dir, f"{spec.name}.log"), "ab") as log:  # the child keeps its own copy
            procs.append(
                subprocess.Popen(
                    spec.argv, cwd=ROOT, env={**os.environ, **spec.env}, stdout=log, stderr=subprocess.STDOUT
                )
            )
    for spec in specs:
        wait_serving(spec.health_address, spec.health_service)
    return config, procs


def wait_serving(address: str, service: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1).status == 1:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{service} not SERVING at {address}")
            time.sleep(0.1)


def stop_suite(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    config, procs = start_suite(str(tmp_path_factory.mktemp("suite")), INSTANT)
    yield config
    stop_suite(procs)


def debate_config(n: int = 2, rounds: int = 2, **kwargs) -> c.DebateConfig:
    personas = ["a pragmatic economist", "a sceptical historian", "an urban engineer", "a public-health doctor"]
    return c.DebateConfig(
        topic="Cities should ban private cars from their centres",
        participants=[
            c.Participant(
                name=f"debater{i}",
                model="sim/debater",
                persona=personas[i % 4],
                stance="for" if i % 2 == 0 else "against",
            )
            for i in range(n)
        ],
        format=c.DebateFormat(round_limit=rounds),
        **kwargs,
    )


class Client:
    def __init__(self, address: str):
        self.channel = grpc.aio.insecure_channel(address)
        self.stub = pbg.OrchestratorServiceStub(self.channel)

    async def create_and_start(self, cfg: c.DebateConfig) -> tuple[str, pb.DebateSummary]:
        debate = (await self.stub.CreateDebate(pb.CreateDebateRequest(config=cfg))).debate
        started = (await self.stub.StartDebate(pb.StartDebateRequest(debate_id=debate.debate_id))).debate
        return debate.debate_id, started

    async def events(self, debate_id: str, after: int = 0, limit: int | None = None) -> list[pb.DebateEvent]:
        out = []
        call = self.stub.StreamDebateEvents(pb.StreamDebateEventsRequest(debate_id=debate_id, after_sequence=after))
        async for response in call:
            if response.event.WhichOneof("payload") == "heartbeat":
                continue
            out.append(response.event)
            if limit is not None and len(out) >= limit:
                call.cancel()
                break
        return out

    async def get(self, debate_id: str) -> pb.Debate:
        return (await self.stub.GetDebate(pb.GetDebateRequest(debate_id=debate_id))).debate


@pytest.fixture
async def client(suite):
    client = Client(suite.orchestrator_address)
    yield client
    await client.channel.close()


def gap_free(events) -> bool:
    return [e.sequence for e in events] == list(range(1, len(events) + 1))


@pytest.mark.parametrize("debaters", [2, 3, 4])
async def test_a_round_is_orchestrated_with_each_debater_count(client, suite, debaters):
    debate_id, _ = await client.create_and_start(debate_config(n=debaters, rounds=1))
    events = await client.events(debate_id)
    assert events[-1].WhichOneof("payload") == "debate_completed" and gap_free(events)
    debate = await client.get(debate_id)
    assert len(debate.rounds[0].turns) == debaters
    assert all(t.simulated and t.text.startswith("[simulated]") for t in debate.rounds[0].turns)
    assert debate.rounds[0].assessment.scores and debate.verdict.summary
    async with grpc.aio.insecure_channel(suite.address(suite.accounting_port)) as channel:
        cost = (
            await accg.AccountingServiceStub(channel).GetDebateCost(
                acc.GetDebateCostRequest(debate_id=debate_id), metadata=bearer_metadata(suite.service_api_key)
            )
        ).cost
    assert cost.total == debate.cost.total
    roles = {line.key: line.calls for line in cost.by_role}
    assert sum(roles.values()) >= debaters + 2  # every turn, the round's and the verdict's judge calls


async def test_four_parallel_streams_are_set_up_before_any_turn_completes(client):
    debate_id, _ = await client.create_and_start(debate_config(n=4, rounds=1))
    events = await client.events(debate_id)
    k = [e.WhichOneof("payload") for e in events]
    assert k.count("turn_started") == 4
    last_start = max(i for i, x in enumerate(k) if x == "turn_started")
    assert last_start < k.index("turn_completed")


async def test_five_debates_started_at_once_all_complete(client):
    started = await asyncio.gather(*(client.create_and_start(debate_config(rounds=2)) for _ in range(5)))
    assert all(s.state in (S.DEBATE_STATE_RUNNING, S.DEBATE_STATE_QUEUED) for _, s in started)
    logs = await asyncio.gather(*(client.events(debate_id) for debate_id, _ in started))
    assert all(log[-1].WhichOneof("payload") == "debate_completed" and gap_free(log) for log in logs)


async def test_ten_subscribers_on_one_debate_all_receive_every_event(client, suite):
    debate = (await client.stub.CreateDebate(pb.CreateDebateRequest(config=debate_config(rounds=2)))).debate
    watchers = [Client(suite.orchestrator_address) for _ in range(10)]
    try:
        tasks = [asyncio.create_task(w.events(debate.debate_id)) for w in watchers]
        await asyncio.sleep(0.2)
        await client.stub.StartDebate(pb.StartDebateRequest(debate_id=debate.debate_id))
        logs = await asyncio.gather(*tasks)
    finally:
        for w in watchers:
            await w.channel.close()
    assert all(len(log) > 10 and gap_free(log) for log in logs)
    assert len({tuple(e.SerializeToString() for e in log) for log in logs}) == 1


async def test_twenty_debates_in_a_burst_are_all_accepted_and_health_stays_serving(client, suite):
    started = await asyncio.gather(*(client.create_and_start(debate_config(rounds=1)) for _ in range(20)))
    assert all(s.state in (S.DEBATE_STATE_RUNNING, S.DEBATE_STATE_QUEUED) for _, s in started)
    async with grpc.aio.insecure_channel(suite.orchestrator_address) as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    logs = await asyncio.gather(*(client.events(debate_id) for debate_id, _ in started))
    assert all(log[-1].WhichOneof("payload") == "debate_completed" for log in logs)


async def test_disconnect_and_resume_with_after_sequence_sees_every_event_once(client):
    debate_id, _ = await client.create_and_start(debate_config(rounds=3))
    seen = await client.events(debate_id, limit=5)
    while seen[-1].WhichOneof("payload") not in ENDED:
        seen += await client.events(debate_id, after=seen[-1].sequence, limit=6)
    assert gap_free(seen)
    whole = await client.events(debate_id)
    assert [e.SerializeToString() for e in whole] == [e.SerializeToString() for e in seen]
