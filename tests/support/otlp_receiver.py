"""An OTLP/gRPC trace receiver for tests and benchmarks: a real gRPC server implementing the
collector's TraceService (opentelemetry-proto's generated service), on 127.0.0.1 and a free
port, that keeps every span it is sent.

    with OtlpReceiver() as receiver:
        ... OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint ...
        receiver.spans   # [ReceivedSpan(service, name, trace_id, span_id, parent, kind, attributes, links, ...)]
"""

from __future__ import annotations

import threading
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2


@dataclass
class ReceivedSpan:
    """One span as it arrived: ids in hex, `kind` as OTLP numbers it (SERVER 2, CLIENT 3, ...),
    `service` its resource's service.name, `links` the span ids it links to, `linked` the
    (trace_id, span_id) of each link."""

    service: str
    name: str
    trace_id: str
    span_id: str
    parent: str
    kind: int
    attributes: dict
    links: list[str] = field(default_factory=list)
    linked: list[tuple[str, str]] = field(default_factory=list)


def _value(value: common_pb2.AnyValue):
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(v) for v in value.array_value.values)
    return getattr(value, kind) if kind else None


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """See the module docstring. `keep=False` counts spans without keeping them (benchmarks)."""

    def __init__(self, keep: bool = True) -> None:
        self.keep = keep
        self.spans: list[ReceivedSpan] = []
        self.span_count = 0
        self.exports = 0
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> OtlpReceiver:
        self._server.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.stop(0)

    def Export(self, request, context):  # noqa: N802 - the generated servicer's name
        received = []
        count = 0
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                count += len(scope_spans.spans)
                if not self.keep:
                    continue
                for s in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            service=resource.get("service.name", ""),
                            name=s.name,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent=s.parent_span_id.hex(),
                            kind=s.kind,
                            attributes={a.key: _value(a.value) for a in s.attributes},
                            links=[link.span_id.hex() for link in s.links],
                            linked=[(link.trace_id.hex(), link.span_id.hex()) for link in s.links],
                        )
                    )
        with self._lock:
            self.exports += 1
            self.span_count += count
            self.spans.extend(received)
        return trace_service_pb2.ExportTraceServiceResponse()
