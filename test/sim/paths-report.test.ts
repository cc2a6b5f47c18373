// Goal: the chaos reports show that a default campaign ran both migration paths: the JSON report's
// `migrationsByPath` counts committed migrations over a Handover call and over the unary calls,
// both > 0, the text summary says so, and sharding then merging keeps the counts. Method: the real
// `tscmig chaos` command (commander, its own defaults, `--mode sim`) with a modest number of runs
// writing JSON reports, once whole and once as two shards merged as `tscmig chaos merge` does (runMerge); the
// counts are also recounted from the runs' histories.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Command } from "commander";
import { afterAll, describe, expect, it } from "vitest";
import { chaosCommand, runMerge } from "../../src/chaos/cli.js";
import { runSimulation } from "../../src/chaos/sim/run.js";
import { DEFAULT_SCENARIO } from "../../src/chaos/sim/scenario.js";
import { migrationsByPath } from "../../src/chaos/run-outcome.js";

const dir = mkdtempSync(join(tmpdir(), "tscmig-paths-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const RUNS = 24;

async function chaos(args: string[]): Promise<string[]> {
  const lines: string[] = [];
  const saved = process.exitCode;
  await chaosCommand(new Command("chaos").exitOverride(), (s) => lines.push(s)).parseAsync(args, { from: "user" });
  process.exitCode = saved;
  return lines;
}

const read = (f: string) => JSON.parse(readFileSync(join(dir, f), "utf8")) as { passed: boolean; migrationsByPath: { handover: number; unary: number }; checked: { migrationsCommitted: number } };

describe("the chaos report counts migrations per path", () => {
  it("a default sim campaign reports Handover and unary migrations, both > 0, and a merge of its shards reports the same", async () => {
    const common = ["--mode", "sim", "--runs", String(RUNS), "--jobs", "1"];
    const text = await chaos([...common, "--json", join(dir, "whole.json")]);
    const whole = read("whole.json");
    expect(whole.migrationsByPath.handover, JSON.stringify(whole.migrationsByPath)).toBeGreaterThan(0);
    expect(whole.migrationsByPath.unary, JSON.stringify(whole.migrationsByPath)).toBeGreaterThan(0);
    expect(Object.keys(whole.migrationsByPath).sort()).toEqual(["handover", "unary"]);
    expect(whole.migrationsByPath.handover + whole.migrationsByPath.unary).toBeLessThanOrEqual(whole.checked.migrationsCommitted);
    expect(text.join("\n")).toContain(`${whole.migrationsByPath.handover} over a Handover call, ${whole.migrationsByPath.unary} over the unary calls`);

    // The same figures, counted straight from the runs' histories (the report adds nothing up wrong).
    const recount = { handover: 0, unary: 0 };
    for (let i = 0; i < RUNS; i++) {
      const r = await runSimulation(1n + BigInt(i), { ...DEFAULT_SCENARIO });
      const p = migrationsByPath(r.history);
      recount.handover += p.handover;
      recount.unary += p.unary;
    }
    expect(whole.migrationsByPath).toEqual(recount);

    for (let i = 0; i < 2; i++) await chaos([...common, "--shard", `${i}/2`, "--json", join(dir, `s${i}.json`)]);
    const parts = [read("s0.json"), read("s1.json")];
    expect(parts[0]?.migrationsByPath.handover).toBeLessThan(whole.migrationsByPath.handover);
    expect(runMerge([join(dir, "s1.json"), join(dir, "s0.json")], { json: join(dir, "merged.json"), quiet: true }, () => {})).toBe(0);
    expect(read("merged.json").migrationsByPath).toEqual(whole.migrationsByPath);
  });
});
