"""`debate-engine top`'s figures from real exposition text (the services' own metric classes,
rendered by prometheus-client), the histogram quantile, the screen and the suite file."""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from prometheus_client import generate_latest

from services.accounting.metrics import AccountingMetrics
from services.client.style import Style
from services.client.suite_metrics import Snapshot, Window, histogram_quantile, increase
from services.client.top import endpoints, render, usd
from services.common.metrics import ServiceMetrics
from services.orchestrator.metrics import OrchestratorMetrics
from services.suite_file import SuiteFileError, SuiteProcess, read_suite_file, remove_suite_file, write_suite_file

INF = math.inf


# -- histogram_quantile ------------------------------------------------------------------------


def test_quantile_interpolates_inside_the_bucket_that_holds_the_rank():
    buckets = {0.1: 0.0, 0.2: 10.0, 0.4: 20.0, INF: 20.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.2)
    assert histogram_quantile(0.75, buckets) == pytest.approx(0.3)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.2 + 0.2 * 9.8 / 10)


def test_quantile_of_the_lowest_bucket_starts_at_zero():
    assert histogram_quantile(0.5, {1.0: 10.0, INF: 10.0}) == pytest.approx(0.5)


def test_quantile_in_the_inf_bucket_is_the_highest_finite_bound():
    assert histogram_quantile(0.9, {0.1: 5.0, 0.5: 5.0, INF: 10.0}) == 0.5


def test_quantile_of_an_empty_histogram_is_none_and_bad_input_is_refused():
    assert histogram_quantile(0.5, {0.1: 0.0, INF: 0.0}) is None
    with pytest.raises(ValueError):
        histogram_quantile(1.5, {0.1: 1.0, INF: 1.0})
    with pytest.raises(ValueError):
        histogram_quantile(0.5, {0.1: 1.0})  # no +Inf bucket


# -- real exposition text ----------------------------------------------------------------------


class Orchestrator:
    """An orchestrator's real metric families; the hub and scheduler counts its collector reads
    are plain attributes here."""

    def __init__(self) -> None:
        self.service = ServiceMetrics()
        self.metrics = OrchestratorMetrics(self.service)
        self.hub = SimpleNamespace(events_appended=0, subscriber_count=0, messages_sent=0, subscribers_cut=0)
        self.scheduler = SimpleNamespace(running=[], queue=[])
        self.metrics.watch(self.hub, self.scheduler)

    def text(self) -> str:
        return generate_latest(self.service.registry).decode()


class Accounting:
    def __init__(self) -> None:
        self.service = ServiceMetrics()
        self.metrics = AccountingMetrics(self.service)

    def text(self) -> str:
        return generate_latest(self.service.registry).decode()


def test_snapshot_parses_the_services_exposition_text():
    orchestrator = Orchestrator()
    orchestrator.metrics.llm.call("sim/debater").finished(100, 20)
    snap = Snapshot.parse(orchestrator.text(), 5.0)
    assert snap.time == 5.0
    usage = snap.series("gen_ai_client_token_usage_sum")
    assert usage[(("gen_ai_request_model", "sim/debater"), ("gen_ai_token_type", "output"))] == 20
    assert snap.series("debate_debates_running") == {(): 0.0}
    with pytest.raises(ValueError, match="not Prometheus text"):
        Snapshot.parse("this is { not metrics", 0.0)


def test_rates_quantiles_and_cost_over_the_window_from_two_scrapes():
    orchestrator, accounting = Orchestrator(), Accounting()
    orchestrator.metrics.llm.call("sim/debater").finished(50, 10)  # before the window: not a rate
    accounting.metrics.cost_usd.labels("gpt-4o", "debater").inc(1.0)
    window = Window(seconds=10)
    window.add(
        {
            "orchestrator": Snapshot.parse(orchestrator.text(), 100.0),
            "accounting": Snapshot.parse(accounting.text(), 100.0),
        }
    )

    llm = orchestrator.metrics.llm
    llm.call("gpt-4o").finished(1000, 200)
    llm.call("sim/debater").finished(300, 100)
    llm.errors.labels("gpt-4o", "RATE_LIMITED").inc(2)
    for _ in range(100):
        orchestrator.metrics.relay_seconds.observe(0.003)
    orchestrator.metrics.relay_seconds.observe(0.3)
    orchestrator.scheduler.running[:] = ["a"]
    orchestrator.scheduler.queue[:] = ["b", "c"]
    orchestrator.hub.events_appended = 500
    orchestrator.hub.subscriber_count = 3
    orchestrator.metrics.debates_started.inc()
    server = orchestrator.service.grpc.server.handled
    server.labels("unary", "debate.orchestrator.v1.OrchestratorService", "CreateDebate", "INVALID_ARGUMENT").inc()
    server.labels("unary", "debate.orchestrator.v1.OrchestratorService", "CreateDebate", "OK").inc(7)
    # A watcher that detached: its caller's own doing, not an error.
    server.labels(
        "server_stream", "debate.orchestrator.v1.OrchestratorService", "StreamDebateEvents", "CANCELLED"
    ).inc()
    accounting.metrics.cost_usd.labels("gpt-4o", "debater").inc(0.01)
    accounting.metrics.cost_usd.labels("gpt-4o", "judge").inc(0.005)
    window.add(
        {
            "orchestrator": Snapshot.parse(orchestrator.text(), 110.0),
            "accounting": Snapshot.parse(accounting.text(), 110.0),
        }
    )

    figures = window.figures()
    assert figures.window_seconds == 10.0
    assert (figures.endpoints_up, figures.endpoints_down) == (2, {})
    assert (figures.debates_running, figures.debates_queued, figures.subscribers) == (1, 2, 3)
    assert figures.debates_started == 1
    assert figures.events_per_second == pytest.approx(50.0)
    by_model = {m.model: m for m in figures.models}
    assert by_model["gpt-4o"].output_tokens_per_second == pytest.approx(20.0)
    assert by_model["gpt-4o"].input_tokens_per_second == pytest.approx(100.0)
    assert by_model["gpt-4o"].cost_per_hour == pytest.approx(0.015 / 10 * 3600)
    assert by_model["sim/debater"].output_tokens_per_second == pytest.approx(10.0)
    assert by_model["sim/debater"].cost_per_hour == 0
    assert [m.model for m in figures.models] == ["gpt-4o", "sim/debater"]  # busiest first
    assert figures.cost_per_hour == pytest.approx(5.4)
    # 100 relays in (0.0025, 0.005], one in (0.25, 0.5]: PromQL's interpolation.
    assert figures.relay_messages == 101
    assert figures.relay_p50 == pytest.approx(0.0025 + 0.0025 * 50.5 / 100)
    assert figures.relay_p99 == pytest.approx(0.0025 + 0.0025 * 99.99 / 100)
    errors = {(e.source, e.what, e.code): e for e in figures.errors}
    assert set(errors) == {
        ("provider", "gpt-4o", "RATE_LIMITED"),
        ("OrchestratorService", "CreateDebate", "INVALID_ARGUMENT"),
    }
    assert errors[("provider", "gpt-4o", "RATE_LIMITED")].per_second == pytest.approx(0.2)
    assert errors[("OrchestratorService", "CreateDebate", "INVALID_ARGUMENT")].total == 1
    assert figures.errors[0].code == "RATE_LIMITED"  # most frequent first


def test_replicas_are_summed_and_a_restarted_process_counts_from_zero():
    first, second = Orchestrator(), Orchestrator()
    window = Window(seconds=5)
    first.metrics.llm.call("m").finished(0, 1000)
    window.add({"a": Snapshot.parse(first.text(), 0.0), "b": Snapshot.parse(second.text(), 0.0)})
    restarted = Orchestrator()  # "a" restarted: its counters start again, below the last scrape
    restarted.metrics.llm.call("m").finished(0, 30)
    second.metrics.llm.call("m").finished(0, 20)
    restarted.scheduler.running[:] = ["x"]
    second.scheduler.running[:] = ["y", "z"]
    window.add({"a": Snapshot.parse(restarted.text(), 5.0), "b": Snapshot.parse(second.text(), 5.0)})
    figures = window.figures()
    assert figures.debates_running == 3
    assert figures.models[0].output_tokens_per_second == pytest.approx((30 + 20) / 5)


def test_counter_increase_handles_new_and_reset_series():
    before = Snapshot(0.0, {"c_total": {(("k", "a"),): 10.0, (("k", "b"),): 4.0}})
    after = Snapshot(1.0, {"c_total": {(("k", "a"),): 12.5, (("k", "b"),): 1.0, (("k", "c"),): 3.0}})
    assert increase(before, after, "c_total") == {(("k", "a"),): 2.5, (("k", "b"),): 1.0, (("k", "c"),): 3.0}


def test_the_window_slides_and_a_silent_endpoint_is_reported_down():
    orchestrator = Orchestrator()
    window = Window(seconds=3)
    for t in range(6):
        orchestrator.metrics.llm.call("m").finished(0, 10 * t)  # 0, 10, 20, ... tokens
        window.add({"o": Snapshot.parse(orchestrator.text(), float(t))})
    figures = window.figures()
    assert figures.window_seconds == 3.0  # scrapes at 2..5
    assert figures.models[0].output_tokens_per_second == pytest.approx((30 + 40 + 50) / 3)
    assert Window(seconds=3).figures().window_seconds == 0  # nothing yet: no rates
    window.add({"o": "Connection refused"})
    figures = window.figures()
    assert figures.endpoints_up == 0
    assert figures.endpoints_down == {"o": "Connection refused"}
    assert figures.models == [] and figures.relay_p50 is None


# -- the screen --------------------------------------------------------------------------------


def test_the_screen_shows_every_figure():
    orchestrator, accounting = Orchestrator(), Accounting()
    window = Window(seconds=10)
    window.add({"o": Snapshot.parse(orchestrator.text(), 0.0), "a": Snapshot.parse(accounting.text(), 0.0)})
    orchestrator.metrics.llm.call("openai/gpt-4o-mini").finished(400, 120)
    orchestrator.metrics.relay_seconds.observe(0.06)
    orchestrator.scheduler.running[:] = ["d1"]
    orchestrator.scheduler.queue[:] = ["d2"]
    orchestrator.metrics.llm.errors.labels("openai/gpt-4o-mini", "PROVIDER_TIMEOUT").inc()
    accounting.metrics.cost_usd.labels("openai/gpt-4o-mini", "debater").inc(0.0001)
    window.add({"o": Snapshot.parse(orchestrator.text(), 10.0), "a": "Connection refused"})
    screen = "\n".join(render(window.figures(), Style(color=False), clock="09:00:00"))
    assert "1 of 2 endpoints answer" in screen
    assert "running 1   queued 1" in screen
    assert "p50 62.5 ms   p99 74.8 ms" in screen  # one relay in (0.05, 0.075]: 0.05 + 0.025 * q
    assert "a: Connection refused" in screen
    row = next(line for line in screen.splitlines() if line.startswith("openai/gpt-4o-mini"))
    assert row.split()[1:3] == ["12.0", "40.0"]
    assert "provider" in screen and "PROVIDER_TIMEOUT" in screen
    assert "$0 per hour" in screen  # accounting did not answer this time: no cost rate from it


def test_usd_keeps_three_significant_digits_below_a_dollar():
    assert usd(0) == "$0"
    assert usd(0.0123456) == "$0.0123"
    assert usd(0.5) == "$0.500"
    assert usd(1234.5) == "$1,234.50"
    assert usd(0.00000123) == "$0.00000123"


# -- the suite file ----------------------------------------------------------------------------


def test_the_suite_file_round_trip_and_its_one_line_errors(tmp_path):
    with pytest.raises(SuiteFileError, match="no suite is running on .*start one with `debate-engine up`"):
        read_suite_file(tmp_path)
    processes = [
        SuiteProcess("orchestrator", "127.0.0.1:1", "http://127.0.0.1:2/metrics"),
        SuiteProcess("envoy", None, None),
    ]
    path = write_suite_file(tmp_path, processes)
    assert read_suite_file(tmp_path) == processes
    args = argparse.Namespace(metrics=None, data_dir=str(tmp_path))
    assert endpoints(args) == {"orchestrator": "http://127.0.0.1:2/metrics"}
    assert endpoints(argparse.Namespace(metrics=["http://h:1/metrics"], data_dir="nowhere")) == {
        "http://h:1/metrics": "http://h:1/metrics"
    }
    write_suite_file(tmp_path, [SuiteProcess("orchestrator", "127.0.0.1:1", None)])
    with pytest.raises(SuiteFileError, match="--no-metrics"):
        endpoints(args)
    # A suite file whose `up` has gone (killed without cleaning up) is not a running suite.
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path.write_text(path.read_text().replace(f'"pid": {os.getpid()}', f'"pid": {gone.stdout.strip()}'))
    with pytest.raises(SuiteFileError, match=r"\(pid \d+\) is not running"):
        read_suite_file(tmp_path)
    remove_suite_file(tmp_path)  # another process's file: left alone
    assert path.exists()
    path.write_text("{not json")
    with pytest.raises(SuiteFileError, match="not a valid suite file"):
        read_suite_file(tmp_path)
    write_suite_file(tmp_path, processes)
    remove_suite_file(tmp_path)
    assert not path.exists()
