"""Faults: a misbehaving provider, the judge or accounting away for a while, a slow subscriber.

The services run in this process (tests.reliability.inprocess); debaters call the local
OpenAI-compatible fake server (tests.support.fake_openai) through the LLM layer's lean path;
the orchestrator reaches the judge and accounting through loopback fault proxies. In every
case the debate ends in a clear state, the events say what happened, and the ledger matches
what the fake provider billed.
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
from tests.support.fake_openai import Behavior, FakeOpenAIServer
from tests.support.fault_proxy import FaultProxy

TERMINAL = {
    pb.DEBATE_STATE_COMPLETED,
    pb.DEBATE_STATE_FAILED,
    pb.DEBATE_STATE_CANCELLED,
    pb.DEBATE_STATE_BUDGET_EXCEEDED,
}
END_KINDS = ("debate_completed", "debate_failed")


@pytest.fixture(scope="module")
def fake():
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture(scope="module")
def suite(tmp_path_factory, fake):
    proxies: dict[str, FaultProxy] = {}
    env = pytest.MonkeyPatch()
    env.setenv("OPENAI_API_KEY", "sk-fault-tests-not-a-real-key")  # openai/* goes to the fake server

    running = InProcessSuite(
        tmp_path_factory.mktemp("faults"),
        overrides={
            "orchestrator": {
                "judge_service_addr": behind_fault_proxy(proxies, "judge"),
                "accounting_service_addr": behind_fault_proxy(proxies, "accounting"),
                "llm_openai_api_base": fake.base_url,
                "llm_allowed_models": ["sim/*", "openai/gpt-4o-mini"],
                "llm_retries": 1,
                "llm_backoff_base": 0.02,
                "llm_backoff_max": 0.2,
                "llm_first_token_timeout": 5.0,
                "llm_stall_timeout": 0.5,
                "max_turn_attempts": 3,
                "rpc_timeout_seconds": 30.0,
                "subscriber_max_lag": 16,
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
            running.run(proxy.stop())
        running.stop()
        env.undo()


@pytest.fixture(scope="module")
def stub(suite):
    with grpc.insecure_channel(suite.addresses["orchestrator"]) as channel:
        yield orchestrator_pb2_grpc.OrchestratorServiceStub(channel)


def _config(model: str = "openai/gpt-4o-mini", rounds: int = 1) -> common_pb2.DebateConfig:
    return common_pb2.DebateConfig(
        topic="Should streets be for people?",
        participants=[
            common_pb2.Participant(name="Ada", model=model, persona="an urbanist", stance="for"),
            common_pb2.Participant(name="Milo", model=model, persona="a shopkeeper", stance="against"),
        ],
        judge=common_pb2.JudgeConfig(models=["sim/judge"]),
        format=common_pb2.DebateFormat(round_limit=rounds, turn_order=common_pb2.TURN_ORDER_SEQUENTIAL),
        max_tokens_per_turn=64,
    )


def _run(stub, config, *, during=None) -> tuple[str, list[pb.DebateEvent]]:
    """Creates and starts a debate, reads its events to the end; `during(events)` runs after each event."""
    debate_id = stub.CreateDebate(pb.CreateDebateRequest(config=config), timeout=30).debate.debate_id
    stub.StartDebate(pb.StartDebateRequest(debate_id=debate_id), timeout=30)
    events: list[pb.DebateEvent] = []
    after = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            for reply in stub.StreamDebateEvents(
                pb.StreamDebateEventsRequest(debate_id=debate_id, after_sequence=after), timeout=60
            ):
                event = reply.event
                if event.WhichOneof("payload") == "heartbeat":
                    continue
                events.append(event)
                after = event.sequence
                if during:
                    during(events)
                if event.WhichOneof("payload") in END_KINDS:
                    return debate_id, events
            return debate_id, events
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:  # a too-slow subscriber resumes
                raise
    pytest.fail("the debate did not end")


def _summary(stub, debate_id: str) -> pb.DebateSummary:
    return stub.GetDebateStatus(pb.GetDebateStatusRequest(debate_id=debate_id), timeout=30).debate


def _kinds(events) -> list[str]:
    return [e.WhichOneof("payload") for e in events]


def _ledger(suite: InProcessSuite, debate_id: str) -> list[tuple]:
    import sqlite3

    path = next(p for p in suite.root.rglob("ledger.sqlite3"))
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute(
            "SELECT request_id, round_number, participant, attempt, prompt_tokens, completion_tokens, "
            "estimated FROM usage WHERE debate_id=? AND role='debater'",
            (debate_id,),
        ).fetchall()
    finally:
        db.close()


def _check_common(events, ledger) -> None:
    sequences = [e.sequence for e in events]
    assert sequences == list(range(1, len(sequences) + 1))
    assert _kinds(events)[-1] in END_KINDS
    keys = [row[0] for row in ledger]
    assert len(keys) == len(set(keys))


def _billed_completions(fake) -> list:
    return [b for b in fake.billed if b.outcome == "complete"]


def _assert_ledger_matches_completed_calls(fake, ledger) -> None:
    """Every call the provider completed with usage is in the ledger with exactly that usage."""
    reported = sorted((b.prompt_tokens, b.completion_tokens) for b in _billed_completions(fake) if b.usage_sent)
    recorded = sorted((row[4], row[5]) for row in ledger if not row[6])
    assert recorded == reported, f"ledger {recorded} != provider {reported}"


@pytest.mark.parametrize(
    "behavior",
    [Behavior(status=429, retry_after=0.05), Behavior(status=500), Behavior(status=503)],
    ids=["429", "500", "503"],
)
def test_provider_error_before_the_first_token_is_retried(suite, stub, fake, behavior):
    fake.reset()
    fake.script(behavior)
    debate_id, events = _run(stub, _config())
    ledger = _ledger(suite, debate_id)
    _check_common(events, ledger)
    assert _summary(stub, debate_id).state == pb.DEBATE_STATE_COMPLETED
    assert len(fake.requests) == 3  # the failed call, its retry, the other debater
    _assert_ledger_matches_completed_calls(fake, ledger)


def test_provider_failing_every_call_fails_the_debate_clearly(suite, stub, fake):
    fake.reset()
    fake.script(*[Behavior(status=500)] * 30)
    try:
        debate_id, events = _run(stub, _config())
    finally:
        fake.reset()
    summary = _summary(stub, debate_id)
    ledger = _ledger(suite, debate_id)
    _check_common(events, ledger)
    assert summary.state == pb.DEBATE_STATE_FAILED and summary.end_reason
    failed = [e.turn_failed for e in events if e.WhichOneof("payload") == "turn_failed"]
    assert failed and failed[-1].will_retry is False and all(f.message for f in failed)
    assert events[-1].debate_failed.reason and events[-1].debate_failed.message
    assert ledger == []  # the provider billed nothing (errors before any token)


@pytest.mark.parametrize("behavior", [Behavior(stall_after=3), Behavior(close_after=3)], ids=["stall", "close"])
def test_provider_cut_mid_stream_ends_in_a_clear_state(suite, stub, fake, behavior):
    """A stream cut after its first tokens is not retried by the LLM layer (text was shown): the turn
    fails with a named reason; the engine retries it when the error is retryable, else the debate fails."""
    fake.reset()
    fake.script(behavior)
    debate_id, events = _run(stub, _config())
    ledger = _ledger(suite, debate_id)
    _check_common(events, ledger)
    summary = _summary(stub, debate_id)
    failed = [e.turn_failed for e in events if e.WhichOneof("payload") == "turn_failed"]
    assert failed and failed[0].participant == "Ada" and failed[0].attempt == 1
    assert failed[0].reason and failed[0].message
    # The text streamed before the cut was announced, then voided by the TurnFailed event.
    deltas = [
        e.token_delta
        for e in events
        if e.WhichOneof("payload") == "token_delta"
        and e.token_delta.participant == "Ada"
        and e.token_delta.attempt == 1
    ]
    assert deltas
    if failed[0].will_retry:
        assert summary.state == pb.DEBATE_STATE_COMPLETED
        completed = [e.turn_completed.turn for e in events if e.WhichOneof("payload") == "turn_completed"]
        assert {(t.participant, t.attempt) for t in completed} == {("Ada", 2), ("Milo", 1)}
    else:
        assert summary.state == pb.DEBATE_STATE_FAILED and summary.end_reason
        assert events[-1].debate_failed.reason == failed[0].reason
    _assert_ledger_matches_completed_calls(fake, ledger)


@pytest.mark.parametrize("behavior", [Behavior(stall_after=3), Behavior(close_after=3)], ids=["stall", "close"])
def test_tokens_streamed_before_a_cut_are_in_the_ledger(suite, stub, fake, behavior):
    fake.reset()
    fake.script(behavior)
    debate_id, _events = _run(stub, _config())
    ledger = _ledger(suite, debate_id)
    cut = [b for b in fake.billed if b.outcome in ("stalled", "closed")]
    assert len(cut) == 1 and cut[0].completion_tokens == 3
    attempt_one = [row for row in ledger if row[2] == "Ada" and row[3] == 1]
    assert attempt_one, "the cut attempt's streamed tokens are not in the ledger"
    assert attempt_one[0][6] == 1  # recorded as an estimate
    assert attempt_one[0][5] >= 1


def test_provider_without_usage_is_estimated_and_marked(suite, stub, fake):
    fake.reset()
    fake.script(Behavior(usage=False))
    debate_id, events = _run(stub, _config())
    ledger = _ledger(suite, debate_id)
    _check_common(events, ledger)
    assert _summary(stub, debate_id).state == pb.DEBATE_STATE_COMPLETED
    completed = {
        e.turn_completed.turn.participant: e.turn_completed.turn
        for e in events
        if e.WhichOneof("payload") == "turn_completed"
    }
    assert completed["Ada"].usage.estimated and not completed["Milo"].usage.estimated
    estimated = [row for row in ledger if row[6]]
    assert len(estimated) == 1 and estimated[0][2] == "Ada" and estimated[0][5] > 0
    _assert_ledger_matches_completed_calls(fake, ledger)


@pytest.mark.parametrize("service", ["judge", "accounting"])
def test_a_service_away_for_a_while_is_caught_up(suite, stub, fake, service):
    """The judge or accounting refuses connections for two seconds from the first token on."""
    fake.reset()
    proxy = suite.proxies[service]
    state = {"downed_at": None}
    restore = threading.Timer(2.0, lambda: setattr(proxy, "drop_new", False))

    def during(events):
        if state["downed_at"] is None and events[-1].WhichOneof("payload") == "token_delta":
            proxy.drop_new = True
            proxy.cut()
            state["downed_at"] = time.monotonic()
            restore.start()

    try:
        debate_id, events = _run(stub, _config(model="sim/debater"), during=during)
    finally:
        restore.cancel()
        proxy.drop_new = False
    ledger = _ledger(suite, debate_id)
    _check_common(events, ledger)
    summary = _summary(stub, debate_id)
    assert state["downed_at"] is not None
    assert summary.state == pb.DEBATE_STATE_COMPLETED, (summary.end_reason, _kinds(events)[-5:])
    assert proxy.stats.dropped + proxy.stats.cut >= 1
    assert len([row for row in ledger if not row[6]]) == 2  # each debater's turn charged once


def test_a_slow_subscriber_never_disturbs_the_debate(suite, stub, fake):
    fake.reset()
    debate_id = stub.CreateDebate(pb.CreateDebateRequest(config=_config(rounds=2)), timeout=30).debate.debate_id
    stub.StartDebate(pb.StartDebateRequest(debate_id=debate_id), timeout=30)
    slow = stub.StreamDebateEvents(pb.StreamDebateEventsRequest(debate_id=debate_id), timeout=120)
    first = next(slow)
    time.sleep(0.5)  # the reader stalls while the debate goes on
    deadline = time.monotonic() + 90
    while _summary(stub, debate_id).state not in TERMINAL:
        assert time.monotonic() < deadline, "the debate did not end while a subscriber was slow"
        time.sleep(0.2)
    assert _summary(stub, debate_id).state == pb.DEBATE_STATE_COMPLETED
    # The slow reader either goes on reading in order, or is told it is too slow and resumes.
    received = [first.event.sequence]
    after = first.event.sequence
    try:
        for reply in slow:
            time.sleep(0.01)
            if reply.event.WhichOneof("payload") != "heartbeat":
                received.append(reply.event.sequence)
                after = reply.event.sequence
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
        for reply in stub.StreamDebateEvents(
            pb.StreamDebateEventsRequest(debate_id=debate_id, after_sequence=after), timeout=60
        ):
            if reply.event.WhichOneof("payload") != "heartbeat":
                received.append(reply.event.sequence)
    assert received == list(range(1, len(received) + 1))
    assert len(received) == _summary(stub, debate_id).last_sequence
