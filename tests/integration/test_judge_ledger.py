"""Judge calls billed and then lost (issue 14, kind 4): a judge request that fails still names every
model call it made (a `judge.v1.BilledCalls` status detail), and the orchestrator records each one
under its own key before the debate ends, so the ledger equals what the provider billed.

From the judge service over gRPC, through the orchestrator's gRPC judge client, to a debate with an
in-memory ledger; and the issue's example end to end: a judge model (the local OpenAI-compatible
fake) that always answers JSON with trailing commas, with the real accounting service.
"""

from __future__ import annotations

import sqlite3
import time
from decimal import Decimal

import grpc
import pytest
from debate.common.v1 import common_pb2 as c
from debate.judge.v1 import judge_pb2, judge_pb2_grpc
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc as pbg

from services.common.errors import Aborted, Unavailable
from services.common.grpc_errors import error_details, status_details
from services.common.usage import Usage, usage_to_proto
from services.judge.server import build_service as build_judge
from services.judge.settings import JudgeSettings
from services.orchestrator.clients import GrpcJudge
from services.orchestrator.judging import billed_calls
from services.orchestrator.server import build_service as build_orchestrator
from services.orchestrator.settings import OrchestratorSettings
from tests.reliability.inprocess import InProcessSuite
from tests.support.fake_openai import Behavior, FakeOpenAIServer
from tests.support.judge_fakes import FlakyJudgeLLM
from tests.support.orchestrator_fakes import MemoryAccounting, MemoryJudge, ScriptedLLM

S = pb.DebateState
# An answer of the right shape, with trailing commas: not JSON, so refused every time.
TRAILING_COMMAS = (
    '{"debaters": {"A": {"scores": {"argument_strength": 7, "evidence": 6, "rebuttal": 5, "clarity": 8,}, '
    '"rationale": "Debater A argued well.",}, "B": {"scores": {"argument_strength": 5, "evidence": 5, '
    '"rebuttal": 5, "clarity": 5,}, "rationale": "Debater B argued less well.",},},}'
)


def config(rounds: int = 1, judge_models=("sim/judge",), model: str = "sim/debater") -> c.DebateConfig:
    return c.DebateConfig(
        topic="Should cities ban cars from their centres?",
        participants=[
            c.Participant(name="Ada", model=model, persona="an urbanist", stance="for"),
            c.Participant(name="Milo", model=model, persona="a shopkeeper", stance="against"),
        ],
        judge=c.JudgeConfig(models=list(judge_models)),
        format=c.DebateFormat(round_limit=rounds),
        max_tokens_per_turn=64,
    )


@pytest.fixture
async def judge_service():
    started = []

    async def start(llm) -> str:
        service = await build_judge(JudgeSettings(port=0, judge_max_repairs=2), llm)
        await service.start()
        started.append(service)
        return service.address

    yield start
    for service in started:
        await service.stop(grace=0)


async def run_debate(tmp_path, judge, cfg: c.DebateConfig, **settings) -> tuple[pb.Debate, MemoryAccounting]:
    accounting = MemoryAccounting()
    orchestrator_settings = OrchestratorSettings(port=0, data_dir=str(tmp_path), **settings)
    service = await build_orchestrator(
        orchestrator_settings, llm=ScriptedLLM(chunks=6), judge=judge, accounting=accounting
    )
    port = await service.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pbg.OrchestratorServiceStub(channel)
            debate_id = (await stub.CreateDebate(pb.CreateDebateRequest(config=cfg))).debate.debate_id
            await stub.StartDebate(pb.StartDebateRequest(debate_id=debate_id))
            async for _ in stub.StreamDebateEvents(pb.StreamDebateEventsRequest(debate_id=debate_id)):
                pass
            debate = (await stub.GetDebate(pb.GetDebateRequest(debate_id=debate_id))).debate
    finally:
        await service.stop(0)
    return debate, accounting


def judge_rows(accounting: MemoryAccounting, debate_id: str) -> dict[str, object]:
    return {k: r for k, r in accounting.records.items() if r.debate_id == debate_id and r.participant == "judge"}


# --------------------------------------------------------------------------- the judge service


async def test_a_failed_request_names_every_call_in_a_billed_calls_detail(judge_service):
    address = await judge_service(FlakyJudgeLLM([TRAILING_COMMAS] * 10))
    request = judge_pb2.EvaluateRoundRequest(
        debate_id="d-7",
        topic="Remote work is better",
        round_number=1,
        debaters=[judge_pb2.Debater(name="ada", stance="for"), judge_pb2.Debater(name="milo", stance="against")],
        turns=[judge_pb2.DebaterTurn(debater="ada", text="Yes."), judge_pb2.DebaterTurn(debater="milo", text="No.")],
        request_id="debates/d-7/rounds/1/judge",
    )
    async with grpc.aio.insecure_channel(address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await judge_pb2_grpc.JudgeServiceStub(channel).EvaluateRound(request, timeout=30)
    assert failed.value.code() == grpc.StatusCode.ABORTED
    info, _ = error_details(failed.value)
    assert info.reason == "JUDGE_OUTPUT_INVALID" and info.metadata["billed_calls"] == "6"
    details = [d for d in status_details(failed.value) if d.Is(judge_pb2.BilledCalls.DESCRIPTOR)]
    assert len(details) == 1
    billed = judge_pb2.BilledCalls()
    details[0].Unpack(billed)
    assert [(call.request_id, call.attempt, call.attempts, call.accepted) for call in billed.calls] == [
        (f"debates/d-7/rounds/1/judge/judge/sim/judge/ordering/{o}/attempts/{a}", a, 3, False)
        for o in (0, 1)
        for a in (1, 2, 3)
    ]
    assert all(call.usage.prompt_tokens > 0 and call.usage.completion_tokens > 0 for call in billed.calls)
    assert sum(call.usage.completion_tokens for call in billed.calls) == int(info.metadata["spent_completion_tokens"])


async def test_the_orchestrators_judge_client_keeps_the_calls_on_its_error(judge_service, tmp_path):
    address = await judge_service(FlakyJudgeLLM([TRAILING_COMMAS] * 10))
    client = GrpcJudge(OrchestratorSettings(port=0, data_dir=str(tmp_path), judge_service_addr=address))
    try:
        with pytest.raises(Aborted) as failed:
            await client.render_verdict(
                judge_pb2.RenderVerdictRequest(
                    debate_id="d-8",
                    topic="Remote work is better",
                    debaters=[judge_pb2.Debater(name="ada"), judge_pb2.Debater(name="milo")],
                    rounds=[
                        judge_pb2.RoundTranscript(
                            round_number=1,
                            turns=[
                                judge_pb2.DebaterTurn(debater="ada", text="Yes."),
                                judge_pb2.DebaterTurn(debater="milo", text="No."),
                            ],
                        )
                    ],
                    request_id="debates/d-8/verdict",
                )
            )
    finally:
        await client.close()
    assert failed.value.reason == "JUDGE_OUTPUT_INVALID"
    calls = billed_calls(failed.value)
    assert len(calls) == 6 and len({call.request_id for call in calls}) == 6
    assert all(call.request_id.startswith("debates/d-8/verdict/verdict/sim/judge/ordering/") for call in calls)


# --------------------------------------------------------------------------- the orchestrator


async def test_a_debate_whose_judge_never_answers_validly_has_every_judge_call_in_its_ledger(judge_service, tmp_path):
    llm = FlakyJudgeLLM([TRAILING_COMMAS] * 10)
    address = await judge_service(llm)
    judge = GrpcJudge(OrchestratorSettings(port=0, data_dir=str(tmp_path / "client"), judge_service_addr=address))
    try:
        debate, accounting = await run_debate(tmp_path, judge, config())
    finally:
        await judge.close()
    assert debate.state == S.DEBATE_STATE_FAILED and debate.end_reason.startswith("JUDGE_OUTPUT_INVALID")
    rows = judge_rows(accounting, debate.debate_id)
    asked = sorted(r.request_id for r in llm.requests)
    assert sorted(rows) == asked and len(asked) == 6  # 2 orderings x (1 answer + 2 repairs), asked once
    for key, row in rows.items():
        assert row.role == c.ROLE_JUDGE and row.round_number == 1 and row.attempt == int(key.rsplit("/", 1)[1])
        assert row.usage.prompt_tokens > 0 and not row.usage.estimated
    assert debate.cost.usage.total_tokens == sum(r.usage.total_tokens for r in accounting.records.values())


def _calls(prefix: str, n: int) -> list[c.JudgeCall]:
    return [
        c.JudgeCall(
            model="sim/judge",
            request_id=f"{prefix}/judge/sim/judge/ordering/0/attempts/{a}",
            attempt=a,
            attempts=n,
            usage=usage_to_proto(Usage(prompt_tokens=100 * a, completion_tokens=10 * a)),
        )
        for a in range(1, n + 1)
    ]


def _failure(cls, reason: str, calls: list[c.JudgeCall]):
    error = cls(f"judge service: {reason}", reason=reason)
    error.details.append(judge_pb2.BilledCalls(calls=calls))
    return error


async def test_each_try_of_a_failing_judge_is_recorded_under_its_own_keys(tmp_path):
    """The provider failed under the judge twice, then the judge answered: the calls of the failed
    tries are recorded under their keys, and each try was asked under its own request id."""
    judge = MemoryJudge()
    evaluate = judge.evaluate_round
    asked: list[str] = []

    async def flaky(request):
        asked.append(request.request_id)
        if len(asked) <= 2:
            raise _failure(Aborted, "PROVIDER_ERROR", _calls(request.request_id, len(asked)))
        return await evaluate(request)

    judge.evaluate_round = flaky
    debate, accounting = await run_debate(tmp_path, judge, config(), judge_attempts=3)
    assert debate.state == S.DEBATE_STATE_COMPLETED
    prefix = f"debates/{debate.debate_id}/rounds/1/judge"
    assert asked == [prefix, f"{prefix}/tries/2", f"{prefix}/tries/3"]
    rows = judge_rows(accounting, debate.debate_id)
    failed_tries = [k for k in rows if "/ordering/" in k]
    assert sorted(failed_tries) == sorted(call.request_id for n in (1, 2) for call in _calls(asked[n - 1], n))
    assert all(rows[k].role == c.ROLE_JUDGE and rows[k].round_number == 1 for k in failed_tries)
    assert debate.cost.usage.total_tokens == sum(r.usage.total_tokens for r in accounting.records.values())


async def test_the_same_call_reported_by_several_tries_is_recorded_once(tmp_path):
    """A judge that was unavailable reports the same calls on every try (the same keys recur):
    the ledger keeps one row per key, and the debate ends with the judge's reason."""
    judge = MemoryJudge()
    calls = _calls("debates/x/rounds/1/judge", 2)

    async def down(request):
        raise _failure(Unavailable, "JUDGE_UNAVAILABLE", calls)

    judge.evaluate_round = down
    debate, accounting = await run_debate(tmp_path, judge, config(), judge_attempts=3)
    assert debate.state == S.DEBATE_STATE_FAILED and debate.end_reason.startswith("JUDGE_UNAVAILABLE")
    rows = judge_rows(accounting, debate.debate_id)
    assert sorted(rows) == sorted(call.request_id for call in calls)
    assert accounting.duplicates == 2 * len(calls)  # tries 2 and 3 reported them again


async def test_a_failed_verdict_records_its_calls_as_verdict_calls(tmp_path):
    judge = MemoryJudge()

    async def refused(request):
        raise _failure(Aborted, "JUDGE_OUTPUT_INVALID", _calls(request.request_id, 3))

    judge.render_verdict = refused
    debate, accounting = await run_debate(tmp_path, judge, config(rounds=1))
    assert debate.state == S.DEBATE_STATE_FAILED and debate.end_reason.startswith("JUDGE_OUTPUT_INVALID")
    verdict_rows = [r for r in judge_rows(accounting, debate.debate_id).values() if r.role == c.ROLE_VERDICT]
    assert sorted(r.request_id for r in verdict_rows) == sorted(
        call.request_id for call in _calls(f"debates/{debate.debate_id}/verdict", 3)
    )
    assert [r.attempt for r in sorted(verdict_rows, key=lambda r: r.attempt)] == [1, 2, 3]


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def fake():
    with FakeOpenAIServer(default=Behavior(text=TRAILING_COMMAS)) as server:
        yield server


@pytest.fixture(scope="module")
def suite(tmp_path_factory, fake):
    price = {"input_per_million": "0.4", "output_per_million": "1.6"}
    endpoints = {"fake": {"api_base": fake.base_url, "price": price}}
    models = {"llm_endpoints": endpoints, "llm_allowed_models": ["sim/*", "fake/*"]}
    running = InProcessSuite(
        tmp_path_factory.mktemp("judge-ledger"),
        overrides={
            "accounting": {"llm_endpoints": endpoints},
            "judge": {**models, "judge_max_repairs": 2},
            "orchestrator": {**models, "sim_tokens_per_second": 0.0, "sim_first_token_latency": 0.0},
        },
    )
    try:
        running.start()
        yield running
    finally:
        running.stop()


def _ledger(suite: InProcessSuite, debate_id: str) -> list[tuple]:
    path = next(p for p in suite.root.rglob("ledger.sqlite3"))
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute(
            "SELECT request_id, role, attempt, prompt_tokens, completion_tokens, estimated FROM usage "
            "WHERE debate_id=? AND participant='judge'",
            (debate_id,),
        ).fetchall()
    finally:
        db.close()


def test_a_judge_answering_trailing_commas_fails_the_debate_and_the_ledger_equals_the_bill(suite, fake):
    fake.reset()
    with grpc.insecure_channel(suite.addresses["orchestrator"]) as channel:
        stub = pbg.OrchestratorServiceStub(channel)
        cfg = config(judge_models=["fake/strict-judge"])
        debate_id = stub.CreateDebate(pb.CreateDebateRequest(config=cfg), timeout=30).debate.debate_id
        stub.StartDebate(pb.StartDebateRequest(debate_id=debate_id), timeout=30)
        deadline = time.monotonic() + 120
        while (debate := stub.GetDebate(pb.GetDebateRequest(debate_id=debate_id), timeout=30).debate).state in (
            S.DEBATE_STATE_QUEUED,
            S.DEBATE_STATE_RUNNING,
        ):
            assert time.monotonic() < deadline, "the debate did not end"
            time.sleep(0.05)
    assert debate.state == S.DEBATE_STATE_FAILED and debate.end_reason.startswith("JUDGE_OUTPUT_INVALID"), (
        debate.end_reason
    )
    billed = fake.billed
    assert billed and all(b.outcome == "complete" and b.usage_sent for b in billed)
    ledger = _ledger(suite, debate_id)
    # every call the provider billed is one ledger row, with the usage the provider reported
    assert len(ledger) == len(billed) == len(fake.requests)
    assert sorted((row[3], row[4]) for row in ledger) == sorted((b.prompt_tokens, b.completion_tokens) for b in billed)
    assert all(row[1] == "judge" and not row[5] for row in ledger)
    # each ballot (one per ordering: 2 debaters, 2 orderings) answered at most 1 + 2 repairs, one of them all three
    per_ballot: dict[str, list[int]] = {}
    for request_id, _, attempt, *_ in ledger:
        per_ballot.setdefault(request_id.split("/attempts/")[0], []).append(attempt)
    assert len(per_ballot) == 2 and max(len(a) for a in per_ballot.values()) == 3
    assert all(sorted(a) == list(range(1, len(a) + 1)) for a in per_ballot.values())
    # and the debate's cost (accounting's GetDebateCost, stored at its end) is the provider's bill
    rate_in, rate_out = Decimal("0.4") / 10**6, Decimal("1.6") / 10**6
    bill = sum((b.prompt_tokens * rate_in + b.completion_tokens * rate_out for b in billed), Decimal(0))
    assert Decimal(debate.cost.total.amount) == bill
    assert debate.cost.usage.prompt_tokens >= sum(b.prompt_tokens for b in billed)  # debaters (sim) are free
