// Tournaments on the page: the leaderboard (#leaderboard) and a tournament's live progress
// (#tournament=ID), over TournamentService. The view is its own section; main.ts hands it the
// routes it owns (`route` returns true for them) and hides the debate views meanwhile.
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import {
  MatchState,
  TournamentService,
  TournamentState,
  type Match,
  type Rating,
  type TournamentSummary,
} from "./gen/debate/orchestrator/v1/tournament_pb";
import { apiBaseUrl, bearer, isTransient, readError } from "./api";
import { el, formatInt, formatMoney } from "./dom";

type Tournaments = Client<typeof TournamentService>;

const STATE_LABELS: Record<number, string> = {
  [TournamentState.CREATED]: "Created",
  [TournamentState.RUNNING]: "Running",
  [TournamentState.COMPLETED]: "Completed",
  [TournamentState.CANCELLED]: "Cancelled",
  [TournamentState.BUDGET_EXHAUSTED]: "Budget exhausted",
};
const MATCH_LABELS: Record<number, string> = {
  [MatchState.PENDING]: "Pending",
  [MatchState.RUNNING]: "Running",
  [MatchState.DECIDED]: "Decided",
  [MatchState.FAILED]: "Failed",
  [MatchState.SKIPPED]: "Skipped",
};

function ratingsTable(ratings: Rating[]): HTMLElement {
  return el("table", { class: "ratings", "data-testid": "ratings" },
    el("thead", {}, el("tr", {}, ...["#", "Model", "Rating", "95% interval", "W-L-T", "Matches"].map((h) => el("th", {}, h)))),
    el("tbody", {}, ...ratings.map((r) => el("tr", { "data-model": r.model },
      el("td", {}, String(r.rank)),
      el("td", {}, r.model),
      el("td", { class: "num" }, r.rating.toFixed(0)),
      el("td", { class: "num" }, `${r.ratingLow.toFixed(0)} – ${r.ratingHigh.toFixed(0)}`),
      el("td", { class: "num" }, `${r.wins}-${r.losses}-${r.ties}`),
      el("td", { class: "num" }, String(r.matches)),
    ))));
}

function matchRow(m: Match): HTMLElement {
  const result = m.state !== MatchState.DECIDED ? "" : m.tie ? "Tie" : `${m.winnerModel} wins`;
  return el("tr", { "data-match": String(m.matchIndex), "data-state": (MatchState[m.state] ?? "").toLowerCase() },
    el("td", {}, String(m.matchIndex + 1)),
    el("td", {}, `${m.modelA} v ${m.modelB}`),
    el("td", {}, m.topic),
    el("td", {}, el("span", { class: "state", "data-state": (MatchState[m.state] ?? "").toLowerCase() }, MATCH_LABELS[m.state] ?? "")),
    el("td", {}, result),
  );
}

export class TournamentView {
  readonly section: HTMLElement;
  private readonly client: Tournaments;
  private abort: AbortController | null = null;
  private matches = new Map<number, Match>();

  constructor(parent: HTMLElement, private readonly showBanner: (message: string) => void) {
    this.client = createClient(TournamentService, createGrpcWebTransport({ baseUrl: apiBaseUrl(), interceptors: [bearer] }));
    this.section = el("section", { id: "tournaments", class: "tournaments", hidden: "" });
    parent.append(this.section);
  }

  /** Shows the view for `hash` when it is one of ours (true), else hides it (false). */
  route(hash: string): boolean {
    this.stop();
    const one = /^#tournament=(.+)$/.exec(hash);
    if (one) {
      this.section.hidden = false;
      void this.follow(decodeURIComponent(one[1]!));
      return true;
    }
    if (hash === "#leaderboard") {
      this.section.hidden = false;
      void this.leaderboard();
      return true;
    }
    this.section.hidden = true;
    return false;
  }

  stop(): void {
    this.abort?.abort();
    this.abort = null;
  }

  /** A new view's signal; the view before it is stopped. A view renders only while its signal
   * is not aborted: a reply that comes back after the page moved on (the browser fires both
   * popstate and hashchange for one click) must not draw over the view that replaced it. */
  private begin(): AbortSignal {
    this.stop();
    this.abort = new AbortController();
    return this.abort.signal;
  }

  private async leaderboard(): Promise<void> {
    const signal = this.begin();
    this.section.replaceChildren(el("h1", {}, "Leaderboard"), el("p", { class: "muted" }, "Loading…"));
    try {
      const [board, list] = await Promise.all([
        this.client.getLeaderboard({}, { signal }),
        this.client.listTournaments({ pageSize: 20 }, { signal }),
      ]);
      if (signal.aborted) return;
      this.section.replaceChildren(
        el("h1", {}, "Leaderboard"),
        board.ratings.length
          ? ratingsTable(board.ratings)
          : el("p", { class: "muted", "data-testid": "ratings-empty" }, "No decided matches yet."),
        el("p", { class: "muted small" }, `${board.matches} decided matches. ${board.method}`),
        el("h2", {}, "Tournaments"),
        el("ul", { class: "recent-list", "data-testid": "tournament-list" }, ...list.tournaments.map((t: TournamentSummary) =>
          el("li", {}, el("a", { href: `#tournament=${encodeURIComponent(t.tournamentId)}` },
            el("span", { class: "recent-topic" }, t.name || t.models.join(", ")),
            el("span", {}, `${t.matchesDecided}/${t.matchesTotal}`),
            el("span", { class: "state", "data-state": (TournamentState[t.state] ?? "").toLowerCase() }, STATE_LABELS[t.state] ?? ""),
          )))),
      );
    } catch (error) {
      if (!signal.aborted) this.showBanner(`Could not load the leaderboard: ${readError(error).message}`);
    }
  }

  private async follow(tournamentId: string): Promise<void> {
    const signal = this.begin();
    this.matches.clear();
    const title = el("h1", {}, "Tournament");
    const state = el("span", { class: "state", "data-testid": "tournament-state" }, "");
    const progress = el("progress", { max: "1", value: "0", "data-testid": "tournament-progress" });
    const counts = el("span", { "data-testid": "tournament-counts" }, "");
    const rows = el("tbody", {});
    const results = el("div", { "data-testid": "tournament-results" });
    this.section.replaceChildren(
      el("p", { class: "eyebrow" }, state, " ", counts), title, progress,
      el("table", { class: "matches", "data-testid": "matches" },
        el("thead", {}, el("tr", {}, ...["#", "Match", "Topic", "State", "Result"].map((h) => el("th", {}, h)))), rows),
      results,
    );
    const render = (p: TournamentSummary | undefined, changed: Match[]) => {
      for (const m of changed) this.matches.set(m.matchIndex, m);
      rows.replaceChildren(...[...this.matches.values()].sort((a, b) => a.matchIndex - b.matchIndex).map(matchRow));
      if (!p) return;
      title.textContent = p.name || p.models.join(" · ");
      state.textContent = STATE_LABELS[p.state] ?? "";
      state.dataset.state = (TournamentState[p.state] ?? "").toLowerCase();
      counts.textContent = `${p.matchesDecided} of ${p.matchesTotal} matches decided, ${p.matchesRunning} running`;
      progress.max = Math.max(1, p.matchesTotal);
      progress.value = p.matchesDecided;
    };
    for (let attempt = 0; !signal.aborted; attempt++) {
      try {
        for await (const message of this.client.streamTournamentEvents({ tournamentId }, { signal })) {
          render(message.progress, message.matches);
        }
        break;
      } catch (error) {
        if (signal.aborted) return;
        if (!isTransient(error) || attempt >= 5) {
          this.showBanner(`Could not follow tournament ${tournamentId}: ${readError(error).message}`);
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
    }
    if (signal.aborted) return;
    let tournament;
    try {
      ({ tournament } = await this.client.getTournament({ tournamentId }, { signal }));
    } catch (error) {
      if (!signal.aborted) this.showBanner(`Could not load tournament ${tournamentId}: ${readError(error).message}`);
      return;
    }
    if (!tournament || signal.aborted) return;
    render(undefined, tournament.matches);
    results.replaceChildren(
      el("p", { "data-testid": "tournament-cost" },
        `Cost ${formatMoney(tournament.cost?.amount, tournament.cost?.currencyCode)} · ${formatInt(tournament.usage?.totalTokens ?? 0n)} tokens`),
      tournament.ratings.length ? ratingsTable(tournament.ratings) : el("p", { class: "muted" }, "No decided matches."),
    );
  }
}
