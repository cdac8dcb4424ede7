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


@pytest.mark.e2e
@pytest.mark.benchmark_quick
def test_observability_overhead_measures_off_metrics_and_tracing_in_one_run():
    """`--metrics`: each of the three settings ran with every watcher served, and the tracing run's
    services really exported spans to the benchmark's OTLP receiver (else its figure means nothing)."""
    import asyncio

    figures = asyncio.run(bench_fanout.observability_overhead(20, quick=True, repeats=1))
    for mode in bench_fanout.MODES:
        assert len(figures[mode]) == 1 and figures[mode][0] > 0, mode
    assert figures["spans"][0] > 0  # the debates' spans (a watcher's stream has none)


@pytest.mark.e2e
@pytest.mark.benchmark_quick
def test_instrumentation_share_samples_the_orchestrator_with_metrics_and_traces_on():
    """py-spy (the dev group's) samples the real orchestrator through a level: the share is a
    fraction of samples that exist."""
    import asyncio

    share = asyncio.run(bench_fanout.instrumentation_share(20, quick=True, levels=1))
    assert share["samples"] > 0
    assert 0 <= share["instrumentation"] <= share["samples"]
    assert share["share"] == share["instrumentation"] / share["samples"]
