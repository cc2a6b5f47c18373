// The only place a daemon touches `process`: configuration from flags and environment, signals,
// ports, exit codes. Everything else is built by buildDaemon() from injected parts.

import { createLogger } from "../shared/log.js";
import { env, hardDeadline, platform, trueEpochNs } from "../shared/platform/index.js";
import { isTscmigError } from "../shared/errors.js";
import { buildDaemon } from "./daemon.js";
import { loadDaemonConfig } from "./daemon-config.js";

export const SHUTDOWN_GRACE_MS = 3000;

/** Runs a daemon until SIGINT/SIGTERM; `flags` are commander's parsed options keyed by config key. */
export async function runDaemon(flags: Record<string, string | undefined>): Promise<void> {
  const config = loadDaemonConfig({ flags, env: env() });
  const log = createLogger({ level: config.logLevel, name: config.name });
  const { clock, scheduler, random } = platform();
  const daemon = await buildDaemon({ clock, scheduler, random, log, config, trueEpochNs: trueEpochNs() });
  const bound = await daemon.listen();
  // One line on stdout that tools (tscmig up, tests) parse; logs go to stdout as JSON too.
  process.stdout.write(`${JSON.stringify({ tscmig: "listening", name: config.name, http: bound.http, grpc: bound.grpc, data: config.data })}\n`);
  let closing = false;
  const shutdown = (signal: string) => {
    if (closing) return;
    closing = true;
    log.info({ event: "shutdown", signal }, "shutting down");
    hardDeadline(SHUTDOWN_GRACE_MS + 2000, () => process.exit(1));
    void daemon.close(SHUTDOWN_GRACE_MS).then(() => process.exit(0));
  };
  process.on("SIGINT", () => shutdown("SIGINT"));
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("unhandledRejection", (e) => {
    // A bug, not bad input (handlers answer bad input with typed errors): log it, keep serving.
    log.error({ event: "unhandled_rejection", err: isTscmigError(e) ? e.toJSON() : String(e) }, "unhandled rejection");
  });
}
