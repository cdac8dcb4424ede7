"""Debate cost estimates: every call priced, worst case above expected, assumptions visible."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.accounting import estimate as est
from services.accounting.estimate import DebatePlan, DebaterPlan, estimate_debate
from services.common.errors import InvalidArgument
from services.common.pricing import ModelNotPriced, PriceBook
from services.common.tokens import count_text_tokens
from services.common.usage import Usage


@pytest.fixture(scope="module")
def prices() -> PriceBook:
    return PriceBook()


def plan(**changes) -> DebatePlan:
    base = {
        "topic": "Should cities ban cars?",
        "debaters": (
            DebaterPlan("pro", "claude-3-5-sonnet-20241022", "an urbanist", "for"),
            DebaterPlan("con", "gpt-4", "an engineer", "against"),
        ),
        "judge_models": ("claude-3-opus-20240229",),
        "orderings": 2,
        "rounds": 3,
        "max_tokens_per_turn": 500,
    }
    base.update(changes)
    return DebatePlan(**base)


def test_calls_and_totals_add_up(prices):
    e = estimate_debate(plan(), prices)
    # 3 rounds x 2 debaters, 3 rounds x 1 judge model x 2 orderings, 1 verdict.
    assert e.expected.calls == e.worst_case.calls == 6 + 6 + 1
    assert sum(line.cost for line in e.by_model) == e.expected.cost
    assert sum(line.calls for line in e.by_model) == e.expected.calls
    assert e.worst_case.cost > e.expected.cost > 0
    assert e.worst_case.usage.completion_tokens > e.expected.usage.completion_tokens


def test_a_single_round_without_judge_cost_matches_a_hand_count(prices):
    p = plan(judge_models=("sim/judge",), rounds=1, expected_completion_tokens=100)
    e = estimate_debate(p, prices)
    expected = Decimal(0)
    for d in p.debaters:
        prompt = est.DEBATER_INSTRUCTIONS_TOKENS + count_text_tokens(d.model, f"{p.topic}\n{d.persona}\n{d.stance}")
        expected += prices.cost(d.model, Usage(prompt, 100)).total
    assert e.expected.cost == expected
    assert [line.key for line in e.by_model] == ["claude-3-5-sonnet-20241022", "gpt-4", "sim/judge"]


def test_more_rounds_and_wider_windows_cost_more(prices):
    costs = [estimate_debate(plan(rounds=r), prices).expected.cost for r in (1, 2, 4)]
    assert costs == sorted(costs) and len(set(costs)) == 3
    narrow = estimate_debate(plan(rounds=6, window_size=1), prices).expected.cost
    wide = estimate_debate(plan(rounds=6, window_size=0), prices).expected.cost
    bounded = estimate_debate(plan(rounds=6, context_max_tokens=600), prices).expected.cost
    assert narrow < wide and bounded < wide
    sequential = estimate_debate(plan(sequential=True), prices).expected.cost
    assert sequential > estimate_debate(plan(), prices).expected.cost


def test_simulated_debate_costs_nothing(prices):
    e = estimate_debate(
        plan(debaters=(DebaterPlan("a", "sim/debater"), DebaterPlan("b", "sim/debater")), judge_models=()), prices
    )
    assert e.expected.cost == e.worst_case.cost == 0 and e.expected.usage.prompt_tokens > 0


def test_bad_plans_are_refused_field_by_field(prices):
    with pytest.raises(InvalidArgument) as bad:
        estimate_debate(plan(debaters=(), rounds=0, max_tokens_per_turn=0, expected_completion_tokens=-1), prices)
    assert [v.field for v in bad.value.violations] == [
        "config.participants",
        "config.format.round_limit",
        "config.max_tokens_per_turn",
        "expected_completion_tokens",
    ]
    with pytest.raises(ModelNotPriced):
        estimate_debate(plan(judge_models=("nobody/knows",)), prices)
