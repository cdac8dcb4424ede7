"""Failover of real processes through Envoy (issue 15): the suite as `debate-engine up --replicas
2` runs it (tests/reliability/processes.py), two orchestrators, two judges and two accountings
on one PostgreSQL database, Envoy in front of the orchestrators with gRPC health checks.

- SIGKILL the orchestrator that owns three running debates: the other takes them over within
  LEASE_SECONDS + 1 s and they complete; a subscriber streaming through Envoy sees its stream
  fail, resumes with after_sequence and gets every event exactly once; every turn is charged
  once and every event log is gap-free.
- SIGSTOP the owner past its leases, let the other take over, SIGCONT: the stale replica finds
  its leases taken and stops its runs (its writes refused); nothing doubled, no sequence reused.
- Kill a judge and an accounting in the middle of debates: the orchestrators' calls go to the
  surviving replicas (client-side round_robin with health checks) and nothing is charged twice.

The accounting replicas' own guarantees (one row for the same RecordUsage sent to both at once,
no budget overspent by reservations on both) are checked on real processes in
test_accounting_replicas_as_processes below, with the cases of
tests/integration/test_accounting_replicas.py.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import grpc
import pytest
from debate.accounting.v1 import accounting_pb2 as apb
from debate.accounting.v1 import accounting_pb2_grpc
from debate.common.v1 import common_pb2
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc

from services.client.follow import events_of, should_resume
from services.common.channels import open_channel
from services.common.postgres import IDLE_IN_TRANSACTION_TIMEOUT_S
from tests.integration.test_accounting_replicas import TURN_COST, record, reserve, set_cap
from tests.reliability.processes import KillableSuite

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

LEASE_SECONDS = 2.0
ROUNDS = 6
# Turns of about 2 s (40 tokens at 20 a second): a debate runs about 15 s, well past the start of
# the second replica and a takeover.
ENV = {
    "LEASE_SECONDS": str(LEASE_SECONDS),
    "SIM_TOKENS_PER_SECOND": "20",
    "SIM_FIRST_TOKEN_LATENCY": "0.05",
    "GATEWAY_LOG_LEVEL": "error",
}
SETTLE_SECONDS = 150.0  # guards a hang only
BACKEND = ("accounting-1", "accounting-2", "judge-1", "judge-2")


def _config() -> common_pb2.DebateConfig:
    return common_pb2.DebateConfig(
        topic="Should a debate outlive the process that runs it?",
        participants=[
            common_pb2.Participant(name="Ada", model="sim/debater", persona="an engineer", stance="for"),
            common_pb2.Participant(name="Milo", model="sim/debater", persona="an operator", stance="against"),
        ],
        judge=common_pb2.JudgeConfig(models=["sim/judge"]),
        format=common_pb2.DebateFormat(round_limit=ROUNDS, turn_order=common_pb2.TURN_ORDER_SIMULTANEOUS),
        max_tokens_per_turn=40,
    )


async def _wait(predicate, what: str) -> None:
    deadline = time.monotonic() + SETTLE_SECONDS
    while not await predicate():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def _start_debates(stub, suite: KillableSuite, count: int = 3) -> list[str]:
    ids = []
    for i in range(count):
        created = await stub.CreateDebate(pb.CreateDebateRequest(config=_config(), request_id=f"r{i}"), timeout=10)
        await stub.StartDebate(pb.StartDebateRequest(debate_id=created.debate.debate_id), timeout=10)
        ids.append(created.debate.debate_id)

    async def turns_done() -> bool:
        return suite.query("turns", "SELECT count(*) FROM turns")[0][0] >= 2

    await _wait(turns_done, "no turn completed")
    return ids


def _owners(suite: KillableSuite) -> dict[str, str]:
    return dict(suite.query("debate_leases", "SELECT debate_id, owner FROM debate_leases"))


def _database_now(suite: KillableSuite) -> float:
    return suite.query("debates", "SELECT extract(epoch FROM clock_timestamp())::float8")[0][0]


async def _taken_over(suite: KillableSuite, ids: list[str], taker: str) -> float:
    """Waits until `taker` holds every lease of `ids`; the database's clock then (epoch seconds)."""
    replica = suite.replica_id(taker)

    async def taken() -> bool:
        owners = _owners(suite)
        return all(owners.get(debate_id) == replica for debate_id in ids)

    try:
        await _wait(taken, f"{taker} did not take the debates over")
    except AssertionError:
        activity = suite.query(
            "debates",
            "SELECT pid, state, wait_event_type, wait_event, left(query, 150), now() - state_change"
            " FROM pg_stat_activity WHERE datname = current_database()",
        )
        raise AssertionError(f"{taker} did not take over; sessions: {activity}; leases: {_owners(suite)}") from None
    return _database_now(suite)


async def _running(suite: KillableSuite, ids: list[str]) -> None:
    """Asserts that every debate is still RUNNING (so that the fault to come meets them running)."""
    async with grpc.aio.insecure_channel(suite.address("orchestrator-1")) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        for debate_id in ids:
            status = await stub.GetDebateStatus(pb.GetDebateStatusRequest(debate_id=debate_id), timeout=10)
            assert status.debate.state == pb.DEBATE_STATE_RUNNING, f"{debate_id} ended before the fault"


async def _completed(stub, ids: list[str]) -> None:
    async def ended() -> bool:
        states = [(await stub.GetDebateStatus(pb.GetDebateStatusRequest(debate_id=d), timeout=10)) for d in ids]
        return all(s.debate.state == pb.DEBATE_STATE_COMPLETED for s in states)

    await _wait(ended, "the debates did not complete")


def _canonical(data: bytes) -> bytes:
    """A serialised DebateEvent in its deterministic form (map entries ordered by key), so that
    two serialisations of the same event compare equal whichever process wrote them."""
    return pb.DebateEvent.FromString(data).SerializeToString(deterministic=True)


def _check_logs_and_charges(suite: KillableSuite, ids: list[str]) -> None:
    """Every log gap-free from 1 with one ending, every turn completed once in it and in the turns
    table, every turn charged once in the ledger, every lease released."""
    for debate_id in ids:
        rows = suite.query("events", "SELECT sequence, event FROM events WHERE debate_id = ? ORDER BY 1", (debate_id,))
        assert [s for s, _ in rows] == list(range(1, len(rows) + 1)), f"{debate_id}: a gap in the log"
        events = [pb.DebateEvent.FromString(bytes(data)) for _, data in rows]
        assert [e.sequence for e in events] == [s for s, _ in rows]
        completed = sorted(
            (e.turn_completed.turn.round_number, e.turn_completed.turn.participant)
            for e in events
            if e.HasField("turn_completed")
        )
        turns = sorted(suite.query("turns", "SELECT round, participant FROM turns WHERE debate_id = ?", (debate_id,)))
        assert len(turns) == 2 * ROUNDS and completed == turns, f"{debate_id}: turns {completed} against {turns}"
        assert sum(e.HasField("debate_completed") for e in events) == 1 and events[-1].HasField("debate_completed")
        assert sum(e.HasField("verdict_rendered") for e in events) == 1
        charged = sorted(
            suite.query(
                "usage",
                "SELECT round_number, participant FROM usage"
                " WHERE debate_id = ? AND role = 'debater' AND NOT estimated",
                (debate_id,),
            )
        )
        assert charged == turns, f"{debate_id}: charged {charged}"
    assert suite.query("debate_leases", "SELECT count(*) FROM debate_leases") == [(0,)]


async def _watch(
    stub, debate_id: str, received: list[pb.DebateEvent] | None = None, *, resume_on=None
) -> tuple[list[pb.DebateEvent], list[tuple[grpc.StatusCode, str]]]:
    """A subscriber that resumes after the last event it got whenever its stream fails (on the
    stub `resume_on` when given: its replica died), until the debate's ending: every event it
    received (heartbeats left out; appended to `received` as they come), and the failures it saw."""
    received = [] if received is None else received
    failures: list[tuple[grpc.StatusCode, str]] = []
    after = 0
    while True:
        try:
            request = pb.StreamDebateEventsRequest(debate_id=debate_id, after_sequence=after)
            async for response in stub.StreamDebateEvents(request):
                for event in events_of(response):
                    if event.HasField("heartbeat"):
                        continue
                    received.append(event)
                    after = event.sequence
                    if event.HasField("debate_completed") or event.HasField("debate_failed"):
                        return received, failures
        except grpc.aio.AioRpcError as error:
            assert should_resume(error), f"the client would give up on {error.code()}: {error.details()}"
            failures.append((error.code(), error.details() or ""))
            stub = resume_on or stub
            await asyncio.sleep(0.2)


@pytest.fixture
async def replicas(postgres_url, tmp_path):
    suite = KillableSuite(tmp_path, ENV, database_url=postgres_url, replicas=2, gateway=True, log_level="WARNING")
    try:
        yield suite
    finally:
        await suite.stop_all()


async def test_a_killed_owners_debates_complete_on_the_other_replica_and_a_subscriber_misses_nothing(replicas):
    suite = replicas
    for name in (*BACKEND, "orchestrator-1", "envoy"):
        await suite.start(name)
    async with grpc.aio.insecure_channel(suite.gateway_address) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        ids = await _start_debates(stub, suite)  # all three owned by orchestrator-1, the only one yet
        watcher = asyncio.create_task(_watch(stub, ids[0]))  # its stream runs on orchestrator-1
        await suite.start("orchestrator-2")  # it takes nothing: every lease is held
        assert set(_owners(suite).values()) == {suite.replica_id("orchestrator-1")}
        await _running(suite, ids)

        await suite.kill("orchestrator-1")
        killed_at = _database_now(suite)
        taken_at = await _taken_over(suite, ids, "orchestrator-2")
        assert taken_at - killed_at <= LEASE_SECONDS + 1.0, f"taken over {taken_at - killed_at:.2f} s after the kill"

        await _completed(stub, ids)  # through Envoy, which now has only orchestrator-2
        received, failures = await asyncio.wait_for(watcher, SETTLE_SECONDS)
    # Through Envoy the dead replica's stream is reset (INTERNAL, RST_STREAM): the client resumes on it.
    assert failures, "the subscriber's stream never failed"
    logged = suite.query("events", "SELECT count(*) FROM events WHERE debate_id = ?", (ids[0],))[0][0]
    assert [e.sequence for e in received] == list(range(1, logged + 1)), "the subscriber missed or repeated events"
    _check_logs_and_charges(suite, ids)


async def test_a_stalled_owner_is_fenced_when_it_wakes_and_nothing_is_doubled(replicas):
    suite = replicas
    for name in (*BACKEND, "orchestrator-1", "envoy"):
        await suite.start(name)
    async with grpc.aio.insecure_channel(suite.gateway_address) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        ids = await _start_debates(stub, suite)
        await suite.start("orchestrator-2")
        await _running(suite, ids)

        suite.pause("orchestrator-1")  # SIGSTOP with turns in flight
        stopped_at = _database_now(suite)
        taken_at = await _taken_over(suite, ids, "orchestrator-2")
        # Stopped inside a transaction, it holds row locks until the server ends its session.
        assert taken_at - stopped_at <= max(LEASE_SECONDS, IDLE_IN_TRANSACTION_TIMEOUT_S) + 1.0
        await asyncio.sleep(LEASE_SECONDS)  # orchestrator-2 writes on while orchestrator-1 sleeps
        suite.resume("orchestrator-1")

        async def stale_stopped() -> bool:  # it finds every lease taken and stops those runs
            lines = [line for line in suite.output if line.startswith("[orchestrator-1]")]
            return all(any(f"debate {d}: its lease was taken" in line for line in lines) for d in ids)

        await _wait(stale_stopped, "orchestrator-1 did not stop the debates it lost")
        await _completed(stub, ids)
    assert suite.processes["orchestrator-1"].returncode is None, "the stale replica lives on, fenced"
    _check_logs_and_charges(suite, ids)


async def test_a_subscriber_on_the_replica_that_does_not_own_the_debate_streams_live_through_a_takeover(replicas):
    """The final behaviour (issue 15, "events across replicas"): subscribers on either replica get
    the debate's events live; the owner dies, and both get every event exactly once, with no
    sequence number reused when the non-owner, which served the subscriber, takes the debate over."""
    suite = replicas
    await suite.start_all()
    async with (
        grpc.aio.insecure_channel(suite.address("orchestrator-1")) as owner,
        grpc.aio.insecure_channel(suite.address("orchestrator-2")) as other,
    ):
        owner_stub = orchestrator_pb2_grpc.OrchestratorServiceStub(owner)
        other_stub = orchestrator_pb2_grpc.OrchestratorServiceStub(other)
        ids = await _start_debates(owner_stub, suite, count=1)
        seen_on_other: list[pb.DebateEvent] = []
        on_other = asyncio.create_task(_watch(other_stub, ids[0], seen_on_other))
        on_owner = asyncio.create_task(_watch(owner_stub, ids[0], resume_on=other_stub))
        await asyncio.sleep(0.5)
        replayed = len(seen_on_other)  # what was stored when it subscribed

        async def live_on_other() -> bool:  # the stream on the non-owner moves while the owner writes
            return len(seen_on_other) > replayed + 20

        try:
            try:
                await asyncio.wait_for(_wait(live_on_other, "no live event"), 10)
            except TimeoutError:
                raise AssertionError("the subscriber on the non-owner got no live event in 10 s") from None
            await suite.kill("orchestrator-1")
            await _taken_over(suite, ids, "orchestrator-2")
            await _completed(other_stub, ids)
            received = [await asyncio.wait_for(task, SETTLE_SECONDS) for task in (on_other, on_owner)]
        finally:
            for task in (on_other, on_owner):
                task.cancel()
            await asyncio.gather(on_other, on_owner, return_exceptions=True)
    logged = suite.query("events", "SELECT count(*) FROM events WHERE debate_id = ?", (ids[0],))[0][0]
    for events, _ in received:
        assert [e.sequence for e in events] == list(range(1, logged + 1))
    # What the subscriber on the non-owner saw live is what the log holds (nothing written over:
    # an event written again has another `time`, if nothing else). Compared as messages, in
    # their deterministic form: protobuf does not define the order of a map's entries on the
    # wire (upb writes them in its hash table's order, seeded per process), so this process's
    # serialisation of an event with a map (a JudgeCall's `totals` in round_assessed,
    # verdict_rendered, debate_completed) may order them otherwise than the stored bytes do.
    stored = suite.query("events", "SELECT event FROM events WHERE debate_id = ? ORDER BY sequence", (ids[0],))
    seen = [e.SerializeToString(deterministic=True) for e in received[0][0]]
    assert seen == [_canonical(bytes(data)) for (data,) in stored]
    _check_logs_and_charges(suite, ids)


async def test_debates_survive_a_killed_judge_and_accounting_and_are_charged_once(replicas):
    suite = replicas
    await suite.start_all()
    async with grpc.aio.insecure_channel(suite.gateway_address) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        ids = await _start_debates(stub, suite, count=4)  # spread over both orchestrators by Envoy
        await suite.kill("judge-1")
        await suite.kill("accounting-2")
        await _completed(stub, ids)
    _check_logs_and_charges(suite, ids)


async def test_accounting_replicas_as_processes_record_once_and_never_overspend(replicas):
    """The same RecordUsage sent to both accounting processes at the same moment is one row; 20
    reservations of one debate, half on each process, all at once, never pass its cap."""
    suite = replicas
    for name in ("accounting-1", "accounting-2"):
        await suite.start(name)
    key = suite.config.service_api_key
    channels = [open_channel(suite.address(name), service_key=key) for name in ("accounting-1", "accounting-2")]
    try:
        stubs = [accounting_pb2_grpc.AccountingServiceStub(c) for c in channels]
        ids = [f"debates/d1/rounds/1/turns/pro/attempts/{i}" for i in range(50)]
        replies = await asyncio.gather(*(s.RecordUsage(record(i, "d1"), timeout=30) for i in ids for s in stubs))
        for n, request_id in enumerate(ids):
            pair = replies[2 * n : 2 * n + 2]
            assert sorted(r.duplicate for r in pair) == [False, True], request_id
            assert pair[0].record == pair[1].record
        assert suite.query("usage", "SELECT count(*) FROM usage") == [(50,)]

        debates = [f"cap{n}" for n in range(5)]
        for debate_id in debates:
            await set_cap(stubs[0], debate_id, "0.1")
        calls = [(f"{d}/r{i}", d, stubs[i % 2]) for d in debates for i in range(20)]
        granted = await asyncio.gather(*(s.ReserveBudget(reserve(r, d), timeout=30) for r, d, s in calls))
        for debate_id in debates:
            count = sum(reply.granted for (_, d, _), reply in zip(calls, granted, strict=True) if d == debate_id)
            assert count == 9, debate_id  # 9 * 0.0105 <= 0.1 < 10 * 0.0105
            cost = (await stubs[1].GetDebateCost(apb.GetDebateCostRequest(debate_id=debate_id), timeout=10)).cost
            assert Decimal(cost.budget.reserved.amount) == 9 * TURN_COST
    finally:
        for channel in channels:
            await channel.close()
