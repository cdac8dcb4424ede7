"""Judge report benchmark: what GetJudgeReport's domain work costs over a tenant's stored debates.

    python -m tests.benchmarks.bench_judge_report [--debates 200 1000 4000] [--repeat 3]

`run(quick)` returns its rows for `make bench` (tests/benchmarks/run_all.py).

Each size is a fresh SQLite store (a temporary file) holding that many completed 2-debater,
2-round debates of one tenant: turns with usage, round assessments with 2 accepted judge calls
each (2 orderings, `JudgeCall.totals`), a verdict and 3 votes. It prints, per size, the CPU time
(this process, `time.process_time`) of `judge_report.tenant_report`: the four reads and the
statistics, median of --repeat runs, and per debate.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time

from debate.common.v1 import common_pb2 as c

from services.orchestrator.judge_report import Thresholds, tenant_report
from services.orchestrator.run import S
from services.orchestrator.store import DebateRow, SqliteStore

NAMES = ("ada", "milo")


def fill(store: SqliteStore, debates: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    config = c.DebateConfig(topic="t", participants=[c.Participant(name=n, model="sim/debater") for n in NAMES])
    for d in range(debates):
        debate_id = f"d{d:06d}"
        verdict = c.Verdict(winner=rng.choice(NAMES), judge_models=["sim/judge"])
        row = DebateRow(
            debate_id, "t", "", config, S.DEBATE_STATE_COMPLETED, d, d, 0, 2, "", "", None,
            verdict.SerializeToString(), True, 0,
        )  # fmt: skip
        store.insert_debate(row)
        for r in (1, 2):
            totals = {n: round(rng.uniform(2, 9), 2) for n in NAMES}
            for n in NAMES:
                usage = c.TokenUsage(completion_tokens=rng.randint(80, 200))
                store.put_turn(debate_id, c.Turn(round_number=r, participant=n, usage=usage), True)
            calls = [
                c.JudgeCall(model="sim/judge", ordering=list(o), accepted=True, totals=totals)
                for o in (NAMES, NAMES[::-1])
            ]
            assessment = c.RoundAssessment(
                round_number=r, judge_models=["sim/judge"], calls=calls, ordering_agreement=1
            )
            store.put_assessment(debate_id, assessment, True)
        for v in range(3):
            store.put_vote(debate_id, f"voter{v}", rng.choice(NAMES), False, 0)
    store.commit()


def measure(debates: int, repeat: int) -> tuple[float, int]:
    """The median CPU seconds of tenant_report over `debates` stored debates, and the judges it reports."""
    with tempfile.TemporaryDirectory() as folder:
        store = SqliteStore(os.path.join(folder, "orchestrator.sqlite3"))
        try:
            fill(store, debates)
            times = []
            for _ in range(repeat):
                began = time.process_time()
                report = asyncio.run(tenant_report(store, "t", Thresholds()))
                times.append(time.process_time() - began)
        finally:
            store.close()
    return statistics.median(times), len(report)


def run(quick: bool = False) -> list[dict]:
    rows = []
    for debates in (200,) if quick else (200, 1000, 4000):
        median, _ = measure(debates, 3)
        rows.append(
            {
                "metric": f"judge report (calibration and audits) over {debates} stored debates, CPU per debate",
                "target": "-",
                "value": round(median / debates * 1e6, 1),
                "unit": "µs",
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--debates", type=int, nargs="+", default=[200, 1000, 4000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} at start")
    print(f"{'debates':>8}  {'report CPU ms (median)':>22}  {'µs per debate':>13}  judges")
    for debates in args.debates:
        median, judges = measure(debates, args.repeat)
        print(f"{debates:>8}  {median * 1000:>22.1f}  {median / debates * 1e6:>13.0f}  {judges}")
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
