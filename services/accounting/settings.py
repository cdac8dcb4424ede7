from pydantic import Field, SecretStr, field_validator

from services.common.llm import settings as llm_settings
from services.common.settings import SERVICE_TENANT, ServiceSettings

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


# LLM_ENDPOINTS' declared prices, read as the orchestrator and the judge read them (the mixin is
# reached through its module: this module defines one *Settings class besides ServiceSettings).
class AccountingSettings(llm_settings.EndpointSettings, ServiceSettings):
    port: int = Field(50053, ge=0, le=65535)
    # An internal service: only the suite's own services (the tenant of their service key) may call it.
    internal_callers: str = Field(SERVICE_TENANT, description="tenants that may call this service (empty: any)")
    ledger_file: str = Field("ledger.sqlite3", description="the ledger's SQLite file, inside data_dir")
    # A secret: it may carry a password (masked in logs like the other secret settings).
    database_url: SecretStr = Field(
        SecretStr(""),
        description="the ledger's PostgreSQL database, postgresql://user:password@host:port/database, shared by "
        "every accounting replica (empty: the SQLite file ledger_file in data_dir)",
    )

    @field_validator("database_url")
    @classmethod
    def _postgres_only(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value()
        if url and not url.startswith(POSTGRES_SCHEMES):
            raise ValueError("must be empty or a postgresql:// URL")
        return value
