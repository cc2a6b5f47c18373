// A campaign: N runs, run i with seed S+i (so `--seed S+i --runs 1` replays run i alone), each
// checked as it ends; violations, coverage counts, error and blackout distributions and a few plots
// are gathered into one result the reports render. A sample of the seeds (FoundationDB's "unseed"
// check, default 5%) is run twice and the two histories' hashes compared: a mismatch means the
// simulation is not deterministic, which would make every other replay a lie.
//
// Sim runs can spread over worker threads (`jobs`); each run is independent, so the result is the
// same whatever the number of jobs. Live runs are sequential (real processes, real ports).
// A campaign can also be split over machines (`range`): a shard runs a contiguous block of the run
// indices (shard.ts), with the same seeds and the same determinism sample as the whole campaign,
// and its fold merges with the other shards' into exactly the whole campaign's.

import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import type { CheckCounts, Violation } from "./checker.js";
import { checkDeterminism } from "./check/invariants.js";
import { checkHistory } from "./checker.js";
import { canonicalText } from "./history.js";
import { hashUnit } from "../shared/time/random.js";
import { flushMicrotasks } from "../shared/time/sim.js";
import type { RestoreFn } from "../destination/migrate-in.js";
import { type MigrationPlot, type MigrationStat, outcomeOf, type RunOutcome, zeroPaths } from "./run-outcome.js";
import type { MigrationPath } from "../shared/history.js";
import { runSimulation } from "./sim/run.js";
import { DEFAULT_SCENARIO, type ScenarioOptions } from "./sim/scenario.js";
import { TIMELINES_KEPT_MAX } from "./report/timeline.js";

export interface CampaignOptions {
  mode: "sim" | "live";
  seed: bigint;
  runs: number;
  scenario: ScenarioOptions;
  /** Fraction of runs rerun to compare history hashes (sim only). */
  determinismCheck: number;
  /** Worker threads for sim runs (1: in this thread). */
  jobs: number;
  /** Runs whose first migrations are plotted even without violations. */
  plotRuns: number;
  /**
   * Passing runs that get a timeline (the HTML report's run browser, a shard's JSON for the merge),
   * at most TIMELINES_KEPT_MAX; a failing run always gets one. Default: as many as are kept.
   */
  timelineRuns?: number;
  /** Test seam (sim, jobs = 1 only): a broken restore to prove the checker notices. */
  restoreHook?: RestoreFn;
  /** Live mode: how to reach and drive real daemons (see live/run.ts). */
  live?: import("./live/run.js").LiveOptions;
  /** Called after each run (progress bars). */
  onRun?: (o: RunOutcome, done: number) => void;
  /** Sim: hand run 0's canonical history (JSON lines) here (`--history FILE`). */
  onHistory?: (canonical: string) => void;
  /** Run only this block of the run indices [first, end) (a shard: see shard.ts); default all. */
  range?: { first: number; end: number };
}

export function defaultCampaign(over: Partial<CampaignOptions> = {}): CampaignOptions {
  return { mode: "sim", seed: 1n, runs: 100, scenario: { ...DEFAULT_SCENARIO }, determinismCheck: 0.05, jobs: 1, plotRuns: 4, ...over };
}

export interface CampaignTotals extends CheckCounts {
  runs: number;
  events: number;
  simNs: bigint;
}

export interface CampaignResult {
  mode: "sim" | "live";
  seed: bigint;
  runs: number;
  totals: CampaignTotals;
  /** Listed violations (each run lists at most 20 per invariant; the counts below count them all). */
  violations: Violation[];
  hostFaults: Violation[];
  violationsByInvariant: Record<string, number>;
  hostFaultsByClass: Record<string, number>;
  /** Every violation counted (listed or not), and every host clock fault. */
  violationCount: number;
  hostFaultCount: number;
  failingRuns: { run: number; seed: bigint; invariants: string[] }[];
  stats: MigrationStat[];
  plots: MigrationPlot[];
  /** Per-run timelines (JSON text) by run: every failing run, and the first TIMELINES_KEPT_MAX others (report/timeline.ts). */
  timelines: Map<number, string>;
  /** One row per run, in run order: what the report's run browser lists. */
  runRows: RunRow[];
  faultSites: Record<string, number>;
  faultKinds: Record<string, number>;
  outcomes: Record<string, number>;
  /** Committed migrations the sources reported, per path (Handover call or unary calls). */
  migrationsByPath: Record<MigrationPath, number>;
  /** Migrations per switchover mode the runs drew: "mode:started", "mode:outcome". */
  migrationsBySwitchover: Record<string, number>;
  determinism: { checked: number; mismatches: { run: number; seed: bigint; hash: string; rerunHash: string }[] };
}

/** Run i's seed. */
export function runSeed(seed: bigint, i: number): bigint {
  return BigInt.asUintN(64, seed + BigInt(i));
}

/** Whether run i is one of the determinism-check sample (a pure function of seed and index; the first run always is). */
export function rerunPicked(seed: bigint, i: number, fraction: number): boolean {
  if (fraction <= 0) return false;
  if (fraction >= 1 || i === 0) return true;
  return hashUnit(seed ^ 0x5eed_c4ec_0000_0000n, BigInt(i)) < fraction;
}

export interface SimTaskOptions {
  seed: bigint;
  scenario: ScenarioOptions;
  determinismCheck: number;
  plotRuns: number;
  /** Passing runs below this index get a timeline (CampaignOptions.timelineRuns). */
  timelineRuns: number;
}

function simTaskOf(o: CampaignOptions): SimTaskOptions {
  return { seed: o.seed, scenario: o.scenario, determinismCheck: o.determinismCheck, plotRuns: o.plotRuns, timelineRuns: o.timelineRuns ?? TIMELINES_KEPT_MAX };
}

/** One sim run, checked (and rerun when picked for the determinism check). */
export async function runSimTask(i: number, o: SimTaskOptions, restoreHook?: RestoreFn, onHistory?: (canonical: string) => void): Promise<RunOutcome> {
  const seed = runSeed(o.seed, i);
  const opts = { ...o.scenario, ...(restoreHook ? { restoreHook } : {}) };
  const r = await runSimulation(seed, opts);
  if (onHistory) onHistory(canonicalText(r.history));
  const check = checkHistory(r.history);
  const out = outcomeOf(i, seed, r.history, check, {
    events: r.stats.events,
    simNs: r.stats.simNs,
    faultSites: r.stats.faultSites,
    outcomes: r.stats.outcomes,
    migrationsBySwitchover: r.stats.switchovers,
    active: r.stats.active,
  }, i < o.plotRuns ? 2 : 0, i < o.timelineRuns);
  if (rerunPicked(o.seed, i, o.determinismCheck)) {
    out.hash = r.hash;
    const again = await runSimulation(seed, opts);
    out.rerunHash = again.hash;
    const d = checkDeterminism({ seed, hash: out.hash, rerunHash: again.hash });
    if (d) out.violations.push({ ...d, run: i, seed });
  }
  return out;
}

export interface RunRow {
  run: number;
  seed: bigint;
  migrationsStarted: number;
  migrationsCommitted: number;
  faults: number;
  /** Fault kinds active in the run. */
  active: string[];
  violations: number;
  hostFaults: number;
  invariants: string[];
}

/** A campaign's result before any run is folded in. */
export function emptyResult(whole: { mode: "sim" | "live"; seed: bigint; runs: number }): CampaignResult {
  return {
    mode: whole.mode,
    seed: whole.seed,
    runs: whole.runs,
    totals: { runs: 0, events: 0, simNs: 0n, samples: 0, vcpuReadings: 0, migrations: 0, migrationsCommitted: 0, migrationsStarted: 0, faults: 0, vms: 0, handled: 0, ratePairs: 0, restores: 0, livenessChecks: 0 },
    violations: [],
    hostFaults: [],
    violationsByInvariant: {},
    hostFaultsByClass: {},
    violationCount: 0,
    hostFaultCount: 0,
    failingRuns: [],
    stats: [],
    plots: [],
    timelines: new Map(),
    runRows: [],
    faultSites: {},
    faultKinds: {},
    outcomes: {},
    migrationsByPath: zeroPaths(),
    migrationsBySwitchover: {},
    determinism: { checked: 0, mismatches: [] },
  };
}

class Aggregate {
  readonly result: CampaignResult;
  private readonly outcomes: (RunOutcome | undefined)[] = [];
  constructor(o: CampaignOptions) {
    this.result = emptyResult(o);
  }
  add(o: RunOutcome): void {
    this.outcomes[o.run] = o;
  }
  /**
   * Folds every run in run order (so the result does not depend on which job finished first). The
   * plots are trimmed to the candidates `finalizeResult` may pick, so folds of consecutive blocks
   * of runs concatenate into the fold of the whole (shard.ts merges them).
   */
  fold(): CampaignResult {
    const r = this.result;
    const t = r.totals;
    const bump = (m: Record<string, number>, k: string, n = 1) => (m[k] = (m[k] ?? 0) + n);
    for (const o of this.outcomes) {
      if (!o) continue;
      t.runs++;
      t.events += o.events;
      t.simNs += o.simNs;
      for (const k of Object.keys(o.checked) as (keyof CheckCounts)[]) t[k] += o.checked[k];
      r.violations.push(...o.violations);
      r.hostFaults.push(...o.hostFaults);
      for (const [k, n] of Object.entries(o.counts)) bump(k.includes("/") ? r.hostFaultsByClass : r.violationsByInvariant, k, n);
      for (const v of o.violations) if (v.invariant === "D") bump(r.violationsByInvariant, "D");
      if (o.violations.length > 0) r.failingRuns.push({ run: o.run, seed: o.seed, invariants: [...new Set(o.violations.map((v) => v.invariant))].sort() });
      r.stats.push(...o.stats);
      r.plots.push(...o.plots);
      const countOf = (host: boolean) => Object.entries(o.counts).filter(([k]) => k.includes("/") === host).reduce((a, [, n]) => a + n, 0);
      r.runRows.push({
        run: o.run,
        seed: o.seed,
        migrationsStarted: o.checked.migrationsStarted,
        migrationsCommitted: o.checked.migrationsCommitted,
        faults: o.checked.faults,
        active: o.active,
        violations: countOf(false) + o.violations.filter((v) => v.invariant === "D").length,
        hostFaults: countOf(true),
        invariants: [...new Set(o.violations.map((v) => v.invariant))].sort(),
      });
      if (o.timelineJson !== undefined) r.timelines.set(o.run, o.timelineJson);
      for (const [k, n] of Object.entries(o.faultSites)) bump(r.faultSites, k, n);
      for (const k of o.active) bump(r.faultKinds, k);
      for (const [k, n] of Object.entries(o.outcomes)) bump(r.outcomes, k, n);
      for (const [k, n] of Object.entries(o.migrationsByPath)) bump(r.migrationsByPath, k, n);
      for (const [k, n] of Object.entries(o.migrationsBySwitchover)) bump(r.migrationsBySwitchover, k, n);
      if (o.rerunHash !== undefined) {
        r.determinism.checked++;
        if (o.rerunHash !== o.hash) r.determinism.mismatches.push({ run: o.run, seed: o.seed, hash: o.hash ?? "", rerunHash: o.rerunHash });
      }
    }
    r.plots = plotCandidates(r.plots);
    return { ...r, ...countsOf(r) };
  }
}

const PLOTS_FLAGGED_MAX = 8;
const PLOTS_MAX = 12;

/** The plots `finalizeResult` may pick from a list, in order: the first flagged and the first plain ones. */
export function plotCandidates(plots: readonly MigrationPlot[]): MigrationPlot[] {
  let flagged = 0;
  let plain = 0;
  return plots.filter((p) => (p.flagged ? ++flagged <= PLOTS_FLAGGED_MAX : ++plain <= PLOTS_MAX));
}

function countsOf(r: CampaignResult): Pick<CampaignResult, "violationCount" | "hostFaultCount"> {
  return {
    violationCount: Object.values(r.violationsByInvariant).reduce((a, n) => a + n, 0),
    hostFaultCount: Object.values(r.hostFaultsByClass).reduce((a, n) => a + n, 0),
  };
}

/** The counts derived from the per-invariant maps, and the plots shown: flagged ones first, then the first plain ones; a dozen at most. */
export function finalizeResult(r: CampaignResult): CampaignResult {
  return {
    ...r,
    ...countsOf(r),
    plots: [...r.plots.filter((p) => p.flagged).slice(0, PLOTS_FLAGGED_MAX), ...r.plots.filter((p) => !p.flagged)].slice(0, PLOTS_MAX),
  };
}

function workerUrl(): URL {
  return new URL(import.meta.url.endsWith(".ts") ? "./worker.ts" : "./worker.js", import.meta.url);
}

/**
 * A worker's young generation (V8: two semi-spaces and a third for large objects): 64 MiB
 * semi-spaces instead of 16. A run allocates ~5 MB, nearly all of it dead by the end of its event,
 * so fewer scavenges promote less (measured: ~8% less CPU per run).
 */
const WORKER_YOUNG_GENERATION_MB = 192;

/**
 * Runs sent to a worker ahead of its results, so it never waits for this thread to hand it the next
 * one: this thread feeds it only between its own runs, and one run can take 100 ms (a flood).
 */
const WORKER_RUNS_AHEAD = 4;

/**
 * `jobs` − 1 worker threads and this thread: a worker starts cold (its first runs cost about twice
 * a warm run while the JIT catches up), this thread has loaded and often warmed the code already.
 * Each job takes the next run index when it is free.
 */
async function runPool(o: CampaignOptions, agg: Aggregate): Promise<void> {
  const task = simTaskOf(o);
  const { first, end } = rangeOf(o);
  const jobs = Math.max(1, Math.min(o.jobs, end - first));
  let next = first;
  let done = 0;
  const record = (m: RunOutcome) => {
    agg.add(m);
    o.onRun?.(m, ++done);
  };
  const workers = Array.from({ length: jobs - 1 }, () => runWorker(task, () => (next < end ? next++ : null), record));
  const here = async () => {
    for (let i = next; i < end; i = next) {
      next++;
      record(await runSimTask(i, task));
      await flushMicrotasks(); // one event-loop turn: the workers' results come in and they get their next runs
    }
  };
  await Promise.all([...workers, here()]);
}

/** One worker thread fed run indices from `take` until it yields null; resolves when the worker has exited. */
function runWorker(task: SimTaskOptions, take: () => number | null, record: (m: RunOutcome) => void): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const w = new Worker(workerUrl(), { workerData: task, resourceLimits: { maxYoungGenerationSizeMb: WORKER_YOUNG_GENERATION_MB } });
    let outstanding = 0;
    const feed = () => {
      const i = take();
      if (i !== null) {
        outstanding++;
        w.postMessage(i);
      } else if (outstanding === 0) void w.terminate();
    };
    w.on("message", (m: RunOutcome) => {
      outstanding--;
      record(m);
      feed();
    });
    w.on("error", reject);
    w.on("exit", () => resolve());
    for (let k = 0; k < WORKER_RUNS_AHEAD; k++) feed();
  });
}

function rangeOf(o: CampaignOptions): { first: number; end: number } {
  return o.range ?? { first: 0, end: o.runs };
}

/** Runs the whole campaign (or its `range`). */
export async function runCampaign(o: CampaignOptions): Promise<CampaignResult> {
  return finalizeResult(await runCampaignFold(o));
}

/** Runs the campaign (or its `range`) and returns its fold, before `finalizeResult`: what a shard hands to the merge. */
export async function runCampaignFold(o: CampaignOptions): Promise<CampaignResult> {
  const agg = new Aggregate(o);
  const { first, end } = rangeOf(o);
  if (o.mode === "live") {
    const { runLive } = await import("./live/run.js");
    for (let i = first; i < end && !o.live?.signal?.aborted; i++) {
      const out = await runLive(i, runSeed(o.seed, i), o.scenario, o.live ?? {});
      agg.add(out);
      o.onRun?.(out, i - first + 1);
    }
    return agg.fold();
  }
  if (o.jobs > 1 && !o.restoreHook && !o.onHistory && end - first > 1) {
    await runPool(o, agg);
    return agg.fold();
  }
  const task = simTaskOf(o);
  for (let i = first; i < end; i++) {
    const out = await runSimTask(i, task, o.restoreHook, i === 0 ? o.onHistory : undefined);
    agg.add(out);
    o.onRun?.(out, i - first + 1);
  }
  return agg.fold();
}

export function defaultJobs(): number {
  return Math.max(1, Math.min(8, availableParallelism()));
}
