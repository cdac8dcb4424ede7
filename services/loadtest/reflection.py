"""Finding a method, its request and its response types through server reflection.

grpcio-reflection's `ProtoReflectionDescriptorDatabase` answers a `DescriptorPool`'s
look-ups over the server's reflection service (v1alpha, which our services expose), so any
RPC of any service with reflection can be driven without its .proto files. A compiled
protoset (`protoc --descriptor_set_out --include_imports`) is the alternative for servers
without reflection, as in ghz.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    json_format,
    message_factory,
)
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


class CallError(ValueError):
    """The --call, the data or the server's reflection could not give a usable method."""


def parse_call(call: str) -> tuple[str, str]:
    """`package.Service.Method`, `package.Service/Method` or `/package.Service/Method` ->
    (`package.Service`, `Method`)."""
    text = call.strip().lstrip("/")
    if "/" in text:
        service, _, method = text.rpartition("/")
    else:
        service, _, method = text.rpartition(".")
    if not service or not method or "/" in service:
        raise CallError(f"--call {call!r}: expected package.Service.Method or package.Service/Method")
    return service, method


@dataclass
class Method:
    """A resolved RPC: its path on the wire and its message classes."""

    service: str
    name: str
    descriptor: MethodDescriptor
    request_class: type[Message]
    response_class: type[Message]

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"

    @property
    def full_name(self) -> str:
        return f"{self.service}.{self.name}"

    @property
    def client_streaming(self) -> bool:
        return self.descriptor.client_streaming

    @property
    def server_streaming(self) -> bool:
        return self.descriptor.server_streaming

    def parse_messages(self, data: Any) -> list[Any]:
        """JSON data (an object, or a list of objects) -> request messages, as ghz takes -d.

        A list is round-robin over calls for unary requests, and the messages of each
        stream for client-streaming methods."""
        items = data if isinstance(data, list) else [{} if data is None else data]
        if not items:
            items = [{}]
        messages = []
        for item in items:
            message = self.request_class()
            try:
                json_format.ParseDict(item, message)
            except (json_format.ParseError, TypeError, ValueError) as error:
                raise CallError(f"data does not fit {self.descriptor.input_type.full_name}: {error}") from error
            messages.append(message)
        return messages

    def parse_json(self, text: str) -> Any:
        """One JSON text (after template substitution) -> one request message."""
        message = self.request_class()
        try:
            json_format.Parse(text, message)
        except (json_format.ParseError, TypeError, ValueError) as error:
            raise CallError(f"data does not fit {self.descriptor.input_type.full_name}: {error}") from error
        return message


def _pool_from_protoset(path: str) -> descriptor_pool.DescriptorPool:
    with open(path, "rb") as f:
        file_set = descriptor_pb2.FileDescriptorSet.FromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    for file in file_set.file:
        pool.Add(file)
    return pool


def resolve(channel: grpc.Channel | None, call: str, *, protoset: str = "") -> Method:
    """Looks `call` up through `channel`'s reflection service (or a protoset file)."""
    service_name, method_name = parse_call(call)
    if protoset:
        pool = _pool_from_protoset(protoset)
    else:
        if channel is None:
            raise CallError("reflection needs a channel")
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    try:
        service = pool.FindServiceByName(service_name)
    except KeyError:
        known = ""
        if channel is not None and not protoset:
            with contextlib.suppress(grpc.RpcError):
                known = ", ".join(sorted(ProtoReflectionDescriptorDatabase(channel).get_services()))
        raise CallError(
            f"service {service_name!r} not found" + (f"; the server offers: {known}" if known else "")
        ) from None
    except grpc.RpcError as error:
        raise CallError(f"server reflection failed: {error.code().name}: {error.details()}") from error
    method = service.methods_by_name.get(method_name)
    if method is None:
        names = ", ".join(sorted(service.methods_by_name))
        raise CallError(f"method {method_name!r} not found in {service_name}; it has: {names}")
    return Method(
        service=service.full_name,
        name=method.name,
        descriptor=method,
        request_class=message_factory.GetMessageClass(method.input_type),
        response_class=message_factory.GetMessageClass(method.output_type),
    )


def load_json_argument(value: str, stdin_reader=None) -> Any:
    """ghz's -d: a JSON text, `@` for stdin, or (our addition) `@path` for a file."""
    if value == "@":
        import sys

        text = (stdin_reader or sys.stdin.read)()
    elif value.startswith("@"):
        with open(value[1:], encoding="utf-8") as f:
            text = f.read()
    else:
        text = value
    return text


def decode_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise CallError(f"{what} is not valid JSON: {error}") from error
