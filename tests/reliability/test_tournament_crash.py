"""SIGKILL the orchestrator in the middle of a tournament, start it again: the tournament resumes
and completes, every match played once (two debates each, none created twice, each debate in
exactly one match)."""

from __future__ import annotations

import grpc
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc, tournament_pb2_grpc
from debate.orchestrator.v1 import tournament_pb2 as tpb

from tests.reliability.processes import KillableSuite

PACED = {"SIM_FIRST_TOKEN_LATENCY": "0.05", "SIM_TOKENS_PER_SECOND": "300"}
M = tpb.MatchState


async def test_sigkill_mid_tournament_then_restart_completes_with_no_match_played_twice(tmp_path):
    suite = KillableSuite(tmp_path, PACED, log_level="WARNING")
    await suite.start_all()
    address = suite.address("orchestrator")
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            tournaments = tournament_pb2_grpc.TournamentServiceStub(channel)
            config = tpb.TournamentConfig(
                name="killed mid-way",
                models=["sim/debater-strong", "sim/debater-average", "sim/debater-weak"],
                topics=["Cities should ban private cars from their centres"],
                format=c.DebateFormat(round_limit=1),
                judge=c.JudgeConfig(models=["sim/judge"]),
                max_tokens_per_turn=60,
                parallel_matches=1,
            )
            created = await tournaments.CreateTournament(tpb.CreateTournamentRequest(config=config))
            tid = created.tournament.tournament_id
            await tournaments.StartTournament(tpb.StartTournamentRequest(tournament_id=tid))
            call = tournaments.StreamTournamentEvents(tpb.StreamTournamentEventsRequest(tournament_id=tid))
            async for message in call:  # until one match is decided and the next is under way
                if message.progress.matches_decided >= 1 and message.progress.matches_running >= 1:
                    break
            call.cancel()
        before = suite.query(
            "tournament_matches", "SELECT match FROM tournament_matches WHERE tournament_id = ?", (tid,)
        )
        running = [tpb.Match.FromString(m) for (m,) in before if tpb.Match.FromString(m).state == M.MATCH_STATE_RUNNING]
        await suite.kill("orchestrator")
        assert running and all(len(m.legs) == 2 for m in running), "killed with a match's debates stored and under way"
        kept = {leg.debate_id for m in running for leg in m.legs}

        await suite.start("orchestrator")
        async with grpc.aio.insecure_channel(address) as channel:
            tournaments = tournament_pb2_grpc.TournamentServiceStub(channel)
            request = tpb.StreamTournamentEventsRequest(tournament_id=tid)
            async for message in tournaments.StreamTournamentEvents(request, timeout=120):
                last = message
            assert last.progress.state == tpb.TournamentState.TOURNAMENT_STATE_COMPLETED
            ended = (await tournaments.GetTournament(tpb.GetTournamentRequest(tournament_id=tid))).tournament
            debates = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
            listed = (await debates.ListDebates(pb.ListDebatesRequest(page_size=100))).debates
        assert [m.state for m in ended.matches] == [M.MATCH_STATE_DECIDED] * 3
        legs = [leg.debate_id for m in ended.matches for leg in m.legs]
        assert len(legs) == len(set(legs)) == 6
        assert {d.debate_id for d in listed} == set(legs)  # no debate created twice, none left over
        assert all(d.state == pb.DebateState.DEBATE_STATE_COMPLETED for d in listed)
        # The match under way at the kill went on with its own debates.
        assert kept <= set(legs)
    finally:
        await suite.stop_all()
