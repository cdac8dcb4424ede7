"""The gRPC implementations of the judge and accounting peers (`services.orchestrator.peers`).

The engine depends on the two small protocols of `peers` only (tests pass in-process fakes). The gRPC
clients are built from the orchestrator's settings (the service's address, the deadline of a
call, and through `open_channel` the service key and TLS files), put a deadline on every call,
ride on `open_channel`'s UNAVAILABLE retry policy, and turn a failed call into a domain error,
so the engine never imports grpc.

The accounting client coalesces usage records: the `record_usage` calls made while no batch is
waiting to be sent (in practice those of one pass of the event loop: the turns of every debate
whose round ends together, the judge's calls of an assessment) go to the service as one
BatchRecordUsage RPC, and each caller gets its own item's outcome: its RecordUsageResponse, or the
domain error a RecordUsage call of its own would have raised. A failure of the RPC itself reaches
every caller of that batch; each item keeps its request_id, so a retry records nothing twice.
Budget reservations are coalesced the same way (`reserve_budget`: the turns of a round reserve
together) into BatchReserveBudget calls, which accounting decides one at a time in the order the
reservations were made, each under its own reservation_id, as separate ReserveBudget calls are.

With traces on (services.common.tracing), each call is a client span of the gRPC instrumentation
in the trace of the debate that made it. A usage record is a span of its own, `record_usage`
(INTERNAL, child of the turn or the judging step that records it: debate.id, the request_id, the
tokens), in its debate's trace. The BatchRecordUsage call that carries it serves several debates
at once, so it cannot be a child of each: it is a child of its first record's span (for one
debate, as in a quiet suite, the whole call is in that debate's trace) and links to the span of
every record it carries (OpenTelemetry's way to tie a batch to the work it serves).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeAlias, TypeVar

import grpc
from debate.accounting.v1 import accounting_pb2 as acc
from debate.accounting.v1 import accounting_pb2_grpc
from debate.common.v1 import common_pb2
from debate.judge.v1 import judge_pb2, judge_pb2_grpc
from google.protobuf.message import Message
from opentelemetry import context as otel_context
from opentelemetry import trace

from services.common import errors
from services.common.channels import open_channel
from services.common.grpc_errors import error_details, status_details
from services.common.metrics import GrpcMetrics
from services.common.tracing import Tracing
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


_STATUS_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
# The most items one BatchRecordUsage or BatchReserveBudget carries (the contract allows 1,000).
MAX_BATCH_RECORDS = 256
UNAVAILABLE = "ACCOUNTING_UNAVAILABLE"  # the reason `_mapped_error` gives a failure to reach accounting


def _mapped_error(service: str, code: grpc.StatusCode, message: str, reason: str | None) -> errors.DomainError:
    cls = _CODES.get(code, errors.Unavailable)
    reason = f"{service.upper()}_UNAVAILABLE" if cls is errors.Unavailable else reason
    return cls(f"{service} service: {code.name}: {message}", reason=reason)


def _same(error: Exception) -> Exception:
    return error


def _domain_error(service: str, error: grpc.aio.AioRpcError) -> errors.DomainError:
    info, _ = error_details(error)
    return _mapped_error(service, error.code(), error.details() or "", info.reason if info else None)


def _item_error(service: str, item: acc.ItemError) -> errors.DomainError:
    """One refused item of a batch, as the error of a call of its own (`_domain_error`)."""
    code = _STATUS_BY_NUMBER.get(item.code, grpc.StatusCode.UNKNOWN)
    return _mapped_error(service, code, item.message, item.reason or None)


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


def _outcomes(
    reply: acc.BatchRecordUsageResponse | acc.BatchReserveBudgetResponse,
) -> list:
    """Each item's response, or the domain error a call of its own would have raised, in order."""
    return [
        _item_error("accounting", result.error) if result.HasField("error") else result.response
        for result in reply.results
    ]


class GrpcJudge:
    """The judge service at JUDGE_SERVICE_ADDR; every call has RPC_TIMEOUT_SECONDS."""

    def __init__(
        self, settings: OrchestratorSettings, metrics: GrpcMetrics | None = None, tracing: Tracing | None = None
    ):
        self.channel = open_channel(settings.judge_service_addr, settings, metrics=metrics, tracing=tracing)
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


Request = TypeVar("Request", bound=Message)
Response = TypeVar("Response", bound=Message)
Pending: TypeAlias = "list[tuple[Request, asyncio.Future[Response]]]"


class _Coalescer(Generic[Request, Response]):
    """Calls of one kind made while no batch of theirs is waiting to be sent (in practice those of
    one pass of the event loop) go to the service together: one sender task, started by the first
    call while none is waiting, takes everything pending once it has one of the client's `slots`
    (calls made while it waits for one join its batch), hands at most MAX_BATCH_RECORDS of them to
    `send` and answers each caller with its own item's outcome. `send(batch)` makes the batch RPC
    and returns, in the batch's order, each item's response or the domain error a call of its own
    would have raised. A failure of the RPC itself reaches every caller of that batch, each its
    own instance of the error. A caller cancelled before its batch leaves is left out of it."""

    def __init__(
        self,
        slots: asyncio.Semaphore,
        send: Callable[[Pending[Request, Response]], Awaitable[Sequence[Response | errors.DomainError]]],
        name: str,
    ):
        self._slots = slots
        self._send = send
        self._name = name  # the sender tasks' name
        self._pending: list[tuple[Request, asyncio.Future[Response]]] = []
        self._waiting: asyncio.Task[None] | None = None  # the sender that will take what is pending
        self._senders: set[asyncio.Task[None]] = set()
        self.batches_sent = 0  # batch RPCs made (the tests and benchmarks read it)

    def submit(self, request: Request) -> asyncio.Future[Response]:
        """The future of `request`'s outcome, sent with the other calls made meanwhile."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Response] = loop.create_future()
        self._pending.append((request, answer))
        if self._waiting is None:
            self._start_sender(loop)
        return answer

    def _start_sender(self, loop: asyncio.AbstractEventLoop) -> None:
        task = loop.create_task(self._send_pending(), name=self._name)
        self._waiting = task
        self._senders.add(task)
        task.add_done_callback(self._senders.discard)

    async def _send_pending(self) -> None:
        """Takes what is pending once a slot is free (calls made while it waits join the batch),
        sends it, and answers each caller."""
        batch: list[tuple[Request, asyncio.Future[Response]]] = []
        try:
            async with self._slots:
                batch, self._pending = self._pending[:MAX_BATCH_RECORDS], self._pending[MAX_BATCH_RECORDS:]
                self._waiting = None
                if self._pending:
                    self._start_sender(asyncio.get_running_loop())
                batch = [(request, answer) for request, answer in batch if not answer.done()]  # not cancelled
                if not batch:
                    return
                self.batches_sent += 1
                results = await self._send(batch)
        except grpc.aio.AioRpcError as error:
            self._fail(batch, functools.partial(_domain_error, "accounting", error))
            return
        except Exception as error:  # noqa: BLE001 - each caller's, as a call of its own would have raised it
            self._fail(batch, functools.partial(_same, error))
            return
        except BaseException:  # cancelled (the client is closing)
            if self._waiting is asyncio.current_task():  # before it took its batch: it takes what is pending
                self._waiting = None
                batch, self._pending = self._pending, []
            self._fail(batch, lambda: errors.Unavailable("the accounting client stopped", reason=UNAVAILABLE))
            raise
        for i, (_, answer) in enumerate(batch):
            if answer.done():
                continue
            if i >= len(results):
                answer.set_exception(
                    errors.Unavailable(
                        "accounting service: a batch answered fewer items than it was sent", reason=UNAVAILABLE
                    )
                )
            else:
                result = results[i]
                if isinstance(result, errors.DomainError):
                    answer.set_exception(result)
                else:
                    answer.set_result(result)

    @staticmethod
    def _fail(batch: Pending[Request, Response], error: Callable[[], BaseException]) -> None:
        """Every caller of `batch` still waiting gets its own instance of `error()`."""
        for _, answer in batch:
            if not answer.done():
                answer.set_exception(error())

    async def close(self) -> None:
        """Stops the senders; the callers they had not answered get Unavailable."""
        for task in list(self._senders):
            task.cancel()
        await asyncio.gather(*self._senders, return_exceptions=True)


class GrpcAccounting:
    """The accounting service at ACCOUNTING_SERVICE_ADDR; every call has RPC_TIMEOUT_SECONDS,
    and at most `max_concurrent` are in flight. Usage records are coalesced into
    BatchRecordUsage calls, and budget reservations into BatchReserveBudget calls, of at most
    MAX_BATCH_RECORDS items each (see the module docstring)."""

    def __init__(
        self,
        settings: OrchestratorSettings,
        max_concurrent: int = 8,
        metrics: GrpcMetrics | None = None,
        tracing: Tracing | None = None,
    ):
        self.channel = open_channel(settings.accounting_service_addr, settings, metrics=metrics, tracing=tracing)
        self.tracer = tracing.tracer if tracing is not None else None  # None: traces off
        self.stub = accounting_pb2_grpc.AccountingServiceStub(self.channel)
        self.timeout = settings.rpc_timeout_seconds
        # At the end of a round every turn of every debate records its usage at once (800
        # calls for 200 debates): the accounting service answers them one after the other
        # anyway, and a few in flight at a time keep this event loop free for the live streams.
        self._slots = asyncio.Semaphore(max_concurrent)
        self._records: _Coalescer[acc.RecordUsageRequest, acc.RecordUsageResponse] = _Coalescer(
            self._slots, self._send_records, "accounting-usage-batch"
        )
        self._reservations: _Coalescer[acc.ReserveBudgetRequest, acc.ReserveBudgetResponse] = _Coalescer(
            self._slots, self._send_reservations, "accounting-reservation-batch"
        )
        # With traces on: the `record_usage` span of each pending record (its future as the key).
        self._record_spans: dict[asyncio.Future[acc.RecordUsageResponse], trace.Span] = {}
        self._batches_with_cost = 0  # record_usages_then_cost's BatchRecordUsage calls

    @property
    def batches_sent(self) -> int:
        """BatchRecordUsage calls made, coalesced or not (the tests and benchmarks read it)."""
        return self._records.batches_sent + self._batches_with_cost

    @property
    def reservation_batches_sent(self) -> int:
        """BatchReserveBudget calls made."""
        return self._reservations.batches_sent

    async def _call(self, method, request):
        try:
            async with self._slots:
                return await method(request, timeout=self.timeout, wait_for_ready=True)
        except grpc.aio.AioRpcError as error:
            raise _domain_error("accounting", error) from None

    async def record_usage(self, request: acc.RecordUsageRequest) -> acc.RecordUsageResponse:
        """The usage recorded under its request_id (RecordUsage's semantics), sent in a batch
        with the other records made meanwhile. Raises the item's own domain error, or the
        batch call's when that call failed."""
        if self.tracer is not None:
            return await self._traced_record(request)
        return await self._records.submit(request)

    async def record_usages_then_cost(
        self, requests: Sequence[acc.RecordUsageRequest], debate_id: str
    ) -> tuple[list[acc.RecordUsageResponse | errors.DomainError], common_pb2.DebateCost]:
        """`requests` recorded in one BatchRecordUsage call of their own (never split, never
        coalesced), which also asks for the debate's cost (GetDebateCost's answer, read once they
        are committed): each item's response or domain error, and the cost. Raises the call's
        domain error when the call failed."""
        self._batches_with_cost += 1
        reply = await self._call(
            self.stub.BatchRecordUsage,
            acc.BatchRecordUsageRequest(requests=requests, cost_debate_ids=[debate_id]),
        )
        if len(reply.results) != len(requests) or len(reply.debate_costs) != 1:
            raise errors.Unavailable(
                "accounting service: a batch answered other than it was asked (items or costs)", reason=UNAVAILABLE
            )
        return _outcomes(reply), reply.debate_costs[0]

    async def _traced_record(self, request: acc.RecordUsageRequest) -> acc.RecordUsageResponse:
        assert self.tracer is not None
        usage = request.usage
        attributes: dict[str, str | int] = {
            "debate.id": request.debate_id,
            "debate.participant": request.participant,
            "debate.usage.request_id": request.request_id,
            "gen_ai.request.model": request.model,
            "gen_ai.usage.input_tokens": usage.prompt_tokens,
            "gen_ai.usage.output_tokens": usage.completion_tokens,
        }
        with self.tracer.start_as_current_span("record_usage", attributes=attributes) as span:
            answer = self._records.submit(request)
            self._record_spans[answer] = span
            try:
                reply = await answer
            finally:
                self._record_spans.pop(answer, None)
            span.set_attribute("debate.usage.duplicate", reply.duplicate)
            return reply

    async def _send_records(
        self, batch: Pending[acc.RecordUsageRequest, acc.RecordUsageResponse]
    ) -> list[acc.RecordUsageResponse | errors.DomainError]:
        with self._batch_span(batch):
            reply = await self.stub.BatchRecordUsage(
                acc.BatchRecordUsageRequest(requests=[request for request, _ in batch]),
                timeout=self.timeout,
                wait_for_ready=True,
            )
        return _outcomes(reply)

    async def _send_reservations(
        self, batch: Pending[acc.ReserveBudgetRequest, acc.ReserveBudgetResponse]
    ) -> list[acc.ReserveBudgetResponse | errors.DomainError]:
        reply = await self.stub.BatchReserveBudget(
            acc.BatchReserveBudgetRequest(requests=[request for request, _ in batch]),
            timeout=self.timeout,
            wait_for_ready=True,
        )
        return _outcomes(reply)

    def _batch_span(
        self, batch: Pending[acc.RecordUsageRequest, acc.RecordUsageResponse]
    ) -> contextlib.AbstractContextManager[object]:
        """With traces on, a current span for the batch's call, `record_usage_batch` (child of the
        first record's span, linked to every record's: see the module docstring), the parent of
        the call's gRPC client span; with traces off, nothing."""
        if self.tracer is None:
            return contextlib.nullcontext()
        spans = [self._record_spans[answer] for _, answer in batch if answer in self._record_spans]
        parent = trace.set_span_in_context(spans[0]) if spans else otel_context.Context()
        return self.tracer.start_as_current_span(
            "record_usage_batch",
            context=parent,
            links=[trace.Link(span.get_span_context()) for span in spans],
            attributes={"debate.usage.batch_size": len(batch)},
        )

    async def reserve_budget(self, request: acc.ReserveBudgetRequest) -> acc.ReserveBudgetResponse:
        """The reservation decided under its reservation_id (ReserveBudget's semantics), sent in a
        batch with the other reservations made meanwhile (the turns of a round ask together),
        which accounting decides one at a time in the order they were made. Raises the item's own
        domain error, or the batch call's when that call failed."""
        return await self._reservations.submit(request)

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
        await self._records.close()
        await self._reservations.close()
        await self.channel.close()
