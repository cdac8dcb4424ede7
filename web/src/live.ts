// The live view of one debate: a column per debater whose text grows token by token, the
// judge's round scores, the verdict and the cost. Events are applied in sequence order;
// a dropped stream is reopened with after_sequence, so nothing is missed or shown twice.
import type { BudgetStatus, CostLine, DebateConfig, DebateCost, Money, RoundAssessment, TokenUsage, Verdict } from "./gen/debate/common/v1/common_pb";
import { DebateState, type DebateEvent } from "./gen/debate/orchestrator/v1/orchestrator_pb";
import { isTransient, readError, type Orchestrator } from "./api";
import { showStop } from "./stopping";
import { el, formatInt, formatMoney, formatScore } from "./dom";
import { renderQuotes } from "./quotes";
import { HumanSeatPanel } from "./human_seat";

const PALETTE = ["#4f46e5", "#db2777", "#0891b2", "#ca8a04", "#16a34a", "#9333ea", "#ea580c", "#475569"];
// Reopen a stream that has said nothing (not even a heartbeat) for this long.
const SILENCE_LIMIT_MS = 45_000;

export const STATE_LABELS: Record<number, string> = {
  [DebateState.CREATED]: "Created",
  [DebateState.QUEUED]: "Queued",
  [DebateState.RUNNING]: "Live",
  [DebateState.COMPLETED]: "Finished",
  [DebateState.FAILED]: "Failed",
  [DebateState.CANCELLED]: "Cancelled",
  [DebateState.BUDGET_EXCEEDED]: "Budget exceeded",
};

interface TurnView {
  attempt: number;
  text: Text;
  body: HTMLElement;
  section: HTMLElement;
}

export type ConnectionState = "idle" | "connecting" | "live" | "reconnecting" | "closed";

export class LiveDebate {
  private lastSequence = 0n;
  // A debate can end more than once (continued after its end): the view finishes at an ending
  // at or after this sequence (0n: the first).
  endsAfter = 0n;
  private finished = false;
  private stopped = false;
  private abort: AbortController | null = null;
  private readonly columns = new Map<string, HTMLElement>();
  private readonly colors = new Map<string, string>();
  private readonly turns = new Map<string, TurnView>();
  private roundLimit: number;
  private currentRound = 0;
  private verdictCost: HTMLElement | null = null;
  private humanSeat: HumanSeatPanel | null = null; // a seat played by a person (human_seat.ts)

  constructor(
    private readonly client: Orchestrator,
    readonly debateId: string,
    private readonly config: DebateConfig,
    private readonly onConnection: (state: ConnectionState, detail?: string) => void,
    private readonly onError: (message: string) => void,
  ) {
    this.roundLimit = config.format?.roundLimit ?? 0;
    this.render();
    this.humanSeat = new HumanSeatPanel(client, debateId, config);
  }

  private render(): void {
    (document.getElementById("live-topic") as HTMLElement).textContent = this.config.topic;
    this.setState(DebateState.CREATED);
    this.setRound(0);
    const columns = document.getElementById("columns") as HTMLElement;
    columns.replaceChildren();
    columns.style.setProperty("--count", String(this.config.participants.length));
    this.config.participants.forEach((p, i) => {
      const color = PALETTE[i % PALETTE.length];
      this.colors.set(p.name, color);
      const column = el("article", {
        class: "card column",
        "data-testid": "debater-column",
        "data-participant": p.name,
        style: `--accent: ${color}`,
      },
        el("header", { class: "column-head" },
          el("div", { class: "avatar", "aria-hidden": "true" }, initials(p.name)),
          el("div", { class: "column-title" },
            el("h2", {}, p.name),
            el("p", { class: "muted small" }, p.model),
          ),
          el("span", { class: "stance", title: `Stance: ${p.stance}` }, p.stance || "—"),
        ),
        el("p", { class: "persona" }, p.persona),
        el("div", { class: "column-body", "data-testid": "debater-text" }),
      );
      this.columns.set(p.name, column);
      columns.append(column);
    });
    (document.getElementById("round-scores") as HTMLElement).replaceChildren();
    (document.getElementById("scores-empty") as HTMLElement).hidden = false;
    const verdict = document.getElementById("verdict") as HTMLElement;
    verdict.hidden = true;
    verdict.replaceChildren();
    document.getElementById("stopped")?.remove(); // a stopping rule's notice (stopping.ts)
    const breakdown = document.getElementById("cost-breakdown") as HTMLElement;
    breakdown.hidden = true;
    breakdown.replaceChildren();
    for (const id of ["cost-total", "token-total"]) delete (document.getElementById(id) as HTMLElement).dataset.value;
    this.showTotals(undefined, undefined);
    (document.getElementById("budget-metric") as HTMLElement).hidden = true;
  }

  stop(): void {
    this.humanSeat?.stop();
    this.stopped = true;
    this.abort?.abort();
  }

  /** Follows the debate's event log until the debate ends, reopening the stream when it drops. */
  async follow(): Promise<void> {
    let failures = 0;
    while (!this.finished && !this.stopped) {
      this.onConnection(failures === 0 ? "connecting" : "reconnecting");
      this.abort = new AbortController();
      let silence = window.setTimeout(() => this.abort?.abort(), SILENCE_LIMIT_MS);
      try {
        const stream = this.client.streamDebateEvents(
          // batchEvents: each response carries everything ready, far fewer messages for busy debates.
          { debateId: this.debateId, afterSequence: this.lastSequence, batchEvents: true },
          { signal: this.abort.signal },
        );
        for await (const response of stream) {
          window.clearTimeout(silence);
          silence = window.setTimeout(() => this.abort?.abort(), SILENCE_LIMIT_MS);
          if (failures > 0 || this.lastSequence === 0n) this.onConnection("live");
          failures = 0;
          for (const event of response.event ? [response.event] : response.events) {
            this.apply(event);
            if (this.finished) break;
          }
          if (this.finished) break;
        }
        if (!this.finished && !this.stopped) failures += 1; // closed early: resume after a pause
      } catch (error) {
        if (this.stopped) break;
        if (!isTransient(error) && !this.abort.signal.aborted) {
          const info = readError(error);
          this.onError(`The event stream failed: ${info.message} (${info.codeName})`);
          this.onConnection("closed");
          return;
        }
        failures += 1;
      } finally {
        window.clearTimeout(silence);
      }
      if (!this.finished && !this.stopped) {
        const delay = Math.min(500 * 2 ** Math.min(failures - 1, 4), 8000);
        this.onConnection("reconnecting", `resuming after event ${this.lastSequence}`);
        await new Promise((resolve) => window.setTimeout(resolve, delay));
      }
    }
    this.onConnection("closed");
  }

  private apply(event: DebateEvent): void {
    if (event.sequence <= this.lastSequence) return; // already shown before a reconnect
    this.lastSequence = event.sequence;
    this.humanSeat?.apply(event);
    const payload = event.payload;
    switch (payload.case) {
      case "stateChanged":
        this.setState(payload.value.state);
        break;
      case "roundStarted":
        this.setState(DebateState.RUNNING);
        this.setRound(payload.value.roundNumber);
        break;
      case "turnStarted": {
        const v = payload.value;
        this.turn(v.roundNumber, v.participant, v.attempt).section.classList.add("streaming");
        break;
      }
      case "tokenDelta": {
        const v = payload.value;
        const turn = this.turn(v.roundNumber, v.participant, v.attempt);
        if (turn.attempt !== v.attempt) break; // a late delta of a failed attempt: void
        turn.section.classList.add("streaming");
        turn.text.appendData(v.text);
        this.follow_scroll(v.participant);
        break;
      }
      case "turnCompleted": {
        const t = payload.value.turn;
        if (!t) break;
        const turn = this.turn(t.roundNumber, t.participant, t.attempt);
        turn.text.data = t.text;
        if (t.quotes.length > 0) renderQuotes(turn.body, t.text, t.quotes); // evidence: marked quotes
        turn.section.classList.remove("streaming", "retrying");
        // All the turn's tokens (what it read and wrote), as the cost tables count them.
        const usage = t.usage ? `${formatInt(t.usage.totalTokens)} tokens (${formatInt(t.usage.completionTokens)} written)` : "";
        const cost = t.cost ? ` · ${formatMoney(t.cost.amount, t.cost.currencyCode)}` : "";
        turn.section.querySelector(".turn-meta")!.textContent = t.human?.skipped
          ? `No turn: ${t.human.skipReason === "FORFEITED" ? "forfeited" : "no answer in time"}`
          : `${usage}${cost}${t.simulated ? " · simulated" : ""}`;
        break;
      }
      case "turnFailed": {
        const v = payload.value;
        const turn = this.turn(v.roundNumber, v.participant, v.attempt);
        if (turn.attempt !== v.attempt) break;
        turn.section.classList.remove("streaming");
        turn.section.classList.add("retrying");
        turn.section.querySelector(".turn-meta")!.textContent = v.willRetry
          ? `Model call failed (${v.reason}); retrying…`
          : `Model call failed: ${v.message || v.reason}`;
        break;
      }
      case "roundAssessed":
        if (payload.value.assessment) this.showAssessment(payload.value.assessment, payload.value.roundCost);
        break;
      case "debateStopped":
        if (payload.value.stop) showStop(payload.value.stop);
        break;
      case "verdictRendered":
        if (payload.value.verdict) this.showVerdict(payload.value.verdict, payload.value.verdictCost);
        break;
      case "costUpdated": {
        // The running total of every recorded call, the judge's included: the one source of
        // the figures at the top, which the final breakdown's total equals.
        const v = payload.value;
        this.showTotals(v.total, v.usage);
        if (v.budget) this.showBudget(v.budget);
        break;
      }
      case "debateCompleted": {
        const v = payload.value;
        if (v.verdict) this.showVerdict(v.verdict);
        if (v.cost) this.showCost(v.cost);
        this.setState(DebateState.COMPLETED);
        if (event.sequence >= this.endsAfter) this.finish();
        break;
      }
      case "debateFailed": {
        const v = payload.value;
        if (v.cost) this.showCost(v.cost);
        this.setState(v.state || DebateState.FAILED);
        if (v.state !== DebateState.CANCELLED) this.onError(`The debate ended early: ${v.message || v.reason}`);
        if (event.sequence >= this.endsAfter) this.finish();
        break;
      }
      case "debateContinued":
        this.roundLimit = payload.value.roundLimit;
        break;
      case "heartbeat":
      default:
        break;
    }
  }

  private finish(): void {
    this.finished = true;
    document.querySelectorAll(".turn.streaming").forEach((node) => node.classList.remove("streaming"));
  }

  private follow_scroll(participant: string): void {
    const body = this.columns.get(participant)?.querySelector(".column-body") as HTMLElement | null;
    if (!body) return;
    // Keep the newest text in view unless the reader scrolled up.
    if (body.scrollHeight - body.scrollTop - body.clientHeight < 80) body.scrollTop = body.scrollHeight;
  }

  /** The text of one debater's turn in one round; a new attempt replaces a failed one's text. */
  private turn(round: number, participant: string, attempt: number): TurnView {
    const key = `${round}/${participant}`;
    let view = this.turns.get(key);
    if (view && attempt > view.attempt) {
      view.text.data = "";
      view.attempt = attempt;
      view.section.classList.remove("retrying");
      view.section.querySelector(".turn-meta")!.textContent = `attempt ${attempt}`;
    }
    if (view) return view;
    let column = this.columns.get(participant);
    if (!column) {
      // A participant not in the config (should not happen); give it a column anyway.
      column = el("article", { class: "card column", "data-testid": "debater-column", "data-participant": participant },
        el("header", { class: "column-head" }, el("h2", {}, participant)),
        el("div", { class: "column-body", "data-testid": "debater-text" }));
      this.columns.set(participant, column);
      document.getElementById("columns")!.append(column);
    }
    const text = document.createTextNode("");
    const body = el("p", { class: "turn-text" }, text);
    const section = el("section", { class: "turn", "data-round": String(round) },
      el("h3", { class: "turn-round" }, `Round ${round}`),
      body,
      el("p", { class: "turn-meta muted small" }),
    );
    column.querySelector(".column-body")!.append(section);
    view = { attempt, text, body, section };
    this.turns.set(key, view);
    return view;
  }

  private setState(state: DebateState): void {
    const cancel = document.getElementById("cancel-debate") as HTMLButtonElement;
    cancel.hidden = ![DebateState.CREATED, DebateState.QUEUED, DebateState.RUNNING].includes(state);
    const badge = document.getElementById("live-state") as HTMLElement;
    badge.textContent = STATE_LABELS[state] ?? "Unknown";
    badge.dataset.state = DebateState[state]?.toLowerCase() ?? "";
  }

  private setRound(round: number): void {
    this.currentRound = Math.max(this.currentRound, round);
    const label = document.getElementById("live-round") as HTMLElement;
    label.textContent = this.currentRound > 0 ? `Round ${this.currentRound} of ${this.roundLimit}` : `${this.roundLimit} rounds`;
  }

  /** The cost and tokens so far at the top of the page (data-value: the exact figure); unset
   * figures are left as they are, or shown as zero before the first. */
  private showTotals(total: Money | undefined, usage: TokenUsage | undefined): void {
    const cost = document.getElementById("cost-total") as HTMLElement;
    const tokens = document.getElementById("token-total") as HTMLElement;
    if (total || cost.dataset.value === undefined) {
      cost.textContent = formatMoney(total?.amount ?? "0", total?.currencyCode);
      cost.dataset.value = total?.amount || "0";
    }
    if (usage || tokens.dataset.value === undefined) {
      tokens.textContent = formatInt(usage?.totalTokens ?? 0n);
      tokens.dataset.value = String(usage?.totalTokens ?? 0n);
    }
  }

  private showAssessment(a: RoundAssessment, roundCost: CostLine | undefined): void {
    (document.getElementById("scores-empty") as HTMLElement).hidden = true;
    const container = document.getElementById("round-scores") as HTMLElement;
    container.querySelector(`[data-round="${a.roundNumber}"]`)?.remove();
    const criteria = [...new Set(a.scores.flatMap((s) => s.criteria.map((c) => c.criterion)))];
    // data-label: on a phone each debater's row becomes a small card of labelled scores.
    const table = el("table", { class: "score-table" },
      el("thead", {}, el("tr", {},
        el("th", { scope: "col" }, "Debater"),
        ...criteria.map((c) => el("th", { scope: "col", class: "num" }, humanize(c))),
        el("th", { scope: "col", class: "num" }, "Total"),
      )),
      el("tbody", {}, ...[...a.scores]
        .sort((x, y) => y.weightedTotal - x.weightedTotal)
        .map((s) => el("tr", { class: s.debater === a.leader ? "leader" : "", "data-debater": s.debater },
          el("th", { scope: "row" }, el("span", { class: "dot", style: `background:${this.colors.get(s.debater) ?? "#888"}` }), s.debater),
          ...criteria.map((c) => el("td", { class: "num", "data-label": humanize(c) },
            formatScore(s.criteria.find((x) => x.criterion === c)?.score ?? 0))),
          el("td", { class: "num total", "data-label": "Total" }, formatScore(s.weightedTotal)),
        ))),
    );
    const card = el("article", { class: "card round-card", "data-round": String(a.roundNumber), "data-testid": "round-score" },
      el("header", { class: "round-card-head" },
        el("h3", {}, `Round ${a.roundNumber}`),
        el("span", { class: "leader-badge" }, a.tie ? "Tie" : `Leader: ${a.leader}`),
      ),
      el("div", { class: "table-wrap" }, table),
      a.rationale ? el("p", { class: "rationale muted" }, a.rationale) : null,
      costNote(`Round ${a.roundNumber} cost`, "the debaters' turns and the judge's scoring", roundCost),
    );
    // Rounds in order, whatever order the judge finished them in.
    const later = [...container.children].find((c) => Number((c as HTMLElement).dataset.round) > a.roundNumber);
    container.insertBefore(card, later ?? null);
  }

  private showVerdict(v: Verdict, cost?: CostLine): void {
    const box = document.getElementById("verdict") as HTMLElement;
    const top = Math.max(10, ...v.finalScores.map((s) => s.score));
    box.replaceChildren(
      el("div", { class: "verdict-head" },
        el("p", { class: "eyebrow" }, "Verdict"),
        el("h2", {}, v.tie ? "A tie" : `${v.winner} wins`),
        el("p", { class: "muted small" }, `Confidence ${Math.round(v.confidence * 100)}% · judged by ${v.judgeModels.join(", ") || "the judge"}${v.simulated ? " (simulated)" : ""}`),
      ),
      el("ol", { class: "final-scores" }, ...[...v.finalScores]
        .sort((x, y) => y.score - x.score)
        .map((s) => el("li", { class: s.debater === v.winner ? "winner" : "" },
          el("span", { class: "final-name" }, s.debater),
          el("span", { class: "bar" }, el("span", { style: `width:${(s.score / top) * 100}%; background:${this.colors.get(s.debater) ?? "#888"}` })),
          el("span", { class: "final-score num" }, formatScore(s.score)),
        ))),
    );
    if (v.summary) box.append(el("p", { class: "verdict-summary" }, v.summary));
    // DebateCompleted repeats the verdict without its cost: keep the line shown before.
    const note = costNote("Verdict cost", "the judge's verdict", cost) ?? this.verdictCost;
    if (note) box.append(note);
    this.verdictCost = note;
    box.hidden = false;
  }

  /** What the debate has spent of its cap: the same running total as the cost figure. */
  private showBudget(budget: BudgetStatus): void {
    if (!budget.cap?.amount || !budget.spent) return; // no cap on this debate
    (document.getElementById("budget-metric") as HTMLElement).hidden = false;
    const used = document.getElementById("budget-used") as HTMLElement;
    used.textContent = `${formatMoney(budget.spent.amount, budget.spent.currencyCode)} of ${formatMoney(budget.cap.amount, budget.cap.currencyCode)}`;
    used.dataset.value = budget.spent.amount || "0";
  }

  /** The final breakdown from accounting's ledger. Its total is also the last running total
   * (the orchestrator announces it), so the figures at the top agree with it. The judge is a
   * participant in the ledger but not a debater: it is listed under "By role", not "By debater". */
  private showCost(cost: DebateCost): void {
    if (cost.budget) this.showBudget(cost.budget);
    this.showTotals(cost.total, cost.usage);
    const box = document.getElementById("cost-breakdown") as HTMLElement;
    const lines = (group: string, title: string, rows: CostLine[], label: (key: string) => string = (k) => k) => rows.length === 0 ? null : el("div", { class: "cost-group", "data-group": group },
      el("h3", {}, title),
      el("table", { class: "cost-table" },
        el("thead", {}, el("tr", {},
          el("th", { scope: "col" }, el("span", { class: "visually-hidden" }, title.replace(/^By /, ""))),
          el("th", { scope: "col", class: "num" }, "Tokens"),
          el("th", { scope: "col", class: "num" }, "Cost"),
        )),
        el("tbody", {}, ...rows.map((line) => el("tr", {
        "data-key": line.key,
        "data-tokens": String(line.usage?.totalTokens ?? 0n),
        "data-amount": line.cost?.amount || "0",
      },
        el("th", { scope: "row" }, label(line.key)),
        el("td", { class: "num muted" }, formatInt(line.usage?.totalTokens ?? 0n)),
        el("td", { class: "num" }, formatMoney(line.cost?.amount, line.cost?.currencyCode)),
      )))),
    );
    const debaters = new Set(this.config.participants.map((p) => p.name));
    // Rounds in order, the verdict (round 0) last.
    const rounds = [...cost.byRound].sort((x, y) => (Number(x.key) || Infinity) - (Number(y.key) || Infinity));
    box.replaceChildren(
      el("header", { class: "round-card-head" },
        el("h2", {}, "What it cost"),
        el("span", { class: "cost-final", "data-amount": cost.total?.amount || "0", "data-tokens": String(cost.usage?.totalTokens ?? 0n) },
          formatMoney(cost.total?.amount, cost.total?.currencyCode)),
      ),
      el("div", { class: "cost-groups" },
        lines("debater", "By debater", cost.byParticipant.filter((line) => debaters.has(line.key))),
        lines("role", "By role", cost.byRole, roleLabel),
        lines("round", "By round", rounds, (key) => (key === "0" ? "Verdict" : `Round ${key}`)),
        lines("model", "By model", cost.byModel),
      ),
    );
    box.hidden = false;
  }
}

/** "Round 2 cost: 1,234 tokens · $0.01", the same figures as the round's line in the final breakdown. */
function costNote(title: string, what: string, line: CostLine | undefined): HTMLElement | null {
  if (!line?.cost) return null; // an event logged before rounds carried their cost
  return el("p", {
    class: "cost-note muted small",
    "data-testid": "cost-note",
    "data-key": line.key,
    "data-tokens": String(line.usage?.totalTokens ?? 0n),
    "data-amount": line.cost.amount || "0",
    title: `What ${what} cost`,
  }, `${title}: ${formatInt(line.usage?.totalTokens ?? 0n)} tokens · ${formatMoney(line.cost.amount, line.cost.currencyCode)}`);
}

const ROLE_LABELS: Record<string, string> = { debater: "Debaters", judge: "Judge: scores", verdict: "Judge: verdict" };

function roleLabel(key: string): string {
  const role = key.replace(/^ROLE_/, "").toLowerCase();
  return ROLE_LABELS[role] ?? humanize(role);
}

function initials(name: string): string {
  return name.split(/\s+/).filter(Boolean).slice(0, 2).map((w) => w[0]!.toUpperCase()).join("") || "?";
}

function humanize(key: string): string {
  const text = key.replace(/^ROLE_/, "").replace(/_/g, " ").toLowerCase();
  return text.charAt(0).toUpperCase() + text.slice(1);
}
