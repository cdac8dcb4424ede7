"""Limits that more than one service enforces, in one place.

The orchestrator checks a debate's `JudgeConfig` when the debate is created, so that a
debate never fails rounds later on a panel the judge refuses; the judge checks every
request it gets. Both read the bounds here, and `debate.common.v1.JudgeConfig`'s comments
name them. The judge's settings (`JUDGE_MAX_PANEL`, `JUDGE_MAX_ORDERINGS`) default to
these values and may only lower what it accepts.
"""

from __future__ import annotations

__all__ = [
    "MAX_JUDGE_ORDERINGS",
    "MAX_JUDGE_PANEL",
    "MAX_SOURCES",
    "MAX_SOURCES_TOTAL_BYTES",
    "MAX_SOURCE_BYTES",
    "MAX_SOURCE_ID_CHARS",
    "MAX_SOURCE_TITLE_CHARS",
    "SOURCES_WINDOW_SHARE",
    "distinct_orderings",
]

# Judge models in one panel (JudgeConfig.models).
MAX_JUDGE_PANEL = 5
# Orderings of the debaters each judge model sees (JudgeConfig.orderings), at most.
MAX_JUDGE_ORDERINGS = 8

# Source documents of a debate (DebateConfig.sources; the judge's requests carry the same):
# how many, the UTF-8 bytes of one document's text and of all of them, an id's and a title's
# characters. Every debater's prompt carries every document, so the documents may also take at
# most SOURCES_WINDOW_SHARE of the context window (context.max_tokens), counted with each
# debater model's tokenizer: the rest is left for the system prompt and the earlier turns.
MAX_SOURCES = 8
MAX_SOURCE_BYTES = 64 * 1024
MAX_SOURCES_TOTAL_BYTES = 256 * 1024
MAX_SOURCE_ID_CHARS = 64
MAX_SOURCE_TITLE_CHARS = 200
SOURCES_WINDOW_SHARE = 0.5


def distinct_orderings(debaters: int) -> int:
    """How many distinct presentation orders of n debaters the judge can use: the n rotations
    and the n rotations of the reversed order, so 2n; 2 for two debaters, 1 for fewer."""
    if debaters < 2:
        return 1
    return 2 if debaters == 2 else 2 * debaters
