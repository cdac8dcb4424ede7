"""What the simulated judge gives the stopping rules (issue 19 part 1): the consensus it reads
from the turns, and the scripted judge `sim/judge-decisive@N` for tests.

Consensus (asked by `CONSENSUS_LINE` in the prompt): a debater's stated position is the last line
of its turn that starts with "Position:" (what `sim/debater-converging` writes first in every turn,
services/common/llm/simulated/converging.py). The positions have converged when every debater's
turn states one and they are the same once case, spacing and punctuation are set aside. A turn
that states no position (any other debater) means no consensus.

`sim/judge-decisive@N` (N >= 1; plain `sim/judge-decisive` is decisive from round 1) scores a
round as `sim/judge` does, then:
- before round N it is indecisive: every debater gets, on each criterion, the mean of the plain
  scores, so the round is a tie with a margin of 0;
- from round N on it is decisive: the plain judge's leader keeps its scores and every other
  debater's are halved, a wide lead every ordering agrees on.
The scores never depend on the labels or the order shown, so orderings agree. Verdicts are the
plain judge's.
"""

from __future__ import annotations

import re
from typing import Any

from services.judge.prompts import PromptView

DECISIVE_MODEL = "sim/judge-decisive"
_DECISIVE = re.compile(rf"^{re.escape(DECISIVE_MODEL)}(?:@(\d+))?$")
_ROUND = re.compile(r"^Score round (\d+) of a debate\.", re.MULTILINE)
_POSITION = re.compile(r"^\s*Position:\s*(.+?)\s*$", re.MULTILINE | re.IGNORECASE)


def stated_position(text: str) -> str | None:
    """The position a turn states (its last "Position:" line), normalised; None when it states none."""
    found = _POSITION.findall(text)
    if not found:
        return None
    return " ".join(re.findall(r"\w+", found[-1].casefold())) or None


def positions_converged(view: PromptView) -> bool:
    """Whether every debater's latest turn in the prompt states a position, all the same."""
    positions = [stated_position(turns[-1]) if turns else None for turns in view.turns.values()]
    return len(positions) > 1 and None not in positions and len(set(positions)) == 1


def decisive_from(model: str) -> int | None:
    """The round from which `model` is decisive: N for `sim/judge-decisive@N`, 1 for
    `sim/judge-decisive`; None for any other model."""
    match = _DECISIVE.match(model)
    if match is None:
        return None
    return max(1, int(match.group(1))) if match.group(1) else 1


def scripted(model: str, prompt: str, result: dict[str, Any]) -> dict[str, Any]:
    """`result` (the plain judge's answer to a round prompt) as `model` answers it: changed only for
    `sim/judge-decisive@N` and a round (not a verdict) prompt. Changes `result` in place."""
    start = decisive_from(model)
    found = _ROUND.search(prompt)
    debaters: dict[str, dict[str, Any]] = result["debaters"]
    if start is None or found is None or len(debaters) < 2:
        return result
    round_number = int(found.group(1))
    criteria = list(next(iter(debaters.values()))["scores"])
    if round_number < start:
        means = {c: round(sum(d["scores"][c] for d in debaters.values()) / len(debaters), 1) for c in criteria}
        for entry in debaters.values():
            entry["scores"] = dict(means)
            entry["rationale"] = f"Scripted judge: round {round_number} is not decided yet (decisive from {start})."
        return result
    leader = max(sorted(debaters), key=lambda label: sum(debaters[label]["scores"].values()))
    for label, entry in debaters.items():
        if label != leader:
            entry["scores"] = {c: round(score / 2, 1) for c, score in entry["scores"].items()}
        entry["rationale"] = f"Scripted judge: decisive from round {start}. " + entry["rationale"]
    return result
