// `npm run docs:figures`: regenerates docs/figures/*.svg from the simulator (scripts/figures/).
// `--check` writes nothing and exits 1 when a checked-in figure differs or is missing.

import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { renderFigures } from "./figures/figures.js";

const check = process.argv.includes("--check");
const dir = join(process.cwd(), "docs", "figures");
const stale: string[] = [];
if (!check) mkdirSync(dir, { recursive: true });
for (const [name, svg] of renderFigures()) {
  const path = join(dir, name);
  if (check) {
    if (!existsSync(path) || readFileSync(path, "utf8") !== svg) stale.push(name);
  } else {
    writeFileSync(path, svg);
    process.stdout.write(`wrote docs/figures/${name}\n`);
  }
}
if (stale.length > 0) {
  process.stderr.write(`stale figures (run npm run docs:figures): ${stale.join(", ")}\n`);
  process.exit(1);
}
