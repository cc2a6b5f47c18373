// Child processes for integration and e2e tests: spawn a daemon-like process, wait until it answers
// on /healthz (or prints a line), keep its output for failure messages, stop it with SIGTERM then
// SIGKILL, restart it. Waiting is polling against a bounded deadline, never a fixed sleep: a test
// is correct however fast or slow the machine is, and a hang ends with the child's own logs.
//
// Where a process runs is the caller's choice (`spawn`): the default runs it here, and
// test/helpers/netns.ts's `spawnIn(side, ...)` runs it inside a network namespace.

import { type ChildProcess, type SpawnOptions, spawn as spawnChild } from "node:child_process";
import { request } from "node:http";
import { createServer } from "node:net";
import { createInterface } from "node:readline";

export type Spawner = (command: string, args: readonly string[], options: SpawnOptions) => ChildProcess;

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface LogLine {
  /** 1 for the first start, 2 after the first restart, ... */
  incarnation: number;
  stream: "stdout" | "stderr";
  text: string;
}

export interface ProcessOptions {
  /** Shown in logs and errors. */
  name: string;
  command: string;
  args: readonly string[];
  /** Added over this process's environment, from which every TSCMIG_* key is removed first (the
   * daemon rejects unknown TSCMIG_* keys, so nothing leaks in from the shell). `undefined` unsets. */
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** How to start the child; default: here, with node's spawn. */
  spawn?: Spawner;
  /** Ready once a GET of this URL answers 2xx (a function: evaluated at each start). */
  readyUrl?: string | (() => string);
  /** Ready once a stdout or stderr line matches (checked after readyUrl when both are given). */
  readyLine?: RegExp;
  /** Bound on the readiness wait (default 20 s). */
  readyTimeoutMs?: number;
  /** Pause between readiness polls (default 50 ms). */
  pollIntervalMs?: number;
  /** How long `kill("SIGTERM")` waits before SIGKILL (default 5 s). */
  stopGraceMs?: number;
  /** Lines kept for failure output, oldest dropped first (default 5000). */
  logLinesMax?: number;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

/** Last resort when a test file dies before its afterAll: no child outlives the test worker. */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const child of live) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  });
}

/** The parent's environment without TSCMIG_* keys, plus `extra`. */
export function childEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("TSCMIG_")) env[k] = v;
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

/** A TCP port that was free on `host` a moment ago (bind port 0, read it, close). */
export function freePort(host = "127.0.0.1"): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once("error", reject);
    server.listen({ port: 0, host, exclusive: true }, () => {
      const address = server.address();
      server.close(() => {
        if (address !== null && typeof address === "object") resolve(address.port);
        else reject(new Error(`freePort: no port from ${String(address)}`));
      });
    });
  });
}

/** One GET with its own connection and a bound on the whole exchange. */
export function httpGet(url: string, timeoutMs = 2_000): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: "GET", agent: false, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error(`GET ${url}: no answer within ${timeoutMs} ms`)));
    req.on("error", reject);
    req.end();
  });
}

function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Polls `url` until it answers 2xx or `timeoutMs` passes. `gaveUp()` is asked before every poll:
 * a non-null answer (for example "process exited with code 1") ends the wait at once.
 */
export async function waitForHttpOk(
  url: string,
  opts: { timeoutMs?: number; intervalMs?: number; gaveUp?: () => string | null } = {},
): Promise<void> {
  const timeoutMs = opts.timeoutMs ?? 20_000;
  const intervalMs = opts.intervalMs ?? 50;
  const deadline = performance.now() + timeoutMs;
  let last = "no attempt";
  for (let attempt = 1; ; attempt++) {
    const stop = opts.gaveUp?.() ?? null;
    if (stop !== null) throw new Error(`GET ${url}: ${stop} (last attempt: ${last})`);
    const left = deadline - performance.now();
    if (left <= 0) throw new Error(`GET ${url}: not ready after ${timeoutMs} ms and ${attempt - 1} attempts (last: ${last})`);
    try {
      const res = await httpGet(url, Math.max(1, Math.min(2_000, left)));
      if (res.status >= 200 && res.status < 300) return;
      last = `HTTP ${res.status} ${res.body.slice(0, 200)}`;
    } catch (e) {
      last = e instanceof Error ? e.message : String(e);
    }
    await pause(Math.min(intervalMs, Math.max(0, deadline - performance.now())));
  }
}

/** A child process that can be started, probed, stopped and started again, keeping every line it printed. */
export class ManagedProcess {
  readonly options: ProcessOptions;
  private child: ChildProcess | null = null;
  private exitPromise: Promise<ExitStatus> | null = null;
  private lastExit: ExitStatus | null = null;
  private incarnation = 0;
  private readonly buffer: LogLine[] = [];
  private readonly lineWaiters = new Set<(line: LogLine) => void>();

  constructor(options: ProcessOptions) {
    this.options = options;
  }

  get name(): string {
    return this.options.name;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get running(): boolean {
    return this.child !== null && this.lastExit === null;
  }

  /** How the latest incarnation ended, or null while it runs (or before the first start). */
  get exitStatus(): ExitStatus | null {
    return this.lastExit;
  }

  /** Every kept line, oldest first. */
  get lines(): readonly LogLine[] {
    return this.buffer;
  }

  /** The last `tail` lines, formatted for a failure message. */
  logs(tail = 200): string {
    const shown = this.buffer.slice(-tail);
    const head = `--- ${this.name}: last ${shown.length} of ${this.buffer.length} kept lines ---`;
    return [head, ...shown.map((l) => `[${this.name}#${l.incarnation} ${l.stream}] ${l.text}`)].join("\n");
  }

  /** Spawns a new incarnation and waits until it is ready; on failure it is stopped and the error carries its logs. */
  async start(): Promise<void> {
    if (this.running) throw new Error(`${this.name}: already running (pid ${this.pid})`);
    const o = this.options;
    this.incarnation += 1;
    const incarnation = this.incarnation;
    const spawner = o.spawn ?? ((c, a, opts) => spawnChild(c, [...a], opts));
    const child = spawner(o.command, o.args, {
      cwd: o.cwd,
      env: childEnv(o.env),
      stdio: ["ignore", "pipe", "pipe"],
    });
    installExitHook();
    live.add(child);
    this.child = child;
    this.lastExit = null;
    this.exitPromise = new Promise<ExitStatus>((resolve) => {
      let settled = false;
      const settle = (status: ExitStatus) => {
        if (settled) return;
        settled = true;
        live.delete(child);
        if (this.child === child) this.lastExit = status;
        resolve(status);
      };
      // 'close' comes after the output streams ended, so every line is in the buffer by then.
      child.once("close", (code, signal) => settle({ code, signal }));
      child.once("error", (err) => {
        this.record(incarnation, "stderr", `spawn error: ${err.message}`);
        settle({ code: null, signal: null });
      });
    });
    for (const [stream, source] of [
      ["stdout", child.stdout],
      ["stderr", child.stderr],
    ] as const) {
      if (source === null) continue;
      createInterface({ input: source, crlfDelay: Infinity }).on("line", (text) => this.record(incarnation, stream, text));
    }
    try {
      await this.waitReady();
    } catch (e) {
      await this.kill("SIGKILL");
      const reason = e instanceof Error ? e.message : String(e);
      throw new Error(`${this.name}: not ready: ${reason}\n${this.logs()}`, { cause: e });
    }
  }

  private record(incarnation: number, stream: LogLine["stream"], text: string): void {
    const line = { incarnation, stream, text };
    this.buffer.push(line);
    const max = this.options.logLinesMax ?? 5_000;
    if (this.buffer.length > max) this.buffer.splice(0, this.buffer.length - max);
    for (const waiter of [...this.lineWaiters]) waiter(line);
  }

  private exitReason(): string | null {
    const s = this.lastExit;
    if (s === null) return null;
    return s.signal !== null ? `process ended by ${s.signal}` : `process exited with code ${s.code}`;
  }

  private async waitReady(): Promise<void> {
    const o = this.options;
    const timeoutMs = o.readyTimeoutMs ?? 20_000;
    const started = performance.now();
    if (o.readyUrl !== undefined) {
      const url = typeof o.readyUrl === "function" ? o.readyUrl() : o.readyUrl;
      await waitForHttpOk(url, { timeoutMs, intervalMs: o.pollIntervalMs, gaveUp: () => this.exitReason() });
    }
    if (o.readyLine !== undefined) {
      const left = Math.max(1, timeoutMs - (performance.now() - started));
      await this.waitForLine(o.readyLine, { timeoutMs: left, incarnation: this.incarnation });
    }
  }

  /**
   * The first line matching `pattern`, searched in the lines already kept and then as they come
   * (only lines of `incarnation` when given). Rejects after `timeoutMs` or when the process ends.
   */
  waitForLine(pattern: RegExp, opts: { timeoutMs?: number; incarnation?: number } = {}): Promise<LogLine> {
    const timeoutMs = opts.timeoutMs ?? 20_000;
    const matches = (l: LogLine) => (opts.incarnation === undefined || l.incarnation === opts.incarnation) && pattern.test(l.text);
    const seen = this.buffer.find(matches);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise<LogLine>((resolve, reject) => {
      const done = (fn: () => void) => {
        clearTimeout(timer);
        this.lineWaiters.delete(waiter);
        fn();
      };
      const waiter = (l: LogLine) => {
        if (matches(l)) done(() => resolve(l));
      };
      const timer = setTimeout(
        () => done(() => reject(new Error(`${this.name}: no line matching ${pattern} within ${timeoutMs} ms`))),
        timeoutMs,
      );
      this.lineWaiters.add(waiter);
      const exit = this.exitPromise;
      const child = this.child;
      void exit?.then((s) => {
        if (this.child !== child) return;
        // Lines are all recorded before 'close': one last look, then give up.
        const late = this.buffer.find(matches);
        if (late !== undefined) done(() => resolve(late));
        else {
          const how = s.signal !== null ? `ended by ${s.signal}` : `exited with code ${s.code}`;
          done(() => reject(new Error(`${this.name}: ${how} before a line matched ${pattern}`)));
        }
      });
    });
  }

  /** Sends `signal` and returns at once (SIGSTOP/SIGCONT to freeze a process, SIGHUP, ...). */
  signal(signal: NodeJS.Signals): void {
    if (!this.running || this.child === null) throw new Error(`${this.name}: not running`);
    this.child.kill(signal);
  }

  /**
   * Sends `signal` (default SIGTERM: graceful) and waits for the process to end; if it is still
   * there after `stopGraceMs`, SIGKILL (after a SIGCONT, in case it was stopped). Use "SIGKILL" to
   * simulate a crash. Resolves at once when the process is not running.
   */
  async kill(signal: NodeJS.Signals = "SIGTERM"): Promise<ExitStatus> {
    const child = this.child;
    const exit = this.exitPromise;
    if (child === null || exit === null) return { code: null, signal: null };
    if (this.lastExit !== null) return this.lastExit;
    child.kill(signal);
    if (signal === "SIGKILL") return exit;
    const graceMs = this.options.stopGraceMs ?? 5_000;
    let timer: NodeJS.Timeout | undefined;
    const overdue = new Promise<"overdue">((resolve) => {
      timer = setTimeout(() => resolve("overdue"), graceMs);
    });
    const first = await Promise.race([exit, overdue]);
    clearTimeout(timer);
    if (first !== "overdue") return first;
    this.record(this.incarnation, "stderr", `[proc helper] still running ${graceMs} ms after ${signal}: SIGKILL`);
    child.kill("SIGCONT");
    child.kill("SIGKILL");
    return exit;
  }

  /** Waits for the current incarnation to end by itself, bounded. */
  async waitExit(timeoutMs = 20_000): Promise<ExitStatus> {
    const exit = this.exitPromise;
    if (exit === null) throw new Error(`${this.name}: never started`);
    let timer: NodeJS.Timeout | undefined;
    const overdue = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${this.name}: still running after ${timeoutMs} ms\n${this.logs()}`)), timeoutMs);
    });
    try {
      return await Promise.race([exit, overdue]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Stops the current incarnation (SIGTERM, then SIGKILL) if it runs, then starts a new one and waits until ready. */
  async restart(): Promise<void> {
    await this.kill("SIGTERM");
    await this.start();
  }
}

/** Creates a ManagedProcess and starts it (spawn + readiness wait). */
export async function startProcess(options: ProcessOptions): Promise<ManagedProcess> {
  const p = new ManagedProcess(options);
  await p.start();
  return p;
}
