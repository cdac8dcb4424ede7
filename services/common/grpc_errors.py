"""The one place where domain errors become gRPC statuses."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from services.common.errors import ERROR_DOMAIN, DomainError, InvalidArgument
from services.common.handlers import HandlerCache, replace_behavior, wrap_behavior

log = logging.getLogger(__name__)

STATUS_DETAILS_KEY = "grpc-status-details-bin"


def status_for(error: DomainError) -> status_pb2.Status:
    """A google.rpc.Status with ErrorInfo, and BadRequest for invalid arguments."""
    details = []
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata)
    details.append(info)
    if isinstance(error, InvalidArgument):
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                    for v in error.violations
                ]
            )
        )
    details.extend(error.details)
    packed = []
    for detail in details:
        any_detail = any_pb2.Any()
        any_detail.Pack(detail)
        packed.append(any_detail)
    return status_pb2.Status(code=getattr(code_pb2, error.code), message=error.message, details=packed)


async def abort_with(context: grpc.aio.ServicerContext, error: DomainError) -> None:
    status = status_for(error)
    await context.abort(
        getattr(grpc.StatusCode, error.code),
        status.message,
        trailing_metadata=((STATUS_DETAILS_KEY, status.SerializeToString()),),
    )


async def _abort_internal(context: grpc.aio.ServicerContext, method: str) -> None:
    log.exception("unexpected error in %s", method)
    await abort_with(context, DomainError("internal error; see the service log"))


async def _abort_for(context: grpc.aio.ServicerContext, method: str, error: BaseException) -> None:
    """Ends the call with the status `error` deserves; re-raises what is not ours to map."""
    if isinstance(error, DomainError):
        await abort_with(context, error)
    elif isinstance(error, NotImplementedError):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented yet")
    elif isinstance(error, Exception) and not isinstance(error, grpc.aio.AbortError):
        await _abort_internal(context, method)
    else:
        raise error


def _guarded(method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
    """`behavior` with its exceptions mapped to statuses; an async generator stays one."""

    @contextlib.asynccontextmanager
    async def statuses(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[bool]:
        try:
            yield True
        except Exception as error:  # noqa: BLE001 (mapped to a status in one place)
            await _abort_for(context, method, error)

    return wrap_behavior(behavior, statuses)


class DomainErrorInterceptor(grpc.aio.ServerInterceptor):
    """Maps DomainError to a rich status, and any other exception to a bare INTERNAL."""

    def __init__(self) -> None:
        self._wrapped = HandlerCache()

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming:
            return handler
        method = handler_call_details.method
        return self._wrapped.get(
            method, handler, lambda h: replace_behavior(h, lambda behavior: _guarded(method, behavior))
        )


def status_details(error: grpc.aio.AioRpcError | grpc.RpcError) -> list[any_pb2.Any]:
    """Client side: the packed details of a failed call's google.rpc.Status (none without one)."""
    trailing: Any = error.trailing_metadata() or ()  # (key, value) pairs, whatever the stubs say
    details: list[any_pb2.Any] = []
    for key, value in trailing:
        if key == STATUS_DETAILS_KEY:
            details.extend(status_pb2.Status.FromString(value).details)
    return details


def error_details(
    error: grpc.aio.AioRpcError | grpc.RpcError,
) -> tuple[error_details_pb2.ErrorInfo | None, list[tuple[str, str]]]:
    """Client side: the ErrorInfo and field violations carried by a failed call."""
    info = None
    violations: list[tuple[str, str]] = []
    for detail in status_details(error):
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend((v.field, v.description) for v in bad.field_violations)
    return info, violations


def precondition_violations(error: grpc.aio.AioRpcError | grpc.RpcError) -> list[tuple[str, str]]:
    """Client side: the (subject, description) pairs of a failed call's PreconditionFailure."""
    found: list[tuple[str, str]] = []
    for detail in status_details(error):
        if detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            detail.Unpack(failure)
            found.extend((v.subject, v.description) for v in failure.violations)
    return found
