"""The gRPC side of the metrics (services.common.metrics.GrpcMetrics): a server interceptor that
counts and times every call a server handles, and client interceptors for a channel's calls.

Labels as go-grpc-prometheus and py-grpc-prometheus give them: `grpc_type` (unary, server_stream,
client_stream, bidi_stream), `grpc_service`, `grpc_method`, and on `*_handled_total` `grpc_code`,
the status code's name (OK, INVALID_ARGUMENT, ...). A call pays for its method's metric children
being looked up in a small dict, one counter increment and one histogram observation.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from services.common.handlers import HandlerCache, replace_behavior, wrap_behavior
from services.common.metrics import CallMetrics, GrpcMetrics


def _split(method: str) -> tuple[str, str]:
    """'/pkg.Service/Method' -> ('pkg.Service', 'Method')."""
    service, _, name = method.lstrip("/").rpartition("/")
    return service, name


def _grpc_type(request_streaming: bool, response_streaming: bool) -> str:
    if request_streaming:
        return "bidi_stream" if response_streaming else "client_stream"
    return "server_stream" if response_streaming else "unary"


class _Measured:
    """The metric children of one method, bound once (a call only looks them up by code)."""

    __slots__ = ("_family", "handled", "handling", "labels", "started")

    def __init__(self, side: CallMetrics, labels: tuple[str, str, str]):
        self.labels = labels
        self.started = side.started.labels(*labels)
        self.handling = side.handling.labels(*labels)
        self.handled: dict[str, Any] = {}  # status code name -> its child of `handled`
        self._family = side.handled

    def done(self, code: str, seconds: float) -> None:
        child = self.handled.get(code)
        if child is None:
            child = self.handled[code] = self._family.labels(*self.labels, code)
        child.inc()
        self.handling.observe(seconds)


def _code_name(code: grpc.StatusCode | None) -> str:
    return "OK" if code is None else code.name


class ServerMetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts every call a server handles by method and final status, and times it. The outermost
    interceptor, so that calls refused by another (authentication, malformed requests) count too."""

    def __init__(self, metrics: GrpcMetrics):
        self.metrics = metrics
        self._wrapped = HandlerCache()

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        return self._wrapped.get((method, id(handler)), handler, lambda h: self._measuring(h, method))

    def _measuring(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        service, name = _split(method)
        kind = _grpc_type(handler.request_streaming, handler.response_streaming)
        measured = _Measured(self.metrics.server, (kind, service, name))

        @contextlib.asynccontextmanager
        async def timed(request: Any, context: Any) -> AsyncIterator[bool]:
            measured.started.inc()
            started = time.perf_counter()
            code = "UNKNOWN"
            try:
                yield True
                code = _code_name(context.code())
            except grpc.aio.AbortError:
                code = _code_name(context.code())
                raise
            except BaseException as error:  # CancelledError: the client left, or the server stops
                code = "CANCELLED" if isinstance(error, (GeneratorExit, asyncio.CancelledError)) else "UNKNOWN"
                raise
            finally:
                measured.done(code, time.perf_counter() - started)

        return replace_behavior(handler, lambda behavior: wrap_behavior(behavior, timed))


class _UnaryUnaryMetrics(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, metrics: GrpcMetrics):
        self.metrics = metrics
        self._methods: dict[str, _Measured] = {}

    def _measured(self, method: str | bytes) -> _Measured:
        key = method.decode() if isinstance(method, bytes) else method
        measured = self._methods.get(key)
        if measured is None:
            service, name = _split(key)
            measured = self._methods[key] = _Measured(self.metrics.client, ("unary", service, name))
        return measured

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        measured = self._measured(client_call_details.method)
        measured.started.inc()
        started = time.perf_counter()
        call = await continuation(client_call_details, request)
        try:
            code = await call.code()
        except asyncio.CancelledError:
            measured.done("CANCELLED", time.perf_counter() - started)
            raise
        measured.done(_code_name(code), time.perf_counter() - started)
        return call


def client_interceptors(metrics: GrpcMetrics) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors for a channel's unary calls (the suite's service-to-service calls are unary)."""
    return [_UnaryUnaryMetrics(metrics)]
