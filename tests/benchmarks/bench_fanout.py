"""Fan-out to many watchers of one debate: what a streamed gRPC message costs, and what
`batch_events` saves, measured in the same run.

    python -m tests.benchmarks.bench_fanout [--quick] [--metrics]

1. The floor: bare grpcio, no debate engine. A server process holds N server-streaming calls
   and, 0.1 s apart, sends one small message on each; this process reads them. Process CPU
   (user + system) per message on each side, and the time from waking every stream to each
   having sent its message, with Python's default garbage collector and with the one the
   services run (`calm_garbage_collector`). This is what a message costs whatever it
   carries: the orchestrator cannot send a subscriber a message for less, nor reach every
   watcher of a debate sooner than one such fan-out.
2. The orchestrator: the real suite (tests/benchmarks/scale.py's harness) with K watchers of
   one 4-debater debate of simulated models, once with one event a message and once with
   `batch_events`: orchestrator CPU per delivered event, events per message, relay p99.
3. `--metrics`: the same level with batch_events in three settings, five times each:
   everything off; Prometheus metrics on (METRICS_PORT); metrics and OpenTelemetry traces on
   (OTEL_EXPORTER_OTLP_ENDPOINT pointed at a real OTLP/gRPC receiver in this process, which
   counts the spans it is sent: tests/support/otlp_receiver.py). The three suites run side by
   side and take turns, one level at a time, so that each repeat's three levels run seconds
   apart. Orchestrator CPU per delivered event in each, and the ratios to "off" (the issue's
   aim: at most 1.05x), of the medians and of each repeat. Then the share of the orchestrator's
   py-spy samples spent in the metrics and tracing layers over two levels with both on: within
   one process and one run, it reads the few percent that the A/B rows' run-to-run spread (10%
   to 20% on a shared 2-core machine) hides.

`run(quick)` returns rows for `make bench` (tests/benchmarks/run_all.py); the full run includes
the rows of 3 (the quick one leaves them to `--metrics --quick`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import multiprocessing
import os
import signal
import statistics
import sys
import sysconfig
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import psutil

from tests.support.otlp_receiver import OtlpReceiver

PY_SPY = os.path.join(os.path.dirname(sys.executable), "py-spy")  # the dev group's py-spy
PATH = "/bench.Fanout/Stream"
PAYLOAD = b"x" * 200  # about a batch of a few token deltas


def _cpu() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


async def _floor_server(streams: int, sends: int, calm_gc: bool, ports, results) -> None:
    if calm_gc:
        from services.common.server import calm_garbage_collector

        calm_garbage_collector()
    waiters: list[asyncio.Future] = []

    async def stream(request, context):
        for _ in range(sends):
            waiter = asyncio.get_running_loop().create_future()
            waiters.append(waiter)
            await waiter
            yield PAYLOAD

    handler = grpc.unary_stream_rpc_method_handler(stream, request_deserializer=None, response_serializer=None)
    server = grpc.aio.server(options=[("grpc.server.max_pending_requests", 4 * streams)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Fanout", {"Stream": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    ports.put(port)
    while len(waiters) < streams:
        await asyncio.sleep(0.01)
    cpu = _cpu()
    fanouts = []
    for i in range(sends):
        started = time.perf_counter()
        woken, waiters[:] = list(waiters), []
        for waiter in woken:
            waiter.set_result(None)
        if i < sends - 1:
            while len(waiters) < streams:  # every stream sent its message and waits again
                await asyncio.sleep(0.0005)
            fanouts.append(time.perf_counter() - started)
            await asyncio.sleep(0.1)
    results.put(((_cpu() - cpu) / (streams * sends) * 1e6, statistics.median(fanouts) * 1e3))
    await server.stop(1)


def _floor_server_process(streams: int, sends: int, calm_gc: bool, ports, results) -> None:
    import uvloop

    uvloop.run(_floor_server(streams, sends, calm_gc, ports, results))


async def _floor_client(port: int, streams: int) -> tuple[int, float]:
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range((streams + 499) // 500)
    ]
    calls = [channel.unary_stream(PATH, request_serializer=None, response_deserializer=None) for channel in channels]
    received = 0

    async def one(i: int) -> None:
        nonlocal received
        async for _ in calls[i % len(calls)](b""):
            received += 1

    tasks = [asyncio.create_task(one(i)) for i in range(streams)]
    await asyncio.sleep(0.5)  # the streams are open before the first message
    cpu = _cpu()
    await asyncio.gather(*tasks)
    spent = _cpu() - cpu
    for channel in channels:
        await channel.close()
    return received, spent / max(1, received) * 1e6


def grpc_floor(streams: int, sends: int, calm_gc: bool) -> tuple[float, float, float]:
    """(server µs, client µs) of CPU per streamed message with `streams` open streams, and the
    median ms from waking every stream to each having sent its message (one fan-out)."""
    import uvloop

    context = multiprocessing.get_context("spawn")
    ports, results = context.Queue(), context.Queue()
    server = context.Process(target=_floor_server_process, args=(streams, sends, calm_gc, ports, results), daemon=True)
    server.start()
    try:
        port = ports.get(timeout=60)
        received, client_us = uvloop.run(_floor_client(port, streams))
        server_us, fanout_ms = results.get(timeout=60)
    finally:
        server.join(timeout=10)
        if server.is_alive():
            server.kill()
    if received != streams * sends:
        raise RuntimeError(f"received {received} of {streams * sends} messages")
    return server_us, client_us, fanout_ms


async def orchestrator_fanout(
    watchers: int,
    quick: bool,
    *,
    batches: tuple[bool, ...] = (False, True),
    metrics: bool = False,
    extra_env: dict[str, str] | None = None,
    repeats: int = 1,
    gate: Callable[[], contextlib.AbstractAsyncContextManager[Any]] | None = None,
) -> dict[bool, list[dict]]:
    """The subscribers level of the scale harness at `watchers`, `repeats` times in one suite,
    without and with batch_events (`batches`): {batch: [level, ...]}; `metrics`: the services serve
    Prometheus metrics; `extra_env`: more settings of the services (e.g. OTEL_EXPORTER_OTLP_ENDPOINT);
    `gate`: each level runs inside `gate()`."""
    from tests.benchmarks import scale

    levels = {}
    for batch in batches:
        results = await scale.scale(
            [],
            [watchers] * repeats,
            budget=300 + 120 * repeats,  # gated levels wait for the other suites' turns
            subscriber_rounds=1,
            probes=10,
            tokens_per_second=400 if quick else 50,
            first_token_latency=0.05 if quick else 0.3,
            log_level="WARNING",
            batch=batch,
            metrics=metrics,
            extra_env=extra_env,
            gate=gate,
            keep_going=True,  # a level over the p99 limit still measures its CPU
        )
        levels[batch] = results["subscribers"]
        if len(levels[batch]) != repeats:
            raise RuntimeError(f"{len(levels[batch])} of {repeats} levels ran: {results.get('notes')}")
    return levels


MODES = ("off", "metrics", "metrics+tracing")


async def observability_overhead(watchers: int, quick: bool, repeats: int = 5) -> dict[str, list[float]]:
    """Orchestrator CPU per delivered event (batch_events) with everything off, with Prometheus
    metrics on (METRICS_PORT in every service, as `up` sets it), and with metrics and traces on
    (OTEL_EXPORTER_OTLP_ENDPOINT in every service, to a real OTLP receiver here).

    The three suites run side by side, started and warmed up together, and take turns: one level
    at a time, off, metrics, metrics+tracing, off, ... `repeats` times each. A repeat's three
    levels thus run back to back, seconds apart, so that a load that drifts (other work on a
    shared machine) touches them alike, and each suite starts once. Returns {"off": [µs, ...],
    "metrics": [...], "metrics+tracing": [...], "spans": [spans received from the tracing suite],
    "load": [the 1-minute load average after each level]}. RuntimeError when a watcher did not
    complete, or the tracing suite exported no span."""
    figures: dict[str, list[float]] = {mode: [] for mode in (*MODES, "spans", "load")}
    turn = asyncio.Lock()  # FIFO: the suites' levels run in turn
    ready = asyncio.Barrier(len(MODES))

    def gate_of(mode: str) -> Callable[[], contextlib.AbstractAsyncContextManager[None]]:
        waited = False

        @contextlib.asynccontextmanager
        async def gate() -> AsyncIterator[None]:
            nonlocal waited
            if not waited:  # no level runs while another suite still starts or warms up
                waited = True
                await ready.wait()
            async with turn:
                yield
                figures["load"].append(round(os.getloadavg()[0], 2))

        return gate

    with OtlpReceiver(keep=False) as receiver:
        runs = await asyncio.gather(
            *(
                orchestrator_fanout(
                    watchers,
                    quick,
                    batches=(True,),
                    metrics=mode != "off",
                    extra_env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint} if mode == "metrics+tracing" else None,
                    repeats=repeats,
                    gate=gate_of(mode),
                )
                for mode in MODES
            )
        )
        spans = receiver.span_count  # the services flush their spans as they stop
    for mode, levels in zip(MODES, runs, strict=True):
        for level in levels[True]:
            if level["completed"] != watchers:
                raise RuntimeError(f"{mode}: {level['completed']} of {watchers} watchers completed")
            figures[mode].append(level["orchestrator_cpu_per_event_us"])
    if spans == 0:
        raise RuntimeError("metrics+tracing: the services exported no span")
    figures["spans"].append(spans)
    return figures


# What the observability layers run, by source file: the suite's own (metrics, tracing, their
# interceptors) and the libraries' (prometheus-client, the OpenTelemetry SDK, its gRPC
# instrumentation and OTLP exporter). `EXPORT`: the span processor's thread and the exporter,
# whatever they call (protobuf's encoding, grpc's channel).
INSTRUMENTATION = (
    "/prometheus_client/",
    "/opentelemetry/",
    "/services/common/metrics.py",
    "/services/common/grpc_metrics.py",
    "/services/common/tracing.py",
    "/services/common/trace_context.py",
    "/services/orchestrator/metrics.py",
)
EXPORT = ("/opentelemetry/sdk/_shared_internal/", "/opentelemetry/sdk/trace/export/", "/opentelemetry/exporter/")
NEUTRAL = (sysconfig.get_paths()["stdlib"] + "/", "/google/protobuf/", "<frozen ")  # called by both sides


def _frame_file(frame: str) -> str:
    """`function (/path/file.py:12)` -> `/path/file.py`."""
    return frame.rpartition(" (")[2].rpartition(":")[0]


def instrumentation_samples(raw: str) -> tuple[int, int, dict[str, int]]:
    """py-spy's raw samples (`--full-filenames`, `-f raw`: `frame;frame;... count`, the leaf
    last) -> (all samples, samples in the observability layers, those by the deciding file). A
    sample is the layers' when a frame is the span exporter's, or when its innermost frame outside
    the standard library and protobuf is one of INSTRUMENTATION's files (a model call inside a
    tracing span is the model's; the span's own attributes are the layers')."""
    total = ours = 0
    files: dict[str, int] = {}
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        paths = [_frame_file(frame) for frame in stack.split(";")]
        decider = next((f for f in reversed(paths) if not any(x in f for x in NEUTRAL)), "")
        exporting = next((f for f in paths if any(x in f for x in EXPORT)), "")
        if exporting or any(x in decider for x in INSTRUMENTATION):
            ours += n
            key = (exporting or decider).rpartition("site-packages/")[2]
            files[key] = files.get(key, 0) + n
    return total, ours, files


async def instrumentation_share(watchers: int, quick: bool, levels: int = 2) -> dict:
    """The share of the orchestrator's samples spent in the observability layers, metrics and
    traces on: `levels` subscribers levels, py-spy attached to the orchestrator from the first
    level's start to the last one's end (start-up, the warm-up debate and the stop left out; the
    span exports of the levels counted). Within one process and one run, so a load that drifts
    touches both sides of the ratio alike. {"samples", "instrumentation", "share" (0..1), "files"}."""
    spy: asyncio.subprocess.Process | None = None
    ran = 0
    with OtlpReceiver(keep=False) as receiver, tempfile.TemporaryDirectory(prefix="spy-") as tmp:
        out = os.path.join(tmp, "samples.txt")

        @contextlib.asynccontextmanager
        async def gate() -> AsyncIterator[None]:
            nonlocal spy, ran
            if spy is None:
                (pid,) = [
                    child.pid
                    for child in psutil.Process().children(recursive=True)
                    if "services.orchestrator" in " ".join(child.cmdline())
                ]
                spy = await asyncio.create_subprocess_exec(
                    *(PY_SPY, "record", "--pid", str(pid), "--rate", "500", "--nonblocking", "--full-filenames"),
                    *("--format", "raw", "--output", out),
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
            yield
            ran += 1
            if ran == levels:  # py-spy writes its samples on SIGINT
                spy.send_signal(signal.SIGINT)
                await asyncio.wait_for(spy.wait(), 30)

        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
        await orchestrator_fanout(
            watchers, quick, batches=(True,), metrics=True, extra_env=env, repeats=levels, gate=gate
        )
        if spy is None or spy.returncode is None:
            raise RuntimeError("the levels did not all run")
        with open(out) as samples:
            total, ours, files = instrumentation_samples(samples.read())
    if total == 0:
        raise RuntimeError("py-spy took no sample")
    top = dict(sorted(files.items(), key=lambda item: -item[1])[:6])
    return {"samples": total, "instrumentation": ours, "share": ours / total, "files": top}


def metrics_rows(watchers: int, quick: bool, repeats: int = 5) -> list[dict]:
    """Rows of `observability_overhead`: metrics on, and metrics and traces on, against off."""
    figures = asyncio.run(observability_overhead(watchers, quick, repeats))
    off = statistics.median(figures["off"])
    rows = []
    for mode in MODES[1:]:
        on = statistics.median(figures[mode])
        # Each repeat runs every setting back to back: its own ratio is the least touched by a load
        # that drifts over the whole run.
        paired = sorted(round(a / b, 3) for a, b in zip(figures[mode], figures["off"], strict=True))
        rows.append(
            {
                "metric": f"orchestrator CPU per delivered event, {watchers} watchers, batch_events, {mode} on",
                "target": "<= 1.05x off",
                "value": round(on, 2),
                "unit": "µs",
                "floor": f"off: {off:.2f} (x{on / off:.3f})",
                "note": f"medians of {repeats}, the suites taking turns; off {figures['off']}, {mode} {figures[mode]}"
                + f"; ratio of each repeat {paired} (median x{statistics.median(paired):.3f})"
                + (f"; spans exported {figures['spans']}" if mode == "metrics+tracing" else "")
                + f"; load average {figures['load']}",
            }
        )
    share = asyncio.run(instrumentation_share(watchers, quick))
    files = ", ".join(f"{name} {n}" for name, n in share["files"].items())
    rows.append(
        {
            "metric": f"orchestrator samples in the metrics and tracing layers, {watchers} watchers, both on",
            "target": "<= 4.8% (1.05x)",
            "value": round(100 * share["share"], 2),
            "unit": "%",
            "floor": f"x{1 / (1 - share['share']):.3f} of the same work without them",
            "note": f"py-spy, {share['instrumentation']} of {share['samples']} samples of 2 levels; by file: {files}",
        }
    )
    return rows


def run(quick: bool = False) -> list[dict]:
    """Rows {metric, target, value, unit[, floor, note]} (see tests/benchmarks/run_all.py)."""
    streams, sends = (200, 10) if quick else (5000, 15)
    gc.collect()
    default_server, _, default_fanout = grpc_floor(streams, sends, calm_gc=False)
    calm_server, client, fanout = grpc_floor(streams, sends, calm_gc=True)
    rows = [
        {
            "metric": f"bare grpcio: one message to each of {streams} streams (median wall time)",
            "target": "(the floor)",
            "value": round(fanout, 1),
            "unit": "ms",
            "floor": f"default gc: {default_fanout:.1f}",
            "note": "the readers in another process, on the other core",
        },
        {
            "metric": f"bare grpcio: server CPU per streamed message, {streams} streams",
            "target": "(the floor)",
            "value": round(calm_server, 1),
            "unit": "µs",
            "floor": f"default gc: {default_server:.1f}",
            "note": "what the services run: gc.freeze() and a young-generation threshold of 50,000",
        },
        {
            "metric": f"bare grpcio: client CPU per received message, {streams} streams",
            "target": "(the floor)",
            "value": round(client, 1),
            "unit": "µs",
        },
    ]
    watchers = 100 if quick else 1000
    levels = asyncio.run(orchestrator_fanout(watchers, quick))
    (one,), (batched,) = levels[False], levels[True]
    rows += [
        {
            "metric": f"orchestrator CPU per delivered event, {watchers} watchers of one debate, batch_events",
            "target": "(lower is better)",
            "value": batched["orchestrator_cpu_per_event_us"],
            "unit": "µs",
            "floor": f"one event a message: {one['orchestrator_cpu_per_event_us']}",
        },
        {
            "metric": f"events per message, {watchers} watchers, batch_events",
            "target": "(higher is better)",
            "value": round(batched["events"] / max(1, batched["messages"]), 2),
            "unit": "events",
            "floor": "one event a message: 1",
        },
        {
            "metric": f"relay p99 to the last-served watcher, {watchers} watchers, batch_events",
            "target": "< 250 ms",
            "value": batched["relay_p99_ms"],
            "unit": "ms",
            "floor": f"one event a message: {one['relay_p99_ms']}",
            "note": f"all completed: {batched['completed'] == watchers and one['completed'] == watchers}",
        },
    ]
    if not quick:
        rows += metrics_rows(watchers, quick)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer streams and watchers (what the test suite runs)")
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="only the orchestrator's CPU per delivered event with everything off, metrics on, and metrics and "
        "traces on, three suites side by side taking turns, 5 times each (--repeats)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="with --metrics: the times each setting runs")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows = metrics_rows(100 if args.quick else 1000, args.quick, args.repeats) if args.metrics else run(args.quick)
    width = max(len(r["metric"]) for r in rows)
    for r in rows:
        print(f"{r['metric']:<{width}}  {r['value']:>8} {r['unit']:<6} {r.get('floor', '')}  {r.get('note', '')}")
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
