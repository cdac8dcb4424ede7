"""The latency benchmark runs end to end in quick mode: both light levels and a heavy one are
measured in one suite (figures are printed by `make bench`, not asserted here)."""

from __future__ import annotations

from tests.benchmarks import bench_latency


def test_quick_mode_reports_the_light_and_the_heavy_levels_in_one_run():
    rows = bench_latency.run(quick=True)
    metrics = [row["metric"] for row in rows]
    for level in ("1 debates", "10 watchers", "20 debates", "100 watchers"):
        assert f"relay_latency[{level}] p50" in metrics and f"relay_latency[{level}] p99" in metrics
    assert all(row["value"] > 0 and not row["note"] for row in rows)
    light = {row["metric"]: row for row in rows if row["target"]}
    assert set(light) == {f"relay_latency[{lv}] {s}" for lv in ("1 debates", "10 watchers") for s in ("p50", "p99")}
