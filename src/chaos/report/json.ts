// The machine-readable campaign report (`--json FILE`): what ran, what was checked, every
// violation with the values involved and the command that replays its run, and the distributions
// of migration error (per policy and per estimator) and blackout. 64-bit values are decimal strings.

import { CHECKS, INVARIANT_TITLES, type Violation } from "../checker.js";
import type { CampaignResult } from "../campaign.js";
import type { MigrationStat } from "../run-outcome.js";
import { logHistogram, summarize, type Summary } from "./stats.js";

export interface ReportContext {
  /** The command that replays one run alone. */
  replay: (seed: bigint) => string;
  /** The command that opens one run as a step-through page (`tscmig chaos replay`). */
  stepThrough?: (seed: bigint) => string;
  /** The options as the user gave them (for the header). */
  options: Record<string, string | number | boolean>;
  elapsedNs?: bigint;
  jobs?: number;
  recoveryBoundNs?: bigint;
}

export interface GroupStats {
  migrations: number;
  absErrorNs: Summary;
  errorOverBound: Summary;
  blackoutNs: Summary;
  hostFaults: number;
}

/** Per group; migrations whose bound a host clock fault broke are counted but kept out of the percentiles. */
function group(stats: readonly MigrationStat[], key: (s: MigrationStat) => string): Record<string, GroupStats> {
  const by = new Map<string, MigrationStat[]>();
  for (const s of stats) {
    const k = key(s);
    let l = by.get(k);
    if (!l) by.set(k, (l = []));
    l.push(s);
  }
  const out: Record<string, GroupStats> = {};
  for (const [k, all] of [...by].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
    const l = all.filter((s) => s.hostFault === null);
    out[k] = {
      migrations: l.length,
      absErrorNs: summarize(l.map((s) => s.absErrorNs)),
      errorOverBound: summarize(l.map((s) => (Number.isFinite(s.errorOverBound) ? s.errorOverBound : 1e9))),
      blackoutNs: summarize(l.map((s) => s.blackoutNs)),
      hostFaults: all.length - l.length,
    };
  }
  return out;
}

export function distributions(stats: readonly MigrationStat[]) {
  const blackouts = stats.map((s) => s.blackoutNs);
  return {
    note: "per committed migration the source reported: |guest TSC at resume − what the source would read| (ns), that over the reported errorBoundNs, and the true blackout; migrations whose bound a host clock fault broke (hostFaults) are left out of the percentiles",
    byPolicy: group(stats, (s) => s.policy + (s.capped ? " (capped)" : "")),
    byEstimator: group(stats, (s) => s.estimator),
    byPolicyAndEstimator: group(stats, (s) => `${s.policy}/${s.estimator}`),
    blackoutNs: { ...summarize(blackouts), histogram: logHistogram(blackouts) },
  };
}

function violationJson(v: Violation, ctx: ReportContext) {
  return {
    invariant: v.invariant,
    title: INVARIANT_TITLES[v.invariant],
    run: v.run ?? null,
    seed: v.seed !== undefined ? v.seed.toString() : null,
    message: v.message,
    ...(v.faultClass ? { faultClass: v.faultClass } : {}),
    ...(v.vmId !== undefined ? { vmId: v.vmId } : {}),
    ...(v.vcpu !== undefined ? { vcpu: v.vcpu } : {}),
    ...(v.daemon !== undefined ? { daemon: v.daemon } : {}),
    ...(v.trueNs !== undefined ? { trueNs: v.trueNs.toString() } : {}),
    values: v.values,
    ...(v.seed !== undefined ? { replay: ctx.replay(v.seed) } : {}),
  };
}

export function buildJsonReport(r: CampaignResult, ctx: ReportContext) {
  const t = r.totals;
  const elapsedS = ctx.elapsedNs !== undefined ? Number(ctx.elapsedNs) / 1e9 : null;
  const byInv: Record<string, number> = {};
  for (const i of CHECKS) byInv[i] = r.violationsByInvariant[i] ?? 0;
  return {
    tool: "tscmig chaos",
    mode: r.mode,
    seed: r.seed.toString(),
    runs: t.runs,
    passed: r.violationCount === 0,
    violationCount: r.violationCount,
    hostFaultCount: r.hostFaultCount,
    options: ctx.options,
    checked: {
      runs: t.runs,
      samples: t.samples,
      vcpuReadings: t.vcpuReadings,
      migrations: t.migrations,
      migrationsStarted: t.migrationsStarted,
      migrationsCommitted: t.migrationsCommitted,
      faults: t.faults,
      vms: t.vms,
      handled: t.handled,
      ratePairs: t.ratePairs,
      restores: t.restores,
      livenessChecks: t.livenessChecks,
      simulatedNs: t.simNs.toString(),
      events: t.events,
      note: "migrations: committed migrations whose error at resume was checked against their bound (I3); faults: faults injected (crashes, kills, lost/duplicated/reset/partitioned messages, lost doorbells); restores: restores whose clocks were checked against their policy's definition (I9; recorded by sim runs)",
    },
    recoveryBoundNs: ctx.recoveryBoundNs !== undefined ? ctx.recoveryBoundNs.toString() : null,
    violationsByInvariant: byInv,
    violationsNote: "each run lists at most 20 violations per invariant; violationCount and violationsByInvariant count them all",
    violations: r.violations.map((v) => violationJson(v, ctx)),
    hostFaultsByClass: r.hostFaultsByClass,
    hostFaults: r.hostFaults.slice(0, 1000).map((v) => violationJson(v, ctx)),
    failingRuns: r.failingRuns.map((f) => ({ run: f.run, seed: f.seed.toString(), invariants: f.invariants, replay: ctx.replay(f.seed) })),
    distributions: distributions(r.stats),
    faultsInjected: { bySite: r.faultSites, runsWithKind: r.faultKinds },
    outcomes: r.outcomes,
    migrationsByPath: r.migrationsByPath,
    migrationsByPathNote: "committed migrations the sources reported, by what carried Transfer and Commit: one Handover call, or the unary calls (the fallback when a Handover exchange fails)",
    migrationsBySwitchover: r.migrationsBySwitchover,
    migrationsBySwitchoverNote: "migrations per switchover mode drawn by seed (two-phase, on-receipt): \"mode:started\" and \"mode:outcome\" (committed, aborted, refused, in-doubt) as the sources reported them",
    determinism: {
      checked: r.determinism.checked,
      mismatches: r.determinism.mismatches.map((m) => ({ run: m.run, seed: m.seed.toString(), hash: m.hash, rerunHash: m.rerunHash })),
    },
    timing:
      elapsedS !== null
        ? {
            elapsedMs: Math.round(elapsedS * 1000),
            jobs: ctx.jobs ?? 1,
            runsPerSecond: Number((t.runs / elapsedS).toFixed(1)),
            migrationsPerSecond: Number((t.migrationsStarted / elapsedS).toFixed(1)),
            migrationsPerSecondPerJob: Number((t.migrationsStarted / elapsedS / (ctx.jobs ?? 1)).toFixed(1)),
            committedMigrationsPerSecond: Number((t.migrationsCommitted / elapsedS).toFixed(1)),
          }
        : null,
  };
}
