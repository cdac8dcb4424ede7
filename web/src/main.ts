// The page: the form creates and starts a debate, then the live view follows its events.
// The debate id goes into the URL (#debate=...), so a reload picks the same debate up again.
import type { DebateConfig } from "./gen/debate/common/v1/common_pb";
import { apiKey, newRequestId, orchestrator, readError, setApiKey } from "./api";
import { Code } from "@connectrpc/connect";
import { DebateForm } from "./form";
import { LiveDebate, type ConnectionState } from "./live";

const client = orchestrator();
const setup = document.getElementById("setup") as HTMLElement;
const live = document.getElementById("live") as HTMLElement;
const banner = document.getElementById("banner") as HTMLElement;
const connection = document.getElementById("connection") as HTMLElement;
let current: LiveDebate | null = null;

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

async function start(config: DebateConfig): Promise<void> {
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

function watch(debateId: string, config: DebateConfig): void {
  current?.stop();
  setup.hidden = true;
  live.hidden = false;
  window.scrollTo({ top: 0 });
  current = new LiveDebate(client, debateId, config, setConnection, showBanner);
  void current.follow();
}

function backToForm(): void {
  current?.stop();
  current = null;
  setConnection("idle");
  showBanner("");
  live.hidden = true;
  setup.hidden = false;
  if (window.location.hash) window.history.pushState(null, "", window.location.pathname + window.location.search);
}

async function route(): Promise<void> {
  const match = /^#debate=(.+)$/.exec(window.location.hash);
  if (!match) {
    if (current) backToForm();
    return;
  }
  const debateId = decodeURIComponent(match[1]!);
  if (current?.debateId === debateId) return;
  try {
    const { debate } = await client.getDebate({ debateId });
    if (!debate?.config) throw new Error("the debate has no config");
    form.fill(debate.config);
    watch(debateId, debate.config);
  } catch (error) {
    backToForm();
    showBanner(`Could not open debate ${debateId}: ${readError(error).message}`);
  }
}

const keyInput = document.getElementById("api-key") as HTMLInputElement;
keyInput.value = apiKey();
keyInput.addEventListener("input", () => setApiKey(keyInput.value.trim()));
document.getElementById("new-debate")!.addEventListener("click", backToForm);
window.addEventListener("popstate", () => void route());
void route();
