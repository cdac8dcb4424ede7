"""Property tests of money strings on every RPC that takes money.

The RPCs whose requests carry a `Money` (protos/debate/*/v1/*.proto): the orchestrator's
CreateDebate (config.budget), accounting's SetDebateBudget (cap) and EstimateDebateCost
(config.budget). They all read it with the one parser of services/common/money.py.

Hypothesis sends amounts with exponents, huge and tiny values, long fractions, underscores,
signs, NaN and Infinity, whitespace and other near-numbers, and currencies other than USD:
each gets INVALID_ARGUMENT with a field violation at the amount (or the currency) and
stores nothing (the rows of every SQLite file of the services are counted before and
after). Valid plain decimals are accepted and read back in plain decimal, never "1E+2".

One in-process suite (tests/reliability/inprocess.py) serves the whole module; examples per
property: MONEY_EXAMPLES (default 60).
"""

from __future__ import annotations

import os
from decimal import Decimal

import grpc
import pytest
from debate.accounting.v1 import accounting_pb2 as acc
from debate.accounting.v1 import accounting_pb2_grpc as accg
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc as pbg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.common.grpc_errors import error_details
from services.common.money import MAX_AMOUNT, MAX_FRACTION_DIGITS, format_amount
from tests.reliability.inprocess import InProcessSuite

EXAMPLES = int(os.environ.get("MONEY_EXAMPLES", "60"))
TIMEOUT = 20.0
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=bool(os.environ.get("CI")),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# -- strategies ----------------------------------------------------------------------------------

digits = st.text("0123456789", min_size=1, max_size=8)
# A valid, positive plain amount: the raw material of the bad ones.
plain = st.builds(
    lambda whole, fraction: f"{whole}.{fraction}" if fraction else str(whole),
    st.integers(1, 999_999),
    st.text("0123456789", max_size=6),
)

exponents = st.builds(
    lambda mantissa, e, sign, exp: f"{mantissa}{e}{sign}{exp}",
    st.one_of(plain, digits, st.just(".5")),
    st.sampled_from(["e", "E"]),
    st.sampled_from(["", "+", "-"]),
    st.integers(0, 400),
)
huge = st.one_of(
    st.integers(int(MAX_AMOUNT) + 1, 10**63).map(str),
    st.from_regex(r"0{0,5}[1-9]", fullmatch=True).map(lambda fraction: f"{int(MAX_AMOUNT)}.{fraction}"),
    st.integers(65, 400).map(lambda n: "1" * n),  # past the length bound too
)
tiny = st.builds(
    lambda zeros, last: "0." + "0" * zeros + last,
    st.integers(MAX_FRACTION_DIGITS, 80),
    st.sampled_from("123456789"),
)
long_fractions = st.builds(
    lambda whole, fraction, last: f"{whole}.{fraction}{last}",
    st.integers(0, 1000),
    st.text("0123456789", min_size=MAX_FRACTION_DIGITS, max_size=40),
    st.sampled_from("123456789"),
)
underscores = st.builds(lambda a, b: f"{a}_{b}", digits, plain)
signs = st.one_of(
    st.builds(lambda sign, amount: sign + amount, st.sampled_from(["+", "-", "--", "+-", "\u2212"]), plain),
    st.sampled_from(["-0", "-0.0", "+0"]),
)
not_finite = st.builds(
    lambda sign, word: sign + word,
    st.sampled_from(["", "+", "-"]),
    st.sampled_from(["NaN", "nan", "sNaN", "snan", "Infinity", "infinity", "inf", "Inf", "INF"]),
)
whitespace = st.builds(
    lambda before, amount, after: before + amount + after,
    st.sampled_from(["", " ", "\t", "\n", "\u00a0", "\u2003"]),
    plain,
    st.sampled_from(["", " ", "\t", "\n", "\r\n", "\u00a0"]),
).filter(lambda text: text != text.strip()) | st.builds(lambda a, b: f"{a} {b}", digits, digits)
near_numbers = st.sampled_from(
    [".5", "5.", "1,5", "1.2.3", "0x10", "0b1", "1/2", "\u0663", "\uff11", "1\u066b5", "$1", "1USD", "½", "1e", "e1"]
)
bad_amounts = st.one_of(exponents, huge, tiny, long_fractions, underscores, signs, not_finite, whitespace, near_numbers)

good_amounts = st.decimals(
    min_value=Decimal("0.000000000001"), max_value=MAX_AMOUNT, places=MAX_FRACTION_DIGITS, allow_nan=False
).map(lambda d: format(d, "f"))
bad_currencies = st.text(max_size=8).filter(lambda code: code not in ("", "USD"))


# -- the suite -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    running = InProcessSuite(tmp_path_factory.mktemp("money"))
    try:
        running.start()
    except Exception:
        running.stop()
        raise
    yield running
    running.stop()


@pytest.fixture(scope="module")
def stubs(suite):
    channels = [grpc.insecure_channel(suite.addresses[name]) for name in ("orchestrator", "accounting")]
    yield pbg.OrchestratorServiceStub(channels[0]), accg.AccountingServiceStub(channels[1])
    for channel in channels:
        channel.close()


def debate_config(budget: c.Money | None = None) -> c.DebateConfig:
    config = c.DebateConfig(
        topic="Should cities ban cars from their centres?",
        participants=[
            c.Participant(name="Ada", model="sim/debater", stance="for"),
            c.Participant(name="Milo", model="sim/debater", stance="against"),
        ],
        judge=c.JudgeConfig(models=["sim/judge"]),
        format=c.DebateFormat(round_limit=1),
        max_tokens_per_turn=32,
    )
    if budget is not None:
        config.budget.CopyFrom(budget)
    return config


def money_rpcs(stubs, money: c.Money):
    """(name, call, request, path of the Money) for each RPC that takes money."""
    orchestrator, accounting = stubs
    yield (
        "CreateDebate",
        orchestrator.CreateDebate,
        pb.CreateDebateRequest(config=debate_config(money)),
        "config.budget",
    )
    yield (
        "SetDebateBudget",
        accounting.SetDebateBudget,
        acc.SetDebateBudgetRequest(debate_id="money-strings", cap=money),
        "cap",
    )
    yield (
        "EstimateDebateCost",
        accounting.EstimateDebateCost,
        acc.EstimateDebateCostRequest(config=debate_config(money)),
        "config.budget",
    )


def assert_refused_at(suite, call, request, field: str, name: str) -> str:
    before = suite.row_counts()
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=TIMEOUT)
    shown = f"{name}: {caught.value.code().name} {caught.value.details()!r}"
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, shown
    _, violations = error_details(caught.value)
    assert [f for f, _ in violations] == [field], (shown, violations)
    assert suite.row_counts() == before, f"{name}: a refused request stored something"
    return violations[0][1]


# -- properties ----------------------------------------------------------------------------------


@PROPERTY
@given(amount=bad_amounts, currency=st.sampled_from(["", "USD"]))
def test_every_malformed_amount_is_invalid_argument_on_every_rpc_and_stores_nothing(suite, stubs, amount, currency):
    for name, call, request, path in money_rpcs(stubs, c.Money(currency_code=currency, amount=amount)):
        assert_refused_at(suite, call, request, f"{path}.amount", name)


@PROPERTY
@given(currency=bad_currencies)
def test_a_currency_other_than_usd_is_invalid_argument_on_every_rpc(suite, stubs, currency):
    for name, call, request, path in money_rpcs(stubs, c.Money(currency_code=currency, amount="1.50")):
        assert_refused_at(suite, call, request, f"{path}.currency_code", name)


@PROPERTY
@given(amount=good_amounts)
def test_a_plain_amount_is_accepted_and_read_back_in_plain_decimal(suite, stubs, amount):
    orchestrator, accounting = stubs
    plain_text = format_amount(Decimal(amount))
    assert "E" not in plain_text.upper()
    debate = orchestrator.CreateDebate(
        pb.CreateDebateRequest(config=debate_config(c.Money(currency_code="USD", amount=amount))), timeout=TIMEOUT
    ).debate
    stored = orchestrator.GetDebate(pb.GetDebateRequest(debate_id=debate.debate_id), timeout=TIMEOUT).debate
    assert stored.config.budget.amount == debate.config.budget.amount == plain_text
    budget = accounting.SetDebateBudget(
        acc.SetDebateBudgetRequest(debate_id=debate.debate_id, cap=c.Money(amount=amount)), timeout=TIMEOUT
    ).budget
    assert budget.cap.amount == budget.remaining.amount == plain_text
    cost = accounting.GetDebateCost(acc.GetDebateCostRequest(debate_id=debate.debate_id), timeout=TIMEOUT).cost
    assert cost.budget.cap.amount == plain_text and cost.total.amount == "0"


def test_the_issue_examples_are_among_the_refused(suite, stubs):
    """The issue's own strings, each named: an exponent, huge, tiny, a long fraction, an
    underscore, the signs, NaN and Infinity, whitespace."""
    for amount in ("1e61", "1E+2", "1" * 20, "0.0000000000001", "1.1234567890123", "1_000", "+1", "-1", "NaN", " 1"):
        for name, call, request, path in money_rpcs(stubs, c.Money(currency_code="USD", amount=amount)):
            assert_refused_at(suite, call, request, f"{path}.amount", name)
