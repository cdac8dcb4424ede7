"""Rebuilding a gRPC method handler around new behaviour: what every server interceptor of
the suite does (error mapping, malformed requests, authentication and tenants)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

_SAME: Any = object()


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
    return grpc.stream_stream_rpc_method_handler(make(handler.stream_stream), request_deserializer, serializer)
