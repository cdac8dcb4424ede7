"""Each service in process on port 0, over a real channel: health, reflection, errors."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from debate.judge.v1 import judge_pb2, judge_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.accounting.server import SERVICE_NAME as ACCOUNTING
from services.common.errors import FieldViolation, InvalidArgument
from services.common.grpc_errors import error_details
from services.common.server import GrpcService, ServiceBinding
from services.common.settings import ServiceSettings
from services.judge.server import SERVICE_NAME as JUDGE
from services.orchestrator.server import SERVICE_NAME as ORCHESTRATOR
from tests.helpers import BIN


async def grpcurl(*args: str) -> str:
    """The stock grpcurl binary, run without blocking the in-process server's loop."""
    proc = await asyncio.create_subprocess_exec(str(BIN / "grpcurl"), *args, stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0
    return out.decode()


@pytest.fixture
def settings_for(tmp_path):
    from services.accounting.settings import AccountingSettings
    from services.judge.settings import JudgeSettings
    from services.orchestrator.settings import OrchestratorSettings

    classes = {"orchestrator": OrchestratorSettings, "judge": JudgeSettings, "accounting": AccountingSettings}

    def make(module):
        return classes[module](port=0, data_dir=str(tmp_path / module))

    return make


@pytest.mark.parametrize(
    "module,service_name",
    [("orchestrator", ORCHESTRATOR), ("judge", JUDGE), ("accounting", ACCOUNTING)],
)
async def test_service_reports_health_and_reflection(settings_for, module, service_name):
    build = __import__(f"services.{module}.server", fromlist=["build_service"]).build_service
    service = await build(settings_for(module))
    await service.start()
    try:
        async with grpc.aio.insecure_channel(service.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for name in ("", service_name):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        listed = (await grpcurl("-plaintext", service.address, "list")).split()
        assert service_name in listed and "grpc.health.v1.Health" in listed
        assert "rpc " in await grpcurl("-plaintext", service.address, "describe", service_name)
    finally:
        await service.stop(grace=0)


class _FailingJudge(judge_pb2_grpc.JudgeServiceServicer):
    async def EvaluateRound(self, request, context):
        raise InvalidArgument([FieldViolation("topic", "must not be empty"), FieldViolation("turns", "none given")])

    async def RenderVerdict(self, request, context):
        raise RuntimeError("a bug with a secret inside")


async def test_domain_errors_become_rich_statuses():
    service = GrpcService(
        ServiceSettings(port=0),
        [ServiceBinding(JUDGE, judge_pb2_grpc.add_JudgeServiceServicer_to_server, _FailingJudge())],
    )
    await service.start()
    try:
        async with grpc.aio.insecure_channel(service.address) as channel:
            stub = judge_pb2_grpc.JudgeServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await stub.EvaluateRound(judge_pb2.EvaluateRoundRequest(), timeout=5)
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            info, violations = error_details(bad.value)
            assert info.reason == "INVALID_ARGUMENT"
            assert violations == [("topic", "must not be empty"), ("turns", "none given")]

            with pytest.raises(grpc.aio.AioRpcError) as bug:
                await stub.RenderVerdict(judge_pb2.RenderVerdictRequest(), timeout=5)
            assert bug.value.code() == grpc.StatusCode.INTERNAL
            assert "secret" not in bug.value.details()
    finally:
        await service.stop(grace=0)
