// Starts daemons as real child processes on this machine (`tscmig up`, `tscmig demo`, the live
// chaos runner, the bench): each is `node bin/tscmig.js daemon ...`, and says where it listens in its
// `"event":"listening"` log line (shared/log.ts).

import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { TscmigError } from "../shared/errors.js";
import { listeningOf } from "../shared/log.js";
import { PARENT_PID_ENV, RealScheduler, TRUE_EPOCH_ENV, trueEpochNs } from "../shared/platform/index.js";
import type { Scheduler } from "../shared/time/clock.js";

/** How long a daemon has to exit after SIGTERM before it is killed (its own grace is 3 s + 2 s backstop). */
export const STOP_GRACE_NS = 8_000_000_000n;

export interface LocalDaemon {
  name: string;
  http: string;
  grpc: string;
  data: string;
  child: ChildProcess;
  logs: string[];
  stop(): Promise<void>;
}

export function binPath(): string {
  // dist/src/client/local-daemons.js → ../../../bin/tscmig.js
  return resolve(dirname(fileURLToPath(import.meta.url)), "../../../bin/tscmig.js");
}

export interface SpawnDaemonOptions {
  name: string;
  http?: string;
  grpc?: string;
  data?: string;
  env?: Record<string, string>;
  args?: string[];
  /** Flags for node itself, before the script (e.g. --cpu-prof, which NODE_OPTIONS refuses). */
  nodeArgs?: string[];
  /** Forward the daemon's log lines to our stderr, each as `[name] LEVEL message key=value ...`. */
  echo?: boolean;
  /** Times the SIGKILL fallback of stop(); real time when absent. */
  scheduler?: Scheduler;
  /** Node arguments that start the tscmig CLI (default: [bin/tscmig.js]); tests run the TypeScript sources. */
  entry?: string[];
  /** Give up on a daemon that neither listens nor exits this long after the spawn: SIGKILL it and reject (default: wait). */
  readyTimeoutNs?: bigint;
  /** The daemon lives no longer than this: on abort it is SIGKILLed, whether it has started listening or not. */
  signal?: AbortSignal;
}

/**
 * Every daemon this process started that has not exited yet. They go with it: a launcher that ends
 * (process.exit, the end of the event loop, a test runner tearing a worker down) without stopping
 * its daemons must not leave them running, holding ports and journal locks.
 */
const running = new Set<ChildProcess>();
let exitHookSet = false;

function own(child: ChildProcess): void {
  running.add(child);
  child.once("exit", () => running.delete(child));
  if (exitHookSet) return;
  exitHookSet = true;
  // Synchronous, as an "exit" listener must be: SIGTERM lets each journal close (a daemon's own
  // backstop ends it within its shutdown grace).
  process.once("exit", () => {
    for (const c of running) c.kill("SIGTERM");
  });
}

/** The daemons this process started that are still running (their pids), for tests and diagnostics. */
export function runningDaemonPids(): number[] {
  return [...running].flatMap((c) => (c.pid === undefined ? [] : [c.pid]));
}

export async function spawnDaemon(o: SpawnDaemonOptions): Promise<LocalDaemon> {
  const data = o.data ?? join(mkdtempSync(join(tmpdir(), "tscmig-")), o.name);
  const args = [...(o.nodeArgs ?? []), ...(o.entry ?? [binPath()]), "daemon", "--name", o.name, "--http", o.http ?? "127.0.0.1:0", "--grpc", o.grpc ?? "127.0.0.1:0", "--data", data, ...(o.args ?? [])];
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith("TSCMIG_")) env[k] = v;
  if (process.env.TSCMIG_LOG_LEVEL) env.TSCMIG_LOG_LEVEL = process.env.TSCMIG_LOG_LEVEL;
  // One true epoch for every daemon this process starts (this process's own: pinned in its
  // environment, or measured once), so they agree on true realtime exactly; a caller may pin another.
  env[TRUE_EPOCH_ENV] = String(trueEpochNs());
  env[PARENT_PID_ENV] = String(process.pid); // it ends with this process, however this one ends
  Object.assign(env, o.env ?? {});
  if (o.signal?.aborted) throw new TscmigError("aborted", `daemon ${o.name} not started: its launcher was aborted`, { reason: "aborted" });
  const child = spawn(process.execPath, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  own(child);
  const onAbort = () => child.kill("SIGKILL");
  o.signal?.addEventListener("abort", onAbort, { once: true });
  child.once("exit", () => o.signal?.removeEventListener("abort", onAbort));
  const logs: string[] = [];
  const keep = (line: string) => {
    logs.push(line);
    if (logs.length > 500) logs.shift();
    if (o.echo) process.stderr.write(`${formatLogLine(o.name, line)}\n`);
  };
  createInterface({ input: child.stderr! }).on("line", keep);
  const lines = createInterface({ input: child.stdout! });
  const listening = await new Promise<{ http: string; grpc: string }>((ok, fail) => {
    const onExit = (code: number | null) => {
      timer?.cancel();
      if (o.signal?.aborted) fail(new TscmigError("aborted", `daemon ${o.name} killed before it listened: its launcher was aborted`, { reason: "aborted" }));
      else fail(new TscmigError("unavailable", `daemon ${o.name} exited (${code}) before listening:\n${logs.slice(-20).join("\n")}`, { reason: "exited" }));
    };
    child.once("exit", onExit);
    const limitNs = o.readyTimeoutNs;
    const timer =
      limitNs === undefined
        ? null
        : (o.scheduler ?? new RealScheduler()).after(limitNs, () => {
            child.off("exit", onExit);
            child.kill("SIGKILL");
            fail(new TscmigError("deadline_exceeded", `daemon ${o.name} neither listened nor exited within ${limitNs / 1_000_000n} ms (killed):\n${logs.slice(-20).join("\n")}`, { reason: "start_hung" }));
          });
    lines.on("line", (line) => {
      keep(line);
      const at = listeningOf(line);
      if (at) {
        timer?.cancel();
        child.off("exit", onExit);
        ok(at);
      }
    });
  });
  const scheduler = o.scheduler ?? new RealScheduler();
  return {
    name: o.name,
    http: `http://${listening.http}`,
    grpc: listening.grpc,
    data,
    child,
    logs,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((r) => child.once("exit", () => r()));
      child.kill("SIGTERM");
      // The fallback must be cancelled once the daemon is gone: a pending timer keeps the caller's
      // process alive (`demo` waited 8 s after printing its result).
      const fallback = scheduler.after(STOP_GRACE_NS, () => child.kill("SIGKILL"));
      await exited;
      fallback.cancel();
    },
  };
}

const LEVELS: Record<number, string> = { 10: "TRACE", 20: "DEBUG", 30: "INFO", 40: "WARN", 50: "ERROR", 60: "FATAL" };
const NOT_SHOWN = new Set(["level", "time", "pid", "hostname", "name", "msg"]);

/** A daemon's JSON log line for a person: `[name] LEVEL message key=value ...`; other lines as they are. */
export function formatLogLine(name: string, line: string): string {
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return `[${name}] ${line}`;
  }
  if (j === null || typeof j !== "object" || typeof j.level !== "number") return `[${name}] ${line}`;
  const fields = Object.entries(j)
    .filter(([k]) => !NOT_SHOWN.has(k))
    .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`);
  return [`[${name}]`, (LEVELS[j.level] ?? String(j.level)).padEnd(5), String(j.msg ?? ""), ...fields].join(" ");
}
