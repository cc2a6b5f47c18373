// Goal: every commit runs a bounded chaos campaign: I1–I9 hold over seeded runs with every fault
// kind active at random, and the hazard the project exists for is found when guests are not told.
// Method: the campaign seed comes from the commit (`git rev-parse HEAD`, or TSCMIG_CHAOS_SEED to
// replay), printed with the command that reruns it; failures list each run's own replay command.
import { execSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { type CampaignResult, defaultCampaign, runCampaign } from "../../src/chaos/campaign.js";
import { parseChaosFlags, replayCommand } from "../../src/chaos/cli.js";
import { DEFAULT_SCENARIO, FAULT_KINDS, type ScenarioOptions } from "../../src/chaos/sim/scenario.js";
import { POLICIES } from "../../src/shared/migration/restore.js";
import { ESTIMATORS } from "../../src/shared/migration/blackout.js";

function commitSeed(): { seed: bigint; from: string } {
  const env = process.env.TSCMIG_CHAOS_SEED;
  if (env) return { seed: BigInt(env), from: "TSCMIG_CHAOS_SEED" };
  try {
    const head = execSync("git rev-parse HEAD", { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
    return { seed: BigInt(`0x${head.slice(0, 12)}`), from: `commit ${head.slice(0, 12)}` };
  } catch {
    return { seed: 1n, from: "no git: default" };
  }
}

const { seed, from } = commitSeed();

function explain(r: CampaignResult, flags: Record<string, string>): string {
  return r.failingRuns
    .slice(0, 10)
    .map((f) => `run ${f.run} ${f.invariants.join(",")}: ${r.violations.find((v) => v.run === f.run)?.message}\n  replay: ${replayCommand(flags, f.seed)}`)
    .join("\n");
}

async function campaign(runs: number, flags: Record<string, string>, scenario: ScenarioOptions): Promise<CampaignResult> {
  process.stdout.write(`chaos campaign: seed ${seed} (${from}), ${runs} runs; rerun: TSCMIG_CHAOS_SEED=${seed} npx vitest run test/sim/campaign.test.ts, or ${replayCommand(flags, seed).replace("--runs 1", `--runs ${runs}`)}\n`);
  return runCampaign(defaultCampaign({ seed, runs, scenario, determinismCheck: 0.05, plotRuns: 0 }));
}

const defaults = parseChaosFlags({ mode: "sim", seed: String(seed), policy: "advance", estimator: "one-sided", guestMigrationHandling: "on", skewMax: "262s", faults: "all", vcpusMax: "4", sampleInterval: "100ms", ntpSource: "reference", determinismCheck: "0.05" });

describe(`chaos campaign seeded from ${from}`, () => {
  it("default policy and estimator (advance, one-sided), every fault kind: I1–I9 hold", async () => {
    const r = await campaign(300, defaults.flags, defaults.campaign.scenario);
    expect(r.violationCount, explain(r, defaults.flags)).toBe(0);
    expect(r.totals.migrationsCommitted).toBeGreaterThan(300);
    expect(r.totals.migrations).toBeGreaterThan(300);
    expect(r.totals.faults).toBeGreaterThan(300);
    expect(r.hostFaultCount).toBe(0); // one-sided never rests on a host's claim
    // Crashes at every named protocol phase happened somewhere in the campaign.
    for (const site of ["crash.source.afterPrepare", "crash.source.afterPause", "crash.source.afterTransfer", "crash.source.afterCommitJournal", "crash.destination.afterStage", "crash.destination.beforeRestore", "crash.destination.afterRestore"])
      expect(r.faultSites[site] ?? 0, site).toBeGreaterThan(0);
  });

  it("every policy and estimator: I1–I9 hold; what the hosts' false claims break is reported apart", async () => {
    const flags = { ...defaults.flags, policy: "all", estimator: "all" };
    const r = await campaign(150, flags, { ...DEFAULT_SCENARIO, faults: FAULT_KINDS, policies: POLICIES, estimators: ESTIMATORS });
    expect(r.violationCount, explain(r, flags)).toBe(0);
    expect(Object.keys(r.hostFaultsByClass).every((k) => /^(I3|I4)\/(lying|stepped)-clock$/.test(k))).toBe(true);
  });
});

describe("the hazard: guests that ignore migrations, hosts that disagree", () => {
  const scenario: ScenarioOptions = { ...DEFAULT_SCENARIO, handling: false, policies: ["kvm-realtime"], estimators: ["wallclock"], skewMaxNs: 50_000_000n };

  it("with hosts that agree, nothing is violated", async () => {
    const r = await runCampaign(defaultCampaign({ seed, runs: 60, scenario: { ...scenario, faults: FAULT_KINDS.filter((k) => k !== "skew") }, determinismCheck: 0, plotRuns: 0 }));
    expect(r.violationCount).toBe(0);
  });

  it("with skew above the guests' maxerror, the checker finds I4 violations right after such migrations", async () => {
    const r = await runCampaign(defaultCampaign({ seed, runs: 60, scenario, determinismCheck: 0, plotRuns: 0 }));
    expect(r.violationsByInvariant.I4 ?? 0).toBeGreaterThan(0);
    expect(Object.keys(r.violationsByInvariant)).toEqual(["I4"]);
    // The first I4 violation of each failing run follows migrations between hosts whose realtime
    // disagreed, by at least how far the guest's error overshoots the bound it still claims in all
    // (its error before them was within that bound, which only grows until a resync; several
    // migrations can come between two samples).
    const first = new Map<number, (typeof r.violations)[number]>();
    for (const v of r.violations) if (v.invariant === "I4" && !first.has(v.run as number)) first.set(v.run as number, v);
    expect(first.size).toBeGreaterThan(0);
    const abs = (x: bigint) => (x < 0n ? -x : x);
    for (const v of first.values()) {
      expect(v.values.migratedFrom, v.message).toBeDefined();
      expect(v.values.migrationsSinceContained as number, v.message).toBeGreaterThan(0);
      const diff = BigInt(v.values.hostSkewDifferencesSinceContainedNs as string);
      const overshoot = abs(BigInt(v.values.errorNs as string)) - BigInt(v.values.halfWidthNs as string);
      expect(diff, v.message).toBeGreaterThan(0n);
      expect(diff + 1_000n, `${v.message} (${v.values.migrationsSinceContained} migrations since it held true time)`).toBeGreaterThanOrEqual(overshoot);
    }
  });
});
