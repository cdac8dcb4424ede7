"""Composition root of the orchestrator service: settings, store, event hub, scheduler, clients,
engine, servicer, server. Debates left RUNNING or QUEUED by a previous process resume here."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence

from debate.orchestrator.v1 import orchestrator_pb2, tournament_pb2_grpc

from services.common.debate_rules import ModelRules
from services.common.llm import build_llm_client
from services.common.metrics import ServiceMetrics
from services.common.pricing import PriceBook
from services.common.server import GrpcService, ServiceBinding
from services.common.tracing import Tracing, traced_llm
from services.orchestrator.clients import GrpcAccounting, GrpcJudge
from services.orchestrator.engine import Engine
from services.orchestrator.events import EventHub
from services.orchestrator.metrics import OrchestratorMetrics
from services.orchestrator.peers import Accounting, Judge
from services.orchestrator.scheduler import Scheduler
from services.orchestrator.servicer import OrchestratorServicer
from services.orchestrator.settings import OrchestratorSettings
from services.orchestrator.store import SqliteStore, Store
from services.orchestrator.store_postgres import PostgresStore
from services.orchestrator.tournaments.runner import Tournaments
from services.orchestrator.tournaments.servicer import SERVICE_NAME as TOURNAMENT_SERVICE_NAME
from services.orchestrator.tournaments.servicer import TournamentServicer
from services.orchestrator.transport import FRAMING, add_to_server

SERVICE_NAME = orchestrator_pb2.DESCRIPTOR.services_by_name["OrchestratorService"].full_name
WATCH_METHOD = f"/{SERVICE_NAME}/StreamDebateEvents"
TRACE_SERVICE_NAME = "debate-orchestrator"  # service.name of its traces, unless OTEL_SERVICE_NAME
STORE_FILE = "orchestrator.sqlite3"  # in DATA_DIR, without DATABASE_URL


def open_store(settings: OrchestratorSettings) -> Store:
    """PostgreSQL when DATABASE_URL is set, else the SQLite file STORE_FILE in DATA_DIR; migrated."""
    url = settings.database_url.get_secret_value()
    if url:
        owner = settings.replica_id or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        return PostgresStore(url, owner=owner, lease_seconds=settings.lease_seconds)
    return SqliteStore(os.path.join(settings.data_dir, STORE_FILE))


class OrchestratorService(GrpcService):
    """The orchestrator's gRPC server, with its `engine` in reach of in-process tests and benchmarks."""

    def __init__(
        self,
        settings: OrchestratorSettings,
        engine: Engine,
        hub: EventHub,
        on_stop: Sequence[Callable[[], Awaitable[None] | None]],
        metrics: ServiceMetrics | None = None,
        tracing: Tracing | None = None,
        tournaments: Tournaments | None = None,
    ) -> None:
        servicer = OrchestratorServicer(engine, hub)
        bindings = [ServiceBinding(SERVICE_NAME, add_to_server, servicer)]
        if tournaments is not None:  # tournaments: their own service in this process
            add = tournament_pb2_grpc.add_TournamentServiceServicer_to_server
            bindings.append(ServiceBinding(TOURNAMENT_SERVICE_NAME, add, TournamentServicer(tournaments)))
        super().__init__(
            settings,
            bindings,
            on_stop=on_stop,
            metrics=metrics,
            tracing=tracing,
        )
        self.engine = engine
        self.tournaments = tournaments


async def build_service(
    settings: OrchestratorSettings, *, llm=None, judge: Judge | None = None, accounting: Accounting | None = None
) -> OrchestratorService:
    """The service, ready to start. Tests may pass their own LLM client, judge or accounting."""
    store = open_store(settings)
    service_metrics = ServiceMetrics.from_settings(settings)  # None: METRICS_PORT unset
    metrics = OrchestratorMetrics(service_metrics) if service_metrics is not None else None
    hub = EventHub(
        store,
        framing=FRAMING,
        coalesce_s=settings.coalesce_ms / 1000,
        tail_events=settings.memory_tail_events,
        heartbeat_s=settings.heartbeat_seconds,
        max_lag=settings.subscriber_max_lag,
        max_subscribers=settings.max_streams_per_debate,
        relay_seconds=metrics.relay_seconds if metrics is not None else None,
    )
    scheduler = Scheduler(settings.max_running_debates, settings.max_queued_debates)
    if metrics is not None:
        metrics.watch(hub, scheduler)
    # None: no OTLP endpoint set. A watcher's stream is a view of a debate, not a step of it: a
    # span each would outnumber the debate's own by the number of watchers (docs/observability-progress.md).
    tracing = Tracing.from_settings(settings, TRACE_SERVICE_NAME, untraced_methods=[WATCH_METHOD])
    llm = traced_llm(llm or build_llm_client(settings, metrics=metrics.llm if metrics is not None else None), tracing)
    grpc_metrics = metrics.grpc if metrics is not None else None
    judge = judge or GrpcJudge(settings, grpc_metrics, tracing)
    accounting = accounting or GrpcAccounting(settings, metrics=grpc_metrics, tracing=tracing)
    # The shared pre-spend rules: every model of a new debate allowed, priced and keyed (debate_rules.py).
    rules = ModelRules.from_settings(settings, PriceBook(declared=settings.declared_prices()))
    engine = Engine(
        store,
        hub,
        scheduler,
        llm,
        judge,
        accounting,
        settings,
        rules,
        metrics=metrics,
        tracer=tracing.tracer if tracing is not None else None,
    )
    hub.start()
    await engine.resume_all()
    # After the debates: it reads their states. On a shared store each running tournament is
    # leased like a debate, and adopted by a live replica within a lease period.
    tournaments = Tournaments(engine, accounting, lease_s=settings.lease_seconds)
    await tournaments.resume_all()

    async def close_clients() -> None:
        for client in (judge, accounting, llm):
            for name in ("close", "aclose"):
                closer = getattr(client, name, None)
                if closer is not None:
                    await closer()
                    break

    return OrchestratorService(
        settings,
        engine,
        hub,
        on_stop=[tournaments.shutdown, engine.shutdown, hub.stop, close_clients, store.close],
        metrics=service_metrics,
        tracing=tracing,
        tournaments=tournaments,
    )
