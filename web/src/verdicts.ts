// The verdict history of a debate (issue 18): every verdict it was given, version 1 at its end,
// then each re-judging (RejudgeDebate) and continuation (ContinueDebate), with its winner, the
// judge that made it, its agreement with version 1 and what it cost. Read from GetDebate's
// `verdicts` once the live view has followed the debate to its end.
import type { JudgeConfig } from "./gen/debate/common/v1/common_pb";
import { VerdictReason, type VerdictVersion } from "./gen/debate/orchestrator/v1/orchestrator_pb";
import type { Orchestrator } from "./api";
import { el, formatMoney } from "./dom";

const REASONS: Record<number, string> = {
  [VerdictReason.DEBATE_END]: "End of the debate",
  [VerdictReason.REJUDGE]: "Re-judged",
  [VerdictReason.CONTINUATION]: "Continued",
};

function judgeText(judge: JudgeConfig | undefined): string {
  if (!judge) return "";
  let text = judge.models.join(", ");
  if (judge.orderings > 1) text += ` × ${judge.orderings} orderings`;
  if (judge.rubric?.criteria.length) text += ` (${judge.rubric.criteria.map((c) => c.name).join(", ")})`;
  return text;
}

function versionRow(v: VerdictVersion, latest: number): HTMLTableRowElement {
  const verdict = v.verdict;
  const winner = !verdict || verdict.tie || !verdict.winner ? "Tie" : verdict.winner;
  const why = REASONS[v.reason] ?? "";
  const rounds = v.firstRound ? ` (rounds ${v.firstRound}–${v.roundCount})` : "";
  const agreement = v.agreement
    ? `${v.agreement.sameWinner ? "Same winner" : "Other winner"}, τ ${v.agreement.rankCorrelation.toFixed(2)}`
    : "—";
  return el("tr", { "data-testid": "verdict-version", "data-version": String(v.version), class: v.version === latest ? "latest" : "" },
    el("th", { scope: "row" }, `v${v.version}`),
    el("td", { "data-label": "Why" }, why + rounds, v.question ? el("div", { class: "muted small" }, `“${v.question}”`) : null),
    el("td", { class: "winner", "data-label": "Winner" }, winner),
    el("td", { class: "num", "data-label": "Confidence" }, verdict ? `${Math.round(verdict.confidence * 100)}%` : ""),
    el("td", { "data-label": "Judge" }, judgeText(v.judge)),
    el("td", { "data-label": "Against v1" }, agreement),
    el("td", { class: "num", "data-label": "Cost" }, v.cost ? formatMoney(v.cost.cost?.amount, v.cost.cost?.currencyCode) : ""),
  );
}

/** Fills `container` with the history table; hidden when the debate has no verdict yet. */
export function renderVerdictHistory(container: HTMLElement, versions: VerdictVersion[]): void {
  container.hidden = versions.length === 0;
  if (versions.length === 0) {
    container.replaceChildren();
    return;
  }
  const latest = Math.max(...versions.map((v) => v.version));
  container.replaceChildren(
    el("h2", {}, "Verdict history"),
    el("p", { class: "muted small" },
      versions.length === 1
        ? "One verdict so far. A re-judging or a continuation adds a version beside it."
        : `${versions.length} verdicts; the latest (v${latest}) is the one shown above.`),
    el("table", { class: "history-table" },
      el("thead", {}, el("tr", {},
        ...["Version", "Why", "Winner", "Confidence", "Judge", "Against v1", "Cost"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, ...versions.map((v) => versionRow(v, latest))),
    ),
  );
}

/** Reads the debate's verdict versions and shows them in #verdict-history. */
export async function showVerdictHistory(client: Orchestrator, debateId: string): Promise<void> {
  const container = document.getElementById("verdict-history") as HTMLElement | null;
  if (!container) return;
  try {
    const { debate } = await client.getDebate({ debateId });
    renderVerdictHistory(container, debate?.verdicts ?? []);
  } catch {
    container.hidden = true; // the history is an extra: the live view stays as it is
  }
}

/** Hides the history of the debate shown before. */
export function clearVerdictHistory(): void {
  const container = document.getElementById("verdict-history") as HTMLElement | null;
  if (container) renderVerdictHistory(container, []);
}
