"""Relay latency at light and at heavy load, in one run of one suite.

    python -m tests.benchmarks.bench_latency [--quick]

Relay latency is the time from a token chunk's arrival at the orchestrator (a TokenDelta is
stamped with its first chunk's time) to the event's arrival at a subscriber. The light rows
are one debate (its probe) and one debate with 10 watchers; the heavy rows are 300
concurrent 4-debater debates and 3,000 watchers of one debate (the README's scale levels).
The aims of issue 16: at light load at most 3 ms p50 and 10 ms p99; at heavy load the
figures of the fixed 25 ms tick, which the orchestrator now only reaches under load
(events.py: commits spaced by the busy share of the process).

It drives `tests.benchmarks.scale` (the same harness, ramp and probes) with these levels.
Quick mode (for the test suite): the light levels and 20 debates / 100 watchers.
"""

from __future__ import annotations

import argparse
import asyncio
import os

from tests.benchmarks.scale import scale

LIGHT_DEBATES, LIGHT_WATCHERS = 1, 10
HEAVY_DEBATES, HEAVY_WATCHERS = 300, 3000
QUICK_HEAVY_DEBATES, QUICK_HEAVY_WATCHERS = 20, 100
AIM_LIGHT_P50_MS, AIM_LIGHT_P99_MS = 3.0, 10.0


def run(quick: bool = False) -> list[dict]:
    """Rows {metric, target, value, unit}: relay p50 and p99 (ms) at each level, light first."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    heavy_debates, heavy_watchers = (
        (QUICK_HEAVY_DEBATES, QUICK_HEAVY_WATCHERS) if quick else (HEAVY_DEBATES, HEAVY_WATCHERS)
    )
    results = asyncio.run(
        scale(
            [LIGHT_DEBATES, heavy_debates],
            [LIGHT_WATCHERS, heavy_watchers],
            budget=300.0 if quick else 900.0,
            subscriber_rounds=1,
            probes=LIGHT_WATCHERS,
            tokens_per_second=50.0,
            first_token_latency=0.3,
            log_level="WARNING",
        )
    )
    rows = []
    for kind, unit_name in (("debates", "debates"), ("subscribers", "watchers")):
        for level in results[kind]:
            light = level["n"] in (LIGHT_DEBATES, LIGHT_WATCHERS)
            name = f"relay_latency[{level['n']} {unit_name}]"
            for stat, aim in (("p50", AIM_LIGHT_P50_MS), ("p99", AIM_LIGHT_P99_MS)):
                rows.append(
                    {
                        "metric": f"{name} {stat}",
                        "target": f"<= {aim:g}" if light else "",
                        "value": level[f"relay_{stat}_ms"],
                        "unit": "ms",
                        "note": "" if level["passed"] else "level failed: " + "; ".join(level["notes"]),
                    }
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="light levels and a small heavy level")
    args = parser.parse_args()
    for row in run(args.quick):
        print(f"{row['metric']:<40} {row['value']:>9} {row['unit']:<3} {row['target']:<8} {row['note']}")


if __name__ == "__main__":
    main()
