"""The dashboard works (issue 17, part 3): a real Prometheus (Debian's package) scrapes a real
suite started by `debate-engine up`, with deploy/observability/prometheus-local.yml and the alert
rules of deploy/observability/alerts.yml; debates run through the Envoy gateway (simulated
models, and a real provider path through the local OpenAI-compatible server that fails on
demand: errors, retries, a fallback, a budget refusal); then every PromQL expression of the
Grafana dashboard and of the alert rules must return data from that Prometheus
(tests/support/prometheus.py says the rule), and the alerts that the traffic should set off are
set off. `promtool check config` and `promtool check rules` pass on the committed files.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request

import grpc
import pytest
import yaml
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc as pbg

from services.gateway import COMPOSE_STATS_PORT, envoy_config, render_envoy_yaml
from services.scrape_targets import TARGETS_FILE
from tests.e2e.test_gateway import start_suite, stop_suite
from tests.helpers import BIN, ROOT, free_port
from tests.support.fake_openai import Behavior, FakeOpenAIServer
from tests.support.prometheus import (
    ALERTS,
    DASHBOARD,
    OBSERVABILITY,
    PrometheusServer,
    Query,
    alert_queries,
    alert_query,
    dashboard_queries,
    promtool,
    returns_data,
    substitute,
)

pytestmark = pytest.mark.e2e

FAKE_KEY_ENV = "DASHBOARD_FAKE_KEY"
JOBS = {"orchestrator", "judge", "accounting", "envoy"}


# --- The committed files, checked by promtool ----------------------------------------------------


def test_promtool_accepts_the_alert_rules():
    checked = promtool("check", "rules", ALERTS)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 4 rules found" in checked.stdout


@pytest.mark.parametrize("name", ["prometheus.yml", "prometheus-local.yml"])
def test_promtool_accepts_the_scrape_configurations(name):
    checked = promtool("check", "config", OBSERVABILITY / name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 1 rule files found" in checked.stdout


def test_the_compose_prometheus_scrapes_every_service_and_envoy():
    config = yaml.safe_load((OBSERVABILITY / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) >= JOBS
    for name in ("orchestrator", "judge", "accounting"):
        # Every replica behind the service's name, on the compose file's METRICS_PORT.
        assert jobs[name]["dns_sd_configs"] == [{"names": [name], "type": "A", "port": 9464}]
    assert jobs["envoy"]["metrics_path"] == "/stats/prometheus"
    assert jobs["envoy"]["static_configs"] == [{"targets": ["envoy:9902"]}]


def test_every_dashboard_panel_has_a_query_and_the_issue_s_panels_are_there():
    dashboard = json.loads(DASHBOARD.read_text())
    titles = set()
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        titles.add(panel["title"])
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
        assert panel["datasource"]["uid"] == "prometheus"
    for wanted in (
        "Debates running and queued",
        "Tokens per second by model",
        "Relay latency p50 and p99",
        "Cost per model per hour",
        "Provider errors",
        "gRPC errors per second by method",
    ):
        assert wanted in titles
    provisioned = yaml.safe_load(
        (OBSERVABILITY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    assert provisioned["datasources"][0]["uid"] == "prometheus"


def test_the_compose_profile_runs_prometheus_and_grafana_on_these_files():
    env = {**os.environ, "SERVICE_API_KEY": "compose-suite-key-0123456789", "POSTGRES_PASSWORD": "compose-db-pw-0123"}
    resolved = subprocess.run(
        [str(BIN / "docker-compose"), "-f", str(ROOT / "docker-compose.yml"), "--profile", "observability"]
        + ["config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert resolved.returncode == 0, resolved.stderr
    services = json.loads(resolved.stdout)["services"]
    assert services["prometheus"]["profiles"] == services["grafana"]["profiles"] == ["observability"]
    prometheus_yml = yaml.safe_load((OBSERVABILITY / "prometheus.yml").read_text())
    metrics_port = {
        job["job_name"]: job["dns_sd_configs"][0]["port"]
        for job in prometheus_yml["scrape_configs"]
        if "dns_sd_configs" in job
    }
    for name in ("orchestrator", "judge", "accounting"):
        assert services[name]["environment"]["METRICS_PORT"] == str(metrics_port[name]), name
        assert str(metrics_port[name]) in services[name]["expose"], name
    assert str(COMPOSE_STATS_PORT) in services["envoy"]["expose"]
    (envoy_job,) = [job for job in prometheus_yml["scrape_configs"] if job["job_name"] == "envoy"]
    assert envoy_job["static_configs"] == [{"targets": [f"envoy:{COMPOSE_STATS_PORT}"]}]
    # Every file mounted into the two containers is in the repository, where the container expects it.
    mounts = {
        volume["target"]: volume["source"]
        for name in ("prometheus", "grafana")
        for volume in services[name]["volumes"]
        if volume["type"] == "bind"
    }
    assert mounts["/etc/prometheus/prometheus.yml"] == str(OBSERVABILITY / "prometheus.yml")
    assert mounts["/etc/prometheus/alerts.yml"] == str(ALERTS)
    assert prometheus_yml["rule_files"] == ["alerts.yml"]
    assert mounts["/var/lib/grafana/dashboards"] == str(DASHBOARD.parent)
    provisioning = OBSERVABILITY / "grafana" / "provisioning"
    assert mounts["/etc/grafana/provisioning"] == str(provisioning)
    provider = yaml.safe_load((provisioning / "dashboards" / "debate-engine.yml").read_text())["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"
    assert "9090:9090" in [f"{p['published']}:{p['target']}" for p in services["prometheus"]["ports"]]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""


def test_envoy_s_stats_listener_serves_its_prometheus_stats_and_nothing_else_of_the_admin(tmp_path):
    """The compose Envoy's :9902, run here on free ports: /stats/prometheus from the admin, and a 404
    for the admin's other endpoints, which stay on loopback."""
    admin_port, stats_port = free_port(), free_port()
    config = envoy_config(
        listen_host="127.0.0.1",
        listen_port=free_port(),
        orchestrator=f"127.0.0.1:{free_port()}",
        admin_port=admin_port,
        stats_port=stats_port,
    )
    path = tmp_path / "envoy.yaml"
    path.write_text(render_envoy_yaml(config))
    envoy = subprocess.Popen(
        [str(BIN / "envoy"), "-c", str(path), "--disable-hot-restart", "--log-level", "error"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        status, text = 0, ""
        while time.monotonic() < deadline and status != 200:
            try:
                status, text = _get(f"http://127.0.0.1:{stats_port}/stats/prometheus")
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        assert status == 200
        assert "# TYPE envoy_cluster_upstream_rq_total counter" in text
        for other in ("/config_dump", "/stats", "/clusters", "/ready"):
            assert _get(f"http://127.0.0.1:{stats_port}{other}")[0] == 404, other
        assert _get(f"http://127.0.0.1:{admin_port}/ready")[0] == 200  # the admin itself, on loopback
    finally:
        envoy.terminate()
        envoy.wait(timeout=30)


# --- The helpers' own rules -------------------------------------------------------------------


def test_grafana_variables_are_replaced_and_an_unknown_one_is_refused():
    assert substitute('rate(x{m=~"$model"}[$__rate_interval])') == 'rate(x{m=~".*"}[5m])'
    assert substitute("increase(x[${__range}])") == "increase(x[5m])"
    with pytest.raises(KeyError):
        substitute("rate(x[$not_a_variable])")


def test_an_alert_is_split_at_its_last_comparison_and_other_shapes_are_refused():
    assert alert_query('up{job=~"a|b"} == 0') == 'up{job=~"a|b"}'
    assert alert_query("histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m]))) > 0.25") == (
        "histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m])))"
    )
    assert alert_query('sum(increase(x{code!="OK"}[5m])) > bool 1e3') == 'sum(increase(x{code!="OK"}[5m]))'
    assert alert_query("absent(up)") == "absent(up)"
    with pytest.raises(ValueError):
        alert_query("a > 1 and b > 2")
    with pytest.raises(ValueError):
        alert_query("a > 1 unless b")


def test_returns_data_wants_a_finite_value():
    assert returns_data({"resultType": "vector", "result": [{"metric": {}, "value": [1, "0"]}]})
    assert not returns_data({"resultType": "vector", "result": []})
    assert not returns_data({"resultType": "vector", "result": [{"metric": {}, "value": [1, "NaN"]}]})


# --- The real thing: a suite, Prometheus, debates, every expression ------------------------------


@pytest.fixture(scope="module")
def fake_provider():
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture(scope="module")
def observed(tmp_path_factory, fake_provider):
    """The suite (`up`, metrics on) and a Prometheus scraping it every second with the committed
    local configuration and alert rules; yields (suite, prometheus, data_dir)."""
    data_dir = tmp_path_factory.mktemp("suite")
    price = {"input_per_million": "1000", "output_per_million": "2000"}  # so a tiny budget is refused
    suite = start_suite(
        data_dir,
        tokens_per_second=400,
        first_token_latency=0.02,
        extra_env={
            "LLM_ALLOWED_MODELS": "sim/*,fake/*",
            "LLM_ENDPOINTS": json.dumps(
                {"fake": {"api_base": fake_provider.base_url, "api_key_env": FAKE_KEY_ENV, "price": price}}
            ),
            FAKE_KEY_ENV: "sk-dashboard-test-0123456789",
            "LLM_FALLBACKS": json.dumps({"fake/primary": ["fake/backup"]}),
            "LLM_RETRIES": "2",
            "LLM_BACKOFF_BASE": "0",
        },
    )
    prometheus = None
    try:
        targets_file = data_dir / TARGETS_FILE
        config = yaml.safe_load((OBSERVABILITY / "prometheus-local.yml").read_text())
        config["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
        config["rule_files"] = [str(ALERTS)]
        (job,) = config["scrape_configs"]
        job["file_sd_configs"] = [{"files": [str(targets_file)], "refresh_interval": "1s"}]
        workdir = tmp_path_factory.mktemp("prometheus")
        prometheus = PrometheusServer(workdir, config)
        checked = promtool("check", "config", prometheus.config_path)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        prometheus.start()
        yield suite, prometheus, data_dir
    finally:
        if prometheus is not None:
            prometheus.stop()
        stop_suite(suite)


def debate_config(
    participants: list[tuple[str, str]], rounds: int, budget: str | None = None, judge: str = "sim/judge"
) -> c.DebateConfig:
    config = c.DebateConfig(
        topic="Cities should ban private cars from their centres",
        participants=[
            c.Participant(name=name, model=model, persona=f"debater {name}", stance="for" if i % 2 == 0 else "against")
            for i, (name, model) in enumerate(participants)
        ],
        judge=c.JudgeConfig(models=[judge]),
        format=c.DebateFormat(round_limit=rounds, turn_order=c.TURN_ORDER_SIMULTANEOUS),
        max_tokens_per_turn=40,
        seed=3,
    )
    if budget is not None:
        config.budget.CopyFrom(c.Money(currency_code="USD", amount=budget))
    return config


def run_debate(stub: pbg.OrchestratorServiceStub, config: c.DebateConfig) -> pb.StreamDebateEventsResponse:
    """Creates, starts and watches a debate to its end; the last event (completed or failed)."""
    debate_id = stub.CreateDebate(pb.CreateDebateRequest(config=config)).debate.debate_id
    stub.StartDebate(pb.StartDebateRequest(debate_id=debate_id))
    last = None
    for last in stub.StreamDebateEvents(  # noqa: B007 (the last one is the ending)
        pb.StreamDebateEventsRequest(debate_id=debate_id, after_sequence=0), timeout=120
    ):
        pass
    assert last is not None
    return last


def wait_for_scrape(prometheus: PrometheusServer, expr: str, timeout: float = 30) -> None:
    """Waits until `expr` (a condition) holds in Prometheus."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if prometheus.query(expr)["result"]:
            return
        time.sleep(0.5)
    raise AssertionError(f"{expr} never held")


@pytest.fixture(scope="module")
def traffic(observed, fake_provider):
    """Debates through the gateway: two simulated ones watched to their end, two through the failing
    provider (each call to fake/primary fails three times, then fake/backup answers), one refused
    at its budget, one whose judge never answers validly, and two refused calls."""
    suite, prometheus, _ = observed
    gateway = suite.gateway_url.removeprefix("http://")
    # Every target answers before the traffic starts, so each counter's first sample is before it.
    wait_for_scrape(prometheus, f'count(up{{job=~"{"|".join(sorted(JOBS))}"}} == 1) == {len(JOBS)}', 60)
    endings = {}
    with grpc.insecure_channel(gateway) as channel:
        stub = pbg.OrchestratorServiceStub(channel)
        sim = [("Ada", "sim/debater"), ("Milo", "sim/debater")]
        endings["sim"] = [run_debate(stub, debate_config(sim, rounds=2)) for _ in range(2)]
        provider = [("Ada", "fake/primary"), ("Milo", "sim/debater")]
        endings["provider"] = []
        for _ in range(2):
            fake_provider.script_model("primary", *[Behavior(status=500)] * 3)
            endings["provider"].append(run_debate(stub, debate_config(provider, rounds=1)))
            # A scrape between the two bursts: the second is an increase of a series already seen.
            wait_for_scrape(prometheus, "sum(llm_provider_errors_total) > 0")
            time.sleep(2)
        endings["budget"] = run_debate(stub, debate_config(provider, rounds=1, budget="0.000001"))
        # A judge whose model answers prose, not the structured output: refused, repaired, failed.
        endings["judge"] = run_debate(stub, debate_config(sim, rounds=1, judge="fake/judge"))
        for call in (
            lambda: stub.CreateDebate(pb.CreateDebateRequest(config=c.DebateConfig(topic=""))),
            lambda: stub.GetDebate(pb.GetDebateRequest(debate_id="no-such-debate")),
        ):
            with pytest.raises(grpc.RpcError):
                call()
    return endings


def test_the_traffic_did_what_the_panels_show(traffic):
    for ending in traffic["sim"] + traffic["provider"]:
        assert ending.event.WhichOneof("payload") == "debate_completed", ending
    budget = traffic["budget"].event
    assert budget.WhichOneof("payload") == "debate_failed"
    assert budget.debate_failed.state == pb.DEBATE_STATE_BUDGET_EXCEEDED
    judged = traffic["judge"].event
    assert judged.WhichOneof("payload") == "debate_failed", judged


def test_up_names_envoy_s_metrics_and_writes_the_scrape_targets(observed, traffic):
    suite, _, data_dir = observed
    row = next(line for line in suite.output if line.split()[:1] == ["envoy"])
    url = re.search(r"metrics (http://127\.0\.0\.1:\d+/stats/prometheus)", row)
    assert url, row
    with urllib.request.urlopen(url.group(1), timeout=10) as response:
        text = response.read().decode()
    assert 'envoy_cluster_upstream_rq_total{envoy_cluster_name="orchestrator"}' in text
    groups = json.loads((data_dir / TARGETS_FILE).read_text())
    assert sorted(group["labels"]["job"] for group in groups) == sorted(JOBS)
    assert {group["labels"]["__metrics_path__"] for group in groups} == {"/metrics", "/stats/prometheus"}


def test_prometheus_scrapes_every_service_and_envoy(observed, traffic):
    _, prometheus, _ = observed
    up = prometheus.query("up")["result"]
    assert {series["metric"]["job"]: series["value"][1] for series in up} == dict.fromkeys(JOBS, "1")


def test_every_dashboard_expression_returns_data(observed, traffic):
    _, prometheus, _ = observed
    queries = dashboard_queries(json.loads(DASHBOARD.read_text()))
    assert len(queries) >= 30
    failed = prometheus.wait_for_data(queries, timeout=30)
    assert not failed, "\n".join(failed)


def test_every_alert_rule_reads_metrics_that_exist_and_evaluates(observed, traffic):
    _, prometheus, _ = observed
    queries = alert_queries(ALERTS)
    assert {q.source for q in queries} == {
        "alert DebateEngineServiceDown",
        "alert DebateEngineRelayLatencyHigh",
        "alert DebateEngineProviderErrors",
        "alert DebateEngineBudgetRefusals",
    }
    failed = prometheus.wait_for_data(queries, timeout=30)
    assert not failed, "\n".join(failed)
    # Prometheus evaluates the rules itself (rule_files): each one healthy, none in error.
    (group,) = prometheus.api("rules")["groups"]
    assert {rule["name"]: rule["health"] for rule in group["rules"]} == dict.fromkeys(
        (q.source.removeprefix("alert ") for q in queries), "ok"
    )


def active_alerts(prometheus: PrometheusServer) -> dict[str, set[str]]:
    """alert name -> the states (pending, firing) of its active instances."""
    alerts: dict[str, set[str]] = {}
    for alert in prometheus.api("alerts")["alerts"]:
        alerts.setdefault(alert["labels"]["alertname"], set()).add(alert["state"])
    return alerts


def test_the_traffic_sets_off_its_alerts_and_a_stopped_suite_is_down(observed, traffic):
    """The provider's failures and the budget refusal are alerts (pending: they wait their `for`),
    the healthy suite is not down; then the suite stops and every job's ServiceDown is pending."""
    suite, prometheus, _ = observed
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        alerts = active_alerts(prometheus)
        if {"DebateEngineProviderErrors", "DebateEngineBudgetRefusals"} <= set(alerts):
            break
        time.sleep(1)
    assert {"DebateEngineProviderErrors", "DebateEngineBudgetRefusals"} <= set(alerts), alerts
    assert "DebateEngineServiceDown" not in alerts
    errors = [a for a in prometheus.api("alerts")["alerts"] if a["labels"]["alertname"] == "DebateEngineProviderErrors"]
    assert {a["labels"]["gen_ai_request_model"] for a in errors} == {"fake/primary"}
    stop_suite(suite)
    deadline = time.monotonic() + 30
    down: set[str] = set()
    while time.monotonic() < deadline and down != JOBS:
        down = {
            a["labels"]["job"]
            for a in prometheus.api("alerts")["alerts"]
            if a["labels"]["alertname"] == "DebateEngineServiceDown"
        }
        time.sleep(1)
    assert down == JOBS


def test_a_panel_on_a_metric_that_does_not_exist_fails_the_check(observed):
    """The check's negative case: the same helpers, on a dashboard with one panel on a missing
    metric (and one on a label value nothing has), report exactly those panels."""
    _, prometheus, _ = observed
    wait_for_scrape(prometheus, "up")
    dashboard = {
        "panels": [
            {"title": "exists", "targets": [{"refId": "A", "expr": "sum by (job) (up)"}]},
            {
                "type": "row",
                "title": "a row",
                "panels": [
                    {
                        "title": "missing",
                        "targets": [{"refId": "A", "expr": "sum(rate(debate_no_such_metric_total[$__rate_interval]))"}],
                    },
                    {"title": "no such label value", "targets": [{"refId": "B", "expr": 'up{job="nobody"}'}]},
                ],
            },
        ]
    }
    failed = prometheus.failures(dashboard_queries(dashboard))
    assert [line.split(":")[0] for line in failed] == ["panel 'missing' A", "panel 'no such label value' B"]
    assert prometheus.failures([Query("broken", "sum(rate(up[5m])")])[0].startswith("broken: ")
