// vitest globalSetup: the integration tests spawn `bin/tscmig.js`, which loads dist/. A dist older
// than src would test yesterday's code, so when any src/**/*.ts is newer than its build output (or
// has none) this runs the build once, before any test file starts. Fresh: costs a directory walk.

import { execFileSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { ROOT } from "./daemons.js";

function staleFile(): string | undefined {
  // The library's type declarations (a dist built before they were emitted has none).
  try {
    statSync(join(ROOT, "dist", "src", "index.d.ts"));
  } catch {
    return join(ROOT, "src", "index.ts");
  }
  const walk = (dir: string): string | undefined => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) {
        const s = walk(p);
        if (s) return s;
      } else if (e.name.endsWith(".ts") && !e.name.endsWith(".d.ts")) {
        const out = join(ROOT, "dist", relative(ROOT, p)).replace(/\.ts$/, ".js");
        let outMs: number;
        try {
          outMs = statSync(out).mtimeMs;
        } catch {
          return p;
        }
        if (statSync(p).mtimeMs > outMs) return p;
      }
    }
    return undefined;
  };
  return walk(join(ROOT, "src"));
}

/** A file under web/ newer than the built browser assets (or no build of them yet). */
function staleWeb(): string | undefined {
  let builtMs: number;
  try {
    builtMs = Math.min(statSync(join(ROOT, "dist", "web", "dashboard.js")).mtimeMs, statSync(join(ROOT, "dist", "web", "report.js")).mtimeMs, statSync(join(ROOT, "dist", "web", "replay.js")).mtimeMs);
  } catch {
    return "web/";
  }
  const walk = (dir: string): string | undefined => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) {
        const s = walk(p);
        if (s) return s;
      } else if (statSync(p).mtimeMs > builtMs) return p;
    }
    return undefined;
  };
  return walk(join(ROOT, "web"));
}

export default function setup(): void {
  const web = staleWeb();
  if (web !== undefined) {
    console.log(`the browser assets are older than ${relative(ROOT, web) || web}: building them`);
    execFileSync(process.execPath, [join(ROOT, "scripts", "build-web.mjs")], { cwd: ROOT, stdio: "inherit", timeout: 180_000 });
  }
  const stale = staleFile();
  if (stale === undefined) return;
  console.log(`dist is older than ${relative(ROOT, stale)}: running the build for the daemon tests`);
  try {
    execFileSync(process.execPath, [join(ROOT, "node_modules", "typescript", "bin", "tsc"), "-p", "tsconfig.build.json"], { cwd: ROOT, stdio: "inherit", timeout: 180_000 });
  } catch (e) {
    // tsc emits despite type errors; the type-check step reports them, the tests run on what was emitted.
    console.log(`build reported errors (${e instanceof Error ? e.message.split("\n")[0] : String(e)}); testing the emitted dist`);
  }
}
