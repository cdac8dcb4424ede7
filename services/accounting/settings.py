from pydantic import Field

from services.common.settings import SERVICE_TENANT, ServiceSettings


class AccountingSettings(ServiceSettings):
    port: int = Field(50053, ge=0, le=65535)
    # An internal service: only the suite's own services (the tenant of their service key) may call it.
    internal_callers: str = Field(SERVICE_TENANT, description="tenants that may call this service (empty: any)")
    ledger_file: str = Field("ledger.sqlite3", description="the ledger's SQLite file, inside data_dir")
