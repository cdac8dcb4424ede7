// The debate form: debaters added and removed, read into a DebateConfig, and the server's
// field violations shown next to the input whose data-field matches the violation's path.
import { create } from "@bufbuild/protobuf";
import {
  DebateConfigSchema,
  TurnOrder,
  type DebateConfig,
} from "./gen/debate/common/v1/common_pb";
import type { FieldViolation } from "./api";
import { el } from "./dom";

export const MAX_DEBATERS = 8;

interface DebaterDraft {
  name: string;
  model: string;
  persona: string;
  stance: string;
}

const STARTERS: DebaterDraft[] = [
  { name: "Ada", model: "sim/debater", persona: "a pragmatic economist who argues from data", stance: "for" },
  { name: "Grace", model: "sim/debater", persona: "an urban sociologist who cares about communities", stance: "against" },
  { name: "Linus", model: "sim/debater", persona: "a systems engineer who likes trade-offs spelled out", stance: "for, with conditions" },
  { name: "Rosalind", model: "sim/debater", persona: "a careful scientist sceptical of bold claims", stance: "against" },
];

export class DebateForm {
  readonly form: HTMLFormElement;
  private readonly list: HTMLOListElement;
  private readonly addButton: HTMLButtonElement;

  constructor(onSubmit: (config: DebateConfig) => void) {
    this.form = document.getElementById("debate-form") as HTMLFormElement;
    this.list = document.getElementById("debater-list") as HTMLOListElement;
    this.addButton = document.getElementById("add-debater") as HTMLButtonElement;
    this.addButton.addEventListener("click", () => {
      this.addDebater(STARTERS[this.count() % STARTERS.length], true);
    });
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      onSubmit(this.read());
    });
    this.form.addEventListener("input", (event) => {
      // Editing a field clears its error.
      const target = event.target as HTMLElement;
      const path = target.dataset.field;
      if (path) this.clearError(path);
    });
    this.addDebater(STARTERS[0]);
    this.addDebater(STARTERS[1]);
  }

  count(): number {
    return this.list.children.length;
  }

  setBusy(busy: boolean): void {
    const start = document.getElementById("start") as HTMLButtonElement;
    start.disabled = busy;
    start.textContent = busy ? "Starting…" : "Start debate";
    this.form.setAttribute("aria-busy", String(busy));
  }

  /** Fills the form from an existing debate's config (after a reload on #debate=...). */
  fill(config: DebateConfig): void {
    (document.getElementById("topic") as HTMLTextAreaElement).value = config.topic;
    this.list.replaceChildren();
    for (const p of config.participants) this.addDebater(p);
    (document.getElementById("judge-model") as HTMLInputElement).value = config.judge?.models[0] ?? "sim/judge";
    (document.getElementById("rounds") as HTMLInputElement).value = String(config.format?.roundLimit ?? 2);
    (document.getElementById("max-tokens") as HTMLInputElement).value = String(config.maxTokensPerTurn || "");
    (document.getElementById("budget") as HTMLInputElement).value = config.budget?.amount ?? "";
    (document.getElementById("turn-order") as HTMLSelectElement).value =
      config.format?.turnOrder === TurnOrder.SEQUENTIAL ? "sequential" : "simultaneous";
  }

  private addDebater(draft: DebaterDraft, focus = false): void {
    const item = el("li", { class: "debater" });
    item.append(
      el("div", { class: "debater-head" },
        el("span", { class: "debater-index" }),
        el("button", { type: "button", class: "icon-button remove-debater", "aria-label": "Remove debater", title: "Remove debater" }, "×"),
      ),
      el("div", { class: "debater-grid" },
        this.input("Name", "name", draft.name, { autocomplete: "off" }),
        this.input("Model", "model", draft.model, { list: "model-options", autocomplete: "off" }),
        this.input("Stance", "stance", draft.stance, {}, "stance-field"),
        this.input("Persona", "persona", draft.persona, {}, "wide"),
      ),
      el("p", { class: "field-error debater-error", hidden: "" }),
    );
    item.querySelector(".remove-debater")!.addEventListener("click", () => {
      item.remove();
      this.renumber();
    });
    this.list.append(item);
    this.renumber();
    if (focus) (item.querySelector("input") as HTMLInputElement).focus();
  }

  private input(label: string, key: string, value: string, attrs: Record<string, string>, extra = ""): HTMLElement {
    const input = el("input", { ...attrs, "data-key": key }) as HTMLInputElement;
    input.value = value;
    return el("label", { class: `field ${extra}` },
      el("span", { class: "label" }, label),
      input,
      el("p", { class: "field-error", hidden: "" }),
    );
  }

  /** Keeps each debater's data-field paths in step with its position. */
  private renumber(): void {
    [...this.list.children].forEach((item, i) => {
      const li = item as HTMLElement;
      li.dataset.field = `config.participants[${i}]`;
      li.querySelector(".debater-index")!.textContent = `Debater ${i + 1}`;
      li.querySelector(".debater-error")!.setAttribute("data-error-for", `config.participants[${i}]`);
      li.querySelectorAll<HTMLInputElement>("input[data-key]").forEach((input) => {
        const path = `config.participants[${i}].${input.dataset.key}`;
        input.dataset.field = path;
        input.id = `participant-${i}-${input.dataset.key}`;
        input.name = path;
        input.parentElement!.querySelector(".field-error")!.setAttribute("data-error-for", path);
      });
    });
    this.addButton.disabled = this.count() >= MAX_DEBATERS;
  }

  read(): DebateConfig {
    const value = (id: string) => (document.getElementById(id) as HTMLInputElement).value;
    const participants = [...this.list.children].map((item) => {
      const get = (key: string) => (item.querySelector(`input[data-key="${key}"]`) as HTMLInputElement).value.trim();
      return { name: get("name"), model: get("model"), persona: get("persona"), stance: get("stance") };
    });
    const rounds = Number.parseInt(value("rounds"), 10);
    const maxTokens = Number.parseInt(value("max-tokens"), 10);
    const judge = value("judge-model").trim();
    const budget = value("budget").trim().replace(/^\$/, "");
    return create(DebateConfigSchema, {
      topic: value("topic").trim(),
      participants,
      judge: { models: judge ? [judge] : [] },
      format: {
        roundLimit: Number.isFinite(rounds) ? rounds : 0,
        turnOrder: value("turn-order") === "sequential" ? TurnOrder.SEQUENTIAL : TurnOrder.SIMULTANEOUS,
      },
      maxTokensPerTurn: Number.isFinite(maxTokens) ? maxTokens : 0,
      // Money stays a decimal string; the server checks it.
      budget: budget ? { currencyCode: "USD", amount: budget } : undefined,
    });
  }

  clearErrors(): void {
    this.form.querySelectorAll<HTMLElement>(".field-error").forEach((p) => {
      p.hidden = true;
      p.textContent = "";
    });
    this.form.querySelectorAll(".invalid").forEach((node) => node.classList.remove("invalid"));
    this.form.querySelectorAll("[aria-invalid]").forEach((node) => node.removeAttribute("aria-invalid"));
  }

  private clearError(path: string): void {
    const slot = this.form.querySelector<HTMLElement>(`[data-error-for="${CSS.escape(path)}"]`);
    if (slot) {
      slot.hidden = true;
      slot.textContent = "";
    }
    const input = this.form.querySelector<HTMLElement>(`[data-field="${CSS.escape(path)}"]`);
    input?.classList.remove("invalid");
    input?.removeAttribute("aria-invalid");
  }

  /**
   * Shows each violation next to the closest input: "config.participants[1].persona" first,
   * then "config.participants[1]", then "config.participants", then the form as a whole.
   * Returns the violations that found no place in the form.
   */
  showViolations(violations: FieldViolation[]): FieldViolation[] {
    const unplaced: FieldViolation[] = [];
    let first: HTMLElement | null = null;
    for (const violation of violations) {
      const slot = this.slotFor(violation.field);
      if (!slot) {
        unplaced.push(violation);
        continue;
      }
      const [path, errorSlot] = slot;
      errorSlot.hidden = false;
      errorSlot.textContent = errorSlot.textContent
        ? `${errorSlot.textContent} ${violation.description}`
        : violation.description;
      const input = this.form.querySelector<HTMLElement>(
        `input[data-field="${CSS.escape(path)}"], textarea[data-field="${CSS.escape(path)}"], select[data-field="${CSS.escape(path)}"]`,
      );
      if (input) {
        input.classList.add("invalid");
        input.setAttribute("aria-invalid", "true");
        input.setAttribute("aria-describedby", errorSlot.id || (errorSlot.id = `error-${path.replace(/[^a-z0-9]+/gi, "-")}`));
        first ??= input;
      } else {
        first ??= errorSlot;
      }
    }
    first?.scrollIntoView({ block: "center", behavior: "smooth" });
    if (first instanceof HTMLInputElement || first instanceof HTMLTextAreaElement) first.focus({ preventScroll: true });
    return unplaced;
  }

  private slotFor(field: string): [string, HTMLElement] | null {
    let path = field.startsWith("config") ? field : `config.${field}`;
    for (;;) {
      for (const candidate of [path, `${path}[0]`]) {
        const slot = this.form.querySelector<HTMLElement>(`[data-error-for="${CSS.escape(candidate)}"]`);
        if (slot) return [candidate, slot];
      }
      const shorter = path.replace(/(\[\d+\]|\.[^.[\]]+)$/, "");
      if (shorter === path || !shorter) return null;
      path = shorter;
    }
  }
}
