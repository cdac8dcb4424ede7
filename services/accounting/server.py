"""Composition root of the accounting service: settings, domain objects, servicer, server."""

from debate.accounting.v1 import accounting_pb2, accounting_pb2_grpc
from services.common.server import GrpcService, ServiceBinding
from services.accounting.servicer import AccountingServicer
from services.accounting.settings import AccountingSettings

SERVICE_NAME = accounting_pb2.DESCRIPTOR.services_by_name["AccountingService"].full_name


async def build_service(settings: AccountingSettings) -> GrpcService:
    servicer = AccountingServicer()
    return GrpcService(
        settings,
        [ServiceBinding(SERVICE_NAME, accounting_pb2_grpc.add_AccountingServiceServicer_to_server, servicer)],
    )
