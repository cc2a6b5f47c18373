// Goal: a real daemon whose journal is on a filesystem that fills up stays up, says it is not ready
// and why, refuses changes with resource_exhausted (disk_full), reports no VM it could not make
// durable (a restart shows exactly what it reported), and takes changes again by itself once space
// is freed. Method: the daemon's --data on a small tmpfs mounted by this test (needs root and
// mount; skipped with the reason printed otherwise), filled with a file until ENOSPC while the
// daemon runs with live guests syncing; the file is then removed and readiness polled.
import { execFileSync } from "node:child_process";
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { stopAllDaemons, TestDaemon } from "../helpers/daemons.js";

const mountPoint = mkdtempSync(join(tmpdir(), "tscmig-tmpfs-"));

/** Mounts a 2 MiB tmpfs, or says why it cannot. */
function mountTmpfs(): string | null {
  if (process.getuid?.() !== 0) return "not root: cannot mount a small filesystem";
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", mountPoint], { stdio: "pipe" });
    return null;
  } catch (e) {
    return `mount -t tmpfs failed: ${e instanceof Error ? e.message.split("\n")[0] : String(e)}`;
  }
}

const skipReason = mountTmpfs();
if (skipReason !== null) process.stdout.write(`daemon-disk-full: SKIPPED: ${skipReason}\n`);

afterAll(async () => {
  await stopAllDaemons();
  if (skipReason === null) execFileSync("umount", [mountPoint]);
  rmSync(mountPoint, { recursive: true, force: true });
});

/** Writes zeros into `path` until the filesystem refuses (ENOSPC); returns the bytes written. */
function fill(path: string): number {
  const fd = openSync(path, "w");
  const chunk = Buffer.alloc(4096);
  let n = 0;
  try {
    for (;;) n += writeSync(fd, chunk);
  } catch (e) {
    if ((e as { code?: string }).code !== "ENOSPC") throw e;
  } finally {
    closeSync(fd);
  }
  return n;
}

/** Polls `fn` until it is true; the deadline is a bound for a hang, not a speed claim. */
async function until(what: string, fn: () => Promise<boolean>, deadlineMs = 60_000): Promise<void> {
  const end = performance.now() + deadlineMs;
  while (performance.now() < end) {
    if (await fn()) return;
    await new Promise((r) => setImmediate(r));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe.skipIf(skipReason !== null)("a real daemon on a filesystem that fills up", () => {
  it("stays up and not ready, refuses with resource_exhausted, reports only durable VMs, and recovers when space is freed", async () => {
    const data = join(mountPoint, "data");
    mkdirSync(data);
    const d = await TestDaemon.start({ name: "full", data, args: ["--journal-sync", "full"] });
    const api = d.api;
    for (const id of ["vm-1", "vm-2"]) expect((await api.send("POST", "/v1/vms", { id, vcpus: 2 })).status).toBe(201);

    const filler = join(mountPoint, "filler");
    fill(filler);
    // Writes now fail: the first refusal may come from a create or from the guests' queued syncs.
    let refused = await api.send("POST", "/v1/vms", { id: "vm-3", vcpus: 2 });
    for (let i = 0; refused.status === 201 && i < 50; i++) refused = await api.send("POST", "/v1/vms", { id: `vm-more-${i}`, vcpus: 64 });
    expect(refused.status).toBe(507);
    expect(refused.body).toMatchObject({ error: { code: "resource_exhausted", reason: "disk_full" } });
    const reported = ((await api.ok("GET", "/v1/vms")) as { vms: { id: string }[] }).vms.map((v) => v.id).sort();

    const ready = await api.send("GET", "/readyz");
    expect(ready.status).toBe(503);
    expect(ready.body).toMatchObject({ ready: false, reason: "journal_unwritable", cause: "disk_full" });
    expect((await api.send("GET", "/healthz")).status).toBe(200);
    // Still up after its timers ran against the full disk for a while (guest syncs, retries).
    const tick = ((await api.ok("GET", "/v1/host")) as { trueNs: string }).trueNs;
    await until("two seconds of daemon time", async () => BigInt(((await api.ok("GET", "/v1/host")) as { trueNs: string }).trueNs) > BigInt(tick) + 2_000_000_000n);
    expect(d.running).toBe(true);
    expect((await api.send("POST", "/v1/vms", { id: "vm-4", vcpus: 1 })).status).toBe(507);

    rmSync(filler);
    await until("readiness after space returned", async () => (await api.send("GET", "/readyz")).status === 200);
    expect((await api.send("POST", "/v1/vms", { id: "vm-after", vcpus: 1 })).status).toBe(201);

    // What it reported is what a restart brings back: nothing vanished, nothing appeared.
    await d.kill("SIGKILL");
    await d.restart();
    const after = ((await d.api.ok("GET", "/v1/vms")) as { vms: { id: string }[] }).vms.map((v) => v.id).sort();
    expect(after).toEqual([...reported, "vm-after"].sort());
    await d.stop();
  });
});
