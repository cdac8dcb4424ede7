// Stopping rules (issue 19 part 1): the notice a debate shows when a rule ended it early,
// above the verdict: which rule, after which round, and what the stop saved.
import { StoppingRule } from "./gen/debate/common/v1/common_pb";
import type { DebateStop } from "./gen/debate/orchestrator/v1/orchestrator_pb";
import { el, formatMoney } from "./dom";

const RULES: Record<number, string> = {
  [StoppingRule.JUDGE_DECIDED]: "the judge decided",
  [StoppingRule.CONSENSUS]: "consensus",
};

export function describeStop(stop: DebateStop): string {
  let text = `Stopped early after round ${stop.afterRound} (${RULES[stop.rule] ?? "a stopping rule"})`;
  if (stop.roundsNotPlayed > 0) {
    text += `: ${stop.roundsNotPlayed} round${stop.roundsNotPlayed === 1 ? "" : "s"} not played`;
    const avoided = stop.estimatedCostAvoided;
    if (avoided) text += `, about ${formatMoney(avoided.amount, avoided.currencyCode)} avoided`;
  }
  return `${text}.`;
}

/** Puts the notice just before the verdict box (once: a second call replaces it). */
export function showStop(stop: DebateStop): void {
  document.getElementById("stopped")?.remove();
  const notice = el("section", { id: "stopped", class: "card stopped", "data-testid": "debate-stopped" },
    el("p", { class: "eyebrow" }, "Stopped early"),
    el("p", {}, describeStop(stop)),
    stop.reason ? el("p", { class: "muted small" }, stop.reason) : null,
  );
  const verdict = document.getElementById("verdict") as HTMLElement;
  verdict.before(notice);
}
