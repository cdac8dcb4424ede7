// A human seat (issue 19 part 3): when the debate awaits a seat played by a person (model
// "human"), a panel above the columns says whose turn it is, counts down to its deadline and
// takes the text, given through SubmitTurn under one request id per turn (a retried click acts
// once). The panel follows the debate's events: HumanTurnAwaited opens it, the seat's
// TurnCompleted or HumanTurnTimedOut closes it, and so does the debate's end.
import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { DebateConfig } from "./gen/debate/common/v1/common_pb";
import type { DebateEvent, HumanTurnAwaited } from "./gen/debate/orchestrator/v1/orchestrator_pb";
import { newRequestId, readError, type Orchestrator } from "./api";
import { el } from "./dom";

export const HUMAN_MODEL = "human";

/** "4:05" from milliseconds left (0:00 once passed). */
export function countdown(ms: number): string {
  const seconds = Math.max(0, Math.ceil(ms / 1000));
  return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
}

export class HumanSeatPanel {
  private readonly panel: HTMLElement;
  private readonly title: HTMLElement;
  private readonly clock: HTMLElement;
  private readonly text: HTMLTextAreaElement;
  private readonly button: HTMLButtonElement;
  private readonly error: HTMLElement;
  private awaited: HumanTurnAwaited | null = null;
  private requestId = "";
  private timer = 0;

  constructor(
    private readonly client: Orchestrator,
    private readonly debateId: string,
    config: DebateConfig,
  ) {
    this.title = el("h2", { class: "human-title" });
    this.clock = el("span", { class: "human-clock", "data-testid": "human-countdown", role: "timer" });
    this.text = el("textarea", { id: "human-text", rows: "5", "data-testid": "human-text", "aria-label": "Your turn" });
    this.button = el("button", { type: "submit", class: "button primary", "data-testid": "human-submit" }, "Give my turn");
    this.error = el("p", { class: "field-error", "data-testid": "human-error", hidden: "" });
    const form = el("form", { class: "human-form" }, this.text, this.error,
      el("div", { class: "actions" }, this.button, el("span", { class: "hint" }, "Counted with the tokenizer; costs nothing.")));
    form.addEventListener("submit", (event) => { event.preventDefault(); void this.submit(); });
    this.text.addEventListener("input", () => { this.error.hidden = true; });
    this.panel = el("section", { class: "card human-seat", "data-testid": "human-seat", hidden: "" },
      el("div", { class: "human-head" }, this.title, this.clock), form);
    const seats = config.participants.filter((p) => p.model === HUMAN_MODEL).map((p) => p.name);
    if (seats.length > 0) document.getElementById("columns")!.before(this.panel);
  }

  /** Follows one event of the debate's log (in sequence order). */
  apply(event: DebateEvent): void {
    const payload = event.payload;
    switch (payload.case) {
      case "humanTurnAwaited":
        this.open(payload.value);
        break;
      case "humanTurnTimedOut":
        if (this.isAwaited(payload.value.roundNumber, payload.value.participant)) this.close();
        break;
      case "turnCompleted": {
        const turn = payload.value.turn;
        if (turn && this.isAwaited(turn.roundNumber, turn.participant)) this.close();
        break;
      }
      case "debateCompleted":
      case "debateFailed":
        this.close();
        break;
      default:
        break;
    }
  }

  stop(): void {
    this.close();
    this.panel.remove();
  }

  private isAwaited(round: number, participant: string): boolean {
    return this.awaited !== null && this.awaited.roundNumber === round && this.awaited.participant === participant;
  }

  private open(awaited: HumanTurnAwaited): void {
    if (!this.isAwaited(awaited.roundNumber, awaited.participant)) {
      this.text.value = "";
      this.requestId = newRequestId();
    }
    this.awaited = awaited;
    this.title.textContent = `${awaited.participant}'s turn · round ${awaited.roundNumber}`;
    this.panel.dataset.participant = awaited.participant;
    this.error.hidden = true;
    this.button.disabled = false;
    this.panel.hidden = false;
    window.clearInterval(this.timer);
    this.tick();
    this.timer = window.setInterval(() => this.tick(), 1000);
  }

  private close(): void {
    window.clearInterval(this.timer);
    this.awaited = null;
    this.panel.hidden = true;
  }

  private tick(): void {
    if (!this.awaited?.deadline) return;
    const left = timestampMs(this.awaited.deadline) - Date.now();
    this.clock.textContent = `${countdown(left)} left`;
    this.clock.classList.toggle("urgent", left < 30_000);
  }

  private async submit(): Promise<void> {
    const awaited = this.awaited;
    if (!awaited) return;
    this.button.disabled = true;
    this.error.hidden = true;
    try {
      await this.client.submitTurn({
        debateId: this.debateId,
        participant: awaited.participant,
        roundNumber: awaited.roundNumber,
        text: this.text.value,
        requestId: this.requestId,
      });
      this.title.textContent = `${awaited.participant}'s turn · round ${awaited.roundNumber} · given`;
    } catch (error) {
      const info = readError(error);
      const details = info.violations.map((v) => `${v.field}: ${v.description}`).join("; ");
      this.error.textContent = details || info.message;
      this.error.hidden = false;
      this.button.disabled = false;
    }
  }
}
