"""Composition root of the accounting service: settings, domain objects, servicer, server."""

from pathlib import Path

from debate.accounting.v1 import accounting_pb2, accounting_pb2_grpc

from services.accounting.ledger import Accounting
from services.accounting.metrics import AccountingMetrics
from services.accounting.servicer import AccountingServicer
from services.accounting.settings import AccountingSettings
from services.accounting.store import LedgerStore, SqliteLedgerStore
from services.accounting.store_postgres import PostgresLedgerStore
from services.common.metrics import ServiceMetrics
from services.common.pricing import PriceBook
from services.common.server import GrpcService, ServiceBinding
from services.common.tracing import Tracing

SERVICE_NAME = accounting_pb2.DESCRIPTOR.services_by_name["AccountingService"].full_name
TRACE_SERVICE_NAME = "debate-accounting"  # service.name of its traces, unless OTEL_SERVICE_NAME


def open_ledger(settings: AccountingSettings) -> LedgerStore:
    """PostgreSQL when DATABASE_URL is set (shared by every replica), else the SQLite file in DATA_DIR."""
    url = settings.database_url.get_secret_value()
    if url:
        return PostgresLedgerStore(url)
    return SqliteLedgerStore(Path(settings.data_dir) / settings.ledger_file)


async def build_service(settings: AccountingSettings) -> GrpcService:
    prices = PriceBook(declared=settings.declared_prices())  # LLM_ENDPOINTS' prices, as every service sees them
    service_metrics = ServiceMetrics.from_settings(settings)  # None: METRICS_PORT unset
    metrics = AccountingMetrics(service_metrics) if service_metrics is not None else None
    accounting = Accounting(prices, open_ledger(settings), group_commit=settings.ledger_group_commit, metrics=metrics)
    servicer = AccountingServicer(accounting)
    return GrpcService(
        settings,
        [ServiceBinding(SERVICE_NAME, accounting_pb2_grpc.add_AccountingServiceServicer_to_server, servicer)],
        on_stop=[accounting.close],
        metrics=service_metrics,
        tracing=Tracing.from_settings(settings, TRACE_SERVICE_NAME),  # None: no OTLP endpoint set
    )
