"""A tournament of priced models stays within its budget: each debate is capped, a match starts
only while the budget less what was spent and the caps under way covers two caps, and when it
cannot the rest is skipped (BUDGET_EXHAUSTED). The debaters are served by the fake provider
(tests/support/fake_openai.py) at a declared price, so the tournament's cost is not zero and
equals the sum of its debates' costs, per model too."""

from __future__ import annotations

from decimal import Decimal

import grpc
import pytest
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc, tournament_pb2_grpc
from debate.orchestrator.v1 import tournament_pb2 as tpb

from tests.reliability.inprocess import InProcessSuite
from tests.support.fake_openai import FakeOpenAIServer

PRICE = {"input_per_million": "100", "output_per_million": "100"}  # USD: a debate costs a few cents


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    with FakeOpenAIServer() as fake:
        endpoints = {"paid": {"api_base": fake.base_url, "price": PRICE}}
        llm = {
            "llm_endpoints": endpoints,
            "llm_allowed_models": ["sim/*", "paid/*"],
            "llm_retries": 0,
            "sim_first_token_latency": 0.0,
            "sim_tokens_per_second": 0.0,
        }
        running = InProcessSuite(
            tmp_path_factory.mktemp("tournament-budget"),
            overrides={"orchestrator": llm, "judge": llm, "accounting": {"llm_endpoints": endpoints}},
        )
        try:
            running.start()
            yield running
        finally:
            running.stop()


def test_a_budget_that_covers_one_match_plays_one_and_skips_the_rest(suite):
    with grpc.insecure_channel(suite.addresses["orchestrator"]) as channel:
        tournaments = tournament_pb2_grpc.TournamentServiceStub(channel)
        debates = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        config = tpb.TournamentConfig(
            models=["paid/one", "paid/two"],
            topics=["Cities should ban private cars", "Remote work is better", "Schools should teach chess"],
            format=c.DebateFormat(round_limit=1),
            judge=c.JudgeConfig(models=["sim/judge"]),
            max_tokens_per_turn=60,
            budget=c.Money(currency_code="USD", amount="0.45"),
            debate_budget=c.Money(currency_code="USD", amount="0.2"),
            parallel_matches=3,
        )
        tid = tournaments.CreateTournament(tpb.CreateTournamentRequest(config=config)).tournament.tournament_id
        tournaments.StartTournament(tpb.StartTournamentRequest(tournament_id=tid))
        list(tournaments.StreamTournamentEvents(tpb.StreamTournamentEventsRequest(tournament_id=tid), timeout=120))
        ended = tournaments.GetTournament(tpb.GetTournamentRequest(tournament_id=tid)).tournament
        costs = [
            debates.GetDebate(pb.GetDebateRequest(debate_id=leg.debate_id)).debate.cost
            for m in ended.matches
            for leg in m.legs
        ]
    assert ended.state == tpb.TournamentState.TOURNAMENT_STATE_BUDGET_EXHAUSTED, ended.end_reason
    assert "cannot cover a match" in ended.end_reason
    assert [m.state for m in ended.matches][1:] == [tpb.MatchState.MATCH_STATE_SKIPPED] * 2
    assert ended.matches[0].state == tpb.MatchState.MATCH_STATE_DECIDED and len(costs) == 2
    total = sum(Decimal(cost.total.amount) for cost in costs)
    assert Decimal("0.05") < total == Decimal(ended.cost.amount) <= Decimal("0.45")
    by_model: dict[str, Decimal] = {}
    for cost in costs:
        assert Decimal(cost.total.amount) <= Decimal("0.2")
        for line in cost.by_model:
            by_model[line.key] = by_model.get(line.key, Decimal(0)) + Decimal(line.cost.amount or "0")
    assert {line.key: Decimal(line.cost.amount or "0") for line in ended.cost_by_model} == by_model
    assert by_model["paid/one"] > 0 and by_model["paid/two"] > 0
