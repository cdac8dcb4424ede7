"""What a human seat costs (issue 19 part 3), against the real suite (SQLite, simulated models
instant): the orchestrator's CPU while debates wait for their human seats (each wait reads its
row every POLL_S), against the same process idle, and the time from a SubmitTurn call to the
turn's TurnCompleted as a subscriber sees it, against a GetDebateStatus round trip (the RPC floor).

    python -m tests.benchmarks.bench_human_seat [--quick]

CPU is the orchestrator process's user+system time (/proc/PID/stat) over a window; the machine
is shared, so run it three times and read the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from debate.orchestrator.v1 import orchestrator_pb2 as pb

from tests.reliability.processes import KillableSuite
from tests.support.human_seat import API_KEYS, INSTANT, TenantClient, human_config

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def cpu_over(pid: int, seconds: float) -> float:
    before = cpu_seconds(pid)
    await asyncio.sleep(seconds)
    return cpu_seconds(pid) - before


async def measure(debates: int, window: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-human-") as scratch:
        suite = KillableSuite(Path(scratch), {**INSTANT, "API_KEYS": API_KEYS}, log_level="WARNING")
        await suite.start_all()
        alice = TenantClient(suite.address("orchestrator"), "alice")
        try:
            pid = suite.processes["orchestrator"].pid
            await asyncio.sleep(1.0)
            idle = await cpu_over(pid, window)
            ids = [await alice.create_and_start(human_config(rounds=1, timeout_s=600)) for _ in range(debates)]
            for debate_id in ids:
                await alice.until(debate_id, "human_turn_awaited")
            waiting = await cpu_over(pid, window)

            floors, latencies = [], []
            for debate_id in ids:
                began = time.perf_counter()
                await alice.status(debate_id)
                floors.append(time.perf_counter() - began)
                events = alice.until(debate_id, "turn_completed")
                watcher = asyncio.ensure_future(events)
                await asyncio.sleep(0.05)  # the subscriber has replayed the log and waits live
                began = time.perf_counter()
                await alice.submit(debate_id, "Ann", 1, "Charge for parking; keep the streets open.", debate_id)
                await watcher
                latencies.append(time.perf_counter() - began)
            request = pb.ListDebatesRequest(page_size=debates)
            assert len((await alice.stub.ListDebates(request, metadata=alice.metadata)).debates) == debates
        finally:
            await alice.close()
            await suite.stop_all()
    return {
        "idle_cpu_ms_per_s": idle / window * 1000,
        "waiting_cpu_ms_per_s": waiting / window * 1000,
        "per_wait_cpu_ms_per_s": max(0.0, waiting - idle) / window * 1000 / debates,
        "submit_to_completed_ms_p50": statistics.median(latencies) * 1000,
        "submit_to_completed_ms_max": max(latencies) * 1000,
        "status_rpc_ms_p50": statistics.median(floors) * 1000,
    }


def run(quick: bool = False) -> list[dict]:
    debates, window = (10, 3.0) if quick else (40, 10.0)
    figures = asyncio.run(measure(debates, window))
    return [
        {
            "metric": f"human seat: orchestrator CPU with {debates} debates awaiting a person",
            "target": "-",
            "value": round(figures["waiting_cpu_ms_per_s"], 2),
            "unit": "ms CPU/s",
            "floor": round(figures["idle_cpu_ms_per_s"], 2),
            "note": f"floor: the same process idle; {figures['per_wait_cpu_ms_per_s']:.3f} ms/s a waiting debate",
        },
        {
            "metric": "human seat: SubmitTurn to its TurnCompleted seen by a subscriber (median)",
            "target": "-",
            "value": round(figures["submit_to_completed_ms_p50"], 2),
            "unit": "ms",
            "floor": round(figures["status_rpc_ms_p50"], 2),
            "note": f"floor: a GetDebateStatus round trip; max {figures['submit_to_completed_ms_max']:.1f} ms",
        },
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    for row in run(args.quick):
        print(f"{row['metric']}: {row['value']} {row['unit']} (floor {row['floor']}; {row['note']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
