// Goal: invariants I1, I2, I3 and I8 (docs/invariants.md) hold for every policy and estimator where they
// they must, and each policy errs exactly as it is defined to. Method: fast-check over whole
// migrations on a SimClock (test/helpers/sim-migration.ts) between random hosts (1–5 GHz, VMX/SVM,
// crystals ±500 ppm, realtime skews up to ±10 s with drift), comparing every vCPU's clocks at resume
// with what the source would read at that instant had it never paused.

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { replayable, runOrRefuse, scenarioArb } from "../helpers/sim-arbitraries.js";
import { crystalModel, type Outcome, runMigration, type Scenario } from "../helpers/sim-migration.js";
import { maxSlopePpm } from "../../src/shared/time/offset-model.js";
import { ESTIMATORS } from "../../src/shared/migration/blackout.js";
import { POLICIES } from "../../src/shared/migration/restore.js";
import { s64 } from "../../src/shared/kvm/u64.js";
import { TSC_TOLERANCE_PPM_DEFAULT } from "../../src/shared/kvm/tsc.js";

/** Runs per property; PROP_RUNS=10000 for a soak. A failure prints the FC_SEED/FC_PATH command that replays it. */
const RUNS = Number(process.env.PROP_RUNS ?? 150);
const abs = (x: bigint) => (x < 0n ? -x : x);

/** Prints what a failing run needs to be understood (fast-check prints the seed and the replay path). */
function describeOutcome(o: Outcome): string {
  const v = o.vcpus[0];
  return JSON.stringify(
    {
      policy: o.scenario.policy,
      estimator: o.scenario.estimator,
      estimate: o.result.estimate,
      advancedNs: o.result.advancedNs,
      errorBoundNs: o.result.errorBoundNs,
      capped: o.result.capped,
      clockGuest: o.result.clockGuest,
      trueAdvanceNs: o.trueAdvanceNs,
      skewDeltaNs: o.skewDeltaNs,
      srcCrystalDeltaNs: o.srcCrystalDeltaNs,
      vcpu0: v,
    },
    (_k, x) => (typeof x === "bigint" ? x.toString() : x),
  );
}

function check(o: Outcome, pred: boolean, what: string): void {
  if (!pred) throw new Error(`${what}: ${describeOutcome(o)}`);
}

describe("I1/I2: clocks never go back across a migration", () => {
  it("no vCPU's guest TSC or kvmclock at resume is below what the guest last read before the pause, for every policy, estimator and skew", () => {
    fc.assert(
      fc.property(scenarioArb({ withoutScaling: true }), (s) => {
        const o = runOrRefuse(s);
        fc.pre(o !== null);
        if (o === null) return;
        o.vcpus.forEach((v, i) => {
          check(o, s64(v.tscAfter - v.tscAtPause) >= 0n, `I1 vCPU ${i} TSC went back`);
          check(o, s64(v.kvmAfter - v.kvmAtPause) >= 0n, `I2 vCPU ${i} kvmclock went back`);
        });
      }),
      replayable(RUNS),
    );
  });
});

describe("I3: the reported bound contains the error", () => {
  it("one-sided and probe stay within their bounds under skews up to ±10 s, for every policy", () => {
    fc.assert(
      fc.property(scenarioArb({ estimators: ["one-sided", "probe"], withoutScaling: true }), (s) => {
        const o = runOrRefuse(s);
        fc.pre(o !== null);
        if (o === null) return;
        const bound = o.result.errorBoundNs;
        o.vcpus.forEach((v, i) => {
          check(o, abs(v.tscErrNs) <= bound, `I3 vCPU ${i} TSC error ${v.tscErrNs} > bound ${bound}`);
          check(o, abs(v.kvmErrNs) <= bound, `I3 vCPU ${i} kvmclock error ${v.kvmErrNs} > bound ${bound}`);
        });
      }),
      replayable(RUNS),
    );
  });

  it("wallclock stays within its bound for every policy when both hosts' claimed maxerror covers their skew", () => {
    fc.assert(
      fc.property(scenarioArb({ estimators: ["wallclock"], honest: true, withoutScaling: true }), (s) => {
        const o = runOrRefuse(s);
        fc.pre(o !== null);
        if (o === null) return;
        const bound = o.result.errorBoundNs;
        o.vcpus.forEach((v, i) => {
          check(o, abs(v.tscErrNs) <= bound, `I3 vCPU ${i} TSC error ${v.tscErrNs} > bound ${bound}`);
          check(o, abs(v.kvmErrNs) <= bound, `I3 vCPU ${i} kvmclock error ${v.kvmErrNs} > bound ${bound}`);
        });
      }),
      replayable(RUNS),
    );
  });
});

/** The source's guest clocks gain this much true-time-equivalent over capture → resume: the blackout plus the crystal's drift over it. */
const idealAdvanceNs = (o: Outcome) => o.trueAdvanceNs + o.srcCrystalDeltaNs;
/** Host-TSC floors and the ratio's scaling: a few cycles, each under a nanosecond at ≥ 1 GHz. */
const ROUNDING_NS = 4n;
/**
 * kvmclock converts guest cycles with the pvclock scale, built from the scaled rate floored to a
 * kHz (≤ 1 ppm at ≥ 1 GHz) and a 32-bit mul: 2 ppm of every duration it converts, plus rounding.
 */
const pvclockRateSlackNs = (...ns: bigint[]) => ns.reduce((acc, x) => acc + (abs(x) * 2n) / 1_000_000n, ROUNDING_NS);

describe("each policy errs exactly as defined", () => {
  it("wallclock under advance and kvm-realtime errs by exactly the injected inter-host skew (or loses the blackout when the skew is more negative)", () => {
    fc.assert(
      fc.property(scenarioArb({ estimators: ["wallclock"], policies: ["advance", "kvm-realtime"], withoutScaling: true }), (s) => {
        const o = runOrRefuse(s);
        fc.pre(o !== null);
        if (o === null) return;
        const raw = o.trueAdvanceNs + o.skewDeltaNs; // what dst realtime − src realtime measured
        check(o, o.result.estimate.estimatedNs === (raw > 0n ? raw : 0n), "wallclock estimate is not blackout + skew");
        // The advance is the estimate; the ideal moved by the blackout plus the source crystal's drift.
        const expected = o.result.estimate.estimatedNs - idealAdvanceNs(o);
        o.vcpus.forEach((v, i) => {
          check(o, abs(v.tscErrNs - expected) <= ROUNDING_NS, `vCPU ${i} TSC error ${v.tscErrNs} ≠ skew − drift ${expected}`);
          check(o, abs(v.kvmErrNs - expected) <= pvclockRateSlackNs(o.trueAdvanceNs, expected), `vCPU ${i} kvmclock error ${v.kvmErrNs} ≠ ${expected}`);
        });
      }),
      replayable(RUNS),
    );
  });

  it("wallclock's bound rests on the hosts' claims alone: hosts whose skew exceeds their claim produce errors beyond the bound (the lying-clock class)", () => {
    fc.assert(
      fc.property(scenarioArb({ estimators: ["wallclock"], policies: ["advance", "kvm-realtime"] }), (s) => {
        const o = runOrRefuse(s);
        fc.pre(o !== null && o.trueAdvanceNs + o.skewDeltaNs > 0n);
        if (o === null) return;
        const claimed = s.src.maxerrorNs + s.dst.maxerrorNs;
        const lie = abs(o.skewDeltaNs) - claimed;
        fc.pre(lie > o.result.errorBoundNs - claimed + ROUNDING_NS + abs(o.srcCrystalDeltaNs));
        const v = o.vcpus[0] as Outcome["vcpus"][number];
        check(o, abs(v.tscErrNs) > o.result.errorBoundNs, "a lying host's skew stayed within the bound");
      }),
      replayable(RUNS),
    );
  });

  it("freeze resumes every vCPU at exactly the snapshot's TSC and kvmclock, losing exactly the time from snapshot to resume", () => {
    fc.assert(
      fc.property(scenarioArb({ policies: ["freeze"], withoutScaling: true }), (s) => {
        const o = runOrRefuse(s);
        fc.pre(o !== null);
        if (o === null) return;
        o.vcpus.forEach((v, i) => {
          check(o, v.tscAfter === o.snapshot.tsc[i], `vCPU ${i} TSC moved under freeze`);
          check(o, abs(v.tscErrNs + idealAdvanceNs(o)) <= ROUNDING_NS, `vCPU ${i} lost ${-v.tscErrNs} ns, not the blackout ${idealAdvanceNs(o)}`);
          check(o, abs(v.kvmErrNs + idealAdvanceNs(o)) <= pvclockRateSlackNs(o.trueAdvanceNs), `vCPU ${i} kvmclock lost ${-v.kvmErrNs} ns`);
        });
        check(o, o.result.advancedNs === 0n, "freeze advanced");
      }),
      replayable(RUNS),
    );
  });

  it("advance-capped advances by min(estimate, cap), says when it capped, and equals advance below the cap", () => {
    fc.assert(
      fc.property(scenarioArb({ policies: ["advance-capped"], withoutScaling: true }), (s) => {
        const o = runOrRefuse(s);
        fc.pre(o !== null);
        if (o === null) return;
        const est = o.result.estimate.estimatedNs;
        const cap = s.capNs ?? 1_000_000_000n;
        check(o, o.result.capped === est > cap, "capped flag");
        check(o, o.result.advancedNs === (est > cap ? cap : est), "advancedNs is not min(estimate, cap)");
        if (!o.result.capped) {
          const plain = runOrRefuse({ ...s, policy: "advance" });
          if (plain === null) throw new Error("advance refused what advance-capped ran");
          o.vcpus.forEach((v, i) => check(o, v.tscAfter === plain.vcpus[i]?.tscAfter, `vCPU ${i} differs from advance below the cap`));
          check(o, o.result.errorBoundNs === plain.result.errorBoundNs, "bound differs from advance below the cap");
        }
      }),
      replayable(RUNS),
    );
  });

  it("one-sided is immune to skew: the same migration with host skews of up to ±10 s restores bit-identical clocks", () => {
    fc.assert(
      fc.property(scenarioArb({ estimators: ["one-sided"], withoutScaling: true }), (s) => {
        const o = runOrRefuse(s);
        fc.pre(o !== null);
        if (o === null) return;
        const calm = (h: typeof s.src) => ({ ...h, skewOffsetNs: 0n, skewDriftPpm: 0 });
        const q = runOrRefuse({ ...s, src: calm(s.src), dst: calm(s.dst) });
        if (q === null) throw new Error("the calm twin was refused");
        check(o, o.result.estimate.estimatedNs === q.result.estimate.estimatedNs, "estimate depends on skew");
        check(o, o.result.errorBoundNs === q.result.errorBoundNs, "bound depends on skew");
        o.vcpus.forEach((v, i) => check(o, v.tscAfter === q.vcpus[i]?.tscAfter, `vCPU ${i} TSC depends on skew`));
      }),
      replayable(RUNS),
    );
  });
});

describe("I8: rate continuity", () => {
  it("after resume the guest TSC runs at the configured kHz within the destination crystal's drift, plus KVM's 250 ppm when it programs the default ratio", () => {
    fc.assert(
      fc.property(scenarioArb({ withoutScaling: true }), fc.bigInt({ min: 1_000_000n, max: 10_000_000_000n }), (s, intervalNs) => {
        const o = runOrRefuse(s);
        fc.pre(o !== null);
        if (o === null) return;
        const khz = o.snapshot.guestTscKhz;
        const before = o.dstVm.readGuestTsc(0);
        o.clock.advanceTo(o.tResume + intervalNs);
        const after = o.dstVm.readGuestTsc(0);
        const cycles = s64(after - before);
        const measuredHzTimesInterval = cycles * 1_000_000_000n; // rate·interval, in Hz·ns
        const nominal = khz * 1000n * intervalNs;
        const dstDefault = o.dstVm.getTscRatio(0) === (o.dst.info.vendor.fracBits === 48 ? 1n << 48n : 1n << 32n);
        const crystalPpm = BigInt(Math.ceil(maxSlopePpm(crystalModel(s.dst))));
        const tolPpm = crystalPpm + (dstDefault && khz !== o.dst.info.tscKhz ? BigInt(TSC_TOLERANCE_PPM_DEFAULT) : 0n);
        // Slack, in cycles: the crystal model's ns floors (3 ns of guest cycles), two host-TSC floors
        // scaled by the ratio, two scaling floors; plus the ratio's own floor (< 2 Hz at 32 frac bits).
        const slackCycles = (3n * khz) / 1_000_000n + 1n + 2n * (khz / o.dst.info.tscKhz + 1n) + 2n;
        const slack = slackCycles * 1_000_000_000n + 2n * intervalNs;
        check(o, abs(measuredHzTimesInterval - nominal) <= (nominal * tolPpm) / 1_000_000n + slack, `rate ${cycles} cycles in ${intervalNs} ns for ${khz} kHz`);
      }),
      replayable(RUNS),
    );
  });
});

describe("edge shapes", () => {
  const base = (over: Partial<Scenario>): Scenario => ({
    src: { tscKhz: 2_100_000n, vendor: "vmx", tscScaling: true, crystalPpm: 37, tsc0: 1n << 45n, rawBaseNs: 5n, skewOffsetNs: 3_000_000n, skewDriftPpm: 12, maxerrorNs: 4_000_000n },
    dst: { tscKhz: 3_300_000n, vendor: "svm", tscScaling: true, crystalPpm: -250, tsc0: 1n << 41n, rawBaseNs: 9n, skewOffsetNs: -1_000_000n, skewDriftPpm: -3, maxerrorNs: 2_000_000n },
    vcpus: 4,
    guestTscKhz: 2_500_000n,
    vcpuOffsetDelta: [],
    policy: "advance",
    estimator: "one-sided",
    timeline: {
      runNs: 10_000_000_000n,
      pauseToCaptureNs: 2_000_000n,
      captureToSendNs: 500_000n,
      transitNs: 3_000_000n,
      holdNs: 1_000_000n,
      returnNs: 2_000_000n,
      ackToRestoreNs: 40_000_000n,
      probeLeadNs: 100_000_000n,
      probeLegNs: 3_000_000n,
      probeReturnLegNs: 2_000_000n,
      probeHoldNs: 100_000n,
      probeExchanges: 4,
    },
    ...over,
  });

  it("a 1024-vCPU VM keeps every vCPU within the bound and monotonic under every policy and estimator", () => {
    for (const policy of POLICIES)
      for (const estimator of ESTIMATORS) {
        const o = runMigration(base({ vcpus: 1024, policy, estimator }));
        const bound = o.result.errorBoundNs;
        o.vcpus.forEach((v, i) => {
          check(o, s64(v.tscAfter - v.tscAtPause) >= 0n && s64(v.kvmAfter - v.kvmAtPause) >= 0n, `vCPU ${i} went back`);
          check(o, abs(v.tscErrNs) <= bound && abs(v.kvmErrNs) <= bound, `vCPU ${i} out of bound`);
        });
      }
  });

  it("a guest TSC that wraps past 2^64 during the blackout keeps counting modulo 2^64", () => {
    const probe = base({ guestTscKhz: undefined, src: { ...base({}).src, crystalPpm: 0 } });
    // Offset every vCPU so that its TSC reads 2^64 − 10^6 cycles at the pause (0.5 ms before it wraps).
    const hostTscAtPause = probe.src.tsc0 + (probe.src.tscKhz * 1000n * probe.timeline.runNs) / 1_000_000_000n;
    const delta = BigInt.asUintN(64, -1_000_000n - hostTscAtPause);
    for (const policy of POLICIES) {
      const o = runMigration({ ...probe, policy, vcpuOffsetDelta: Array.from({ length: probe.vcpus }, () => delta) });
      const v = o.vcpus[0] as Outcome["vcpus"][number];
      expect(v.tscAtPause).toBe((1n << 64n) - 1_000_000n);
      if (policy !== "freeze") expect(v.tscAfter).toBeLessThan(1n << 40n); // wrapped
      o.vcpus.forEach((w) => {
        check(o, s64(w.tscAfter - w.tscAtPause) >= 0n && s64(w.kvmAfter - w.kvmAtPause) >= 0n, "went back across the wrap");
        check(o, abs(w.tscErrNs) <= o.result.errorBoundNs, "out of bound across the wrap");
      });
    }
  });
});
