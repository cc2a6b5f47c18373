// The operational and hostile fault kinds, as the simulated run carries them out (the plans are drawn in scenario.ts):
//
//   collide     sources migrate their own VMs to one destination with one caller-given migration
//               id, racing, or after the first source crashed at crash.source.afterCommitJournal
//   hostile     the actor of hostile.ts, its timed attacks; after healing, the liveness check: a VM
//               migrated to the flooded daemon must commit within the recovery bound
//   disk-full   a daemon's journal writes fail for a window, a VM create is tried meanwhile, and
//               the operator may restart it once space is back
//   damage      the operator restarts a daemon and one of its VM records is damaged while it is
//               down; a daemon that refuses to start or quarantines the record gets the backup
//               copied back and is restarted (so I7 can still be required); one that runs the
//               damaged VM is left to the checker, which must see it in the samples
//
// Each timed action is a task the run waits for before it heals, like a VM's planned migrations.

import { isTscmigError } from "../../shared/errors.js";
import type { FaultSite } from "../../shared/faults.js";
import type { EstimatorName } from "../../shared/migration/blackout.js";
import type { MemoryJournal, VmRecord } from "../../shared/migration/journal.js";
import type { PolicyName } from "../../shared/migration/restore.js";
import type { MigrationReport } from "../../source/migrate-out.js";
import type { TscmigNode } from "../../daemon/node.js";
import type { Scheduler } from "../../shared/time/clock.js";
import type { Random } from "../../shared/time/random.js";
import type { ChaosEvent } from "../history.js";
import { HostileActor } from "./hostile.js";
import { damageableVms, damageStoredVmRecord } from "./journal-faults.js";
import type { SimNetwork } from "./network.js";
import type { CollisionPlan, DamagePlan, DiskFullPlan, Scenario } from "./scenario.js";

const S = 1_000_000_000n;

/** One daemon as the nemeses see it. */
export interface WorldDaemon {
  readonly name: string;
  readonly journal: MemoryJournal;
  readonly tscKhz: bigint;
  /** The running incarnation, if any. */
  node(): TscmigNode | null;
  /** Resolves when the current incarnation dies (never, when down). */
  dead(): Promise<void>;
  /** Journal writes fail until this true instant (disk full). */
  diskFullUntilNs: bigint;
}

/** A pending operator action, carried out when the daemon next starts. */
export type JournalOp = { kind: "damage"; plan: DamagePlan } | { kind: "restore"; backup: VmRecord; detail: string };

/** What runSimulation lends the nemeses. */
export interface SimWorld {
  scen: Scenario;
  daemons: WorldDaemon[];
  net: SimNetwork;
  sched: Scheduler;
  now(): bigint;
  rand: Random;
  faultsActive(): boolean;
  ended(): boolean;
  sleep(ns: bigint): Promise<void>;
  /** Runs `fn` as a task the run waits for before healing. */
  task(fn: () => Promise<void>): void;
  fault(site: string, detail: string): void;
  error(daemon: string, message: string): void;
  record(e: ChaosEvent): void;
  /** Where `vmId` runs as an owner, unlocked. */
  ownerOf(vmId: string): WorldDaemon | null;
  /** Migrates as the harness's drivers do (history, stats); null when the source died meanwhile. */
  migrate(src: WorldDaemon, vmId: string, dst: WorldDaemon, o: { policy: PolicyName; estimator: EstimatorName; migrationId?: string }): Promise<MigrationReport | null>;
  /** The next time `site` fires on `d`, it crashes it. */
  armCrash(d: WorldDaemon, site: FaultSite): void;
  disarm(d: WorldDaemon): void;
  /** The operator (or a nemesis) kills `d`; it restarts after a downtime, carrying out `op` first. */
  restartWith(d: WorldDaemon, site: string, op: JournalOp | null): void;
  /** Adds a VM the harness created at run time to I7's list. */
  track(vmId: string): void;
}

export interface Issue9Nemeses {
  /** Faults stop: the hostile actor goes quiet. */
  heal(): void;
  /** After healing: the liveness check, when a flood happened (resolves with its event recorded). */
  liveness(): Promise<void> | null;
  /** A daemon just started (or failed to) over a record `damage` damaged: did it run it? */
  started(d: WorldDaemon, started: boolean, damaged: DamagedRecord | null): void;
  /** Applies a pending damage to `d`'s journal, if it has a record to damage. */
  damage(d: WorldDaemon, plan: DamagePlan): DamagedRecord | null;
}

export interface DamagedRecord {
  vmId: string;
  backup: VmRecord;
  detail: string;
}

export function startIssue9Nemeses(w: SimWorld): Issue9Nemeses {
  const s = w.scen;
  for (const c of s.collisions) w.task(() => collide(w, c));
  for (const p of s.diskFull) w.task(() => diskFull(w, p));
  for (const p of s.damage)
    w.task(async () => {
      await w.sleep(p.atNs);
      const d = w.daemons[p.daemon] as WorldDaemon;
      if (!w.faultsActive() || !d.node()) return;
      w.restartWith(d, "damage.operator-restart", { kind: "damage", plan: p });
    });
  const actor = s.hostile ? hostileActor(w) : null;
  let floodTarget: WorldDaemon | null = null;
  if (s.hostile && actor) {
    const h = s.hostile;
    const at = (t: bigint, act: () => void) =>
      w.task(async () => {
        await w.sleep(t);
        if (w.faultsActive()) act();
      });
    for (const t of h.replaysAtNs) at(t, () => actor.replay());
    h.migrateInAtNs.forEach((t, k) => at(t, () => actor.migrateIn(k)));
    const f = h.flood;
    if (f)
      w.task(async () => {
        await w.sleep(f.atNs);
        if (!w.faultsActive()) return;
        floodTarget = w.daemons[f.target] as WorldDaemon;
        actor.flood(floodTarget.name, f.count);
      });
  }
  return {
    heal: () => actor?.stop(),
    liveness: () => {
      const f = s.hostile?.flood;
      return floodTarget && f && f.probeVm !== null ? liveness(w, floodTarget, s.vms[f.probeVm]?.id as string, { policy: f.policy, estimator: f.estimator }) : null;
    },
    started: (d, ok, damaged) => afterDamagedStart(w, d, ok, damaged),
    damage: (d, plan) => {
      const ids = damageableVms(d.journal);
      if (ids.length === 0) return null;
      const vmId = w.rand.pick(ids);
      const out = damageStoredVmRecord(d.journal, vmId, plan.edit, w.rand);
      w.fault("damage", `${d.name}: ${out.detail}`);
      return { vmId, ...out };
    },
  };
}
function hostileActor(w: SimWorld): HostileActor {
  return new HostileActor({
    plan: w.scen.hostile as NonNullable<Scenario["hostile"]>,
    net: w.net,
    sched: w.sched,
    rand: w.rand.fork("hostile:actor"),
    fault: w.fault,
    owners: () =>
      w.scen.vms.flatMap((v) => {
        const d = w.ownerOf(v.id);
        const h = d?.node()?.listVms().find((x) => x.id === v.id);
        return d && h ? [{ vmId: v.id, daemon: d.name, generation: h.generation }] : [];
      }),
    daemons: w.daemons.map((d) => d.name),
    tscKhzOf: (name) => w.daemons.find((d) => d.name === name)?.tscKhz ?? 2_000_000n,
  });
}

/** Sources migrate their VMs to one destination under one migration id. */
async function collide(w: SimWorld, c: CollisionPlan): Promise<void> {
  await w.sleep(c.atNs);
  if (!w.faultsActive()) return;
  const dst = w.daemons[c.destination] as WorldDaemon;
  const names = c.sources.map((i) => (w.daemons[i] as WorldDaemon).name);
  w.fault("collide", `${names.join(", ")} → ${dst.name} with migration id ${c.migrationId}${c.crashFirst ? `; ${names[0]} crashes at crash.source.afterCommitJournal` : ""}`);
  const runs: Promise<unknown>[] = [];
  for (let k = 0; k < c.sources.length; k++) {
    if (k > 0) await w.sleep(c.gapsNs[k - 1] as bigint);
    const src = w.daemons[c.sources[k] as number] as WorldDaemon;
    const vmId = w.scen.vms[c.vms[k] as number]?.id as string;
    if (!w.faultsActive() || w.ownerOf(vmId) !== src) continue;
    const first = k === 0 && c.crashFirst;
    if (first) w.armCrash(src, "crash.source.afterCommitJournal");
    const died = src.dead();
    const run = w.migrate(src, vmId, dst, { policy: c.policy, estimator: c.estimator, migrationId: c.migrationId }).finally(() => first && w.disarm(src));
    runs.push(run);
    // The next source comes once the first one died (or finished), as after a crash in production.
    if (first) await Promise.race([run, died]);
  }
  await Promise.allSettled(runs);
}

/** A daemon's disk fills for a window; a create is tried meanwhile; the operator may restart it after. */
async function diskFull(w: SimWorld, p: DiskFullPlan): Promise<void> {
  await w.sleep(p.fromNs);
  const d = w.daemons[p.daemon] as WorldDaemon;
  if (!w.faultsActive()) return;
  d.diskFullUntilNs = p.untilNs;
  w.fault("disk-full", `${d.name}: journal writes fail (ENOSPC) for ${p.untilNs - p.fromNs} ns`);
  if (p.createAtNs !== null) {
    await w.sleep(p.createAtNs - w.now() > 0n ? p.createAtNs - w.now() : 0n);
    tryCreate(w, d, `df${p.daemon}-${p.fromNs}`);
  }
  await w.sleep(p.untilNs > w.now() ? p.untilNs - w.now() : 0n);
  w.fault("disk-full.end", `${d.name}: space is back`);
  if (p.restartAfter && w.faultsActive() && d.node()) w.restartWith(d, "disk-full.operator-restart", null);
}

/** A VM create on a daemon whose disk may be full: a VM it reports must be a VM that lasts (I7). */
function tryCreate(w: SimWorld, d: WorldDaemon, id: string): void {
  const node = d.node();
  if (!node || !w.faultsActive()) return;
  let why = "created";
  try {
    node.createVm({ id, vcpus: 1 + w.rand.int(0, 1), migrationHandling: w.scen.handling });
  } catch (e) {
    why = `refused: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`;
    if (!isTscmigError(e)) w.error(d.name, `createVm threw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)} (a full disk wants a typed resource_exhausted)`);
  }
  const h = node.listVms().find((x) => x.id === id);
  w.fault("disk-full.create", `${d.name}: VM ${id} ${why}; ${h ? "the daemon lists it" : "not listed"}`);
  if (!h) return;
  // The daemon says it exists: from now on it must run somewhere (I7), durable or not.
  w.record({ kind: "vm", trueNs: w.now(), daemon: d.name, vmId: id, vcpus: h.vm.vcpuCount, guestTscKhz: h.vm.guestTscKhz, clocksource: h.guest.clocksource, migrationHandling: w.scen.handling, handlingMode: "ditch" });
  w.track(id);
}

/** After a start over a damaged record: refused or quarantined (backup restored, restart), or ran (the checker's). */
function afterDamagedStart(w: SimWorld, d: WorldDaemon, started: boolean, damaged: DamagedRecord | null): void {
  if (!damaged) return;
  const restore: JournalOp = { kind: "restore", backup: damaged.backup, detail: damaged.detail };
  if (!started) {
    w.fault("damage.refused", `${d.name} did not start over the damaged record (${damaged.detail}); the operator restores it from the backup`);
    w.restartWith(d, "damage.refused-start", restore);
    return;
  }
  const h = d.node()?.listVms().find((x) => x.id === damaged.vmId);
  if (h && h.vm.running) {
    w.fault("damage.ran", `${d.name} runs ${damaged.vmId} from the damaged record (${damaged.detail})`);
    return;
  }
  w.fault("damage.quarantined", `${d.name} did not run ${damaged.vmId} (${damaged.detail}); the operator restores the record and restarts it`);
  w.restartWith(d, "damage.operator-restart", restore);
}

/** After a Prepare flood: the probe VM, migrated to the flooded daemon, must commit within the recovery bound. */
/** The probe migrates with the campaign's policy and estimator, as any other migration of the run would. */
async function liveness(w: SimWorld, target: WorldDaemon, vmId: string, how: { policy: PolicyName; estimator: EstimatorName }): Promise<void> {
  const t0 = w.now();
  const deadline = t0 + w.scen.recoveryBoundNs - 2n * S;
  let attempts = 0;
  let last = "no attempt";
  while (w.now() < deadline && !w.ended()) {
    await w.sleep(S);
    const src = w.ownerOf(vmId);
    if (!src || !target.node()) {
      last = !src ? `${vmId} is not running unlocked anywhere` : `${target.name} is down`;
      continue;
    }
    if (src === target) {
      last = `${vmId} runs on ${target.name} already (only this check migrates it)`;
      break;
    }
    attempts++;
    const r = await w.migrate(src, vmId, target, how);
    if (r?.outcome === "committed") {
      w.record({ kind: "liveness", trueNs: w.now(), what: `migrate ${vmId} to ${target.name} after a Prepare flood`, ok: true, attempts, detail: `committed ${w.now() - t0} ns after healing` });
      return;
    }
    last = r ? `${r.outcome}${r.error ? `: ${r.error.reason ?? r.error.code} ${r.error.message}` : ""}` : "the source died";
  }
  w.record({ kind: "liveness", trueNs: w.now(), what: `migrate ${vmId} to ${target.name} after a Prepare flood`, ok: false, attempts, detail: `no commit within the recovery bound; last attempt: ${last}` });
}
