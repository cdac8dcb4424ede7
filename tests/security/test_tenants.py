"""Tenants: one tenant's key can neither see, stream, start nor cancel another tenant's debate.

The three services run in this process with API keys configured as a deployment would:
the orchestrator admits the users' keys, the judge and accounting admit only the suite's
service key, which the orchestrator sends on its own calls (SERVICE_API_KEY).
"""

from __future__ import annotations

import time

import grpc
import pytest
from debate.accounting.v1 import accounting_pb2, accounting_pb2_grpc
from debate.common.v1 import common_pb2
from debate.judge.v1 import judge_pb2, judge_pb2_grpc
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc

from services.common.grpc_errors import error_details
from tests.reliability.inprocess import InProcessSuite

ALICE = "alice-key-0123456789abcdef"
BOB = "bob-key-0123456789abcdef"
SERVICE = "suite-service-key-0123456789"
HIDDEN = {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED}
TOPIC = "Alice's private topic: is tea better than coffee?"


def _as(key: str):
    return (("authorization", f"Bearer {key}"),)


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("SERVICE_API_KEY", SERVICE)  # the orchestrator's channels to the judge and accounting send it
    internal = {"api_keys": f"{SERVICE}=suite"}
    running = InProcessSuite(
        tmp_path_factory.mktemp("tenants"),
        overrides={
            "accounting": internal,
            "judge": internal,
            "orchestrator": {
                "api_keys": f"{ALICE}=alice,{BOB}=bob",
                "sim_tokens_per_second": 5000.0,
                "sim_first_token_latency": 0.0,
            },
        },
    )
    try:
        running.start()
        yield running
    finally:
        running.stop()
        mp.undo()


@pytest.fixture(scope="module")
def orchestrator(suite):
    with grpc.insecure_channel(suite.addresses["orchestrator"]) as channel:
        yield orchestrator_pb2_grpc.OrchestratorServiceStub(channel)


def _config() -> common_pb2.DebateConfig:
    return common_pb2.DebateConfig(
        topic=TOPIC,
        participants=[
            common_pb2.Participant(name="Ada", model="sim/debater", persona="a tea lover", stance="for"),
            common_pb2.Participant(name="Milo", model="sim/debater", persona="a barista", stance="against"),
        ],
        judge=common_pb2.JudgeConfig(models=["sim/judge"]),
        format=common_pb2.DebateFormat(round_limit=1, turn_order=common_pb2.TURN_ORDER_SIMULTANEOUS),
        max_tokens_per_turn=16,
    )


@pytest.fixture(scope="module")
def alices_debate(orchestrator) -> str:
    created = orchestrator.CreateDebate(
        pb.CreateDebateRequest(config=_config(), request_id="alice-1"), metadata=_as(ALICE), timeout=30
    )
    return created.debate.debate_id


def _hidden(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        result = call(*args, **kwargs)
        if hasattr(result, "__iter__") and not isinstance(result, (bytes, str)):
            list(result)
    error = refused.value
    assert error.code() in HIDDEN, f"{error.code()}: {error.details()}"
    assert TOPIC not in (error.details() or "") and "Ada" not in (error.details() or "")
    return error


def test_another_tenant_cannot_see_start_stream_or_cancel(orchestrator, alices_debate):
    bob = _as(BOB)
    _hidden(orchestrator.GetDebate, pb.GetDebateRequest(debate_id=alices_debate), metadata=bob, timeout=10)
    _hidden(orchestrator.GetDebateStatus, pb.GetDebateStatusRequest(debate_id=alices_debate), metadata=bob, timeout=10)
    _hidden(orchestrator.StartDebate, pb.StartDebateRequest(debate_id=alices_debate), metadata=bob, timeout=10)
    _hidden(
        orchestrator.StreamDebateEvents, pb.StreamDebateEventsRequest(debate_id=alices_debate), metadata=bob, timeout=10
    )
    _hidden(
        orchestrator.CancelDebate,
        pb.CancelDebateRequest(debate_id=alices_debate, reason="mine now"),
        metadata=bob,
        timeout=10,
    )
    listed = orchestrator.ListDebates(pb.ListDebatesRequest(page_size=100), metadata=bob, timeout=10)
    assert alices_debate not in {d.debate_id for d in listed.debates}
    assert all(d.topic != TOPIC for d in listed.debates)
    # The same request_id under another tenant is a new debate, not Alice's.
    bobs = orchestrator.CreateDebate(
        pb.CreateDebateRequest(config=_config(), request_id="alice-1"), metadata=bob, timeout=30
    )
    assert bobs.debate.debate_id != alices_debate
    # Alice still sees hers, untouched by Bob's attempts.
    mine = orchestrator.GetDebate(pb.GetDebateRequest(debate_id=alices_debate), metadata=_as(ALICE), timeout=10)
    assert mine.debate.state == pb.DEBATE_STATE_CREATED and mine.debate.config.topic == TOPIC
    alices = orchestrator.ListDebates(pb.ListDebatesRequest(page_size=100), metadata=_as(ALICE), timeout=10)
    assert alices_debate in {d.debate_id for d in alices.debates}
    assert bobs.debate.debate_id not in {d.debate_id for d in alices.debates}


def test_a_hidden_debate_looks_like_a_missing_one(orchestrator, alices_debate):
    bob = _as(BOB)
    theirs = _hidden(orchestrator.GetDebate, pb.GetDebateRequest(debate_id=alices_debate), metadata=bob, timeout=10)
    missing = _hidden(
        orchestrator.GetDebate,
        pb.GetDebateRequest(debate_id="00000000-0000-4000-8000-000000000000"),
        metadata=bob,
        timeout=10,
    )
    assert theirs.code() == missing.code()
    assert error_details(theirs)[0].reason == error_details(missing)[0].reason


@pytest.mark.parametrize("metadata", [None, _as("nobody-key-0123456789"), (("authorization", ALICE),)])
def test_calls_without_a_known_key_are_unauthenticated(orchestrator, alices_debate, metadata):
    with pytest.raises(grpc.RpcError) as refused:
        orchestrator.GetDebate(pb.GetDebateRequest(debate_id=alices_debate), metadata=metadata, timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as refused_list:
        orchestrator.ListDebates(pb.ListDebatesRequest(), metadata=metadata, timeout=10)
    assert refused_list.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_internal_services_admit_only_the_service_key(suite):
    with grpc.insecure_channel(suite.addresses["accounting"]) as channel:
        accounting = accounting_pb2_grpc.AccountingServiceStub(channel)
        for key in (ALICE, BOB):
            with pytest.raises(grpc.RpcError) as refused:
                accounting.GetDebateCost(
                    accounting_pb2.GetDebateCostRequest(debate_id="x"), metadata=_as(key), timeout=10
                )
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        accounting.GetDebateCost(accounting_pb2.GetDebateCostRequest(debate_id="x"), metadata=_as(SERVICE), timeout=10)
    with grpc.insecure_channel(suite.addresses["judge"]) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            judge_pb2_grpc.JudgeServiceStub(channel).EvaluateRound(
                judge_pb2.EvaluateRoundRequest(), metadata=_as(BOB), timeout=10
            )
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_the_owner_runs_a_debate_through_the_authenticated_services(orchestrator, alices_debate):
    """The orchestrator's calls to the judge and accounting carry the service key: the debate completes."""
    alice = _as(ALICE)
    orchestrator.StartDebate(pb.StartDebateRequest(debate_id=alices_debate), metadata=alice, timeout=10)
    kinds, sequences = [], []
    deadline = time.monotonic() + 120
    for reply in orchestrator.StreamDebateEvents(
        pb.StreamDebateEventsRequest(debate_id=alices_debate), metadata=alice, timeout=120
    ):
        kinds.append(reply.event.WhichOneof("payload"))
        sequences.append(reply.event.sequence)
        if kinds[-1] in ("debate_completed", "debate_failed") or time.monotonic() > deadline:
            break
    assert kinds[-1] == "debate_completed", kinds
    assert sequences == list(range(1, len(sequences) + 1))
    assert "round_assessed" in kinds and "verdict_rendered" in kinds
    final = orchestrator.GetDebate(pb.GetDebateRequest(debate_id=alices_debate), metadata=alice, timeout=10)
    assert final.debate.state == pb.DEBATE_STATE_COMPLETED
    assert final.debate.cost.total.amount  # priced by accounting, reached with the service key
