"""`make bench`'s comparison with a user's litellm.acompletion loop (bench_user_loop) in quick
mode: both ways ran the same job on the same fake provider (it served every chunk of both), and
the figures are reported. Only that the run happened is asserted, never a timing."""

from __future__ import annotations

import pytest

from tests.benchmarks import bench_user_loop
from tests.benchmarks.scale import TOKENS_PER_TURN


@pytest.mark.benchmark_quick
async def test_user_loop_bench_quick_runs_the_same_job_both_ways():
    measured = await bench_user_loop.measure(quick=True, jobs=1)
    job_tokens = bench_user_loop.DEBATERS * TOKENS_PER_TURN
    for way in ("suite", "user_loop"):
        (job,) = measured["runs"][way]
        assert job.calls == bench_user_loop.DEBATERS
        assert job.tokens == job_tokens == job.chunks  # the provider's chunks, priced or counted
        assert job.cpu_s > 0
    assert measured["runs"]["suite"][0].suite_cpu_s >= measured["runs"]["suite"][0].cpu_s
    # Two warm-up jobs and one job each way, every one of them streamed by the provider.
    assert measured["provider"]["completed"] == 4 * bench_user_loop.DEBATERS
    assert measured["provider"]["chunks"] == 4 * job_tokens
    rows = bench_user_loop.rows_of(bench_user_loop.summarise(measured), 1)
    values = {row["metric"]: row["value"] for row in rows}
    assert values["user_loop_ratio_orchestrator_to_user_loop"] > 0
    assert values["user_loop_user_loop_us_per_token"] > 0
