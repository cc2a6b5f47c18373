// Builds the browser assets into dist/web with esbuild, from npm packages only (nothing is fetched
// at run time, no CDN): the dashboard every daemon serves at /ui/, and the chaos report's viewer
// and replay page, which their generators inline into self-contained HTML files. uPlot's stylesheet is bundled
// with ours. Run by `npm run build` (and so by `npm ci`'s prepare).

import { build } from "esbuild";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const out = join(root, "dist", "web");
mkdirSync(out, { recursive: true });

const uplotCss = readFileSync(join(root, "node_modules", "uplot", "dist", "uPlot.min.css"), "utf8");
const common = { bundle: true, minify: true, target: "es2022", legalComments: "inline", logLevel: "warning" };

await build({ ...common, entryPoints: [join(root, "web", "dashboard", "main.ts")], format: "esm", outfile: join(out, "dashboard.js") });
writeFileSync(join(out, "dashboard.css"), `${uplotCss}\n${readFileSync(join(root, "web", "dashboard", "style.css"), "utf8")}`);
copyFileSync(join(root, "web", "dashboard", "index.html"), join(out, "index.html"));

// The report viewer runs inline in a file:// page: one classic script, no modules.
await build({ ...common, entryPoints: [join(root, "web", "report", "main.ts")], format: "iife", outfile: join(out, "report.js") });
writeFileSync(join(out, "report.css"), `${uplotCss}\n${readFileSync(join(root, "web", "report", "style.css"), "utf8")}`);

// The step-through page of `tscmig chaos replay`: likewise inlined.
await build({ ...common, entryPoints: [join(root, "web", "replay", "main.ts")], format: "iife", outfile: join(out, "replay.js") });
writeFileSync(join(out, "replay.css"), `${uplotCss}\n${readFileSync(join(root, "web", "replay", "style.css"), "utf8")}`);
