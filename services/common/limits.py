"""Limits that more than one service enforces, in one place.

The orchestrator checks a debate's `JudgeConfig` when the debate is created, so that a
debate never fails rounds later on a panel the judge refuses; the judge checks every
request it gets. Both read the bounds here, and `debate.common.v1.JudgeConfig`'s comments
name them. The judge's settings (`JUDGE_MAX_PANEL`, `JUDGE_MAX_ORDERINGS`) default to
these values and may only lower what it accepts.
"""

from __future__ import annotations

__all__ = ["MAX_JUDGE_ORDERINGS", "MAX_JUDGE_PANEL", "distinct_orderings"]

# Judge models in one panel (JudgeConfig.models).
MAX_JUDGE_PANEL = 5
# Orderings of the debaters each judge model sees (JudgeConfig.orderings), at most.
MAX_JUDGE_ORDERINGS = 8


def distinct_orderings(debaters: int) -> int:
    """How many distinct presentation orders of n debaters the judge can use: the n rotations
    and the n rotations of the reversed order, so 2n; 2 for two debaters, 1 for fewer."""
    if debaters < 2:
        return 1
    return 2 if debaters == 2 else 2 * debaters
