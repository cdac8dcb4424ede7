"""Composition root of the orchestrator service: settings, domain objects, servicer, server."""

from debate.orchestrator.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from services.common.server import GrpcService, ServiceBinding
from services.orchestrator.servicer import OrchestratorServicer
from services.orchestrator.settings import OrchestratorSettings

SERVICE_NAME = orchestrator_pb2.DESCRIPTOR.services_by_name["OrchestratorService"].full_name


async def build_service(settings: OrchestratorSettings) -> GrpcService:
    servicer = OrchestratorServicer()
    return GrpcService(
        settings,
        [ServiceBinding(SERVICE_NAME, orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server, servicer)],
    )
