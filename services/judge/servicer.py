"""gRPC transport of the judge: protobuf in, domain calls, protobuf out."""

from debate.judge.v1 import judge_pb2_grpc


class JudgeServicer(judge_pb2_grpc.JudgeServiceServicer):
    """Every RPC answers UNIMPLEMENTED until the judge issue fills it in."""
