// `tscmig chaos replay`: the command line of the step-through view (replay.ts). It takes the same
// scenario flags as `tscmig chaos` — the report prints each run's command ready to paste — or a
// `--history` file, and writes one self-contained HTML page.

import { type Command, Option } from "commander";
import { TscmigError } from "../shared/errors.js";
import { ESTIMATORS } from "../shared/migration/blackout.js";
import { POLICIES } from "../shared/migration/restore.js";
import { type ChaosFlags, parseChaosFlags, replayCommand } from "./cli.js";
import { replayRun, writeReplay } from "./replay.js";
import { DEFAULT_SCENARIO, FAULT_KINDS } from "./sim/scenario.js";

export interface ReplayFlags extends Omit<ChaosFlags, "json" | "junit" | "jobs" | "determinismCheck" | "quiet"> {
  history?: string;
  html?: string;
}

/** The step-through command for one run of a campaign with these (normalised) flags. */
export function stepThroughCommand(flags: Record<string, string>, seed: bigint): string {
  return replayCommand(flags, seed).replace(/^tscmig chaos /, "tscmig chaos replay ").replace(" --runs 1", "");
}

export async function runReplay(f: ReplayFlags, out: (s: string) => void): Promise<number> {
  if (f.runs !== undefined && f.runs !== "1") throw new TscmigError("invalid_argument", "--runs: replay shows one run (1)", { field: "runs" });
  let page;
  if (f.history !== undefined) {
    page = await replayRun({ historyFile: f.history, command: `tscmig chaos replay --history ${f.history}` });
  } else {
    if (f.mode === "live") throw new TscmigError("invalid_argument", "--mode live: a live run cannot be re-run exactly; write its history with --history and replay that file", { field: "mode" });
    const { campaign, flags } = parseChaosFlags({ ...f, runs: "1", determinismCheck: "0" });
    page = await replayRun({ seed: campaign.seed, scenario: campaign.scenario, command: stepThroughCommand(flags, campaign.seed) });
  }
  const file = f.html ?? `tscmig-replay-${page.seed}.html`;
  const r = writeReplay(page, file);
  out(`${file}: ${r.steps} steps (${page.messages.length} messages, ${page.history.samples.length} clock reads, ${page.check.violations.length} violation(s)); open it in a browser\n`);
  return page.check.violations.length === 0 ? 0 : 1;
}

/** Declares `tscmig chaos replay` under the chaos command. */
export function addReplayCommand(chaos: Command, out: (s: string) => void): void {
  chaos
    .command("replay")
    .description("open one run as a step-through page (HTML): every message, fault, guest clock read, event and checker verdict in true-time order, with the hosts' and guests' state at each step; exit 1 when the run violates an invariant")
    .addOption(new Option("--mode <mode>", "sim (live runs: replay their --history file)").choices(["sim", "live"]).default("sim"))
    .option("--seed <seed>", "the run's seed (the report prints each run's replay command)", "1")
    .option("--runs <n>", "accepted for pasted campaign commands; must be 1")
    .option("--history <file>", "replay a history written by tscmig chaos --history instead of re-simulating (no message trace)")
    .option("--html <file>", "where to write the page (default tscmig-replay-SEED.html)")
    .option("--policy <list>", `as tscmig chaos: ${POLICIES.join(", ")}, or all`, DEFAULT_SCENARIO.policies.join(","))
    .option("--estimator <list>", `as tscmig chaos: ${ESTIMATORS.join(", ")}, or all`, DEFAULT_SCENARIO.estimators.join(","))
    .addOption(new Option("--guest-migration-handling <on|off>", "as tscmig chaos").choices(["on", "off"]).default("on"))
    .option("--skew-max <duration>", "as tscmig chaos", "262s")
    .option("--faults <list>", `as tscmig chaos: all, none, or a comma list of ${FAULT_KINDS.join(", ")}`, "all")
    .option("--vcpus-max <n>", "as tscmig chaos", String(DEFAULT_SCENARIO.vcpusMax))
    .option("--sample-interval <duration>", "as tscmig chaos", "100ms")
    .addOption(new Option("--ntp-source <source>", "as tscmig chaos").choices(["reference", "host"]).default("reference"))
    .action(async (flags: ReplayFlags) => {
      process.exitCode = await runReplay(flags, out);
    });
}
