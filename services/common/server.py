"""Server bootstrap shared by every service: a grpc.aio server with health, reflection,
the domain-error interceptor, Prometheus metrics when METRICS_PORT is set
(services.common.metrics), OpenTelemetry traces when an OTLP endpoint is set
(services.common.tracing) and a graceful stop.

A service's composition root builds its domain objects and servicer, then hands them here:

    service = GrpcService(settings, [ServiceBinding(NAME, add_fn, servicer)], on_stop=[store.close])
    await service.serve_until_signal()
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import logging
import os
import resource
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.auth import ApiKeys, AuthInterceptor
from services.common.errors import FieldViolation, InvalidArgument
from services.common.grpc_errors import DomainErrorInterceptor, abort_with
from services.common.grpc_metrics import ServerMetricsInterceptor
from services.common.handlers import HandlerCache, replace_behavior, wrap_behavior
from services.common.logs import configure_logging
from services.common.loop_watch import LoopLagProbe, StallTracer
from services.common.metrics import MetricsServer, ServiceMetrics
from services.common.settings import ServiceSettings, SettingsT, load_settings
from services.common.text import plural
from services.common.tls import TlsFiles
from services.common.tracing import Tracing

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 16 * 1024 * 1024

SERVER_OPTIONS = [
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    # Calls that arrived but that the event loop has not yet taken up. gRPC's default (1,000,
    # hard limit 3,000) cancels part of a burst of new streams, such as thousands of watchers
    # joining a debate at once; past these the server still sheds load.
    ("grpc.server.max_pending_requests", 20_000),
    ("grpc.server.max_pending_requests_hard_limit", 40_000),
]


class _Malformed:
    """Stands for a request whose bytes did not parse as the method's request type."""

    __slots__ = ("error",)

    def __init__(self, error: Exception):
        self.error = error


def _tolerant(deserializer):
    def deserialize(raw: bytes):
        try:
            return deserializer(raw)
        except Exception as error:  # noqa: BLE001 - DecodeError, bad UTF-8, ...: reported as INVALID_ARGUMENT
            return _Malformed(error)

    return deserialize


class MalformedRequestInterceptor(grpc.aio.ServerInterceptor):
    """A request whose bytes do not parse answers INVALID_ARGUMENT (one field violation on
    `request`) instead of grpc's own UNKNOWN "Unexpected DecodeError"."""

    def __init__(self) -> None:
        self._wrapped = HandlerCache()

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None or handler.request_streaming:
            return handler
        method = handler_call_details.method
        # The handler it is given differs by tenant (AuthInterceptor's), hence the key.
        return self._wrapped.get((method, id(handler)), handler, lambda h: _tolerating(h, method))


def _tolerating(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """`handler` with a deserializer that never raises, and a behaviour that answers a request that
    did not parse with INVALID_ARGUMENT."""

    async def refuse(request: _Malformed, context) -> None:
        detail = str(request.error).split(":")[-1].strip() or type(request.error).__name__
        await abort_with(
            context,
            InvalidArgument(
                [FieldViolation("request", f"is not a valid request message for {method}: {detail[:200]}")],
                reason="MALFORMED_REQUEST",
            ),
        )

    @contextlib.asynccontextmanager
    async def parsed(request, context) -> AsyncIterator[bool]:
        if isinstance(request, _Malformed):
            await refuse(request, context)
            yield False
        else:
            yield True

    return replace_behavior(
        handler,
        lambda behavior: wrap_behavior(behavior, parsed),
        request_deserializer=_tolerant(handler.request_deserializer),
    )


@dataclass(frozen=True)
class ServiceBinding:
    """One gRPC service of a process: its full name, generated add function and servicer."""

    name: str
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    servicer: Any


class GrpcService:
    """Runs the gRPC services of one process until SIGTERM or SIGINT."""

    def __init__(
        self,
        settings: ServiceSettings,
        bindings: Sequence[ServiceBinding],
        *,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        on_stop: Sequence[Callable[[], Awaitable[None] | None]] = (),
        metrics: ServiceMetrics | None = None,
        tracing: Tracing | None = None,
    ):
        self.settings = settings
        # OpenTelemetry traces when an OTLP endpoint is set (services.common.tracing); None: off,
        # and no interceptor of theirs in the chain.
        self.tracing = tracing
        # Prometheus metrics when METRICS_PORT is set: the composition root's ServiceMetrics (its
        # domain objects measure into the same registry), or one of our own for the gRPC calls.
        self.metrics = metrics if metrics is not None else ServiceMetrics.from_settings(settings)
        self.metrics_server: MetricsServer | None = None
        # How late the event loop runs (services.common.loop_watch): with the metrics, or to trace stalls.
        self.loop_probe: LoopLagProbe | None = None
        if self.metrics is not None or settings.loop_stall_trace_ms:
            self.loop_probe = LoopLagProbe(registry=self.metrics.registry if self.metrics is not None else None)
        self.stall_tracer: StallTracer | None = None
        self.bindings = list(bindings)
        self.health = health.aio.HealthServicer()
        # Checks bearer keys when API_KEYS is set and sets the caller's tenant (services.common.auth).
        self.auth = AuthInterceptor(
            ApiKeys.parse(settings.api_keys.get_secret_value()),
            max_streams_per_caller=settings.max_streams_per_caller,
            trusted_tenant_header=settings.trusted_tenant_header,
            internal_callers=settings.internal_callers,
        )
        # Mutual TLS when TLS_CERT_FILE/TLS_KEY_FILE/TLS_CA_FILE are set (services.common.tls).
        self.tls = TlsFiles.from_settings(settings)
        # The metrics interceptor goes first, so that calls the others refuse are counted too; then
        # the tracing one, so that the others' refusals and logs are in the caller's trace.
        measuring = [ServerMetricsInterceptor(self.metrics.grpc)] if self.metrics is not None else []
        tracing_chain = [tracing.server_interceptor()] if tracing is not None else []
        chain = [
            *measuring,
            *tracing_chain,
            MalformedRequestInterceptor(),
            self.auth,
            *interceptors,
            DomainErrorInterceptor(),
        ]
        self.interceptors = tuple(chain)
        self.server = grpc.aio.server(
            interceptors=chain,
            options=SERVER_OPTIONS,
        )
        self._on_stop = list(on_stop)
        self.port = 0

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.port}"

    async def start(self) -> int:
        for binding in self.bindings:
            binding.add_to_server(binding.servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = [b.name for b in self.bindings]
        reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server)
        listen = f"{self.settings.host}:{self.settings.port}"
        if self.tls is not None:
            self.port = self.server.add_secure_port(listen, self.tls.server_credentials())
        else:
            self.port = self.server.add_insecure_port(listen)
        if self.port == 0:
            raise RuntimeError(f"cannot listen on {self.settings.host}:{self.settings.port}")
        if self.metrics is not None and self.settings.metrics_port is not None:
            # Before the gRPC server starts: a metrics port that is taken (OSError) stops the start.
            self.metrics_server = MetricsServer(self.metrics.registry, self.settings.host, self.settings.metrics_port)
            log.info("metrics at %s", self.metrics_server.url)
        await self.server.start()
        if self.loop_probe is not None:
            self.loop_probe.start()
            if self.settings.loop_stall_trace_ms:
                self.stall_tracer = StallTracer(self.loop_probe, self.settings.loop_stall_trace_ms / 1000)
                self.stall_tracer.start()
        for name in ["", *names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "serving %s on %s (%s, %s)",
            ", ".join(names),
            self.address,
            "mutual TLS" if self.tls else "plaintext",
            f"API keys for {plural(len(self.auth.keys.tenants), 'tenant')}" if self.auth.keys else "no API keys",
        )
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Health goes NOT_SERVING first, then in-flight calls get `grace` seconds."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.settings.grace_seconds if grace is None else grace)
        if self.stall_tracer is not None:
            self.stall_tracer.stop()
            self.stall_tracer = None
        if self.loop_probe is not None:
            self.loop_probe.stop()
        if self.metrics_server is not None:
            self.metrics_server.close()
            self.metrics_server = None
        for hook in self._on_stop:
            result = hook()
            if asyncio.iscoroutine(result):
                await result
        if self.tracing is not None:
            # Exports the spans still buffered; in a thread, as it waits on the exporter's calls.
            await asyncio.to_thread(self.tracing.shutdown)
        log.info("stopped")

    async def serve_until_signal(self) -> None:
        stop_requested = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop_requested.set)
        await self.start()
        serving = asyncio.ensure_future(self.server.wait_for_termination())
        stopping = asyncio.ensure_future(stop_requested.wait())
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stopping.done():
            log.info("signal received; stopping within %.1fs", self.settings.grace_seconds)
            await self.stop()
        serving.cancel()
        stopping.cancel()


def run_service(
    name: str,
    settings_class: type[SettingsT],
    build_service: Callable[[SettingsT], Awaitable[GrpcService]],
    argv: Sequence[str] | None = None,
) -> None:
    """What every `python -m services.<name>` does: settings from the environment and flags,
    logging configured once, then the service until SIGTERM, on uvloop unless `settings.uvloop`
    is false or uvloop is not installed (then on asyncio's own loop)."""
    grow_file_table()  # first, while the process has one thread
    settings = load_settings(settings_class, sys.argv[1:] if argv is None else argv)
    configure_logging(name, settings.log_level, settings.secret_values(), settings.log_format)

    async def serve() -> None:
        service = await build_service(settings)
        calm_garbage_collector()
        await service.serve_until_signal()

    event_loop_runner(settings.uvloop)(serve())


def event_loop_runner(use_uvloop: bool) -> Callable[[Coroutine[Any, Any, None]], None]:
    """`uvloop.run` when asked for and installed, else `asyncio.run`."""
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            log.warning("UVLOOP is on but uvloop is not installed: running on asyncio's own loop")
        else:
            return uvloop.run
    return asyncio.run


FILE_TABLE_SLOTS = 16_384  # file descriptors the process's table is grown to hold at start


def grow_file_table(slots: int = FILE_TABLE_SLOTS) -> int:
    """Raises the soft RLIMIT_NOFILE to the hard limit (as Go's runtime does at start), then
    grows the kernel's table of the process's file descriptors to `slots` (at most that limit)
    by taking a descriptor that high and closing it; the table never shrinks. Returns the highest
    descriptor taken (-1: none).

    The kernel grows the table by doubling, as descriptors are opened; in a process with threads
    each growth waits for an RCU grace period, on the thread that opened the descriptor. A burst
    of a few hundred provider connections stalled the orchestrator's event loop for 110 ms in
    `socket()` that way (docs/streaming-floor.md). Called while the process has one thread,
    growing costs no wait at all."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        with contextlib.suppress(ValueError, OSError):  # a limit the platform refuses: keep the soft one
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    top = slots if soft == resource.RLIM_INFINITY else min(slots, soft)
    if top <= 1024:
        return -1
    source = os.open(os.devnull, os.O_RDONLY)
    try:
        # F_DUPFD: the lowest free descriptor at or above top - 1 (dup2 would close one in use).
        high = fcntl.fcntl(source, fcntl.F_DUPFD, top - 1)
        os.close(high)
    except OSError:
        return -1
    finally:
        os.close(source)
    return high


def calm_garbage_collector() -> None:
    """Every gRPC message allocates short-lived futures and frames; with the default thresholds
    the collector ran every few hundred messages, walking everything loaded at start-up.
    Freezing what exists now and collecting the young generation less often cut a streamed
    message from 54 to 31 µs of server CPU with 5,000 streams (tests/benchmarks/bench_fanout.py)."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
