// Builds the console into one directory the manager embeds: index.html, app.js (every
// TypeScript module and library bundled, minified), style.css. Nothing is fetched at run time
// from anywhere but the manager. Usage: node build.mjs [OUTDIR] (default dist/).
import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2] ?? join(here, "dist");
mkdirSync(out, { recursive: true });
await build({
  entryPoints: [join(here, "src/main.ts")],
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2022",
  outfile: join(out, "app.js"),
  legalComments: "none",
  logLevel: "warning",
});
for (const f of ["index.html", "style.css"]) copyFileSync(join(here, f), join(out, f));
