// Goal: a daemon that cannot start exits non-zero with one line on stderr that says which port or
// file and what to do, and leaves nothing behind: both ports free, the journal lock released, no
// gRPC port that took a migration meanwhile. Method: real `tscmig daemon` processes against a port
// held by this test (HTTP, then gRPC), a journal row edited behind the daemon's back, and `--data`
// naming a file; after each exit the test binds both ports and opens the journal itself.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";
import { Journal } from "../../src/daemon/journal.js";
import { ROOT, stopAllDaemons, TestDaemon } from "../helpers/daemons.js";

const BIN = join(ROOT, "bin", "tscmig.js");
/** A bound for a hung process, not a speed claim: the exit itself takes well under a second when idle. */
const EXIT_DEADLINE_MS = 30_000;

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "tscmig-start-"));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));
afterAll(stopAllDaemons);

/** A listening socket on a free loopback port; `free()` releases it. */
async function hold(): Promise<{ port: number; server: Server; free: () => Promise<void> }> {
  const server = createServer();
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  const port = (server.address() as { port: number }).port;
  return { port, server, free: () => new Promise<void>((ok) => server.close(() => ok())) };
}

/** A port that was free a moment ago. */
async function freePort(): Promise<number> {
  const h = await hold();
  await h.free();
  return h.port;
}

/** True when this process can bind the port now (nobody holds it). */
async function bindable(port: number): Promise<boolean> {
  const s = createServer();
  return new Promise((ok) => {
    s.once("error", () => ok(false));
    s.listen(port, "127.0.0.1", () => s.close(() => ok(true)));
  });
}

interface Outcome {
  code: number | null;
  signal: string | null;
  stderr: string[];
  stdout: string;
  elapsedMs: number;
}

/** Runs `tscmig daemon` to its exit (killed if it is still up after the deadline: that is a failure). */
async function runToExit(args: string[], env: Record<string, string> = {}): Promise<Outcome> {
  const started = performance.now();
  const child = spawn(process.execPath, [BIN, "daemon", "--name", "s", ...args], { stdio: ["ignore", "pipe", "pipe"], env: { PATH: process.env.PATH ?? "", ...env } });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill("SIGKILL"), EXIT_DEADLINE_MS);
  const [code, signal] = await new Promise<[number | null, string | null]>((ok) => child.once("exit", (c, s) => ok([c, s])));
  clearTimeout(timer);
  const elapsedMs = Math.round(performance.now() - started);
  process.stdout.write(`daemon-start: exited ${code ?? signal} after ${elapsedMs} ms: ${stderr.trim()}\n`);
  return { code, signal, stderr: stderr.split("\n").filter((l) => l.length > 0), stdout, elapsedMs };
}

function expectCleanFailure(o: Outcome, pattern: RegExp): void {
  expect(o.signal, "the daemon hung until the test killed it").toBeNull();
  expect(o.code).toBe(1);
  expect(o.stderr).toHaveLength(1);
  expect(o.stderr[0]).toMatch(/^tscmig daemon s: cannot start: /);
  expect(o.stderr[0]).toMatch(pattern);
  expect(o.stdout).not.toContain('"tscmig":"listening"');
}

/** The journal lock is free: this process can take it. */
function lockFree(data: string): boolean {
  const j = Journal.open(data);
  j.close();
  return true;
}

describe("a daemon that cannot start", () => {
  it("exits when its HTTP port is taken, naming the port and --http; gRPC was never opened and the lock is free", async () => {
    const taken = await hold();
    const grpcPort = await freePort();
    const data = join(dir, "d");
    try {
      const o = await runToExit(["--http", `127.0.0.1:${taken.port}`, "--grpc", `127.0.0.1:${grpcPort}`, "--data", data]);
      expectCleanFailure(o, new RegExp(`control API on 127\\.0\\.0\\.1:${taken.port}: the port is in use .*--http.*port_in_use`));
      expect(await bindable(grpcPort)).toBe(true);
      expect(lockFree(data)).toBe(true);
    } finally {
      await taken.free();
    }
  });

  it("exits when --backend kvm cannot open its KVM device, naming the device and why; no port opened, the lock free", async () => {
    const [httpPort, grpcPort] = [await freePort(), await freePort()];
    const data = join(dir, "d");
    const o = await runToExit(["--backend", "kvm", "--kvm-device", join(dir, "no-kvm"), "--http", `127.0.0.1:${httpPort}`, "--grpc", `127.0.0.1:${grpcPort}`, "--data", data]);
    expectCleanFailure(o, /--backend kvm: cannot use KVM: .*no-kvm does not exist \(ENOENT\).*kvm_absent/);
    expect(await bindable(httpPort)).toBe(true);
    expect(await bindable(grpcPort)).toBe(true);
  });

  it("exits when its gRPC port is taken, naming the port and --grpc; the HTTP port and the lock are released", async () => {
    const taken = await hold();
    const httpPort = await freePort();
    const data = join(dir, "d");
    try {
      const o = await runToExit(["--http", `127.0.0.1:${httpPort}`, "--grpc", `127.0.0.1:${taken.port}`, "--data", data]);
      expectCleanFailure(o, new RegExp(`gRPC \\(peers\\) on 127\\.0\\.0\\.1:${taken.port}: the port is in use .*--grpc`));
      expect(await bindable(httpPort)).toBe(true);
      expect(lockFree(data)).toBe(true);
    } finally {
      await taken.free();
    }
  });

  it("exits on a journal row of an unknown role, naming the VM and the record, before any port is open", async () => {
    const d = await TestDaemon.start({ name: "s" });
    const created = await d.api.send("POST", "/v1/vms", { id: "vm-damaged", vcpus: 2 });
    expect(created.status).toBe(201);
    await d.stop();
    const db = new Database(join(d.data, "tscmig.db"));
    db.pragma("ignore_check_constraints = ON");
    db.exec("UPDATE vms SET role = 'bogus' WHERE vm_id = 'vm-damaged'");
    db.close();
    const [httpPort, grpcPort] = [await freePort(), await freePort()];
    const o = await runToExit(["--http", `127.0.0.1:${httpPort}`, "--grpc", `127.0.0.1:${grpcPort}`, "--data", d.data]);
    expectCleanFailure(o, /journal VM record of vm-damaged is damaged: unknown role "bogus".*data_loss\/journal_record_damaged/);
    expect(await bindable(httpPort)).toBe(true);
    expect(await bindable(grpcPort)).toBe(true);
    expect(lockFree(d.data)).toBe(true);
  });

  it("exits when --data names a file, saying so (not a raw EEXIST)", async () => {
    const file = join(dir, "not-a-dir");
    writeFileSync(file, "x");
    const o = await runToExit(["--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--data", file]);
    expectCleanFailure(o, /data directory .*not-a-dir: a file is in the way.*data_dir_unusable/);
    expect(o.stderr[0]).not.toMatch(/EEXIST/);
  });

  it("exits when its --data belongs to a daemon of another name, naming both; the journal is untouched", async () => {
    const d = await TestDaemon.start({ name: "first" });
    expect((await d.api.send("POST", "/v1/vms", { id: "vm-kept", vcpus: 1 })).status).toBe(201);
    await d.stop();
    const o = await runToExit(["--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--data", d.data]);
    expectCleanFailure(o, /belongs to the daemon named "first", not "s": start it with --name first.*journal_owner_mismatch/);
    const j = Journal.open(d.data, { owner: "first" });
    expect(j.getVm("vm-kept")).toBeDefined();
    j.close();
  });

  it("exits on a launcher pid that is not a process id, naming the variable", async () => {
    const o = await runToExit(["--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--data", join(dir, "d")], { TSCMIG_EXIT_WITH_PARENT: "12ab" });
    expectCleanFailure(o, /TSCMIG_EXIT_WITH_PARENT must be a process id .*"12ab".*invalid_argument/);
  });

  it("exits when another daemon holds the journal, saying which", async () => {
    const d = await TestDaemon.start({ name: "holder" });
    const o = await runToExit(["--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--data", d.data]);
    expectCleanFailure(o, /is in use by another process.*journal_locked/);
    expect((await d.api.send("GET", "/readyz")).status).toBe(200); // the holder is untouched
  });
});
