from pydantic import Field

from services.common.settings import ServiceSettings


class JudgeSettings(ServiceSettings):
    port: int = Field(50052, ge=0, le=65535)
