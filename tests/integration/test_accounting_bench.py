"""The accounting benchmark runs end to end in quick mode (numbers are printed, not asserted)."""

from __future__ import annotations

from tests.benchmarks import bench_accounting


def test_benchmark_quick_mode_reports_every_metric(capsys):
    rows = bench_accounting.run(quick=True)
    assert all(set(row) == {"metric", "target", "value", "unit"} for row in rows)
    metrics = " | ".join(row["metric"] for row in rows)
    for expected in (
        "CalculateCost in process",
        "CountTokens throughput",
        "CalculateCost RPC rate",
        "RSS at rest",
        "RecordUsage RPC rate",
        "ledger commit",
    ):
        assert expected in metrics
    assert all(row["value"] > 0 for row in rows)
    bench_accounting.print_table(rows)
    assert "CalculateCost RPC rate" in capsys.readouterr().out
