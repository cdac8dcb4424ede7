"""A debate's trace across a restart, a takeover and a queue shared by replicas (issue 17, traces).

The services run as processes (tests/reliability/processes.py) exporting their spans over OTLP
to an in-test receiver (tests/support/otlp_receiver.py), every 100 ms (OTEL_BSP_SCHEDULE_DELAY).
Each debate is created and started by a caller that sends a W3C `traceparent`, so its first
trace is known. The orchestrator keeps the trace in the debates row (schema version 9,
services/orchestrator/lifecycle.py); the spans read back show:

- SQLite, the orchestrator SIGKILLed mid-debate and started again on its file: the resumed
  `debate` span (debate.resumed=true, a root of a new trace) links to the first run's `debate`
  span, whose ids are read from the first run's turns (its children; the span itself died
  with the process and was never exported);
- PostgreSQL, two replicas: the owner SIGKILLed, the other takes the debate over, and its resumed
  `debate` span links to the first run's the same way;
- PostgreSQL, two replicas: a debate queued by a full replica (MAX_RUNNING_DEBATES=1) and
  claimed by the other, which never saw its StartDebate, runs in StartDebate's trace, its
  `debate` span a child of the StartDebate server span.

Each orchestrator process names itself in `service.name` (OTEL_SERVICE_NAME), so the spans say
which replica ran what.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass

import grpc
import pytest
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc

from tests.reliability.processes import KillableSuite
from tests.reliability.test_replica_failover import ROUNDS, _config
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

LEASE_SECONDS = 2.0
# Turns of about 0.5 s (40 tokens at 80 a second): a debate of ROUNDS rounds runs a few seconds,
# past a kill made once its first turn's span has arrived.
ENV = {
    "SIM_TOKENS_PER_SECOND": "80",
    "SIM_FIRST_TOKEN_LATENCY": "0.05",
    "LEASE_SECONDS": str(LEASE_SECONDS),
    "OTEL_BSP_SCHEDULE_DELAY": "100",
}
SETTLE_SECONDS = 90.0  # guards a hang only
START = "/debate.orchestrator.v1.OrchestratorService/StartDebate"


@dataclass
class Started:
    debate_id: str
    trace_id: str  # the caller's trace, which CreateDebate and StartDebate join
    state: int  # as StartDebate answered


async def _start(stub: orchestrator_pb2_grpc.OrchestratorServiceStub) -> Started:
    trace_id = secrets.token_hex(16)
    metadata = (("traceparent", f"00-{trace_id}-{secrets.token_hex(8)}-01"),)
    created = await stub.CreateDebate(pb.CreateDebateRequest(config=_config()), metadata=metadata, timeout=10)
    debate_id = created.debate.debate_id
    started = await stub.StartDebate(pb.StartDebateRequest(debate_id=debate_id), metadata=metadata, timeout=10)
    return Started(debate_id, trace_id, started.debate.state)


async def _until(predicate, what: str) -> None:
    deadline = time.monotonic() + SETTLE_SECONDS
    while not predicate():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def _completed(stub: orchestrator_pb2_grpc.OrchestratorServiceStub, debate_id: str) -> None:
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        status = await stub.GetDebateStatus(pb.GetDebateStatusRequest(debate_id=debate_id), timeout=10)
        if status.debate.state == pb.DEBATE_STATE_COMPLETED:
            return
        assert status.debate.state in (pb.DEBATE_STATE_RUNNING, pb.DEBATE_STATE_QUEUED), status.debate
        assert time.monotonic() < deadline, f"{debate_id} did not complete"
        await asyncio.sleep(0.1)


def _turns(receiver: OtlpReceiver, trace_id: str) -> list[ReceivedSpan]:
    return [s for s in receiver.spans if s.name == "turn" and s.trace_id == trace_id]


def _debate_spans(receiver: OtlpReceiver, debate_id: str) -> list[ReceivedSpan]:
    return [s for s in receiver.spans if s.name == "debate" and s.attributes["debate.id"] == debate_id]


async def _first_run(receiver: OtlpReceiver, started: Started) -> str:
    """Waits for a turn of the debate's first run to be exported; the span id of that run's
    `debate` span (every turn's parent)."""
    await _until(lambda: _turns(receiver, started.trace_id), "no turn of the first run was exported")
    parents = {s.parent for s in _turns(receiver, started.trace_id)}
    assert len(parents) == 1, parents
    return parents.pop()


async def _resumed_run(receiver: OtlpReceiver, debate_id: str) -> ReceivedSpan:
    """The resumed run's `debate` span, once its run has ended and it was exported."""
    await _until(
        lambda: any(s.attributes["debate.resumed"] for s in _debate_spans(receiver, debate_id)),
        "no resumed `debate` span was exported (did the debate end before the kill?)",
    )
    (resumed,) = [s for s in _debate_spans(receiver, debate_id) if s.attributes["debate.resumed"]]
    return resumed


def _assert_links_to_first_run(receiver: OtlpReceiver, resumed: ReceivedSpan, started: Started, first: str) -> None:
    assert resumed.linked == [(started.trace_id, first)]  # the first run's `debate` span, in the caller's trace
    assert resumed.trace_id != started.trace_id and resumed.parent == ""  # a new trace, of which it is the root
    # The first run's `debate` span died with its process: what was exported of it is its children.
    assert not [s for s in receiver.spans if s.span_id == first]
    assert {s.parent for s in _turns(receiver, started.trace_id)} == {first}
    # The resumed run's turns are the resumed span's children.
    assert _turns(receiver, resumed.trace_id)
    assert {s.parent for s in _turns(receiver, resumed.trace_id)} == {resumed.span_id}


@pytest.fixture(scope="module")
def receiver():
    with OtlpReceiver() as receiver:
        yield receiver


def _suite(receiver: OtlpReceiver, data_dir, **kwargs) -> KillableSuite:
    suite = KillableSuite(data_dir, {**ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}, **kwargs)
    for name, spec in suite.specs.items():
        if name.startswith("orchestrator"):
            spec.env["OTEL_SERVICE_NAME"] = name  # which replica ran a span
    return suite


async def test_a_debate_resumed_after_a_sigkill_links_to_its_first_run_sqlite(receiver, tmp_path):
    suite = _suite(receiver, tmp_path)
    try:
        await asyncio.gather(*(suite.start(name) for name in suite.specs))
        async with grpc.aio.insecure_channel(suite.address("orchestrator")) as channel:
            started = await _start(orchestrator_pb2_grpc.OrchestratorServiceStub(channel))
        assert started.state == pb.DEBATE_STATE_RUNNING
        first = await _first_run(receiver, started)
        await suite.kill("orchestrator")
        await suite.start("orchestrator")
        async with grpc.aio.insecure_channel(suite.address("orchestrator")) as channel:
            await _completed(orchestrator_pb2_grpc.OrchestratorServiceStub(channel), started.debate_id)
        resumed = await _resumed_run(receiver, started.debate_id)
    finally:
        await suite.stop_all()
    _assert_links_to_first_run(receiver, resumed, started, first)
    (start,) = [s for s in receiver.spans if s.name == START and s.trace_id == started.trace_id]
    assert start.service == "orchestrator"


@dataclass
class Replicas:
    receiver: OtlpReceiver
    taken_over: Started  # run by orchestrator-1, which was SIGKILLed; orchestrator-2 took it over
    first: str  # the span id of its first run's `debate` span
    resumed: ReceivedSpan  # its resumed run's `debate` span
    queued: Started  # queued by orchestrator-1 (full), claimed and run by orchestrator-2


@pytest.fixture(scope="module")
def replicas(receiver, postgres_server, tmp_path_factory) -> Replicas:
    """Two orchestrators on one PostgreSQL database, orchestrator-1 with one running slot. It runs
    debate A; debate B, started on it too, is queued, and orchestrator-2 claims it. Then
    orchestrator-1 is SIGKILLed once a turn of A was exported, and orchestrator-2 takes A over.
    Both debates complete. Run once (in its own event loop) for the two tests that read it."""
    url = postgres_server.create_database()
    try:
        return asyncio.run(_replicas(receiver, url, tmp_path_factory.mktemp("replicas")))
    finally:
        postgres_server.drop_database(url.rsplit("/", 1)[1])


async def _replicas(receiver: OtlpReceiver, url: str, data_dir) -> Replicas:
    suite = _suite(receiver, data_dir, database_url=url, replicas=2)
    suite.specs["orchestrator-1"].env["MAX_RUNNING_DEBATES"] = "1"
    try:
        # One judge and one accounting serve both (the others' addresses fail their health checks).
        await asyncio.gather(
            *(suite.start(name) for name in ("accounting-1", "judge-1", "orchestrator-1", "orchestrator-2"))
        )
        async with (
            grpc.aio.insecure_channel(suite.address("orchestrator-1")) as one,
            grpc.aio.insecure_channel(suite.address("orchestrator-2")) as two,
        ):
            stub = orchestrator_pb2_grpc.OrchestratorServiceStub(one)
            a = await _start(stub)
            b = await _start(stub)
            assert (a.state, b.state) == (pb.DEBATE_STATE_RUNNING, pb.DEBATE_STATE_QUEUED)
            first = await _first_run(receiver, a)
            await suite.kill("orchestrator-1")
            other = orchestrator_pb2_grpc.OrchestratorServiceStub(two)
            for debate_id in (a.debate_id, b.debate_id):
                await _completed(other, debate_id)
        resumed = await _resumed_run(receiver, a.debate_id)
        await _until(lambda: _debate_spans(receiver, b.debate_id), "the queued debate's span was never exported")
    finally:
        await suite.stop_all()
    return Replicas(receiver, a, first, resumed, b)


def test_a_debate_taken_over_by_another_replica_links_to_its_first_run_postgresql(replicas):
    r = replicas
    _assert_links_to_first_run(r.receiver, r.resumed, r.taken_over, r.first)
    assert r.resumed.service == "orchestrator-2"
    assert {s.service for s in _turns(r.receiver, r.taken_over.trace_id)} == {"orchestrator-1"}


def test_a_queued_debate_claimed_by_another_replica_continues_start_debates_trace(replicas):
    r = replicas
    (run,) = _debate_spans(r.receiver, r.queued.debate_id)
    (start,) = [s for s in r.receiver.spans if s.name == START and s.trace_id == r.queued.trace_id]
    assert start.service == "orchestrator-1" and run.service == "orchestrator-2"
    assert run.trace_id == start.trace_id == r.queued.trace_id and run.parent == start.span_id
    assert run.attributes["debate.resumed"] is False and run.linked == []
    turns = _turns(r.receiver, r.queued.trace_id)
    assert len(turns) == 2 * ROUNDS and {s.parent for s in turns} == {run.span_id}
