"""Orchestrator replicas (issue 15): debates carried at relay p99 under 250 ms by 2 orchestrator
replicas, each pinned to one core, against 1 replica on one core; the ratio is the figure (aim:
at least 1.8x).

    python -m tests.benchmarks.bench_replica_capacity            # both ramps, a few minutes
    python -m tests.benchmarks.bench_replica_capacity --quick    # one small level each (what the tests run)

Both runs are the replicated suite as `debate-engine up --replicas 2` starts it (two judges, two
accountings, every orchestrator on one PostgreSQL database, a fresh one per run, on a
throwaway server with production durability, DURABLE_OPTIONS); they differ only in the
orchestrators: one, pinned to the first core, or two, pinned to the first and second cores
(os.sched_setaffinity). The judges, accountings, PostgreSQL and this harness float over every
core, in both runs.

A level of N debates per replica is scale.py's debate level (tests/benchmarks/scale.py,
`Harness.debates_level`: 4 simulated debaters, one round, 200 tokens a turn at 50 tokens a
second, one subscriber each, started at once) run on every replica at the same moment, each
replica's debates created, started and watched on that replica (its owner). A level passes when
every replica's does (every debate completed, relay p99 under 250 ms); the ramp stops at the
first level that fails. "Carried" is the largest passing total.

On a 2-core machine the second replica takes the core that the harness, the judges,
accountings and PostgreSQL had to themselves in the 1-replica run, so the ratio here is a
floor of what two real cores (or hosts) give; the load average is printed with each level.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time

import grpc
from debate.orchestrator.v1 import orchestrator_pb2_grpc

from services.common.postgres_server import DURABLE_OPTIONS, PostgresMissing, PostgresServer, find_bindir
from services.gateway import GatewayConfig
from services.launcher import SERVICES, SuiteConfig
from services.supervisor import Suite
from tests.benchmarks.scale import P99_LIMIT_MS, Harness, Level, _print_level
from tests.helpers import free_port

TOKENS_PER_SECOND = 50.0
FIRST_TOKEN_LATENCY = 0.3
# Debates per replica at each level of the ramp.
LEVELS = (10, 20, 30, 40, 50, 60, 80, 100, 120, 150, 200, 250, 300)
QUICK_LEVELS = (2,)
QUICK_TOKENS_PER_SECOND = 400.0


def cores() -> list[int]:
    """The cores this process may run on, in order."""
    return sorted(os.sched_getaffinity(0))


async def ramp(
    server: PostgresServer, replicas: int, levels: tuple[int, ...], tokens_per_second: float, budget: float
) -> list[dict]:
    """Starts the replicated suite with `replicas` orchestrators on a fresh database, pins each to
    its own core, and runs the levels until one fails or `budget` seconds are spent. One dict a
    level: per_replica (N debates each), total, passed, relay_p99_ms (the worst replica's),
    orchestrator_cpu_s (summed), load_average."""
    deadline = time.monotonic() + budget
    most = max(levels)
    with tempfile.TemporaryDirectory(prefix="replicas-bench-") as data_dir:
        config = SuiteConfig(
            data_dir=data_dir,
            log_level="WARNING",
            replicas=2,  # two judges and two accountings in both runs; the orchestrators differ
            database_url=server.create_database(),
            replica_ports={service: [free_port(), free_port()] for service in SERVICES},
            gateway=GatewayConfig(enabled=False),
            extra_env={
                "SIM_TOKENS_PER_SECOND": str(tokens_per_second),
                "SIM_FIRST_TOKEN_LATENCY": str(FIRST_TOKEN_LATENCY),
                "MAX_RUNNING_DEBATES": str(most + 10),
                "MAX_QUEUED_DEBATES": str(most + 10),
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            },
        )
        orchestrators = [f"orchestrator-{k + 1}" for k in range(replicas)]
        specs = [s for s in config.process_specs() if not s.name.startswith("orchestrator") or s.name in orchestrators]
        tail: list[str] = []
        async with Suite(specs, output=tail.append) as suite:
            available = cores()
            harnesses, channels = [], []
            for k, name in enumerate(orchestrators):
                process = next(p.process for p in suite.running if p.spec.name == name)
                os.sched_setaffinity(process.pid, {available[k % len(available)]})
                address = config.addresses("orchestrator")[k]
                options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", 64 * 2**20)]
                channel = grpc.aio.insecure_channel(address, options=options)
                channels.append(channel)
                harnesses.append(
                    Harness(
                        orchestrator_pb2_grpc.OrchestratorServiceStub(channel),
                        lambda address=address, options=options: grpc.aio.insecure_channel(address, options=options),
                        process.pid,
                        address,
                    )
                )
            try:
                # A first debate on each replica loads what every debate shares; not a level.
                await asyncio.gather(*(h.debates_level(1, timeout=120) for h in harnesses))
                turn = 200 / tokens_per_second + FIRST_TOKEN_LATENCY
                results = []
                for n in levels:
                    timeout = max(60.0, 8 * turn)
                    if time.monotonic() + timeout > deadline:
                        break
                    per_replica: list[Level] = list(
                        await asyncio.gather(*(h.debates_level(n, timeout=timeout) for h in harnesses))
                    )
                    for level in per_replica:
                        _print_level(level)
                    results.append(
                        {
                            "per_replica": n,
                            "total": n * replicas,
                            "passed": all(level.passed for level in per_replica),
                            "relay_p99_ms": max(level.relay_p99_ms for level in per_replica),
                            "orchestrator_cpu_s": round(sum(level.orchestrator_cpu_s for level in per_replica), 2),
                            "load_average": round(os.getloadavg()[0], 2),
                        }
                    )
                    if not results[-1]["passed"]:
                        break
                    await asyncio.sleep(1.0)
            finally:
                for channel in channels:
                    await channel.close()
    return results


def carried(results: list[dict]) -> int:
    """The largest total that passed (0: none did)."""
    return max((r["total"] for r in results if r["passed"]), default=0)


def run(quick: bool = False) -> list[dict]:
    """Rows for run_all: debates carried by 1 and by 2 replicas, and their ratio."""
    try:
        find_bindir()
    except PostgresMissing:
        return []
    levels = QUICK_LEVELS if quick else LEVELS
    tokens_per_second = QUICK_TOKENS_PER_SECOND if quick else TOKENS_PER_SECOND
    budget = 120.0 if quick else 600.0
    pinned = "each pinned to one core" if len(cores()) >= 2 else "on the one core there is"
    with PostgresServer(options=DURABLE_OPTIONS) as server:
        one = asyncio.run(ramp(server, 1, levels, tokens_per_second, budget))
        two = asyncio.run(ramp(server, 2, levels, tokens_per_second, budget))
    carried_one, carried_two = carried(one), carried(two)
    ramps = f"levels tried: 1 replica {[r['total'] for r in one]}, 2 replicas {[r['total'] for r in two]}"
    load = max((r["load_average"] for r in one + two), default=0.0)
    return [
        {
            "metric": f"debates carried at relay p99 < {P99_LIMIT_MS:.0f} ms, 1 orchestrator on one core",
            "target": "",
            "value": carried_one,
            "unit": "debates",
            "note": ramps,
        },
        {
            "metric": f"debates carried at relay p99 < {P99_LIMIT_MS:.0f} ms, 2 orchestrators {pinned}",
            "target": "",
            "value": carried_two,
            "unit": "debates",
            "note": f"load average up to {load}",
        },
        {
            "metric": "debates carried, 2 orchestrator replicas / 1",
            "target": ">= 1.8x",
            "value": round(carried_two / carried_one, 2) if carried_one else 0.0,
            "unit": "x",
        },
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small level each (what the test suite runs)")
    rows = run(parser.parse_args(argv).quick)
    for row in rows:
        print(f"{row['metric']:<75} {row['value']:>8} {row['unit']}  {row.get('target', '')}  {row.get('note', '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
