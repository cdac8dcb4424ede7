"""uvloop against asyncio's own loop on the simulated path: the orchestrator's CPU per event.

    python -m tests.benchmarks.bench_loop [--quick] [--debates N] [--runs N]

The scale harness (tests/benchmarks/scale.py) starts the suite, runs N concurrent 4-debater
debates of simulated models at 50 tokens a second, 200 tokens a turn, one watcher each, and
reads the orchestrator process's CPU (user + system) per delivered event. It does so with the
services on uvloop (UVLOOP=true, their default) and on asyncio's own loop (UVLOOP=false),
alternating, `runs` times each, in the same run; the figure is the median of each. The
streaming path's own comparison of the loops (a real provider's chunks) is in
bench_stream_floor.py.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics

LOOPS = {"uvloop": "true", "asyncio": "false"}


async def _level(debates: int, uvloop: str) -> dict:
    from tests.benchmarks import scale

    results = await scale.scale(
        [debates],
        [],
        budget=300,
        subscriber_rounds=1,
        probes=1,
        tokens_per_second=50,
        first_token_latency=0.3,
        log_level="WARNING",
        extra_env={"UVLOOP": uvloop},
    )
    (level,) = results["debates"]
    return level


def measure(debates: int, runs: int) -> dict[str, dict[str, float]]:
    """{loop: {cpu_per_event_us, relay_p99_ms, completed}} medians over `runs` alternating runs."""
    samples: dict[str, list[dict]] = {name: [] for name in LOOPS}
    for run in range(runs):
        order = list(LOOPS) if run % 2 == 0 else list(reversed(LOOPS))
        for name in order:
            samples[name].append(asyncio.run(_level(debates, LOOPS[name])))
    return {
        name: {
            "cpu_per_event_us": round(statistics.median(level["orchestrator_cpu_per_event_us"] for level in levels), 1),
            "relay_p99_ms": round(statistics.median(level["relay_p99_ms"] for level in levels), 1),
            "completed": min(level["completed"] for level in levels),
        }
        for name, levels in samples.items()
    }


def run(quick: bool = False, *, debates: int | None = None, runs: int | None = None) -> list[dict]:
    """Rows {metric, target, value, unit, floor} for `make bench`."""
    debates = debates or (5 if quick else 50)
    figures = measure(debates, runs or (1 if quick else 2))
    uv, plain = figures["uvloop"], figures["asyncio"]
    return [
        {
            "metric": f"simulated path: orchestrator CPU per event, {debates} debates, uvloop",
            "target": "(lower is better)",
            "value": uv["cpu_per_event_us"],
            "unit": "µs",
            "floor": f"asyncio's loop: {plain['cpu_per_event_us']}",
            "note": f"relay p99 {uv['relay_p99_ms']} ms (asyncio's loop {plain['relay_p99_ms']} ms)",
        },
        {
            "metric": "simulated path: orchestrator CPU per event, asyncio's loop / uvloop",
            "target": "",
            "value": round(plain["cpu_per_event_us"] / max(uv["cpu_per_event_us"], 1e-9), 2),
            "unit": "x",
        },
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--debates", type=int, default=None)
    parser.add_argument("--runs", type=int, default=None)
    args = parser.parse_args()
    for row in run(args.quick, debates=args.debates, runs=args.runs):
        print(f"{row['metric']:<75} {row['value']:>8} {row['unit']:<3} {row.get('floor', '')}  {row.get('note', '')}")


if __name__ == "__main__":
    main()
