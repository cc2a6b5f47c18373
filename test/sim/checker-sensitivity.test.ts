// Goal: the checker can fail — a broken build, or one wrong fact in a history, is caught and named.
// Method: (1) swap deliberately broken restores into the destination through the sim harness's test
// seam and run small campaigns next to a control campaign with the real restore; (2) take a real
// recorded history, change one fact per invariant, and check the checker reports exactly that.
import { describe, expect, it } from "vitest";
import { type CampaignOptions, defaultCampaign, runCampaign } from "../../src/chaos/campaign.js";
import { checkHistory, type Invariant } from "../../src/chaos/checker.js";
import type { ChaosEvent, ChaosHistory } from "../../src/chaos/history.js";
import { runSimulation } from "../../src/chaos/sim/run.js";
import { DEFAULT_SCENARIO, FAULT_KINDS, type ScenarioOptions } from "../../src/chaos/sim/scenario.js";
import type { RestoreFn } from "../../src/destination/migrate-in.js";
import { ESTIMATORS } from "../../src/shared/migration/blackout.js";
import { POLICIES, type PolicyName } from "../../src/shared/migration/restore.js";
import {
  restoreAdvanceKvmclockApart,
  restoreForgettingStoppedFlag,
  restoreFreezeAdvancingTsc,
  restoreKvmRealtimeIgnoringRealtime,
  restorePvclockApart,
  restoreSubtractingHostRealtimes,
} from "../helpers/broken-restores.js";

const campaign = (scenario: ScenarioOptions, over: Partial<CampaignOptions> = {}) => runCampaign(defaultCampaign({ seed: 4242n, runs: 24, scenario, determinismCheck: 0, plotRuns: 0, ...over }));
const count = (r: { violationsByInvariant: Record<string, number> }, i: Invariant) => r.violationsByInvariant[i] ?? 0;

describe("broken builds are caught", () => {
  it("a restore that forgets the stopped flag: guests that rely on it never act on the migration (I5)", async () => {
    // Guests that learn of a migration only through PVCLOCK_GUEST_STOPPED (kvm-clock, no vmclock
    // watch, no doorbell), in an otherwise quiet world.
    const scenario: ScenarioOptions = { ...DEFAULT_SCENARIO, faults: [], watchVmclock: false, doorbell: false, clocksource: "kvm-clock" };
    const control = await campaign(scenario);
    expect(control.violations).toEqual([]);
    expect(control.totals.migrationsCommitted).toBeGreaterThan(20);
    const broken = await campaign(scenario, { restoreHook: restoreForgettingStoppedFlag });
    expect(count(broken, "I5")).toBeGreaterThan(0);
    const v = broken.violations.find((x) => x.invariant === "I5");
    expect(v?.message).toMatch(/without acting on it/);
    expect(v?.vmId).toBeDefined();
    expect(v?.seed).toBeDefined();
  });

  it("a one-sided estimate replaced by a subtraction of the two hosts' realtime: I3 under skew, and I4 with handling off", async () => {
    const scenario: ScenarioOptions = { ...DEFAULT_SCENARIO, faults: ["skew"], skewMaxNs: 50_000_000n, handling: false };
    const control = await campaign(scenario);
    expect(control.violations).toEqual([]);
    const broken = await campaign(scenario, { restoreHook: restoreSubtractingHostRealtimes });
    expect(count(broken, "I3")).toBeGreaterThan(0);
    expect(count(broken, "I4")).toBeGreaterThan(0);
    // The estimator claimed to be one-sided: no host fault excuses it.
    const i3 = broken.violations.filter((x) => x.invariant === "I3");
    expect(i3.every((x) => x.faultClass === undefined && x.values.estimator === "one-sided")).toBe(true);
    const worst = i3.find((x) => x.values.tscErrorNs !== undefined) as (typeof i3)[number];
    expect(BigInt(worst.values.tscErrorNs as string)).not.toBe(0n);
  });

  it("the same subtraction done honestly (the wallclock estimator) over lying hosts is a host fault, not a bug", async () => {
    const scenario: ScenarioOptions = { ...DEFAULT_SCENARIO, faults: ["skew"], skewMaxNs: 50_000_000n, estimators: ["wallclock"], policies: ["kvm-realtime"] };
    const r = await campaign(scenario);
    expect(r.violations).toEqual([]);
    expect(r.hostFaultsByClass["I3/lying-clock"] ?? 0).toBeGreaterThan(0);
  });
});

describe("a broken on-receipt fence is caught", () => {
  /** A small campaign of on-receipt migrations with late requests, checked run by run; totals of I6 and committed migrations. */
  async function onReceiptCampaign(brokenFence: boolean): Promise<{ i6: number; violations: number; committed: number; message: string }> {
    const scenario: ScenarioOptions = { ...DEFAULT_SCENARIO, faults: ["late"], switchovers: ["on-receipt"] };
    let i6 = 0;
    let violations = 0;
    let committed = 0;
    let message = "";
    for (let seed = 4242n; seed < 4242n + 96n; seed++) {
      const r = await runSimulation(seed, { ...scenario, ...(brokenFence ? { brokenFence } : {}) });
      const c = checkHistory(r.history);
      i6 += c.counts.I6 ?? 0;
      violations += c.violations.length;
      committed += r.stats.switchovers["on-receipt:committed"] ?? 0;
      message ||= c.violations.find((v) => v.invariant === "I6")?.message ?? "";
    }
    return { i6, violations, committed, message };
  }

  it("a destination that answers a source's Resolve without fencing runs the late Transfer after the source resumed (I6); the real fence passes the same runs", async () => {
    const control = await onReceiptCampaign(false);
    expect(control.violations).toBe(0);
    expect(control.committed).toBeGreaterThan(20);
    const broken = await onReceiptCampaign(true);
    expect(broken.i6).toBeGreaterThan(0);
    expect(broken.message).not.toBe("");
  });
});

describe("I9: a restore that does not do what its policy says is caught", () => {
  it("the real restore conforms under every policy and estimator, with every fault kind", async () => {
    const r = await campaign({ ...DEFAULT_SCENARIO, faults: FAULT_KINDS, policies: POLICIES, estimators: ESTIMATORS }, { runs: 48 });
    expect(count(r, "I9"), JSON.stringify(r.violations.filter((v) => v.invariant === "I9").slice(0, 3))).toBe(0);
    expect(r.totals.restores).toBeGreaterThan(48);
  });

  const cases: { name: string; policies: PolicyName[]; hook: RestoreFn; message: RegExp; i3Holds?: boolean }[] = [
    { name: "a freeze that advances the TSC", policies: ["freeze"], hook: restoreFreezeAdvancingTsc, message: /freeze.*guest TSC moved \d+ cycles from where it stopped, not 0/ },
    // Inside the reported bound: I3 cannot see it, only the policy's definition can.
    { name: "an advance whose kvmclock moves by more than its TSC", policies: ["advance", "advance-capped"], hook: restoreAdvanceKvmclockApart, message: /kvmclock moved -?\d+ ns from where it stopped, not \d+ ns/, i3Holds: true },
    { name: "a kvm-realtime that ignores the realtime argument", policies: ["kvm-realtime"], hook: restoreKvmRealtimeIgnoringRealtime, message: /kvm-realtime.*kvmclock moved 0 ns from where it stopped, not [1-9]\d* ns.*KVM_SET_CLOCK\(REALTIME\)/ },
    { name: "a pvclock record inconsistent with the restored kvmclock", policies: POLICIES.slice(), hook: restorePvclockApart, message: /at resume vCPU \d+'s guest computes kvmclock \d+ ns from its pvclock record, 100000 ns off KVM's/ },
  ];
  for (const c of cases)
    it(`${c.name} fails I9 (${c.policies.join(", ")}); the real restore passes the same campaign`, async () => {
      const scenario: ScenarioOptions = { ...DEFAULT_SCENARIO, faults: [], policies: c.policies, estimators: ESTIMATORS, clocksource: "kvm-clock" };
      const control = await campaign(scenario);
      expect(control.violations).toEqual([]);
      expect(control.totals.restores).toBeGreaterThan(20);
      const broken = await campaign(scenario, { restoreHook: c.hook });
      expect(count(broken, "I9")).toBeGreaterThan(0);
      const i9 = broken.violations.filter((x) => x.invariant === "I9");
      const v = i9.find((x) => c.message.test(x.message));
      expect(v, i9.map((x) => x.message).join("\n")).toBeDefined();
      expect(v?.values.migrationId).toBeDefined();
      if (c.i3Holds) expect(count(broken, "I3")).toBe(0);
    });
});

// ---- one wrong fact per invariant in a real history ------------------------------------------------

async function quietHistory(): Promise<ChaosHistory> {
  // Quiet world, one VM, several committed migrations, guests watching the vmclock marker.
  for (let seed = 1n; seed < 200n; seed++) {
    const r = await runSimulation(seed, { ...DEFAULT_SCENARIO, faults: [], vmsMax: 1, migrationsMin: 4, migrationsMax: 4, watchVmclock: true });
    const c = checkHistory(r.history);
    if (c.violations.length === 0 && c.checked.migrations >= 3 && c.checked.handled >= 3) return r.history;
  }
  throw new Error("no quiet history with three checked migrations in 200 seeds");
}

const clone = (h: ChaosHistory): ChaosHistory => structuredClone(h);
const invariantsOf = (h: ChaosHistory) => new Set(checkHistory(h).violations.map((v) => v.invariant));

function removeEvent(h: ChaosHistory, i: number): void {
  h.events.splice(i, 1);
  h.order?.splice(i, 1);
}

describe("one wrong fact per invariant is caught", async () => {
  const base = await quietHistory();
  const migrationIdx = base.events.findIndex((e) => e.kind === "migration" && e.outcome === "committed");
  const mig = base.events[migrationIdx] as Extract<ChaosEvent, { kind: "migration" }>;
  const mid = Math.floor(base.samples.length / 2);

  it("the unmodified history is clean", () => {
    expect(checkHistory(base).violations).toEqual([]);
  });

  it("I1: a vCPU's TSC one cycle lower than the sample before", () => {
    const h = clone(base);
    const s = h.samples[mid]!;
    const prev = [...h.samples.slice(0, mid)].reverse().find((p) => p.vmId === s.vmId)!;
    s.tsc[0] = prev.tsc[0]! - 1n;
    expect(invariantsOf(h)).toContain("I1");
    const v = checkHistory(h).violations.find((x) => x.invariant === "I1")!;
    expect(v.vcpu).toBe(s.vcpus[0]);
    expect(v.values.after).toBe(String(s.tsc[0]));
  });

  it("I2: kvmclock one ns lower than the sample before", () => {
    const h = clone(base);
    const s = h.samples[mid]!;
    const prev = [...h.samples.slice(0, mid)].reverse().find((p) => p.vmId === s.vmId)!;
    s.kvmclockNs[0] = prev.kvmclockNs[0]! - 1n;
    expect(invariantsOf(h)).toContain("I2");
  });

  it("I3: a resume whose TSC error exceeds the reported bound by one cycle", () => {
    const h = clone(base);
    const e = h.events[migrationIdx] as typeof mig;
    e.tscAtResume = e.tscIdealAtResume + (e.errorBoundNs * e.guestTscKhz) / 1_000_000n + 2n;
    expect(invariantsOf(h)).toEqual(new Set(["I3"]));
  });

  it("I4: a synchronized guest whose interval misses true time by 1 ns", () => {
    const h = clone(base);
    const s = h.samples.find((x, i) => i > mid && x.bounded.status === "synchronized")!;
    const trueRt = h.meta.epochNs + s.trueNs;
    const width = s.bounded.latestNs - s.bounded.earliestNs;
    s.bounded = { ...s.bounded, earliestNs: trueRt + 1n, latestNs: trueRt + 1n + width }; // just above the truth
    expect(invariantsOf(h)).toEqual(new Set(["I4"]));
  });

  it("I5: the guest acting twice on one migration, and never on another", () => {
    const h = clone(base);
    const i = h.events.findIndex((e) => e.kind === "handled");
    h.events.splice(i + 1, 0, { ...(h.events[i] as ChaosEvent) });
    h.order?.splice(i + 1, 0, h.order[i]!);
    expect(invariantsOf(h)).toContain("I5");
    const g = clone(base);
    removeEvent(g, g.events.findIndex((e) => e.kind === "handled"));
    expect(invariantsOf(g)).toContain("I5");
  });

  it("I6: a source that never stopped while the destination ran", () => {
    const h = clone(base);
    const i = h.events.findIndex((e) => e.kind === "stop" && e.why === "pause" && e.vmId === mig.vmId && e.trueNs === mig.pauseTrueNs);
    removeEvent(h, i);
    expect(invariantsOf(h)).toContain("I6");
  });

  it("I7: a VM that ends on no daemon, or on two", () => {
    for (const daemons of [[], ["d0", "d1"]]) {
      const h = clone(base);
      const f = [...h.events].reverse().find((e) => e.kind === "final") as Extract<ChaosEvent, { kind: "final" }>;
      f.owners = f.owners.map((o) => ({ ...o, daemons }));
      expect(invariantsOf(h)).toContain("I7");
    }
  });

  it("I9: a restore that left one vCPU's TSC two cycles past where its policy puts it", () => {
    const h = clone(base);
    const e = h.events.find((x) => x.kind === "restoreClocks") as Extract<ChaosEvent, { kind: "restoreClocks" }>;
    e.restoredTsc[0] = e.restoredTsc[0]! + 2n;
    expect(invariantsOf(h)).toEqual(new Set(["I9"]));
    expect(checkHistory(h).violations[0]?.vcpu).toBe(0);
  });

  it("I8 per vCPU: with samples that each hold one vCPU (as a real guest reports them), a vCPU whose TSC ran 1000 ppm fast", () => {
    const h = clone(base);
    const vmId = h.samples[mid]!.vmId;
    const vcpus = h.samples[mid]!.vcpus.length;
    expect(vcpus, "the quiet history's VM has two vCPUs or more").toBeGreaterThanOrEqual(2);
    // Sample i of the VM keeps only vCPU i mod n: consecutive samples never share a vCPU.
    let i = 0;
    h.samples = h.samples.map((x) => {
      if (x.vmId !== vmId) return x;
      const k = i++ % vcpus;
      return { ...x, vcpus: [x.vcpus[k]!], tsc: [x.tsc[k]!], kvmclockNs: [x.kvmclockNs[k]!] };
    });
    expect(invariantsOf(h).has("I8")).toBe(false); // split, still honest
    const at = h.samples.findIndex((x, n) => n >= mid && x.vmId === vmId);
    const s = h.samples[at]!;
    const prev = [...h.samples.slice(0, at)].reverse().find((p) => p.vmId === vmId && p.vcpus[0] === s.vcpus[0])!;
    s.tsc = [s.tsc[0]! + (s.tsc[0]! - prev.tsc[0]!) / 1000n];
    expect(invariantsOf(h)).toContain("I8");
  });

  it("I8: one sample whose TSC ran 1000 ppm fast since the one before", () => {
    const h = clone(base);
    const s = h.samples[mid]!;
    const prev = [...h.samples.slice(0, mid)].reverse().find((p) => p.vmId === s.vmId)!;
    s.tsc = s.tsc.map((v, k) => v + (v - prev.tsc[k]!) / 1000n);
    expect(invariantsOf(h)).toContain("I8");
  });
});
