"""Leases and fencing of the orchestrator's store on PostgreSQL: two stores on one database play
two replicas. A lease is claimed by one replica only (SKIP LOCKED), taken over once it lapses
(its epoch raised), and the stale owner's writes are refused at its next commit: nothing of
it lands after the takeover, nothing is doubled, no sequence is reused. SQLite holds every
lease trivially."""

from __future__ import annotations

import asyncio

import psycopg
from debate.orchestrator.v1 import orchestrator_pb2 as pb

from services.orchestrator.events import EventHub
from services.orchestrator.store_postgres import EVENTS_CHANNEL, PostgresStore
from services.orchestrator.transport import FRAMING
from tests.support.orchestrator_stores import OrchestratorBackend
from tests.unit.test_orchestrator_store import debate, events, turn

S = pb.DebateState


def _replica(backend: OrchestratorBackend, owner: str, lease_seconds: float) -> PostgresStore:
    store = PostgresStore(backend.url, owner=owner, lease_seconds=lease_seconds)
    backend.opened.append(store)
    return store


def _leases(backend: OrchestratorBackend) -> list[tuple[str, str, int]]:
    return backend.query("SELECT debate_id, owner, epoch FROM debate_leases ORDER BY debate_id")


def test_a_runnable_debate_is_claimed_by_one_replica_and_a_live_lease_is_not_taken(postgres_url, tmp_path):
    backend = OrchestratorBackend("postgresql", tmp_path, postgres_url)
    a, b = _replica(backend, "a", 60), _replica(backend, "b", 60)
    a.insert_debate(debate("run", state=S.DEBATE_STATE_RUNNING))
    a.insert_debate(debate("wait", create_ns=2, state=S.DEBATE_STATE_QUEUED))
    a.insert_debate(debate("done", create_ns=3, state=S.DEBATE_STATE_COMPLETED))
    a.commit()
    assert [row.debate_id for row in b.claim_runnable()] == ["run", "wait"]  # not committed yet
    assert a.claim_runnable() == []  # b's claim holds the debates' rows: skipped, not waited for
    b.commit()
    assert a.claim_runnable() == [] and not a.claim("run")  # b's leases are live
    a.commit()
    assert _leases(backend) == [("run", "b", 1), ("wait", "b", 1)]


def test_a_stale_owner_is_fenced_after_a_takeover_and_nothing_is_doubled(postgres_url, tmp_path):
    backend = OrchestratorBackend("postgresql", tmp_path, postgres_url)
    stale = _replica(backend, "a", 0)  # its leases lapse at once: it stalled (SIGSTOP) past them
    taker = _replica(backend, "b", 60)
    stale.insert_debate(debate("d1", state=S.DEBATE_STATE_RUNNING))
    stale.insert_debate(debate("d2", create_ns=2, state=S.DEBATE_STATE_RUNNING))
    assert stale.claim("d1") and stale.claim("d2")
    stale.add_events(events("d1", 1, 3, "/a"))
    stale.commit()
    assert _leases(backend) == [("d1", "a", 1), ("d2", "a", 1)]

    taken = taker.claim_runnable()
    assert [row.debate_id for row in taken] == ["d1", "d2"] and taken[0].last_sequence == 3
    taker.add_events(events("d1", 4, 5, "/b"))
    taker.update_debate("d1", current_round=2)
    taker.release("d2")  # d2 ends on the taker and gives its lease back
    taker.update_debate("d2", state=S.DEBATE_STATE_COMPLETED)
    taker.commit()

    # The stale owner wakes and writes what it had under way, d1's and d2's, and a third debate it
    # still holds: only the third lands, the others are refused and dropped, not retried.
    assert stale.claim("d3")
    stale.insert_debate(debate("d3", create_ns=3, state=S.DEBATE_STATE_RUNNING))
    stale.add_events(events("d1", 4, 6, "/a") + events("d3", 1, 2, "/a"))
    stale.update_debate("d1", current_round=9)
    stale.put_turn("d1", turn(1, "ann", "stale"), recorded=True)
    stale.update_debate("d2", current_round=7)
    stale.commit()
    assert stale.lost == {"d1", "d2"}
    stale.update_debate("d1", current_round=10)  # refused from now on, without a fence
    stale.add_events(events("d1", 7, 7, "/a"))
    stale.commit()

    assert backend.query("SELECT sequence, event FROM events WHERE debate_id = 'd1' ORDER BY sequence") == [
        (s, f"d1/{s}{tag}".encode()) for s, tag in [(1, "/a"), (2, "/a"), (3, "/a"), (4, "/b"), (5, "/b")]
    ]
    assert backend.query("SELECT debate_id, current_round FROM debates ORDER BY debate_id") == [
        ("d1", 2),
        ("d2", 0),
        ("d3", 0),
    ]
    assert backend.count("turns") == 0
    assert backend.count("events", "debate_id = 'd3'") == 2
    assert _leases(backend) == [("d1", "b", 2), ("d3", "a", 1)]


def test_a_renewal_keeps_a_lease_and_finds_one_taken(postgres_url, tmp_path):
    backend = OrchestratorBackend("postgresql", tmp_path, postgres_url)
    a, b = _replica(backend, "a", 0), _replica(backend, "b", 60)
    a.insert_debate(debate("d1", state=S.DEBATE_STATE_RUNNING))
    assert a.claim("d1")
    a.renew()
    a.commit()
    assert a.lost == set()
    assert [row.debate_id for row in b.claim_runnable()] == ["d1"]  # lapsed (0 s), taken
    b.commit()
    a.renew()
    a.commit()
    assert a.lost == {"d1"}
    assert _leases(backend) == [("d1", "b", 2)]


def test_a_replica_that_lost_a_debate_still_forwards_a_cancel_for_it(postgres_url, tmp_path):
    """A CancelDebate that reaches the replica which lost the debate is forwarded to the new owner:
    the refusal of the stale owner's writes does not swallow the caller's request."""
    backend = OrchestratorBackend("postgresql", tmp_path, postgres_url)
    a, b = _replica(backend, "a", 0), _replica(backend, "b", 60)
    a.insert_debate(debate("d1", state=S.DEBATE_STATE_RUNNING))
    assert a.claim("d1")
    a.commit()
    assert [row.debate_id for row in b.claim_runnable()] == ["d1"]
    b.commit()
    a.update_debate("d1", current_round=5)  # the stale run's write: refused
    a.request_cancel("d1", "stop it")  # the caller's: sent
    a.commit()
    assert a.lost == {"d1"}
    assert backend.query("SELECT current_round, cancel_requested FROM debates") == [(0, "stop it")]
    b.renew()
    assert b.cancel_requests == {"d1": "stop it"}


def test_a_lost_debate_is_forgotten_after_lost_kept_leases(postgres_url, tmp_path, monkeypatch):
    """`lost` does not grow with every takeover: a debate leaves it LOST_KEPT_LEASES lease periods
    after it was lost (its writes are refused until then), or at once when claimed again."""
    import services.orchestrator.store_postgres as store_postgres

    backend = OrchestratorBackend("postgresql", tmp_path, postgres_url)
    a, b = _replica(backend, "a", 0.01), _replica(backend, "b", 60)
    for n, debate_id in enumerate(("d1", "d2"), 1):
        a.insert_debate(debate(debate_id, create_ns=n, state=S.DEBATE_STATE_RUNNING))
        assert a.claim(debate_id)
    a.commit()
    asyncio.run(asyncio.sleep(0.02))  # a's leases lapse
    assert [row.debate_id for row in b.claim_runnable()] == ["d1", "d2"]
    b.commit()
    a.renew()
    a.commit()
    assert a.lost == {"d1", "d2"}
    now = [1000.0]
    monkeypatch.setattr(store_postgres.time, "monotonic", lambda: now[0])
    a._lost_at = dict.fromkeys(a.lost, 1000.0)
    now[0] += store_postgres.LOST_KEPT_LEASES * 0.01 * 0.9
    a.renew()
    assert a.lost == {"d1", "d2"}  # not yet
    now[0] += store_postgres.LOST_KEPT_LEASES * 0.01 * 0.2
    a.renew()
    assert a.lost == set() and a._lost_at == {}


def test_sqlite_holds_every_lease(tmp_path):
    store = OrchestratorBackend("sqlite", tmp_path).open()
    store.insert_debate(debate("run", state=S.DEBATE_STATE_RUNNING))
    store.insert_debate(debate("done", create_ns=2, state=S.DEBATE_STATE_COMPLETED))
    assert not store.shared and store.claim("run")
    store.renew()
    assert [row.debate_id for row in store.claim_runnable()] == ["run"] and store.lost == set()


async def test_the_hub_never_announces_refused_events_and_its_subscribers_follow_the_new_owner(postgres_url, tmp_path):
    backend = OrchestratorBackend("postgresql", tmp_path, postgres_url)
    stale, taker = _replica(backend, "a", 0), _replica(backend, "b", 60)
    stale.insert_debate(debate("d1", state=S.DEBATE_STATE_RUNNING))
    assert stale.claim("d1")
    hub = EventHub(stale, framing=FRAMING)
    stale.listen(hub.notified, lambda debate_id, reason: None)
    hub.open_log("d1", 0).active = True
    hub.emit("d1", round_started=pb.RoundStarted(round_number=1))
    hub.commit()
    reader = hub.subscribe("d1", 0, terminal=False, last_sequence=0)
    first = pb.StreamDebateEventsResponse.FromString(await anext(reader)).event
    assert first.sequence == 1 and first.HasField("round_started")

    taken = taker.claim_runnable()
    assert [row.debate_id for row in taken] == ["d1"] and taken[0].last_sequence == 1
    taker.commit()
    hub.emit("d1", token_delta=pb.TokenDelta(round_number=1, participant="ann", text="stale", attempt=1))
    hub.commit()  # refused by the fence: never announced; the log follows the store from now on
    assert stale.lost == {"d1"} and hub.get("d1").following
    assert hub.emit("d1", round_started=pb.RoundStarted(round_number=9)) == 1  # a follower never writes

    taker.add_events(
        [(d, s, pb.DebateEvent(sequence=s, debate_id=d).SerializeToString()) for d, s, _ in events("d1", 2, 3)]
    )
    taker.commit()  # its NOTIFY wakes the stale replica's listener, whose hub reads 2-3 once
    second = pb.StreamDebateEventsResponse.FromString(await asyncio.wait_for(anext(reader), 5)).event
    third = pb.StreamDebateEventsResponse.FromString(await asyncio.wait_for(anext(reader), 5)).event
    assert (second.sequence, third.sequence) == (2, 3)
    assert backend.query("SELECT sequence FROM events ORDER BY 1") == [(1,), (2,), (3,)]
    await reader.aclose()


def test_a_commit_notifies_every_debate_written_with_its_last_sequence_split_under_the_payload_limit(
    postgres_url, tmp_path
):
    backend = OrchestratorBackend("postgresql", tmp_path, postgres_url)
    owner = _replica(backend, "a", 60)
    ids = [f"debate-{i:04d}-{'x' * 40}" for i in range(400)]  # about 20 kB of "id:sequence" in all
    with psycopg.connect(backend.url, autocommit=True) as listener:
        listener.execute(f"LISTEN {EVENTS_CHANNEL}")
        for debate_id in ids:
            owner.insert_debate(debate(debate_id, state=S.DEBATE_STATE_RUNNING))
        owner.commit()
        rows = [row for debate_id in ids for row in events(debate_id, 1, 2)]
        owner.add_events(rows)
        owner.commit()
        notices = list(listener.notifies(timeout=2.0))
    assert len(notices) >= 3 and all(len(n.payload.encode()) < 8000 for n in notices)
    named = [part.rpartition(":") for n in notices for part in n.payload.split(",")]
    assert sorted((d, int(s)) for d, _, s in named) == [(d, 2) for d in sorted(ids)]  # each once, its last


async def test_a_follower_whose_listener_lost_its_connection_reads_what_it_missed(postgres_url, tmp_path):
    backend = OrchestratorBackend("postgresql", tmp_path, postgres_url)
    owner, follower = _replica(backend, "a", 60), _replica(backend, "b", 60)
    owner.insert_debate(debate("d1", state=S.DEBATE_STATE_RUNNING))
    assert owner.claim("d1")
    owner.commit()
    hub = EventHub(follower, framing=FRAMING)
    follower.listen(hub.notified, lambda debate_id, reason: None)

    def commit_events(first: int, last: int) -> None:
        owner.add_events(
            [
                (d, s, pb.DebateEvent(sequence=s, debate_id=d).SerializeToString())
                for d, s, _ in events("d1", first, last)
            ]
        )
        owner.commit()

    reader = hub.subscribe("d1", 0, terminal=False, last_sequence=0)
    first = asyncio.ensure_future(anext(reader))
    await asyncio.sleep(0.1)
    assert hub.get("d1").following  # "b" does not hold d1: it follows the store
    commit_events(1, 1)
    assert pb.StreamDebateEventsResponse.FromString(await asyncio.wait_for(first, 5)).event.sequence == 1

    listener_pid = follower._listener._conn.info.backend_pid
    backend.query("SELECT pg_terminate_backend(?)", (listener_pid,))
    await asyncio.sleep(0.05)  # the listener sees its connection gone and reconnects half a second later
    commit_events(2, 3)  # notified while nobody listened on "b": the reconnection reads them
    got = [pb.StreamDebateEventsResponse.FromString(await asyncio.wait_for(anext(reader), 5)).event for _ in range(2)]
    assert [e.sequence for e in got] == [2, 3]
    assert follower._listener._conn.info.backend_pid != listener_pid
    await reader.aclose()
