"""Issue 14, kind 5: a configuration that would fail after spending is refused before it spends.

The three real services run in this process (tests/reliability/inprocess.py), their
OpenAI-compatible endpoints served by the fake provider (tests/support/fake_openai.py), which
counts every request: a refused debate must leave it at zero, and store nothing anywhere.

Endpoints (the same LLM_ENDPOINTS for every service, as the launcher gives them):
- `local`: the README's self-hosted server, with a declared price of zero;
- `paid`:  a declared non-zero price, keyed by PRESPEND_PAID_KEY (set);
- `bare`:  no price (the README's example before it declared one);
- `keyed`: a declared price, keyed by PRESPEND_MISSING_KEY (unset);
and `openai/*` pointed at the fake provider with no OPENAI_API_KEY in the environment.
"""

from __future__ import annotations

import importlib
import os
from decimal import Decimal

import grpc
import pytest
from debate.accounting.v1 import accounting_pb2 as acc
from debate.accounting.v1 import accounting_pb2_grpc as accg
from debate.common.v1 import common_pb2 as c
from debate.judge.v1 import judge_pb2 as jpb
from debate.judge.v1 import judge_pb2_grpc as jpbg
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc as pbg

from services.common.grpc_errors import error_details
from services.common.llm.settings import PROVIDER_KEY_ENVS
from tests.reliability.inprocess import InProcessSuite
from tests.support.fake_openai import FakeOpenAIServer

TIMEOUT = 30
PAID_INPUT, PAID_OUTPUT = Decimal(1), Decimal(2)  # USD per million tokens
PROVIDER_VARIABLES = sorted({name for names in PROVIDER_KEY_ENVS.values() for name in names})


def endpoints(base_url: str) -> dict:
    zero = {"input_per_million": "0", "output_per_million": "0"}
    return {
        "local": {"api_base": base_url, "price": zero},
        "paid": {
            "api_base": base_url,
            "api_key_env": "PRESPEND_PAID_KEY",
            "price": {"input_per_million": str(PAID_INPUT), "output_per_million": str(PAID_OUTPUT)},
        },
        "bare": {"api_base": base_url},
        "keyed": {"api_base": base_url, "api_key_env": "PRESPEND_MISSING_KEY", "price": zero},
    }


@pytest.fixture(scope="module")
def fake():
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture(scope="module")
def suite(tmp_path_factory, fake):
    env = pytest.MonkeyPatch()
    for name in [*PROVIDER_VARIABLES, "PRESPEND_MISSING_KEY"]:
        env.delenv(name, raising=False)
    env.setenv("PRESPEND_PAID_KEY", "key-for-the-fake-provider")
    llm = {
        "llm_endpoints": endpoints(fake.base_url),
        "llm_allowed_models": ["sim/*", "local/*", "paid/*", "bare/*", "keyed/*", "openai/gpt-4o-mini"],
        "llm_openai_api_base": fake.base_url,
        "llm_retries": 0,
        "sim_first_token_latency": 0.0,
        "sim_tokens_per_second": 0.0,
    }
    running = InProcessSuite(
        tmp_path_factory.mktemp("prespend"),
        overrides={"orchestrator": llm, "judge": llm, "accounting": {"llm_endpoints": endpoints(fake.base_url)}},
    )
    try:
        running.start()
        yield running
    finally:
        running.stop()
        env.undo()


@pytest.fixture(scope="module")
def stubs(suite):
    channels = {name: grpc.insecure_channel(address) for name, address in suite.addresses.items()}
    yield (
        pbg.OrchestratorServiceStub(channels["orchestrator"]),
        jpbg.JudgeServiceStub(channels["judge"]),
        accg.AccountingServiceStub(channels["accounting"]),
    )
    for channel in channels.values():
        channel.close()


@pytest.fixture
def provider(fake):
    fake.reset()
    return fake


def config(*models: str, **changes) -> c.DebateConfig:
    base = {
        "topic": "Should cities ban cars from their centres?",
        "participants": [
            c.Participant(name=f"debater{i}", model=model, stance="for" if i % 2 == 0 else "against")
            for i, model in enumerate(models or ("local/llama3", "local/llama3"))
        ],
        "judge": c.JudgeConfig(models=["sim/judge"]),
        "format": c.DebateFormat(round_limit=1),
        "max_tokens_per_turn": 64,
    }
    base.update(changes)
    return c.DebateConfig(**base)


def refused(call, request) -> tuple[grpc.StatusCode, str, dict[str, str], list[tuple[str, str]]]:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=TIMEOUT)
    info, violations = error_details(caught.value)
    return caught.value.code(), info.reason if info else "", dict(info.metadata) if info else {}, violations


def refused_before_spending(suite, provider, call, request):
    """The refusal of `request`, checked to have stored nothing and called no provider."""
    before = suite.row_counts()
    outcome = refused(call, request)
    assert suite.row_counts() == before, "a refused request stored something"
    assert provider.requests == [], "a refused request reached the provider"
    return outcome


def run_to_end(orchestrator, cfg: c.DebateConfig) -> pb.Debate:
    debate = orchestrator.CreateDebate(pb.CreateDebateRequest(config=cfg), timeout=TIMEOUT).debate
    orchestrator.StartDebate(pb.StartDebateRequest(debate_id=debate.debate_id), timeout=TIMEOUT)
    for reply in orchestrator.StreamDebateEvents(
        pb.StreamDebateEventsRequest(debate_id=debate.debate_id), timeout=TIMEOUT
    ):
        if reply.event.WhichOneof("payload") in ("debate_completed", "debate_failed"):
            break
    return orchestrator.GetDebate(pb.GetDebateRequest(debate_id=debate.debate_id), timeout=TIMEOUT).debate


# -- the examples ----------------------------------------------------------------------


def test_a_criterion_the_judge_refuses_is_refused_at_create_before_any_debater_is_paid(suite, stubs, provider):
    orchestrator, _, _ = stubs
    rubric = c.Rubric(criteria=[c.Criterion(name="Logic", weight=1), c.Criterion(name="evidence", weight=1)])
    code, reason, _, violations = refused_before_spending(
        suite,
        provider,
        orchestrator.CreateDebate,
        pb.CreateDebateRequest(config=config(judge=c.JudgeConfig(models=["sim/judge"], rubric=rubric))),
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert [field for field, _ in violations] == ["config.judge.rubric.criteria[0].name"]
    assert "lower snake case" in violations[0][1]


def test_an_endpoint_without_a_price_is_refused_saying_how_to_declare_one(suite, stubs, provider):
    orchestrator, _, _ = stubs
    code, _, _, violations = refused_before_spending(
        suite, provider, orchestrator.CreateDebate, pb.CreateDebateRequest(config=config("bare/llama3", "local/llama3"))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in violations] == ["config.participants[0].model"]
    assert "'bare/llama3' has no known price" in violations[0][1]
    assert 'LLM_ENDPOINTS, e.g. {"bare": {"api_base": ..., "price": {"input_per_million": "0"' in violations[0][1]


def test_a_declared_price_runs_the_debate_and_costs_the_declared_amount(suite, stubs, provider):
    orchestrator, _, accounting = stubs
    debate = run_to_end(orchestrator, config("local/llama3", "paid/mistral"))
    assert debate.state == pb.DEBATE_STATE_COMPLETED, debate.end_reason
    billed = {b.model: b for b in provider.billed}
    assert set(billed) == {"llama3", "mistral"} and all(b.outcome == "complete" for b in provider.billed)
    paid = billed["mistral"]
    expected = (paid.prompt_tokens * PAID_INPUT + paid.completion_tokens * PAID_OUTPUT) / Decimal(1_000_000)

    cost = accounting.GetDebateCost(acc.GetDebateCostRequest(debate_id=debate.debate_id), timeout=TIMEOUT).cost
    lines = {line.key: line for line in cost.by_model}
    assert (lines["local/llama3"].cost.amount, lines["local/llama3"].price_source) == ("0", "declared-local")
    assert lines["paid/mistral"].price_source == "declared-paid"
    assert Decimal(lines["paid/mistral"].cost.amount) == expected > 0
    assert Decimal(cost.total.amount) == expected
    assert (lines["paid/mistral"].usage.prompt_tokens, lines["paid/mistral"].usage.completion_tokens) == (
        paid.prompt_tokens,
        paid.completion_tokens,
    )
    price = accounting.CalculateCost(
        acc.CalculateCostRequest(model="local/llama3", usage=c.TokenUsage(prompt_tokens=10, completion_tokens=5)),
        timeout=TIMEOUT,
    )
    assert (price.cost.amount, price.price.source) == ("0", "declared-local")


def test_a_budget_of_1e61_is_refused_and_money_reads_back_in_plain_decimal(suite, stubs, provider):
    orchestrator, _, accounting = stubs
    for amount in ("1e61", "1E+2"):
        code, _, _, violations = refused_before_spending(
            suite,
            provider,
            orchestrator.CreateDebate,
            pb.CreateDebateRequest(config=config(budget=c.Money(currency_code="USD", amount=amount))),
        )
        assert (code, [field for field, _ in violations]) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            ["config.budget.amount"],
        )
        assert "without an exponent" in violations[0][1]
    created = orchestrator.CreateDebate(
        pb.CreateDebateRequest(config=config(budget=c.Money(amount="100.500"))), timeout=TIMEOUT
    ).debate
    stored = orchestrator.GetDebate(pb.GetDebateRequest(debate_id=created.debate_id), timeout=TIMEOUT).debate
    assert (created.config.budget.amount, stored.config.budget.amount) == ("100.5", "100.5")
    assert stored.config.budget.currency_code == "USD"

    code, _, _, violations = refused_before_spending(
        suite,
        provider,
        accounting.SetDebateBudget,
        acc.SetDebateBudgetRequest(debate_id=created.debate_id, cap=c.Money(currency_code="USD", amount="1e61")),
    )
    assert (code, [field for field, _ in violations]) == (grpc.StatusCode.INVALID_ARGUMENT, ["cap.amount"])
    # the debate's cost is still served (the old answer was INTERNAL for ever after)
    cost = accounting.GetDebateCost(acc.GetDebateCostRequest(debate_id=created.debate_id), timeout=TIMEOUT).cost
    assert cost.total.amount == "0" and not cost.budget.HasField("cap")
    capped = accounting.SetDebateBudget(
        acc.SetDebateBudgetRequest(debate_id=created.debate_id, cap=c.Money(amount="1000000000.000000")),
        timeout=TIMEOUT,
    ).budget
    assert (capped.cap.amount, capped.remaining.amount) == ("1000000000", "1000000000")


@pytest.mark.parametrize(
    "model, variable",
    [("openai/gpt-4o-mini", "OPENAI_API_KEY"), ("keyed/llama3", "PRESPEND_MISSING_KEY")],
)
def test_a_provider_key_missing_from_the_environment_is_failed_precondition_naming_it(
    suite, stubs, provider, model, variable
):
    orchestrator, _, _ = stubs
    code, reason, metadata, _ = refused_before_spending(
        suite, provider, orchestrator.CreateDebate, pb.CreateDebateRequest(config=config("local/llama3", model))
    )
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PROVIDER_KEY_MISSING")
    assert metadata == {"variables": variable, "fields": "config.participants[1].model"}


def test_the_judge_applies_the_same_rules_to_its_own_requests(suite, stubs, provider):
    _, judge, _ = stubs

    def request(*models: str, criteria=()) -> jpb.EvaluateRoundRequest:
        return jpb.EvaluateRoundRequest(
            debate_id="prespend",
            topic="Should cities ban cars?",
            round_number=1,
            debaters=[jpb.Debater(name="Ada", stance="for"), jpb.Debater(name="Milo", stance="against")],
            turns=[jpb.DebaterTurn(debater="Ada", text="Yes."), jpb.DebaterTurn(debater="Milo", text="No.")],
            judge=c.JudgeConfig(models=list(models), rubric=c.Rubric(criteria=list(criteria))),
            request_id="debates/prespend/rounds/1/judge",
        )

    code, _, _, violations = refused_before_spending(
        suite, provider, judge.EvaluateRound, request("sim/judge", criteria=[c.Criterion(name="Logic", weight=1)])
    )
    assert (code, [f for f, _ in violations]) == (grpc.StatusCode.INVALID_ARGUMENT, ["judge.rubric.criteria[0].name"])
    code, _, _, violations = refused_before_spending(suite, provider, judge.EvaluateRound, request("bare/llama3"))
    assert (code, [f for f, _ in violations]) == (grpc.StatusCode.INVALID_ARGUMENT, ["judge.models[0]"])
    code, reason, metadata, _ = refused_before_spending(
        suite, provider, judge.EvaluateRound, request("openai/gpt-4o-mini")
    )
    assert (code, reason, metadata["variables"]) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "PROVIDER_KEY_MISSING",
        "OPENAI_API_KEY",
    )


# -- the provider-key table ----------------------------------------------------------------------

LITELLM_MODELS = {
    "openai": "openai/gpt-4o-mini",
    "anthropic": "anthropic/claude-haiku-4-5",
    "gemini": "gemini/gemini-2.5-flash",
    "deepseek": "deepseek/deepseek-chat",
    "mistral": "mistral/mistral-small-latest",
    "groq": "groq/llama-3.1-8b-instant",
    "xai": "xai/grok-3-mini",
    "cohere": "cohere/command-r",
    "openrouter": "openrouter/openai/gpt-4o-mini",
    "perplexity": "perplexity/sonar",
    "together_ai": "together_ai/meta-llama/Llama-3-8b-chat-hf",
}


def test_the_provider_key_table_agrees_with_litellms_own_check(monkeypatch):
    """PROVIDER_KEY_ENVS (read once by the settings) says what litellm.validate_environment says,
    for each listed provider: missing with none of its variables set, present with any one."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network when LiteLLM loads
    litellm = importlib.import_module("litellm")
    assert set(LITELLM_MODELS) == set(PROVIDER_KEY_ENVS)
    for name in PROVIDER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for prefix, variables in PROVIDER_KEY_ENVS.items():
        model = LITELLM_MODELS[prefix]
        answer = litellm.validate_environment(model)
        assert not answer["keys_in_environment"] and variables[0] in answer["missing_keys"], (model, answer)
        for variable in variables:
            monkeypatch.setenv(variable, "key-for-tests")
            assert litellm.validate_environment(model)["keys_in_environment"], (model, variable)
            monkeypatch.delenv(variable)
    assert os.environ.get("OPENAI_API_KEY") is None
