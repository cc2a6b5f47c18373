// Goal: one seed is one history, byte for byte (TigerBeetle's VOPR, FoundationDB's unseed check), so
// every failing seed replays exactly. Method: run seeds with every fault kind twice and compare the
// canonical histories and their hashes; the cheap microtask drain against a full event-loop turn;
// and a campaign's determinism check, which must find nothing to report.
import { describe, expect, it } from "vitest";
import { defaultCampaign, runCampaign } from "../../src/chaos/campaign.js";
import { canonicalText, historyHash } from "../../src/chaos/history.js";
import { runSimulation } from "../../src/chaos/sim/run.js";
import { DEFAULT_SCENARIO, FAULT_KINDS } from "../../src/chaos/sim/scenario.js";
import { POLICIES } from "../../src/shared/migration/restore.js";
import { ESTIMATORS } from "../../src/shared/migration/blackout.js";

const everything = { ...DEFAULT_SCENARIO, faults: FAULT_KINDS, policies: POLICIES, estimators: ESTIMATORS };

describe("same seed, same history", () => {
  for (const seed of [1n, 7n, 0xdead_beefn, 18_446_744_073_709_551_615n])
    it(`seed ${seed}: two runs give byte-identical histories`, async () => {
      const a = await runSimulation(seed, everything);
      const b = await runSimulation(seed, everything);
      expect(a.history.samples.length).toBeGreaterThan(0);
      const ta = canonicalText(a.history);
      expect(canonicalText(b.history)).toBe(ta);
      expect(b.hash).toBe(a.hash);
      expect(historyHash(a.history)).toMatch(/^[0-9a-f]{64}$/);
    });

  it("different seeds give different histories", async () => {
    const hashes = new Set<string>();
    for (let s = 100n; s < 110n; s++) hashes.add((await runSimulation(s, everything)).hash);
    expect(hashes.size).toBe(10);
  });

  it("settling promises with process.nextTick runs exactly what a full event-loop turn runs", async () => {
    for (let s = 200n; s < 230n; s++) {
      const fast = await runSimulation(s, everything);
      const slow = await runSimulation(s, { ...everything, drainWithImmediate: true });
      expect(fast.hash, `seed ${s}`).toBe(slow.hash);
    }
  });

  it("a campaign's determinism check reruns its sample of seeds and finds no difference", async () => {
    const r = await runCampaign(defaultCampaign({ seed: 31n, runs: 40, scenario: everything, determinismCheck: 0.25, plotRuns: 0 }));
    expect(r.determinism.checked).toBeGreaterThan(3);
    expect(r.determinism.mismatches).toEqual([]);
    expect(r.violationsByInvariant.D ?? 0).toBe(0);
  });
});
