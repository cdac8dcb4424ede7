"""Stopping rules (issue 19 part 1): a debate may end before its round limit.

Two rules, configured in `DebateConfig.stopping` and off by default (every round is played):
- judge decided: after at least `min_rounds` rounds, a round's assessment has a leader (no tie)
  ahead of the runner-up by at least `min_margin` weighted-total points with a round confidence
  (RoundAssessment.confidence) of at least `min_confidence`;
- consensus: after at least `min_rounds` rounds, the judge read from the round's turns that the
  debaters' stated positions converged (RoundAssessment.consensus; the judge is asked for it,
  EvaluateRoundRequest.assess_consensus, only when this rule is on).
A rule is checked on each assessment as it is recorded (`Stopping.on_assessed`); judge decided
first. Never when every round has been played: there would be nothing to save.

What a stop does. An assessment runs beside the next round, so a round is usually under way
when a rule passes on the previous one's. In that order:
1. the decision (`DebateStop` with the rule, `after_round` and the rule's reading) is stored and
   committed before anything else happens: from here a restart goes on with the stop, never
   with another round;
2. the round under way is cancelled (its task: the turns' model calls stop at once). Its calls
   are settled as a cancel settles them (turns.settle_inflight): each is charged as an estimate
   of what it streamed, under its attempt's own key, its attempt closed and a
   TurnFailed(DEBATE_STOPPED) logged; its partial text is stored as a turn with
   FINISH_REASON_CANCELLED (GetDebate shows it; it is no part of the transcript judged). A turn
   of that round that had finished is kept, and its usage recorded if the cancel cut that short;
3. assessments still under way finish (they are paid for);
4. the stop is announced: `rounds_played` (the leading rounds every debater finished),
   `rounds_not_played` (round_limit - rounds_played) and `estimated_cost_avoided` are stored
   with the decision and DebateStopped is logged in the same commit;
5. the verdict, over the rounds played, and DebateCompleted, as for any debate.

The estimate (`estimate_avoided`): the cost of each played round (its turns and its assessment,
as accounting priced them: GetDebateCost's by_round), extrapolated linearly to the rounds not
played (a round's prompts grow with the transcript until the sliding window is full, so later
rounds cost more: the mean of the played rounds would be about half the saving in a 6-round
debate stopped after round 3), less what the cancelled round had already spent, never below 0.
The verdict is not in it (it is given either way).

A restart at any point after step 1 rebuilds the run with its stop (lifecycle._recover): the
calls left open are settled as after any restart (charged once, under their keys), no round is
started, and steps 3 to 5 run (step 4 only if it was not announced).
"""

from __future__ import annotations

import logging
import math
from decimal import Decimal

from debate.common.v1 import common_pb2 as common
from debate.orchestrator.v1 import orchestrator_pb2 as pb

from services.common.errors import Violations
from services.common.money import ZERO, exact_sum, usd
from services.orchestrator.events import EventHub
from services.orchestrator.run import DebateRun, turn_key
from services.orchestrator.store import Store
from services.orchestrator.turns import TurnRunner

log = logging.getLogger(__name__)

STOPPED_REASON = "DEBATE_STOPPED"  # the TurnFailed reason of the cancelled round's calls
MAX_MARGIN = 10.0  # weighted totals are 0 to 10
_CENT_FRACTION = Decimal("0.0000000001")  # the estimate's precision (USD)


# ==== validation ===============================================================================
def check_stopping(config: common.DebateConfig, out: common.DebateConfig, v: Violations, path: str) -> None:
    """The stopping rules of `config` (into `v`, paths under `{path}.stopping`); `out` gets
    `min_rounds` 0 normalised to 1. Nothing when no rule is set."""
    if not config.HasField("stopping"):
        return
    rounds = config.format.round_limit
    stopping, target = config.stopping, out.stopping
    where = f"{path}.stopping"
    if stopping.HasField("judge_decided"):
        rule, p = stopping.judge_decided, f"{where}.judge_decided"
        target.judge_decided.min_rounds = _check_min_rounds(rule.min_rounds, rounds, v, f"{p}.min_rounds")
        if not (math.isfinite(rule.min_margin) and 0 <= rule.min_margin <= MAX_MARGIN):
            v.add(f"{p}.min_margin", f"must be 0 to {MAX_MARGIN:g} weighted-total points, got {rule.min_margin}")
        if not (math.isfinite(rule.min_confidence) and 0 <= rule.min_confidence <= 1):
            v.add(f"{p}.min_confidence", f"must be 0 to 1, got {rule.min_confidence}")
    if stopping.HasField("consensus"):
        p = f"{where}.consensus"
        target.consensus.min_rounds = _check_min_rounds(stopping.consensus.min_rounds, rounds, v, f"{p}.min_rounds")


def _check_min_rounds(value: int, round_limit: int, v: Violations, field: str) -> int:
    """`min_rounds` (0: 1) normalised; a rule is checked only while a round is left to save
    (`on_assessed`), so one that could pass only on the last round's assessment, min_rounds >=
    round_limit (a 1-round debate: any rule), could never fire and is refused."""
    if value < 0:
        v.add(field, f"must be 1 to format.round_limit - 1 (0: 1), got {value}")
    elif round_limit >= 1 and max(1, value) >= round_limit:
        read = f"{value} (read as 1)" if value == 0 else str(value)
        v.add(
            field,
            f"must be less than format.round_limit ({round_limit}): a rule is never checked on the last"
            f" round, so this one could never stop the debate; got {read}",
        )
    return max(1, value)


# ==== the rules ================================================================================
def is_on(config: common.DebateConfig) -> bool:
    return config.stopping.HasField("judge_decided") or config.stopping.HasField("consensus")


def leader_margin(assessment: common.RoundAssessment) -> float:
    """The leader's weighted total less the runner-up's (0 for a tie or a single debater)."""
    if assessment.tie or not assessment.leader:
        return 0.0
    totals = sorted((s.weighted_total for s in assessment.scores), reverse=True)
    return totals[0] - totals[1] if len(totals) > 1 else 0.0


def rule_passed(
    stopping: common.StoppingRules, assessment: common.RoundAssessment
) -> tuple[common.StoppingRule.ValueType, str] | None:
    """(the rule, its reading) when a rule passes on `assessment`, judge decided first; else None."""
    r = assessment.round_number
    if stopping.HasField("judge_decided"):
        rule = stopping.judge_decided
        margin = leader_margin(assessment)
        if (
            r >= rule.min_rounds
            and not assessment.tie
            and assessment.leader
            and margin >= rule.min_margin
            and assessment.confidence >= rule.min_confidence
        ):
            return common.STOPPING_RULE_JUDGE_DECIDED, (
                f"{assessment.leader} leads round {r} by {margin:.2f} points with confidence "
                f"{assessment.confidence:.2f} (thresholds {rule.min_margin:g} and {rule.min_confidence:g})"
            )
    if stopping.HasField("consensus") and r >= stopping.consensus.min_rounds and assessment.consensus:
        return common.STOPPING_RULE_CONSENSUS, f"the debaters' stated positions converged in round {r}"
    return None


def rounds_played(run: DebateRun) -> int:
    """The leading rounds every debater finished (a cancelled turn is not finished)."""
    names = [p.name for p in run.config.participants]

    def finished(r: int, name: str) -> bool:
        turn = run.turns.get((r, name))
        return turn is not None and turn.finish_reason != common.FINISH_REASON_CANCELLED

    played = 0
    while played < run.config.format.round_limit and all(finished(played + 1, name) for name in names):
        played += 1
    return played


def estimate_avoided(run: DebateRun, played: int) -> Decimal:
    """What rounds played+1..round_limit would have cost, less what they spent (the cancelled
    round's calls), at least 0. A round's cost grows with the transcript its prompts carry, until
    the sliding window holds `window_size` earlier rounds: so the played rounds' costs (turns and
    assessment) are fitted by least squares as a + b * x, x = min(round, window_size + 1), and the
    fit is summed over the rounds not played (each at least 0); with one played round, or one x,
    the mean of the played rounds is the fit."""
    limit = run.config.format.round_limit
    if played <= 0 or played >= limit:
        return ZERO
    cap = run.config.context.window_size + 1 if run.config.context.window_size > 0 else limit
    xs = [Decimal(min(r, cap)) for r in range(1, played + 1)]
    ys = [run.round_amounts.get(r, ZERO) for r in range(1, played + 1)]
    mean_x, mean_y = exact_sum(xs) / played, exact_sum(ys) / played
    spread = exact_sum((x - mean_x) ** 2 for x in xs)
    slope = exact_sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread if spread else ZERO
    predicted = exact_sum(
        max(ZERO, mean_y + slope * (Decimal(min(r, cap)) - mean_x)) for r in range(played + 1, limit + 1)
    )
    cancelled = exact_sum(amount for r, amount in run.round_amounts.items() if r > played)
    return max(ZERO, (predicted - cancelled).quantize(_CENT_FRACTION))


# ==== the stop =================================================================================
class Stopping:
    """Decides, settles and announces the stops of the runs (see the module docstring)."""

    def __init__(self, store: Store, hub: EventHub, turns: TurnRunner):
        self.store = store
        self.hub = hub
        self.turns = turns

    def on_assessed(self, run: DebateRun, assessment: common.RoundAssessment) -> None:
        """Checks the rules on a recorded assessment; when one passes (and rounds remain), stores
        and commits the decision, then cancels the round under way. Raises what a commit raises."""
        if run.stop is not None or not is_on(run.config):
            return
        if rounds_played(run) >= run.config.format.round_limit:
            return  # every round is played: nothing to save
        passed = rule_passed(run.config.stopping, assessment)
        if passed is None:
            return
        rule, reason = passed
        stop = pb.DebateStop(rule=rule, after_round=assessment.round_number, reason=reason)
        self.store.put_stop(run.debate_id, stop, announced=False)
        self.hub.commit()  # the decision is durable before the round under way is touched
        run.stop = stop
        log.info("debate %s: stopped after round %d: %s", run.debate_id, stop.after_round, reason)
        if run.round_task is not None and not run.round_task.done():
            run.round_task.cancel()

    def check_recorded(self, run: DebateRun) -> None:
        """After a restart with no stop stored: the rules over the assessments recorded before it,
        in round order (a rule that passed on one is acted on now)."""
        for r in sorted(run.assessments):
            self.on_assessed(run, run.assessments[r])
            if run.stop is not None:
                return

    async def settle_round(self, run: DebateRun) -> None:
        """The cancelled round's calls charged as a cancel charges them, their partial text kept as
        cancelled turns; a finished turn whose usage the cancel cut short is recorded."""
        await self.turns.settle_inflight(run, STOPPED_REASON, keep_partial=True)
        for turn, recorded in self.store.turns(run.debate_id):
            if not recorded and (turn.round_number, turn.participant) in run.turns:
                key = turn_key(run.debate_id, turn.round_number, turn.participant, turn.attempt)
                await self.turns.record(run, run.turns[(turn.round_number, turn.participant)], key)

    def announce(self, run: DebateRun) -> None:
        """Stores the stop's figures and logs DebateStopped (once: not again after a restart)."""
        if run.stop is None or run.stop_announced:
            return
        played = rounds_played(run)
        stop = pb.DebateStop()
        stop.CopyFrom(run.stop)
        stop.rounds_played = played
        stop.rounds_not_played = run.config.format.round_limit - played
        stop.estimated_cost_avoided.CopyFrom(usd(estimate_avoided(run, played)))
        self.store.put_stop(run.debate_id, stop, announced=True)
        self.hub.emit(run.debate_id, debate_stopped=pb.DebateStopped(stop=stop))
        run.stop, run.stop_announced = stop, True
