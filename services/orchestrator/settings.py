from pydantic import Field

from services.common.settings import ServiceSettings


class OrchestratorSettings(ServiceSettings):
    port: int = Field(50051, ge=0, le=65535)
    judge_service_addr: str = Field("127.0.0.1:50052", description="host:port of the judge service")
    accounting_service_addr: str = Field("127.0.0.1:50053", description="host:port of the accounting service")
