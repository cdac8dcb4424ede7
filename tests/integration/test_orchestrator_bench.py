"""The orchestrator benchmark runs in quick mode so it cannot rot (figures only, no time limits)."""

from tests.benchmarks import bench_orchestrator


def test_orchestrator_benchmark_quick_mode_reports_every_figure():
    rows = bench_orchestrator.run(quick=True)
    metrics = " | ".join(r["metric"] for r in rows)
    for expected in (
        "own overhead per debater",
        "2 debaters",
        "3 debaters",
        "4 debaters",
        "parallel stream setup",
        "sliding window build after 20 rounds",
        "after 50 rounds",
        "whole 5-round debate",
        "per active debater stream",
        "per subscriber stream",
        "retained after 3 debates",
        "relay latency",
        "messages/s",
    ):
        assert expected in metrics
    for row in rows:
        assert set(row) >= {"metric", "target", "value", "unit"}
        assert isinstance(row["value"], (int, float))
