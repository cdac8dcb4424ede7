"""The orchestrator's wire edge: how StreamDebateEvents frames events, and how the servicer is
registered with a gRPC server.

The event hub (events.py) keeps every event serialised once, as a length-prefixed body, and
asks a `Framing` to turn bodies into response messages. `FRAMING` writes the bytes of a
`StreamDebateEventsResponse` directly: a body behind the tag of `event` (one event a message),
or several bodies each behind the tag of `events` (`batch_events`). Those bytes are the
message; `add_to_server` registers StreamDebateEvents with a pass-through serializer so
gRPC sends them as they are, with no per-subscriber copy or re-serialisation.

`add_to_server` builds the method handlers itself, from the service's descriptor and the
servicer's methods, as the generated `add_OrchestratorServiceServicer_to_server` does, with
one difference: the pass-through serializer of StreamDebateEvents.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from google.protobuf import message_factory

EVENT_TAG = b"\x0a"  # StreamDebateEventsResponse.event: field 1, length-delimited
EVENTS_TAG = b"\x12"  # StreamDebateEventsResponse.events: field 2, length-delimited

SERVICE = pb.DESCRIPTOR.services_by_name["OrchestratorService"]
# Methods whose behaviour yields serialised responses (bytes) rather than messages.
PRE_SERIALISED = frozenset({"StreamDebateEvents"})


class StreamFraming:
    """Event bodies as serialised StreamDebateEventsResponse messages (the hub's `Framing`)."""

    __slots__ = ()

    @staticmethod
    def one(body: bytes) -> bytes:
        """StreamDebateEventsResponse{event} around one event body."""
        return EVENT_TAG + body

    @staticmethod
    def many(bodies: list[bytes]) -> bytes:
        """StreamDebateEventsResponse{events} of event bodies (at least one), joined once."""
        return EVENTS_TAG + EVENTS_TAG.join(bodies)


FRAMING = StreamFraming()


def _pass_through(message: Any) -> bytes:
    """The response serializer of pre-serialised methods: bytes go out as they are."""
    return message if type(message) is bytes else message.SerializeToString()


_HANDLER_KINDS: dict[tuple[bool, bool], Callable[..., grpc.RpcMethodHandler]] = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def method_handlers(servicer: Any) -> dict[str, grpc.RpcMethodHandler]:
    """One handler per method of OrchestratorService, keyed by method name, calling the
    servicer's method of the same name; raises AttributeError if the servicer lacks one."""
    handlers = {}
    for method in SERVICE.methods:
        request = message_factory.GetMessageClass(method.input_type)
        response = message_factory.GetMessageClass(method.output_type)
        make = _HANDLER_KINDS[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=request.FromString,
            response_serializer=_pass_through if method.name in PRE_SERIALISED else response.SerializeToString,
        )
    return handlers


def add_to_server(servicer: Any, server: grpc.aio.Server) -> None:
    """Registers the servicer's methods with `server` (generic and registered handlers, as the
    generated code does)."""
    handlers = method_handlers(servicer)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),))
    server.add_registered_method_handlers(SERVICE.full_name, handlers)
