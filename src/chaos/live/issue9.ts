// The operational and hostile fault kinds as a live run carries them out against real daemons:
//
//   collide      two sources migrate their own VMs to one destination under one migration id
//                (the first crashed at crash.source.afterCommitJournal, or they race)
//   hostile      a crafted snapshot migrated in without credentials; a Prepare flood with the
//                deployment's peer token, then the liveness check after healing
//   disk-full    d1's small filesystem fills for a window, a VM create is tried meanwhile, and the
//                operator may restart it once space is back
//   port-taken   a daemon restarts with one of its ports taken: it must exit non-zero at once and
//                release everything
//
// They draw from their own stream (`rand`), so a run without them draws what it always did.

import type { ApiClient } from "../../client/api.js";
import type { LocalDaemon } from "../../client/local-daemons.js";
import type { Random } from "../../shared/time/random.js";
import { clock, type Json, type LiveCluster, type LiveDaemon, MS, S, wait } from "./cluster.js";
import { floodPrepares, migrateIn, portFree, type SmallDisk, takePort } from "./operational.js";

export interface Issue9Context {
  c: LiveCluster;
  run: number;
  rand: Random;
  sampleIntervalNs: bigint;
  peerToken: string;
  /** d1's small filesystem (disk-full), when this machine could make one. */
  disk: SmallDisk | null;
}

/** d1's small disk fills; a VM create is tried on it; the migration that follows runs on a full disk. */
export async function diskFullWindow(x: Issue9Context, d: LiveDaemon, m: number): Promise<void> {
  if (!x.disk?.ok) return;
  x.disk.fill();
  x.c.fault("disk-full", `${d.name}: its data directory's filesystem is full`);
  if (d.api) x.c.fault("disk-full.create", `${d.name}: VM df${m} ${await x.c.createVm(d, `df${m}`)}`);
}

/** Space comes back after a while; the operator may restart the daemon (what it never made durable is gone). */
export async function diskFullEnd(x: Issue9Context, faults: Random): Promise<void> {
  await wait(faults.bigint(300n * MS, 2n * S));
  const full = x.c.daemons[1] as LiveDaemon;
  if (x.disk?.ok) x.disk.free();
  x.c.fault("disk-full.end", `${full.name}: space is back`);
  if (x.rand.chance(0.5)) {
    await x.c.kill(full, "disk-full: operator restart");
    await x.c.restart(full);
  }
}

/** Restarts `d` with one of its ports taken: it must exit non-zero at once and release everything. */
export async function startWithPortTaken(x: Issue9Context, d: LiveDaemon, which: "http" | "grpc"): Promise<void> {
  const taken = which === "http" ? d.http : d.grpc;
  const hold = await takePort(taken).catch(() => null);
  if (!hold) return;
  x.c.fault("port-taken", `${d.name}: its ${which} port ${taken} is taken as it restarts`);
  const t0 = clock.monotonicNs();
  try {
    const p = await x.c.spawnUnsupervised(d);
    x.c.events.push({ kind: "error", trueNs: clock.monotonicNs(), daemon: d.name, message: `${d.name} reported listening although its ${which} port ${taken} was taken` });
    await p.stop();
  } catch (e) {
    await judgeFailedStart(x, d, { which, taken, t0, e });
  } finally {
    await hold.release();
  }
}

async function judgeFailedStart(x: Issue9Context, d: LiveDaemon, f: { which: "http" | "grpc"; taken: string; t0: bigint; e: unknown }): Promise<void> {
  const other = f.which === "http" ? d.grpc : d.http;
  const msg = f.e instanceof Error ? f.e.message : String(f.e);
  const code = /exited \((\w+)\)/.exec(msg)?.[1];
  const ms = (clock.monotonicNs() - f.t0) / MS;
  const error = (message: string) => x.c.events.push({ kind: "error", trueNs: clock.monotonicNs(), daemon: d.name, message });
  if (!code) error(`${d.name} started with its ${f.which} port taken neither exited nor listened within 15 s (killed): a failed start must exit at once and release its ports and journal lock`);
  else if (code === "0") error(`${d.name} started with its ${f.which} port taken exited with status 0: a failed start must exit non-zero`);
  else if (!(await portFree(other))) error(`${d.name} exited (${code}) with its ${f.which} port taken but left ${other} bound`);
  else x.c.fault("port-taken.exit", `${d.name} exited (${code}) in ${ms} ms and released everything`);
}

/** Two sources migrate their own VMs to one destination under one migration id (d2 crashes first, or they race). */
export async function collide(x: Issue9Context): Promise<void> {
  const c = x.c;
  const d2 = c.daemons[2] as LiveDaemon;
  const other = x.rand.chance(0.5) ? 0 : 1;
  const s2 = c.daemons[other] as LiveDaemon;
  const dst = c.daemons[1 - other] as LiveDaemon;
  if (!d2.api || !s2.api || !dst.api) return;
  const ids = [`c${x.run}a`, `c${x.run}b`] as const;
  await c.createVm(d2, ids[0]);
  await c.createVm(s2, ids[1]);
  await wait(x.sampleIntervalNs * 3n);
  const migrationId = `collide-${x.run}`;
  const crashFirst = x.rand.chance(0.5);
  c.fault("collide", `${d2.name}, ${s2.name} → ${dst.name} with migration id ${migrationId}${crashFirst ? `; ${d2.name} crashes at crash.source.afterCommitJournal` : ""}`);
  const migrate = (src: LiveDaemon, vmId: string) => {
    c.events.push({ kind: "migrateStart", trueNs: clock.monotonicNs(), vmId, source: src.name, destination: dst.name, policy: "advance", estimator: "one-sided", doorbell: false });
    return c.migrate(src, vmId, dst, { migrationId });
  };
  if (crashFirst) {
    await crashFirstSource(x, d2, () => migrate(d2, ids[0]));
    await wait(x.rand.bigint(0n, 40n * MS));
    await migrate(s2, ids[1]);
    await c.restart(d2, 3);
  } else {
    const first = migrate(d2, ids[0]);
    await wait(x.rand.bigint(0n, 40n * MS));
    await Promise.all([first, migrate(s2, ids[1])]);
  }
}

/** Restarts `d2` with crash.source.afterCommitJournal armed and migrates: it dies right after journaling its decision. */
async function crashFirstSource(x: Issue9Context, d2: LiveDaemon, migrate: () => Promise<Json | null>): Promise<void> {
  const c = x.c;
  await c.kill(d2, "collide: restart with crash.source.afterCommitJournal armed");
  await c.restart(d2, 2, { TSCMIG_FAULTS: "crash.source.afterCommitJournal" });
  const p = d2.proc as LocalDaemon;
  d2.stopping = true; // it is meant to die at the site
  const died = new Promise<void>((ok) => (p.child.exitCode !== null ? ok() : p.child.once("exit", () => ok())));
  await Promise.race([migrate(), died]);
  await died;
  c.events.push({ kind: "stop", trueNs: clock.monotonicNs(), daemon: d2.name, vmId: `c${x.run}a`, generation: 0n, why: "crash" });
  c.fault("crash.source.afterCommitJournal", `${d2.name} died at the site`);
  d2.proc = null;
  d2.api = null;
}

/** An outsider migrates a crafted snapshot of vm0, which runs elsewhere, onto the other daemon. */
export async function outsiderMigrateIn(x: Issue9Context): Promise<void> {
  const seen = x.c.lastSeenOn.get("vm0");
  const target = x.c.daemons.slice(0, 2).find((d) => d.name !== seen?.daemon && d.proc);
  if (!seen || !target) return;
  const answer = await migrateIn(target.grpc, { vmId: "vm0", generation: BigInt(seen.generation), vcpus: x.c.vcpusOf.get("vm0") ?? 1, guestTscKhz: 2_000_000n }, `x${x.run}`, x.c.epochNs);
  x.c.fault("hostile.migrate-in", `a crafted snapshot of vm0 (running on ${seen.daemon} at generation ${seen.generation}) migrated into ${target.name} over gRPC, without credentials: ${answer}`);
  // If the daemon took it, it runs the VM too: the harness sees it there from now on.
  await wait(x.sampleIntervalNs * 3n);
}

/** A flood of Prepares at the daemon vm0 is not on, through real gRPC; returns that daemon. */
export async function flood(x: Issue9Context): Promise<LiveDaemon | null> {
  const on = x.c.lastSeenOn.get("vm0")?.daemon;
  const target = x.c.daemons.slice(0, 2).find((d) => d.name !== on && d.proc);
  if (!target) return null;
  const count = 260 + x.rand.int(0, 40);
  const f = await floodPrepares(target.grpc, count, 2_000_000n, `x${x.run}`, x.peerToken);
  x.c.fault("hostile.flood", `${count} Prepares at ${target.name} over gRPC, never followed up, with the deployment's peer token: ${f.accepted} accepted, ${f.refused} refused${f.lastRefusal ? ` (${f.lastRefusal.slice(0, 160)})` : ""}`);
  return target;
}

/** After healing, vm0 migrated to the flooded daemon must commit within the recovery bound. */
export async function liveness(x: Issue9Context, target: LiveDaemon, boundNs: bigint): Promise<void> {
  const c = x.c;
  const what = `migrate vm0 to ${target.name} after a Prepare flood`;
  const t0 = clock.monotonicNs();
  let attempts = 0;
  let last = "no attempt";
  while (clock.monotonicNs() - t0 < boundNs - 2n * S) {
    await wait(S);
    await c.locate();
    const src = c.daemons.find((d) => d !== target && c.lastSeenOn.get("vm0")?.daemon === d.name);
    if (!src?.api || !target.api) {
      last = "vm0 is not where the harness last saw it";
      break;
    }
    attempts++;
    c.events.push({ kind: "migrateStart", trueNs: clock.monotonicNs(), vmId: "vm0", source: src.name, destination: target.name, policy: "advance", estimator: "one-sided", doorbell: false });
    const rep = await (src.api as ApiClient).call<Json>("POST", "/v1/vms/vm0/migrate", { destination: target.proxy.address }, 60_000).catch((e: unknown) => ({ outcome: "error", error: { message: e instanceof Error ? e.message : String(e) } }) as Json);
    if (rep.outcome === "committed") {
      c.events.push({ kind: "liveness", trueNs: clock.monotonicNs(), what, ok: true, attempts, detail: "committed" });
      return;
    }
    last = `${String(rep.outcome)}: ${JSON.stringify(rep.error ?? {}).slice(0, 200)}`;
  }
  c.events.push({ kind: "liveness", trueNs: clock.monotonicNs(), what, ok: false, attempts, detail: `no commit within the recovery bound; last attempt: ${last}` });
}
