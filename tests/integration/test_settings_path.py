"""A flag given on the command line reaches the orchestrator's outgoing channels.

The judge and accounting run in this process on port 0 and admit only the suite's service
key. The orchestrator's settings come from flags alone (`--service-api-key ...`, with
SERVICE_API_KEY unset), exactly as `python -m services.orchestrator` builds them, and its
composition root opens its channels from those settings: a debate then runs to its verdict,
which needs every judge and accounting call to carry the key as its bearer token.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from debate.accounting.v1 import accounting_pb2, accounting_pb2_grpc
from debate.common.v1 import common_pb2
from debate.judge.v1 import judge_pb2, judge_pb2_grpc
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc

from services.accounting.server import build_service as build_accounting
from services.accounting.settings import AccountingSettings
from services.common.channels import open_channel
from services.common.settings import load_settings
from services.judge.server import build_service as build_judge
from services.judge.settings import JudgeSettings
from services.orchestrator.clients import GrpcAccounting
from services.orchestrator.server import build_service as build_orchestrator
from services.orchestrator.settings import OrchestratorSettings

SERVICE_KEY = "suite-flag-key-0123456789"
TERMINAL = {
    pb.DEBATE_STATE_COMPLETED,
    pb.DEBATE_STATE_FAILED,
    pb.DEBATE_STATE_CANCELLED,
    pb.DEBATE_STATE_BUDGET_EXCEEDED,
}


@pytest.fixture
async def keyed_peers(tmp_path, monkeypatch):
    """The judge and accounting, started on port 0, admitting only SERVICE_KEY (tenant "suite")."""
    for name in ("SERVICE_API_KEY", "API_KEYS"):
        monkeypatch.delenv(name, raising=False)
    internal = {"port": 0, "api_keys": f"{SERVICE_KEY}=suite"}
    judge = await build_judge(JudgeSettings(data_dir=str(tmp_path / "judge"), **internal))
    accounting = await build_accounting(AccountingSettings(data_dir=str(tmp_path / "accounting"), **internal))
    await judge.start()
    await accounting.start()
    try:
        yield judge, accounting
    finally:
        await judge.stop(grace=0)
        await accounting.stop(grace=0)


def _orchestrator_flags(tmp_path, judge, accounting, *extra: str) -> OrchestratorSettings:
    return load_settings(
        OrchestratorSettings,
        [
            "--port=0",
            f"--data-dir={tmp_path / 'orchestrator'}",
            f"--judge-service-addr={judge.address}",
            f"--accounting-service-addr={accounting.address}",
            "--rpc-timeout-seconds=10",
            "--sim-first-token-latency=0",
            "--sim-tokens-per-second=0",
            *extra,
        ],
    )


async def test_the_peers_refuse_a_call_without_the_service_key(keyed_peers):
    judge, accounting = keyed_peers
    async with open_channel(accounting.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await accounting_pb2_grpc.AccountingServiceStub(channel).GetDebateCost(
                accounting_pb2.GetDebateCostRequest(debate_id="d1"), timeout=5
            )
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    async with open_channel(judge.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await judge_pb2_grpc.JudgeServiceStub(channel).EvaluateRound(judge_pb2.EvaluateRoundRequest(), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_the_service_key_given_as_a_flag_is_the_bearer_of_the_orchestrators_calls(tmp_path, keyed_peers):
    judge, accounting = keyed_peers
    settings = _orchestrator_flags(tmp_path, judge, accounting, f"--service-api-key={SERVICE_KEY}")
    assert settings.service_api_key.get_secret_value() == SERVICE_KEY

    client = GrpcAccounting(settings)  # the orchestrator's own client, as its composition root builds it
    try:
        cost = await client.debate_cost("d1")
        assert cost.debate_id == "d1"
    finally:
        await client.close()

    orchestrator = await build_orchestrator(settings)
    await orchestrator.start()
    try:
        async with grpc.aio.insecure_channel(orchestrator.address) as channel:
            stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
            config = common_pb2.DebateConfig(
                topic="Should flags beat the environment?",
                participants=[
                    common_pb2.Participant(name="Ada", model="sim/debater", persona="an engineer", stance="for"),
                    common_pb2.Participant(name="Milo", model="sim/debater", persona="an operator", stance="against"),
                ],
                judge=common_pb2.JudgeConfig(models=["sim/judge"]),
                format=common_pb2.DebateFormat(round_limit=1, turn_order=common_pb2.TURN_ORDER_SIMULTANEOUS),
                max_tokens_per_turn=16,
            )
            created = await stub.CreateDebate(pb.CreateDebateRequest(config=config), timeout=10)
            debate_id = created.debate.debate_id
            await stub.StartDebate(pb.StartDebateRequest(debate_id=debate_id), timeout=10)
            debate = created.debate
            for _ in range(600):
                debate = (await stub.GetDebate(pb.GetDebateRequest(debate_id=debate_id), timeout=10)).debate
                if debate.state in TERMINAL:
                    break
                await asyncio.sleep(0.05)
    finally:
        await orchestrator.stop(grace=0)
    assert debate.state == pb.DEBATE_STATE_COMPLETED, debate.end_reason
    assert debate.verdict.judge_models == ["sim/judge"]  # the judge answered
    assert debate.cost.usage.total_tokens > 0  # accounting recorded every turn
