// Bundles the page into dist/: index.html, app.js (TypeScript and its npm dependencies in one
// file) and app.css. Nothing is fetched at run time from anywhere but the page's own origin.
import { build } from "esbuild";
import { copyFile, mkdir, rm } from "node:fs/promises";

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
await copyFile(new URL("./src/index.html", import.meta.url), new URL("index.html", out));
console.log("web/dist: index.html, app.js, app.css");
