"""`debate-engine up` with API_KEYS for alice and bob: the judge and accounting, each on its own
port, refuse both tenants' keys on every RPC (PERMISSION_DENIED), and answer the suite's own
service key, which `up` made for this run and gave every service (and never printed).

The RPCs come from the generated descriptors (tests/security/internal_rpcs.py), so a new RPC
of either service is covered as soon as it exists. The issue's example runs too: alice's
debate on the simulated models is free, bob tries to record a $0.75 usage row on it at
accounting's port, is refused, and her debate's cost stays what it was.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import grpc
import psutil
import pytest
from debate.accounting.v1 import accounting_pb2, accounting_pb2_grpc
from debate.common.v1 import common_pb2
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc

from services.common.auth import bearer_metadata
from services.common.grpc_errors import error_details
from tests.helpers import BIN, ROOT, free_port
from tests.security.internal_rpcs import AUTH_REFUSALS, call_status, internal_rpcs

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

ALICE = "alice-up-key-0123456789abcdef"
BOB = "bob-up-key-0123456789abcdef"
SERVICES = ("orchestrator", "judge", "accounting")


class Up:
    """`debate-engine up` in a process of its own, its output drained into `output`."""

    def __init__(self, tmp_path):
        self.ports = {name: free_port() for name in SERVICES}
        env = {k: v for k, v in os.environ.items() if k not in ("SERVICE_API_KEY", "INTERNAL_CALLERS")}
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "GATEWAY_ENABLED": "0",
                "API_KEYS": f"{ALICE}=alice,{BOB}=bob",
                "SIM_TOKENS_PER_SECOND": "0",
                "SIM_FIRST_TOKEN_LATENCY": "0",
            }
        )
        argv = [str(BIN / "debate-engine"), "up", "--data-dir", str(tmp_path)]
        for name, port in self.ports.items():
            argv += [f"--{name}-port", str(port)]
        self.process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.output: list[str] = []
        self.up = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            if "suite is up" in line:
                self.up.set()
        self.up.set()

    def wait_up(self) -> None:
        self.up.wait(120)
        if self.process.poll() is not None or not any("suite is up" in line for line in self.output):
            raise AssertionError("the suite did not come up:\n" + "".join(self.output[-40:]))

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def service_environ(self, name: str) -> dict[str, str]:
        """The environment `up` started service `name` with."""
        for child in psutil.Process(self.process.pid).children(recursive=True):
            if f"services.{name}" in child.cmdline():
                return child.environ()
        raise LookupError(name)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    running = Up(tmp_path_factory.mktemp("up-internal"))
    try:
        running.wait_up()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def suite_key(up) -> str:
    keys = {name: up.service_environ(name).get("SERVICE_API_KEY", "") for name in SERVICES}
    assert len(set(keys.values())) == 1 and len(keys["judge"]) >= 32, "one service key for the whole run"
    return keys["judge"]


def test_every_internal_rpc_refuses_the_tenants_keys_and_admits_the_suites_key(up, suite_key):
    rpcs = internal_rpcs()
    assert {"EvaluateRound", "RenderVerdict", "RecordUsage", "ReserveBudget"} <= {r.method.name for r in rpcs}
    for rpc in rpcs:
        with grpc.insecure_channel(up.address(rpc.service)) as channel:
            for tenant, key in (("alice", ALICE), ("bob", BOB)):
                error = call_status(channel, rpc, key)
                assert error is not None, f"{rpc} answered {tenant}'s key"
                assert error.code() == grpc.StatusCode.PERMISSION_DENIED, f"{rpc}, {tenant}: {error.code()}"
                assert error_details(error)[0].reason == "INTERNAL_SERVICE", rpc
            missing = call_status(channel, rpc, None)
            assert missing is not None and missing.code() == grpc.StatusCode.UNAUTHENTICATED, rpc
            answered = call_status(channel, rpc, suite_key)
            assert answered is None or answered.code() not in AUTH_REFUSALS, f"{rpc} refused the suite's key"


def test_up_never_prints_the_service_key_it_made(up, suite_key):
    assert not any(suite_key in line for line in up.output)


def _row(debate_id: str, request_id: str) -> accounting_pb2.RecordUsageRequest:
    """$0.75 of usage: 300,000 prompt tokens of openai/gpt-4o at $2.50 per million."""
    return accounting_pb2.RecordUsageRequest(
        request_id=request_id,
        debate_id=debate_id,
        participant="Ada",
        role=common_pb2.ROLE_DEBATER,
        round_number=1,
        model="openai/gpt-4o",
        attempt=1,
        usage=common_pb2.TokenUsage(prompt_tokens=300_000, total_tokens=300_000),
    )


def test_bob_cannot_put_a_usage_row_on_alices_free_debate(up, suite_key):
    alice = bearer_metadata(ALICE)
    with grpc.insecure_channel(up.address("orchestrator")) as channel:
        orchestrator = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        config = common_pb2.DebateConfig(
            topic="Is a debate on simulated models free?",
            participants=[
                common_pb2.Participant(name="Ada", model="sim/debater", persona="a saver", stance="for"),
                common_pb2.Participant(name="Milo", model="sim/debater", persona="a spender", stance="against"),
            ],
            judge=common_pb2.JudgeConfig(models=["sim/judge"]),
            format=common_pb2.DebateFormat(round_limit=1, turn_order=common_pb2.TURN_ORDER_SIMULTANEOUS),
            max_tokens_per_turn=16,
        )
        created = orchestrator.CreateDebate(pb.CreateDebateRequest(config=config), metadata=alice, timeout=30)
        debate_id = created.debate.debate_id
        orchestrator.StartDebate(pb.StartDebateRequest(debate_id=debate_id), metadata=alice, timeout=10)
        deadline = time.monotonic() + 120
        debate = created.debate
        while debate.state not in (pb.DEBATE_STATE_COMPLETED, pb.DEBATE_STATE_FAILED) and time.monotonic() < deadline:
            time.sleep(0.1)
            debate = orchestrator.GetDebate(pb.GetDebateRequest(debate_id=debate_id), metadata=alice, timeout=10).debate
        # The orchestrator reached the judge and accounting with the key `up` made: a verdict.
        assert debate.state == pb.DEBATE_STATE_COMPLETED, debate.end_reason
        free = debate.cost.total
        assert float(free.amount) == 0.0

    with grpc.insecure_channel(up.address("accounting")) as channel:
        accounting = accounting_pb2_grpc.AccountingServiceStub(channel)
        with pytest.raises(grpc.RpcError) as denied:
            accounting.RecordUsage(_row(debate_id, "bob-was-here"), metadata=bearer_metadata(BOB), timeout=10)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # Had it been admitted, the row was worth $0.75 (the suite's key records it on another debate).
        suite = bearer_metadata(suite_key)
        accounting.RecordUsage(_row("not-alices-debate", "probe"), metadata=suite, timeout=10)
        probe = accounting.GetDebateCost(
            accounting_pb2.GetDebateCostRequest(debate_id="not-alices-debate"), metadata=suite, timeout=10
        ).cost
        assert float(probe.total.amount) == 0.75
        ledger = accounting.GetDebateCost(
            accounting_pb2.GetDebateCostRequest(debate_id=debate_id), metadata=suite, timeout=10
        ).cost
        assert ledger.total == free

    with grpc.insecure_channel(up.address("orchestrator")) as channel:
        after = orchestrator_pb2_grpc.OrchestratorServiceStub(channel).GetDebate(
            pb.GetDebateRequest(debate_id=debate_id), metadata=alice, timeout=10
        )
        assert after.debate.cost.total == free
