"""Expected and worst-case cost of a debate before it starts.

The estimate walks every model call the debate will make and prices each one exactly:

- Debaters: one call per debater per round. Its prompt is the system prompt (fixed
  instructions of `DEBATER_INSTRUCTIONS_TOKENS` plus the topic, persona and stance, counted
  with the debater's tokenizer) plus the transcript the sliding window keeps: the turns of
  the last `window_size` rounds (0 = every earlier round) and, in a sequential round, the
  turns already given in this round; every turn costs its completion plus
  `TURN_FRAMING_TOKENS`. The transcript is trimmed to `context.max_tokens` (0 = no bound)
  with the system prompt always kept. A turn's completion is `expected_completion_tokens`
  (0: half of `max_tokens_per_turn`) in the expected case and `max_tokens_per_turn` in the
  worst case.
- Judges: after each round, one call per judge model per ordering (`orderings`, 0 = the
  judge service's default, assumed `DEFAULT_ORDERINGS`). The prompt is the rubric
  instructions, the topic and the round's turns; the answer is about
  `JUDGE_TOKENS_PER_DEBATER` per debater, at most `JUDGE_MAX_COMPLETION_TOKENS`.
- Verdict: after the last round, one call per judge model (a panel gives one verdict each).
  The prompt is the instructions, the topic, the whole transcript and every round's
  assessment; the answer is about `VERDICT_EXPECTED_TOKENS`, at most
  `VERDICT_MAX_COMPLETION_TOKENS`.
- No judge model configured: `DEFAULT_JUDGE_MODEL` is assumed.

The worst case assumes every turn uses its full max_tokens_per_turn and every judge its full
answer budget; it ignores retries (a retried call is charged again), so a budget should keep
a margin for them.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.accounting.breakdown import GroupedTally, Line, Tally
from services.common.errors import Violations
from services.common.money import EXACT
from services.common.pricing import PriceBook, cost_of
from services.common.tokens import count_text_tokens
from services.common.usage import Usage

DEBATER_INSTRUCTIONS_TOKENS = 150
TURN_FRAMING_TOKENS = 8
JUDGE_INSTRUCTIONS_TOKENS = 400
JUDGE_TOKENS_PER_DEBATER = 150
JUDGE_MAX_COMPLETION_TOKENS = 2048
VERDICT_INSTRUCTIONS_TOKENS = 400
VERDICT_EXPECTED_TOKENS = 500
VERDICT_MAX_COMPLETION_TOKENS = 2048
DEFAULT_ORDERINGS = 2
DEFAULT_JUDGE_MODEL = "sim/judge"
MAX_ROUNDS = 20


@dataclass(frozen=True, slots=True)
class DebaterPlan:
    name: str
    model: str
    persona: str = ""
    stance: str = ""


@dataclass(frozen=True, slots=True)
class DebatePlan:
    topic: str
    debaters: tuple[DebaterPlan, ...]
    judge_models: tuple[str, ...]
    rounds: int
    max_tokens_per_turn: int
    orderings: int = 0
    sequential: bool = False
    context_max_tokens: int = 0
    window_size: int = 0
    expected_completion_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Estimate:
    expected: Line
    worst_case: Line
    # Expected cost per model.
    by_model: list[Line]


def _check_models(plan: DebatePlan, v: Violations) -> None:
    if not plan.debaters:
        v.add("config.participants", "at least one participant is needed")
    for i, debater in enumerate(plan.debaters):
        if not debater.model:
            v.add(f"config.participants[{i}].model", "must not be empty")
    for i, model in enumerate(plan.judge_models):
        if not model:
            v.add(f"config.judge.models[{i}]", "must not be empty")


def validate_plan(plan: DebatePlan, prices: PriceBook) -> None:
    """Every problem as a field violation (paths as in DebateConfig); then unknown models."""
    v = Violations()
    _check_models(plan, v)
    if plan.orderings < 0:
        v.add("config.judge.orderings", "must not be negative")
    if not 1 <= plan.rounds <= MAX_ROUNDS:
        v.add("config.format.round_limit", f"must be between 1 and {MAX_ROUNDS}")
    if plan.max_tokens_per_turn <= 0:
        v.add("config.max_tokens_per_turn", "must be positive")
    if plan.context_max_tokens < 0:
        v.add("config.context.max_tokens", "must not be negative")
    if plan.window_size < 0:
        v.add("config.context.window_size", "must not be negative")
    if plan.expected_completion_tokens < 0:
        v.add("expected_completion_tokens", "must not be negative")
    elif plan.max_tokens_per_turn > 0 and plan.expected_completion_tokens > plan.max_tokens_per_turn:
        v.add("expected_completion_tokens", "must not exceed config.max_tokens_per_turn")
    v.raise_if_any()
    for model in {d.model for d in plan.debaters} | set(plan.judge_models or (DEFAULT_JUDGE_MODEL,)):
        prices.price(model)  # ModelNotPriced names the model


def estimate_debate(plan: DebatePlan, prices: PriceBook) -> Estimate:
    validate_plan(plan, prices)
    expected_completion = plan.expected_completion_tokens or max(1, plan.max_tokens_per_turn // 2)
    expected, worst = Tally(), Tally()
    by_model: GroupedTally[str] = GroupedTally(lambda model: model)

    def charge(model: str, expected_usage: Usage, worst_usage: Usage, calls: int = 1) -> None:
        price = prices.price(model)
        expected_cost = EXACT.multiply(cost_of(price, expected_usage).total, calls)
        expected.add(_times(expected_usage, calls), expected_cost, calls=calls)
        by_model.add(model, _times(expected_usage, calls), expected_cost, calls=calls)
        worst.add(_times(worst_usage, calls), EXACT.multiply(cost_of(price, worst_usage).total, calls), calls=calls)

    n = len(plan.debaters)
    judges = plan.judge_models or (DEFAULT_JUDGE_MODEL,)
    orderings = plan.orderings or DEFAULT_ORDERINGS
    judge_expected = min(JUDGE_TOKENS_PER_DEBATER * n, JUDGE_MAX_COMPLETION_TOKENS)
    for round_number in range(1, plan.rounds + 1):
        for index, debater in enumerate(plan.debaters):
            charge(
                debater.model,
                Usage(_debater_prompt(plan, debater, round_number, index, expected_completion), expected_completion),
                Usage(
                    _debater_prompt(plan, debater, round_number, index, plan.max_tokens_per_turn),
                    plan.max_tokens_per_turn,
                ),
            )
        for model in judges:
            topic = count_text_tokens(model, plan.topic)
            charge(
                model,
                Usage(
                    JUDGE_INSTRUCTIONS_TOKENS + topic + n * (expected_completion + TURN_FRAMING_TOKENS), judge_expected
                ),
                Usage(
                    JUDGE_INSTRUCTIONS_TOKENS + topic + n * (plan.max_tokens_per_turn + TURN_FRAMING_TOKENS),
                    JUDGE_MAX_COMPLETION_TOKENS,
                ),
                calls=orderings,
            )
    for model in judges:
        topic = count_text_tokens(model, plan.topic)
        transcript = plan.rounds * n
        charge(
            model,
            Usage(
                VERDICT_INSTRUCTIONS_TOKENS
                + topic
                + transcript * (expected_completion + TURN_FRAMING_TOKENS)
                + plan.rounds * judge_expected,
                VERDICT_EXPECTED_TOKENS,
            ),
            Usage(
                VERDICT_INSTRUCTIONS_TOKENS
                + topic
                + transcript * (plan.max_tokens_per_turn + TURN_FRAMING_TOKENS)
                + plan.rounds * JUDGE_MAX_COMPLETION_TOKENS,
                VERDICT_MAX_COMPLETION_TOKENS,
            ),
        )
    return Estimate(expected.line("expected"), worst.line("worst_case"), by_model.lines())


def _debater_prompt(plan: DebatePlan, debater: DebaterPlan, round_number: int, index: int, completion: int) -> int:
    system = DEBATER_INSTRUCTIONS_TOKENS + count_text_tokens(
        debater.model, f"{plan.topic}\n{debater.persona}\n{debater.stance}"
    )
    earlier = round_number - 1 if plan.window_size == 0 else min(round_number - 1, plan.window_size)
    turns = earlier * len(plan.debaters) + (index if plan.sequential else 0)
    transcript = turns * (completion + TURN_FRAMING_TOKENS)
    if plan.context_max_tokens:
        transcript = min(transcript, max(0, plan.context_max_tokens - system))
    return system + transcript


def _times(usage: Usage, calls: int) -> Usage:
    return Usage(
        usage.prompt_tokens * calls,
        usage.completion_tokens * calls,
        usage.cached_prompt_tokens * calls,
        usage.reasoning_tokens * calls,
    )


__all__ = ["DebatePlan", "DebaterPlan", "Estimate", "estimate_debate", "validate_plan"]
