// Campaigns beyond one machine. `tscmig chaos --shard i/N` runs shard i (0-based, as
// a Kubernetes Indexed Job's completion index) of N: the contiguous block of run indices
// [⌊i·R/N⌋, ⌊(i+1)·R/N⌋) of an R-run campaign, each run j with the whole campaign's seed S+j and the
// whole campaign's determinism sample, so every run is exactly the run an unsharded campaign makes.
// Its JSON report carries, beside its own figures, a `shard` section: which block it ran, the
// campaign it belongs to, and its fold (campaign.ts) losslessly. `tscmig chaos merge` checks that
// the shards are one campaign's, complete and disjoint, concatenates their folds in run order (the
// blocks are consecutive, so every list comes out in the order one process would have built it and
// every count map with the same keys in the same order) and hands the result to the same report
// writers: the JSON, JUnit and HTML an unsharded run writes, save wall-clock time (`timing`).

import { arrayOf, bool, BOUNDARY, custom, encodeJson, float, i64, int, type Json, nullable, obj, oneOf, optional, recordOf, str, u64 } from "../shared/codec.js";
import { invalid, isTscmigError } from "../shared/errors.js";
import { MIGRATION_PATHS, type MigrationPath } from "../shared/history.js";
import { type CampaignResult, type CampaignTotals, emptyResult, finalizeResult, plotCandidates, type RunRow } from "./campaign.js";
import { CHECKS, type Value, type Violation } from "./checker.js";
import type { MigrationPlot, MigrationStat, PlotPoint } from "./run-outcome.js";

/** Largest N: shards are Kubernetes Job completions (its own limit is 100,000 indexes). */
export const SHARDS_MAX = 100_000;

/** Version of the `shard` section; a merge refuses any other (2: the fold's 64-bit values are decimal strings). */
export const SHARD_FORMAT = 2;

export interface Shard {
  index: number;
  count: number;
}

/** `i/N`, 0 ≤ i < N ≤ min(SHARDS_MAX, runs). */
export function parseShard(raw: string, runs: number): Shard {
  const m = /^(\d{1,6})\/(\d{1,6})$/.exec(raw);
  if (!m) throw invalid("shard", "i/N: this process's shard i (0-based) of N, e.g. 0/4");
  const index = Number(m[1]);
  const count = Number(m[2]);
  if (count < 1 || count > SHARDS_MAX) throw invalid("shard", `N in 1..${SHARDS_MAX}`);
  if (index >= count) throw invalid("shard", `i in 0..${count - 1} (0-based, as a Job's completion index)`);
  if (count > runs) throw invalid("shard", `N (${count}) exceeds --runs (${runs}): a shard would have no runs`);
  return { index, count };
}

/** The run indices shard `s` runs: [first, end). Consecutive shards' blocks are consecutive; sizes differ by at most one. */
export function shardRange(s: Shard, runs: number): { first: number; end: number } {
  return { first: Math.floor((s.index * runs) / s.count), end: Math.floor(((s.index + 1) * runs) / s.count) };
}

/** What every shard of one campaign must agree on, and what the merged reports' context is built from. */
export interface CampaignIdentity {
  mode: "sim" | "live";
  seed: string;
  runs: number;
  /** The report options an unsharded run shows (no `shard` key), in its key order. */
  options: Record<string, string | number | boolean>;
  /** The scenario flags replay commands are built from (cli.ts replayCommand). */
  flags: Record<string, string>;
  recoveryBoundNs: string | null;
}

export interface ShardSection {
  format: number;
  index: number;
  count: number;
  firstRun: number;
  endRun: number;
  campaign: CampaignIdentity;
  /** Wall clock of this shard alone: the only figures a merge cannot reproduce. */
  timing: { elapsedNs: string; jobs: number };
  /** The shard's fold (campaign.ts runCampaignFold), lossless: see encodeFold. */
  fold: unknown;
}

// ---- lossless JSON of a fold ----

const count = int(0);
const counts = recordOf(count);
const FAULT_CLASSES = ["lying-clock", "stepped-clock"] as const;
const faultClassCodec = oneOf(FAULT_CLASSES);

/** A violation's values: text, numbers (as `float` writes them) and flags. */
const valueCodec = custom<Value>(
  "value",
  (v) => (typeof v === "number" ? encodeJson(float, v, "decimal") : v),
  (j, at) => (typeof j === "string" || typeof j === "boolean" ? j : float.decode(j, "decimal", at)),
);

const violationCodec = obj<Violation>({
  invariant: oneOf(CHECKS),
  message: str,
  vmId: optional(str),
  vcpu: optional(count),
  daemon: optional(str),
  trueNs: optional(i64),
  values: recordOf(valueCodec),
  faultClass: optional(faultClassCodec),
  run: optional(count),
  seed: optional(u64),
});

type StatRow = [policy: string, estimator: string, capped: 0 | 1, absErrorNs: number, errorOverBound: number, blackoutNs: number, hostFault: MigrationStat["hostFault"]];
const STAT_ROW = "a row of 7: policy, estimator, capped, absErrorNs, errorOverBound, blackoutNs, hostFault";

/** Stats ride as rows, not objects: a campaign has one per committed migration. */
const statCodec = custom<MigrationStat>(
  "statRow",
  (s) => {
    const num = (v: number) => encodeJson(float, v, "decimal");
    return [s.policy, s.estimator, s.capped ? 1 : 0, num(s.absErrorNs), num(s.errorOverBound), num(s.blackoutNs), s.hostFault] satisfies Json[];
  },
  (j, at) => {
    if (!Array.isArray(j) || j.length !== 7) throw invalid(at, `expected ${STAT_ROW}`);
    const r = j as unknown[];
    const num = (i: number) => float.decode(r[i], "decimal", `${at}[${i}]`);
    return {
      policy: str.decode(r[0], "decimal", `${at}[0]`),
      estimator: str.decode(r[1], "decimal", `${at}[1]`),
      capped: oneOf([0, 1] as const).decode(r[2], "decimal", `${at}[2]`) === 1,
      absErrorNs: num(3),
      errorOverBound: num(4),
      blackoutNs: num(5),
      hostFault: nullable(faultClassCodec).decode(r[6], "decimal", `${at}[6]`),
    };
  },
);
export type { StatRow };

const plotCodec = obj<MigrationPlot>({
  run: count,
  seed: u64,
  migrationId: str,
  vmId: str,
  policy: str,
  estimator: str,
  source: str,
  destination: str,
  blackoutNs: float,
  tscErrorNs: float,
  errorBoundNs: float,
  hostFault: nullable(faultClassCodec),
  flagged: bool,
  points: arrayOf(obj<PlotPoint>({ tNs: float, errorNs: float, halfNs: float, status: str, daemon: str })),
});

/** A Map has no JSON: [run, timeline JSON text] pairs, in run order. */
const timelinesCodec = custom<Map<number, string>>(
  "timelines",
  (m) => [...m].map(([run, text]) => [run, text]),
  (j, at) => {
    if (!Array.isArray(j)) throw invalid(at, "expected an array");
    return new Map(
      j.map((x, i) => {
        if (!Array.isArray(x) || x.length !== 2) throw invalid(`${at}[${i}]`, "expected a [run, timeline JSON] pair");
        return [count.decode(x[0], "decimal", `${at}[${i}][0]`), str.decode(x[1], "decimal", `${at}[${i}][1]`)];
      }),
    );
  },
);

const totalsCodec = obj<CampaignTotals>({
  runs: count,
  events: count,
  simNs: u64,
  samples: count,
  vcpuReadings: count,
  migrations: count,
  migrationsCommitted: count,
  migrationsStarted: count,
  faults: count,
  vms: count,
  handled: count,
  ratePairs: count,
  restores: count,
  livenessChecks: count,
});

const seedRun = { run: count, seed: u64 };

/** A campaign's fold as a shard report carries it: the report's one 64-bit form (decimal strings). */
export const foldCodec = obj<CampaignResult>({
  mode: oneOf(["sim", "live"] as const),
  seed: u64,
  runs: count,
  totals: totalsCodec,
  violations: arrayOf(violationCodec),
  hostFaults: arrayOf(violationCodec),
  violationsByInvariant: counts,
  hostFaultsByClass: counts,
  violationCount: count,
  hostFaultCount: count,
  failingRuns: arrayOf(obj<CampaignResult["failingRuns"][number]>({ ...seedRun, invariants: arrayOf(str) })),
  stats: arrayOf(statCodec),
  plots: arrayOf(plotCodec),
  timelines: timelinesCodec,
  runRows: arrayOf(
    obj<RunRow>({ ...seedRun, migrationsStarted: count, migrationsCommitted: count, faults: count, active: arrayOf(str), violations: count, hostFaults: count, invariants: arrayOf(str) }),
  ),
  faultSites: counts,
  faultKinds: counts,
  outcomes: counts,
  migrationsByPath: obj<Record<MigrationPath, number>>({ handover: count, unary: count }),
  migrationsBySwitchover: counts,
  determinism: obj<CampaignResult["determinism"]>({
    checked: count,
    mismatches: arrayOf(obj<CampaignResult["determinism"]["mismatches"][number]>({ ...seedRun, hash: str, rerunHash: str })),
  }),
});

const FOLD_STYLE = BOUNDARY.report;

export function encodeFold(r: CampaignResult): unknown {
  return encodeJson(foldCodec, r, FOLD_STYLE);
}

/** A fold read back from a shard report, every field checked (`where` names the file in errors). */
export function decodeFold(raw: unknown, where: string): CampaignResult {
  try {
    return foldCodec.decode(raw, FOLD_STYLE, "shard.fold");
  } catch (e) {
    if (isTscmigError(e) && e.field !== undefined) throw invalid(e.field, `${where}: ${e.message.slice(e.field.length + 2)}`);
    throw e;
  }
}

/** Reads one field of untrusted data; its errors name the file and the field's path. */
class Checker {
  constructor(
    private readonly where: string,
    private readonly path: string,
  ) {}
  at(k: string): Checker {
    return new Checker(this.where, /^\d+$/.test(k) ? `${this.path}[${k}]` : `${this.path}.${k}`);
  }
  fail(want: string) {
    return invalid(this.path, `${this.where}: expected ${want}`);
  }
  object(v: unknown): Record<string, unknown> {
    if (v === null || typeof v !== "object" || Array.isArray(v)) throw this.fail("an object");
    return v as Record<string, unknown>;
  }
  string(v: unknown): string {
    if (typeof v !== "string") throw this.fail("a string");
    return v;
  }
  count(v: unknown): number {
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) throw this.fail("a count (a non-negative integer)");
    return v;
  }
  oneOf<T extends string | number>(v: unknown, all: readonly T[]): T {
    if (!(all as readonly unknown[]).includes(v)) throw this.fail(`one of ${all.map((x) => JSON.stringify(x)).join(", ")}`);
    return v as T;
  }

}

// ---- merge ----

/** The keys of CampaignResult, in the order a campaign builds them: a test fails when mergeFolds has not been taught a new one. */
export const MERGED_KEYS = Object.keys(foldCodec.fields) as (keyof CampaignResult)[];

/** Folds of consecutive blocks of one campaign's runs, in run order, into the result of the whole campaign. */
export function mergeFolds(folds: readonly CampaignResult[], whole: { mode: "sim" | "live"; seed: bigint; runs: number }): CampaignResult {
  const m = new FoldMerger(whole);
  for (const f of folds) m.add(f);
  return m.result();
}

/** mergeFolds one fold at a time, so a merge of many shards holds one shard's report at once, not all. */
export class FoldMerger {
  private readonly r: CampaignResult;
  private first = true;
  constructor(whole: { mode: "sim" | "live"; seed: bigint; runs: number }) {
    this.r = emptyResult(whole);
  }
  /** The next block's fold, in run order. */
  add(f: CampaignResult): void {
    const r = this.r;
    if (this.first) r.totals = zeroTotals(f.totals);
    this.first = false;
    addTotals(r.totals, f.totals);
    // Lists concatenate and maps sum in block order, so each key lands where one process would first have put it.
    for (const k of ["violations", "hostFaults", "failingRuns", "stats", "plots", "runRows"] as const) append(r[k] as unknown[], f[k] as unknown[]);
    for (const [run, text] of f.timelines) r.timelines.set(run, text);
    for (const k of ["violationsByInvariant", "hostFaultsByClass", "faultSites", "faultKinds", "outcomes", "migrationsBySwitchover"] as const) {
      // Own keys only: a report's key may be any string, "constructor" or "toString" included.
      for (const [key, n] of Object.entries(f[k])) r[k][key] = (Object.hasOwn(r[k], key) ? (r[k][key] as number) : 0) + n;
    }
    for (const p of MIGRATION_PATHS) r.migrationsByPath[p] += f.migrationsByPath[p];
    r.determinism.checked += f.determinism.checked;
    append(r.determinism.mismatches, f.determinism.mismatches);
    r.plots = plotCandidates(r.plots);
  }
  result(): CampaignResult {
    return finalizeResult(this.r);
  }
}

type Totals = CampaignResult["totals"];

/** Zeros with the keys of `like` in its order (every total a fold has is summed, whatever the checker counts). */
function zeroTotals(like: Totals): Totals {
  return Object.fromEntries(Object.entries(like).map(([k, v]) => [k, typeof v === "bigint" ? 0n : 0])) as unknown as Totals;
}

function addTotals(into: Totals, from: Totals): void {
  const t = into as unknown as Record<string, number | bigint>;
  for (const [k, v] of Object.entries(from) as [string, number | bigint][]) t[k] = typeof v === "bigint" ? ((t[k] as bigint | undefined) ?? 0n) + v : ((t[k] as number | undefined) ?? 0) + v;
}

/** push(...from) without spreading a long list onto the stack. */
function append<T>(into: T[], from: readonly T[]): void {
  for (const x of from) into.push(x);
}

// ---- reading shard reports ----

/** A shard report's `shard` section, every field checked; the fold is decoded later (it is the bulk). */
export function shardSectionOf(report: unknown, where: string): ShardSection {
  const root = new Checker(where, "report").object(report);
  if (root.shard === undefined) throw invalid("shard", `${where}: not a shard report (write one with tscmig chaos --shard i/N --json FILE)`);
  const c = new Checker(where, "shard");
  const s = c.object(root.shard);
  if (s.format !== SHARD_FORMAT) throw c.at("format").fail(`format ${SHARD_FORMAT} (this tscmig's)`);
  const campaign = campaignOf(s.campaign, c.at("campaign"));
  const count = c.at("count").count(s.count);
  const index = c.at("index").count(s.index);
  if (count < 1 || count > SHARDS_MAX || index >= count) throw c.at("index").fail(`0 ≤ index < count ≤ ${SHARDS_MAX}`);
  const range = shardRange({ index, count }, campaign.runs);
  if (s.firstRun !== range.first || s.endRun !== range.end) throw c.at("firstRun").fail(`runs [${range.first}, ${range.end}) for shard ${index}/${count} of ${campaign.runs} runs`);
  const t = c.at("timing").object(s.timing);
  const elapsedNs = c.at("timing.elapsedNs").string(t.elapsedNs);
  if (!/^\d{1,20}$/.test(elapsedNs)) throw c.at("timing.elapsedNs").fail("a duration in ns (decimal string)");
  if (s.fold === undefined) throw c.at("fold").fail("the shard's fold");
  return { format: SHARD_FORMAT, index, count, firstRun: range.first, endRun: range.end, campaign, timing: { elapsedNs, jobs: c.at("timing.jobs").count(t.jobs) }, fold: s.fold };
}

function campaignOf(x: unknown, c: Checker): CampaignIdentity {
  const o = c.object(x);
  const seed = c.at("seed").string(o.seed);
  if (!/^\d{1,20}$/.test(seed) || BigInt(seed) > 0xffff_ffff_ffff_ffffn) throw c.at("seed").fail("a u64 (decimal string)");
  const options = c.at("options").object(o.options);
  for (const [k, v] of Object.entries(options)) if (!["string", "number", "boolean"].includes(typeof v)) throw c.at(`options.${k}`).fail("a string, number or boolean");
  const flags = c.at("flags").object(o.flags);
  for (const [k, v] of Object.entries(flags)) c.at(`flags.${k}`).string(v);
  const runs = c.at("runs").count(o.runs);
  if (runs < 1) throw c.at("runs").fail("at least 1");
  return {
    mode: c.at("mode").oneOf(o.mode, ["sim", "live"] as const),
    seed,
    runs,
    options: options as CampaignIdentity["options"],
    flags: flags as Record<string, string>,
    recoveryBoundNs: o.recoveryBoundNs === null ? null : c.at("recoveryBoundNs").string(o.recoveryBoundNs),
  };
}

/**
 * The shards, in index order, once they are checked to be one campaign's (same seed, runs, flags
 * and options), each index once, none missing.
 */
export function orderShards(shards: readonly { where: string; section: ShardSection }[]): { where: string; section: ShardSection }[] {
  const first = shards[0];
  if (!first) throw invalid("reports", "give at least one shard report");
  const identity = JSON.stringify(first.section.campaign);
  const count = first.section.count;
  const byIndex = new Map<number, { where: string; section: ShardSection }>();
  for (const s of shards) {
    if (JSON.stringify(s.section.campaign) !== identity) throw invalid("shard.campaign", `${s.where}: a different campaign than ${first.where} (seed, runs, flags or options differ)`);
    if (s.section.count !== count) throw invalid("shard.count", `${s.where}: shard of ${s.section.count}, ${first.where} of ${count}`);
    const dup = byIndex.get(s.section.index);
    if (dup) throw invalid("shard.index", `${s.where}: shard ${s.section.index}/${count} again (also ${dup.where})`);
    byIndex.set(s.section.index, s);
  }
  const missing = Array.from({ length: count }, (_, i) => i).filter((i) => !byIndex.has(i));
  if (missing.length > 0) throw invalid("reports", `missing shard(s) ${missing.slice(0, 10).join(", ")}${missing.length > 10 ? ` and ${missing.length - 10} more` : ""} of ${count}`);
  return Array.from({ length: count }, (_, i) => byIndex.get(i) as { where: string; section: ShardSection });
}

/** A shard's fold, checked to hold exactly its block of runs. */
export function foldOf(where: string, section: ShardSection): CampaignResult {
  const f = decodeFold(section.fold, where);
  const want = section.endRun - section.firstRun;
  if (f.totals.runs !== want) throw invalid("shard.fold.totals.runs", `${where}: ${f.totals.runs} runs, but shard ${section.index}/${section.count} has ${want}`);
  if (f.seed.toString() !== section.campaign.seed || f.mode !== section.campaign.mode) throw invalid("shard.fold.seed", `${where}: the fold is not of this campaign`);
  const inBlock = (run: number | undefined) => run === undefined || (run >= section.firstRun && run < section.endRun);
  const lists: { run?: number }[][] = [f.failingRuns, f.plots, f.violations, f.hostFaults, f.determinism.mismatches, f.runRows, [...f.timelines.keys()].map((run) => ({ run }))];
  for (const list of lists) {
    const stray = list.find((x) => !inBlock(x.run));
    if (stray) throw invalid("shard.fold", `${where}: run ${stray.run} is outside the shard's runs [${section.firstRun}, ${section.endRun})`);
  }
  return f;
}
