"""OpenTelemetry traces, on only when an OTLP endpoint is set.

`Tracing.from_settings(settings, "debate-orchestrator")` returns None unless
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT is set (the settings read them;
no other module reads the environment). With None, nothing is installed: no tracer provider, no
gRPC interceptor, no wrapper around the LLM client, and every span site below is skipped by one
`is None` test, so the hot paths pay nothing.

When it is set, each service process gets its own `TracerProvider` (never the global one, so
the three services can share one process in the tests, each with its own `service.name`):
- resource `service.name`: OTEL_SERVICE_NAME, else the service's own name (debate-orchestrator,
  debate-judge, debate-accounting); OTEL_RESOURCE_ATTRIBUTES adds to it (the SDK reads it);
- spans go through a `BatchSpanProcessor` (OTEL_BSP_* tune it) to the OTLP/gRPC exporter at that
  endpoint (http://host:4317 is plaintext; OTEL_EXPORTER_OTLP_HEADERS, _CERTIFICATE, _TIMEOUT,
  _COMPRESSION are read by the SDK as the specification says);
- `server_interceptor()` and `client_interceptors()` are opentelemetry-instrumentation-grpc's aio
  interceptors on this provider: a server span per call, a client span per call the orchestrator
  makes, and the W3C `traceparent` carried in the metadata between them;
- `shutdown()` (GrpcService.stop calls it) flushes what is buffered and stops the exporter.

A trace context kept in a database (the orchestrator's debates) goes through
services.common.trace_context.

Domain spans (the span sites are in the services):
- `TracedLLM` wraps a service's LLM client: each model call is a CLIENT span `chat {model}`
  following the GenAI semantic conventions (`chat_attributes`, `completion_attributes`);
- the orchestrator's `debate` and `turn` spans (services/orchestrator/lifecycle.py, turns.py)
  and its usage records (services/orchestrator/clients.py).
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import AsyncGenerator, Collection
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from services.common.llm.base import (
    Completion,
    CompletionRequest,
    DeltaSink,
    LLMClient,
    StreamEvent,
    stream_to,
)
from services.common.settings import ServiceSettings

if TYPE_CHECKING:  # the SDK, the exporter and the instrumentation are imported only when traces are on
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger(__name__)

INSTRUMENTATION_NAME = "debate-engine"
SHUTDOWN_FLUSH_S = 2.0  # what a stopping service waits for its last spans to be exported


def traces_endpoint(settings: ServiceSettings) -> str:
    """The OTLP endpoint traces go to ("" : traces off): OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else
    OTEL_EXPORTER_OTLP_ENDPOINT (both used as they are: OTLP/gRPC appends no path)."""
    return (settings.otel_exporter_otlp_traces_endpoint or settings.otel_exporter_otlp_endpoint).strip()


class Tracing:
    """One service process's tracer provider and its gRPC interceptors (see the module docstring)."""

    def __init__(
        self,
        provider: TracerProvider,
        service_name: str,
        untraced_methods: Collection[str] = (),
        exporter: SpanExporter | None = None,
    ):
        self.provider = provider
        self.exporter = exporter
        self.service_name = service_name
        self.untraced_methods = frozenset(untraced_methods)
        self.tracer: Tracer = provider.get_tracer(INSTRUMENTATION_NAME)

    @classmethod
    def from_settings(
        cls,
        settings: ServiceSettings,
        service_name: str,
        exporter: SpanExporter | None = None,
        *,
        untraced_methods: Collection[str] = (),
    ) -> Tracing | None:
        """The service's tracing, or None when no OTLP endpoint is set. `service_name` is the
        default `service.name` (OTEL_SERVICE_NAME wins); `exporter` replaces the OTLP exporter;
        `untraced_methods`: full method names (/package.Service/Method) served without a span,
        beside health checks and reflection."""
        endpoint = traces_endpoint(settings)
        if not endpoint and exporter is None:
            return None
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        name = settings.otel_service_name.strip() or service_name
        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
        exporter = exporter or OTLPSpanExporter(endpoint=endpoint)
        provider.add_span_processor(BatchSpanProcessor(exporter))
        log.info("traces of %s exported over OTLP to %s", name, endpoint or type(exporter).__name__)
        return cls(provider, name, untraced_methods, exporter)

    def server_interceptor(self) -> grpc.aio.ServerInterceptor:
        """A server span for every call (but health checks, reflection and `untraced_methods`), in
        the trace of the caller's `traceparent` if it sent one (see `AnyStreamServerInterceptor`)."""
        from opentelemetry.instrumentation.grpc import aio_server_interceptor

        return AnyStreamServerInterceptor(aio_server_interceptor(tracer_provider=self.provider), self.untraced_methods)

    def client_interceptors(self) -> list[grpc.aio.ClientInterceptor]:
        """A client span for every call of a channel, its context sent as `traceparent`."""
        from opentelemetry.instrumentation.grpc import aio_client_interceptors

        return list(aio_client_interceptors(tracer_provider=self.provider))

    def shutdown(self, timeout_s: float = SHUTDOWN_FLUSH_S) -> None:
        """Exports what is buffered, within `timeout_s` seconds (a collector that does not answer
        would hold a stopping service for the exporter's retries: what is left is dropped, with a
        warning), then stops the provider and its exporter."""
        flushed = threading.Event()

        def flush() -> None:
            # The SDK's force_flush waits for an export under way, retries included, whatever its
            # timeout says: it runs aside, and the exporter is shut down if it takes too long.
            self.provider.force_flush()
            flushed.set()

        threading.Thread(target=flush, name="traces-flush", daemon=True).start()
        if not flushed.wait(timeout_s) and self.exporter is not None:
            log.warning("traces not exported within %.1fs of the stop were dropped", timeout_s)
            self.exporter.shutdown()  # ends the exporter's retries and closes its channel
        self.provider.shutdown()


UNTRACED_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class AnyStreamServerInterceptor(grpc.aio.ServerInterceptor):
    """opentelemetry-instrumentation-grpc's aio server interceptor, for every kind of handler.

    Its own `intercept_service` takes a server-streaming behaviour for an async generator
    (`async for` over it), but grpc.aio also serves streams written as a coroutine with
    `await context.write(...)` (grpc_health's Watch, the suite's own interceptors' wrappers of
    such handlers: services.common.handlers): the library's wrapper then fails every such call
    with a TypeError. This one hands an async generator to the library's stream wrapper and
    everything else to its unary wrapper, which awaits the behaviour inside the same span.
    It uses those two wrappers of the pinned version (0.66b2; tests/integration/test_tracing.py
    runs both kinds of stream through it)."""

    def __init__(self, otel: Any, untraced_methods: Collection[str] = ()):
        self.otel = otel  # OpenTelemetryAioServerInterceptor
        self.untraced_methods = frozenset(untraced_methods)

    async def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        from opentelemetry.instrumentation.grpc._server import _wrap_rpc_behavior

        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method in self.untraced_methods or method.startswith(UNTRACED_SERVICES):
            return handler

        def telemetry(behavior: Any, request_streaming: bool, response_streaming: bool) -> Any:
            if response_streaming and inspect.isasyncgenfunction(behavior):
                return self.otel._intercept_aio_server_stream(behavior, handler_call_details)
            return self.otel._intercept_aio_server_unary(behavior, handler_call_details)

        return _wrap_rpc_behavior(handler, telemetry)


# ==== GenAI semantic conventions: a model call ===================================================


def provider_name(model: str) -> str:
    """`gen_ai.provider.name` of a model: its prefix (`openai/gpt-4o` -> openai, `sim/judge` -> sim,
    an LLM_ENDPOINTS endpoint's name for its models)."""
    prefix, sep, _ = model.partition("/")
    return prefix if sep else "openai"


def chat_attributes(request: CompletionRequest) -> dict[str, Any]:
    """The request's attributes of a `chat` span (no prompt text: it may be a secret's neighbour)."""
    provider = provider_name(request.model)
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.system": provider,  # the attribute's name before semantic conventions 1.37
        "gen_ai.request.model": request.model,
        "gen_ai.request.max_tokens": request.max_tokens,
    }
    if request.temperature is not None:
        attributes["gen_ai.request.temperature"] = request.temperature
    if request.seed is not None:
        attributes["gen_ai.request.seed"] = request.seed
    return attributes


def completion_attributes(completion: Completion) -> dict[str, Any]:
    """The response's attributes of a `chat` span: the model that answered and the usage, in tokens
    (`input_tokens` includes cached ones, `output_tokens` reasoning ones, as the conventions say)."""
    usage = completion.usage
    return {
        "gen_ai.response.model": completion.model,
        "gen_ai.response.finish_reasons": (completion.finish_reason,),
        "gen_ai.usage.input_tokens": usage.prompt_tokens,
        "gen_ai.usage.output_tokens": usage.completion_tokens,
        "gen_ai.usage.cache_read.input_tokens": usage.cached_prompt_tokens,
        "gen_ai.usage.reasoning.output_tokens": usage.reasoning_tokens,
    }


def _failed(span: Span, error: BaseException) -> None:
    reason = getattr(error, "reason", None) or type(error).__name__
    span.set_attribute("error.type", reason)
    span.set_status(Status(StatusCode.ERROR, str(getattr(error, "message", error))[:200]))


class TracedLLM:
    """An LLMClient whose every call is a `chat {model}` CLIENT span (child of the current span),
    with the GenAI attributes of the request, and of the Completion when it ends. The router's
    retries and fallbacks happen inside one span (`gen_ai.response.model` names the model that
    answered). A failed call's span has status ERROR and `error.type` (the LLMError's reason)."""

    def __init__(self, llm: LLMClient, tracer: Tracer):
        self.llm = llm
        self.tracer = tracer

    def _span(self, request: CompletionRequest) -> Any:
        return self.tracer.start_as_current_span(
            f"chat {request.model}",
            kind=SpanKind.CLIENT,
            attributes=chat_attributes(request),
            record_exception=False,
            set_status_on_exception=False,
        )

    async def stream_to(self, request: CompletionRequest, sink: DeltaSink) -> Completion:
        with self._span(request) as span:
            try:
                completion = await stream_to(self.llm, request, sink)
            except Exception as error:
                _failed(span, error)
                raise
            span.set_attributes(completion_attributes(completion))
            return completion

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[StreamEvent, None]:
        with self._span(request) as span:
            try:
                async for event in self.llm.stream(request):
                    if isinstance(event, Completion):
                        span.set_attributes(completion_attributes(event))
                    yield event
            except Exception as error:
                _failed(span, error)
                raise

    def __getattr__(self, name: str) -> Any:
        # close / aclose / candidates / provider_for ...: the wrapped client's
        return getattr(self.llm, name)


def traced_llm(llm: LLMClient, tracing: Tracing | None) -> LLMClient:
    """`llm` itself when tracing is off, else wrapped in TracedLLM."""
    return llm if tracing is None else TracedLLM(llm, tracing.tracer)
