"""Every outgoing call carries a deadline: a judge or accounting that accepts a call and then
never answers (a stalled connection, not a refused one) cannot hang a debate.

The orchestrator reaches them through loopback fault proxies that hold every byte while
stalled. With `RPC_TIMEOUT_SECONDS` short, the debate must end in a clear state (or catch up
once the stall ends) instead of waiting forever.
"""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from debate.common.v1 import common_pb2
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc

from tests.reliability.inprocess import InProcessSuite, behind_fault_proxy
from tests.support.fault_proxy import FaultProxy

TERMINAL = {
    pb.DEBATE_STATE_COMPLETED,
    pb.DEBATE_STATE_FAILED,
    pb.DEBATE_STATE_CANCELLED,
    pb.DEBATE_STATE_BUDGET_EXCEEDED,
}
RPC_TIMEOUT = 1.5


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    proxies: dict[str, FaultProxy] = {}

    running = InProcessSuite(
        tmp_path_factory.mktemp("deadlines"),
        overrides={
            "orchestrator": {
                "judge_service_addr": behind_fault_proxy(proxies, "judge"),
                "accounting_service_addr": behind_fault_proxy(proxies, "accounting"),
                "rpc_timeout_seconds": RPC_TIMEOUT,
                "judge_attempts": 1,
                "sim_tokens_per_second": 3000.0,
                "sim_first_token_latency": 0.0,
            }
        },
    )
    running.proxies = proxies
    try:
        running.start()
        yield running
    finally:
        for proxy in proxies.values():
            proxy.resume()
            running.run(proxy.stop())
        running.stop()


@pytest.fixture(scope="module")
def stub(suite):
    with grpc.insecure_channel(suite.addresses["orchestrator"]) as channel:
        yield orchestrator_pb2_grpc.OrchestratorServiceStub(channel)


def _config() -> common_pb2.DebateConfig:
    return common_pb2.DebateConfig(
        topic="Should a call wait forever?",
        participants=[
            common_pb2.Participant(name="Ada", model="sim/debater", persona="an SRE", stance="against"),
            common_pb2.Participant(name="Milo", model="sim/debater", persona="an optimist", stance="for"),
        ],
        judge=common_pb2.JudgeConfig(models=["sim/judge"]),
        format=common_pb2.DebateFormat(round_limit=1, turn_order=common_pb2.TURN_ORDER_SIMULTANEOUS),
        max_tokens_per_turn=24,
    )


@pytest.mark.parametrize("service", ["judge", "accounting"])
def test_a_service_that_never_answers_cannot_hang_a_debate(suite, stub, service):
    proxy = suite.proxies[service]
    debate_id = stub.CreateDebate(pb.CreateDebateRequest(config=_config()), timeout=30).debate.debate_id
    proxy.stall()  # connections stay open; nothing goes through either way
    resume = threading.Timer(30.0, proxy.resume)  # a guard: never leave it stalled past the test
    resume.start()
    try:
        stub.StartDebate(pb.StartDebateRequest(debate_id=debate_id), timeout=30)
        deadline = time.monotonic() + 25  # far more than the call deadlines the debate may spend
        while True:
            summary = stub.GetDebateStatus(pb.GetDebateStatusRequest(debate_id=debate_id), timeout=10).debate
            if summary.state in TERMINAL:
                break
            assert time.monotonic() < deadline, (
                f"the debate still {pb.DebateState.Name(summary.state)} while {service} never answered: "
                "a call without a deadline?"
            )
            time.sleep(0.1)
    finally:
        resume.cancel()
        proxy.resume()
    assert proxy.stats.chunks_held >= 1, f"the orchestrator never called the {service} service"
    assert summary.state == pb.DEBATE_STATE_FAILED, pb.DebateState.Name(summary.state)
    assert "DEADLINE" in summary.end_reason.upper(), summary.end_reason
    events = [
        r.event
        for r in stub.StreamDebateEvents(pb.StreamDebateEventsRequest(debate_id=debate_id), timeout=30)
        if r.event.WhichOneof("payload") != "heartbeat"
    ]
    assert events[-1].WhichOneof("payload") == "debate_failed"
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
