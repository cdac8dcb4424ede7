// A tiny element builder: el("div", { class: "x" }, child, "text").
export type Child = Node | string | null | undefined | false;

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child);
  }
  return node;
}

/** "0.001400" -> "$0.0014"; money is a decimal string on the wire and is never parsed to a float. */
export function formatMoney(amount: string | undefined, currency = "USD"): string {
  let text = (amount ?? "").trim() || "0";
  const negative = text.startsWith("-");
  if (negative) text = text.slice(1);
  let [whole, frac = ""] = text.split(".");
  whole = whole.replace(/^0+(?=\d)/, "") || "0";
  frac = frac.replace(/0+$/, "");
  if (frac.length < 2) frac = frac.padEnd(2, "0");
  if (frac.length > 6) frac = frac.slice(0, 6).replace(/0+$/, "").padEnd(2, "0");
  const symbol = currency === "USD" || currency === "" ? "$" : `${currency} `;
  return `${negative ? "-" : ""}${symbol}${whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",")}.${frac}`;
}

export function formatInt(value: bigint | number): string {
  return value.toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

export function formatScore(score: number): string {
  return score.toFixed(1);
}
