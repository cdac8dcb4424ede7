"""Every RPC of the internal services (the judge and accounting), read from the generated
descriptors so that a new RPC is covered without a test change, and one call of each with a
given bearer key."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from debate.accounting.v1 import accounting_pb2
from debate.judge.v1 import judge_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor

from services.common.auth import bearer_metadata

# Service name as the suite calls it -> its generated descriptor.
INTERNAL_SERVICES = {
    "judge": judge_pb2.DESCRIPTOR.services_by_name["JudgeService"],
    "accounting": accounting_pb2.DESCRIPTOR.services_by_name["AccountingService"],
}
AUTH_REFUSALS = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}


@dataclass(frozen=True)
class InternalRpc:
    service: str  # "judge" or "accounting"
    method: MethodDescriptor

    @property
    def path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    def __str__(self) -> str:
        return self.path


def internal_rpcs() -> list[InternalRpc]:
    """Every method of every internal service."""
    return [InternalRpc(name, method) for name, service in INTERNAL_SERVICES.items() for method in service.methods]


def call_status(channel: grpc.Channel, rpc: InternalRpc, key: str | None, request=None) -> grpc.RpcError | None:
    """Calls `rpc` once with `key` as the bearer (None: no key) and `request` (default: an empty
    request message); the error it answered, None when it answered OK."""
    request_class = message_factory.GetMessageClass(rpc.method.input_type)
    response_class = message_factory.GetMessageClass(rpc.method.output_type)
    request = request_class() if request is None else request
    metadata = bearer_metadata(key) if key is not None else None
    serialize, deserialize = request_class.SerializeToString, response_class.FromString
    streaming = (rpc.method.client_streaming, rpc.method.server_streaming)
    try:
        if streaming == (False, False):
            channel.unary_unary(rpc.path, serialize, deserialize)(request, metadata=metadata, timeout=15)
        elif streaming == (False, True):
            list(channel.unary_stream(rpc.path, serialize, deserialize)(request, metadata=metadata, timeout=15))
        elif streaming == (True, False):
            channel.stream_unary(rpc.path, serialize, deserialize)(iter([request]), metadata=metadata, timeout=15)
        else:
            list(
                channel.stream_stream(rpc.path, serialize, deserialize)(iter([request]), metadata=metadata, timeout=15)
            )
    except grpc.RpcError as error:
        return error
    return None
