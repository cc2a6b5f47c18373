// Real tscmig daemon processes for integration tests: `node bin/tscmig.js daemon ...` on loopback
// (port 0, a temporary --data), the `"event":"listening"` log line (stdout) parsed for the bound
// addresses, logs kept for failure messages. A daemon can be killed (SIGKILL: no cleanup, as a
// crash) and restarted on the same ports and the same --data, which is what recovery needs: peers
// journaled its address. A small control-API client returns status and body without throwing, so
// bad-input tests can look at both. Waiting is polling against a bounded deadline, never a sleep.
//
// bin/tscmig.js loads dist/: test/helpers/dist-fresh.ts (vitest globalSetup) rebuilds a stale dist.

import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { request } from "undici";
import { listeningOf } from "../../src/shared/log.js";
import { TRUE_EPOCH_ENV, trueEpochNs } from "../../src/shared/platform/index.js";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
/** The daemon under test; TSCMIG_TEST_BIN runs these tests against another build (e.g. an older one). */
const BIN = process.env.TSCMIG_TEST_BIN ?? join(ROOT, "bin", "tscmig.js");
const LOG_LINES_MAX = 2000;

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface DaemonOptions {
  name: string;
  /** Extra daemon flags, e.g. ["--tsc-scaling", "false"]; kept across restarts. */
  args?: string[];
  /** Extra environment for this start only (e.g. TSCMIG_FAULTS); TSCMIG_* of the test runner never leak in. */
  env?: Record<string, string>;
  /** Bearer token the control API requires (passed as --token, and used by `api`). */
  token?: string;
  /** How long to wait for the listening line. */
  startTimeoutMs?: number;
  /** The data directory (default: a new temporary one, removed by stopAllDaemons). */
  data?: string;
}

const live = new Set<TestDaemon>();
const dataRoots = new Set<string>();
let exitHook = false;

function installExitHook(): void {
  if (exitHook) return;
  exitHook = true;
  // Last resort when a worker dies before afterAll: no daemon outlives the test process.
  process.once("exit", () => {
    for (const d of live) d.child.kill("SIGKILL");
  });
}

/** The test process's environment without its TSCMIG_*, and one true epoch for every daemon it starts. */
function childEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("TSCMIG_")) env[k] = v;
  return { ...env, [TRUE_EPOCH_ENV]: String(trueEpochNs()), ...extra };
}

export class TestDaemon {
  readonly name: string;
  readonly data: string;
  readonly args: string[];
  readonly token: string | undefined;
  /** Lines of every incarnation, oldest dropped first. */
  readonly logs: string[] = [];
  child!: ChildProcess;
  /** `http://127.0.0.1:PORT` */
  http = "";
  /** `127.0.0.1:PORT` (gRPC) */
  grpc = "";
  exited!: Promise<ExitStatus>;
  private incarnation = 0;

  private constructor(o: DaemonOptions, data: string) {
    this.name = o.name;
    this.data = data;
    this.args = o.args ?? [];
    this.token = o.token;
  }

  static async start(o: DaemonOptions): Promise<TestDaemon> {
    let data = o.data;
    if (data === undefined) {
      const root = mkdtempSync(join(tmpdir(), "tscmig-it-"));
      dataRoots.add(root);
      data = join(root, o.name);
    }
    const d = new TestDaemon(o, data);
    await d.spawn("127.0.0.1:0", "127.0.0.1:0", o.env ?? {}, o.startTimeoutMs ?? 20_000);
    return d;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  get api(): Api {
    return new Api(this.http, this.token);
  }

  private async spawn(http: string, grpc: string, env: Record<string, string>, timeoutMs: number): Promise<void> {
    installExitHook();
    this.incarnation += 1;
    const tag = `[${this.name}#${this.incarnation}]`;
    const args = [BIN, "daemon", "--name", this.name, "--http", http, "--grpc", grpc, "--data", this.data, ...this.args];
    if (this.token !== undefined) args.push("--token", this.token);
    const child = spawn(process.execPath, args, { env: childEnv(env), stdio: ["ignore", "pipe", "pipe"] });
    this.child = child;
    live.add(this);
    this.exited = new Promise((r) =>
      child.once("exit", (code, signal) => {
        live.delete(this);
        r({ code, signal });
      }),
    );
    const keep = (line: string) => {
      this.logs.push(`${tag} ${line}`);
      if (this.logs.length > LOG_LINES_MAX) this.logs.shift();
    };
    createInterface({ input: child.stderr! }).on("line", keep);
    const listening = await new Promise<{ http: string; grpc: string }>((ok, fail) => {
      const timer = setTimeout(() => fail(new Error(`${tag} no listening line within ${timeoutMs} ms\n${this.tail()}`)), timeoutMs);
      void this.exited.then((s) => {
        clearTimeout(timer);
        fail(new Error(`${tag} exited (${s.code ?? s.signal}) before listening\n${this.tail()}`));
      });
      createInterface({ input: child.stdout! }).on("line", (line) => {
        keep(line);
        const at = listeningOf(line);
        if (at) {
          clearTimeout(timer);
          ok(at);
        }
      });
    });
    this.http = `http://${listening.http}`;
    this.grpc = listening.grpc;
  }

  /** The last log lines, for failure messages. */
  tail(n = 40): string {
    return this.logs.slice(-n).join("\n");
  }

  /** Log lines (JSON) whose `event` is `event`. */
  events(event: string): Record<string, unknown>[] {
    const out: Record<string, unknown>[] = [];
    for (const l of this.logs) {
      const i = l.indexOf("{");
      if (i < 0 || !l.includes(`"event":"${event}"`)) continue;
      try {
        out.push(JSON.parse(l.slice(i)) as Record<string, unknown>);
      } catch {
        // not a JSON line
      }
    }
    return out;
  }

  /** Sends `signal` (SIGKILL: a crash) and waits for the exit. */
  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<ExitStatus> {
    if (this.running) this.child.kill(signal);
    return this.exited;
  }

  /** Starts the daemon again (it must have exited) on the same ports and --data. */
  async restart(env: Record<string, string> = {}): Promise<void> {
    if (this.running) throw new Error(`${this.name} is still running`);
    await this.spawn(this.http.replace(/^http:\/\//, ""), this.grpc, env, 20_000);
  }

  /** SIGTERM (graceful), SIGKILL after `graceMs`. */
  async stop(graceMs = 5000): Promise<void> {
    if (!this.running) return;
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

/**
 * Every failure a daemon answered was a typed error: no gRPC handler threw something untyped, no
 * HTTP route answered 500, no promise was rejected unhandled — in any incarnation of the process.
 */
export function expectNoUntypedErrors(d: TestDaemon): void {
  const bad = d.logs.filter(
    (l) => l.includes('"event":"rpc.handler_failed"') || l.includes('"event":"unhandled_rejection"') || (l.includes('"level":50') && l.includes('"msg":"internal error"')),
  );
  if (bad.length > 0) throw new Error(`${d.name} logged untyped errors:\n${bad.join("\n")}`);
}

/** Stops every daemon this process started and removes their data directories (afterAll). */
export async function stopAllDaemons(): Promise<void> {
  await Promise.all([...live].map((d) => d.stop()));
  for (const root of dataRoots) rmSync(root, { recursive: true, force: true });
  dataRoots.clear();
}

/** Starts daemons in parallel; one TestDaemon per options, in order. */
export async function startDaemons<T extends DaemonOptions[]>(...opts: T): Promise<{ [K in keyof T]: TestDaemon }> {
  return (await Promise.all(opts.map((o) => TestDaemon.start(o)))) as { [K in keyof T]: TestDaemon };
}

// ---- control API ------------------------------------------------------------------------------

export type Json = Record<string, unknown>;

export interface ApiAnswer<T = Json> {
  status: number;
  body: T;
  /** The raw text (for non-JSON answers). */
  text: string;
}

export class Api {
  constructor(
    readonly base: string,
    readonly token?: string,
  ) {}

  /** Any request; never throws on a status. `body` as a string is sent raw (malformed JSON tests). */
  async send<T = Json>(method: "GET" | "POST" | "PUT" | "DELETE", path: string, body?: unknown, headers: Record<string, string> = {}): Promise<ApiAnswer<T>> {
    const h: Record<string, string> = { ...headers };
    if (body !== undefined && h["content-type"] === undefined) h["content-type"] = "application/json";
    if (this.token !== undefined && h.authorization === undefined) h.authorization = `Bearer ${this.token}`;
    const res = await request(`${this.base}${path}`, {
      method,
      headers: h,
      ...(body !== undefined ? { body: typeof body === "string" || body instanceof Uint8Array ? body : JSON.stringify(body) } : {}),
      headersTimeout: 30_000,
      bodyTimeout: 30_000,
    });
    const text = await res.body.text();
    let parsed: unknown;
    try {
      parsed = text.length > 0 ? JSON.parse(text) : {};
    } catch {
      parsed = { nonJson: text };
    }
    return { status: res.statusCode, body: parsed as T, text };
  }

  /** A request that must succeed (2xx); the error names the call and the answer. */
  async ok<T = Json>(method: "GET" | "POST" | "PUT", path: string, body?: unknown): Promise<T> {
    const r = await this.send<T>(method, path, body);
    if (r.status < 200 || r.status > 299) throw new Error(`${method} ${this.base}${path} → ${r.status}: ${r.text.slice(0, 2000)}`);
    return r.body;
  }

  createVm(body: Json): Promise<Json> {
    return this.ok("POST", "/v1/vms", body);
  }

  vm(id: string, vcpus?: number): Promise<VmJson> {
    return this.ok<VmJson>("GET", `/v1/vms/${encodeURIComponent(id)}${vcpus !== undefined ? `?vcpus=${vcpus}` : ""}`);
  }

  async vmOrNull(id: string, vcpus = 0): Promise<VmJson | null> {
    const r = await this.send<VmJson>("GET", `/v1/vms/${encodeURIComponent(id)}?vcpus=${vcpus}`);
    if (r.status === 404) return null;
    if (r.status !== 200) throw new Error(`GET vm ${id} → ${r.status}: ${r.text}`);
    return r.body;
  }

  migrate(id: string, body: Json): Promise<ApiAnswer<ReportJson>> {
    return this.send<ReportJson>("POST", `/v1/vms/${encodeURIComponent(id)}/migrate`, body);
  }

  async history(): Promise<{ samples: SampleJson[]; events: Json[] }> {
    return this.ok("GET", "/v1/history?limit=100000");
  }

  async healthy(): Promise<boolean> {
    try {
      return (await this.send("GET", "/healthz")).status === 200;
    } catch {
      return false;
    }
  }
}

/** GET /v1/vms/:id as JSON (64-bit values are decimal strings). */
export interface VmJson {
  id: string;
  generation: string;
  role: string;
  running: boolean;
  vcpus: number;
  guestTscKhz: string;
  trueNs: string;
  kvmNs: string;
  vcpu: { index: number; tsc: string; tscOffset: string; ratio: string; kvmclockNs: string; pvclock: { version: number; flags: number } }[];
  handledMigrations: string;
  doorbellsDelivered?: number;
  vmclock: { disruptionMarker: string; seqCount?: number; timeMaxerrorNanosec?: string };
  migrating: string | null;
  ntp: { synchronized: boolean; maxerrorUs: string };
  bounded: { status: string };
}

export interface ReportJson {
  migrationId: string;
  vmId: string;
  outcome: "committed" | "aborted" | "refused" | "in-doubt";
  error?: { code: string; message: string; field?: string; reason?: string };
  generation: string;
  vcpus: number;
  guestTscKhz: string;
  trueBlackoutNs: string;
  estimatedBlackoutNs: string;
  advancedNs: string;
  errorBoundNs: string;
  doorbellRung: boolean;
  disruptionMarker: string;
  tscAtPause: string;
  tscAtResume: string;
  tscIdealAtResume: string;
  tscErrorNs: string;
  kvmclockErrorNs: string;
  stoppedVcpus: number;
  pauseTrueNs: string;
  resumeTrueNs: string;
  [k: string]: unknown;
}

export interface SampleJson {
  trueNs: string;
  daemon: string;
  vmId: string;
  generation: string;
  vcpus: number[];
  tsc: string[];
  kvmclockNs: string[];
}

// ---- waiting ----------------------------------------------------------------------------------

/**
 * Polls `probe` every `intervalMs` until it returns something other than undefined/false, or fails
 * after `timeoutMs` with `what` and the last error. Never a fixed sleep: the deadline only bounds a hang.
 */
export async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 10_000, intervalMs = 25): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined && v !== false) return v;
    } catch (e) {
      last = e;
    }
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

export const abs = (x: bigint): bigint => (x < 0n ? -x : x);
