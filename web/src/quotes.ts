// Evidence on the page: a finished turn's marked quotes (<quote source="ID">...</quote>), each
// shown with the orchestrator's check: verified, partial or unverified. The spans come from
// Turn.quotes, in Unicode code points (Array.from, not UTF-16 indexes).
import { QuoteStatus, type Quote } from "./gen/debate/common/v1/common_pb";
import { el } from "./dom";

const MARKS: Record<number, { name: string; glyph: string }> = {
  [QuoteStatus.VERIFIED]: { name: "verified", glyph: "✓" },
  [QuoteStatus.PARTIAL]: { name: "partial", glyph: "≈" },
  [QuoteStatus.UNVERIFIED]: { name: "unverified", glyph: "✗" },
};

/** What the mark says in words, for its tooltip and for screen readers. */
function describe(quote: Quote, name: string): string {
  const cited = quote.sourceId ? ` in ${quote.sourceId}` : "";
  if (quote.status === QuoteStatus.VERIFIED) return `Verified${cited}: the document has these words.`;
  if (quote.status === QuoteStatus.PARTIAL) {
    const where = quote.matchedSourceId && quote.matchedSourceId !== quote.sourceId ? ` (found in ${quote.matchedSourceId})` : "";
    return `Partial${cited}${where}: ${Math.round(quote.score)}% similar. The document reads: “${quote.bestMatch}”`;
  }
  return `${name[0]!.toUpperCase()}${name.slice(1)}${cited}: not found in the documents.`;
}

/** Replaces `body`'s children with `text`, each quote of `quotes` as a marked <q>. */
export function renderQuotes(body: HTMLElement, text: string, quotes: readonly Quote[]): void {
  const chars = Array.from(text);
  const parts: Node[] = [];
  let at = 0;
  for (const quote of [...quotes].sort((a, b) => a.start - b.start)) {
    if (quote.start < at || quote.end > chars.length || quote.end <= quote.start) continue;
    if (quote.start > at) parts.push(document.createTextNode(chars.slice(at, quote.start).join("")));
    const mark = MARKS[quote.status] ?? { name: "unverified", glyph: "?" };
    const label = describe(quote, mark.name);
    parts.push(el("span", {
      class: "quote",
      "data-testid": "quote",
      "data-status": mark.name,
      "data-source": quote.sourceId,
      title: label,
    },
      el("q", {}, quote.text),
      el("span", { class: "quote-mark", "aria-label": label },
        `${mark.glyph} ${mark.name}${quote.sourceId ? ` · ${quote.sourceId}` : ""}`),
    ));
    at = quote.end;
  }
  if (at < chars.length) parts.push(document.createTextNode(chars.slice(at).join("")));
  body.replaceChildren(...parts);
}
