"""The replicas capacity benchmark runs end to end in quick mode (figures printed, not asserted)."""

from __future__ import annotations

import pytest

from tests.benchmarks import bench_replica_capacity

pytestmark = pytest.mark.timeout(400)


def test_benchmark_quick_mode_reports_one_and_two_replicas_and_their_ratio(capsys):
    rows = bench_replica_capacity.run(quick=True)
    assert [row["unit"] for row in rows] == ["debates", "debates", "x"]
    one, two, ratio = (row["value"] for row in rows)
    # One small level each: both carried it, the second with twice the debates.
    assert (one, two, ratio) == (2, 4, 2.0)
    out = capsys.readouterr().out
    assert "completed 2/2" in out and "relay p99" in out
