"""Simulated judges biased by design, for testing the judge audits (issue 18 part 5).

Each is a variant of `sim/judge` (services/judge/simulated_judge.py), served by the same
responder: `simulated_judge.respond` asks `skew(model, view, answer)` to bend `sim/judge`'s
answer for the variant's model name. Like `sim/judge`, they are deterministic.

- `sim/judge-long` prefers the longer turn: every criterion of a debater scores
  10 x (its words / the most words of any debater in the prompt), one decimal.
- `sim/judge-first` prefers the position shown first: the first-shown debater (label "A")
  scores 8 on every criterion, every other debater 3, whatever they said.

An audit (services/orchestrator/judge_report.py) flags the first for length bias and the second
for position bias and ordering disagreement; `sim/judge` itself is flagged for neither.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.judge.prompts import PromptView

SIM_JUDGE_LONG = "sim/judge-long"
SIM_JUDGE_FIRST = "sim/judge-first"

FIRST_SCORE = 8.0
OTHER_SCORE = 3.0


def _words(view: PromptView, label: str) -> int:
    return sum(len(turn.split()) for turn in view.turns.get(label, []))


def _uniform(answer: dict[str, Any], label: str, score: float, rationale: str) -> None:
    debater = answer["debaters"][label]
    debater["scores"] = {criterion: score for criterion in debater["scores"]}
    debater["rationale"] = rationale


def prefer_long(view: PromptView, answer: dict[str, Any]) -> dict[str, Any]:
    """`sim/judge-long`: scores proportional to each debater's word count."""
    most = max((_words(view, label) for label in view.labels), default=0) or 1
    for label in view.labels:
        words = _words(view, label)
        _uniform(answer, label, round(10 * words / most, 1), f"Simulated length-biased judge: {words} words.")
    return answer


def prefer_first(view: PromptView, answer: dict[str, Any]) -> dict[str, Any]:
    """`sim/judge-first`: the debater shown first scores FIRST_SCORE, the others OTHER_SCORE."""
    for position, label in enumerate(view.labels):
        score = FIRST_SCORE if position == 0 else OTHER_SCORE
        _uniform(answer, label, score, f"Simulated position-biased judge: shown in position {position + 1}.")
    return answer


VARIANTS: dict[str, Callable[[PromptView, dict[str, Any]], dict[str, Any]]] = {
    SIM_JUDGE_LONG: prefer_long,
    SIM_JUDGE_FIRST: prefer_first,
}


BASES = {SIM_JUDGE_LONG: "by length (words)", SIM_JUDGE_FIRST: "by the position shown"}


def basis(model: str) -> str:
    """What the summary of `model` ranks the debaters by (its scores'): its bias for a variant."""
    return BASES.get(model, "by text features")


def skew(model: str, view: PromptView, answer: dict[str, Any]) -> dict[str, Any]:
    """`answer` (sim/judge's, for `view`) as the biased variant `model` gives it; unchanged for
    a model that is not one of VARIANTS."""
    variant = VARIANTS.get(model)
    return answer if variant is None else variant(view, answer)
