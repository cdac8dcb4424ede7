"""Composition root of the judge service: settings, domain objects, servicer, server."""

from debate.judge.v1 import judge_pb2, judge_pb2_grpc
from services.common.server import GrpcService, ServiceBinding
from services.judge.servicer import JudgeServicer
from services.judge.settings import JudgeSettings

SERVICE_NAME = judge_pb2.DESCRIPTOR.services_by_name["JudgeService"].full_name


async def build_service(settings: JudgeSettings) -> GrpcService:
    servicer = JudgeServicer()
    return GrpcService(
        settings,
        [ServiceBinding(SERVICE_NAME, judge_pb2_grpc.add_JudgeServiceServicer_to_server, servicer)],
    )
