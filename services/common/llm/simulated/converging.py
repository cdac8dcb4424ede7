"""`sim/debater-converging`: a simulated debater whose stated position converges (the consensus
stopping rule's offline path, issue 19 part 1).

Every turn of this variant opens with one line stating the debater's position, `Position: ...`:
- before the round it converges from, its own stance: "Position: I argue for the motion." (or
  "against", when the stance's words give that side, services/common/llm/simulated/reading.py),
  else the stance as written ("Position: my position is this: tax the trucks, keep the cars.");
- from that round on, one shared position built from the topic alone, so that every debater of
  the variant states the same words ("Position: the sides agree on a trial of <topic> with an
  independent review after a year.").
It converges from round 2 (`sim/debater-converging`) or from round N (`sim/debater-converging@N`,
N >= 1). The judge reads the positions from the turns (services/judge/simulated_stopping.py for
the simulated judge); any other model states none, so a debate of plain `sim/debater`s never
reaches a consensus. The line comes first so that a turn cut to its token budget keeps it.
"""

from __future__ import annotations

import re

from services.common.llm.simulated.reading import DebateContext

CONVERGING_MODEL = "sim/debater-converging"
DEFAULT_CONVERGING_ROUND = 2
POSITION_PREFIX = "Position:"
_VARIANT = re.compile(rf"^{re.escape(CONVERGING_MODEL)}(?:@(\d+))?$")


def converging_round(model: str) -> int | None:
    """The round from which `model` states the shared position: 2 for `sim/debater-converging`,
    N for `sim/debater-converging@N`; None for any other model (N < 1 counts as 1)."""
    match = _VARIANT.match(model)
    if match is None:
        return None
    return max(1, int(match.group(1))) if match.group(1) else DEFAULT_CONVERGING_ROUND


def shared_position(topic: str) -> str:
    """The position every converging debater states once converged: from the topic alone."""
    subject = re.sub(r"\s+", " ", topic).strip().rstrip("?.!") or "the question"
    return f"the sides agree on a trial of this: {subject}, with an independent review after a year."


def own_position(ctx: DebateContext) -> str:
    """The debater's own position before it converges, a sentence: its side of the motion when
    the stance gives one ("for", "against"), else its stance as written."""
    if ctx.side in ("for", "against"):
        return f"I argue {ctx.side} the motion."
    stance = ctx.stance.strip().rstrip(".!;: ") or "a considered middle ground"
    return f"my position is this: {stance}."


def with_stated_position(model: str, ctx: DebateContext, text: str) -> str:
    """`text` opened by the debater's stated position when `model` is the converging variant;
    `text` as it is for any other model."""
    start = converging_round(model)
    if start is None:
        return text
    position = shared_position(ctx.topic) if ctx.round_number >= start else own_position(ctx)
    return f"{POSITION_PREFIX} {position}\n\n{text}"
