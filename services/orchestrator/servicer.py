"""gRPC transport of the orchestrator: protobuf in, domain calls, protobuf out."""

from debate.orchestrator.v1 import orchestrator_pb2_grpc


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    """Every RPC answers UNIMPLEMENTED until the orchestrator issue fills it in."""
