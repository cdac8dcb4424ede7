"""What can be known before money is spent, as plain Python: the one money parser, declared
endpoint prices, the provider key a model needs, and the judge's rules shared by the
orchestrator's CreateDebate validation and the judge's own (services/common/debate_rules.py)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from debate.common.v1 import common_pb2 as c
from pydantic import ValidationError

from services.accounting.ledger import Accounting
from services.accounting.store import SqliteLedgerStore
from services.common.debate_rules import MissingKeys, ModelRules, ProviderKeyMissing
from services.common.errors import InvalidArgument, Violations
from services.common.llm.settings import LLMSettings
from services.common.money import AmountError, format_amount, parse_amount, read_money
from services.common.pricing import PriceBook
from services.common.usage import Usage
from services.judge.model import Criterion, Debater, JudgePolicy, PanelRequest, RoundCase, Turn
from services.judge.validation import validate_round
from services.orchestrator.config import Limits, validate_config
from services.orchestrator.settings import OrchestratorSettings

KEY_VARIABLES = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "PRESPEND_LOCAL_KEY",
)
LOCAL_PRICED = {
    "local": {"api_base": "http://127.0.0.1:9/v1", "price": {"input_per_million": "0", "output_per_million": "0"}}
}
LOCAL_UNPRICED = {"local": {"api_base": "http://127.0.0.1:9/v1"}}


@pytest.fixture
def clean_env(monkeypatch):
    """No provider key in the environment the settings are built from."""
    for name in KEY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return PriceBook()


def rules_for(settings: LLMSettings) -> ModelRules:
    return ModelRules.from_settings(settings, PriceBook(declared=settings.declared_prices()))


# -- money strings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, value",
    [
        ("0.50", Decimal("0.5")),
        ("2", Decimal(2)),
        ("", Decimal(0)),  # proto3: an unset amount is zero
        ("1000000000", Decimal(1_000_000_000)),
        ("0.000000000001", Decimal("1E-12")),
        ("1.500000000000000000", Decimal("1.5")),  # trailing zeros are not precision
        ("007.10", Decimal("7.1")),
    ],
)
def test_plain_decimals_are_read_exactly(text, value):
    assert parse_amount(text) == value


@pytest.mark.parametrize(
    "text, why",
    [
        ("1e61", "without an exponent"),
        ("1E+2", "without an exponent"),
        ("1_000", "without underscores"),
        (" 1", "without whitespace"),
        ("1\t", "without whitespace"),
        ("+1", 'without a "+" sign'),
        ("-1", "must not be negative"),
        ("NaN", "not NaN or Infinity"),
        ("-Infinity", "not NaN or Infinity"),
        ("inf", "not NaN or Infinity"),
        ("0.0000000000001", "at most 12 digits after the decimal point"),
        ("1000000000.01", "must be at most 1000000000"),
        ("1" * 65, "at most 64 characters"),
        (".5", "plain decimal"),
        ("5.", "plain decimal"),
        ("1,5", "plain decimal"),
        ("\u0663", "plain decimal"),  # an Arabic-Indic digit: Decimal() reads it, we do not
    ],
)
def test_every_other_money_string_is_refused_saying_why(text, why):
    with pytest.raises(AmountError) as refused:
        parse_amount(text)
    assert why in str(refused.value)


def test_read_money_names_the_field_of_each_problem():
    v = Violations()
    assert read_money(c.Money(currency_code="EUR", amount="1e3"), "config.budget", v) is None
    assert [item.field for item in v.items] == ["config.budget.currency_code", "config.budget.amount"]
    v = Violations()
    assert read_money(c.Money(amount="0"), "config.budget", v, positive=True) is None
    assert [(item.field, "greater than 0" in item.description) for item in v.items] == [("config.budget.amount", True)]
    v = Violations()
    assert read_money(c.Money(currency_code="USD", amount="0.25"), "cap", v) == Decimal("0.25") and not v


def test_budget_is_stored_in_plain_decimal_and_refused_with_an_exponent():
    settings = OrchestratorSettings()
    config = c.DebateConfig(
        topic="t",
        participants=[c.Participant(name="a", model="sim/debater"), c.Participant(name="b", model="sim/debater")],
        format=c.DebateFormat(round_limit=1),
        budget=c.Money(amount="100.50000"),
    )
    out = validate_config(config, Limits(settings), ModelRules(settings.model_allowed))
    assert (out.budget.currency_code, out.budget.amount) == ("USD", "100.5")
    for bad in ("1e61", "1E+2", "1e2"):
        config.budget.amount = bad
        with pytest.raises(InvalidArgument) as refused:
            validate_config(config, Limits(settings), ModelRules(settings.model_allowed))
        assert [v.field for v in refused.value.violations] == ["config.budget.amount"]


async def test_the_ledger_refuses_a_cap_whose_sums_could_not_stay_exact(tmp_path, book):
    accounting = Accounting(book, SqliteLedgerStore(tmp_path / "ledger.sqlite3"))
    try:
        for cap in (Decimal("1E+61"), Decimal("-1"), Decimal("1E-13")):
            with pytest.raises(InvalidArgument) as refused:
                await accounting.set_budget("d1", cap)
            assert [v.field for v in refused.value.violations] == ["cap.amount"]
        budget = await accounting.set_budget("d1", Decimal("1E+2"))
        assert format_amount(budget.cap) == "100" and format_amount(budget.remaining) == "100"
    finally:
        await accounting.close()


# -- declared prices -------------------------------------------------------------------------


def test_a_declared_price_prices_the_endpoints_models_and_says_so():
    settings = LLMSettings(
        llm_endpoints={
            "local": {
                "api_base": "http://127.0.0.1:9/v1",
                "price": {"input_per_million": "0.5", "output_per_million": "1.5"},
            }
        }
    )
    book = PriceBook(declared=settings.declared_prices())
    price = book.price("local/llama3")
    assert price.source == "declared-local"
    assert book.cost("local/llama3", Usage(1_000_000, 2_000_000)).total == Decimal("3.5")
    assert PriceBook(declared=LLMSettings(llm_endpoints=LOCAL_PRICED).declared_prices()).cost(
        "local/llama3", Usage(1000, 1000)
    ).total == Decimal(0)


@pytest.mark.parametrize(
    "price",
    [
        {"input_per_million": "1e3", "output_per_million": "1"},
        {"input_per_million": "-1", "output_per_million": "1"},
        {"input_per_million": "1"},
        {"input_per_million": "1", "output_per_million": "1", "input": "2"},  # a misspelt rate is not ignored
    ],
)
def test_a_malformed_declared_price_stops_the_settings(price):
    with pytest.raises(ValidationError):
        LLMSettings(llm_endpoints={"local": {"api_base": "http://127.0.0.1:9/v1", "price": price}})


# -- provider keys ---------------------------------------------------------------------------


def test_the_key_a_model_needs_is_named_when_the_environment_lacks_it(clean_env):
    endpoints = {
        "local": {"api_base": "http://127.0.0.1:9/v1", "api_key_env": "PRESPEND_LOCAL_KEY"},
        "open": {"api_base": "http://127.0.0.1:9/v1"},
    }
    bare = LLMSettings(llm_endpoints=endpoints)
    assert bare.missing_key_env("openai/gpt-4o-mini") == "OPENAI_API_KEY"
    assert bare.missing_key_env("anthropic/claude-haiku-4-5") == "ANTHROPIC_API_KEY"
    assert bare.missing_key_env("gemini/gemini-2.5-flash") == "GEMINI_API_KEY"
    assert bare.missing_key_env("local/llama3") == "PRESPEND_LOCAL_KEY"
    for needs_none in ("sim/debater", "open/llama3", "ollama/llama3", "unlisted/model"):
        assert bare.missing_key_env(needs_none) is None
    clean_env.setenv("OPENAI_API_KEY", "   ")  # blank is as good as unset
    clean_env.setenv("ANTHROPIC_AUTH_TOKEN", "token-for-tests")  # LiteLLM takes either variable
    clean_env.setenv("GOOGLE_API_KEY", "key-for-tests")
    clean_env.setenv("PRESPEND_LOCAL_KEY", "key-for-tests")
    keyed = LLMSettings(llm_endpoints=endpoints)
    assert keyed.missing_key_env("openai/gpt-4o-mini") == "OPENAI_API_KEY"
    assert keyed.missing_key_env("anthropic/claude-haiku-4-5") is None
    assert keyed.missing_key_env("gemini/gemini-2.5-flash") is None
    assert keyed.missing_key_env("local/llama3") is None
    assert bare.missing_key_env("local/llama3") == "PRESPEND_LOCAL_KEY"  # read once, when built


# -- models: allowed, priced with their fallbacks, keyed -------------------------------------


def test_an_unpriced_model_or_fallback_is_one_violation_saying_how_to_price_it(clean_env):
    settings = LLMSettings(
        llm_allowed_models=["sim/*", "local/*", "openai/gpt-4o-mini", "nowhere/*"],
        llm_endpoints=LOCAL_UNPRICED,
        llm_fallbacks={"sim/debater": ["nowhere/model", "sim/other"], "sim/a": ["not-allowed/x"]},
    )
    rules = rules_for(settings)
    v, keys = Violations(), MissingKeys()
    rules.check("local/llama3", "config.participants[0].model", v, keys)
    rules.check("sim/debater", "config.participants[1].model", v, keys)
    rules.check("sim/a", "config.participants[2].model", v, keys)  # a fallback not allowed is never tried
    rules.check("openai/gpt-4o-mini", "config.participants[3].model", v, keys)
    rules.check("anthropic/claude-haiku-4-5", "config.participants[4].model", v, keys)
    assert [item.field for item in v.items] == [
        "config.participants[0].model",
        "config.participants[1].model",
        "config.participants[4].model",
    ]
    local, fallback, refused = (item.description for item in v.items)
    assert "'local/llama3' has no known price" in local and '"price": {"input_per_million"' in local
    assert "LLM_ENDPOINTS" in local
    assert "fallback 'nowhere/model' of 'sim/debater'" in fallback and "prices.toml" in fallback
    assert "not allowed" in refused
    assert keys.items == [("OPENAI_API_KEY", "config.participants[3].model", "openai/gpt-4o-mini")]


def _config(**changes) -> c.DebateConfig:
    base = {
        "topic": "Should cities ban cars from their centres?",
        "participants": [
            c.Participant(name="ann", model="sim/debater", stance="for"),
            c.Participant(name="bo", model="sim/debater", stance="against"),
        ],
        "format": c.DebateFormat(round_limit=1),
    }
    base.update(changes)
    return c.DebateConfig(**base)


def test_create_debate_refuses_the_readme_endpoint_without_a_price_and_runs_it_with_one(clean_env):
    limits = Limits(OrchestratorSettings())
    people = [c.Participant(name="ann", model="local/llama3"), c.Participant(name="bo", model="sim/debater")]
    unpriced = rules_for(LLMSettings(llm_allowed_models=["sim/*", "local/*"], llm_endpoints=LOCAL_UNPRICED))
    with pytest.raises(InvalidArgument) as refused:
        validate_config(_config(participants=people), limits, unpriced)
    assert [v.field for v in refused.value.violations] == ["config.participants[0].model"]
    assert "price" in refused.value.violations[0].description
    priced = rules_for(LLMSettings(llm_allowed_models=["sim/*", "local/*"], llm_endpoints=LOCAL_PRICED))
    assert validate_config(_config(participants=people), limits, priced).participants[0].model == "local/llama3"


def test_a_missing_key_is_failed_precondition_after_any_bad_input(clean_env):
    limits = Limits(OrchestratorSettings())
    rules = rules_for(LLMSettings())
    people = [c.Participant(name="ann", model="openai/gpt-4o-mini"), c.Participant(name="bo", model="sim/debater")]
    with pytest.raises(ProviderKeyMissing) as missing:
        validate_config(_config(participants=people, judge=c.JudgeConfig(models=["openai/gpt-4o"])), limits, rules)
    assert missing.value.code == "FAILED_PRECONDITION" and missing.value.reason == "PROVIDER_KEY_MISSING"
    assert missing.value.metadata == {
        "variables": "OPENAI_API_KEY",
        "fields": "config.participants[0].model,config.judge.models[0]",
    }
    assert "OPENAI_API_KEY" in missing.value.message
    with pytest.raises(InvalidArgument):  # bad input first: the key is not the caller's to fix
        validate_config(_config(participants=people, budget=c.Money(amount="1e61")), limits, rules)


# -- the judge's rules, one set for both sides -----------------------------------------------

BAD_JUDGE = c.JudgeConfig(
    models=["sim/judge", "sim/judge", "evil/model"],
    orderings=3,  # two debaters have two distinct orderings
    rubric=c.Rubric(
        criteria=[
            c.Criterion(name="Logic", weight=1),
            c.Criterion(name="evidence", weight=-1),
            c.Criterion(name="evidence", weight=float("nan")),
            c.Criterion(name="rationale", weight=1),
        ]
    ),
)


def test_create_debate_refuses_what_the_judge_would_refuse_with_the_same_words():
    settings = OrchestratorSettings()
    with pytest.raises(InvalidArgument) as at_create:
        validate_config(_config(judge=BAD_JUDGE), Limits(settings), ModelRules(settings.model_allowed))
    case = RoundCase(
        debate_id="d1",
        topic="Should cities ban cars from their centres?",
        round_number=1,
        debaters=(Debater("ann"), Debater("bo")),
        turns=(Turn("ann", "yes"), Turn("bo", "no")),
        panel=PanelRequest(
            models=tuple(BAD_JUDGE.models),
            orderings=BAD_JUDGE.orderings,
            criteria=tuple(Criterion(x.name, x.weight, x.description) for x in BAD_JUDGE.rubric.criteria),
        ),
    )
    with pytest.raises(InvalidArgument) as at_judge:
        validate_round(case, JudgePolicy(model_rules=ModelRules(settings.model_allowed)))
    created = [(v.field, v.description) for v in at_create.value.violations]
    judged = [
        ("config." + v.field, v.description.replace("judge.", "config.judge.")) for v in at_judge.value.violations
    ]
    assert created == judged
    assert created[0] == ("config.judge.models[1]", "duplicate of config.judge.models[0]")
    assert [f for f, _ in created] == [
        "config.judge.models[1]",
        "config.judge.models[2]",
        "config.judge.orderings",
        "config.judge.rubric.criteria[0].name",
        "config.judge.rubric.criteria[1].weight",
        "config.judge.rubric.criteria[2].name",
        "config.judge.rubric.criteria[2].weight",
        "config.judge.rubric.criteria[3].name",
    ]
    assert "lower snake case" in created[3][1]


def test_the_judge_checks_its_own_models_price_and_key(clean_env):
    rules = rules_for(LLMSettings(llm_allowed_models=["sim/*", "local/*", "openai/*"], llm_endpoints=LOCAL_UNPRICED))
    policy = JudgePolicy(model_rules=rules)

    def case(*models: str) -> RoundCase:
        return RoundCase(
            debate_id="d1",
            topic="t",
            round_number=1,
            debaters=(Debater("ann"), Debater("bo")),
            turns=(Turn("ann", "yes"), Turn("bo", "no")),
            panel=PanelRequest(models=models),
        )

    with pytest.raises(InvalidArgument) as unpriced:
        validate_round(case("local/llama3"), policy)
    assert [v.field for v in unpriced.value.violations] == ["judge.models[0]"]
    with pytest.raises(ProviderKeyMissing) as missing:
        validate_round(case("openai/gpt-4o-mini"), policy)
    assert missing.value.metadata["fields"] == "judge.models[0]"
    assert validate_round(case("sim/judge"), policy).panel.models == ("sim/judge",)
