// `tscmig chaos`: a campaign of seeded runs (simulated, or against real daemons), checked against
// I1–I9, with JSON, JUnit and HTML reports. Exit status 0 when nothing was violated, 1 otherwise; a
// failing run prints the exact command that replays it alone.

import { writeFileSync } from "node:fs";
import cliProgress from "cli-progress";
import { type Command, Option } from "commander";
import { TscmigError } from "../shared/errors.js";
import { ESTIMATORS, type EstimatorName } from "../shared/migration/blackout.js";
import { POLICIES, type PolicyName } from "../shared/migration/restore.js";
import { RealClock } from "../shared/platform/index.js";
import { parseDurationNs } from "../daemon/config-parsers.js";
import { type CampaignOptions, type CampaignResult, defaultJobs, runCampaign } from "./campaign.js";
import { INVARIANT_TITLES } from "./checker.js";
import { buildHtml } from "./report/html.js";
import { buildJsonReport, type ReportContext } from "./report/json.js";
import { buildJunit } from "./report/junit.js";
import { DEFAULT_SCENARIO, FAULT_KIND_DOCS, FAULT_KINDS, type FaultKind, ISSUE9_FAULT_KINDS, KNOWN_FAULT_KINDS, type ScenarioOptions } from "./sim/scenario.js";

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
  quiet?: boolean;
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
  return {
    campaign: { mode, seed, runs, scenario, determinismCheck: mode === "sim" ? dc : 0, jobs, plotRuns: 4 },
    flags,
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
  const { campaign, flags } = parseChaosFlags(f);
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
    bar.start(o.runs, 0, { mode: o.mode, violations: 0, rate: "-" });
  }
  if (f.history && o.mode === "sim") {
    const file = f.history;
    o.onHistory = (text) => writeFileSync(file, text);
  }
  const result = await runCampaign({
    ...o,
    onRun: (run, done) => {
      for (const [k, n] of Object.entries(run.counts)) if (!k.includes("/")) bad += n;
      if (bar) {
        const s = Number(clock.monotonicNs() - t0) / 1e9;
        bar.update(done, { violations: bad, rate: s > 0 ? (done / s).toFixed(0) : "-" });
      } else if (!f.quiet && o.mode === "live") out(`run ${run.run} (seed ${run.seed}): ${Object.entries(run.counts).filter(([k]) => !k.includes("/")).reduce((a, [, n]) => a + n, 0)} violation(s)\n`);
      o.onRun?.(run, done);
    },
  }).finally(() => bar?.stop());
  const ctx: ReportContext = {
    replay: (seed) => replayCommand(flags, seed),
    options: { ...flags, seed: o.seed.toString(), runs: o.runs, "determinism-check": o.determinismCheck },
    elapsedNs: clock.monotonicNs() - t0,
    jobs: o.jobs,
    recoveryBoundNs: o.mode === "sim" ? 30_000_000_000n : 20_000_000_000n,
  };
  if (f.json) writeFileSync(f.json, `${JSON.stringify(buildJsonReport(result, ctx), null, 2)}\n`);
  if (f.junit) writeFileSync(f.junit, buildJunit(result, ctx, Array.from({ length: result.totals.runs }, (_v, i) => ({ run: i, seed: BigInt.asUintN(64, o.seed + BigInt(i)) }))));
  if (f.html) writeFileSync(f.html, buildHtml(result, ctx));
  if (!f.quiet || result.violationCount > 0) out(summaryText(result, ctx));
  return result.violationCount === 0 ? 0 : 1;
}

/** Declares `tscmig chaos` on `cmd` (main.ts adds the command and calls this). */
export function chaosCommand(cmd: Command, out: (s: string) => void): Command {
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
    .addOption(new Option("--ntp-source <source>", "where guests take NTP from: a reference server (true time within its claimed error) or their host's realtime (ptp_kvm); live daemons always use their host").choices(["reference", "host"]).default("reference"))
    .option("--determinism-check <fraction>", "fraction of sim runs rerun to compare history hashes (FoundationDB's unseed check)", "0.05")
    .option("--jobs <n>", "worker threads for sim runs (default: one per core for 200+ runs)")
    .option("--json <file>", "write the JSON report here")
    .option("--junit <file>", "write JUnit XML here (one test case per run)")
    .option("--html <file>", "write a self-contained HTML report here")
    .option("--history <file>", "sim: write the first run's history here (canonical JSON lines: every sample and event; same seed, same bytes)")
    .option("--quiet", "print only failures")
    .action(async (flags: ChaosFlags) => {
      process.exitCode = await runChaos(flags, out);
    });
}
