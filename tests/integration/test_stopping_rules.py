"""Stopping rules over the real services (issue 19 part 1), in this process (tests/reliability/inprocess.py).

1. Judge decided: a 6-round debate whose debaters are served by a fake OpenAI-compatible provider
   (tests/support/fake_openai.py, a declared price, so every call costs money; each word a chunk
   30 ms apart, so a turn takes more than a second) and judged by `sim/judge-decisive@3` (indecisive
   until round 3, then decisive; each judge call 0.3 s) ends after round 3: round 4, under way
   when round 3's assessment passes the rule, is cancelled: its calls are charged (ledger rows,
   its turns stored with FINISH_REASON_CANCELLED and their cost), TurnFailed(DEBATE_STOPPED) is
   logged for each, DebateStopped says the rule, the round, the rounds not played and the
   estimate (checked against its formula), the verdict covers 3 rounds, DebateCompleted comes
   last, and the debate's cost equals the sum of its ledger rows.
2. Consensus: debaters `sim/debater-converging` (their stated positions converge from round 2)
   stop a 5-round debate after round 2; plain `sim/debater`s play all 5 rounds.
3. A bad stopping config is INVALID_ARGUMENT with field details, and nothing is stored.
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal

import grpc
import pytest
from debate.accounting.v1 import accounting_pb2 as acc
from debate.accounting.v1 import accounting_pb2_grpc as accg
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc as pbg

from services.common.grpc_errors import error_details
from tests.reliability.inprocess import InProcessSuite
from tests.support.fake_openai import Behavior, FakeOpenAIServer

TIMEOUT = 30
ENDPOINT = "fake"
PRICE = {"input_per_million": "3", "output_per_million": "15"}
TEXT_A = (
    "Because the data from forty cities shows 30 percent fewer injuries, a car-free centre saves lives. "
    "However my opponent ignores that study, and the evidence from Oslo and Ghent is clear: trade rose "
    "by 12 percent, therefore the ban pays for itself."
)
TEXT_B = "Shops need cars. People drive to shop. A ban would hurt them, I think, and that is bad for the town."


@pytest.fixture(scope="module")
def fake():
    with FakeOpenAIServer(tokenizer=True, count_model_prefix=f"{ENDPOINT}/") as server:
        server.model_default("a", Behavior(text=TEXT_A, chunk_delay=0.03))
        server.model_default("b", Behavior(text=TEXT_B + " " + TEXT_B, chunk_delay=0.03))
        yield server


@pytest.fixture(scope="module")
def suite(tmp_path_factory, fake):
    endpoints = {ENDPOINT: {"api_base": fake.base_url, "price": PRICE}}
    llm = {"llm_endpoints": endpoints, "llm_allowed_models": ["sim/*", f"{ENDPOINT}/*"]}
    running = InProcessSuite(
        tmp_path_factory.mktemp("stopping"),
        overrides={
            "accounting": {"llm_endpoints": endpoints},
            # Each judge call answers 0.3 s after it is asked: the next round is under way by then.
            "judge": {**llm, "sim_first_token_latency": 0.3, "sim_tokens_per_second": 0.0},
            # A 60-token simulated turn takes a second: far longer than a judge call.
            "orchestrator": {**llm, "sim_first_token_latency": 0.05, "sim_tokens_per_second": 60.0},
        },
    )
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture
def api(suite):
    channel = grpc.insecure_channel(suite.addresses["orchestrator"])
    accounting = grpc.insecure_channel(suite.addresses["accounting"])
    yield pbg.OrchestratorServiceStub(channel), accg.AccountingServiceStub(accounting)
    channel.close()
    accounting.close()


def config(models: tuple[str, str], judge: str, rounds: int, stopping: c.StoppingRules) -> c.DebateConfig:
    return c.DebateConfig(
        topic="Cities should ban cars from their centres",
        participants=[
            c.Participant(name="Ada", model=models[0], persona="an urbanist", stance="for"),
            c.Participant(name="Bo", model=models[1], persona="a shopkeeper", stance="against"),
        ],
        judge=c.JudgeConfig(models=[judge], orderings=2),
        format=c.DebateFormat(round_limit=rounds, turn_order=c.TURN_ORDER_SIMULTANEOUS),
        max_tokens_per_turn=60,
        stopping=stopping,
    )


def run(stub, cfg: c.DebateConfig) -> tuple[str, list[pb.DebateEvent]]:
    debate_id = stub.CreateDebate(pb.CreateDebateRequest(config=cfg), timeout=TIMEOUT).debate.debate_id
    stub.StartDebate(pb.StartDebateRequest(debate_id=debate_id), timeout=TIMEOUT)
    stream = stub.StreamDebateEvents(pb.StreamDebateEventsRequest(debate_id=debate_id), timeout=120)
    return debate_id, [r.event for r in stream if r.event.WhichOneof("payload") != "heartbeat"]


def kinds(events: list[pb.DebateEvent]) -> list[str]:
    return [e.WhichOneof("payload") for e in events]


def ledger_rows(suite: InProcessSuite, debate_id: str) -> list[tuple[str, int, str, int]]:
    """(request_id, round_number, cost, estimated) of the debate's rows, read from the ledger's file."""
    (path,) = (suite.root / "accounting").glob("*.sqlite3")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute(
            "SELECT request_id, round_number, cost, estimated FROM usage WHERE debate_id = ?", (debate_id,)
        ).fetchall()
    finally:
        db.close()


def test_a_judge_decided_stop_ends_a_6_round_debate_after_the_decisive_round(suite, api):
    stub, accounting = api
    rule = c.StoppingRules(judge_decided=c.JudgeDecidedRule(min_rounds=2, min_margin=1.0, min_confidence=0.6))
    debate_id, events = run(stub, config(("fake/a", "fake/b"), "sim/judge-decisive@3", 6, rule))
    seen = kinds(events)

    debate = stub.GetDebate(pb.GetDebateRequest(debate_id=debate_id), timeout=TIMEOUT).debate
    assert debate.state == pb.DEBATE_STATE_COMPLETED, debate.end_reason
    stop = debate.stop
    assert (stop.rule, stop.after_round, stop.rounds_played, stop.rounds_not_played) == (
        c.STOPPING_RULE_JUDGE_DECIDED,
        3,
        3,
        3,
    )
    assert "Ada leads round 3" in stop.reason

    # Rounds 1 and 2 were ties (the scripted judge); round 3 passed the rule; round 4 had started.
    assessed = {
        e.round_assessed.assessment.round_number: e.round_assessed.assessment
        for e in events
        if e.HasField("round_assessed")
    }
    assert sorted(assessed) == [1, 2, 3]
    assert assessed[1].tie and assessed[2].tie and assessed[3].leader == "Ada" and assessed[3].confidence >= 0.6
    assert [e.round_started.round_number for e in events if e.HasField("round_started")] == [1, 2, 3, 4]

    # The round under way was cancelled: each call settled and marked, nothing of round 5 or later.
    failed = [e.turn_failed for e in events if e.HasField("turn_failed")]
    assert {(f.round_number, f.participant, f.reason, f.will_retry) for f in failed} == {
        (4, "Ada", "DEBATE_STOPPED", False),
        (4, "Bo", "DEBATE_STOPPED", False),
    }
    assert not [e for e in events if e.HasField("turn_completed") and e.turn_completed.turn.round_number > 3]
    round_4 = next(r for r in debate.rounds if r.round_number == 4)
    assert {t.participant for t in round_4.turns} == {"Ada", "Bo"}
    for turn in round_4.turns:
        assert turn.finish_reason == c.FINISH_REASON_CANCELLED and turn.usage.estimated
        assert Decimal(turn.cost.amount) > 0 and turn.text  # what it streamed, charged
    assert not round_4.HasField("assessment")

    # The event says why; the verdict (over 3 rounds) and DebateCompleted follow it, the latter last.
    (stopped,) = [e.debate_stopped.stop for e in events if e.HasField("debate_stopped")]
    assert stopped == stop
    assert seen.index("debate_stopped") > max(i for i, k in enumerate(seen) if k == "round_assessed")
    assert seen.index("debate_stopped") < seen.index("verdict_rendered")
    assert seen[-1] == "debate_completed" and seen.count("debate_completed") == 1
    assert "assessments of 3 rounds" in debate.verdict.summary

    # What round 4 spent is in the ledger, and the cost equals the ledger's, to the last digit.
    cost = accounting.GetDebateCost(acc.GetDebateCostRequest(debate_id=debate_id), timeout=TIMEOUT).cost
    by_round = {line.key: line for line in cost.by_round}
    assert by_round["4"].calls == 2 and Decimal(by_round["4"].cost.amount) > 0
    rows = ledger_rows(suite, debate_id)
    cut = [r for r in rows if r[1] == 4]
    assert len(cut) == 2 and all(r[3] for r in cut) and all("/rounds/4/turns/" in r[0] for r in cut)
    assert not [r for r in rows if r[1] > 4]
    ledger_total = sum((Decimal(r[2]) for r in rows), Decimal(0))
    completed = events[-1].debate_completed
    assert Decimal(completed.cost.total.amount) == Decimal(cost.total.amount) == ledger_total
    assert Decimal(debate.cost.total.amount) == ledger_total

    # The estimate: rounds 1-3's costs (turns and assessment) fitted as a + b * round and summed over
    # rounds 4-6 (the default window holds 5 rounds: no cap here), less what round 4 spent.
    y1, y2, y3 = (Decimal(by_round[str(r)].cost.amount) for r in (1, 2, 3))
    mean, slope = (y1 + y2 + y3) / 3, (y3 - y1) / 2
    expected = 3 * mean + slope * (2 + 3 + 4) - Decimal(by_round["4"].cost.amount)
    assert Decimal(stop.estimated_cost_avoided.amount) == expected.quantize(Decimal("0.0000000001")) > 0

    # The summary says it too.
    summary = stub.GetDebateStatus(pb.GetDebateStatusRequest(debate_id=debate_id), timeout=TIMEOUT).debate
    assert summary.stop == stop
    listed = stub.ListDebates(pb.ListDebatesRequest(page_size=100), timeout=TIMEOUT).debates
    assert next(d for d in listed if d.debate_id == debate_id).stop == stop


CONSENSUS = c.StoppingRules(consensus=c.ConsensusRule(min_rounds=1))


def test_a_consensus_stop_ends_a_debate_whose_debaters_converge(api):
    stub, _ = api
    models = ("sim/debater-converging", "sim/debater-converging")
    debate_id, events = run(stub, config(models, "sim/judge", 5, CONSENSUS))
    debate = stub.GetDebate(pb.GetDebateRequest(debate_id=debate_id), timeout=TIMEOUT).debate
    assert debate.state == pb.DEBATE_STATE_COMPLETED, debate.end_reason
    assert (debate.stop.rule, debate.stop.after_round, debate.stop.rounds_not_played) == (
        c.STOPPING_RULE_CONSENSUS,
        2,
        5 - debate.stop.rounds_played,
    )
    assert debate.stop.rounds_played == 2
    consensus = {
        e.round_assessed.assessment.round_number: e.round_assessed.assessment.consensus
        for e in events
        if e.HasField("round_assessed")
    }
    assert consensus == {1: False, 2: True}  # round 1: each states its own stance
    assert kinds(events).count("debate_stopped") == 1 and kinds(events)[-1] == "debate_completed"
    assert max(e.round_started.round_number for e in events if e.HasField("round_started")) <= 3

    # A stopped debate is re-judged over the rounds it played, and is not continued.
    rejudged = stub.RejudgeDebate(
        pb.RejudgeDebateRequest(debate_id=debate_id, judge=c.JudgeConfig(models=["sim/judge"]), request_id="r1"),
        timeout=TIMEOUT,
    ).verdict_version
    assert rejudged.version == 2 and [a.round_number for a in rejudged.assessments] == [1, 2]
    with pytest.raises(grpc.RpcError) as refused:
        stub.ContinueDebate(
            pb.ContinueDebateRequest(debate_id=debate_id, extra_rounds=1, request_id="c1"), timeout=TIMEOUT
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "stopping rule" in refused.value.details()


def test_a_consensus_rule_does_not_stop_debaters_who_do_not_converge(api):
    stub, _ = api
    debate_id, events = run(stub, config(("sim/debater", "sim/debater"), "sim/judge", 5, CONSENSUS))
    debate = stub.GetDebate(pb.GetDebateRequest(debate_id=debate_id), timeout=TIMEOUT).debate
    assert debate.state == pb.DEBATE_STATE_COMPLETED, debate.end_reason
    assert not debate.HasField("stop") and "debate_stopped" not in kinds(events)
    assessments = [e.round_assessed.assessment for e in events if e.HasField("round_assessed")]
    assert [a.round_number for a in assessments] == [1, 2, 3, 4, 5] and not any(a.consensus for a in assessments)
    assert len(debate.rounds) == 5


def test_a_bad_stopping_config_is_invalid_argument_with_field_details(api):
    stub, _ = api
    before = len(stub.ListDebates(pb.ListDebatesRequest(page_size=100), timeout=TIMEOUT).debates)
    bad = c.StoppingRules(
        judge_decided=c.JudgeDecidedRule(min_rounds=4, min_margin=-1, min_confidence=1.5),
        consensus=c.ConsensusRule(min_rounds=-2),
    )
    with pytest.raises(grpc.RpcError) as raised:
        stub.CreateDebate(
            pb.CreateDebateRequest(config=config(("sim/debater", "sim/debater"), "sim/judge", 3, bad)), timeout=TIMEOUT
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, violations = error_details(raised.value)
    assert sorted(field for field, _ in violations) == [
        "config.stopping.consensus.min_rounds",
        "config.stopping.judge_decided.min_confidence",
        "config.stopping.judge_decided.min_margin",
        "config.stopping.judge_decided.min_rounds",
    ]
    assert any("format.round_limit (3)" in text for _, text in violations)
    never = c.StoppingRules(consensus=c.ConsensusRule(min_rounds=3))  # checked on rounds 1-2 only: could never fire
    with pytest.raises(grpc.RpcError) as raised:
        stub.CreateDebate(
            pb.CreateDebateRequest(config=config(("sim/debater", "sim/debater"), "sim/judge", 3, never)),
            timeout=TIMEOUT,
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in error_details(raised.value)[1]] == ["config.stopping.consensus.min_rounds"]
    assert len(stub.ListDebates(pb.ListDebatesRequest(page_size=100), timeout=TIMEOUT).debates) == before


def test_the_estimate_is_near_what_the_rounds_not_played_would_have_cost(api):
    """The same 6-round debate without the rule plays every round: what it costs more than the
    stopped one is what the stop saved, to compare with the estimate (printed). Later rounds cost
    more (their prompts carry more of the transcript): the mean of the played rounds gave 48% of the
    saving here, the linear fit gives 101%; the bounds guard that."""
    stub, accounting = api
    rule = c.StoppingRules(judge_decided=c.JudgeDecidedRule(min_rounds=2, min_margin=1.0, min_confidence=0.6))
    models = ("fake/a", "fake/b")
    stopped_id, _ = run(stub, config(models, "sim/judge-decisive@3", 6, rule))
    full_id, full_events = run(stub, config(models, "sim/judge-decisive@3", 6, c.StoppingRules()))
    assert "debate_stopped" not in kinds(full_events)

    def total(debate_id: str) -> Decimal:
        cost = accounting.GetDebateCost(acc.GetDebateCostRequest(debate_id=debate_id), timeout=TIMEOUT).cost
        return Decimal(cost.total.amount)

    stop = stub.GetDebate(pb.GetDebateRequest(debate_id=stopped_id), timeout=TIMEOUT).debate.stop
    estimate, saved = Decimal(stop.estimated_cost_avoided.amount), total(full_id) - total(stopped_id)
    print(
        f"\n6-round debate: full {total(full_id)} USD, stopped after round {stop.after_round} {total(stopped_id)} USD;"
        f" saved {saved} USD, estimated {estimate} USD ({estimate / saved:.0%} of the saving)"
    )
    assert saved > 0 and Decimal("0.8") * saved <= estimate <= Decimal("1.25") * saved
