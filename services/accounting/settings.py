from pydantic import Field

from services.common.settings import ServiceSettings


class AccountingSettings(ServiceSettings):
    port: int = Field(50053, ge=0, le=65535)
    ledger_file: str = Field("ledger.sqlite3", description="the ledger's SQLite file, inside data_dir")
