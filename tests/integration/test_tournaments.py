"""Tournaments over real gRPC servers (accounting, judge, orchestrator in this process, on ports
of their own, with two tenants' keys): a round robin of side-swapped matches between three
simulated debaters whose quality differs by design (quality.py: `sim/debater-strong`,
`-average`, `-weak`), judged by `sim/judge`, rated by Bradley-Terry."""

from __future__ import annotations

import os
import subprocess
from decimal import Decimal

import grpc
import pytest
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc, tournament_pb2_grpc
from debate.orchestrator.v1 import tournament_pb2 as tpb

from services.common.grpc_errors import error_details
from tests.helpers import ROOT
from tests.reliability.inprocess import InProcessSuite

ALICE = "alice-key-0123456789abcdef"
BOB = "bob-key-0123456789abcdef"
SERVICE = "suite-service-key-0123456789"
STRONG, AVERAGE, WEAK = "sim/debater-strong", "sim/debater-average", "sim/debater-weak"
TOPICS = [
    "Cities should ban private cars from their centres",
    "Remote work is better than office work",
    "Schools should teach programming to every child",
]
M = tpb.MatchState
T = tpb.TournamentState


def _as(key: str):
    return (("authorization", f"Bearer {key}"),)


def tournament_config(**overrides) -> tpb.TournamentConfig:
    values = dict(
        name="three by design",
        models=[WEAK, STRONG, AVERAGE],
        topics=TOPICS,
        format=c.DebateFormat(round_limit=1, turn_order=c.TURN_ORDER_SIMULTANEOUS),
        judge=c.JudgeConfig(models=["sim/judge"]),
        max_tokens_per_turn=160,
        seed=7,
        parallel_matches=3,
    )
    values.update(overrides)
    return tpb.TournamentConfig(**values)


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("SERVICE_API_KEY", SERVICE)
    internal = {"api_keys": f"{SERVICE}=suite"}
    running = InProcessSuite(
        tmp_path_factory.mktemp("tournaments"),
        overrides={
            "accounting": internal,
            "judge": internal,
            "orchestrator": {
                "api_keys": f"{ALICE}=alice,{BOB}=bob",
                "sim_tokens_per_second": 0.0,
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
def stubs(suite):
    with grpc.insecure_channel(suite.addresses["orchestrator"]) as channel:
        yield tournament_pb2_grpc.TournamentServiceStub(channel), orchestrator_pb2_grpc.OrchestratorServiceStub(channel)


@pytest.fixture(scope="module")
def played(stubs):
    """Alice's tournament, created, started and watched to its end: (the stream's messages, the tournament)."""
    tournaments, _ = stubs
    created = tournaments.CreateTournament(
        tpb.CreateTournamentRequest(config=tournament_config(), request_id="three-by-design"), metadata=_as(ALICE)
    ).tournament
    assert created.state == T.TOURNAMENT_STATE_CREATED and len(created.matches) == 9
    assert all(m.state == M.MATCH_STATE_PENDING and not m.legs for m in created.matches)
    again = tournaments.CreateTournament(
        tpb.CreateTournamentRequest(config=tournament_config(name="other"), request_id="three-by-design"),
        metadata=_as(ALICE),
    ).tournament
    assert again.tournament_id == created.tournament_id  # a retried create acts once
    tid = created.tournament_id
    started = tournaments.StartTournament(tpb.StartTournamentRequest(tournament_id=tid), metadata=_as(ALICE))
    assert started.tournament.state == T.TOURNAMENT_STATE_RUNNING
    messages = list(
        tournaments.StreamTournamentEvents(
            tpb.StreamTournamentEventsRequest(tournament_id=tid), metadata=_as(ALICE), timeout=300
        )
    )
    final = tournaments.GetTournament(tpb.GetTournamentRequest(tournament_id=tid), metadata=_as(ALICE)).tournament
    return messages, final


def test_three_models_of_designed_strength_are_rated_in_order_with_separated_intervals(played, stubs):
    _, tournament = played
    assert tournament.state == T.TOURNAMENT_STATE_COMPLETED, tournament.end_reason
    assert tournament.matches_decided == 9 == tournament.matches_total
    ratings = {r.model: r for r in tournament.ratings}
    print(
        {
            m: (round(r.rating), round(r.rating_low), round(r.rating_high), r.wins, r.losses, r.ties)
            for m, r in ratings.items()
        }
    )
    assert [r.model for r in tournament.ratings] == [STRONG, AVERAGE, WEAK]
    assert ratings[STRONG].rating_low > ratings[WEAK].rating_high
    assert all(r.rating_low <= r.rating <= r.rating_high and r.matches == 6 for r in ratings.values())
    tournaments, _ = stubs
    board = tournaments.GetLeaderboard(
        tpb.GetLeaderboardRequest(tournament_id=tournament.tournament_id), metadata=_as(ALICE)
    )
    assert list(board.ratings) == list(tournament.ratings) and board.matches == 9 and "Bradley-Terry" in board.method
    everything = tournaments.GetLeaderboard(tpb.GetLeaderboardRequest(), metadata=_as(ALICE))
    assert [r.model for r in everything.ratings] == [STRONG, AVERAGE, WEAK] and everything.matches >= 9


def test_every_match_is_two_debates_with_the_sides_swapped_under_the_same_topic_judge_and_seed(played, stubs):
    _, tournament = played
    _, debates = stubs
    seen = set()
    for match in tournament.matches:
        assert match.state == M.MATCH_STATE_DECIDED and len(match.legs) == 2
        configs = []
        for leg, for_model in zip(match.legs, (match.model_a, match.model_b), strict=True):
            debate = debates.GetDebate(pb.GetDebateRequest(debate_id=leg.debate_id), metadata=_as(ALICE)).debate
            assert debate.state == pb.DebateState.DEBATE_STATE_COMPLETED
            stances = {p.model: p.stance for p in debate.config.participants}
            assert leg.for_model == for_model and stances[for_model] == "for"
            assert {m for m, s in stances.items() if s == "against"} == {match.model_a, match.model_b} - {for_model}
            winner = {p.name: p.model for p in debate.config.participants}.get(debate.verdict.winner, "")
            assert leg.winner_model == winner and leg.tie == debate.verdict.tie
            configs.append(debate.config)
            seen.add(leg.debate_id)
        assert configs[0].topic == configs[1].topic == match.topic
        assert configs[0].seed == configs[1].seed == match.seed
        assert configs[0].judge == configs[1].judge
        wins_a = sum(leg.winner_model == match.model_a for leg in match.legs)
        wins_b = sum(leg.winner_model == match.model_b for leg in match.legs)
        if wins_a != wins_b:
            assert match.winner_model == (match.model_a if wins_a > wins_b else match.model_b)
        else:
            assert match.margin == pytest.approx(sum(leg.margin for leg in match.legs))
    assert len(seen) == 18  # no debate shared by two matches


def test_the_tournament_costs_the_sum_of_its_debates_costs_by_model(played, stubs):
    _, tournament = played
    _, debates = stubs
    total, tokens, by_model = Decimal(0), 0, {}
    for match in tournament.matches:
        match_total = Decimal(0)
        for leg in match.legs:
            cost = debates.GetDebate(pb.GetDebateRequest(debate_id=leg.debate_id), metadata=_as(ALICE)).debate.cost
            match_total += Decimal(cost.total.amount or "0")
            tokens += cost.usage.total_tokens
            for line in cost.by_model:
                by_model[line.key] = by_model.get(line.key, 0) + line.usage.total_tokens
        assert Decimal(match.cost.amount) == match_total
        total += match_total
    assert Decimal(tournament.cost.amount) == total
    assert tokens > 0 and tournament.usage.total_tokens == tokens
    assert {line.key: line.usage.total_tokens for line in tournament.cost_by_model} == by_model
    assert {STRONG, AVERAGE, WEAK, "sim/judge"} <= set(by_model)


def test_the_stream_reports_progress_until_the_end(played):
    messages, tournament = played
    assert messages[0].progress.tournament_id == tournament.tournament_id and len(messages[0].matches) == 9
    assert messages[-1].progress.state == T.TOURNAMENT_STATE_COMPLETED
    assert messages[-1].progress.matches_decided == 9
    decided = [m.match_index for msg in messages[1:] for m in msg.matches if m.state == M.MATCH_STATE_DECIDED]
    assert sorted(decided) == list(range(9))  # each match reported decided once


def test_another_tenant_gets_not_found(played, stubs):
    _, tournament = played
    tournaments, _ = stubs
    tid = tournament.tournament_id
    calls = [
        lambda: tournaments.GetTournament(tpb.GetTournamentRequest(tournament_id=tid), metadata=_as(BOB)),
        lambda: tournaments.StartTournament(tpb.StartTournamentRequest(tournament_id=tid), metadata=_as(BOB)),
        lambda: tournaments.CancelTournament(tpb.CancelTournamentRequest(tournament_id=tid), metadata=_as(BOB)),
        lambda: tournaments.GetLeaderboard(tpb.GetLeaderboardRequest(tournament_id=tid), metadata=_as(BOB)),
        lambda: list(
            tournaments.StreamTournamentEvents(tpb.StreamTournamentEventsRequest(tournament_id=tid), metadata=_as(BOB))
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as refused:
            call()
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    listed = tournaments.ListTournaments(tpb.ListTournamentsRequest(), metadata=_as(BOB)).tournaments
    assert tid not in {t.tournament_id for t in listed}
    assert not tournaments.GetLeaderboard(tpb.GetLeaderboardRequest(), metadata=_as(BOB)).ratings


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"models": [STRONG]}, "config.models"),
        ({"models": [STRONG, STRONG]}, "config.models[1]"),
        ({"models": [STRONG, "openai/not-allowed-model"]}, "config.models[1]"),
        ({"topics": []}, "config.topics"),
        ({"topics": ["  "]}, "config.topics[0]"),
        ({"judge": c.JudgeConfig(models=["sim/no-such-judge", "x"] * 3)}, "config.judge.models"),
        ({"budget": c.Money(currency_code="USD", amount="-1")}, "config.budget.amount"),
        (
            {
                "budget": c.Money(currency_code="USD", amount="1"),
                "debate_budget": c.Money(currency_code="USD", amount="0.9"),
            },
            "config.debate_budget",
        ),
        ({"parallel_matches": 99}, "config.parallel_matches"),
        ({"format": c.DebateFormat(round_limit=999)}, "config.format.round_limit"),
    ],
)
def test_bad_input_is_invalid_argument_with_the_field_and_stores_nothing(stubs, change, field):
    tournaments, _ = stubs
    before = tournaments.ListTournaments(tpb.ListTournamentsRequest(page_size=100), metadata=_as(BOB)).tournaments
    with pytest.raises(grpc.RpcError) as refused:
        tournaments.CreateTournament(
            tpb.CreateTournamentRequest(config=tournament_config(**change), request_id=f"bad-{field}"),
            metadata=_as(BOB),
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, violations = error_details(refused.value)
    assert field in {f for f, _ in violations}, violations
    after = tournaments.ListTournaments(tpb.ListTournamentsRequest(page_size=100), metadata=_as(BOB)).tournaments
    assert list(after) == list(before)


def test_a_budget_that_covers_one_match_at_a_time_runs_one_match_at_a_time(stubs):
    tournaments, _ = stubs
    config = tournament_config(
        models=[STRONG, WEAK],
        topics=TOPICS[:2],
        budget=c.Money(currency_code="USD", amount="0.5"),
        debate_budget=c.Money(currency_code="USD", amount="0.2"),
        parallel_matches=2,
    )
    created = tournaments.CreateTournament(tpb.CreateTournamentRequest(config=config), metadata=_as(BOB))
    tid = created.tournament.tournament_id
    tournaments.StartTournament(tpb.StartTournamentRequest(tournament_id=tid), metadata=_as(BOB))
    request = tpb.StreamTournamentEventsRequest(tournament_id=tid)
    messages = list(tournaments.StreamTournamentEvents(request, metadata=_as(BOB), timeout=120))
    ended = tournaments.GetTournament(tpb.GetTournamentRequest(tournament_id=tid), metadata=_as(BOB)).tournament
    # A match starts only while the budget, less the caps of the debates under way, covers two
    # more caps: 0.5 USD covers one match of two 0.2 USD caps at a time, whatever parallel_matches says.
    assert ended.state == T.TOURNAMENT_STATE_COMPLETED, ended.end_reason
    assert [m.state for m in ended.matches] == [M.MATCH_STATE_DECIDED] * 2
    assert max(m.progress.matches_running for m in messages) == 1
    assert all(leg.debate_id for m in ended.matches for leg in m.legs)


def test_a_cancelled_tournament_skips_what_it_has_not_played(stubs):
    tournaments, _ = stubs
    tid = tournaments.CreateTournament(
        tpb.CreateTournamentRequest(config=tournament_config()), metadata=_as(BOB)
    ).tournament.tournament_id
    cancelled = tournaments.CancelTournament(
        tpb.CancelTournamentRequest(tournament_id=tid, reason="changed my mind"), metadata=_as(BOB)
    ).tournament
    assert cancelled.state == T.TOURNAMENT_STATE_CANCELLED
    got = tournaments.GetTournament(tpb.GetTournamentRequest(tournament_id=tid), metadata=_as(BOB)).tournament
    assert all(m.state == M.MATCH_STATE_SKIPPED for m in got.matches) and "changed my mind" in got.end_reason
    with pytest.raises(grpc.RpcError) as refused:
        tournaments.StartTournament(tpb.StartTournamentRequest(tournament_id=tid), metadata=_as(BOB))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_the_cli_shows_the_tournament_and_the_leaderboard(played, suite):
    _, tournament = played
    env = {**os.environ, "DEBATE_ENGINE_API_KEY": ALICE}
    target = ["--target", suite.addresses["orchestrator"]]
    cli = [str(ROOT / ".venv" / "bin" / "debate-engine")]
    got = subprocess.run(
        [*cli, "tournament", "get", tournament.tournament_id, *target],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert got.returncode == 0, got.stderr
    assert "completed" in got.stdout and "9/9 matches decided" in got.stdout and "sim/judge:" in got.stdout
    # each match names its topic and each leg who argued for and against (the legend says margins are the winner's)
    assert "leg 1 with the first-named model for the motion" in got.stdout
    match = tournament.matches[0]
    assert f"{match.model_a} v {match.model_b}  [decided]" in got.stdout and f"· topic: {match.topic}" in got.stdout
    assert f"leg 2: {match.model_b} for, {match.model_a} against: " in got.stdout
    assert f"(debate {match.legs[1].debate_id})" in got.stdout
    watched = subprocess.run(
        [*cli, "tournament", "watch", tournament.tournament_id, *target],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert watched.returncode == 0, watched.stderr
    ratings = watched.stdout.split("rank ")[-1].splitlines()[1:4]  # the ratings after the last match
    assert [line.split()[1] for line in ratings] == [STRONG, AVERAGE, WEAK]
    board = subprocess.run([*cli, "leaderboard", *target], env=env, capture_output=True, text=True, timeout=60)
    assert board.returncode == 0, board.stderr
    ranks = [line.split()[1] for line in board.stdout.splitlines() if line[:1].isdigit() and "/" in line]
    assert ranks == [STRONG, AVERAGE, WEAK]
    listed = subprocess.run([*cli, "tournament", "list", *target], env=env, capture_output=True, text=True, timeout=60)
    assert tournament.tournament_id in listed.stdout


def test_a_tournament_runs_the_same_on_postgresql(tmp_path, postgres_url):
    running = InProcessSuite(
        tmp_path,
        overrides={
            "orchestrator": {
                "database_url": postgres_url,
                "sim_tokens_per_second": 0.0,
                "sim_first_token_latency": 0.0,
            }
        },
    )
    try:
        running.start()
        with grpc.insecure_channel(running.addresses["orchestrator"]) as channel:
            tournaments = tournament_pb2_grpc.TournamentServiceStub(channel)
            config = tournament_config(models=[STRONG, WEAK], topics=TOPICS[:1])
            created = tournaments.CreateTournament(tpb.CreateTournamentRequest(config=config, request_id="pg"))
            tid = created.tournament.tournament_id
            again = tournaments.CreateTournament(tpb.CreateTournamentRequest(config=config, request_id="pg"))
            assert again.tournament.tournament_id == tid
            tournaments.StartTournament(tpb.StartTournamentRequest(tournament_id=tid))
            request = tpb.StreamTournamentEventsRequest(tournament_id=tid)
            list(tournaments.StreamTournamentEvents(request, timeout=120))
            ended = tournaments.GetTournament(tpb.GetTournamentRequest(tournament_id=tid)).tournament
            listed = tournaments.ListTournaments(tpb.ListTournamentsRequest()).tournaments
        assert ended.state == T.TOURNAMENT_STATE_COMPLETED and ended.matches[0].state == M.MATCH_STATE_DECIDED
        assert len({leg.debate_id for leg in ended.matches[0].legs}) == 2
        assert [r.model for r in ended.ratings] == [STRONG, WEAK] and [t.tournament_id for t in listed] == [tid]
    finally:
        running.stop()
