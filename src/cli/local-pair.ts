// Starts daemons as real child processes on this machine (`tscmig up`, `tscmig demo`): each is
// `node bin/tscmig.js daemon ...`, and reports where it listens on its first stdout line.

import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { TscmigError } from "../shared/errors.js";
import { RealScheduler } from "../shared/platform/index.js";
import { sleep } from "../shared/time/clock.js";

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
  // dist/src/cli/local-pair.js → ../../../bin/tscmig.js
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
  /** Forward the daemon's log lines to our stderr. */
  echo?: boolean;
  /** Node arguments that start the tscmig CLI (default: [bin/tscmig.js]); tests run the TypeScript sources. */
  entry?: string[];
  /** Give up on a daemon that neither listens nor exits this long after the spawn: SIGKILL it and reject (default: wait). */
  readyTimeoutNs?: bigint;
}

export async function spawnDaemon(o: SpawnDaemonOptions): Promise<LocalDaemon> {
  const data = o.data ?? join(mkdtempSync(join(tmpdir(), "tscmig-")), o.name);
  const args = [...(o.nodeArgs ?? []), ...(o.entry ?? [binPath()]), "daemon", "--name", o.name, "--http", o.http ?? "127.0.0.1:0", "--grpc", o.grpc ?? "127.0.0.1:0", "--data", data, ...(o.args ?? [])];
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith("TSCMIG_")) env[k] = v;
  for (const k of ["TSCMIG_TRUE_EPOCH_NS", "TSCMIG_LOG_LEVEL"]) if (process.env[k]) env[k] = process.env[k] as string;
  Object.assign(env, o.env ?? {});
  const child = spawn(process.execPath, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  const logs: string[] = [];
  const keep = (line: string) => {
    logs.push(line);
    if (logs.length > 500) logs.shift();
    if (o.echo) process.stderr.write(`[${o.name}] ${line}\n`);
  };
  createInterface({ input: child.stderr! }).on("line", keep);
  const lines = createInterface({ input: child.stdout! });
  const listening = await new Promise<{ http: string; grpc: string }>((ok, fail) => {
    const onExit = (code: number | null) => {
      timer?.cancel();
      fail(new TscmigError("unavailable", `daemon ${o.name} exited (${code}) before listening:\n${logs.slice(-20).join("\n")}`, { reason: "exited" }));
    };
    child.once("exit", onExit);
    const limitNs = o.readyTimeoutNs;
    const timer =
      limitNs === undefined
        ? null
        : new RealScheduler().after(limitNs, () => {
            child.off("exit", onExit);
            child.kill("SIGKILL");
            fail(new TscmigError("deadline_exceeded", `daemon ${o.name} neither listened nor exited within ${limitNs / 1_000_000n} ms (killed):\n${logs.slice(-20).join("\n")}`, { reason: "start_hung" }));
          });
    lines.on("line", (line) => {
      if (line.startsWith('{"tscmig":"listening"')) {
        timer?.cancel();
        child.off("exit", onExit);
        const j = JSON.parse(line) as { http: string; grpc: string };
        ok({ http: j.http, grpc: j.grpc });
      } else keep(line);
    });
  });
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
      const sched = new RealScheduler();
      const timeout = sleep(sched, 8_000_000_000n).then(() => "timeout");
      if ((await Promise.race([exited.then(() => "ok"), timeout])) === "timeout") {
        child.kill("SIGKILL");
        await exited;
      }
    },
  };
}
