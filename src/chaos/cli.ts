// `tscmig chaos`: a campaign of seeded runs (simulated, or against real daemons), checked against
// I1–I9, with JSON, JUnit and HTML reports. Exit status 0 when nothing was violated, 1 otherwise; a
// failing run prints the exact command that replays it alone. `--shard i/N` runs one block of the
// campaign; `tscmig chaos merge` turns the shards' reports into the whole campaign's (shard.ts).

import { readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import cliProgress from "cli-progress";
import { Command, Option } from "commander";
import { TscmigError } from "../shared/errors.js";
import { ESTIMATORS, type EstimatorName } from "../shared/migration/blackout.js";
import { POLICIES, type PolicyName } from "../shared/migration/restore.js";
import { RealClock } from "../shared/platform/index.js";
import { parseDurationNs } from "../daemon/config-parsers.js";
import { type CampaignOptions, type CampaignResult, defaultJobs, finalizeResult, runCampaignFold, runSeed } from "./campaign.js";
import { INVARIANT_TITLES } from "./checker.js";
import { buildHtml } from "./report/html.js";
import { buildJsonReport, type ReportContext } from "./report/json.js";
import { buildJunit } from "./report/junit.js";
import { DEFAULT_SCENARIO, FAULT_KIND_DOCS, FAULT_KINDS, type FaultKind, ISSUE9_FAULT_KINDS, KNOWN_FAULT_KINDS, type ScenarioOptions } from "./sim/scenario.js";
import { addReplayCommand, stepThroughCommand } from "./replay-cli.js";
import { type CampaignIdentity, encodeFold, FoldMerger, foldOf, orderShards, parseShard, SHARD_FORMAT, type Shard, type ShardSection, shardRange, shardSectionOf } from "./shard.js";

export interface ChaosFlags {
  mode: string;
  seed: string;
  runs?: string;
  policy: string;
  estimator: string;
  guestMigrationHandling: string;
  skewMax: string;
  faults: string;
  vcpusMax: string;
  sampleInterval: string;
  ntpSource: string;
  determinismCheck: string;
  jobs?: string;
  json?: string;
  junit?: string;
  html?: string;
  history?: string;
  /** `i/N`: run shard i (0-based) of N of the campaign (shard.ts). */
  shard?: string;
  quiet?: boolean;
  /** live: the daemons' hypervisor backend (`tscmig daemon --backend`). */
  backend?: string;
}

/** `all`, or a comma list of names from `known` (default: the same as `all`). */
function list<T extends string>(raw: string, all: readonly T[], what: string, known: readonly T[] = all): T[] {
  const items = raw === "all" ? [...all] : raw.split(",").map((s) => s.trim()).filter((s) => s.length > 0);
  for (const i of items) if (!(known as readonly string[]).includes(i)) throw new TscmigError("invalid_argument", `--${what}: unknown ${JSON.stringify(i)} (one of ${known.join(", ")}, or all)`, { field: what });
  if (items.length === 0) throw new TscmigError("invalid_argument", `--${what}: give at least one`, { field: what });
  return items as T[];
}

function int(raw: string, what: string, lo: number, hi: number): number {
  const n = Number(raw);
  if (!Number.isInteger(n) || n < lo || n > hi) throw new TscmigError("invalid_argument", `--${what}: an integer in ${lo}..${hi}`, { field: what });
  return n;
}

export function parseSeed(raw: string): bigint {
  if (!/^(0x[0-9a-fA-F]{1,16}|[0-9]{1,20})$/.test(raw)) throw new TscmigError("invalid_argument", "--seed: a u64, decimal or 0x-hex", { field: "seed" });
  const v = BigInt(raw);
  if (v > 0xffff_ffff_ffff_ffffn) throw new TscmigError("invalid_argument", "--seed: a u64", { field: "seed" });
  return v;
}

export interface ParsedChaos {
  campaign: CampaignOptions;
  /** Scenario flags, normalised, for replay commands and report headers. */
  flags: Record<string, string>;
  shard?: Shard;
}

export function parseChaosFlags(f: ChaosFlags): ParsedChaos {
  const mode = f.mode === "live" ? "live" : f.mode === "sim" ? "sim" : null;
  if (!mode) throw new TscmigError("invalid_argument", "--mode: sim or live", { field: "mode" });
  const seed = parseSeed(f.seed);
  const runs = int(f.runs ?? (mode === "sim" ? "100" : "2"), "runs", 1, 10_000_000);
  const policies = list<PolicyName>(f.policy, POLICIES, "policy");
  const estimators = list<EstimatorName>(f.estimator, ESTIMATORS, "estimator");
  const handling = f.guestMigrationHandling === "on" ? true : f.guestMigrationHandling === "off" ? false : null;
  if (handling === null) throw new TscmigError("invalid_argument", "--guest-migration-handling: on or off", { field: "guest-migration-handling" });
  const skewMaxNs = parseDurationNs(f.skewMax, { min: 0n, max: 262_144_000_000n });
  const faults = f.faults === "none" ? [] : [...new Set(list<FaultKind>(f.faults, FAULT_KINDS, "faults", KNOWN_FAULT_KINDS))];
  const vcpusMax = int(f.vcpusMax, "vcpus-max", 1, 1024);
  const sampleIntervalNs = parseDurationNs(f.sampleInterval, { min: 1_000_000n, max: 10_000_000_000n });
  const ntpSource = f.ntpSource === "host" ? "host" : f.ntpSource === "reference" ? "reference" : null;
  if (!ntpSource) throw new TscmigError("invalid_argument", "--ntp-source: reference or host", { field: "ntp-source" });
  const dc = Number(f.determinismCheck);
  if (!(dc >= 0 && dc <= 1)) throw new TscmigError("invalid_argument", "--determinism-check: a fraction in 0..1", { field: "determinism-check" });
  const jobs = f.jobs !== undefined ? int(f.jobs, "jobs", 1, 64) : mode === "sim" && runs >= 200 ? defaultJobs() : 1;
  const scenario: ScenarioOptions = { ...DEFAULT_SCENARIO, policies, estimators, handling, skewMaxNs, faults, vcpusMax, sampleIntervalNs, ntpSource };
  const flags: Record<string, string> = {
    mode,
    policy: policies.join(","),
    estimator: estimators.join(","),
    "guest-migration-handling": handling ? "on" : "off",
    "skew-max": f.skewMax,
    faults: faults.length === FAULT_KINDS.length && FAULT_KINDS.every((k) => faults.includes(k)) ? "all" : faults.length === 0 ? "none" : faults.join(","),
    "vcpus-max": String(vcpusMax),
    "sample-interval": f.sampleInterval,
    "ntp-source": ntpSource,
  };
  const shard = f.shard !== undefined ? parseShard(f.shard, runs) : undefined;
  const backend = f.backend ?? "emulated";
  if (backend !== "emulated" && backend !== "kvm") throw new TscmigError("invalid_argument", "--backend: emulated or kvm", { field: "backend" });
  if (backend === "kvm" && mode !== "live") throw new TscmigError("invalid_argument", "--backend kvm needs --mode live (simulated runs model their VMs)", { field: "backend" });
  if (backend === "kvm") flags.backend = backend;
  return {
    campaign: {
      mode,
      seed,
      runs,
      scenario,
      determinismCheck: mode === "sim" ? dc : 0,
      jobs,
      plotRuns: 4,
      // Passing runs' timelines are read only by the HTML report and a shard's JSON (for the merge).
      ...(f.html === undefined && shard === undefined ? { timelineRuns: 0 } : {}),
      ...(shard ? { range: shardRange(shard, runs) } : {}),
      ...(backend === "kvm" ? { live: { backend } } : {}),
    },
    flags,
    ...(shard ? { shard } : {}),
  };
}

/** The command that replays the run with this seed alone. */
export function replayCommand(flags: Record<string, string>, seed: bigint): string {
  const rest = Object.entries(flags)
    .filter(([k]) => k !== "mode")
    .map(([k, v]) => `--${k} ${v}`)
    .join(" ");
  return `tscmig chaos --mode ${flags.mode} --seed ${seed} --runs 1 ${rest}`;
}

export function summaryText(r: CampaignResult, ctx: ReportContext): string {
  const t = r.totals;
  const lines: string[] = [];
  const secs = ctx.elapsedNs !== undefined ? Number(ctx.elapsedNs) / 1e9 : 0;
  lines.push(
    `tscmig chaos ${r.mode}: ${t.runs} runs from seed ${r.seed}` +
      (secs > 0 ? ` in ${secs.toFixed(1)} s (${(t.runs / secs).toFixed(0)} runs/s, ${(t.migrationsStarted / secs).toFixed(0)} migrations/s on ${ctx.jobs ?? 1} job(s))` : ""),
  );
  lines.push(
    `checked: ${t.samples} guest samples (${t.vcpuReadings} vCPU readings), ${t.migrationsStarted} migrations started, ${t.migrationsCommitted} committed, ${t.migrations} checked against their bound, ${t.faults} faults injected, ${t.handled} migrations handled by guests, ${t.restores} restores checked against their policy`,
  );
  lines.push(`paths of the committed migrations sources reported: ${r.migrationsByPath.handover} over a Handover call, ${r.migrationsByPath.unary} over the unary calls`);
  const modes = r.migrationsBySwitchover;
  if (Object.keys(modes).length > 0)
    lines.push(`switchover modes: ${["two-phase", "on-receipt"].map((m) => `${m} ${modes[`${m}:started`] ?? 0} started, ${modes[`${m}:committed`] ?? 0} committed`).join("; ")}`);
  if (r.mode === "sim") lines.push(`determinism: ${r.determinism.checked} runs rerun, ${r.determinism.mismatches.length} mismatches`);
  const hf = Object.entries(r.hostFaultsByClass);
  if (hf.length > 0) lines.push(`host clock faults (reported apart, not bugs): ${hf.map(([k, n]) => `${k} ×${n}`).join(", ")}`);
  if (r.violationCount === 0) {
    lines.push(`PASS: I1–I9 held in every run`);
  } else {
    lines.push(`FAIL: ${r.violationCount} violation(s) in ${r.failingRuns.length} run(s): ${Object.entries(r.violationsByInvariant).map(([k, n]) => `${k} ${INVARIANT_TITLES[k as keyof typeof INVARIANT_TITLES]} ×${n}`).join(", ")}`);
    for (const f of r.failingRuns.slice(0, 20)) {
      const first = r.violations.find((v) => v.run === f.run);
      lines.push(`  run ${f.run} (seed ${f.seed}): ${f.invariants.join(", ")}${first ? ` — ${first.message}` : ""}`);
      lines.push(`    replay: ${ctx.replay(f.seed)}`);
    }
    if (r.failingRuns.length > 20) lines.push(`  … and ${r.failingRuns.length - 20} more failing runs (see the reports)`);
  }
  return `${lines.join("\n")}\n`;
}

/** Runs `tscmig chaos` with parsed flags; returns the exit status. */
export async function runChaos(f: ChaosFlags, out: (s: string) => void, extra: Partial<CampaignOptions> = {}): Promise<number> {
  const { campaign, flags, shard } = parseChaosFlags(f);
  const o: CampaignOptions = { ...campaign, ...extra };
  const clock = new RealClock();
  const t0 = clock.monotonicNs();
  let bar: cliProgress.SingleBar | null = null;
  let bad = 0;
  if (process.stderr.isTTY && !f.quiet) {
    bar = new cliProgress.SingleBar(
      { format: "chaos {mode} [{bar}] {value}/{total} runs | {violations} violations | {rate} runs/s", stream: process.stderr, hideCursor: true, clearOnComplete: true },
      cliProgress.Presets.shades_classic,
    );
    bar.start(o.range ? o.range.end - o.range.first : o.runs, 0, { mode: o.mode, violations: 0, rate: "-" });
  }
  if (f.history && o.mode === "sim") {
    const file = f.history;
    o.onHistory = (text) => writeFileSync(file, text);
  }
  const stopLive = o.mode === "live" ? stopOnSignals(o) : () => {};
  const fold = await runCampaignFold({
    ...o,
    onRun: (run, done) => {
      for (const [k, n] of Object.entries(run.counts)) if (!k.includes("/")) bad += n;
      if (bar) {
        const s = Number(clock.monotonicNs() - t0) / 1e9;
        bar.update(done, { violations: bad, rate: s > 0 ? (done / s).toFixed(0) : "-" });
      } else if (!f.quiet && o.mode === "live") out(`run ${run.run} (seed ${run.seed}): ${Object.entries(run.counts).filter(([k]) => !k.includes("/")).reduce((a, [, n]) => a + n, 0)} violation(s)\n`);
      o.onRun?.(run, done);
    },
  }).finally(() => {
    bar?.stop();
    stopLive();
  });
  const result = finalizeResult(fold);
  const identity: CampaignIdentity = {
    mode: o.mode,
    seed: o.seed.toString(),
    runs: o.runs,
    options: { ...flags, seed: o.seed.toString(), runs: o.runs, "determinism-check": o.determinismCheck },
    flags,
    recoveryBoundNs: (o.mode === "sim" ? 30_000_000_000n : 20_000_000_000n).toString(),
  };
  const ctx: ReportContext = { ...contextOf(identity), elapsedNs: clock.monotonicNs() - t0, jobs: o.jobs };
  if (shard) ctx.options = { ...ctx.options, shard: `${shard.index}/${shard.count}` };
  const range = o.range ?? { first: 0, end: o.runs };
  const section = shard ? shardSection(shard, identity, ctx, fold) : undefined;
  writeReports(f, result, ctx, range, section);
  if (!f.quiet || result.violationCount > 0) out((shard ? `shard ${shard.index}/${shard.count}: runs ${range.first}–${range.end - 1} of ${o.runs}\n` : "") + summaryText(result, ctx));
  return result.violationCount === 0 ? 0 : 1;
}

/**
 * SIGINT or SIGTERM during a live campaign aborts it: the run under way SIGKILLs its daemons and no
 * run starts after it, then the campaign reports what it ran (a daemon must not outlive it). Returns
 * the function that removes the handlers.
 */
function stopOnSignals(o: CampaignOptions): () => void {
  const ac = new AbortController();
  const outer = o.live?.signal;
  outer?.addEventListener("abort", () => ac.abort(), { once: true });
  o.live = { ...o.live, signal: ac.signal };
  const onSignal = (signal: NodeJS.Signals) => {
    process.stderr.write(`tscmig chaos: ${signal}: stopping the live run and its daemons\n`);
    ac.abort();
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  return () => {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  };
}

/** The report context of a campaign (without its wall-clock figures). */
function contextOf(c: CampaignIdentity): ReportContext {
  return {
    replay: (seed) => replayCommand(c.flags, seed),
    stepThrough: (seed) => stepThroughCommand(c.flags, seed),
    options: { ...c.options },
    ...(c.recoveryBoundNs !== null ? { recoveryBoundNs: BigInt(c.recoveryBoundNs) } : {}),
  };
}

function shardSection(shard: Shard, campaign: CampaignIdentity, ctx: ReportContext, fold: CampaignResult): ShardSection {
  const { first, end } = shardRange(shard, campaign.runs);
  return { format: SHARD_FORMAT, index: shard.index, count: shard.count, firstRun: first, endRun: end, campaign, timing: { elapsedNs: String(ctx.elapsedNs ?? 0n), jobs: ctx.jobs ?? 1 }, fold: encodeFold(fold) };
}

/**
 * The JSON (with the shard section, if any, last and compact: it is for `merge`, and mostly rows of
 * numbers), JUnit (a test case per run of `range`) and HTML reports the flags ask for.
 */
function writeReports(f: { json?: string; junit?: string; html?: string }, r: CampaignResult, ctx: ReportContext, range: { first: number; end: number }, section?: ShardSection, extraTiming?: Record<string, unknown>): void {
  if (f.json) {
    const report: Record<string, unknown> = buildJsonReport(r, ctx);
    if (extraTiming && report.timing !== null && typeof report.timing === "object") report.timing = { ...report.timing, ...extraTiming };
    const text = JSON.stringify(report, null, 2);
    writeAtomically(f.json, section ? `${text.slice(0, -2)},\n  "shard": ${JSON.stringify(section)}\n}\n` : `${text}\n`);
  }
  if (f.junit) writeAtomically(f.junit, buildJunit(r, ctx, Array.from({ length: range.end - range.first }, (_v, k) => ({ run: range.first + k, seed: runSeed(r.seed, range.first + k) }))));
  if (f.html) writeAtomically(f.html, buildHtml(r, ctx));
}

/** Whole or not at all: a merge waiting for shard reports (deploy/k8s) never reads half a file. */
function writeAtomically(file: string, text: string): void {
  const partial = `${file}.${process.pid}.partial`;
  writeFileSync(partial, text);
  renameSync(partial, file);
}

export interface MergeFlags {
  json?: string;
  junit?: string;
  html?: string;
  quiet?: boolean;
}

/** Shard reports above this size are refused rather than read (a 1,000-run shard writes about a megabyte). */
const SHARD_REPORT_BYTES_MAX = 1024 * 1024 * 1024;

function readShardReport(file: string): { where: string; section: ShardSection } {
  let text: string;
  try {
    const st = statSync(file);
    // Not a device or a FIFO: /dev/zero read without end (6 GB in 15 s), a FIFO blocked for good.
    if (!st.isFile()) throw new TscmigError("invalid_argument", `${file}: not a regular file (a shard report is one, written by tscmig chaos --shard i/N --json FILE)`, { field: "reports" });
    const size = st.size;
    if (size > SHARD_REPORT_BYTES_MAX) throw new TscmigError("invalid_argument", `${file}: ${size} bytes, more than a shard report may be (${SHARD_REPORT_BYTES_MAX}); split the campaign into more shards`, { field: "reports" });
    text = readFileSync(file, "utf8");
  } catch (e) {
    if (e instanceof TscmigError) throw e;
    throw new TscmigError("invalid_argument", `${file}: cannot read: ${e instanceof Error ? e.message : String(e)}`, { field: "reports" });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new TscmigError("invalid_argument", `${file}: not JSON: ${e instanceof Error ? e.message : String(e)}`, { field: "reports" });
  }
  return { where: file, section: shardSectionOf(json, file) };
}

/**
 * `tscmig chaos merge`: the shards' reports into the reports of the whole campaign, as one process
 * running every run would have written them. Wall clock (`timing` in the JSON, `time` in JUnit,
 * rates in the HTML) is the one thing no merge can reproduce: there, elapsed is the slowest
 * shard's (the shards run side by side, as the Indexed Job runs them), jobs the sum of the shards'
 * jobs, and `timing.shards` lists each shard's own. Exit status as `tscmig chaos`.
 */
export function runMerge(files: readonly string[], f: MergeFlags, out: (s: string) => void): number {
  // Two passes: the sections first (is this one whole campaign?), then each shard's fold in run
  // order, read again and dropped once added, so the merge holds one shard's report at a time.
  const ordered = orderShards(
    files.map((file) => {
      const r = readShardReport(file);
      return { where: r.where, section: { ...r.section, fold: null } };
    }),
  );
  const identity = (ordered[0] as { section: ShardSection }).section.campaign;
  const merger = new FoldMerger({ mode: identity.mode, seed: BigInt(identity.seed), runs: identity.runs });
  for (const { where, section } of ordered) {
    const again = readShardReport(where).section;
    if (JSON.stringify({ ...again, fold: null }) !== JSON.stringify(section)) throw new TscmigError("invalid_argument", `${where}: changed while being merged`, { field: "reports" });
    merger.add(foldOf(where, again));
  }
  const result = merger.result();
  const shardTimes = ordered.map(({ section }) => ({ index: section.index, elapsedMs: Math.round(Number(section.timing.elapsedNs) / 1e6), jobs: section.timing.jobs }));
  const slowestNs = ordered.reduce((m, { section }) => (BigInt(section.timing.elapsedNs) > m ? BigInt(section.timing.elapsedNs) : m), 0n);
  const ctx: ReportContext = { ...contextOf(identity), elapsedNs: slowestNs, jobs: ordered.reduce((n, { section }) => n + section.timing.jobs, 0) };
  writeReports(f, result, ctx, { first: 0, end: identity.runs }, undefined, { shards: shardTimes });
  if (!f.quiet || result.violationCount > 0) out(`merged ${ordered.length} shard(s) of ${identity.runs} runs\n` + summaryText(result, ctx));
  return result.violationCount === 0 ? 0 : 1;
}

/** Declares `tscmig chaos` on `cmd` (main.ts adds the command and calls this). */
export function chaosCommand(cmd: Command, out: (s: string) => void): Command {
  addReplayCommand(cmd, out);
  return cmd
    .description(
      "run a chaos campaign: seeded runs that skew host clocks, break networks and crash daemons during migrations, record what every guest saw against true time, and check I1–I9 (exit 1 on a violation, with the command that replays it)",
    )
    .addOption(new Option("--mode <mode>", "sim: both daemons' protocol code in one process on simulated time and network; live: real daemon processes behind fault-injecting TCP proxies").choices(["sim", "live"]).default("sim"))
    .option("--seed <seed>", "campaign seed (u64); run i uses seed+i, so --seed S+i --runs 1 replays run i alone", "1")
    .option("--runs <n>", "number of runs (default: 100 sim, 2 live)")
    .option("--policy <list>", `migration policies drawn per migration: comma list of ${POLICIES.join(", ")}, or all`, DEFAULT_SCENARIO.policies.join(","))
    .option("--estimator <list>", `blackout estimators drawn per migration: comma list of ${ESTIMATORS.join(", ")}, or all`, DEFAULT_SCENARIO.estimators.join(","))
    .addOption(new Option("--guest-migration-handling <on|off>", "guests act on migration signals (on) or ignore them as Linux does today (off)").choices(["on", "off"]).default("on"))
    .option("--skew-max <duration>", "largest magnitude of any one host realtime skew component (Jepsen's bumps go to 262s)", "262s")
    .option(
      "--faults <list>",
      `fault kinds that may activate per run: all, none, or a comma list of ${FAULT_KINDS.map((k) => `${k} (${FAULT_KIND_DOCS[k]})`).join("; ")}; and, named only (not in all yet: today's daemons fail them), ${ISSUE9_FAULT_KINDS.map((k) => `${k} (${FAULT_KIND_DOCS[k]})`).join("; ")}`,
      "all",
    )
    .option("--vcpus-max <n>", "most vCPUs per VM", String(DEFAULT_SCENARIO.vcpusMax))
    .option("--sample-interval <duration>", "guest workload sampling period (sim)", "100ms")
    .addOption(new Option("--backend <name>", "live: the daemons' hypervisor backend: emulated, or kvm (real KVM VMs; root, /dev/kvm)").choices(["emulated", "kvm"]).default("emulated"))
    .addOption(new Option("--ntp-source <source>", "where guests take NTP from: a reference server (true time within its claimed error) or their host's realtime (ptp_kvm); live daemons always use their host").choices(["reference", "host"]).default("reference"))
    .option("--determinism-check <fraction>", "fraction of sim runs rerun to compare history hashes (FoundationDB's unseed check)", "0.05")
    .option("--jobs <n>", "worker threads for sim runs (default: one per core for 200+ runs)")
    .option("--json <file>", "write the JSON report here")
    .option("--junit <file>", "write JUnit XML here (one test case per run)")
    .option("--html <file>", "write a self-contained HTML report here")
    .option("--history <file>", "sim: write the first run's history here (canonical JSON lines: every sample and event; same seed, same bytes)")
    .option("--shard <i/N>", "run shard i (0-based) of N: runs ⌊i·R/N⌋ … ⌊(i+1)·R/N⌋−1 of the --runs R, each with its usual seed; the --json report carries what `tscmig chaos merge` needs")
    .option("--quiet", "print only failures")
    .action(async (flags: ChaosFlags) => {
      process.exitCode = await runChaos(flags, out);
    })
    .addCommand(mergeCommand(out));
}

function mergeCommand(out: (s: string) => void): Command {
  return new Command("merge")
    .description("merge the --json reports of a campaign's shards (tscmig chaos --shard i/N) into the JSON, JUnit and HTML reports one unsharded run would have written (exit 1 on a violation)")
    .argument("<reports...>", "every shard's JSON report, in any order")
    .option("--json <file>", "write the merged JSON report here")
    .option("--junit <file>", "write the merged JUnit XML here")
    .option("--html <file>", "write the merged HTML report here")
    .option("--quiet", "print only failures")
    .action((files: string[], flags: MergeFlags) => {
      process.exitCode = runMerge(files, flags, out);
    });
}
