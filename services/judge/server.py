"""Composition root of the judge service: settings, LLM client, judge, servicer, server."""

from __future__ import annotations

from dataclasses import replace

from debate.judge.v1 import judge_pb2, judge_pb2_grpc

from services.common.debate_rules import ModelRules
from services.common.llm import LLMClient, build_llm_client
from services.common.metrics import ServiceMetrics
from services.common.pricing import PriceBook
from services.common.server import GrpcService, ServiceBinding
from services.common.tracing import Tracing, traced_llm
from services.judge import simulated_judge
from services.judge.engine import Judge
from services.judge.metrics import JudgeMetrics
from services.judge.servicer import JudgeServicer
from services.judge.settings import JudgeSettings

SERVICE_NAME = judge_pb2.DESCRIPTOR.services_by_name["JudgeService"].full_name
TRACE_SERVICE_NAME = "debate-judge"  # service.name of its traces, unless OTEL_SERVICE_NAME


async def build_service(settings: JudgeSettings, llm: LLMClient | None = None) -> GrpcService:
    """The judge service; `llm` replaces the settings' LLM client (tests pass a fake one)."""
    on_stop = []
    service_metrics = ServiceMetrics.from_settings(settings)  # None: METRICS_PORT unset
    metrics = JudgeMetrics(service_metrics) if service_metrics is not None else None
    if llm is None:
        router = build_llm_client(
            settings,
            responders=simulated_judge.responders(),
            metrics=metrics.llm if metrics is not None else None,
        )
        on_stop.append(router.aclose)
        llm = router
    tracing = Tracing.from_settings(settings, TRACE_SERVICE_NAME)  # None: no OTLP endpoint set
    llm = traced_llm(llm, tracing)  # each model call a `chat {model}` span (GenAI conventions)
    # The shared pre-spend rules: a judge model is allowed, priced and keyed before it is called.
    rules = ModelRules.from_settings(settings, PriceBook(declared=settings.declared_prices()))
    servicer = JudgeServicer(Judge(llm, replace(settings.policy(), model_rules=rules), metrics))
    return GrpcService(
        settings,
        [ServiceBinding(SERVICE_NAME, judge_pb2_grpc.add_JudgeServiceServicer_to_server, servicer)],
        on_stop=on_stop,
        metrics=service_metrics,
        tracing=tracing,
    )
