"""The replicas' benchmark runs end to end in quick mode (figures are printed, not asserted: the
quick runs are too short to compare). Its watchers check that every event arrives once, in order,
on the owner and on the follower replica."""

from __future__ import annotations

import pytest

from tests.benchmarks import bench_replicas


@pytest.mark.timeout(600)
def test_benchmark_quick_mode_reports_the_ratio_and_the_writes_of_each_backend():
    rows = bench_replicas.run(quick=True)
    metrics = [row["metric"] for row in rows]
    assert "CPU per delivered event, 2 replicas / 1" in metrics
    for backend in ("SQLite", "PostgreSQL"):
        assert f"{backend}: commits a second per running debate" in metrics
        assert f"{backend}: rows written a second per running debate" in metrics
    assert all(row["value"] > 0 for row in rows)
