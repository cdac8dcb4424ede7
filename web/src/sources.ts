// Evidence in the form: one source document (pasted text, id "doc-1") that the debaters quote
// as <quote source="doc-1">...</quote>, and whether the judge sees it. Mounted into the form by
// main.ts; applySources adds it to the config the form read.
import { create } from "@bufbuild/protobuf";
import { EvidenceOptionsSchema, SourceDocumentSchema, type DebateConfig } from "./gen/debate/common/v1/common_pb";
import { el } from "./dom";

export const SOURCE_ID = "doc-1";

/** Adds the source document's fields to `form`, before its connection settings. */
export function mountSourcesField(form: HTMLFormElement): void {
  const error = (path: string) => {
    const p = el("p", { class: "field-error", "data-error-for": path });
    p.hidden = true;
    return p;
  };
  const details = el("details", { class: "sources-settings", "data-field": "config.sources" },
    el("summary", {}, "Source document (optional)"),
    el("div", { class: "field" },
      el("label", { for: "source-text" }, `Text the debaters quote from (as ${SOURCE_ID}); each quote is checked against it`),
      el("textarea", {
        id: "source-text",
        name: "source-text",
        rows: "5",
        "data-field": `config.sources[0].text`,
        placeholder: "Paste a document: a report, an article, a set of findings…",
      }),
      error("config.sources[0].text"),
    ),
    el("label", { class: "check" },
      el("input", { type: "checkbox", id: "hide-sources", name: "hide-sources" }),
      " Hide it from the judge (the judge still sees each quote's check)"),
    error("config.sources"),
  );
  form.insertBefore(details, form.querySelector(".connection-settings"));
}

/** Puts the pasted document, if any, and the judge option into `config`. */
export function applySources(config: DebateConfig): void {
  const text = (document.getElementById("source-text") as HTMLTextAreaElement | null)?.value.trim() ?? "";
  if (!text) return;
  config.sources = [create(SourceDocumentSchema, { id: SOURCE_ID, title: "Source document", text })];
  const hide = (document.getElementById("hide-sources") as HTMLInputElement | null)?.checked ?? false;
  config.evidence = create(EvidenceOptionsSchema, { hideSourcesFromJudge: hide });
}
