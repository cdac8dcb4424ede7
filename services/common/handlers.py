"""Rebuilding a gRPC method handler around new behaviour: what every server interceptor of
the suite does (error mapping, malformed requests, authentication and tenants, stream limits).

A handler's behaviour is a coroutine function (unary, or streaming written with
`await context.write(...)`) or an async generator function (streaming with `yield`), and a
wrapper must stay the same kind. `wrap_behavior` is the one place that knows this: an
interceptor gives it an async context manager to run the behaviour inside.

An interceptor runs on every call, but what it wraps a handler in depends only on the method,
the handler it is given and (for authentication) the tenant: `HandlerCache` keeps each wrapped
handler, so a call pays for its wrapper's context manager, not for building the wrapper.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Hashable
from contextlib import AbstractAsyncContextManager
from typing import Any

import grpc

_SAME: Any = object()

# (request or request iterator, servicer context) -> a context manager whose value says
# whether the behaviour runs at all (False: the call was answered already, e.g. aborted).
Around = Callable[[Any, Any], AbstractAsyncContextManager[bool]]


def wrap_behavior(behavior: Callable[..., Any], around: Around) -> Callable[..., Any]:
    """`behavior` run inside `around(request, context)`; an async generator stays one (its
    items pass through untouched, and `around` spans the whole stream)."""
    if inspect.isasyncgenfunction(behavior):

        async def stream(request: Any, context: Any) -> Any:
            async with around(request, context) as proceed:
                if proceed:
                    async for item in behavior(request, context):
                        yield item

        return stream

    async def call(request: Any, context: Any) -> Any:
        async with around(request, context) as proceed:
            if proceed:
                return await behavior(request, context)
        return None

    return call


def replace_behavior(
    handler: grpc.RpcMethodHandler,
    make: Callable[[Callable[..., Any]], Callable[..., Any]],
    *,
    request_deserializer: Any = _SAME,
) -> grpc.RpcMethodHandler:
    """The same kind of handler with `make(behavior)` as its behaviour; `request_deserializer`
    replaces the handler's own when given (None: hand the raw bytes on)."""
    if request_deserializer is _SAME:
        request_deserializer = handler.request_deserializer
    serializer = handler.response_serializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(make(handler.unary_unary), request_deserializer, serializer)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(make(handler.unary_stream), request_deserializer, serializer)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(make(handler.stream_unary), request_deserializer, serializer)
    assert handler.stream_stream is not None  # a handler has exactly one behaviour
    return grpc.stream_stream_rpc_method_handler(make(handler.stream_stream), request_deserializer, serializer)


class HandlerCache:
    """Wrapped handlers, each built once: `get(key, handler, build)` is `build(handler)`, the same
    object again for the same key and the same `handler` object. At most `limit` entries (then it
    starts again empty), so keys that are not bounded (tenant names from a gateway's header) cannot
    grow it without end. The wrappers must keep no per-call state (the suite's do not: their
    context managers are made per call)."""

    def __init__(self, limit: int = 4096):
        self.limit = limit
        self._entries: dict[Hashable, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def get(
        self,
        key: Hashable,
        handler: grpc.RpcMethodHandler,
        build: Callable[[grpc.RpcMethodHandler], grpc.RpcMethodHandler],
    ) -> grpc.RpcMethodHandler:
        entry = self._entries.get(key)
        if entry is not None and entry[0] is handler:
            return entry[1]
        wrapped = build(handler)
        if len(self._entries) >= self.limit:
            self._entries.clear()
        self._entries[key] = (handler, wrapped)
        return wrapped

    def __len__(self) -> int:
        return len(self._entries)
