// Human votes on the debate shown (issue 18 part 4): a button per debater and one for a tie,
// and the tally under them. One vote per voter per debate: this browser's voter id is kept in
// localStorage, so voting again replaces the vote. The server takes votes on a RUNNING or
// COMPLETED debate and says why otherwise (shown under the buttons).
import type { DebateConfig } from "./gen/debate/common/v1/common_pb";
import type { VoteTally } from "./gen/debate/orchestrator/v1/orchestrator_pb";
import { readError, type Orchestrator } from "./api";
import { el } from "./dom";

const VOTER_STORAGE = "debate-engine.voter";

/** This browser's voter id (made once, then kept). */
export function voterId(): string {
  let id = window.localStorage.getItem(VOTER_STORAGE);
  if (!id) {
    id = `browser-${crypto.randomUUID()}`;
    window.localStorage.setItem(VOTER_STORAGE, id);
  }
  return id;
}

export class VotePanel {
  private readonly section: HTMLElement;
  private readonly buttons: HTMLButtonElement[] = [];
  private readonly tally: HTMLElement;
  private readonly status: HTMLElement;
  private mine: string | null = null;

  constructor(
    private readonly client: Orchestrator,
    private readonly debateId: string,
    private readonly config: DebateConfig,
  ) {
    document.getElementById("votes")?.remove();
    const choices = [...config.participants.map((p) => ({ label: p.name, winner: p.name, tie: false })),
      { label: "Tie", winner: "", tie: true }];
    const row = el("div", { class: "vote-buttons" });
    for (const choice of choices) {
      const button = el("button", { type: "button", class: "button ghost", "data-choice": choice.tie ? "tie" : choice.winner },
        choice.label);
      button.addEventListener("click", () => void this.vote(choice.winner, choice.tie));
      this.buttons.push(button);
      row.append(button);
    }
    this.tally = el("ul", { class: "vote-tally", "data-testid": "vote-tally" });
    this.status = el("p", { class: "vote-status", role: "status", "data-testid": "vote-status" });
    this.section = el("section", { id: "votes", class: "card votes", "aria-labelledby": "votes-title" },
      el("h2", { id: "votes-title" }, "Your vote"), row, this.tally, this.status);
    document.getElementById("verdict")!.after(this.section);
    void this.refresh();
  }

  stop(): void {
    this.section.remove();
  }

  private async refresh(): Promise<void> {
    try {
      const { debate } = await this.client.getDebate({ debateId: this.debateId });
      if (debate?.votes) this.show(debate.votes);
    } catch {
      // the live view reports a debate it cannot read
    }
  }

  private async vote(winner: string, tie: boolean): Promise<void> {
    this.buttons.forEach((b) => (b.disabled = true));
    try {
      const reply = await this.client.castVote({ debateId: this.debateId, voter: voterId(), winner, tie });
      this.mine = tie ? "tie" : winner;
      this.status.textContent = reply.replaced ? "Your vote was changed." : "Thank you: your vote counts.";
      if (reply.votes) this.show(reply.votes);
    } catch (error) {
      this.status.textContent = `Your vote was not counted: ${readError(error).message}`;
    } finally {
      this.buttons.forEach((b) => (b.disabled = false));
    }
  }

  private show(tally: VoteTally): void {
    this.tally.replaceChildren(...tally.counts.map((c) => {
      const name = c.tie ? "Tie" : c.winner;
      return el("li", { "data-choice": c.tie ? "tie" : c.winner }, `${name}: ${c.votes}`);
    }));
    const majority = !tally.hasMajority ? "no majority yet" : `majority: ${tally.majorityTie ? "a tie" : tally.majorityWinner}`;
    this.tally.append(el("li", { class: "vote-summary" },
      `${tally.voters} ${tally.voters === 1 ? "voter" : "voters"}; ${majority}`));
    for (const button of this.buttons) button.setAttribute("aria-pressed", String(button.dataset.choice === this.mine));
  }
}
