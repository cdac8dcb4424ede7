"""The accounting service in process on port 0, over a real channel, on each ledger backend
(SQLite and PostgreSQL: tests/support/ledgers.py); and the orchestrator's client of it
(services/orchestrator/clients.py), which coalesces usage records into BatchRecordUsage calls."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from decimal import Decimal

import grpc
import pytest
import tiktoken
from debate.accounting.v1 import accounting_pb2 as pb
from debate.accounting.v1 import accounting_pb2_grpc
from debate.common.v1 import common_pb2

from services.accounting.server import build_service
from services.accounting.settings import AccountingSettings
from services.accounting.store import UsageRow
from services.common import errors
from services.common.auth import bearer_metadata
from services.common.grpc_errors import error_details
from services.orchestrator.clients import GrpcAccounting, _domain_error
from services.orchestrator.settings import OrchestratorSettings

SONNET = "claude-3-5-sonnet-20241022"
OPUS = "claude-3-opus-20240229"
PLAN_TEXTS = [
    "Simple test message.",
    "A longer message with more tokens to count accurately.",
    "Technical content: async/await, React.FC<Props>, TypeScript generics",
    "Very long " + "message " * 100,
]
CHAT = [
    common_pb2.ChatMessage(role="system", content="You are a helpful assistant."),
    common_pb2.ChatMessage(role="user", content="What is the capital of France?"),
    common_pb2.ChatMessage(role="assistant", content="The capital of France is Paris."),
]


@pytest.fixture
async def service(ledger_backend):
    svc = await build_service(AccountingSettings(port=0, **ledger_backend.settings()))
    await svc.start()
    yield svc
    await svc.stop(grace=0)


@pytest.fixture
async def stub(service):
    async with grpc.aio.insecure_channel(service.address) as channel:
        yield accounting_pb2_grpc.AccountingServiceStub(channel)


@pytest.fixture
def ledger_rows(ledger_backend):
    return ledger_backend.count


def usage(prompt: int, completion: int, **extra) -> common_pb2.TokenUsage:
    return common_pb2.TokenUsage(prompt_tokens=prompt, completion_tokens=completion, **extra)


def record(
    request_id: str,
    *,
    participant="pro",
    role=common_pb2.ROLE_DEBATER,
    round_number=1,
    model=SONNET,
    tokens=(1000, 500),
    debate_id="d1",
    **extra,
) -> pb.RecordUsageRequest:
    return pb.RecordUsageRequest(
        request_id=request_id,
        debate_id=debate_id,
        participant=participant,
        role=role,
        round_number=round_number,
        model=model,
        attempt=1,
        usage=usage(*tokens),
        **extra,
    )


async def expect_error(call, code: grpc.StatusCode):
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call
    assert failed.value.code() == code, failed.value.details()
    return error_details(failed.value)


@pytest.mark.parametrize(
    "model,tokens,amount",
    [
        (SONNET, (1_000_000, 1_000_000), "18"),
        ("claude-3-5-haiku-20241022", (500_000, 250_000), "1.4"),
        ("gpt-4", (100_000, 50_000), "6"),
        ("sim/debater", (100_000, 50_000), "0"),
    ],
)
async def test_calculate_cost_is_exact(stub, model, tokens, amount):
    reply = await stub.CalculateCost(pb.CalculateCostRequest(model=model, usage=usage(*tokens)), timeout=5)
    assert reply.cost.amount == amount and reply.cost.currency_code == "USD"
    assert Decimal(reply.input_cost.amount) + Decimal(reply.output_cost.amount) == Decimal(amount)


async def test_calculate_cost_reports_the_price_and_its_source(stub):
    reply = await stub.CalculateCost(
        pb.CalculateCostRequest(model="anthropic/" + SONNET, usage=usage(100, 50)), timeout=5
    )
    assert (reply.price.input_per_million, reply.price.output_per_million) == ("3", "15")
    assert reply.price.cached_input_per_million == "0.3" and reply.price.reasoning_per_million == ""
    assert reply.price.source.startswith("project-prices-")
    gpt4o = await stub.CalculateCost(
        pb.CalculateCostRequest(model="gpt-4o", usage=usage(2000, 10, cached_prompt_tokens=1000)), timeout=5
    )
    assert gpt4o.price.source.startswith("litellm-") and gpt4o.cached_input_cost.amount == "0.00125"


@pytest.mark.parametrize("prompt,completion", [(100, 50), (1000, 500), (10_000, 5000), (100_000, 50_000)])
async def test_cost_is_linear(stub, prompt, completion):
    reply = await stub.CalculateCost(pb.CalculateCostRequest(model=SONNET, usage=usage(prompt, completion)), timeout=5)
    assert Decimal(reply.cost.amount) == Decimal(prompt) * 3 / 1_000_000 + Decimal(completion) * 15 / 1_000_000


async def test_count_tokens_equals_tiktoken(stub):
    encoder = tiktoken.encoding_for_model("gpt-4")
    for text in PLAN_TEXTS:
        reply = await stub.CountTokens(pb.CountTokensRequest(model="gpt-4", text=text), timeout=5)
        assert reply.tokens == len(encoder.encode(text))
        assert (reply.method, reply.tokenizer) == (pb.COUNT_METHOD_EXACT, "tiktoken/cl100k_base")


@pytest.mark.parametrize("model", [SONNET, "gpt-4", "gpt-3.5-turbo", "claude-3-5-haiku-20241022"])
async def test_three_message_chat_counts_10_to_50(stub, model):
    reply = await stub.CountTokens(pb.CountTokensRequest(model=model, messages=CHAT), timeout=5)
    assert 10 < reply.tokens < 50
    assert reply.method == (pb.COUNT_METHOD_ESTIMATE if "claude" in model else pb.COUNT_METHOD_EXACT)


async def test_ten_concurrent_identical_records_leave_one_row(stub, ledger_rows):
    replies = await asyncio.gather(
        *(stub.RecordUsage(record("debates/d1/rounds/1/turns/pro/attempts/1"), timeout=5) for _ in range(10))
    )
    assert sorted(r.duplicate for r in replies) == [False] + [True] * 9
    assert len({r.record.SerializeToString() for r in replies}) == 1
    assert ledger_rows() == 1
    cost = (await stub.GetDebateCost(pb.GetDebateCostRequest(debate_id="d1"), timeout=5)).cost
    assert cost.total.amount == "0.0105" and cost.by_model[0].calls == 1


async def test_debate_total_is_the_sum_of_its_parts(stub):
    calls = []
    for r in (1, 2, 3):
        calls += [record(f"t/{r}/{p}", participant=p, round_number=r) for p in ("pro", "con")]
        calls.append(record(f"j/{r}", participant="judge", role=common_pb2.ROLE_JUDGE, round_number=r, model=OPUS))
    calls.append(
        record("v", participant="judge", role=common_pb2.ROLE_VERDICT, round_number=3, model=OPUS, tokens=(2000, 1000))
    )
    parts = [Decimal((await stub.RecordUsage(c, timeout=5)).record.cost.amount) for c in calls]
    cost = (await stub.GetDebateCost(pb.GetDebateCostRequest(debate_id="d1"), timeout=5)).cost
    assert Decimal(cost.total.amount) == sum(parts) == Decimal("0.3255")
    assert (cost.usage.prompt_tokens, cost.usage.completion_tokens, cost.usage.total_tokens) == (11000, 5500, 16500)
    assert [(line.key, line.cost.amount, line.calls) for line in cost.by_role] == [
        ("debater", "0.063", 6),
        ("judge", "0.1575", 3),
        ("verdict", "0.105", 1),
    ]
    assert [line.key for line in cost.by_round] == ["1", "2", "3"]
    for lines in (cost.by_participant, cost.by_role, cost.by_round, cost.by_model):
        assert sum(Decimal(line.cost.amount) for line in lines) == Decimal(cost.total.amount)
    assert cost.budget.spent.amount == "0.3255" and not cost.budget.HasField("cap")


async def test_bad_input_gets_field_details_and_writes_nothing(stub, ledger_rows):
    info, fields = await expect_error(
        stub.RecordUsage(record("x", tokens=(-5, 10)), timeout=5), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert fields[0][0] == "usage.prompt_tokens" and info.reason == "INVALID_ARGUMENT"
    _, fields = await expect_error(stub.RecordUsage(record(""), timeout=5), grpc.StatusCode.INVALID_ARGUMENT)
    assert [f for f, _ in fields] == ["request_id"]
    _, fields = await expect_error(
        stub.RecordUsage(record("", model="", role=common_pb2.ROLE_UNSPECIFIED), timeout=5),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert [f for f, _ in fields] == ["request_id", "role", "model"]
    info, _ = await expect_error(
        stub.RecordUsage(record("y", model="gpt-99-imaginary"), timeout=5), grpc.StatusCode.NOT_FOUND
    )
    assert info.reason == "MODEL_NOT_PRICED" and info.metadata["model"] == "gpt-99-imaginary"
    _, fields = await expect_error(
        stub.CountTokens(pb.CountTokensRequest(model="gpt-4", text="x" * (10 << 20)), timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert [f for f, _ in fields] == ["text"]
    _, fields = await expect_error(
        stub.CountTokens(pb.CountTokensRequest(model="gpt-4", text="a", messages=CHAT), timeout=5),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert [f for f, _ in fields] == ["text"]
    await expect_error(
        stub.CalculateCost(pb.CalculateCostRequest(model="nope", usage=usage(1, 1)), timeout=5),
        grpc.StatusCode.NOT_FOUND,
    )
    _, fields = await expect_error(
        stub.SetDebateBudget(
            pb.SetDebateBudgetRequest(debate_id="d1", cap=common_pb2.Money(currency_code="EUR", amount="ten")),
            timeout=5,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert [f for f, _ in fields] == ["cap.currency_code", "cap.amount"]
    await expect_error(
        stub.ReserveBudget(pb.ReserveBudgetRequest(reservation_id="r", debate_id="d1", model="nope"), timeout=5),
        grpc.StatusCode.NOT_FOUND,
    )
    await expect_error(
        stub.ReleaseBudget(pb.ReleaseBudgetRequest(reservation_id="unknown"), timeout=5), grpc.StatusCode.NOT_FOUND
    )
    assert ledger_rows() == 0
    cost = (await stub.GetDebateCost(pb.GetDebateCostRequest(debate_id="d1"), timeout=5)).cost
    assert cost.total.amount == "0" and cost.budget.reserved.amount == "0" and not cost.budget.HasField("cap")


async def test_budget_refusal_says_what_is_left(stub):
    capped = await stub.SetDebateBudget(
        pb.SetDebateBudgetRequest(debate_id="d1", cap=common_pb2.Money(currency_code="USD", amount="0.02")), timeout=5
    )
    assert capped.budget.remaining.amount == "0.02"
    held = await stub.ReserveBudget(
        pb.ReserveBudgetRequest(
            reservation_id="r1", debate_id="d1", model=SONNET, prompt_tokens=1000, max_completion_tokens=500
        ),
        timeout=5,
    )
    assert held.granted and held.amount.amount == "0.0105" and held.remaining.amount == "0.0095"
    refused = await stub.ReserveBudget(
        pb.ReserveBudgetRequest(
            reservation_id="r2", debate_id="d1", model=SONNET, prompt_tokens=1000, max_completion_tokens=500
        ),
        timeout=5,
    )
    assert not refused.granted and refused.amount.amount == "0.0105" and refused.remaining.amount == "0.0095"
    committed = await stub.RecordUsage(record("u1", tokens=(1000, 100), reservation_id="r1"), timeout=5)
    assert committed.record.cost.amount == "0.0045"
    budget = (await stub.GetDebateCost(pb.GetDebateCostRequest(debate_id="d1"), timeout=5)).cost.budget
    assert (budget.spent.amount, budget.reserved.amount, budget.remaining.amount) == ("0.0045", "0", "0.0155")
    retried = await stub.ReserveBudget(
        pb.ReserveBudgetRequest(
            reservation_id="r2", debate_id="d1", model=SONNET, prompt_tokens=1000, max_completion_tokens=500
        ),
        timeout=5,
    )
    assert retried.granted
    released = await stub.ReleaseBudget(pb.ReleaseBudgetRequest(reservation_id="r2"), timeout=5)
    assert released.budget.reserved.amount == "0"
    uncapped = await stub.SetDebateBudget(pb.SetDebateBudgetRequest(debate_id="d1"), timeout=5)
    assert not uncapped.budget.HasField("cap") and not uncapped.budget.HasField("remaining")


async def test_estimate_debate_cost(stub):
    config = common_pb2.DebateConfig(
        topic="Should cities ban cars?",
        participants=[
            common_pb2.Participant(name="pro", model=SONNET, persona="urbanist", stance="for"),
            common_pb2.Participant(name="con", model="gpt-4", persona="engineer", stance="against"),
        ],
        judge=common_pb2.JudgeConfig(models=[OPUS], orderings=2),
        format=common_pb2.DebateFormat(round_limit=3, turn_order=common_pb2.TURN_ORDER_SEQUENTIAL),
        context=common_pb2.ContextSettings(max_tokens=4000, window_size=2),
        max_tokens_per_turn=500,
    )
    reply = await stub.EstimateDebateCost(pb.EstimateDebateCostRequest(config=config), timeout=5)
    assert Decimal(reply.worst_case.amount) > Decimal(reply.expected.amount) > 0
    assert sum(Decimal(line.cost.amount) for line in reply.by_model) == Decimal(reply.expected.amount)
    assert reply.worst_case_usage.completion_tokens > reply.expected_usage.completion_tokens
    config.format.round_limit = 0
    _, fields = await expect_error(
        stub.EstimateDebateCost(pb.EstimateDebateCostRequest(config=config), timeout=5),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert [f for f, _ in fields] == ["config.format.round_limit"]


# -- BatchRecordUsage: many usage records in one call, each with its own outcome


def _outcomes(reply: pb.BatchRecordUsageResponse) -> list[str]:
    return [result.WhichOneof("outcome") for result in reply.results]


async def test_batch_record_usage_answers_each_item_alone(stub, service, ledger_rows):
    accounting = service.bindings[0].servicer.accounting
    commits = accounting.usage_commits
    batch = pb.BatchRecordUsageRequest(
        requests=[
            record("b/u1"),
            record("b/u1"),  # the same key again in the same batch: a duplicate, recorded once
            record("b/bad", tokens=(-5, 10)),
            record("", model="", role=common_pb2.ROLE_UNSPECIFIED),
            record("b/unpriced", model="gpt-99-imaginary"),
            record("b/no-reservation", reservation_id="no-such-reservation"),
            record("b/u2", participant="con", tokens=(2000, 0)),
        ]
    )
    reply = await stub.BatchRecordUsage(batch, timeout=10)
    assert _outcomes(reply) == ["response", "response", "error", "error", "error", "error", "response"]
    first, again, bad, empty, unpriced, unreserved, second = reply.results
    assert (first.response.duplicate, again.response.duplicate) == (False, True)
    assert first.response.record == again.response.record and first.response.record.cost.amount == "0.0105"
    assert second.response.record.request_id == "b/u2" and second.response.record.cost.amount == "0.006"
    # Each refusal is what a RecordUsage call of its own answers: code, reason, field paths.
    assert (bad.error.code, bad.error.reason) == (grpc.StatusCode.INVALID_ARGUMENT.value[0], "INVALID_ARGUMENT")
    assert [v.field for v in bad.error.field_violations] == ["usage.prompt_tokens"]
    assert [v.field for v in empty.error.field_violations] == ["request_id", "role", "model"]
    alone_info, alone_fields = await expect_error(
        stub.RecordUsage(batch.requests[3], timeout=5), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert [(v.field, v.description) for v in empty.error.field_violations] == alone_fields
    assert empty.error.reason == alone_info.reason
    assert (unpriced.error.code, unpriced.error.reason) == (grpc.StatusCode.NOT_FOUND.value[0], "MODEL_NOT_PRICED")
    assert unpriced.error.metadata["model"] == "gpt-99-imaginary" and not unpriced.error.field_violations
    assert unreserved.error.code == grpc.StatusCode.NOT_FOUND.value[0] and unreserved.error.message
    # The good rows were written, in one transaction; the refused ones wrote nothing.
    assert ledger_rows() == 2 and accounting.usage_commits == commits + 1
    cost = (await stub.GetDebateCost(pb.GetDebateCostRequest(debate_id="d1"), timeout=5)).cost
    assert cost.total.amount == "0.0165" and sum(line.calls for line in cost.by_model) == 2
    # Sent again (a retry after a lost answer): the same outcomes, nothing written twice.
    retry = await stub.BatchRecordUsage(batch, timeout=10)
    assert _outcomes(retry) == _outcomes(reply)
    assert [r.response.duplicate for r in retry.results if r.HasField("response")] == [True, True, True]
    assert [r.response.record for r in retry.results[:2]] == [first.response.record] * 2
    assert ledger_rows() == 2


async def test_batch_record_usage_commits_a_reservation_per_item(stub, ledger_rows):
    await stub.SetDebateBudget(
        pb.SetDebateBudgetRequest(debate_id="d1", cap=common_pb2.Money(currency_code="USD", amount="0.05")), timeout=5
    )
    for r in ("r1", "r2"):
        held = await stub.ReserveBudget(
            pb.ReserveBudgetRequest(
                reservation_id=r, debate_id="d1", model=SONNET, prompt_tokens=1000, max_completion_tokens=500
            ),
            timeout=5,
        )
        assert held.granted
    reply = await stub.BatchRecordUsage(
        pb.BatchRecordUsageRequest(
            requests=[
                record("u1", tokens=(1000, 100), reservation_id="r1"),
                record("u2", tokens=(1000, 100), reservation_id="r2", debate_id="d2"),  # r2 is d1's: refused
                record("u3", tokens=(1000, 100), reservation_id="r2"),
            ]
        ),
        timeout=10,
    )
    assert _outcomes(reply) == ["response", "error", "response"]
    refused = reply.results[1].error
    assert refused.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert [v.field for v in refused.field_violations] == ["reservation_id"]
    budget = (await stub.GetDebateCost(pb.GetDebateCostRequest(debate_id="d1"), timeout=5)).cost.budget
    assert (budget.spent.amount, budget.reserved.amount) == ("0.009", "0")
    assert ledger_rows() == 2


@pytest.mark.parametrize("size", [0, 1001])
async def test_a_bad_batch_fails_whole_and_writes_nothing(stub, ledger_rows, size):
    batch = pb.BatchRecordUsageRequest(requests=[record(f"u{i}") for i in range(size)])
    info, fields = await expect_error(stub.BatchRecordUsage(batch, timeout=10), grpc.StatusCode.INVALID_ARGUMENT)
    assert [f for f, _ in fields] == ["requests"] and info.reason == "INVALID_ARGUMENT"
    assert ledger_rows() == 0


async def test_batch_record_usage_answers_the_costs_asked_for_once_its_items_are_committed(stub, ledger_rows):
    await stub.RecordUsage(record("earlier", tokens=(1000, 0)), timeout=5)
    batch = pb.BatchRecordUsageRequest(
        requests=[record("v1", role=common_pb2.ROLE_VERDICT, round_number=0), record("bad", tokens=(-1, 0))],
        cost_debate_ids=["d1", "d2"],
    )
    reply = await stub.BatchRecordUsage(batch, timeout=10)
    assert _outcomes(reply) == ["response", "error"] and ledger_rows() == 2
    # Each cost is GetDebateCost's answer after the batch: the new row counted, to the digit.
    alone = [(await stub.GetDebateCost(pb.GetDebateCostRequest(debate_id=d), timeout=5)).cost for d in ("d1", "d2")]
    assert list(reply.debate_costs) == alone
    assert reply.debate_costs[0].total.amount == "0.0135" and sum(x.calls for x in reply.debate_costs[0].by_role) == 2
    assert reply.debate_costs[1].total.amount == "0"


async def test_a_bad_cost_debate_id_fails_the_batch_before_anything_is_written(stub, ledger_rows):
    batch = pb.BatchRecordUsageRequest(requests=[record("u1")], cost_debate_ids=["d1", ""])
    info, fields = await expect_error(stub.BatchRecordUsage(batch, timeout=10), grpc.StatusCode.INVALID_ARGUMENT)
    assert [f for f, _ in fields] == ["cost_debate_ids[1]"] and info.reason == "INVALID_ARGUMENT"
    assert ledger_rows() == 0


# -- BatchReserveBudget: many reservations in one call, decided one at a time in order


def reservation(reservation_id: str, *, debate_id="d1", model=SONNET, prompt=1000, completion=500):
    return pb.ReserveBudgetRequest(
        reservation_id=reservation_id,
        debate_id=debate_id,
        model=model,
        prompt_tokens=prompt,
        max_completion_tokens=completion,
    )


async def test_batch_reserve_budget_decides_each_item_in_order_as_reserve_budget_would(stub):
    # SONNET's worst case for 1000 in, 500 out: 0.003 + 0.0075 = 0.0105 USD; the cap holds two.
    await stub.SetDebateBudget(
        pb.SetDebateBudgetRequest(debate_id="d1", cap=common_pb2.Money(currency_code="USD", amount="0.025")), timeout=5
    )
    batch = pb.BatchReserveBudgetRequest(
        requests=[
            reservation("r1"),
            reservation("r1"),  # the same id again: the first's grant, nothing held twice
            reservation("bad", model="", prompt=-1),
            reservation("r2"),
            reservation("r3"),  # would pass the cap: not granted, nothing held
            reservation("unpriced", model="gpt-99-imaginary"),
        ]
    )
    reply = await stub.BatchReserveBudget(batch, timeout=10)
    assert [r.WhichOneof("outcome") for r in reply.results] == [
        "response",
        "response",
        "error",
        "response",
        "response",
        "error",
    ]
    r1, again, bad, r2, r3, unpriced = reply.results
    assert [x.response.granted for x in (r1, again, r2, r3)] == [True, True, True, False]
    assert (r1.response.amount.amount, r2.response.remaining.amount) == ("0.0105", "0.004")
    assert again.response == r1.response  # answered as the first grant, changing nothing
    # Each refusal is what a ReserveBudget call of its own answers: code, reason, field paths.
    alone_info, alone_fields = await expect_error(
        stub.ReserveBudget(batch.requests[2], timeout=5), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert [(v.field, v.description) for v in bad.error.field_violations] == alone_fields
    assert [v.field for v in bad.error.field_violations] == ["model", "prompt_tokens"]
    assert (bad.error.code, bad.error.reason) == (grpc.StatusCode.INVALID_ARGUMENT.value[0], alone_info.reason)
    assert (unpriced.error.code, unpriced.error.reason) == (grpc.StatusCode.NOT_FOUND.value[0], "MODEL_NOT_PRICED")
    # What is held is exactly the two grants, as two ReserveBudget calls would have left it.
    budget = (await stub.GetDebateCost(pb.GetDebateCostRequest(debate_id="d1"), timeout=5)).cost.budget
    assert (budget.reserved.amount, budget.remaining.amount) == ("0.021", "0.004")
    # Each held reservation is committed by its usage record, as a ReserveBudget's is.
    recorded = await stub.BatchRecordUsage(
        pb.BatchRecordUsageRequest(requests=[record("u1", tokens=(1000, 100), reservation_id="r1")]), timeout=10
    )
    assert _outcomes(recorded) == ["response"]
    budget = (await stub.GetDebateCost(pb.GetDebateCostRequest(debate_id="d1"), timeout=5)).cost.budget
    assert (budget.spent.amount, budget.reserved.amount) == ("0.0045", "0.0105")


@pytest.mark.parametrize("size", [0, 1001])
async def test_a_bad_reservation_batch_fails_whole_and_holds_nothing(stub, size):
    await stub.SetDebateBudget(
        pb.SetDebateBudgetRequest(debate_id="d1", cap=common_pb2.Money(currency_code="USD", amount="100")), timeout=5
    )
    batch = pb.BatchReserveBudgetRequest(requests=[reservation(f"r{i}", prompt=1) for i in range(size)])
    info, fields = await expect_error(stub.BatchReserveBudget(batch, timeout=10), grpc.StatusCode.INVALID_ARGUMENT)
    assert [f for f, _ in fields] == ["requests"] and info.reason == "INVALID_ARGUMENT"
    budget = (await stub.GetDebateCost(pb.GetDebateCostRequest(debate_id="d1"), timeout=5)).cost.budget
    assert budget.reserved.amount == "0"


SUITE_KEY, ALICE_KEY = "suite-key-0123456789", "alice-key-0123456789"


async def test_batch_record_usage_is_for_the_suites_own_services_only(ledger_backend, ledger_rows):
    settings = AccountingSettings(
        port=0,
        api_keys=f"{SUITE_KEY}=suite,{ALICE_KEY}=alice",
        internal_callers="suite",
        **ledger_backend.settings(),
    )
    svc = await build_service(settings)
    await svc.start()
    try:
        async with grpc.aio.insecure_channel(svc.address) as channel:
            internal = accounting_pb2_grpc.AccountingServiceStub(channel)
            batch = pb.BatchRecordUsageRequest(requests=[record("u1"), record("u2")])
            info, _ = await expect_error(
                internal.BatchRecordUsage(batch, metadata=bearer_metadata(ALICE_KEY), timeout=5),
                grpc.StatusCode.PERMISSION_DENIED,
            )
            assert info.reason == "INTERNAL_SERVICE" and ledger_rows() == 0
            reply = await internal.BatchRecordUsage(batch, metadata=bearer_metadata(SUITE_KEY), timeout=5)
            assert _outcomes(reply) == ["response", "response"] and ledger_rows() == 2
    finally:
        await svc.stop(grace=0)


# -- the orchestrator's accounting client: records made together go as one BatchRecordUsage call,
# and each caller gets its own outcome, exactly as from a RecordUsage call of its own


@pytest.fixture
def ledger(service):
    """The service's domain object (its commit count), in this process."""
    return service.bindings[0].servicer.accounting


@pytest.fixture
async def client(service):
    """The orchestrator's accounting client, as its composition root builds it."""
    accounting = GrpcAccounting(OrchestratorSettings(accounting_service_addr=service.address, rpc_timeout_seconds=5))
    yield accounting
    await accounting.close()


async def test_records_made_together_go_as_one_call_each_caller_with_its_own_reply(client, ledger, ledger_backend):
    commits = ledger.usage_commits
    replies = await asyncio.gather(*(client.record_usage(record(f"u{i}", tokens=(1000 + i, 0))) for i in range(12)))
    assert client.batches_sent == 1 and ledger.usage_commits == commits + 1
    assert [r.record.request_id for r in replies] == [f"u{i}" for i in range(12)]
    assert [r.record.usage.prompt_tokens for r in replies] == [1000 + i for i in range(12)]
    assert not any(r.duplicate for r in replies) and ledger_backend.count() == 12
    # One at a time, each is a batch of one.
    for i in range(3):
        alone = await client.record_usage(record(f"v{i}"))
        assert alone.record.request_id == f"v{i}"
    assert client.batches_sent == 4 and ledger_backend.count() == 15


async def test_each_caller_gets_the_error_a_call_of_its_own_would_raise(client, service, ledger_backend):
    bad = record("bad", tokens=(-5, 10))
    unpriced = record("unpriced", model="gpt-99-imaginary")
    outcomes = await asyncio.gather(
        client.record_usage(record("good")),
        client.record_usage(bad),
        client.record_usage(unpriced),
        client.record_usage(record("good")),  # the same key twice: one row, the second a duplicate
        return_exceptions=True,
    )
    assert client.batches_sent == 1
    good, bad_error, unpriced_error, again = outcomes
    assert isinstance(good, pb.RecordUsageResponse) and isinstance(again, pb.RecordUsageResponse)
    assert (good.duplicate, again.duplicate, good.record) == (False, True, again.record)
    # The same type, reason and message as RecordUsage alone, mapped by the client as before.
    async with grpc.aio.insecure_channel(service.address) as channel:
        stub = accounting_pb2_grpc.AccountingServiceStub(channel)
        for request, error in ((bad, bad_error), (unpriced, unpriced_error)):
            with pytest.raises(grpc.aio.AioRpcError) as alone:
                await stub.RecordUsage(request, timeout=5)
            expected = _domain_error("accounting", alone.value)
            assert (type(error), error.reason, error.message) == (type(expected), expected.reason, expected.message)
    assert isinstance(bad_error, errors.FailedPrecondition) and "usage.prompt_tokens" in bad_error.message
    assert isinstance(unpriced_error, errors.NotFound) and unpriced_error.reason == "MODEL_NOT_PRICED"
    assert ledger_backend.count() == 1


class SlowCommits:
    """The service's store, with each write held on the ledger thread until `release` is set (so
    the RPC's deadline passes while the rows are still being written; they are written after)."""

    def __init__(self, store):
        self.store = store
        self.release = threading.Event()
        self.written = threading.Event()

    def record(self, row: UsageRow):
        self.release.wait(10)
        try:
            return self.store.record(row)
        finally:
            self.written.set()

    def record_many(self, rows: Sequence[UsageRow]):
        self.release.wait(10)
        try:
            return self.store.record_many(rows)
        finally:
            self.written.set()

    def __getattr__(self, name):
        return getattr(self.store, name)


async def test_a_failed_batch_call_reaches_every_caller_and_a_retry_records_nothing_twice(
    service, ledger, ledger_backend
):
    slow = SlowCommits(ledger.store)
    ledger.store = slow
    client = GrpcAccounting(OrchestratorSettings(accounting_service_addr=service.address, rpc_timeout_seconds=0.5))
    try:
        requests = [record(f"u{i}") for i in range(4)]
        outcomes = await asyncio.gather(*(client.record_usage(r) for r in requests), return_exceptions=True)
        assert client.batches_sent == 1
        assert all(isinstance(o, errors.DeadlineExceeded) for o in outcomes), outcomes
        assert len({id(o) for o in outcomes}) == 4  # each caller its own error
        slow.release.set()  # the rows are written after all: the answer was lost, not the records
        assert await asyncio.to_thread(slow.written.wait, 10)
        await asyncio.sleep(0.2)
        retried = await asyncio.gather(*(client.record_usage(r) for r in requests))
        assert [r.duplicate for r in retried] == [True] * 4
        assert ledger_backend.count() == 4
    finally:
        slow.release.set()
        await client.close()


async def test_a_cancelled_caller_leaves_the_others_answered(client, ledger_backend):
    tasks = [asyncio.ensure_future(client.record_usage(record(f"u{i}"))) for i in range(3)]
    await asyncio.sleep(0)  # each is waiting for its answer; the batch is not sent yet
    tasks[1].cancel()  # its item is left out of the batch
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[1], asyncio.CancelledError)
    assert [d.record.request_id for d in (done[0], done[2])] == ["u0", "u2"]
    assert ledger_backend.count() == 2 and client.batches_sent == 1


async def test_closing_the_client_answers_every_waiting_caller(client, service, ledger):
    slow = SlowCommits(ledger.store)
    ledger.store = slow
    try:
        waiting = [asyncio.ensure_future(client.record_usage(record(f"u{i}"))) for i in range(3)]
        await asyncio.sleep(0.2)  # the batch is in flight, held by the ledger
        await client.close()
        outcomes = await asyncio.gather(*waiting, return_exceptions=True)
        assert all(isinstance(o, errors.DomainError) for o in outcomes), outcomes
    finally:
        slow.release.set()


async def test_reservations_made_together_go_as_one_call_decided_in_the_order_made(client, service):
    async with grpc.aio.insecure_channel(service.address) as channel:
        stub = accounting_pb2_grpc.AccountingServiceStub(channel)
        await stub.SetDebateBudget(
            pb.SetDebateBudgetRequest(debate_id="d1", cap=common_pb2.Money(currency_code="USD", amount="0.025")),
            timeout=5,
        )
    outcomes = await asyncio.gather(
        client.reserve_budget(reservation("r1")),
        client.reserve_budget(reservation("bad", model="")),
        client.reserve_budget(reservation("r2")),
        client.reserve_budget(reservation("r3")),
        return_exceptions=True,
    )
    assert client.reservation_batches_sent == 1
    r1, bad, r2, r3 = outcomes
    assert isinstance(r1, pb.ReserveBudgetResponse) and isinstance(r2, pb.ReserveBudgetResponse)
    assert isinstance(r3, pb.ReserveBudgetResponse)
    assert (r1.granted, r2.granted, r3.granted) == (True, True, False)  # in the order they were made
    assert isinstance(bad, errors.FailedPrecondition) and bad.reason == "INVALID_ARGUMENT"
    # One at a time, each is a batch of one, answered as before (a repeat: the first grant).
    again = await client.reserve_budget(reservation("r1"))
    assert (again.granted, again.amount) == (True, r1.amount) and client.reservation_batches_sent == 2


async def test_records_then_cost_go_as_one_call_of_their_own(client, service, ledger_backend):
    pending = asyncio.ensure_future(client.record_usage(record("turn")))  # a coalesced record meanwhile
    outcomes, cost = await client.record_usages_then_cost(
        [record("v1", role=common_pb2.ROLE_VERDICT, round_number=0), record("bad", tokens=(-5, 10))], "d1"
    )
    await pending
    assert client.batches_sent == 2  # the coalesced record's batch, and the call above: its own
    good, bad = outcomes
    assert isinstance(good, pb.RecordUsageResponse) and good.record.request_id == "v1"
    assert isinstance(bad, errors.FailedPrecondition) and bad.reason == "INVALID_ARGUMENT"
    async with grpc.aio.insecure_channel(service.address) as channel:
        stub = accounting_pb2_grpc.AccountingServiceStub(channel)
        now = (await stub.GetDebateCost(pb.GetDebateCostRequest(debate_id="d1"), timeout=5)).cost
    assert sum(line.calls for line in cost.by_role) >= 1 and ledger_backend.count() == 2
    assert cost.by_role[-1] == now.by_role[-1]  # the verdict's line: read after v1 was committed
