"""What one traced gRPC call costs the server, in the same run as the same call untraced.

    python -m tests.benchmarks.bench_tracing [--quick]

A server-streaming behaviour of 30 small messages (about what a watcher of one round gets with
batch_events) is run directly, many times, on this process's event loop: bare, and inside the
server wrapper of the tracing interceptor the services install when OTEL_EXPORTER_OTLP_ENDPOINT
is set (services.common.tracing: the remote context extracted from a `traceparent`, a SERVER
span started and ended, the BatchSpanProcessor, the OTLP/gRPC exporter encoding and sending
the spans to a real receiver in another process, tests/support/otlp_receiver.py). Process CPU
of this process (every thread: the exporter's too; not the receiver's) per call, three times
each, alternating.

This is why the orchestrator serves a watcher's StreamDebateEvents without a span: a debate with
thousands of watchers would pay this per watcher, a few µs per delivered event.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import multiprocessing
import statistics
import time

from services.common.settings import ServiceSettings
from services.common.tracing import Tracing
from tests.support.otlp_receiver import OtlpReceiver

MESSAGES = 30
FLUSH_EVERY = 1000  # calls between flushes, below the BatchSpanProcessor's queue of 2,048 spans
_Metadatum = collections.namedtuple("_Metadatum", "key value")


class _Details:
    method = "/debate.orchestrator.v1.OrchestratorService/GetDebate"


class _Context:
    """What the wrapper reads of a grpc.aio servicer context: its metadata and its peer."""

    def invocation_metadata(self):
        return (
            _Metadatum("user-agent", "grpc-python/1.85.3"),
            _Metadatum("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        )

    def peer(self):
        return "ipv4:127.0.0.1:50000"


async def _stream(request, context):
    for _ in range(MESSAGES):
        yield b"x"


async def _cpu_per_call(traced: bool, calls: int, endpoint: str) -> float:
    tracing = Tracing.from_settings(ServiceSettings(otel_exporter_otlp_endpoint=endpoint), "debate-bench")
    assert tracing is not None
    behavior = _stream
    if traced:
        behavior = tracing.server_interceptor().otel._intercept_aio_server_stream(_stream, _Details())
    context = _Context()

    async def once() -> None:
        async for _ in behavior(None, context):
            pass

    for _ in range(min(200, calls)):
        await once()
    tracing.provider.force_flush()
    started = time.process_time()
    for i in range(calls):
        await once()
        if i % FLUSH_EVERY == FLUSH_EVERY - 1:
            tracing.provider.force_flush()  # within the span queue (2,048): no span dropped
    tracing.provider.force_flush()  # the spans exported: their encoding and sending counted
    elapsed = time.process_time() - started
    tracing.shutdown()
    return elapsed / calls * 1e6


def _receiver_process(endpoints, done, counts) -> None:
    with OtlpReceiver(keep=False) as receiver:
        endpoints.put(receiver.endpoint)
        done.wait()
        counts.put(receiver.span_count)


def run(quick: bool = False) -> list[dict]:
    """Rows {metric, target, value, unit, floor, note} (see tests/benchmarks/run_all.py)."""
    calls = 500 if quick else 5000
    figures: dict[bool, list[float]] = {False: [], True: []}
    spawn = multiprocessing.get_context("spawn")
    endpoints, counts, done = spawn.Queue(), spawn.Queue(), spawn.Event()
    receiver = spawn.Process(target=_receiver_process, args=(endpoints, done, counts), daemon=True)
    receiver.start()
    try:
        endpoint = endpoints.get(timeout=60)
        for _ in range(3):
            for traced in (False, True):
                figures[traced].append(asyncio.run(_cpu_per_call(traced, calls, endpoint)))
        done.set()
        spans = counts.get(timeout=60)
    finally:
        done.set()
        receiver.join(10)
    bare, traced = statistics.median(figures[False]), statistics.median(figures[True])
    return [
        {
            "metric": f"server CPU of one traced gRPC call ({MESSAGES} streamed messages), span exported over OTLP",
            "target": "(the cost of a span)",
            "value": round(traced, 1),
            "unit": "µs",
            "floor": f"untraced: {bare:.1f} (+{traced - bare:.1f})",
            "note": f"medians of 3 x {calls} calls; {spans} spans received of {3 * (calls + min(200, calls))}",
        }
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls")
    args = parser.parse_args(argv)
    for row in run(args.quick):
        print(f"{row['metric']}  {row['value']} {row['unit']}  {row['floor']}  {row['note']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
