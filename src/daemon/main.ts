// The only place a daemon touches `process`: configuration from flags and environment, signals,
// ports, exit codes. Everything else is built by buildDaemon() from injected parts.

import { setLogger as setGrpcLogger } from "@grpc/grpc-js";
import { pino } from "pino";
import { createLogger, grpcJsLogger } from "../shared/log.js";
import { env, hardDeadline, PARENT_PID_ENV, platform, trueEpochNs, watchParent } from "../shared/platform/index.js";
import { isTscmigError, TscmigError } from "../shared/errors.js";
import { buildDaemon, type Daemon } from "./daemon.js";
import { loadDaemonConfig } from "./daemon-config.js";
import { liveFaults } from "./live-faults.js";

export const SHUTDOWN_GRACE_MS = 3000;
/** Exit status of a daemon that could not start (a port taken, the journal locked or damaged, ...). */
export const START_FAILED_EXIT_CODE = 1;

/** Runs a daemon until SIGINT/SIGTERM; `flags` are commander's parsed options keyed by config key. */
export async function runDaemon(flags: Record<string, string | undefined>): Promise<void> {
  const config = loadDaemonConfig({ flags, env: env() });
  // With fault sites armed (tests only) every log line is written synchronously, so a deliberate
  // SIGKILL loses none of them — the fault_crash line included. Otherwise pino's async default.
  const log = createLogger({ level: config.logLevel, name: config.name, ...(config.faults.length > 0 ? { destination: pino.destination({ dest: 1, sync: true }) } : {}) });
  setGrpcLogger(grpcJsLogger(log)); // grpc-js diagnostics as log lines, not bare stderr text
  const { clock, scheduler, random } = platform();
  // Test-only fault hook (TSCMIG_FAULTS): a listed crash site dies here like kill -9 — no cleanup,
  // no reply, nothing journaled after the site — so a restart on the same --data shows recovery.
  const faults =
    config.faults.length > 0
      ? liveFaults(config.faults, (site) => {
          log.fatal({ event: "fault_crash", site }, "fault hook: killing this daemon");
          process.kill(process.pid, "SIGKILL");
          throw new Error("unreachable: SIGKILL did not stop the process");
        })
      : undefined;
  if (faults) log.warn({ event: "faults_armed", sites: config.faults }, "TEST ONLY: fault sites armed");
  let daemon: Daemon;
  let parentPid: number | undefined;
  try {
    parentPid = parentPidOf(env()[PARENT_PID_ENV]);
    // Each step undoes itself when it fails (ports closed, journal lock released): exiting is all that is left.
    daemon = await buildDaemon({ clock, scheduler, random, log, config, trueEpochNs: trueEpochNs(), ...(faults ? { faults } : {}) });
    // Logs the `listening` line (shared/log.ts logListening) that tools parse for the bound addresses.
    await daemon.listen();
  } catch (e) {
    process.stderr.write(`${startFailureLine(config.name, e)}\n`);
    process.exit(START_FAILED_EXIT_CODE);
  }
  let closing = false;
  const shutdown = (signal: string) => {
    if (closing) return;
    closing = true;
    log.info({ event: "shutdown", signal }, "shutting down");
    hardDeadline(SHUTDOWN_GRACE_MS + 2000, () => process.exit(1)); // backstop if close() hangs
    void daemon.close(SHUTDOWN_GRACE_MS).then(() => process.exit(0));
  };
  // A launcher killed outright (SIGKILL, a crashed test runner) cannot stop its daemons: they notice.
  if (parentPid !== undefined) watchParent(parentPid, () => shutdown("parent exited"));
  process.on("SIGINT", () => shutdown("SIGINT"));
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("unhandledRejection", (e) => {
    // A bug, not bad input (handlers answer bad input with typed errors): log it, keep serving.
    log.error({ event: "unhandled_rejection", err: isTscmigError(e) ? e.toJSON() : String(e) }, "unhandled rejection");
  });
}

/** The launcher's pid from `TSCMIG_EXIT_WITH_PARENT`, if set. */
function parentPidOf(raw: string | undefined): number | undefined {
  if (raw === undefined || raw === "") return undefined;
  if (!/^[1-9]\d{0,9}$/.test(raw) || Number(raw) > 4_194_304)
    throw new TscmigError("invalid_argument", `${PARENT_PID_ENV} must be a process id (1..4194304), got ${JSON.stringify(raw.slice(0, 40))}`, { field: PARENT_PID_ENV });
  return Number(raw);
}

/** One line: which daemon, that it did not start, and the typed error's own words (they name the port, file or record). */
export function startFailureLine(name: string, e: unknown): string {
  if (isTscmigError(e)) return `tscmig daemon ${name}: cannot start: ${e.message} [${e.code}${e.reason !== undefined ? `/${e.reason}` : ""}]`;
  const text = e instanceof Error ? e.message : String(e);
  return `tscmig daemon ${name}: cannot start: ${text.split("\n")[0]}`;
}
