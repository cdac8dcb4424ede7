from pydantic import Field

from services.common.settings import ServiceSettings


class AccountingSettings(ServiceSettings):
    port: int = Field(50053, ge=0, le=65535)
