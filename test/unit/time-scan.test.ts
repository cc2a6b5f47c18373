// Goal: fail the build when code under src/ reads real time or randomness anywhere but
// src/shared/platform/ (STYLE 2: everything else gets an injected Clock, Scheduler and Random).
// Method: scan every .ts file under src/ (generated code in src/gen/ excluded), comments stripped,
// for the forbidden calls, and list every hit as file:line.

import { readFileSync } from "node:fs";
import { join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { tsFiles } from "../helpers/source-files.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const SRC = join(ROOT, "src");
const EXCLUDED_DIRS = [join(SRC, "gen"), join(SRC, "shared", "platform")];

const FORBIDDEN: readonly { name: string; re: RegExp }[] = [
  { name: "Date.now(", re: /\bDate\s*\.\s*now\s*\(/ },
  { name: "performance.now(", re: /\bperformance\s*\.\s*now\s*\(/ },
  { name: "process.hrtime", re: /\bprocess\s*\.\s*hrtime\b/ },
  { name: "Math.random(", re: /\bMath\s*\.\s*random\s*\(/ },
  { name: "setTimeout(", re: /\bsetTimeout\s*\(/ },
  { name: "setInterval(", re: /\bsetInterval\s*\(/ },
  { name: "new Date(", re: /\bnew\s+Date\s*\(/ },
  // The same reads by other names: OS randomness and the timer/perf modules.
  { name: "crypto randomness", re: /\b(randomBytes|randomUUID|randomInt|getRandomValues)\s*\(/ },
  { name: "node:timers / node:perf_hooks import", re: /from\s+["'](node:)?(timers(\/promises)?|perf_hooks)["']/ },
];

/**
 * Blanks comments (keeping line breaks) so prose that names a forbidden call is not a hit. Strings
 * and template literals are kept: a call spelled inside one would still run if evaluated.
 */
function stripComments(text: string): string {
  let out = "";
  let i = 0;
  let quote: string | null = null;
  while (i < text.length) {
    const c = text[i] as string;
    const next = text[i + 1];
    if (quote !== null) {
      out += c;
      if (c === "\\") {
        out += next ?? "";
        i += 2;
        continue;
      }
      if (c === quote) quote = null;
      i++;
    } else if (c === "/" && next === "/") {
      while (i < text.length && text[i] !== "\n") i++;
    } else if (c === "/" && next === "*") {
      i += 2;
      while (i < text.length && !(text[i] === "*" && text[i + 1] === "/")) {
        if (text[i] === "\n") out += "\n";
        i++;
      }
      i += 2;
    } else {
      if (c === '"' || c === "'" || c === "`") quote = c;
      out += c;
      i++;
    }
  }
  return out;
}

function scanText(file: string, text: string): string[] {
  const hits: string[] = [];
  stripComments(text)
    .split("\n")
    .forEach((line, n) => {
      for (const f of FORBIDDEN) if (f.re.test(line)) hits.push(`${file}:${n + 1}: ${f.name}  ${line.trim()}`);
    });
  return hits;
}

describe("only src/shared/platform/ reads real time or randomness", () => {
  it("no other file under src/ calls a clock, a timer or a random source", () => {
    const files = tsFiles(SRC, EXCLUDED_DIRS);
    expect(files.length).toBeGreaterThan(40); // the walk found the tree
    const hits = files.flatMap((f) => scanText(relative(ROOT, f).split(sep).join("/"), readFileSync(f, "utf8")));
    expect(hits, `move these behind src/shared/platform/index.ts:\n${hits.join("\n")}`).toEqual([]);
  });

  it("the platform module itself is where the real clock lives (the exclusion is not hiding an empty scan)", () => {
    const text = readFileSync(join(SRC, "shared", "platform", "index.ts"), "utf8");
    expect(scanText("platform", text).length).toBeGreaterThan(0);
  });

  it("the scanner flags each forbidden call and ignores comments", () => {
    const code = [
      "const a = Date.now();",
      "const b = performance.now();",
      "const c = process.hrtime.bigint();",
      "const d = Math.random();",
      "setTimeout(() => {}, 1);",
      "const e = setInterval(f, 10);",
      "const g = new Date();",
      "const h = randomBytes(8);",
      'import { setTimeout as sleep } from "node:timers/promises";',
      "// Date.now() in a comment is prose",
      "/* new Date( in a block",
      "   comment */ const ok = 1;",
      'const s = "a // not a comment"; const t = Date . now ();',
    ].join("\n");
    const hits = scanText("x.ts", code);
    expect(hits.map((h) => h.split(":")[1])).toEqual(["1", "2", "3", "4", "5", "6", "7", "8", "9", "13"]);
  });
});
