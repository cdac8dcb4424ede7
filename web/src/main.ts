// The page: the form creates and starts a debate, then the live view follows its events.
// The debate id goes into the URL (#debate=...), so a reload picks the same debate up again.
import type { DebateConfig } from "./gen/debate/common/v1/common_pb";
import { DebateState } from "./gen/debate/orchestrator/v1/orchestrator_pb";
import { apiKey, newRequestId, orchestrator, readError, setApiKey } from "./api";
import { Code } from "@connectrpc/connect";
import { DebateForm } from "./form";
import { LiveDebate, STATE_LABELS, type ConnectionState } from "./live";
import { el, formatMoney } from "./dom";
import { VotePanel } from "./votes";
import { mountExport } from "./export";
import { applySources, mountSourcesField } from "./sources";
import { TournamentView } from "./tournaments";
import { clearVerdictHistory, showVerdictHistory } from "./verdicts";

const client = orchestrator();
const setup = document.getElementById("setup") as HTMLElement;
const live = document.getElementById("live") as HTMLElement;
const banner = document.getElementById("banner") as HTMLElement;
const connection = document.getElementById("connection") as HTMLElement;
let current: LiveDebate | null = null;
let votes: VotePanel | null = null; // human votes (votes.ts)

const CONNECTION_LABELS: Record<ConnectionState, string> = {
  idle: "",
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  closed: "",
};

function setConnection(state: ConnectionState, detail?: string): void {
  connection.dataset.state = state;
  connection.textContent = CONNECTION_LABELS[state];
  connection.title = detail ?? "";
}

function showBanner(message: string): void {
  banner.textContent = message;
  banner.hidden = !message;
}

const form = new DebateForm((config) => void start(config));
mountSourcesField(form.form); // evidence: a source document the debaters quote
// Tournaments: the leaderboard (#leaderboard) and a tournament's progress (#tournament=ID).
const tournaments = new TournamentView(document.getElementById("app") as HTMLElement, showBanner);
document.querySelector(".topbar")!.append(el("a", { href: "#leaderboard", class: "nav-link" }, "Leaderboard"));

async function start(config: DebateConfig): Promise<void> {
  applySources(config);
  form.clearErrors();
  showBanner("");
  form.setBusy(true);
  try {
    const created = await client.createDebate({ config, requestId: newRequestId() });
    const debate = created.debate!;
    await client.startDebate({ debateId: debate.debateId });
    window.history.pushState(null, "", `#debate=${encodeURIComponent(debate.debateId)}`);
    watch(debate.debateId, debate.config ?? config);
  } catch (error) {
    const info = readError(error);
    if (info.code === Code.Unauthenticated) {
      (document.querySelector(".connection-settings") as HTMLDetailsElement).open = true;
      showBanner(`This suite needs an API key: ${info.message}`);
      return;
    }
    const unplaced = form.showViolations(info.violations);
    if (info.violations.length === 0 || unplaced.length > 0) {
      const details = unplaced.map((v) => `${v.field}: ${v.description}`).join("; ");
      showBanner(`${info.message || "The server refused the debate"}${details ? ` (${details})` : ""}`);
    }
  } finally {
    form.setBusy(false);
  }
}

function watch(debateId: string, config: DebateConfig, endsAfter = 0n): void {
  current?.stop();
  setup.hidden = true;
  live.hidden = false;
  window.scrollTo({ top: 0 });
  votes?.stop();
  votes = new VotePanel(client, debateId, config);
  clearVerdictHistory();
  const following = new LiveDebate(client, debateId, config, setConnection, showBanner);
  following.endsAfter = endsAfter; // a continued debate ended more than once: follow it to its last end
  current = following;
  void following.follow().then(() => {
    if (current === following) void showVerdictHistory(client, debateId);
  });
}

/** The caller's latest debates under the form, each a link that opens its live view. */
async function showRecent(): Promise<void> {
  const section = document.getElementById("recent") as HTMLElement;
  try {
    const { debates } = await client.listDebates({ pageSize: 6 });
    const list = document.getElementById("recent-list") as HTMLElement;
    list.replaceChildren(...debates.map((d) => el("li", {},
      el("a", { href: `#debate=${encodeURIComponent(d.debateId)}` },
        el("span", { class: "recent-topic" }, d.topic),
        el("span", { class: "recent-cost" }, formatMoney(d.cost?.amount, d.cost?.currencyCode)),
        el("span", { class: "state", "data-state": (DebateState[d.state] ?? "").toLowerCase() },
          STATE_LABELS[d.state] ?? "Unknown"),
      ))));
    section.hidden = debates.length === 0;
  } catch {
    section.hidden = true; // e.g. a suite that wants an API key not given yet
  }
}

async function cancel(): Promise<void> {
  if (!current) return;
  const button = document.getElementById("cancel-debate") as HTMLButtonElement;
  button.disabled = true;
  try {
    await client.cancelDebate({ debateId: current.debateId, reason: "stopped from the page" });
  } catch (error) {
    showBanner(`Could not stop the debate: ${readError(error).message}`);
  } finally {
    button.disabled = false;
  }
}

function backToForm(): void {
  current?.stop();
  current = null;
  votes?.stop();
  votes = null;
  setConnection("idle");
  showBanner("");
  live.hidden = true;
  setup.hidden = false;
  tournaments.route("");
  void showRecent();
  if (window.location.hash) window.history.pushState(null, "", window.location.pathname + window.location.search);
}

let opening: string | null = null;

async function route(): Promise<void> {
  if (tournaments.route(window.location.hash)) {
    current?.stop();
    current = null;
    setup.hidden = true;
    live.hidden = true;
    return;
  }
  const match = /^#debate=(.+)$/.exec(window.location.hash);
  if (!match) {
    if (current || setup.hidden) backToForm();
    return;
  }
  const debateId = decodeURIComponent(match[1]!);
  if (current?.debateId === debateId || opening === debateId) return;
  opening = debateId;
  try {
    const { debate } = await client.getDebate({ debateId });
    if (!debate?.config) throw new Error("the debate has no config");
    form.fill(debate.config);
    const ended = [DebateState.COMPLETED, DebateState.FAILED, DebateState.CANCELLED, DebateState.BUDGET_EXCEEDED];
    watch(debateId, debate.config, ended.includes(debate.state) ? debate.lastSequence : 0n);
  } catch (error) {
    backToForm();
    showBanner(`Could not open debate ${debateId}: ${readError(error).message}`);
  } finally {
    opening = null;
  }
}

const keyInput = document.getElementById("api-key") as HTMLInputElement;
keyInput.value = apiKey();
keyInput.addEventListener("input", () => setApiKey(keyInput.value.trim()));
document.getElementById("new-debate")!.addEventListener("click", backToForm);
document.getElementById("cancel-debate")!.addEventListener("click", () => void cancel());
mountExport(client, document.querySelector(".live-actions") as HTMLElement, () => current?.debateId ?? null, showBanner);
window.addEventListener("popstate", () => void route());
window.addEventListener("hashchange", () => void route());
void route();
void showRecent();
