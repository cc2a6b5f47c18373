// `node dist/scripts/bench-spread.js run1.json run2.json …`: the spread of several full bench runs
// (src/bench/spread.ts), as BENCHMARKS.md reports it.

import { readFileSync } from "node:fs";
import { basename } from "node:path";
import { renderSpread } from "../src/bench/spread.js";

const files = process.argv.slice(2);
if (files.length === 0) {
  process.stderr.write("usage: node dist/scripts/bench-spread.js RESULT.json [RESULT.json …] (files written by tscmig bench --json)\n");
  process.exit(2);
}
const runs = files.map((f) => {
  try {
    return { name: basename(f), result: JSON.parse(readFileSync(f, "utf8")) as Record<string, unknown> };
  } catch (e) {
    process.stderr.write(`bench-spread: ${f}: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(2);
  }
});
process.stdout.write(renderSpread(runs));
