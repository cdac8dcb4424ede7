"""`debate-engine load --procs N`: the load from N processes, one report.

One Python process drives about one core's worth of calls; where the server has more cores
than that, N processes (spawned, each with its own event loop and channels) split the run:
-n, -c and --rps are divided among them, each takes its own range of request numbers (so
call templates stay unique), and their results are merged into one ghz report, details in
time order. --skipFirst applies to the first process only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import signal
from array import array
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from services.loadtest.config import LoadConfig
from services.loadtest.report import (
    MAX_RESULT,
    CallRecorder,
    MessageStats,
    build_report,
)
from services.loadtest.runner import LoadRunner


def _share(total: int, parts: int, index: int) -> int:
    return total // parts + (1 if index < total % parts else 0)


def split(config: LoadConfig, procs: int) -> list[LoadConfig]:
    """The configs of the processes (no process gets zero calls or zero workers)."""
    if config.duration <= 0:
        procs = max(1, min(procs, config.total))
    procs = max(1, min(procs, config.concurrency))
    configs, first = [], config.first_number
    for i in range(procs):
        total = _share(config.total, procs, i)
        configs.append(
            dataclasses.replace(
                config,
                total=total,
                concurrency=_share(config.concurrency, procs, i),
                rps=_share(config.rps, procs, i) if config.rps else 0,
                first_number=first,
                skip_first=config.skip_first if i == 0 else 0,
            )
        )
        first += total if config.duration <= 0 else 1_000_000_000
    return configs


async def _drive(runner: LoadRunner) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, runner.stop)
    return await runner.drive()


def _child(config: LoadConfig) -> dict[str, Any]:
    runner = LoadRunner(config)
    runner.prepare()
    try:
        import uvloop

        total_ns = uvloop.run(_drive(runner))
    except ImportError:
        total_ns = asyncio.run(_drive(runner))
    calls, messages = runner.calls, runner.messages
    assert runner.payloads is not None  # prepare() made them
    return {
        "total_ns": total_ns,
        "end_reason": runner.end_reason,
        "data": runner.payloads.data,
        "count": calls.count,
        "total_latency_ns": calls.total_latency_ns,
        "status_dist": calls.status_dist,
        "error_dist": calls.error_dist,
        "latencies": calls.latencies.tobytes(),
        "timestamps": calls.timestamps.tobytes(),
        "failures": calls.failures,
        "messages": None
        if messages is None
        else {
            "count": messages.count,
            "calls_with_messages": messages.calls_with_messages,
            "gaps": messages.gaps.tobytes(),
            "first": messages.first.tobytes(),
            "total_gap_ns": messages.total_gap_ns,
        },
    }


def merge(parts: list[dict[str, Any]]) -> tuple[CallRecorder, MessageStats | None, int, str]:
    """The processes' results as one run: counts summed, details in time order."""
    merged = CallRecorder()
    entries: list[tuple[int, int, tuple[str, str] | None]] = []
    for part in parts:
        merged.count += part["count"]
        merged.total_latency_ns += part["total_latency_ns"]
        for key, value in part["status_dist"].items():
            merged.status_dist[key] = merged.status_dist.get(key, 0) + value
        for key, value in part["error_dist"].items():
            merged.error_dist[key] = merged.error_dist.get(key, 0) + value
        latencies, timestamps = array("q"), array("q")
        latencies.frombytes(part["latencies"])
        timestamps.frombytes(part["timestamps"])
        failures = part["failures"]
        entries.extend(
            (ts, lat, failures.get(i)) for i, (lat, ts) in enumerate(zip(latencies, timestamps, strict=True))
        )
    entries.sort(key=lambda e: e[0])
    for ts, lat, failure in entries[:MAX_RESULT]:
        if failure is not None:
            merged.failures[len(merged.latencies)] = failure
        merged.latencies.append(lat)
        merged.timestamps.append(ts)
    messages = None
    if any(part["messages"] is not None for part in parts):
        messages = MessageStats()
        for part in parts:
            m = part["messages"]
            if m is None:
                continue
            messages.count += m["count"]
            messages.calls_with_messages += m["calls_with_messages"]
            messages.total_gap_ns += m["total_gap_ns"]
            for name in ("gaps", "first"):
                values = array("q")
                values.frombytes(m[name])
                target = getattr(messages, name)
                target.extend(values[: max(0, MAX_RESULT - len(target))])
    reasons = {part["end_reason"] for part in parts}
    reason = "cancel" if "cancel" in reasons else "timeout" if "timeout" in reasons else "normal"
    return merged, messages, max(part["total_ns"] for part in parts), reason


def run_procs(config: LoadConfig, procs: int) -> dict[str, Any]:
    """Runs the load from `procs` processes and returns one ghz report."""
    configs = split(config, procs)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the children, which report
    try:
        with ProcessPoolExecutor(len(configs), mp_context=multiprocessing.get_context("spawn")) as pool:
            parts = list(pool.map(_child, configs))
    finally:
        signal.signal(signal.SIGINT, previous)
    calls, messages, total_ns, reason = merge(parts)
    options = config.run_options(parts[0]["data"])
    return build_report(options, calls, total_ns, reason, messages)
