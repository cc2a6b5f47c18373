// Operational faults against real daemon processes (live mode), the parts that need the machine:
//
//   a port taken   something else listens on a daemon's HTTP or gRPC port when it restarts: it must
//                  exit non-zero at once and release everything (its other port, its journal lock)
//   a full disk    a daemon's data directory on a small tmpfs (root only; `mount -t tmpfs -o size=`)
//                  that the harness fills and frees
//   foreign calls  Abort and Prepare through real gRPC, as a peer that holds no per-migration secret
//                  (the harness knows the migration's id because it chose it: ids are not secret)
//
// What a machine cannot do (no root, no tmpfs) is skipped with the reason, never faked.

import { closeSync, mkdirSync, openSync, rmSync, writeSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { GrpcDialer } from "../../daemon/grpc-peer.js";
import { isTscmigError } from "../../shared/errors.js";
import type { AbortReq, PrepareReq } from "../../shared/migration/messages.js";
import { Guest } from "../../shared/guest/guest.js";
import { EmulatedHost } from "../../shared/hypervisor/host.js";
import { EmulatedVm } from "../../shared/hypervisor/vm.js";
import { captureSnapshot } from "../../shared/migration/snapshot.js";
import { RealClock, RealScheduler } from "../../shared/platform/index.js";

const clock = new RealClock();

/** Listens on `address` (HOST:PORT) until released: the port a restarting daemon wants. */
export async function takePort(address: string): Promise<{ release(): Promise<void> }> {
  const i = address.lastIndexOf(":");
  const server: Server = createServer((s) => s.destroy());
  await new Promise<void>((ok, fail) => {
    server.once("error", fail);
    server.listen(Number(address.slice(i + 1)), address.slice(0, i), () => ok());
  });
  return { release: () => new Promise<void>((ok) => server.close(() => ok())) };
}

/** Whether `address` can be listened on now (the daemon that held it released it). */
export async function portFree(address: string): Promise<boolean> {
  try {
    await (await takePort(address)).release();
    return true;
  } catch {
    return false;
  }
}

export type SmallDisk = { ok: true; fill(): void; free(): void; unmount(): void } | { ok: false; reason: string };

/** Mounts a tmpfs of `sizeBytes` on `dir` (created), for a daemon's data: root only. */
export function smallDisk(dir: string, sizeBytes: number): SmallDisk {
  if (typeof process.getuid !== "function" || process.getuid() !== 0) return { ok: false, reason: "disk-full needs root to mount a small tmpfs; skipped" };
  mkdirSync(dir, { recursive: true });
  const m = spawnSync("mount", ["-t", "tmpfs", "-o", `size=${sizeBytes}`, "tmpfs", dir], { encoding: "utf8" });
  if (m.status !== 0) return { ok: false, reason: `disk-full: mount -t tmpfs failed (${(m.stderr || m.error?.message || "").trim()}); skipped` };
  const filler = join(dir, "filler");
  return {
    ok: true,
    fill: () => {
      const fd = openSync(filler, "a");
      const chunk = Buffer.alloc(16_384, 0xa5);
      try {
        for (;;) writeSync(fd, chunk);
      } catch {
        // ENOSPC: full
      } finally {
        closeSync(fd);
      }
    },
    free: () => rmSync(filler, { force: true }),
    unmount: () => {
      spawnSync("umount", ["-l", dir]);
    },
  };
}

/**
 * One call of a foreign peer through real gRPC; resolves with what the daemon answered. With
 * `peerToken` it is a compromised peer (it holds the deployment's token, never a migration's key);
 * without, an outsider the transport refuses.
 */
async function foreign(call: (d: GrpcDialer) => Promise<unknown>, peerToken?: string): Promise<string> {
  const dialer = new GrpcDialer({ clock, deadlineNs: 5_000_000_000n, ...(peerToken !== undefined ? { headers: { authorization: `Bearer ${peerToken}` } } : {}) });
  try {
    await call(dialer);
    return "accepted";
  } catch (e) {
    return `refused: ${isTscmigError(e) ? `${e.code} ${e.message}` : e instanceof Error ? e.message : String(e)}`;
  } finally {
    dialer.close();
  }
}

/** An Abort for someone else's migration, from a peer that holds no per-migration secret. */
export function foreignAbort(grpcAddress: string, req: AbortReq, peerToken?: string): Promise<string> {
  return foreign((d) => d.dial(grpcAddress).abort(req), peerToken);
}

/** A key of the attacker's own making (the migration's real one never leaves its source). */
const FORGED_KEY = "5a".repeat(16);

/** `count` Prepares never followed up, at most `parallel` at a time; resolves with how many were accepted. */
export async function floodPrepares(grpcAddress: string, count: number, guestTscKhz: bigint, tag: string, peerToken?: string, parallel = 16): Promise<{ accepted: number; refused: number; lastRefusal: string }> {
  const dialer = new GrpcDialer({ clock, deadlineNs: 5_000_000_000n, ...(peerToken !== undefined ? { headers: { authorization: `Bearer ${peerToken}` } } : {}) });
  const peer = dialer.dial(grpcAddress);
  let next = 0;
  let accepted = 0;
  let refused = 0;
  let lastRefusal = "";
  const one = async (): Promise<void> => {
    while (next < count) {
      const k = next++;
      const req: PrepareReq = {
        migrationId: `${tag}-flood-${k}`,
        vmId: `${tag}-flood-vm${k}`,
        generation: 1n,
        vcpuCount: 1,
        guestTscKhz,
        sourceFracBits: 48,
        policy: "advance",
        estimator: "one-sided",
        doorbell: false,
        advanceCapNs: 0n,
        sourceName: "x0",
        sourceGrpc: "127.0.0.1:9",
        sourceKey: FORGED_KEY,
      };
      try {
        await peer.prepare(req);
        accepted++;
      } catch (e) {
        refused++;
        lastRefusal = isTscmigError(e) ? `${e.code} ${e.message}` : String(e);
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: parallel }, () => one()));
  } finally {
    dialer.close();
  }
  return { accepted, refused, lastRefusal };
}

/**
 * Prepare, Transfer and Commit of a snapshot crafted on a VM of the harness's own, under the id of a
 * VM that runs elsewhere at `generation` (observable): what any client that reaches a gRPC port can
 * try when peers do not authenticate. Resolves with the daemon's answer.
 */
export function migrateIn(grpcAddress: string, vm: { vmId: string; generation: bigint; vcpus: number; guestTscKhz: bigint }, tag: string, epochNs: bigint): Promise<string> {
  const host = new EmulatedHost({ name: "x0", clock, epochNs, tscKhz: vm.guestTscKhz });
  const fake = new EmulatedVm(host, { vcpus: vm.vcpus });
  const guest = new Guest(fake, new RealScheduler(), {
    clocksource: "kvm-clock",
    migrationHandling: true,
    handlingMode: "ditch",
    watchVmclock: true,
    pollIntervalNs: 16_000_000_000n,
    resyncDelayNs: 1_000_000_000n,
    ntpSource: () => ({ realtimeNs: host.realtimeNs(), maxerrorNs: 100_000n }),
    driftAllowancePpm: 500n,
  });
  const migrationId = `${tag}-in`;
  const generation = vm.generation + 1n;
  fake.pause();
  guest.stop();
  const snapshot = captureSnapshot(fake, guest, { migrationId, vmId: vm.vmId, generation, hostMaxerrorNs: 100_000n, probe: null });
  return foreign(async (d) => {
    const peer = d.dial(grpcAddress);
    await peer.prepare({
      migrationId,
      vmId: vm.vmId,
      generation,
      vcpuCount: vm.vcpus,
      guestTscKhz: snapshot.guestTscKhz,
      sourceFracBits: snapshot.fracBits,
      policy: "advance",
      estimator: "one-sided",
      doorbell: false,
      advanceCapNs: 0n,
      sourceName: "x0",
      sourceGrpc: "127.0.0.1:9",
      sourceKey: FORGED_KEY,
    });
    const ref = { sourceName: "x0", sourceKey: FORGED_KEY };
    await peer.transfer({ snapshot, sourceAnchorsToSendNs: [], ...ref });
    await peer.commit({ migrationId, vmId: vm.vmId, generation, transferRttNs: 1_000_000n, ...ref });
  });
}
