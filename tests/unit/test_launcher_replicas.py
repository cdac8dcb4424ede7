"""`SuiteConfig` with replicas: the processes `up --replicas N` starts, their ports, REPLICA_IDs,
the addresses each orchestrator is given, and Envoy's clusters; one replica is the suite as before."""

from __future__ import annotations

import socket

import pytest

from services.gateway import GatewayConfig
from services.launcher import SuiteConfig, _Restarts, suite_envoy_config

URL = "postgresql://debate@127.0.0.1:5432/debate"


def _config(**kwargs) -> SuiteConfig:
    return SuiteConfig(gateway=GatewayConfig(enabled=False), extra_env={"SERVICE_API_KEY": "k" * 32}, **kwargs)


def test_one_replica_is_the_suite_as_before():
    specs = _config().process_specs()
    assert [s.name for s in specs] == ["accounting", "judge", "orchestrator"]
    assert [s.health_address for s in specs] == ["127.0.0.1:50053", "127.0.0.1:50052", "127.0.0.1:50051"]
    orchestrator = specs[2].env
    assert orchestrator["JUDGE_SERVICE_ADDR"] == "127.0.0.1:50052"
    assert orchestrator["ACCOUNTING_SERVICE_ADDR"] == "127.0.0.1:50053"
    assert "REPLICA_ID" not in orchestrator and "DATABASE_URL" not in orchestrator


def test_replicas_get_their_ports_replica_ids_and_every_address_of_the_others():
    specs = {s.name: s for s in _config(replicas=3, database_url=URL).process_specs()}
    assert list(specs) == [f"{service}-{k}" for service in ("accounting", "judge", "orchestrator") for k in (1, 2, 3)]
    assert [specs[f"orchestrator-{k}"].env["PORT"] for k in (1, 2, 3)] == ["50051", "50061", "50071"]
    assert [specs[f"judge-{k}"].health_address for k in (1, 2, 3)] == [
        "127.0.0.1:50052",
        "127.0.0.1:50062",
        "127.0.0.1:50072",
    ]
    host = socket.gethostname()
    ids = [specs[f"orchestrator-{k}"].env["REPLICA_ID"] for k in (1, 2, 3)]
    assert ids == [f"{host}:50051", f"{host}:50061", f"{host}:50071"]
    assert all(f"REPLICA_ID {i}" in (specs[f"orchestrator-{k + 1}"].display_address or "") for k, i in enumerate(ids))
    for spec in specs.values():
        assert spec.env["DATABASE_URL"] == URL
        assert spec.env["JUDGE_SERVICE_ADDR"] == "127.0.0.1:50052,127.0.0.1:50062,127.0.0.1:50072"
        assert spec.env["ACCOUNTING_SERVICE_ADDR"] == "127.0.0.1:50053,127.0.0.1:50063,127.0.0.1:50073"


def test_replicas_need_a_database_and_take_it_from_the_environment_too():
    with pytest.raises(ValueError, match="need PostgreSQL"):
        _config(replicas=2).process_specs()
    with pytest.raises(ValueError, match="at least 1"):
        _config(replicas=0).process_specs()
    given = SuiteConfig(
        replicas=2, gateway=GatewayConfig(enabled=False), extra_env={"DATABASE_URL": URL, "SERVICE_API_KEY": "k" * 32}
    )
    assert len(given.process_specs()) == 6
    with pytest.raises(ValueError, match="2 ports for 3 replicas"):
        _config(replicas=3, database_url=URL, replica_ports={"judge": [1, 2]}).process_specs()


def test_envoy_balances_and_health_checks_the_orchestrators_only_when_replicated():
    one = suite_envoy_config(_config(), web=None)
    (cluster,) = one["static_resources"]["clusters"]
    assert "health_checks" not in cluster and "outlier_detection" not in cluster
    two = suite_envoy_config(_config(replicas=2, database_url=URL), web=None)
    (cluster,) = two["static_resources"]["clusters"]
    endpoints = [
        e["endpoint"]["address"]["socket_address"] for e in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    assert endpoints == [{"address": "127.0.0.1", "port_value": 50051}, {"address": "127.0.0.1", "port_value": 50061}]
    (check,) = cluster["health_checks"]
    assert check["grpc_health_check"] == {"service_name": "debate.orchestrator.v1.OrchestratorService"}
    assert cluster["outlier_detection"]["consecutive_local_origin_failure"] == 1
    route = two["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    retry = route["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["retry_policy"]
    assert set(retry["retry_on"].split(",")) == {"connect-failure", "refused-stream", "unavailable"}


def test_a_dying_replica_is_restarted_after_a_growing_back_off_and_left_dead_in_a_crash_loop():
    restarts = _Restarts(first=1.0, ceiling=8.0, quiet=60.0, limit=5)
    # Deaths 10 s apart: each within a minute of the one before, so the wait doubles up to 8 s.
    assert [restarts.delay("judge-1", now=10.0 * k) for k in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert restarts.delay("judge-1", now=50.0) is None  # the sixth in a row: a crash loop
    assert restarts.delay("judge-2", now=50.0) == 1.0  # each replica has its own streak
    assert restarts.delay("judge-1", now=200.0) == 1.0  # up for a quiet minute: the streak starts again
