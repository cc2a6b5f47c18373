// fast-check generators for whole-migration scenarios (see sim-migration.ts): two hosts of 1–5 GHz,
// either vendor, crystals within ±500 ppm, realtime skews up to ±10 s with drift, any policy and
// estimator, and protocol timings from zero to seconds.

import { relative } from "node:path";
import fc from "fast-check";
import { expect } from "vitest";
import { isTscmigError } from "../../src/shared/errors.js";
import { ESTIMATORS, type EstimatorName } from "../../src/shared/migration/blackout.js";
import { POLICIES, type PolicyName } from "../../src/shared/migration/restore.js";
import { runMigration, type HostSpec, type Outcome, type Scenario, type Timeline } from "./sim-migration.js";

const MS = 1_000_000n;
const S = 1_000_000_000n;

export interface HostArbOptions {
  /** Largest |realtime skew offset|, ns. */
  skewNsMax?: bigint;
  /** Largest |realtime skew drift|, ppm. */
  skewDriftPpmMax?: number;
}

export function hostArb(o: HostArbOptions = {}): fc.Arbitrary<HostSpec> {
  const skewMax = o.skewNsMax ?? 10n * S;
  const driftMax = o.skewDriftPpmMax ?? 500;
  // A wander whose slope 2πA/P fits what the drift leaves of the 500 ppm budget.
  const wander = (ppm: number) =>
    fc.oneof(
      fc.constant({}),
      fc.record({ periodNs: fc.bigInt({ min: 10n * MS, max: 1_000n * S }), share: fc.double({ min: 0, max: 1, noNaN: true }) }).map(({ periodNs, share }) => {
        const budgetPpm = 500 - Math.abs(ppm);
        const amplitude = Math.floor((share * budgetPpm * Number(periodNs)) / (2 * Math.PI * 1e6) * 0.999);
        return amplitude > 0 ? { crystalWanderNs: BigInt(amplitude), crystalWanderPeriodNs: periodNs } : {};
      }),
    );
  return fc.record({
    tscKhz: fc.bigInt({ min: 1_000_000n, max: 5_000_000n }),
    vendor: fc.constantFrom<"vmx" | "svm">("vmx", "svm"),
    tscScaling: fc.constant(true), // scenarioArb decides whether hosts without scaling appear
    crystalPpm: fc.integer({ min: -500, max: 500 }),
    tsc0: fc.bigInt({ min: 1n << 40n, max: 1n << 50n }),
    rawBaseNs: fc.bigInt({ min: 0n, max: 1n << 50n }),
    skewOffsetNs: fc.oneof(fc.constant(0n), fc.bigInt({ min: -skewMax, max: skewMax })),
    skewDriftPpm: fc.oneof(fc.constant(0), fc.integer({ min: -driftMax, max: driftMax })),
    maxerrorNs: fc.bigInt({ min: 0n, max: 20n * MS }),
  }).chain((h) => wander(h.crystalPpm).map((w) => ({ ...h, ...w })));
}

export interface TimelineArbOptions {
  /** Longest commit → restore gap (the bulk of a long blackout). */
  restoreGapNsMax?: bigint;
}

/** Durations up to `max`, or (one run in five) all within a microsecond: bounds then rest on rounding alone. */
function dur(max: bigint, tight: boolean): fc.Arbitrary<bigint> {
  return tight ? fc.bigInt({ min: 0n, max: 1_000n }) : fc.bigInt({ min: 0n, max });
}

export function timelineArb(o: TimelineArbOptions = {}): fc.Arbitrary<Timeline> {
  const gapMax = o.restoreGapNsMax ?? 3n * S;
  return fc
    .oneof({ weight: 4, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) })
    .chain((tight) =>
      fc.record({
        extraRunNs: fc.bigInt({ min: 0n, max: 100n * S }),
        pauseToCaptureNs: fc.oneof(fc.constant(0n), dur(20n * MS, tight)),
        captureToSendNs: dur(5n * MS, tight),
        transitNs: dur(20n * MS, tight),
        holdNs: dur(5n * MS, tight),
        returnNs: dur(20n * MS, tight),
        ackToRestoreNs: tight ? dur(0n, true) : fc.oneof(fc.bigInt({ min: 0n, max: 50n * MS }), fc.bigInt({ min: 0n, max: gapMax })),
        probeLegNs: dur(5n * MS, tight),
        probeReturnLegNs: dur(5n * MS, tight),
        probeHoldNs: dur(1n * MS, tight),
        probeExchanges: fc.integer({ min: 1, max: 4 }),
        probeSlackNs: tight ? dur(0n, true) : fc.bigInt({ min: 0n, max: 2n * S }),
        // One-sided's extra legs: absent (unary peers, Resolve) or any split, stalls included.
        commitGapNs: fc.option(dur(10n * MS, tight), { nil: undefined }),
        anchor: fc.option(fc.record({ leadNs: dur(30n * MS, tight), backLegNs: dur(20n * MS, tight) }), { nil: undefined }),
      }),
    )
    .map((r) => {
      const probeLeadNs = BigInt(r.probeExchanges) * (r.probeLegNs + r.probeReturnLegNs + r.probeHoldNs) + r.probeSlackNs;
      return {
        runNs: probeLeadNs + r.extraRunNs + 1n * MS,
        pauseToCaptureNs: r.pauseToCaptureNs,
        captureToSendNs: r.captureToSendNs,
        transitNs: r.transitNs,
        holdNs: r.holdNs,
        returnNs: r.returnNs,
        ackToRestoreNs: r.ackToRestoreNs,
        probeLeadNs,
        probeLegNs: r.probeLegNs,
        probeReturnLegNs: r.probeReturnLegNs,
        probeHoldNs: r.probeHoldNs,
        probeExchanges: r.probeExchanges,
        ...(r.commitGapNs !== undefined ? { commitGapNs: r.commitGapNs } : {}),
        ...(r.anchor !== undefined ? { anchorLeadNs: r.anchor.leadNs, anchorBackLegNs: r.anchor.backLegNs } : {}),
      };
    });
}

export interface ScenarioArbOptions extends HostArbOptions, TimelineArbOptions {
  policies?: readonly PolicyName[];
  estimators?: readonly EstimatorName[];
  /** Hosts claim a maxerror that covers their whole skew over the run (docs/estimators.md#wallclock--the-kvm-documented-way). */
  honest?: boolean;
  /** Hosts without TSC scaling appear too (then only guest rates they can run are kept). */
  withoutScaling?: boolean;
  vcpusMax?: number;
}

export function scenarioArb(o: ScenarioArbOptions = {}): fc.Arbitrary<Scenario> {
  const scaling = o.withoutScaling ? fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }) : fc.constant(true);
  const host = fc.tuple(hostArb(o), scaling).map(([h, sc]) => ({ ...h, tscScaling: sc }));
  const vcpusMax = o.vcpusMax ?? 64;
  return fc
    .record({
      src: host,
      dst: host,
      vcpus: fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 1, max: Math.min(8, vcpusMax) }) }, { weight: 1, arbitrary: fc.constant(vcpusMax) }),
      guestKhz: fc.oneof(fc.constant<bigint | undefined>(undefined), fc.bigInt({ min: 1_000_000n, max: 5_000_000n })),
      perturb: fc.boolean(),
      deltas: fc.array(fc.bigInt({ min: -(1n << 39n), max: 1n << 39n }), { minLength: vcpusMax, maxLength: vcpusMax }),
      policy: fc.constantFrom(...(o.policies ?? POLICIES)),
      estimator: fc.constantFrom(...(o.estimators ?? ESTIMATORS)),
      capNs: fc.oneof(fc.constant<bigint | undefined>(undefined), fc.bigInt({ min: 0n, max: 2n * S })),
      timeline: timelineArb(o),
    })
    .map((r) => {
      const s: Scenario = {
        src: r.src,
        dst: r.dst,
        vcpus: r.vcpus,
        ...(r.guestKhz !== undefined ? { guestTscKhz: r.guestKhz } : {}),
        vcpuOffsetDelta: r.perturb ? r.deltas.slice(0, r.vcpus) : [],
        policy: r.policy,
        estimator: r.estimator,
        ...(r.capNs !== undefined ? { capNs: r.capNs } : {}),
        timeline: r.timeline,
      };
      return o.honest ? makeHonest(s) : s;
    });
}

/** Total true time a scenario spans. */
export function horizonNs(s: Scenario): bigint {
  const t = s.timeline;
  return t.runNs + t.pauseToCaptureNs + t.captureToSendNs + t.transitNs + t.holdNs + t.returnNs + t.ackToRestoreNs;
}

/** Each host claims exactly what covers its skew over the whole run (rounded up, +1 ns). */
export function makeHonest(s: Scenario): Scenario {
  const h = horizonNs(s);
  const claim = (x: HostSpec): HostSpec => {
    const abs = x.skewOffsetNs < 0n ? -x.skewOffsetNs : x.skewOffsetNs;
    const driftNs = (h * BigInt(Math.abs(x.skewDriftPpm)) + 999_999n) / 1_000_000n;
    return { ...x, maxerrorNs: abs + driftNs + 1n };
  };
  return { ...s, src: claim(s.src), dst: claim(s.dst) };
}

/**
 * Runs the scenario, or returns null when a host refuses the guest's TSC rate (a host without
 * scaling asked for another rate: the destination would refuse at Prepare, nothing to check).
 */
export function runOrRefuse(s: Scenario): Outcome | null {
  try {
    return runMigration(s);
  } catch (e) {
    if (isTscmigError(e) && e.errno === "EINVAL" && e.field === "guestTscKhz") return null;
    throw e;
  }
}

/**
 * fast-check parameters whose failure report ends with the command that replays it (STYLE 15):
 * `FC_SEED=… FC_PATH=… npx vitest run <file> -t <test>`; the same variables replay a run.
 */
export function replayable<T>(numRuns: number): fc.Parameters<T> {
  const seed = process.env.FC_SEED;
  const path = process.env.FC_PATH;
  return {
    numRuns,
    ...(seed !== undefined ? { seed: Number(seed), ...(path ? { path } : {}) } : {}),
    reporter: (out) => {
      if (!out.failed) return;
      const st = expect.getState();
      const file = relative(process.cwd(), st.testPath ?? "");
      const name = (st.currentTestName ?? "").split(" > ").pop() ?? "";
      const pattern = name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
      const cause = out.errorInstance instanceof Error ? out.errorInstance.message : String(out.errorInstance);
      throw new Error(
        `${fc.defaultReportMessage(out) ?? "property failed"}\n\nCaused by: ${cause}\n\nReplay: FC_SEED=${out.seed} FC_PATH=${out.counterexamplePath ?? ""} npx vitest run ${file} -t ${JSON.stringify(pattern)}`,
        { cause: out.errorInstance },
      );
    },
  };
}
