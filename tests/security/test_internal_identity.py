"""Internal services: the judge and accounting answer only the suite's own services.

- The rule itself (`INTERNAL_CALLERS`, enforced by the auth interceptor), over a real grpc.aio
  server on port 0: a tenant named there is admitted, any other authenticated tenant answers
  PERMISSION_DENIED (reason INTERNAL_SERVICE), health and reflection stay open, and a
  configuration that cannot work stops the service at start.
- The three services in this process, keyed as `debate-engine up` keys them: every RPC of the
  judge and accounting (enumerated from the descriptors) refuses alice's and bob's keys with
  PERMISSION_DENIED and admits the suite's key; bob cannot record a usage row on alice's debate.
- What the launcher gives each process (tests/e2e/test_internal_services_up.py runs `up` itself).
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
import pytest
from debate.accounting.v1 import accounting_pb2, accounting_pb2_grpc
from debate.common.v1 import common_pb2
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.accounting.settings import AccountingSettings
from services.common.auth import ApiKeys, AuthInterceptor, bearer_metadata, current_tenant, parse_internal_callers
from services.common.grpc_errors import error_details
from services.common.server import GrpcService, ServiceBinding
from services.common.settings import SERVICE_TENANT, ServiceSettings, load_settings
from services.gateway import GatewayConfig
from services.judge.settings import JudgeSettings
from services.launcher import SuiteConfig, run_up
from services.orchestrator.settings import OrchestratorSettings
from tests.reliability.inprocess import InProcessSuite
from tests.security.internal_rpcs import AUTH_REFUSALS, call_status, internal_rpcs

ALICE = "alice-key-0123456789abcdef"
BOB = "bob-key-0123456789abcdef"
SERVICE = "suite-service-key-0123456789"
TENANT_KEYS = f"{ALICE}=alice,{BOB}=bob"
WHO = "test.internal.v1.WhoService"

# --- the rule, on a bare service --------------------------------------------------------------


async def _whoami(request: bytes, context) -> bytes:
    return current_tenant().encode()


async def _whoami_stream(request: bytes, context):
    yield current_tenant().encode()


def _add(servicer, server: grpc.aio.Server) -> None:
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                WHO,
                {
                    "Whoami": grpc.unary_unary_rpc_method_handler(_whoami),
                    "WhoamiStream": grpc.unary_stream_rpc_method_handler(_whoami_stream),
                },
            )
        ]
    )


@pytest.fixture
async def internal():
    """A service that knows alice's, bob's and the suite's keys and admits only the suite."""
    settings = ServiceSettings(port=0, api_keys=f"{TENANT_KEYS},{SERVICE}=suite", internal_callers="suite")
    service = GrpcService(settings, [ServiceBinding(WHO, _add, None)])
    await service.start()
    yield service
    await service.stop(grace=0)


async def _who(channel: grpc.aio.Channel, key: str | None, stream: bool = False) -> str:
    metadata = bearer_metadata(key) if key else None
    if stream:
        replies = [r async for r in channel.unary_stream(f"/{WHO}/WhoamiStream")(b"", metadata=metadata, timeout=10)]
        return replies[0].decode()
    return (await channel.unary_unary(f"/{WHO}/Whoami")(b"", metadata=metadata, timeout=10)).decode()


@pytest.mark.parametrize("stream", [False, True])
async def test_the_named_caller_is_admitted_and_other_tenants_are_denied(internal, stream, caplog):
    async with grpc.aio.insecure_channel(internal.address) as channel:
        assert await _who(channel, SERVICE, stream) == "suite"
        for key in (ALICE, BOB):
            with caplog.at_level(logging.WARNING), pytest.raises(grpc.aio.AioRpcError) as denied:
                await _who(channel, key, stream)
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
            info, _ = error_details(denied.value)
            assert info.reason == "INTERNAL_SERVICE"
            assert key not in denied.value.details()
        # Not authenticated at all is still UNAUTHENTICATED, as on any keyed service.
        for key in (None, "nobody-key-0123456789"):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _who(channel, key, stream)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "tenant alice is not an internal caller" in caplog.text
    assert ALICE not in caplog.text and BOB not in caplog.text


async def test_health_and_reflection_stay_open_on_an_internal_service(internal):
    async with grpc.aio.insecure_channel(internal.address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=WHO), metadata=bearer_metadata(ALICE), timeout=10
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_a_named_caller_without_a_key_stops_the_service():
    with pytest.raises(ValueError, match="INTERNAL_CALLERS names 'suite'") as error:
        AuthInterceptor(ApiKeys.parse(TENANT_KEYS), internal_callers="suite")
    assert ALICE not in str(error.value)


def test_internal_callers_and_a_trusted_tenant_header_stop_the_service():
    keys = ApiKeys.parse(f"{SERVICE}=suite")
    with pytest.raises(ValueError, match="TRUSTED_TENANT_HEADER"):
        AuthInterceptor(keys, internal_callers="suite", trusted_tenant_header="x-debate-tenant")


@pytest.mark.parametrize("spec", ["bad name", "suite,ok,b@d!"])
def test_internal_callers_are_tenant_names(spec):
    with pytest.raises(ValueError, match="INTERNAL_CALLERS"):
        parse_internal_callers(spec)
    assert parse_internal_callers(" suite , ops ,") == {"suite", "ops"}
    assert parse_internal_callers("") == frozenset()


async def test_without_keys_there_is_no_identity_and_every_caller_is_default(caplog):
    with caplog.at_level(logging.WARNING):
        service = GrpcService(ServiceSettings(port=0, internal_callers="suite"), [ServiceBinding(WHO, _add, None)])
    assert "has no effect without API_KEYS" in caplog.text
    await service.start()
    try:
        async with grpc.aio.insecure_channel(service.address) as channel:
            assert await _who(channel, None) == "default"
    finally:
        await service.stop(grace=0)


def test_the_judge_and_accounting_are_internal_by_default_and_the_orchestrator_is_not(monkeypatch):
    monkeypatch.delenv("INTERNAL_CALLERS", raising=False)
    assert JudgeSettings().internal_callers == SERVICE_TENANT == "suite"
    assert AccountingSettings().internal_callers == SERVICE_TENANT
    assert OrchestratorSettings().internal_callers == ""
    monkeypatch.setenv("INTERNAL_CALLERS", "ops")
    assert AccountingSettings().internal_callers == "ops"
    monkeypatch.delenv("INTERNAL_CALLERS")
    assert load_settings(JudgeSettings, ["--internal-callers", "suite,ops"]).internal_callers == "suite,ops"


# --- the three services, keyed as `up` keys them ---------------------------------------------


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    # What the launcher gives the judge and accounting: the tenants' keys, the suite's key as the
    # tenant `suite`, and (here by default) INTERNAL_CALLERS=suite.
    internal = {"api_keys": f"{TENANT_KEYS},{SERVICE}=suite", "service_api_key": SERVICE}
    running = InProcessSuite(
        tmp_path_factory.mktemp("internal"),
        overrides={
            "accounting": internal,
            "judge": internal,
            "orchestrator": {
                "api_keys": TENANT_KEYS,
                "service_api_key": SERVICE,
                "sim_tokens_per_second": 0.0,
                "sim_first_token_latency": 0.0,
            },
        },
    )
    try:
        running.start()
        yield running
    finally:
        running.stop()


def test_every_internal_rpc_refuses_tenant_keys_and_admits_the_suites_key(suite):
    rpcs = internal_rpcs()
    assert {"EvaluateRound", "RenderVerdict", "RecordUsage", "GetDebateCost"} <= {r.method.name for r in rpcs}
    for rpc in rpcs:
        with grpc.insecure_channel(suite.addresses[rpc.service]) as channel:
            for key in (ALICE, BOB):
                error = call_refused(channel, rpc, key)
                assert error.code() == grpc.StatusCode.PERMISSION_DENIED, f"{rpc} with a tenant key: {error.code()}"
                assert error_details(error)[0].reason == "INTERNAL_SERVICE", rpc
            answered = call_status(channel, rpc, SERVICE)
            assert answered is None or answered.code() not in AUTH_REFUSALS, f"{rpc} refused the suite's key"


def call_refused(channel: grpc.Channel, rpc, key: str) -> grpc.RpcError:
    error = call_status(channel, rpc, key)
    assert error is not None, f"{rpc} answered a tenant's key"
    return error


def _usage_row(debate_id: str, request_id: str) -> accounting_pb2.RecordUsageRequest:
    """A usage row worth $0.75: 300,000 prompt tokens of openai/gpt-4o at $2.50 per million."""
    return accounting_pb2.RecordUsageRequest(
        request_id=request_id,
        debate_id=debate_id,
        participant="Ada",
        role=common_pb2.ROLE_DEBATER,
        round_number=1,
        model="openai/gpt-4o",
        attempt=1,
        usage=common_pb2.TokenUsage(prompt_tokens=300_000, completion_tokens=0, total_tokens=300_000),
    )


def test_bob_cannot_record_usage_on_alices_debate(suite):
    with grpc.insecure_channel(suite.addresses["orchestrator"]) as channel:
        orchestrator = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        alice = bearer_metadata(ALICE)
        config = common_pb2.DebateConfig(
            topic="Is a free debate free?",
            participants=[
                common_pb2.Participant(name="Ada", model="sim/debater", persona="a saver", stance="for"),
                common_pb2.Participant(name="Milo", model="sim/debater", persona="a spender", stance="against"),
            ],
            judge=common_pb2.JudgeConfig(models=["sim/judge"]),
            format=common_pb2.DebateFormat(round_limit=1, turn_order=common_pb2.TURN_ORDER_SIMULTANEOUS),
            max_tokens_per_turn=16,
        )
        debate_id = orchestrator.CreateDebate(
            pb.CreateDebateRequest(config=config), metadata=alice, timeout=30
        ).debate.debate_id
        orchestrator.StartDebate(pb.StartDebateRequest(debate_id=debate_id), metadata=alice, timeout=10)
        before = _finished(orchestrator, debate_id)
        assert before.state == pb.DEBATE_STATE_COMPLETED, before.end_reason
        assert before.cost.total.amount in ("0", "0.00", "0.000000")  # simulated models: a free debate

    with grpc.insecure_channel(suite.addresses["accounting"]) as channel:
        accounting = accounting_pb2_grpc.AccountingServiceStub(channel)
        with pytest.raises(grpc.RpcError) as denied:
            accounting.RecordUsage(_usage_row(debate_id, "bob-1"), metadata=bearer_metadata(BOB), timeout=10)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        suite_key = bearer_metadata(SERVICE)
        ledger = accounting.GetDebateCost(
            accounting_pb2.GetDebateCostRequest(debate_id=debate_id), metadata=suite_key, timeout=10
        ).cost
        assert ledger.total == before.cost.total
        assert sum(line.calls for line in ledger.by_participant) == sum(
            line.calls for line in before.cost.by_participant
        )
        # The same row, admitted, is worth $0.75: what bob's call would have added to her bill.
        accounting.RecordUsage(_usage_row("a-probe-debate", "probe-1"), metadata=suite_key, timeout=10)
        probe = accounting.GetDebateCost(
            accounting_pb2.GetDebateCostRequest(debate_id="a-probe-debate"), metadata=suite_key, timeout=10
        ).cost
        assert probe.total.amount.rstrip("0").rstrip(".") == "0.75"

    with grpc.insecure_channel(suite.addresses["orchestrator"]) as channel:
        after = orchestrator_pb2_grpc.OrchestratorServiceStub(channel).GetDebate(
            pb.GetDebateRequest(debate_id=debate_id), metadata=bearer_metadata(ALICE), timeout=10
        )
        assert after.debate.cost.total == before.cost.total


def _finished(orchestrator, debate_id: str) -> pb.Debate:
    deadline = time.monotonic() + 120
    while True:
        debate = orchestrator.GetDebate(
            pb.GetDebateRequest(debate_id=debate_id), metadata=bearer_metadata(ALICE), timeout=10
        ).debate
        if debate.state in (pb.DEBATE_STATE_COMPLETED, pb.DEBATE_STATE_FAILED) or time.monotonic() > deadline:
            return debate
        time.sleep(0.05)


# --- what the launcher gives each process ----------------------------------------------------


def _env(config: SuiteConfig) -> dict[str, dict[str, str]]:
    return {
        spec.name: spec.env for spec in config.process_specs() if spec.name in ("orchestrator", "judge", "accounting")
    }


def _config(monkeypatch, **variables: str) -> SuiteConfig:
    for name in ("SERVICE_API_KEY", "API_KEYS", "INTERNAL_CALLERS", "TRUSTED_TENANT_HEADER"):
        monkeypatch.delenv(name, raising=False)
    return SuiteConfig(extra_env=dict(variables), gateway=GatewayConfig(enabled=False))


def test_up_makes_one_service_key_per_run_and_restricts_the_judge_and_accounting(monkeypatch):
    config = _config(monkeypatch, API_KEYS=TENANT_KEYS)
    env = _env(config)
    key = config.service_api_key
    assert len(key) >= 32 and env == _env(config)  # one key for every process of the run
    assert {env[name]["SERVICE_API_KEY"] for name in env} == {key}
    for name in ("judge", "accounting"):
        keys = ApiKeys.parse(env[name]["API_KEYS"])
        assert keys.tenants == {"alice", "bob", "suite"} and keys.tenant_for(key) == "suite"
        assert env[name]["INTERNAL_CALLERS"] == "suite" and env[name]["TRUSTED_TENANT_HEADER"] == ""
        AuthInterceptor(keys, internal_callers=env[name]["INTERNAL_CALLERS"])  # the service starts with it
    # The orchestrator keeps the tenants' keys alone, and serves them.
    assert "INTERNAL_CALLERS" not in env["orchestrator"] and env["orchestrator"]["API_KEYS"] == TENANT_KEYS
    assert key not in repr(config)
    assert _config(monkeypatch).service_api_key != key  # another run, another key


def test_up_uses_the_service_key_it_is_given(monkeypatch):
    config = _config(monkeypatch, SERVICE_API_KEY=SERVICE, API_KEYS=f"{TENANT_KEYS},{SERVICE}=suite")
    env = _env(config)
    assert config.service_api_key == SERVICE
    assert ApiKeys.parse(env["judge"]["API_KEYS"]).tenant_for(SERVICE) == "suite"
    # Without tenants' keys the internal services know the suite's key alone.
    alone = _env(_config(monkeypatch, SERVICE_API_KEY=SERVICE))
    assert ApiKeys.parse(alone["accounting"]["API_KEYS"]).tenants == {"suite"}


@pytest.mark.parametrize(
    "variables",
    [
        {"API_KEYS": f"{ALICE}=suite"},  # a tenant's key would be the suite
        {"SERVICE_API_KEY": SERVICE, "API_KEYS": f"{SERVICE}=alice"},  # the suite's key would be a tenant
        {"SERVICE_API_KEY": "short"},  # not a valid key
        {"API_KEYS": f"{ALICE}"},  # malformed
    ],
)
def test_up_refuses_a_key_setup_that_would_blur_the_suite_and_a_tenant(monkeypatch, capsys, variables):
    config = _config(monkeypatch, **variables)
    with pytest.raises(ValueError) as error:
        config.process_specs()
    assert ALICE not in str(error.value) and SERVICE not in str(error.value)
    assert asyncio.run(run_up(config)) == 2
    assert "bad setting" in capsys.readouterr().err
