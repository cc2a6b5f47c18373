// Goal: the CLI explains itself and CI can tell its outcomes apart: exit 0 on success, 1 on a
// migration that did not commit or an unreachable daemon, 2 on a usage or validation error (before
// anything starts); --version; an example and no placeholder text in every command's help; durations
// need a unit; a refused connection names the daemon and `tscmig up`; demo and migrate say which
// policy, estimator and doorbell they use; demo leaves running daemons' skew alone and reports it;
// `up` prefixes both daemons' logs, keeps state in --data and stops on SIGINT; the stop helper
// cancels its kill fallback; a closed stdout (`| head`) ends a command quietly. Method: the built CLI (bin/tscmig.js) as a child process, against real
// daemons on loopback where a daemon is needed.

import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { afterAll, describe, expect, it } from "vitest";
import { spawnDaemon } from "../../src/client/local-daemons.js";
import type { Scheduler } from "../../src/shared/time/clock.js";
import { ROOT, startDaemons, stopAllDaemons } from "../helpers/daemons.js";
import { childEnv, freePort } from "../helpers/proc.js";

const BIN = join(ROOT, "bin", "tscmig.js");
const VERSION = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }).version;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function tscmig(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: childEnv(env), stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    child.once("close", (code) => resolve({ code, stdout, stderr }));
  });
}

afterAll(stopAllDaemons);

const COMMANDS = [["daemon"], ["up"], ["demo"], ["vm"], ["vm", "create"], ["vm", "list"], ["vm", "show"], ["vm", "delete"], ["migrate"], ["skew"], ["chaos"], ["bench"]];

describe("help and version", () => {
  it("--version prints the package version and exits 0", async () => {
    const r = await tscmig(["--version"]);
    expect(r).toMatchObject({ code: 0, stdout: `${VERSION}\n` });
  });

  it("a reader that goes away (tscmig … | head) ends it quietly, without a stack trace", async () => {
    const child = spawn(process.execPath, [BIN, "demo", "--help"], { env: childEnv(), stdio: ["ignore", "pipe", "pipe"] });
    child.stdout.destroy(); // gone before the command writes anything
    let stderr = "";
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    const code = await new Promise<number | null>((resolve) => child.once("close", resolve));
    expect(stderr).toBe("");
    expect(code).toBe(0);
  });

  it("top-level help documents the exit codes", async () => {
    const r = await tscmig(["--help"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/Exit status:\n\s+0 {2}success\n\s+1 {2}a migration that did not commit/);
    expect(r.stdout).toMatch(/\n\s+2 {2}a usage or validation error/);
  });

  for (const cmd of COMMANDS) {
    it(`${cmd.join(" ")} --help has an example and no placeholder text`, async () => {
      const r = await tscmig([...cmd, "--help"]);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain("Examples:\n  $ tscmig ");
      expect(r.stdout).not.toMatch(/undefined|\(issue \d+\)/);
    });
  }

  it("describes migrate's policies and estimators and vm create's clocksources", async () => {
    const migrate = (await tscmig(["migrate", "--help"])).stdout.replace(/\s+/g, " ");
    for (const text of ["advance (TSC and kvmclock", "kvm-realtime (KVM_SET_CLOCK", "freeze (upstream QEMU", "one-sided (durations", "probe (wallclock", 'default: "advance")', 'default: "one-sided")'])
      expect(migrate).toContain(text);
    const create = (await tscmig(["vm", "create", "--help"])).stdout.replace(/\s+/g, " ");
    expect(create).toContain("tsc (read the TSC directly");
    expect(create).toContain("kvm-clock (the pvclock page)");
  });
});

describe("usage and validation errors exit 2 before anything starts", () => {
  const cases: [string, string[], RegExp][] = [
    ["an unknown command", ["bogus"], /unknown command 'bogus'/],
    ["an unknown flag", ["demo", "--bogus"], /unknown option '--bogus'/],
    ["a duration without a unit", ["demo", "--skew", "5"], /"5" has no unit: write e\.g\. 5ms/],
    ["a non-numeric --run-ms", ["demo", "--run-ms", "abc"], /--run-ms <ms>' argument 'abc' is invalid\. expected an integer in 0\.\.600000/],
    ["too many vCPUs", ["demo", "--vcpus", "5000"], /--vcpus <n>' argument '5000' is invalid/],
    ["half the running-daemon flags", ["demo", "--source-http", "http://127.0.0.1:1"], /go together/],
    ["migrate without --to", ["migrate", "vm-1"], /required option '--to <host:port>' not specified/],
    ["a bad --to", ["migrate", "vm-1", "--to", "nowhere"], /--to <host:port>' argument 'nowhere' is invalid/],
    ["skew with nothing to change", ["skew", "--api", "http://127.0.0.1:1"], /give at least one of --offset/],
    ["a chaos duration without a unit", ["chaos", "--skew-max", "50"], /"50" has no unit/],
  ];
  for (const [what, args, message] of cases) {
    it(what, async () => {
      const r = await tscmig(args);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toMatch(message);
      expect(r.stderr).not.toMatch(/BigInt|SyntaxError/);
      expect(r.stdout).not.toContain("started source"); // no daemon was started
    });
  }
});

describe("against daemons", () => {
  it("a refused connection exits 1 and asks whether a daemon runs there", async () => {
    const port = await freePort();
    const r = await tscmig(["vm", "list", "--api", `http://127.0.0.1:${port}`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`connection refused: is a daemon running at http://127.0.0.1:${port}? (\`tscmig up\` starts a pair)`);
  });

  it("migrate shows its policy, estimator, switchover and doorbell; exit 0 when committed, 1 when not", async () => {
    const [src, dst] = await startDaemons({ name: "cli-src" }, { name: "cli-dst" });
    await src.api.createVm({ id: "vm-cli", vcpus: 2 });
    const ok = await tscmig(["migrate", "vm-cli", "--api", src.http, "--to", dst.grpc]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toContain(`migrating VM vm-cli from ${src.http} to ${dst.grpc}: policy advance, estimator one-sided, switchover two-phase, doorbell off`);
    expect(ok.stdout).toMatch(/^outcome: committed/m);
    expect(ok.stdout).toMatch(/reported bound ±.* \(within\)/);
    // Back again, to a port where nothing listens: the migration cannot commit.
    const dead = await freePort();
    const failed = await tscmig(["migrate", "vm-cli", "--api", dst.http, "--to", `127.0.0.1:${dead}`, "--json"]);
    expect(failed.code, failed.stderr).toBe(1);
    expect((JSON.parse(failed.stdout) as { outcome: string }).outcome).not.toBe("committed");
  });

  it("demo against running daemons keeps their skew and reports it, with policy, estimator and doorbell", async () => {
    const [src, dst] = await startDaemons({ name: "demo-src", env: { TSCMIG_SKEW_OFFSET_NS: "3000000" } }, { name: "demo-dst", env: { TSCMIG_SKEW_OFFSET_NS: "20000000" } });
    const r = await tscmig(["demo", "--source-http", src.http, "--destination-http", dst.http, "--destination-grpc", dst.grpc, "--run-ms", "0"]);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(r.stdout).toContain("policy kvm-realtime, estimator wallclock, doorbell on");
    expect(r.stdout).toContain("host realtime skew: source +3.000 ms, destination +20.000 ms; destination − source +17.000 ms");
    expect(r.stdout).toMatch(/^outcome: committed/m);
    // An explicit --skew is relative to the source: the destination ends up 2 ms ahead of it.
    const rel = await tscmig(["demo", "--source-http", src.http, "--destination-http", dst.http, "--destination-grpc", dst.grpc, "--run-ms", "0", "--skew", "2ms", "--policy", "advance", "--estimator", "one-sided", "--no-doorbell"]);
    expect(rel.code, rel.stderr + rel.stdout).toBe(0);
    expect(rel.stdout).toContain("policy advance, estimator one-sided, doorbell off");
    expect(rel.stdout).toContain("destination +5.000 ms; destination − source +2.000 ms");
  });
});

describe("tscmig up", () => {
  it("shows both daemons' logs with a prefix, keeps state in --data, and stops on SIGINT", async () => {
    const data = mkdtempSync(join(tmpdir(), "tscmig-up-"));
    try {
      const base = await freePort();
      const first = await upUntilReady(base, data);
      const api = `http://127.0.0.1:${base}`;
      const created = await tscmig(["vm", "create", "--api", api, "--id", "kept-vm"]);
      expect(created.code, created.stderr).toBe(0);
      expect(await first.interrupt()).toBe(0);
      expect(first.stderr()).toMatch(/^\[source\] INFO {2}daemon listening event=listening/m);
      expect(first.stderr()).toMatch(/^\[destination\] INFO {2}daemon listening/m);
      expect(first.stderr()).toContain("tscmig up: SIGINT: stopping both daemons");
      expect(existsSync(join(data, "source"))).toBe(true);

      const second = await upUntilReady(base, data);
      const list = await tscmig(["vm", "list", "--api", api]);
      expect(await second.interrupt()).toBe(0);
      expect(list.stdout).toContain('"id": "kept-vm"');
    } finally {
      rmSync(data, { recursive: true, force: true });
    }
  });
});

/** `tscmig up` running until its "Ctrl-C stops both" line; interrupt() sends SIGINT and waits for the exit code. */
async function upUntilReady(base: number, data: string): Promise<{ interrupt(): Promise<number | null>; stderr(): string }> {
  const child = spawn(process.execPath, [BIN, "up", "--base-port", String(base), "--data", data], { env: childEnv(), stdio: ["ignore", "pipe", "pipe"] });
  let err = "";
  child.stderr.on("data", (c: Buffer) => (err += c.toString()));
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  await new Promise<void>((ready, fail) => {
    void exited.then((code) => fail(new Error(`tscmig up exited ${code} before it was ready:\n${err}`)));
    createInterface({ input: child.stdout }).on("line", (line) => {
      if (line === "Ctrl-C stops both.") ready();
    });
  });
  return {
    interrupt: () => {
      child.kill("SIGINT");
      return exited;
    },
    stderr: () => err,
  };
}

describe("stopping a daemon started by the CLI", () => {
  it("cancels the SIGKILL fallback once the daemon exited (nothing keeps the CLI waiting)", async () => {
    const timers: { delayNs: bigint; cancelled: boolean }[] = [];
    const scheduler: Scheduler = {
      after: (delayNs) => {
        const t = { delayNs, cancelled: false };
        timers.push(t);
        return { cancel: () => void (t.cancelled = true) };
      },
    };
    const d = await spawnDaemon({ name: "stop-check", scheduler, entry: [BIN] });
    await d.stop();
    expect(d.child.exitCode ?? d.child.signalCode).not.toBeNull();
    expect(timers).toHaveLength(1);
    expect(timers[0]).toMatchObject({ cancelled: true });
  });
});
