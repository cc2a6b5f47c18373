// Goal: the API reference in docs/api/ is what TypeDoc generates from today's types (so it never goes
// stale), every type the public API mentions is itself exported and documented there, and the
// generation needs nothing from the network.
// Method: run the pinned TypeDoc (typedoc.json, warnings as errors: a referenced type that is not
// exported fails) into a temporary directory and compare each file with docs/api/.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const TYPEDOC = join(ROOT, "node_modules", "typedoc", "bin", "typedoc");

describe("docs/api", () => {
  const out = mkdtempSync(join(tmpdir(), "tscmig-api-"));
  afterAll(() => rmSync(out, { recursive: true, force: true }));

  it("is what TypeDoc generates now, with no warning", () => {
    let log: string;
    try {
      log = execFileSync(process.execPath, [TYPEDOC, "--out", out, "--treatWarningsAsErrors"], { cwd: ROOT, encoding: "utf8", stdio: "pipe", timeout: 110_000 });
    } catch (e) {
      const x = e as { stdout?: string; stderr?: string };
      throw new Error(`typedoc failed:\n${x.stdout ?? ""}${x.stderr ?? ""}`, { cause: e });
    }
    expect(log).not.toMatch(/warning/i);
    const generated = readdirSync(out, { recursive: true, encoding: "utf8" }).sort();
    const committed = readdirSync(join(ROOT, "docs", "api"), { recursive: true, encoding: "utf8" }).sort();
    expect(committed, "files in docs/api: regenerate with `npm run docs:api`").toEqual(generated);
    const stale = generated.filter((f) => readFileSync(join(out, f), "utf8") !== readFileSync(join(ROOT, "docs", "api", f), "utf8"));
    expect(stale, "stale API reference: regenerate with `npm run docs:api` and commit docs/api").toEqual([]);
  });

  it("documents each group of the public API", () => {
    const text = readFileSync(join(ROOT, "docs", "api", "README.md"), "utf8");
    for (const name of ["scaleTsc", "pvclockReadCycles", "setClockAdvance", "vmclockReadTime", "captureSnapshot", "restoreSnapshot", "oneSidedEstimate", "probeOffset", "checkHistory", "EmulatedHost", "Guest", "SimScheduler"])
      expect(text, name).toMatch(new RegExp(`^### ${name}(\\(\\))?$`, "m"));
  });
});
