// Goal: a sim campaign's result does not depend on how many jobs ran it: one job (this thread), two
// (one worker thread beside this one) and three (two workers) give the same fold, run for run, with
// every fault kind on and the determinism reruns in. Method: the built campaign module (worker
// threads load dist/), one seed and 12 runs, results compared as JSON.

import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { describe, expect, it } from "vitest";
import type * as Campaign from "../../src/chaos/campaign.js";
import { ROOT } from "../helpers/daemons.js";

const text = (v: unknown) => JSON.stringify(v, (_k, x: unknown) => (typeof x === "bigint" ? `${x}n` : x instanceof Map ? [...x.entries()] : x));

describe("campaign jobs", () => {
  it("one, two and three jobs give the same campaign", async () => {
    const c = (await import(pathToFileURL(join(ROOT, "dist", "src", "chaos", "campaign.js")).href)) as typeof Campaign;
    const done: number[][] = [];
    const run = async (jobs: number) => {
      const seen: number[] = [];
      const r = await c.runCampaign(c.defaultCampaign({ seed: 42n, runs: 12, jobs, determinismCheck: 0.25, onRun: (o) => seen.push(o.run) }));
      done.push(seen.sort((a, b) => a - b));
      return text(r);
    };
    const one = await run(1);
    expect(await run(2)).toBe(one);
    expect(await run(3)).toBe(one);
    for (const seen of done) expect(seen).toEqual(Array.from({ length: 12 }, (_v, i) => i));
  }, 300_000);
});
