// Goal: the live harness runs every daemon of a campaign on the one true epoch it pinned (every
// start and restart, supervised or not), and no daemon outlives its campaign: an aborted run (a
// test's teardown after a timeout) SIGKILLs its daemons and starts none again, SIGTERM to a live
// `tscmig chaos` does the same, and a launcher that exits without stopping its daemons takes them
// with it.
// Method: real daemons from dist/ on loopback. A LiveCluster pinned to an epoch no kernel would
// measure (…123456789 ns) starts, kills and restarts a daemon, and each GET /v1/host must imply that
// epoch. A live run is aborted once its daemons listen; their pids must be gone when it returns. A
// forked launcher spawns a daemon and calls process.exit; the daemon's pid must go away (polled
// against a deadline, never a fixed sleep).
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { ChaosHistory } from "../../src/chaos/history.js";
import { LiveCluster, type LiveDaemon } from "../../src/chaos/live/cluster.js";
import { FaultProxy } from "../../src/chaos/live/proxy.js";
import { runLive } from "../../src/chaos/live/run.js";
import { DEFAULT_SCENARIO } from "../../src/chaos/sim/scenario.js";
import { ApiClient } from "../../src/client/api.js";
import { runningDaemonPids } from "../../src/client/local-daemons.js";
import { RealScheduler } from "../../src/shared/platform/index.js";
import { sleep } from "../../src/shared/time/clock.js";
import { ROOT } from "../helpers/daemons.js";
import { forkTs } from "../helpers/fork-ts.js";

const entry = [join(ROOT, "bin", "tscmig.js")];
const PINNED = 1_700_000_000_123_456_789n;
const pause = (ms: number) => sleep(new RealScheduler(), BigInt(ms) * 1_000_000n);

/** Running (a zombie, exited but not yet reaped by whoever adopted it, counts as gone). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

/** The daemons `parent` runs now (its children whose command line is `… tscmig.js daemon …`). */
function daemonChildren(parent: number): number[] {
  const pids: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === parent && readFileSync(`/proc/${name}/cmdline`, "utf8").split("\0").includes("daemon")) pids.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

async function until(what: string, ok: () => boolean, deadlineMs: number): Promise<void> {
  for (let waited = 0; !ok(); waited += 50) {
    if (waited > deadlineMs) throw new Error(`${what}: not within ${deadlineMs} ms`);
    await pause(50);
  }
}

let teardown: (() => Promise<void>) | null = null;
afterEach(async () => {
  await teardown?.();
  teardown = null;
});

describe("live harness: one pinned true epoch", () => {
  it("every start and restart of every daemon runs on the campaign's epoch", { timeout: 120_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), "tscmig-epoch-"));
    const c = new LiveCluster({ entry, handling: true, trueEpochNs: PINNED });
    teardown = async () => {
      await c.stopAll();
      rmSync(dir, { recursive: true, force: true });
    };
    for (const name of ["d0", "d1"]) {
      const proxy = new FaultProxy();
      const addr = await proxy.start();
      c.daemons.push({ name, proxy, http: "127.0.0.1:0", grpc: "127.0.0.1:0", data: join(dir, name), args: ["--advertise", addr, "--skew-offset-ns", name === "d0" ? "297474881ns" : "-40000000ns"], proc: null, api: null, stopping: false });
    }
    const implied = async (d: LiveDaemon) => {
      const h = await (d.api as ApiClient).call<Record<string, string>>("GET", "/v1/host");
      return BigInt(h.realtimeNs as string) - BigInt(h.trueNs as string) - BigInt(h.skewNs as string);
    };
    await Promise.all(c.daemons.map((d) => c.start(d)));
    const [d0, d1] = c.daemons as [LiveDaemon, LiveDaemon];
    expect(await implied(d0)).toBe(PINNED);
    expect(await implied(d1)).toBe(PINNED);
    await c.kill(d0, "test");
    await c.restart(d0);
    expect(await implied(d0)).toBe(PINNED);
    expect(c.events.filter((e) => e.kind === "error")).toEqual([]);
    expect(c.events.filter((e) => e.kind === "hostClock").length).toBe(3);
  });
});

describe("live harness: no daemon outlives its campaign", () => {
  it("an aborted run SIGKILLs its daemons at once and starts none again", { timeout: 120_000 }, async () => {
    const ac = new AbortController();
    teardown = async () => ac.abort();
    const before = new Set(runningDaemonPids());
    let history: ChaosHistory | null = null;
    const live = { entry, migrations: 4, signal: ac.signal, trueEpochNs: PINNED, onHistory: (h: ChaosHistory) => (history = h) };
    const run = runLive(0, 11n, { ...DEFAULT_SCENARIO, faults: ["kill"], skewMaxNs: 0n }, live);
    const ours = () => runningDaemonPids().filter((p) => !before.has(p));
    await until("the run's two daemons listen", () => ours().length >= 2, 60_000);
    const pids = ours();
    ac.abort();
    const out = await run;
    expect(pids.filter(alive)).toEqual([]);
    expect(ours()).toEqual([]);
    // The run fails, as the harness's doing: nothing claims a daemon crashed.
    const messages = out.violations.map((v) => v.message).join("\n");
    expect(messages).toMatch(/live run failed: .*abort/i);
    expect(messages).not.toMatch(/exited on its own/);
    // And it went no further: no migration, no restart after the abort (a run left going would start four).
    const kinds = (history as ChaosHistory | null)?.events.map((e) => e.kind) ?? [];
    expect(kinds.filter((k) => k === "migrateStart" || k === "restart")).toEqual([]);
  });

  it("SIGTERM to `tscmig chaos --mode live` ends the run under way with its daemons, and starts no other", { timeout: 120_000 }, async () => {
    const cli = spawn(process.execPath, [join(ROOT, "bin", "tscmig.js"), "chaos", "--mode", "live", "--seed", "11", "--runs", "3", "--faults", "kill", "--quiet"], { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    cli.stdout.on("data", (b: Buffer) => (output += b.toString()));
    cli.stderr.on("data", (b: Buffer) => (output += b.toString()));
    const exited = new Promise<number | null>((ok) => cli.once("exit", (code) => ok(code)));
    const seen = new Set<number>();
    teardown = async () => {
      cli.kill("SIGKILL");
      for (const pid of seen) if (alive(pid)) process.kill(pid, "SIGKILL");
    };
    await until("the campaign's daemons run", () => {
      for (const pid of daemonChildren(cli.pid as number)) seen.add(pid);
      return seen.size >= 2;
    }, 60_000);
    cli.kill("SIGTERM");
    const code = await exited;
    expect([...seen].filter(alive), output).toEqual([]);
    expect(output).toMatch(/SIGTERM: stopping the live run and its daemons/);
    expect(output).toMatch(/violation/); // the aborted run is reported as failed, with a summary
    expect(output).toMatch(/ 1 runs from seed 11 /); // not 3: no run starts after the signal
    expect(code).toBe(1);
  });

  /** Forks the orphan launcher; resolves with its daemon's pid and the launcher's exit. */
  async function launch(args: string[] = []) {
    const launcher = forkTs(new URL("../helpers/orphan-launcher.ts", import.meta.url), args);
    const exited = new Promise<void>((ok) => launcher.once("exit", () => ok()));
    const pid = await new Promise<number>((ok, fail) => {
      launcher.once("message", (m) => ok((m as { pid: number }).pid));
      launcher.once("exit", (code) => fail(new Error(`launcher exited (${code}) before its daemon listened`)));
    });
    teardown = async () => {
      if (alive(pid)) process.kill(pid, "SIGKILL"); // what a daemon that outlives its launcher leaves behind
    };
    return { launcher, exited, pid };
  }

  it("a launcher that exits without stopping its daemon takes the daemon with it", { timeout: 120_000 }, async () => {
    const { exited, pid } = await launch();
    await exited;
    // SIGTERM from the launcher's exit hook, then the daemon's own graceful shutdown (≤ 5 s).
    await until(`daemon ${pid} gone after its launcher exited`, () => !alive(pid), 30_000);
  });

  it("a launcher killed with SIGKILL (no exit hook runs) takes its daemon with it: the daemon watches its parent", { timeout: 120_000 }, async () => {
    const { launcher, exited, pid } = await launch(["--stay"]);
    launcher.kill("SIGKILL");
    await exited;
    // The daemon sees its parent change within a poll (0.5 s), then shuts down gracefully (≤ 5 s).
    await until(`daemon ${pid} gone after its launcher was killed`, () => !alive(pid), 30_000);
  });
});
