"""The whole suite over mutual TLS, as `debate-engine up` runs it: the launcher's readiness
checks and Envoy's upstream to the orchestrator present a certificate too.

A throwaway CA and certificates are made at test time (tests/security/certs.py). The suite
(the three services and Envoy) comes up through the launcher's `Suite` with TLS_* settings;
a short debate on the simulated models runs through the orchestrator with a TLS client and
through Envoy's grpc-web port; a plaintext client, and a TLS client without a certificate,
are refused by every service.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc
import pytest
import yaml
from debate.orchestrator.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.tls import TlsFiles
from services.gateway import GatewayConfig
from services.launcher import SuiteConfig
from tests.e2e.test_gateway import GrpcWeb, debate_config
from tests.e2e.test_gateway_jwt import suite_in_thread
from tests.helpers import free_port
from tests.security.certs import TestCA

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

HEALTH = {
    "orchestrator": "debate.orchestrator.v1.OrchestratorService",
    "judge": "debate.judge.v1.JudgeService",
    "accounting": "debate.accounting.v1.AccountingService",
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mtls-pki")
    ca = TestCA(folder)
    return {
        "suite": ca.issue("suite", dns=("localhost",), ips=("127.0.0.1",)),
        "client": ca.issue("client", dns=("client",), ips=()),
    }


@pytest.fixture(scope="module")
def suite(tmp_path_factory, pki):
    folder: Path = tmp_path_factory.mktemp("mtls-suite")
    issued = pki["suite"]
    config = SuiteConfig(
        orchestrator_port=free_port(),
        judge_port=free_port(),
        accounting_port=free_port(),
        data_dir=str(folder / "data"),
        log_level="WARNING",
        extra_env={
            "TLS_CERT_FILE": issued.cert_file,
            "TLS_KEY_FILE": issued.key_file,
            "TLS_CA_FILE": issued.ca_file,
            "SIM_TOKENS_PER_SECOND": "400",
            "SIM_FIRST_TOKEN_LATENCY": "0.01",
        },
        gateway=GatewayConfig(port=free_port(), web_dir=str(folder / "no-page")),
    )
    output: list[str] = []
    # Readiness goes over mutual TLS: with plaintext checks this start would time out.
    with suite_in_thread(config.process_specs(), output, timeout=45):
        yield config


def _ports(config: SuiteConfig) -> dict[str, str]:
    return {
        "orchestrator": config.orchestrator_address,
        "judge": config.address(config.judge_port),
        "accounting": config.address(config.accounting_port),
    }


def _tls_channel(address: str, issued) -> grpc.Channel:
    files = TlsFiles(issued.cert_file, issued.key_file, issued.ca_file)
    return grpc.secure_channel(address, files.channel_credentials())


def _run_debate(create, start, stream) -> list[str]:
    created = create(
        orchestrator_pb2.CreateDebateRequest(
            config=debate_config(rounds=1, max_tokens=20), request_id=str(uuid.uuid4())
        )
    )
    debate_id = created.debate.debate_id
    start(orchestrator_pb2.StartDebateRequest(debate_id=debate_id))
    kinds = []
    for reply in stream(orchestrator_pb2.StreamDebateEventsRequest(debate_id=debate_id)):
        kinds.append(reply.event.WhichOneof("payload"))
        if kinds[-1] in ("debate_completed", "debate_failed"):
            break
    return kinds


def test_a_debate_runs_through_the_orchestrator_with_a_tls_client(suite, pki):
    with _tls_channel(suite.orchestrator_address, pki["client"]) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        kinds = _run_debate(
            lambda r: stub.CreateDebate(r, timeout=15),
            lambda r: stub.StartDebate(r, timeout=15),
            lambda r: stub.StreamDebateEvents(r, timeout=60),
        )
    # The orchestrator reached the judge and accounting over mTLS too, or no verdict.
    assert kinds[-1] == "debate_completed", kinds[-5:]
    assert "verdict_rendered" in kinds and "round_assessed" in kinds


def test_a_debate_runs_through_envoys_grpc_web_port_over_an_mtls_upstream(suite):
    rendered = yaml.safe_load(
        (Path(suite.data_dir).resolve() / "gateway" / f"envoy-{suite.gateway.port}.yaml").read_text()
    )
    cluster = next(c for c in rendered["static_resources"]["clusters"] if c["name"] == "orchestrator")
    context = cluster["transport_socket"]["typed_config"]
    assert context["@type"].endswith("UpstreamTlsContext")
    assert context["common_tls_context"]["tls_certificates"][0]["certificate_chain"]["filename"].endswith("suite.crt")

    web = GrpcWeb(f"http://127.0.0.1:{suite.gateway.port}", origin="http://page.example")
    kinds = _run_debate(
        lambda r: web.unary("CreateDebate", r, orchestrator_pb2.CreateDebateResponse),
        lambda r: web.unary("StartDebate", r, orchestrator_pb2.StartDebateResponse),
        lambda r: web.stream("StreamDebateEvents", r, orchestrator_pb2.StreamDebateEventsResponse),
    )
    assert kinds[-1] == "debate_completed", kinds[-5:]


def test_plaintext_clients_and_clients_without_a_certificate_are_refused(suite, pki):
    ca = Path(pki["suite"].ca_file).read_bytes()
    for name, address in _ports(suite).items():
        request = health_pb2.HealthCheckRequest(service=HEALTH[name])
        with grpc.insecure_channel(address) as channel:
            with pytest.raises(grpc.RpcError) as caught:
                health_pb2_grpc.HealthStub(channel).Check(request, timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, name
        with grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=ca)) as channel:
            with pytest.raises(grpc.RpcError) as caught:
                health_pb2_grpc.HealthStub(channel).Check(request, timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, name
        # The same check with the client's certificate is answered.
        with _tls_channel(address, pki["client"]) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(request, timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
