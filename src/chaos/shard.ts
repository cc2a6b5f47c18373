// Campaigns beyond one machine (issue 14 §3). `tscmig chaos --shard i/N` runs shard i (0-based, as
// a Kubernetes Indexed Job's completion index) of N: the contiguous block of run indices
// [⌊i·R/N⌋, ⌊(i+1)·R/N⌋) of an R-run campaign, each run j with the whole campaign's seed S+j and the
// whole campaign's determinism sample, so every run is exactly the run an unsharded campaign makes.
// Its JSON report carries, beside its own figures, a `shard` section: which block it ran, the
// campaign it belongs to, and its fold (campaign.ts) losslessly. `tscmig chaos merge` checks that
// the shards are one campaign's, complete and disjoint, concatenates their folds in run order (the
// blocks are consecutive, so every list comes out in the order one process would have built it and
// every count map with the same keys in the same order) and hands the result to the same report
// writers: the JSON, JUnit and HTML an unsharded run writes, save wall-clock time (`timing`).

import { invalid } from "../shared/errors.js";
import { type CampaignResult, finalizeResult, plotCandidates } from "./campaign.js";
import { type MigrationStat, zeroPaths } from "./run-outcome.js";
import { MIGRATION_PATHS } from "../shared/history.js";

/** Largest N: shards are Kubernetes Job completions (its own limit is 100,000 indexes). */
export const SHARDS_MAX = 100_000;

/** Version of the `shard` section; a merge refuses any other. */
export const SHARD_FORMAT = 1;

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

/** bigint and non-finite numbers survive (JSON has neither); stats ride as rows, not objects. */
export function encodeFold(r: CampaignResult): unknown {
  // The timelines are JSON text by run: a list of [run, text] pairs (a Map has no JSON).
  const packed = { ...r, stats: r.stats.map(packStat), timelines: [...r.timelines] };
  return JSON.parse(JSON.stringify(packed, (_k, v: unknown) => (typeof v === "bigint" ? { $b: v.toString() } : typeof v === "number" && !Number.isFinite(v) ? { $num: String(v) } : v)));
}

type StatRow = [policy: string, estimator: string, capped: 0 | 1, absErrorNs: number, errorOverBound: number, blackoutNs: number, hostFault: MigrationStat["hostFault"]];

function packStat(s: MigrationStat): StatRow {
  return [s.policy, s.estimator, s.capped ? 1 : 0, s.absErrorNs, s.errorOverBound, s.blackoutNs, s.hostFault];
}

/** Tagged values back to bigint and non-finite numbers. */
function untag(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(untag);
  if (v === null || typeof v !== "object") return v;
  const o = v as Record<string, unknown>;
  const keys = Object.keys(o);
  if (keys.length === 1 && typeof o.$b === "string" && /^-?\d{1,40}$/.test(o.$b)) return BigInt(o.$b);
  if (keys.length === 1 && (o.$num === "Infinity" || o.$num === "-Infinity" || o.$num === "NaN")) return Number(o.$num);
  const out: Record<string, unknown> = {};
  for (const k of keys) out[k] = untag(o[k]);
  return out;
}

/**
 * A fold read back from a shard report, every field checked (`where` names the file in errors).
 * Objects keep the key order they were written with: a writer that serialises one whole (a
 * violation, a plot) writes the same text as from the unsharded run.
 */
export function decodeFold(raw: unknown, where: string): CampaignResult {
  const v = new Checker(where, "shard.fold");
  const o = v.object(untag(raw));
  v.at("mode").oneOf(o.mode, ["sim", "live"] as const);
  v.at("seed").bigint(o.seed);
  v.at("runs").count(o.runs);
  totalsOf(o.totals, v.at("totals"));
  for (const k of ["violations", "hostFaults"]) v.at(k).array(o[k], violationOf);
  for (const k of ["violationsByInvariant", "hostFaultsByClass", "faultSites", "faultKinds", "outcomes"]) v.at(k).counts(o[k]);
  for (const k of ["violationCount", "hostFaultCount"]) v.at(k).count(o[k]);
  v.at("failingRuns").array(o.failingRuns, (x, c) => {
    const f = c.object(x);
    c.at("run").count(f.run);
    c.at("seed").bigint(f.seed);
    c.at("invariants").array(f.invariants, (s, cc) => cc.string(s));
  });
  v.at("plots").array(o.plots, plotOf);
  v.at("runRows").array(o.runRows, (x, c) => {
    const row = c.object(x);
    for (const k of ["run", "migrationsStarted", "migrationsCommitted", "faults", "violations", "hostFaults"]) c.at(k).count(row[k]);
    c.at("seed").bigint(row.seed);
    for (const k of ["active", "invariants"]) c.at(k).array(row[k], (s2, cc) => cc.string(s2));
  });
  const timelines = new Map<number, string>();
  v.at("timelines").array(o.timelines, (x, c) => {
    if (!Array.isArray(x) || x.length !== 2) throw c.fail("a [run, timeline JSON] pair");
    const pair = x as unknown[];
    c.at("0").count(pair[0]);
    c.at("1").string(pair[1]);
    timelines.set(pair[0] as number, pair[1] as string);
  });
  determinismOf(o.determinism, v.at("determinism"));
  pathsOf(o.migrationsByPath, v.at("migrationsByPath"));
  const unknown = Object.keys(o).filter((k) => !(MERGED_KEYS as readonly string[]).includes(k));
  if (unknown.length > 0) throw v.at(unknown[0] as string).fail("no such field (a report from a newer tscmig?)");
  return { ...(o as unknown as CampaignResult), stats: v.at("stats").array(o.stats, statOf), timelines };
}

/** Every total is a count, but simNs (a bigint). */
function totalsOf(x: unknown, c: Checker): void {
  const t = c.object(x);
  if (t.runs === undefined) throw c.at("runs").fail("a count");
  for (const [k, n] of Object.entries(t)) {
    if (k === "simNs") c.at(k).bigint(n);
    else c.at(k).count(n);
  }
}

/** A count for each path, and no other key. */
function pathsOf(x: unknown, c: Checker): void {
  const o = c.counts(x);
  for (const p of MIGRATION_PATHS) if (o[p] === undefined) throw c.at(p).fail("a count");
  for (const k of Object.keys(o)) c.at(k).oneOf(k, MIGRATION_PATHS);
}

function violationOf(x: unknown, c: Checker): void {
  const o = c.object(x);
  c.at("invariant").string(o.invariant);
  c.at("message").string(o.message);
  const values = c.at("values").object(o.values);
  for (const [k, val] of Object.entries(values)) if (!["string", "number", "boolean"].includes(typeof val)) throw c.at(`values.${k}`).fail("a string, number or boolean");
  const opt = (k: string, check: (v: unknown, cc: Checker) => unknown) => o[k] !== undefined && check(o[k], c.at(k));
  for (const k of ["vmId", "daemon"]) opt(k, (v, cc) => cc.string(v));
  for (const k of ["vcpu", "run"]) opt(k, (v, cc) => cc.count(v));
  for (const k of ["trueNs", "seed"]) opt(k, (v, cc) => cc.bigint(v));
  opt("faultClass", (v, cc) => cc.oneOf(v, FAULT_CLASSES));
}

const FAULT_CLASSES = ["lying-clock", "stepped-clock"] as const;

function statOf(x: unknown, c: Checker): MigrationStat {
  const r = c.array(x, (v) => v);
  if (r.length !== 7) throw c.fail("a row of 7: policy, estimator, capped, absErrorNs, errorOverBound, blackoutNs, hostFault");
  return {
    policy: c.at("0").string(r[0]),
    estimator: c.at("1").string(r[1]),
    capped: c.at("2").oneOf(r[2], [0, 1] as const) === 1,
    absErrorNs: c.at("3").number(r[3]),
    errorOverBound: c.at("4").number(r[4]),
    blackoutNs: c.at("5").number(r[5]),
    hostFault: r[6] === null ? null : c.at("6").oneOf(r[6], FAULT_CLASSES),
  };
}

function plotOf(x: unknown, c: Checker): void {
  const o = c.object(x);
  c.at("run").count(o.run);
  c.at("seed").bigint(o.seed);
  for (const k of ["migrationId", "vmId", "policy", "estimator", "source", "destination"]) c.at(k).string(o[k]);
  for (const k of ["blackoutNs", "tscErrorNs", "errorBoundNs"]) c.at(k).number(o[k]);
  if (o.hostFault !== null) c.at("hostFault").oneOf(o.hostFault, FAULT_CLASSES);
  c.at("flagged").boolean(o.flagged);
  c.at("points").array(o.points, (p, cc) => {
    const q = cc.object(p);
    for (const k of ["tNs", "errorNs", "halfNs"]) cc.at(k).number(q[k]);
    for (const k of ["status", "daemon"]) cc.at(k).string(q[k]);
  });
}

function determinismOf(x: unknown, c: Checker): void {
  const o = c.object(x);
  c.at("checked").count(o.checked);
  c.at("mismatches").array(o.mismatches, (m, cc) => {
    const q = cc.object(m);
    cc.at("run").count(q.run);
    cc.at("seed").bigint(q.seed);
    for (const k of ["hash", "rerunHash"]) cc.at(k).string(q[k]);
  });
}

/** Reads one field of untrusted data; its errors name the file and the field's path. */
export class Checker {
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
  array<T>(v: unknown, each: (x: unknown, c: Checker) => T): T[] {
    if (!Array.isArray(v)) throw this.fail("an array");
    return v.map((x, i) => each(x, this.at(String(i))));
  }
  string(v: unknown): string {
    if (typeof v !== "string") throw this.fail("a string");
    return v;
  }
  boolean(v: unknown): boolean {
    if (typeof v !== "boolean") throw this.fail("true or false");
    return v;
  }
  number(v: unknown): number {
    if (typeof v !== "number") throw this.fail("a number");
    return v;
  }
  count(v: unknown): number {
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) throw this.fail("a count (a non-negative integer)");
    return v;
  }
  bigint(v: unknown): bigint {
    if (typeof v !== "bigint") throw this.fail('a 64-bit integer ({"$b": "digits"})');
    return v;
  }
  oneOf<T extends string | number>(v: unknown, all: readonly T[]): T {
    if (!(all as readonly unknown[]).includes(v)) throw this.fail(`one of ${all.map((x) => JSON.stringify(x)).join(", ")}`);
    return v as T;
  }
  counts(v: unknown): Record<string, number> {
    const o = this.object(v);
    for (const [k, n] of Object.entries(o)) this.at(k).count(n);
    return o as Record<string, number>;
  }
}

// ---- merge ----

/** The keys of CampaignResult that mergeFolds combines: a test fails when the result grows one it does not know. */
export const MERGED_KEYS = [
  "mode",
  "seed",
  "runs",
  "totals",
  "violations",
  "hostFaults",
  "violationsByInvariant",
  "hostFaultsByClass",
  "violationCount",
  "hostFaultCount",
  "failingRuns",
  "stats",
  "plots",
  "timelines",
  "runRows",
  "faultSites",
  "faultKinds",
  "outcomes",
  "migrationsByPath",
  "determinism",
] as const satisfies readonly (keyof CampaignResult)[];

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
    this.r = {
      ...whole,
      totals: zeroTotals(undefined),
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
      determinism: { checked: 0, mismatches: [] },
    };
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
    for (const k of ["violationsByInvariant", "hostFaultsByClass", "faultSites", "faultKinds", "outcomes"] as const) {
      for (const [key, n] of Object.entries(f[k])) r[k][key] = (r[k][key] ?? 0) + n;
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
function zeroTotals(like: Totals | undefined): Totals {
  const base: Totals = { runs: 0, events: 0, simNs: 0n, samples: 0, vcpuReadings: 0, migrations: 0, migrationsCommitted: 0, migrationsStarted: 0, faults: 0, vms: 0, handled: 0, ratePairs: 0, restores: 0, livenessChecks: 0 };
  if (!like) return base;
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
