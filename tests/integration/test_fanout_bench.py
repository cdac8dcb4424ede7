"""The fan-out benchmark runs in quick mode so it cannot rot. Figures are printed, not
limited; what is asserted is shape, and that batching carries several events a message."""

from __future__ import annotations

import pytest

from tests.benchmarks import bench_fanout


@pytest.mark.e2e
@pytest.mark.benchmark_quick
def test_fanout_benchmark_quick_mode_reports_every_figure():
    rows = {row["metric"].split(",")[0]: row for row in bench_fanout.run(quick=True)}
    assert set(rows) == {
        "bare grpcio: one message to each of 200 streams (median wall time)",
        "bare grpcio: server CPU per streamed message",
        "bare grpcio: client CPU per received message",
        "orchestrator CPU per delivered event",
        "events per message",
        "relay p99 to the last-served watcher",
    }
    assert all(row["value"] > 0 for row in rows.values())
    assert rows["events per message"]["value"] > 1.5  # the same watchers, the same debate: fewer messages
    assert "all completed: True" in rows["relay p99 to the last-served watcher"]["note"]
