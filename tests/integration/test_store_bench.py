"""The store benchmark runs end to end in quick mode (numbers are printed, not asserted)."""

from __future__ import annotations

from tests.benchmarks import bench_store


def test_benchmark_quick_mode_reports_every_backend(capsys):
    rows = bench_store.run(quick=True)
    assert all(set(row) == {"metric", "target", "value", "unit"} for row in rows)
    metrics = " | ".join(row["metric"] for row in rows)
    for expected in ("SQLite: 200 events", "PostgreSQL (the store's): 200 events", "executemany", "unnest"):
        assert expected in metrics
    assert all(row["value"] > 0 for row in rows)
    bench_store.print_table(rows)
    assert "loop held" in capsys.readouterr().out
