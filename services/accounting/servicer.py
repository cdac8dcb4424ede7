"""gRPC transport of the accounting service: protobuf in, domain calls, protobuf out."""

from debate.accounting.v1 import accounting_pb2_grpc


class AccountingServicer(accounting_pb2_grpc.AccountingServiceServicer):
    """Every RPC answers UNIMPLEMENTED until the accounting issue fills it in."""
