"""A flag given on the command line reaches the orchestrator's outgoing channels.

The judge and accounting run in this process on port 0 and admit only the suite's service
key. The orchestrator's settings come from flags alone (`--service-api-key ...`, with
SERVICE_API_KEY unset), exactly as `python -m services.orchestrator` builds them, and its
composition root opens its channels from those settings: a debate then runs to its verdict,
which needs every judge and accounting call to carry the key as its bearer token.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import typing

import grpc
import pytest
from debate.accounting.v1 import accounting_pb2, accounting_pb2_grpc
from debate.common.v1 import common_pb2
from debate.judge.v1 import judge_pb2, judge_pb2_grpc
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc
from pydantic import SecretStr, ValidationError

from services.accounting.server import build_service as build_accounting
from services.accounting.settings import AccountingSettings
from services.common.channels import open_channel
from services.common.logs import redact
from services.common.settings import ServiceSettings, load_settings
from services.common.tls import TlsFiles
from services.judge.server import build_service as build_judge
from services.judge.settings import JudgeSettings
from services.orchestrator.clients import GrpcAccounting
from services.orchestrator.server import build_service as build_orchestrator
from services.orchestrator.settings import OrchestratorSettings
from services.supervisor import ProcessSpec, Suite
from tests.helpers import free_port
from tests.security.certs import TestCA

SERVICE_KEY = "suite-flag-key-0123456789"
TERMINAL = {
    pb.DEBATE_STATE_COMPLETED,
    pb.DEBATE_STATE_FAILED,
    pb.DEBATE_STATE_CANCELLED,
    pb.DEBATE_STATE_BUDGET_EXCEEDED,
}


@pytest.fixture
async def keyed_peers(tmp_path, monkeypatch):
    """The judge and accounting, started on port 0, admitting only SERVICE_KEY (tenant "suite")."""
    for name in ("SERVICE_API_KEY", "API_KEYS"):
        monkeypatch.delenv(name, raising=False)
    internal = {"port": 0, "api_keys": f"{SERVICE_KEY}=suite"}
    judge = await build_judge(JudgeSettings(data_dir=str(tmp_path / "judge"), **internal))
    accounting = await build_accounting(AccountingSettings(data_dir=str(tmp_path / "accounting"), **internal))
    await judge.start()
    await accounting.start()
    try:
        yield judge, accounting
    finally:
        await judge.stop(grace=0)
        await accounting.stop(grace=0)


def _orchestrator_flags(tmp_path, judge, accounting, *extra: str) -> OrchestratorSettings:
    return load_settings(
        OrchestratorSettings,
        [
            "--port=0",
            f"--data-dir={tmp_path / 'orchestrator'}",
            f"--judge-service-addr={judge.address}",
            f"--accounting-service-addr={accounting.address}",
            "--rpc-timeout-seconds=10",
            "--sim-first-token-latency=0",
            "--sim-tokens-per-second=0",
            *extra,
        ],
    )


async def test_the_peers_refuse_a_call_without_the_service_key(keyed_peers):
    judge, accounting = keyed_peers
    async with open_channel(accounting.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await accounting_pb2_grpc.AccountingServiceStub(channel).GetDebateCost(
                accounting_pb2.GetDebateCostRequest(debate_id="d1"), timeout=5
            )
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    async with open_channel(judge.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await judge_pb2_grpc.JudgeServiceStub(channel).EvaluateRound(judge_pb2.EvaluateRoundRequest(), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_the_service_key_given_as_a_flag_is_the_bearer_of_the_orchestrators_calls(tmp_path, keyed_peers):
    judge, accounting = keyed_peers
    settings = _orchestrator_flags(tmp_path, judge, accounting, f"--service-api-key={SERVICE_KEY}")
    assert settings.service_api_key.get_secret_value() == SERVICE_KEY

    client = GrpcAccounting(settings)  # the orchestrator's own client, as its composition root builds it
    try:
        cost = await client.debate_cost("d1")
        assert cost.debate_id == "d1"
    finally:
        await client.close()

    orchestrator = await build_orchestrator(settings)
    await orchestrator.start()
    try:
        async with grpc.aio.insecure_channel(orchestrator.address) as channel:
            stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
            config = common_pb2.DebateConfig(
                topic="Should flags beat the environment?",
                participants=[
                    common_pb2.Participant(name="Ada", model="sim/debater", persona="an engineer", stance="for"),
                    common_pb2.Participant(name="Milo", model="sim/debater", persona="an operator", stance="against"),
                ],
                judge=common_pb2.JudgeConfig(models=["sim/judge"]),
                format=common_pb2.DebateFormat(round_limit=1, turn_order=common_pb2.TURN_ORDER_SIMULTANEOUS),
                max_tokens_per_turn=16,
            )
            created = await stub.CreateDebate(pb.CreateDebateRequest(config=config), timeout=10)
            debate_id = created.debate.debate_id
            await stub.StartDebate(pb.StartDebateRequest(debate_id=debate_id), timeout=10)
            debate = created.debate
            for _ in range(600):
                debate = (await stub.GetDebate(pb.GetDebateRequest(debate_id=debate_id), timeout=10)).debate
                if debate.state in TERMINAL:
                    break
                await asyncio.sleep(0.05)
    finally:
        await orchestrator.stop(grace=0)
    assert debate.state == pb.DEBATE_STATE_COMPLETED, debate.end_reason
    assert debate.verdict.judge_models == ["sim/judge"]  # the judge answered
    assert debate.cost.usage.total_tokens > 0  # accounting recorded every turn


# --- every service from flags alone, as processes ------------------------------------------------

# Variables that would reach a process's settings if the test's own environment had them: the
# processes below are started without any, so only their flags can configure them.
_SETTING_VARIABLES = re.compile(r"^(SERVICE_API_KEY|API_KEYS|INTERNAL_CALLERS|TRUSTED_TENANT_HEADER|TLS_\w+)$")


@pytest.fixture(scope="module")
def flag_pki(tmp_path_factory):
    ca = TestCA(tmp_path_factory.mktemp("flags-pki"))
    return {"suite": ca.issue("suite"), "client": ca.issue("client", dns=("client",), ips=())}


def _tls_flags(issued) -> list[str]:
    return [
        f"--tls-cert-file={issued.cert_file}",
        f"--tls-key-file={issued.key_file}",
        f"--tls-ca-file={issued.ca_file}",
    ]


async def test_every_service_configured_by_flags_alone_runs_a_debate_over_mutual_tls(tmp_path, flag_pki, monkeypatch):
    """The judge and accounting take their keys and TLS files from flags; the orchestrator takes
    the service key and the TLS files of its outgoing channels from flags. No variable gives any
    of them: a verdict and a cost mean every call between them carried the key over mutual TLS."""
    for name in [k for k in os.environ if _SETTING_VARIABLES.match(k)]:
        monkeypatch.delenv(name)  # the processes inherit this environment: only flags configure them
    ports = {name: free_port() for name in ("accounting", "judge", "orchestrator")}
    tls = _tls_flags(flag_pki["suite"])
    internal = [f"--api-keys={SERVICE_KEY}=suite", "--internal-callers=suite", *tls]
    instant = ["--sim-first-token-latency=0", "--sim-tokens-per-second=0"]
    argvs = {
        "accounting": [*internal],
        "judge": [*internal, *instant],
        "orchestrator": [
            f"--judge-service-addr=127.0.0.1:{ports['judge']}",
            f"--accounting-service-addr=127.0.0.1:{ports['accounting']}",
            f"--service-api-key={SERVICE_KEY}",
            "--rpc-timeout-seconds=20",
            *tls,
            *instant,
        ],
    }
    server_tls = TlsFiles.from_settings(load_settings(OrchestratorSettings, tls))
    client_tls = TlsFiles.from_settings(load_settings(OrchestratorSettings, _tls_flags(flag_pki["client"])))
    specs = [
        ProcessSpec(
            name,
            [
                sys.executable,
                "-m",
                f"services.{name}",
                "--host=127.0.0.1",
                f"--port={ports[name]}",
                f"--data-dir={tmp_path / name}",
                "--log-level=INFO",
                *argvs[name],
            ],
            f"127.0.0.1:{ports[name]}",
            f"debate.{name}.v1.{name.capitalize()}Service",
            tls=server_tls,  # the health checks dial with the files the flags give
        )
        for name in ("accounting", "judge", "orchestrator")
    ]
    lines: list[str] = []
    async with Suite(specs, output=lines.append):
        async with open_channel(f"127.0.0.1:{ports['orchestrator']}", tls=client_tls) as channel:
            debate = await _run_debate(orchestrator_pb2_grpc.OrchestratorServiceStub(channel))
        async with open_channel(f"127.0.0.1:{ports['accounting']}", tls=client_tls) as channel:
            # TLS without the key is refused by accounting: the key is what admitted the orchestrator.
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await accounting_pb2_grpc.AccountingServiceStub(channel).GetDebateCost(
                    accounting_pb2.GetDebateCostRequest(debate_id=debate.debate_id), timeout=10
                )
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert debate.state == pb.DEBATE_STATE_COMPLETED, (debate.end_reason, lines[-20:])
    assert debate.verdict.judge_models == ["sim/judge"]  # the judge answered over mutual TLS with the key
    assert debate.cost.usage.total_tokens > 0  # accounting recorded every turn
    assert any("mutual TLS" in line for line in lines)  # each server says how it listens
    assert not any(SERVICE_KEY in line for line in lines)  # a key given as a flag is masked like a variable


async def _run_debate(stub) -> pb.Debate:
    config = common_pb2.DebateConfig(
        topic="Do flags reach every channel?",
        participants=[
            common_pb2.Participant(name="Ada", model="sim/debater", persona="an engineer", stance="for"),
            common_pb2.Participant(name="Milo", model="sim/debater", persona="an operator", stance="against"),
        ],
        judge=common_pb2.JudgeConfig(models=["sim/judge"]),
        format=common_pb2.DebateFormat(round_limit=1, turn_order=common_pb2.TURN_ORDER_SIMULTANEOUS),
        max_tokens_per_turn=16,
    )
    created = await stub.CreateDebate(pb.CreateDebateRequest(config=config), timeout=20)
    await stub.StartDebate(pb.StartDebateRequest(debate_id=created.debate.debate_id), timeout=20)
    debate = created.debate
    for _ in range(1200):
        debate = (await stub.GetDebate(pb.GetDebateRequest(debate_id=debate.debate_id), timeout=20)).debate
        if debate.state in TERMINAL:
            break
        await asyncio.sleep(0.05)
    return debate


# --- a flag and its variable make the same settings ---------------------------------------------

SETTINGS_CLASSES = (OrchestratorSettings, JudgeSettings, AccountingSettings)


def _samples(cls: type[ServiceSettings], name: str) -> list[str]:
    """Values of field `name` other than its default, as a variable's text (the first valid one is used)."""
    field = cls.model_fields[name]
    default = field.get_default(call_default_factory=True)
    annotation = field.annotation
    if annotation is bool:
        return ["false" if default else "true"]
    if annotation is int:
        return [str(default + 1), str(default - 1)]
    if str(annotation) in ("int | None", "typing.Optional[int]"):  # a port that may be unset (METRICS_PORT)
        return ["9464"]
    if annotation is float:
        return [str(default + 0.5), str(default / 2)]
    if annotation is SecretStr:  # a key list, or a URL with a password (DATABASE_URL)
        return ["flag-secret-0123456789=suite", "postgresql://suite:flag-secret-0123456789@127.0.0.1:9/ledger"]
    if annotation is str:
        return ["suite-probe"]
    if typing.get_origin(annotation) is typing.Literal:  # a choice (LOG_FORMAT)
        return [str(choice) for choice in typing.get_args(annotation) if choice != default]
    if "Endpoint" in str(annotation):
        return ['{"local": {"api_base": "http://127.0.0.1:9/v1"}}']
    if str(annotation).startswith("dict"):
        return ['{"sim/a": ["sim/b"]}']
    if str(annotation).startswith("list"):
        return ["sim/a,sim/b"]
    raise AssertionError(f"{cls.__name__}.{name}: no sample value for {annotation}")


def _flag(name: str, text: str) -> str:
    flag = name.replace("_", "-")
    if text in ("true", "false"):
        return f"--{flag}" if text == "true" else f"--no-{flag}"
    return f"--{flag}={text}"


def _plain(settings: ServiceSettings) -> dict:
    return {
        name: value.get_secret_value() if isinstance(value, SecretStr) else value
        for name, value in ((n, getattr(settings, n)) for n in type(settings).model_fields)
    }


@pytest.mark.parametrize("cls", SETTINGS_CLASSES, ids=lambda c: c.__name__)
def test_every_setting_given_as_a_flag_equals_the_same_setting_given_as_a_variable(cls, monkeypatch):
    for name in cls.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    default = _plain(load_settings(cls, []))
    for name in cls.model_fields:
        for text in _samples(cls, name):
            monkeypatch.setenv(name.upper(), text)
            try:
                from_variable = load_settings(cls, [])
            except ValidationError:
                continue
            finally:
                monkeypatch.delenv(name.upper())
            break
        else:
            raise AssertionError(f"{cls.__name__}.{name}: no valid sample value")
        from_flag = load_settings(cls, [_flag(name, text)])
        assert _plain(from_flag) == _plain(from_variable), name
        assert _plain(from_flag)[name] != default[name], f"{name}: the sample value is the default"
        assert from_flag.secret_values() == from_variable.secret_values(), name


def test_secrets_given_as_flags_are_masked_like_variables(monkeypatch):
    for name in ("SERVICE_API_KEY", "API_KEYS"):
        monkeypatch.delenv(name, raising=False)
    user_key = "flag-user-key-0123456789"
    settings = load_settings(
        OrchestratorSettings, [f"--service-api-key={SERVICE_KEY}", f"--api-keys={user_key}=alice-tenant-name"]
    )
    secrets = settings.secret_values()
    assert SERVICE_KEY in secrets and user_key in secrets
    assert "alice-tenant-name" not in secrets  # a tenant's name is not a secret
    line = redact(f"calling with {SERVICE_KEY} for {user_key} as alice-tenant-name", secrets)
    assert SERVICE_KEY not in line and user_key not in line and "alice-tenant-name" in line
