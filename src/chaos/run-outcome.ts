// What one checked run hands back to the campaign (sim or live, in a worker thread or not): the
// violations with their values, the counts the checker covered, a compact row per migration for
// the error and blackout distributions, and a few plots' worth of samples around migrations.
// Plain data only (structured-clone safe: bigints, no functions).

import { type CheckCounts, type CheckResult, type FaultClass, type MigrationRow, type Violation } from "./checker.js";
import type { ChaosHistory } from "./history.js";
import { MIGRATION_PATHS, type MigrationPath } from "../shared/history.js";
import { runTimeline, TIMELINES_KEPT_MAX } from "./report/timeline.js";

export interface MigrationStat {
  policy: string;
  estimator: string;
  capped: boolean;
  /** |guest TSC error at resume| in ns, and that over the reported bound. */
  absErrorNs: number;
  errorOverBound: number;
  blackoutNs: number;
  hostFault: FaultClass | null;
}

export interface PlotPoint {
  /** True time relative to the resume instant, ns. */
  tNs: number;
  /** Guest realtime − true realtime, ns. */
  errorNs: number;
  /** Half the width of the guest's bounded clock, ns. */
  halfNs: number;
  status: string;
  daemon: string;
}

export interface MigrationPlot {
  run: number;
  seed: bigint;
  migrationId: string;
  vmId: string;
  policy: string;
  estimator: string;
  source: string;
  destination: string;
  blackoutNs: number;
  tscErrorNs: number;
  errorBoundNs: number;
  hostFault: FaultClass | null;
  /** A violation of this run falls in the plotted window. */
  flagged: boolean;
  points: PlotPoint[];
}

export interface RunOutcome {
  run: number;
  seed: bigint;
  violations: Violation[];
  hostFaults: Violation[];
  /** All violations counted per invariant (the lists above are capped per run). */
  counts: Record<string, number>;
  checked: CheckCounts;
  stats: MigrationStat[];
  plots: MigrationPlot[];
  events: number;
  simNs: bigint;
  faultSites: Record<string, number>;
  outcomes: Record<string, number>;
  /** Committed migrations the sources reported, by what carried them (a campaign shows both ran). */
  migrationsByPath: Record<MigrationPath, number>;
  /** Migrations per switchover mode: "mode:started", "mode:outcome" (sim runs; live runs leave it empty). */
  migrationsBySwitchover: Record<string, number>;
  active: string[];
  /** The run's compact timeline for the report (report/timeline.ts), as JSON text. */
  timelineJson?: string;
  hash?: string;
  /** Determinism check: the rerun's hash, when this run was rerun. */
  rerunHash?: string;
}

export function migrationStats(rows: readonly MigrationRow[]): MigrationStat[] {
  const out: MigrationStat[] = [];
  for (const m of rows) {
    if (m.outcome !== "committed" || m.resumeTrueNs === 0n) continue;
    const err = Number(m.tscErrorNs < 0n ? -m.tscErrorNs : m.tscErrorNs);
    out.push({
      policy: m.policy,
      estimator: m.estimator,
      capped: m.capped,
      absErrorNs: err,
      errorOverBound: m.errorBoundNs > 0n ? err / Number(m.errorBoundNs) : err > 0 ? Number.POSITIVE_INFINITY : 0,
      blackoutNs: Number(m.blackoutNs),
      hostFault: m.hostFault,
    });
  }
  return out;
}

/** Samples of one VM around a migration: guest realtime error against truth, with the guest's bound. */
export function plotsOf(h: ChaosHistory, check: CheckResult, run: number, seed: bigint, max: number): MigrationPlot[] {
  const committed = check.migrations.filter((m) => m.outcome === "committed" && m.resumeTrueNs > 0n);
  if (committed.length === 0 || max <= 0) return [];
  const flaggedAt = check.violations.filter((v) => v.trueNs !== undefined && v.vmId !== undefined);
  const windowOf = (m: MigrationRow) => ({ from: m.pauseTrueNs - 1_000_000_000n, to: m.resumeTrueNs + 4_000_000_000n });
  const isFlagged = (m: MigrationRow) => {
    const w = windowOf(m);
    return flaggedAt.some((v) => v.vmId === m.vmId && (v.trueNs as bigint) >= w.from && (v.trueNs as bigint) <= w.to);
  };
  const chosen = [...committed.filter(isFlagged), ...committed.filter((m) => !isFlagged(m))].slice(0, max);
  const epoch = h.meta.epochNs;
  return chosen.map((m) => {
    const w = windowOf(m);
    const pts: PlotPoint[] = [];
    for (const s of h.samples) {
      if (s.vmId !== m.vmId || s.trueNs < w.from || s.trueNs > w.to) continue;
      const b = s.bounded;
      if (b.status === "unknown" && b.latestNs === 0n) continue;
      pts.push({
        tNs: Number(s.trueNs - m.resumeTrueNs),
        errorNs: Number(b.realtimeNs - (epoch + s.trueNs)),
        halfNs: Number((b.latestNs - b.earliestNs) / 2n),
        status: b.status,
        daemon: s.daemon,
      });
    }
    const step = Math.max(1, Math.ceil(pts.length / 120));
    return {
      run,
      seed,
      migrationId: m.migrationId,
      vmId: m.vmId,
      policy: m.policy,
      estimator: m.estimator,
      source: m.source,
      destination: m.destination,
      blackoutNs: Number(m.blackoutNs),
      tscErrorNs: Number(m.tscErrorNs),
      errorBoundNs: Number(m.errorBoundNs),
      hostFault: m.hostFault,
      flagged: isFlagged(m),
      points: pts.filter((_p, i) => i % step === 0),
    };
  });
}

/** Committed migrations in the history's `migration` events (sim and live alike), per path. */
export function migrationsByPath(h: ChaosHistory): Record<MigrationPath, number> {
  const out = zeroPaths();
  for (const e of h.events) if (e.kind === "migration" && e.outcome === "committed") out[e.path]++;
  return out;
}

export function zeroPaths(): Record<MigrationPath, number> {
  return Object.fromEntries(MIGRATION_PATHS.map((p) => [p, 0])) as Record<MigrationPath, number>;
}

/**
 * One checked run as a campaign folds it. `timeline`: whether a passing run gets its timeline
 * (report/timeline.ts) — built from the whole history, only worth it where a report will hold it;
 * a failing run always gets one.
 */
export function outcomeOf(
  run: number,
  seed: bigint,
  h: ChaosHistory,
  check: CheckResult,
  extra: Pick<RunOutcome, "events" | "simNs" | "faultSites" | "outcomes" | "active"> & Partial<Pick<RunOutcome, "migrationsBySwitchover">>,
  plotsMax: number,
  timeline = true,
): RunOutcome {
  const stamp = (v: Violation): Violation => ({ ...v, run, seed });
  const failing = check.violations.length > 0 || check.hostFaults.length > 0;
  return {
    run,
    seed,
    violations: check.violations.map(stamp),
    hostFaults: check.hostFaults.map(stamp),
    counts: check.counts,
    checked: check.checked,
    stats: migrationStats(check.migrations),
    migrationsByPath: migrationsByPath(h),
    migrationsBySwitchover: {},
    plots: plotsOf(h, check, run, seed, failing ? Math.max(plotsMax, 1) : plotsMax),
    ...(failing || (timeline && run < TIMELINES_KEPT_MAX) ? { timelineJson: JSON.stringify(runTimeline(h, check, run, seed)) } : {}),
    ...extra,
  };
}
