"""Prometheus metrics of a service process, with `prometheus-client`.

Each process has one `CollectorRegistry`, made by its composition root and passed down to what
it measures (no metric lives in prometheus-client's global registry). `MetricsServer` serves that
registry on its own HTTP port (`METRICS_PORT`; unset: off) from `GrpcService.start`, so a
service run by `run_service` or started in process by a test serves it alike.

What every service measures lives here:
- `GrpcMetrics`: gRPC calls as go-grpc-prometheus and py-grpc-prometheus name them, on the server
  and on the client (moved by the interceptors of services.common.grpc_metrics):
  `grpc_server_started_total`, `grpc_server_handled_total`, `grpc_server_handling_seconds` and
  `grpc_client_started_total`, `grpc_client_handled_total`, `grpc_client_handling_seconds`;
  labels `grpc_type` (unary, server_stream, ...), `grpc_service`, `grpc_method` and, on
  `*_handled_total`, `grpc_code` (the status code's name: OK, INVALID_ARGUMENT, ...).
- `LLMMetrics`: model calls, named after the OpenTelemetry GenAI conventions where they have a
  name (`gen_ai_client_token_usage`, `gen_ai_client_operation_duration_seconds`), labelled with
  the model only once the allowlist has passed it.

Label values are bounded sets: method names, status codes, allowlisted models, error reasons.
Never a debate id, a request id or a tenant.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from services.common.settings import ServiceSettings

log = logging.getLogger(__name__)

# Latency buckets in seconds, from a streamed token's relay (milliseconds) to a whole debate's
# stream (minutes).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576)


class MetricsServer:
    """Serves `registry` at http://host:port/metrics (port 0: a free port, `port` says which),
    in prometheus-client's own HTTP server thread. OSError when the port is taken."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int):
        self._httpd, self._thread = start_http_server(port, addr=host, registry=registry)
        self.host = host
        self.port: int = self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


class CallMetrics:
    """The three families of one side of gRPC calls: `grpc_{side}_started_total`,
    `grpc_{side}_handled_total` (with `grpc_code`) and `grpc_{side}_handling_seconds`."""

    LABELS = ("grpc_type", "grpc_service", "grpc_method")

    def __init__(self, registry: CollectorRegistry, side: str, where: str):
        self.started = Counter(f"grpc_{side}_started_total", f"RPCs started {where}.", self.LABELS, registry=registry)
        self.handled = Counter(
            f"grpc_{side}_handled_total",
            f"RPCs completed {where}, whatever their status.",
            (*self.LABELS, "grpc_code"),
            registry=registry,
        )
        self.handling = Histogram(
            f"grpc_{side}_handling_seconds",
            f"Time from an RPC's start to its status {where} (a stream's whole life; a client's retries included).",
            self.LABELS,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )


class GrpcMetrics:
    """gRPC call counts and latencies of one process: `server` (the calls it serves) and `client`
    (the calls its channels make)."""

    def __init__(self, registry: CollectorRegistry):
        self.server = CallMetrics(registry, "server", "on the server")
        self.client = CallMetrics(registry, "client", "by this process's clients")


class LLMMetrics:
    """Model calls: tokens by model and direction, time to the first token, duration, provider
    errors by reason, retries and fallbacks. `model` is always a model the allowlist passed."""

    def __init__(self, registry: CollectorRegistry):
        self.token_usage = Histogram(
            "gen_ai_client_token_usage",
            "Tokens of one model call (OpenTelemetry gen_ai.client.token.usage): input (prompt) or output "
            "(completion, reasoning included). Its _sum's rate is tokens per second.",
            ("gen_ai_request_model", "gen_ai_token_type"),
            buckets=TOKEN_BUCKETS,
            registry=registry,
        )
        self.duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "A model call's duration, from the request to the last chunk (OpenTelemetry "
            "gen_ai.client.operation.duration).",
            ("gen_ai_request_model",),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.time_to_first_token = Histogram(
            "gen_ai_client_time_to_first_token_seconds",
            "Time from a model call's request to its first streamed chunk of text.",
            ("gen_ai_request_model",),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            "llm_provider_errors_total",
            "Model calls that failed, by model and the error's reason (RATE_LIMITED, PROVIDER_TIMEOUT, ...).",
            ("gen_ai_request_model", "reason"),
            registry=registry,
        )
        self.retries = Counter(
            "llm_retries_total",
            "Model calls sent again to the same model after a failure the provider did not bill.",
            ("gen_ai_request_model",),
            registry=registry,
        )
        self.fallbacks = Counter(
            "llm_fallbacks_total",
            "Model calls sent to a configured fallback model after the model asked for failed.",
            ("gen_ai_request_model", "fallback_model"),
            registry=registry,
        )

    def call(self, model: str) -> ModelCallTimer:
        return ModelCallTimer(self, model)


class ModelCallTimer:
    """One model call's clock: `first_token()` at its first chunk (once), `finished(usage)` at its end."""

    __slots__ = ("_first", "metrics", "model", "started")

    def __init__(self, metrics: LLMMetrics, model: str):
        self.metrics = metrics
        self.model = model
        self.started = time.perf_counter()
        self._first = False

    def first_token(self) -> None:
        if not self._first:
            self._first = True
            self.metrics.time_to_first_token.labels(self.model).observe(time.perf_counter() - self.started)

    def finished(self, input_tokens: int, output_tokens: int) -> None:
        m = self.metrics
        m.duration.labels(self.model).observe(time.perf_counter() - self.started)
        m.token_usage.labels(self.model, "input").observe(input_tokens)
        m.token_usage.labels(self.model, "output").observe(output_tokens)


class NoTimer:
    """A ModelCallTimer's stand-in when metrics are off: measures nothing."""

    __slots__ = ()

    def first_token(self) -> None:
        pass

    def finished(self, input_tokens: int, output_tokens: int) -> None:
        pass


NO_TIMER = NoTimer()


class LoopHistogram(Collector):
    """A histogram observed by one thread only (a service's event loop), without the lock that
    prometheus-client's `Histogram` takes on every observation (about 0.8 µs against 0.25 µs here):
    for what is observed once per message sent. `observe(amount)` as `Histogram.observe`; the
    series (`NAME_bucket{le}`, `NAME_count`, `NAME_sum`) are built when the registry is scraped,
    from another thread: a list copied under the GIL, so each scrape is a consistent count (its
    `_sum` may miss an observation made while it is read). `buckets`: the upper bounds, ascending,
    without +Inf."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry):
        self.name = name
        self.documentation = documentation
        self._bounds = tuple(float(bound) for bound in buckets)
        self._counts = [0] * (len(self._bounds) + 1)  # the last: above every bound (+Inf)
        self._sum = 0.0
        registry.register(self)

    def observe(self, amount: float) -> None:
        self._counts[bisect_left(self._bounds, amount)] += 1
        self._sum += amount

    def collect(self) -> Iterator[Metric]:
        counts = list(self._counts)
        cumulative, total = [], 0
        for bound, count in zip((*self._bounds, float("inf")), counts, strict=True):
            total += count
            cumulative.append((floatToGoString(bound), total))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=cumulative, sum_value=self._sum)


class ServiceMetrics:
    """One process's registry (not prometheus-client's global one) and the gRPC metrics every
    service has; the composition root makes it (`from_settings`) and passes it down."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # The standard process_* (CPU seconds, resident memory, open file descriptors...),
        # python_info and python_gc_* families, as prometheus-client's default registry has them.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.grpc = GrpcMetrics(self.registry)

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> ServiceMetrics | None:
        """A new ServiceMetrics when METRICS_PORT is set, None when metrics are off."""
        return cls() if settings.metrics_port is not None else None
