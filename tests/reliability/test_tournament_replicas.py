"""A tournament on two orchestrator replicas sharing one PostgreSQL (in this process, as in
test_replica_takeover.py): one replica drives it, holding its lease, and the other does not,
so `parallel_matches` and the budget rule hold for the cluster; when the driver stops, the other
adopts the tournament within a lease period and completes it, with no match played twice and
no debate created twice."""

from __future__ import annotations

import time

import grpc
import pytest
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import tournament_pb2 as tpb
from debate.orchestrator.v1 import tournament_pb2_grpc

from tests.reliability.test_replica_takeover import LEASE_SECONDS, _query, _replica, _suite, _wait

MODELS = ["sim/debater-strong", "sim/debater-average", "sim/debater-weak"]


@pytest.mark.timeout(240)
def test_one_replica_drives_a_tournament_and_another_adopts_it_when_the_driver_stops(postgres_url, tmp_path):
    suite = _suite(tmp_path)
    a = _replica(suite, postgres_url, "a")
    b = _replica(suite, postgres_url, "b")
    try:
        stub = tournament_pb2_grpc.TournamentServiceStub(grpc.insecure_channel(a.address))
        config = tpb.TournamentConfig(
            name="two replicas",
            models=MODELS,
            topics=["Cities should ban cars from their centres"],
            format=c.DebateFormat(round_limit=1, turn_order=c.TURN_ORDER_SIMULTANEOUS),
            judge=c.JudgeConfig(models=["sim/judge"]),
            max_tokens_per_turn=40,
            seed=3,
            parallel_matches=1,
        )
        tid = stub.CreateTournament(tpb.CreateTournamentRequest(config=config, request_id="t1"), timeout=30)
        tid = tid.tournament.tournament_id
        stub.StartTournament(tpb.StartTournamentRequest(tournament_id=tid), timeout=30)
        _wait(lambda: tid in a.tournaments.tasks, "a does not drive the tournament it started")

        time.sleep(2.5 * LEASE_SECONDS)  # b's adoption runs every lease period: it finds the lease held
        assert tid not in b.tournaments.tasks
        assert _query(postgres_url, f"SELECT owner FROM debate_leases WHERE debate_id = '{tid}'") == [("a",)]

        suite.run(a.stop(grace=0))  # its tournament's lease lapses; its debates are handed over
        _wait(lambda: tid in b.tournaments.tasks, "b did not adopt the tournament")
        on_b = tournament_pb2_grpc.TournamentServiceStub(grpc.insecure_channel(b.address))
        list(on_b.StreamTournamentEvents(tpb.StreamTournamentEventsRequest(tournament_id=tid), timeout=180))
        ended = on_b.GetTournament(tpb.GetTournamentRequest(tournament_id=tid), timeout=30).tournament
        assert ended.state == tpb.TOURNAMENT_STATE_COMPLETED, ended.end_reason
        assert [m.state for m in ended.matches] == [tpb.MATCH_STATE_DECIDED] * 3
        legs = [leg.debate_id for m in ended.matches for leg in m.legs]
        assert len(legs) == len(set(legs)) == 6
        created = _query(postgres_url, f"SELECT count(*) FROM debates WHERE request_id LIKE 'tournament/{tid}/%'")
        assert created == [(6,)]  # no debate created twice
        assert _query(postgres_url, f"SELECT count(*) FROM debate_leases WHERE debate_id = '{tid}'") == [(0,)]
    finally:
        suite.run(b.stop(grace=0))
        suite.stop()
