// The checker (docs/invariants.md): reads one run's history — every guest sample with true time, every
// run/stop/handled/migration event, and the harness's facts about hosts, VMs and faults — and proves
// I1–I9 or names each violation with the VM, vCPU, daemons, instants and values involved.
//
// It trusts nothing the daemons concluded: the bound a migration reports is compared with the error
// measured against shared truth, ownership is rebuilt from run/stop events and cross-checked with
// the samples themselves, and rates are measured between samples.
//
// Host clock faults are not bugs. A restore whose estimate rests on the hosts' own realtime claims
// (`wallclock`) is only as good as those claims: when a host's real skew exceeded the maxerror it
// claimed, the resulting I3 violation is reported as fault class "lying-clock", apart from bugs. The
// `probe` estimator assumes each host's realtime is rate-stable between probe and resume; a step,
// strobe or jitter edge inside that window makes its I3 violations "stepped-clock". A guest that
// widened its bound by a figure a host fault made wrong inherits the class for its I4 violations.
//
// Layout: check/history-index.ts builds the run's index once (timeline, per-VM tracks and eras,
// per-migration errors), check/host-clocks.ts answers questions about host clocks, and
// check/invariants.ts holds one function per invariant over the index. This file runs them all,
// orders and caps what they found, and defines the result.

import { HistoryIndex } from "./check/history-index.js";
import type { FaultClass } from "./check/host-clocks.js";
import { CHECKS as INVARIANT_CHECKS } from "./check/invariants.js";
import type { ChaosHistory } from "./history.js";

export type { FaultClass } from "./check/host-clocks.js";

export const INVARIANTS = ["I1", "I2", "I3", "I4", "I5", "I6", "I7", "I8", "I9"] as const;
/** L: the deployment did not work again after healing; E: something threw that would have killed a daemon; D: a rerun of the seed differed. */
export type Invariant = (typeof INVARIANTS)[number] | "L" | "E" | "D";
/** Everything a report lists a count for, in order. */
export const CHECKS: readonly Invariant[] = [...INVARIANTS, "L", "E", "D"];

export const INVARIANT_TITLES: Record<Invariant, string> = {
  I1: "TSC monotonic",
  I2: "kvmclock monotonic",
  I3: "bounded migration error",
  I4: "honest guest bounds",
  I5: "exactly-once migration handling",
  I6: "single owner",
  I7: "nothing lost",
  I8: "rate continuity",
  I9: "policy conformance",
  L: "liveness after healing",
  E: "no daemon exception",
  D: "determinism",
};

export type Value = string | number | boolean;

export interface Violation {
  invariant: Invariant;
  message: string;
  vmId?: string;
  vcpu?: number;
  daemon?: string;
  trueNs?: bigint;
  values: Record<string, Value>;
  faultClass?: FaultClass;
  /** Filled by the campaign. */
  run?: number;
  seed?: bigint;
}

export interface MigrationRow {
  migrationId: string;
  vmId: string;
  source: string;
  destination: string;
  policy: string;
  estimator: string;
  outcome: string;
  capped: boolean;
  pauseTrueNs: bigint;
  resumeTrueNs: bigint;
  blackoutNs: bigint;
  estimatedBlackoutNs: bigint;
  /** Guest TSC (vCPU 0) at resume minus what the source would read, in ns of guest time. */
  tscErrorNs: bigint;
  kvmclockErrorNs: bigint;
  errorBoundNs: bigint;
  hostFault: FaultClass | null;
}

export interface CheckCounts {
  samples: number;
  /** vCPU readings inside the samples (each is checked for I1, I2 and I8). */
  vcpuReadings: number;
  /** Migrations whose resume was reported and whose error was checked against its bound (I3). */
  migrations: number;
  migrationsCommitted: number;
  migrationsStarted: number;
  faults: number;
  vms: number;
  handled: number;
  /** Sample pairs whose rate was measured (I8). */
  ratePairs: number;
  /** Restores whose clocks were checked against their policy's definition (I9; sim runs record them). */
  restores: number;
  /** Liveness checks after healing (L). */
  livenessChecks: number;
}

export interface CheckResult {
  /** The first `perInvariantMax` violations of each invariant, with their values. */
  violations: Violation[];
  /** Violations explained by a host clock that broke its claim (not bugs), listed the same way. */
  hostFaults: Violation[];
  /** Every violation counted, listed or not: invariant (or "invariant/faultClass") → count. */
  counts: Record<string, number>;
  checked: CheckCounts;
  migrations: MigrationRow[];
}

export interface CheckOptions {
  /** Largest violations kept per invariant (the rest are counted). */
  perInvariantMax?: number;
  /** Rate pairs shorter than this are not measured (rounding dominates). */
  rateMinIntervalNs?: bigint;
}

export function checkHistory(h: ChaosHistory, opts: CheckOptions = {}): CheckResult {
  const ix = new HistoryIndex(h, { rateMinIntervalNs: opts.rateMinIntervalNs ?? 10_000_000n });
  const found: { at: readonly number[]; v: Violation }[] = [];
  const checked = coverage(ix);
  for (const check of INVARIANT_CHECKS) check(ix, { add: (at, v) => found.push({ at, v }), checked });
  found.sort((a, b) => compareAt(a.at, b.at)); // stable: equal places keep the order of the checks
  return { ...listed(found.map((f) => f.v), opts.perInvariantMax ?? 20), checked, migrations: migrationRows(ix) };
}

function compareAt(a: readonly number[], b: readonly number[]): number {
  for (let i = 0; i < a.length && i < b.length; i++) if (a[i] !== b[i]) return (a[i] as number) - (b[i] as number);
  return a.length - b.length;
}

/** Counts every violation per invariant (or "invariant/faultClass") and lists the first `perMax` of each. */
function listed(all: readonly Violation[], perMax: number): Pick<CheckResult, "violations" | "hostFaults" | "counts"> {
  const violations: Violation[] = [];
  const hostFaults: Violation[] = [];
  const counts: Record<string, number> = {};
  for (const v of all) {
    const key = v.faultClass ? `${v.invariant}/${v.faultClass}` : v.invariant;
    counts[key] = (counts[key] ?? 0) + 1;
    if ((counts[key] as number) <= perMax) (v.faultClass ? hostFaults : violations).push(v);
  }
  return { violations, hostFaults, counts };
}

/** What the history holds, before the checks add what they measured (I3's migrations, I8's rate pairs, I9's restores, L's checks). */
function coverage(ix: HistoryIndex): CheckCounts {
  const events = ix.history.events;
  const count = (kind: string) => events.reduce((n, e) => (e.kind === kind ? n + 1 : n), 0);
  return {
    samples: ix.history.samples.length,
    vcpuReadings: ix.history.samples.reduce((n, s) => n + s.vcpus.length, 0),
    migrations: 0,
    // Every new generation that ran is a committed migration, whether or not its source lived to
    // report it (only reported ones can be checked for I3).
    migrationsCommitted: [...ix.tracks.values()].reduce((n, tr) => n + Math.max(0, tr.eras.length - 1), 0),
    migrationsStarted: count("migrateStart"),
    faults: count("fault"),
    vms: ix.vms.size,
    handled: count("handled"),
    ratePairs: 0,
    restores: 0,
    livenessChecks: 0,
  };
}

function migrationRows(ix: HistoryIndex): MigrationRow[] {
  return ix.migrations.map(({ account: e, committed, tscErrorNs, kvmclockErrorNs, hostFault }) => ({
    migrationId: e.migrationId,
    vmId: e.vmId,
    source: e.source,
    destination: e.destination,
    policy: e.policy,
    estimator: e.estimator,
    outcome: e.outcome,
    capped: e.capped,
    pauseTrueNs: e.pauseTrueNs,
    resumeTrueNs: e.resumeTrueNs,
    blackoutNs: committed ? e.resumeTrueNs - e.pauseTrueNs : 0n,
    estimatedBlackoutNs: e.estimatedBlackoutNs,
    tscErrorNs,
    kvmclockErrorNs,
    errorBoundNs: e.errorBoundNs,
    hostFault: hostFault ?? null,
  }));
}
