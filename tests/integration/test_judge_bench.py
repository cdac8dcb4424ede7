"""The judge benchmark runs end to end in quick mode (numbers are printed, not asserted)."""

from __future__ import annotations

from tests.benchmarks import bench_judge


def test_benchmark_quick_mode_reports_every_metric(capsys):
    rows = bench_judge.run(quick=True)
    assert all({"metric", "target", "value", "unit"} <= set(row) for row in rows)
    metrics = " | ".join(row["metric"] for row in rows)
    for expected in (
        "EvaluateRound 2 debaters x 2 orderings",
        "EvaluateRound 8 debaters x 8 orderings",
        "panel of 3 models",
        "RenderVerdict 2 debaters",
        "over gRPC loopback",
        "sim/judge answer",
    ):
        assert expected in metrics
    assert all(isinstance(row["value"], float) for row in rows)
    bench_judge.print_table(rows)
    assert "judge overhead" in capsys.readouterr().out
