"""The gRPC implementations of the judge and accounting peers (`services.orchestrator.peers`).

The engine depends on the two small protocols of `peers` only (tests pass in-process fakes). The gRPC
clients are built from the orchestrator's settings (the service's address, the deadline of a
call, and through `open_channel` the service key and TLS files), put a deadline on every call,
ride on `open_channel`'s UNAVAILABLE retry policy, and turn a failed call into a domain error,
so the engine never imports grpc.
"""

from __future__ import annotations

import asyncio

import grpc
from debate.accounting.v1 import accounting_pb2 as acc
from debate.accounting.v1 import accounting_pb2_grpc
from debate.judge.v1 import judge_pb2, judge_pb2_grpc

from services.common import errors
from services.common.channels import open_channel
from services.common.grpc_errors import error_details, status_details
from services.orchestrator.settings import OrchestratorSettings

_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.FailedPrecondition,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.ResourceExhausted,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.DeadlineExceeded,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
    grpc.StatusCode.ABORTED: errors.Aborted,
}


def _domain_error(service: str, error: grpc.aio.AioRpcError) -> errors.DomainError:
    info, _ = error_details(error)
    cls = _CODES.get(error.code(), errors.Unavailable)
    reason = f"{service.upper()}_UNAVAILABLE" if cls is errors.Unavailable else (info.reason if info else None)
    return cls(f"{service} service: {error.code().name}: {error.details()}", reason=reason)


def _judge_error(error: grpc.aio.AioRpcError) -> errors.DomainError:
    """The judge's failure as a domain error; the model calls the failed request made (its
    `judge.v1.BilledCalls` status detail) ride along in the error's `details`, for the engine
    to record (`judging.billed_calls`)."""
    domain = _domain_error("judge", error)
    for detail in status_details(error):
        if detail.Is(judge_pb2.BilledCalls.DESCRIPTOR):
            billed = judge_pb2.BilledCalls()
            detail.Unpack(billed)
            domain.details.append(billed)
    return domain


class GrpcJudge:
    """The judge service at JUDGE_SERVICE_ADDR; every call has RPC_TIMEOUT_SECONDS."""

    def __init__(self, settings: OrchestratorSettings):
        self.channel = open_channel(settings.judge_service_addr, settings)
        self.stub = judge_pb2_grpc.JudgeServiceStub(self.channel)
        self.timeout = settings.rpc_timeout_seconds

    async def evaluate_round(self, request):
        try:
            return (await self.stub.EvaluateRound(request, timeout=self.timeout, wait_for_ready=True)).assessment
        except grpc.aio.AioRpcError as error:
            raise _judge_error(error) from None

    async def render_verdict(self, request):
        try:
            return (await self.stub.RenderVerdict(request, timeout=self.timeout, wait_for_ready=True)).verdict
        except grpc.aio.AioRpcError as error:
            raise _judge_error(error) from None

    async def close(self) -> None:
        await self.channel.close()


class GrpcAccounting:
    """The accounting service at ACCOUNTING_SERVICE_ADDR; every call has RPC_TIMEOUT_SECONDS,
    and at most `max_concurrent` are in flight."""

    def __init__(self, settings: OrchestratorSettings, max_concurrent: int = 8):
        self.channel = open_channel(settings.accounting_service_addr, settings)
        self.stub = accounting_pb2_grpc.AccountingServiceStub(self.channel)
        self.timeout = settings.rpc_timeout_seconds
        # At the end of a round every turn of every debate records its usage at once (800
        # calls for 200 debates): the accounting service answers them one after the other
        # anyway, and a few in flight at a time keep this event loop free for the live streams.
        self._slots = asyncio.Semaphore(max_concurrent)

    async def _call(self, method, request):
        try:
            async with self._slots:
                return await method(request, timeout=self.timeout, wait_for_ready=True)
        except grpc.aio.AioRpcError as error:
            raise _domain_error("accounting", error) from None

    async def record_usage(self, request):
        return await self._call(self.stub.RecordUsage, request)

    async def reserve_budget(self, request):
        return await self._call(self.stub.ReserveBudget, request)

    async def release_budget(self, reservation_id):
        await self._call(self.stub.ReleaseBudget, acc.ReleaseBudgetRequest(reservation_id=reservation_id))

    async def set_debate_budget(self, debate_id, cap):
        request = acc.SetDebateBudgetRequest(debate_id=debate_id)
        if cap is not None:
            request.cap.CopyFrom(cap)
        await self._call(self.stub.SetDebateBudget, request)

    async def debate_cost(self, debate_id):
        return (await self._call(self.stub.GetDebateCost, acc.GetDebateCostRequest(debate_id=debate_id))).cost

    async def close(self) -> None:
        await self.channel.close()
