// Export (issue 19 part 5): an "Export" menu on a debate's view that downloads the debate as
// Markdown, JSON or one self-contained HTML file. The orchestrator renders the document
// (ExportDebate, the same as `debate-engine export`); the page only saves what it gets.
import { ExportFormat } from "./gen/debate/orchestrator/v1/orchestrator_pb";
import { readError, type Orchestrator } from "./api";
import { el } from "./dom";

const FORMATS: ReadonlyArray<[ExportFormat, string, string]> = [
  [ExportFormat.MARKDOWN, "md", "Markdown"],
  [ExportFormat.JSON, "json", "JSON"],
  [ExportFormat.HTML, "html", "HTML page"],
];

/** Adds the menu to `container`; `debateId()` is the debate shown, `showBanner` reports a failure. */
export function mountExport(
  client: Orchestrator,
  container: HTMLElement,
  debateId: () => string | null,
  showBanner: (message: string) => void,
): void {
  const menu = el("details", { class: "export-menu", "data-testid": "export" },
    el("summary", { class: "button ghost" }, "Export"));
  const items = el("div", { class: "export-items", role: "menu" });
  for (const [format, extension, label] of FORMATS) {
    const button = el("button", { type: "button", role: "menuitem", "data-format": extension }, label);
    button.addEventListener("click", () => {
      const id = debateId();
      if (id) void download(client, id, format, button, showBanner).then(() => { menu.open = false; });
    });
    items.append(button);
  }
  menu.append(items);
  container.append(menu);
}

async function download(
  client: Orchestrator,
  debateId: string,
  format: ExportFormat,
  button: HTMLButtonElement,
  showBanner: (message: string) => void,
): Promise<void> {
  button.disabled = true;
  try {
    const reply = await client.exportDebate({ debateId, format });
    const blob = new Blob([reply.content as Uint8Array<ArrayBuffer>], { type: reply.contentType });
    const url = URL.createObjectURL(blob);
    const link = el("a", { href: url, download: reply.fileName, hidden: "" });
    document.body.append(link);
    link.click();
    link.remove();
    window.setTimeout(() => URL.revokeObjectURL(url), 30_000);
  } catch (error) {
    showBanner(`Could not export the debate: ${readError(error).message}`);
  } finally {
    button.disabled = false;
  }
}
