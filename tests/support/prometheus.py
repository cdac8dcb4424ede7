"""A real Prometheus server for tests (Debian's `prometheus` package, installed by `make
prometheus`), and the check that every PromQL expression of the dashboard and of the alert rules
returns data from it.

The rule of the check (docs/observability-progress.md, "How the dashboard is checked"):

- A dashboard expression, with Grafana's variables replaced (`GRAFANA_VARIABLES`), must return at
  least one series with at least one finite value (a NaN from `histogram_quantile` over no
  observations, or `0/0`, is not data). A panel that names a metric, a label or a label value
  that does not exist returns nothing and fails.
- An alert rule's `expr` is `QUERY` or `QUERY <comparison> NUMBER`, the comparison last
  (`alert_query` refuses any other shape). QUERY alone must return data by the same rule: a
  healthy suite keeps most alerts quiet, so the full expression returning nothing proves nothing,
  but its left side shows the rule reads metrics that exist. Prometheus also evaluates every rule
  itself (rule_files): each must be healthy, and `promtool check rules` must pass.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.helpers import ROOT, free_port

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
OBSERVABILITY = ROOT / "deploy" / "observability"
DASHBOARD = OBSERVABILITY / "grafana" / "dashboards" / "debate-engine.json"
ALERTS = OBSERVABILITY / "alerts.yml"

# What Grafana puts in place of its variables when the test asks Prometheus: windows long enough
# to hold the whole test's traffic (it runs in well under 5 minutes), and "All" for $model.
GRAFANA_VARIABLES = {
    "__rate_interval": "5m",
    "__interval": "15s",
    "__range": "5m",
    "model": ".*",
}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
# `QUERY <comparison> NUMBER`, the comparison last (an optional `bool`).
_TRAILING_COMPARISON = re.compile(r"^(?P<query>.+?)\s*(?:==|!=|>=|<=|>|<)\s*(?:bool\s+)?[-+]?[0-9.]+(?:e[-+]?\d+)?\s*$")
_LABEL_VALUES = re.compile(r"^label_values\((?P<metric>.+),\s*(?P<label>\w+)\)$")


def promtool(*args: str | Path) -> subprocess.CompletedProcess:
    """`promtool ARGS`, its output captured."""
    return subprocess.run([PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=60, check=False)


def substitute(expr: str, variables: dict[str, str] | None = None) -> str:
    """`expr` with Grafana's variables ($name, ${name}, ${name:format}, [[name]]) replaced.
    KeyError for a variable this test does not know (add it to GRAFANA_VARIABLES)."""
    values = GRAFANA_VARIABLES if variables is None else variables

    def value(match: re.Match) -> str:
        name = next(group for group in match.groups() if group)
        return values[name]

    return _VARIABLE.sub(value, expr)


@dataclass(frozen=True)
class Query:
    """One PromQL expression to evaluate: where it comes from, and the expression to send."""

    source: str  # e.g. "panel 'Relay latency p50 and p99' A", "alert DebateEngineServiceDown"
    expr: str


def dashboard_queries(dashboard: dict) -> list[Query]:
    """Every target of every panel (rows' nested panels too), and each query variable's metric
    (`label_values(METRIC, LABEL)` becomes `count by (LABEL) (METRIC)`), Grafana's variables
    replaced."""
    queries = []

    def panels(items: list[dict]) -> Iterator[dict]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                source = f"panel {panel.get('title')!r} {target.get('refId', '')}".rstrip()
                queries.append(Query(source, substitute(target["expr"])))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = _LABEL_VALUES.match(text.strip())
        expr = f"count by ({match['label']}) ({match['metric']})" if match else text
        queries.append(Query(f"variable ${variable['name']}", substitute(expr)))
    return queries


def alert_query(expr: str) -> str:
    """The QUERY of an alert expression `QUERY <comparison> NUMBER` (or `QUERY` alone): what the
    test evaluates. ValueError for another shape (e.g. `a > 1 and b > 2`), which this rule cannot
    split soundly."""
    expr = " ".join(expr.split())
    match = _TRAILING_COMPARISON.match(expr)
    query = match["query"] if match else expr
    if re.search(r"(==|!=|>=|<=|[<>])\s*(bool\s+)?[-+]?[0-9.]", query) or re.search(r"\b(and|or|unless)\b", query):
        raise ValueError(f"an alert expression must be QUERY <comparison> NUMBER, the comparison last: {expr!r}")
    return query


def alert_queries(rules_path: Path) -> list[Query]:
    """The QUERY (`alert_query`) of every alerting rule in the rules file, and every recording
    rule's expression."""
    queries = []
    for group in yaml.safe_load(rules_path.read_text())["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                queries.append(Query(f"alert {rule['alert']}", alert_query(rule["expr"])))
            else:
                queries.append(Query(f"record {rule['record']}", " ".join(rule["expr"].split())))
    return queries


def returns_data(result: dict) -> bool:
    """True when an instant query's `data` holds a series (or a scalar) with a finite value."""
    kind, value = result["resultType"], result["result"]
    if kind == "scalar":
        return math.isfinite(float(value[1]))
    if kind == "vector":
        return any(math.isfinite(float(series["value"][1])) for series in value)
    if kind == "matrix":
        return any(math.isfinite(float(v)) for series in value for _, v in series["values"])
    return False


class PrometheusServer:
    """`prometheus` on a free port of 127.0.0.1 with `config` (a dict, written as YAML), its
    storage in `workdir`; `stop()` ends it."""

    def __init__(self, workdir: Path, config: dict):
        self.workdir = workdir
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "prometheus.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> PrometheusServer:
        log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def api(self, path: str, **params: str) -> dict:
        """GET /api/v1/PATH?params; its `data`. AssertionError with Prometheus's error (a query
        that does not parse, ...)."""
        url = f"{self.url}/api/v1/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:
            body = json.load(error)
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> dict:
        """An instant query now: `data` ({"resultType": ..., "result": ...})."""
        return self.api("query", query=expr)

    def failures(self, queries: list[Query]) -> list[str]:
        """One line for each query that is refused or returns no data (`returns_data`)."""
        failed = []
        for query in queries:
            try:
                data = self.query(query.expr)
            except AssertionError as error:
                failed.append(f"{query.source}: {query.expr}: {error}")
                continue
            if not returns_data(data):
                failed.append(f"{query.source}: {query.expr}: no data ({data['result']})")
        return failed

    def wait_for_data(self, queries: list[Query], timeout: float) -> list[str]:
        """Evaluates `queries` until all return data or `timeout` passes; the last failures."""
        deadline = time.monotonic() + timeout
        while True:
            failed = self.failures(queries)
            if not failed or time.monotonic() > deadline:
                return failed
            time.sleep(1)
