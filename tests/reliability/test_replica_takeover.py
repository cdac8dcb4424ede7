"""Two orchestrator replicas on one PostgreSQL, in this process (tests/reliability/inprocess.py):
replica "a" runs three debates, and

- stops gracefully: it hands its leases over, and replica "b" claims the debates at its next
  heartbeat, long before the leases would have lapsed, resumes them from their last completed
  turn, and they complete (a killed replica's leases lapse instead: the process-level failover
  test, test_replica_failover.py);
- or stalls past its leases (its event loop frozen, SIGSTOP's twin in one process): "b" takes
  them over, and when "a" wakes its writes are refused and it stops them without an ending.

Either way the event log is gap-free from 1 with no repeat, and each completed turn is charged
once in the ledger."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

import grpc
import psycopg
import pytest
from debate.common.v1 import common_pb2
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc

from services.orchestrator.server import build_service
from services.orchestrator.settings import OrchestratorSettings
from tests.reliability.inprocess import InProcessSuite
from tests.support.metrics import scrape, value

LEASE_SECONDS = 1.0
SIM = {"sim_tokens_per_second": 150.0, "sim_first_token_latency": 0.05}
SLOW_SIM = {"sim_tokens_per_second": 40.0, "sim_first_token_latency": 0.05}
SETTLE_SECONDS = 120  # guards a hang only


def _config(rounds: int) -> common_pb2.DebateConfig:
    return common_pb2.DebateConfig(
        topic="Should a replica outlive its owner?",
        participants=[
            common_pb2.Participant(name="Ada", model="sim/debater", persona="an engineer", stance="for"),
            common_pb2.Participant(name="Milo", model="sim/debater", persona="an operator", stance="against"),
        ],
        judge=common_pb2.JudgeConfig(models=["sim/judge"]),
        format=common_pb2.DebateFormat(round_limit=rounds, turn_order=common_pb2.TURN_ORDER_SIMULTANEOUS),
        max_tokens_per_turn=40,
    )


def _replica(
    suite: InProcessSuite,
    url: str,
    replica_id: str,
    loop: asyncio.AbstractEventLoop | None = None,
    sim: dict = SIM,
    lease_seconds: float = LEASE_SECONDS,
    **extra,
):
    settings = OrchestratorSettings(
        port=0,
        data_dir=str(suite.root / replica_id),
        database_url=url,
        replica_id=replica_id,
        lease_seconds=lease_seconds,
        judge_service_addr=suite.addresses["judge"],
        accounting_service_addr=suite.addresses["accounting"],
        **sim,
        **extra,
    )

    async def start():
        service = await build_service(settings)
        await service.start()
        return service

    return asyncio.run_coroutine_threadsafe(start(), loop or suite.loop).result(60)


def _query(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as db:
        return db.execute(sql).fetchall()


def _wait(predicate, what: str) -> None:
    deadline = time.monotonic() + SETTLE_SECONDS
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _suite(tmp_path) -> InProcessSuite:
    """Accounting and judge on the suite's loop; the orchestrators are started by the test."""
    suite = InProcessSuite(tmp_path)
    suite.thread = threading.Thread(target=suite.loop.run_forever, name="replicas", daemon=True)
    suite.thread.start()
    for name in ("accounting", "judge"):
        suite.run(suite._start(name))
    return suite


def _start_debates(address: str, url: str) -> list[str]:
    stub = orchestrator_pb2_grpc.OrchestratorServiceStub(grpc.insecure_channel(address))
    ids = []
    for i in range(3):
        created = stub.CreateDebate(pb.CreateDebateRequest(config=_config(3), request_id=f"r{i}"), timeout=10)
        stub.StartDebate(pb.StartDebateRequest(debate_id=created.debate.debate_id), timeout=10)
        ids.append(created.debate.debate_id)
    _wait(lambda: _query(url, "SELECT count(*) FROM turns")[0][0] >= 2, "no turn completed on a")
    return ids


def _check_completed(address: str, url: str, ledger_path, ids: list[str]) -> None:
    """Every debate COMPLETED, its log gap-free from 1, each of its 6 turns charged once."""
    stub = orchestrator_pb2_grpc.OrchestratorServiceStub(grpc.insecure_channel(address))

    def ended() -> bool:
        states = [stub.GetDebateStatus(pb.GetDebateStatusRequest(debate_id=d), timeout=10) for d in ids]
        return all(s.debate.state == pb.DEBATE_STATE_COMPLETED for s in states)

    _wait(ended, "the debates did not complete")
    for debate_id in ids:
        rows = _query(url, f"SELECT sequence FROM events WHERE debate_id = '{debate_id}' ORDER BY 1")
        assert [s for (s,) in rows] == list(range(1, len(rows) + 1))
        turns = _query(url, f"SELECT round, participant FROM turns WHERE debate_id = '{debate_id}'")
        assert len(turns) == 6
        ledger = sqlite3.connect(str(ledger_path)).execute(
            "SELECT round_number, participant FROM usage WHERE debate_id = ? AND role = 'debater' AND NOT estimated",
            (debate_id,),
        )
        charged = sorted(ledger.fetchall())
        assert charged == sorted(turns), f"{debate_id}: charged {charged}"
    assert _query(url, "SELECT count(*) FROM debate_leases") == [(0,)]  # released with the endings


@pytest.mark.timeout(240)
def test_a_gracefully_stopped_replica_hands_its_debates_over_before_their_leases_lapse(postgres_url, tmp_path):
    suite = _suite(tmp_path)
    a = _replica(suite, postgres_url, "a", lease_seconds=60)
    b = None
    try:
        ids = _start_debates(a.address, postgres_url)
        b = _replica(suite, postgres_url, "b", lease_seconds=60)  # a holds every lease: b takes nothing
        assert b.engine.lifecycle.runs == {}

        lapse = min(row[0] for row in _query(postgres_url, "SELECT expires_at FROM debate_leases"))
        suite.run(a.stop(grace=0))  # a stops generating and gives its leases up with its last commit
        assert _query(postgres_url, "SELECT count(*) FROM debate_leases") == [(0,)]
        _wait(lambda: set(b.engine.lifecycle.runs) == set(ids), "b did not take the debates over")
        taken_at = _query(postgres_url, "SELECT clock_timestamp()")[0][0]
        assert taken_at < lapse, "taken over only once the leases lapsed: they were not handed over"
        assert sorted(_query(postgres_url, "SELECT owner, epoch FROM debate_leases")) == [("b", 1)] * 3
        _check_completed(b.address, postgres_url, tmp_path / "accounting" / "ledger.sqlite3", ids)
    finally:
        if b is not None:
            suite.run(b.stop(grace=0))
        suite.stop()


@pytest.mark.timeout(240)
def test_a_stalled_replica_is_fenced_when_it_wakes_and_nothing_is_doubled(postgres_url, tmp_path):
    suite = _suite(tmp_path)
    stalled_loop = asyncio.new_event_loop()
    stalled_thread = threading.Thread(target=stalled_loop.run_forever, name="replica-a", daemon=True)
    stalled_thread.start()
    a = _replica(suite, postgres_url, "a", stalled_loop, metrics_port=0)
    b = _replica(suite, postgres_url, "b", metrics_port=0)
    try:
        ids = _start_debates(a.address, postgres_url)
        woke = threading.Event()

        def stall() -> None:  # a's loop stops dead past its leases, with its turns in flight
            time.sleep(3 * LEASE_SECONDS)
            woke.set()

        stalled_loop.call_soon_threadsafe(stall)
        _wait(lambda: set(b.engine.lifecycle.runs) == set(ids), "b did not take the debates over")
        _wait(woke.is_set, "a did not wake")
        _wait(lambda: not a.engine.lifecycle.runs, "a did not stop the debates it lost")
        assert a.engine.lifecycle.store.lost >= set(ids)
        # Their metrics, scraped: b took the three debates over, a's store fenced all three.
        assert value(scrape(b.metrics_server.url), "debate_lease_takeovers_total") == 3
        assert value(scrape(a.metrics_server.url), "debate_fencing_refusals_total") == 3
        _check_completed(b.address, postgres_url, tmp_path / "accounting" / "ledger.sqlite3", ids)
    finally:
        asyncio.run_coroutine_threadsafe(a.stop(grace=0), stalled_loop).result(30)
        stalled_loop.call_soon_threadsafe(stalled_loop.stop)
        suite.run(b.stop(grace=0))
        suite.stop()


@pytest.mark.timeout(240)
def test_a_replica_whose_heartbeat_died_records_no_usage_after_its_leases_are_taken(postgres_url, tmp_path):
    """Its debates go on generating while their leases lapse and "b" takes them: the first commit
    after that refuses their writes, and a turn that ends then is not recorded (the taker runs it
    again as the next attempt, charged once)."""
    suite = _suite(tmp_path)
    a = _replica(suite, postgres_url, "a", sim=SLOW_SIM)  # turns of about a second: some in flight at the takeover
    b = _replica(suite, postgres_url, "b")
    try:
        ids = _start_debates(a.address, postgres_url)
        suite.run(_stop_heartbeat(a))
        _wait(lambda: set(b.engine.lifecycle.runs) == set(ids), "b did not take the debates over")
        _wait(lambda: not a.engine.lifecycle.runs, "a did not stop the debates it lost")
        assert a.engine.lifecycle.store.lost >= set(ids)
        _check_completed(b.address, postgres_url, tmp_path / "accounting" / "ledger.sqlite3", ids)
    finally:
        suite.run(a.stop(grace=0))
        suite.run(b.stop(grace=0))
        suite.stop()


@pytest.mark.timeout(240)
def test_a_cancel_sent_to_the_replica_that_lost_the_debate_reaches_its_new_owner(postgres_url, tmp_path):
    """The caller's CancelDebate lands on the stale replica: whether it has stopped the debate it
    lost already (it forwards the cancel, which its refusal of the lost debate's writes must not
    swallow) or still runs it in its own view (its own ending is refused by the fence, and then
    it forwards the cancel), the debate ends CANCELLED on its new owner rather than running on
    to COMPLETED."""
    suite = _suite(tmp_path)
    a = _replica(suite, postgres_url, "a", sim=SLOW_SIM)
    b = _replica(suite, postgres_url, "b", sim=SLOW_SIM)
    try:
        ids = _start_debates(a.address, postgres_url)
        suite.run(_stop_heartbeat(a))
        _wait(lambda: set(b.engine.lifecycle.runs) == set(ids), "b did not take the debates over")
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(grpc.insecure_channel(a.address))
        stub.CancelDebate(pb.CancelDebateRequest(debate_id=ids[0], reason="enough"), timeout=30)

        def state(debate_id: str) -> int:
            return _query(postgres_url, f"SELECT state FROM debates WHERE debate_id = '{debate_id}'")[0][0]

        _wait(lambda: state(ids[0]) != pb.DEBATE_STATE_RUNNING, "the cancelled debate did not end")
        assert state(ids[0]) == pb.DEBATE_STATE_CANCELLED
        row = _query(postgres_url, f"SELECT end_reason FROM debates WHERE debate_id = '{ids[0]}'")[0][0]
        assert "enough" in row
        _check_completed(b.address, postgres_url, tmp_path / "accounting" / "ledger.sqlite3", ids[1:])
    finally:
        suite.run(a.stop(grace=0))
        suite.run(b.stop(grace=0))
        suite.stop()


async def _stop_heartbeat(service) -> None:
    heartbeat = service.engine.lifecycle._heartbeat
    heartbeat.cancel()
    await asyncio.wait({heartbeat})
