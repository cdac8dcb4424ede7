from pydantic import Field

from services.common.llm import settings as llm_settings
from services.common.settings import SERVICE_TENANT, DatabaseSettings, ServiceSettings


# LLM_ENDPOINTS' declared prices, read as the orchestrator and the judge read them (the mixin is
# reached through its module); DATABASE_URL (DatabaseSettings): the ledger's PostgreSQL database,
# shared by every accounting replica (empty: ledger_file in data_dir).
class AccountingSettings(llm_settings.EndpointSettings, DatabaseSettings, ServiceSettings):
    port: int = Field(50053, ge=0, le=65535)
    # An internal service: only the suite's own services (the tenant of their service key) may call it.
    internal_callers: str = Field(SERVICE_TENANT, description="tenants that may call this service (empty: any)")
    ledger_file: str = Field("ledger.sqlite3", description="the ledger's SQLite file, inside data_dir")
    ledger_group_commit: bool = Field(
        True, description="usage rows that arrive during a commit share the next one (False: a transaction each)"
    )
