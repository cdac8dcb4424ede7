// Bundles the page into dist/: index.html, app.js (TypeScript and its npm dependencies in one
// file) and app.css. Nothing is fetched at run time from anywhere but the page's own origin.
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";

const out = new URL("./dist/", import.meta.url);
await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
await build({
  entryPoints: ["src/main.ts"],
  outfile: "dist/app.js",
  bundle: true,
  format: "esm",
  target: ["es2022"],
  minify: true,
  sourcemap: true,
  legalComments: "none",
  logLevel: "warning",
});
await build({ entryPoints: ["src/styles.css"], outfile: "dist/app.css", bundle: true, minify: true, logLevel: "warning" });
// index.html names its script and stylesheet with a content hash (?v=...), so a browser never
// runs a new page with an old cached bundle.
let html = await readFile(new URL("./src/index.html", import.meta.url), "utf8");
for (const asset of ["app.js", "app.css"]) {
  const hash = createHash("sha256").update(await readFile(new URL(asset, out))).digest("hex").slice(0, 12);
  html = html.replace(`"${asset}"`, `"${asset}?v=${hash}"`);
}
await writeFile(new URL("index.html", out), html);
console.log("web/dist: index.html, app.js, app.css");
