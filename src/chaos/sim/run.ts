// One simulated run: the real daemon cores (TscmigNode × 2–3) in one process, on one SimClock and
// SimScheduler, joined by the simulated network, every choice drawn from one seed.
//
// Processes. A daemon's life is an *incarnation*: a TscmigNode over the daemon's host and its
// MemoryJournal (the "disk"). When a named fault site fires a crash (crashPoint throws CrashSignal)
// or the kill nemesis strikes, the incarnation's fence drops at that very instant: its timers stop
// firing, its calls never hear back, its journal and history writes are discarded — a dead process
// does nothing more. The node object is thrown away; after a downtime a new TscmigNode is built over
// the *same* journal and host and `start()` recovers from the journal.
//
// Determinism. Nothing here reads real time or real randomness. The loop runs one scheduler event
// at a time and lets every promise continuation settle in between (`flushMicrotasks`), so async
// protocol code runs exactly as if each event were one turn of an event loop. Same seed ⇒ same
// history, byte for byte (`historyHash`).

import { CrashSignal, type Faults, type FaultSite } from "../../shared/faults.js";
import type { GuestSample, HistorySink } from "../../shared/history.js";
import { EmulatedHost } from "../../shared/hypervisor/host.js";
import { isTscmigError } from "../../shared/errors.js";
import { SILENT_LOGGER } from "../../shared/logger.js";
import { type JournalStore, MemoryJournal } from "../../shared/migration/journal.js";
import { reportFromJson, type RestoreFn } from "../../destination/migrate-in.js";
import { restoreSnapshot } from "../../shared/migration/restore.js";
import type { EmulatedVm } from "../../shared/hypervisor/vm.js";
import { pvclockReadCycles, type PvclockRecord } from "../../shared/kvm/pvclock.js";
import type { Scheduler, Timer } from "../../shared/time/clock.js";
import { offsetAt } from "../../shared/time/offset-model.js";
import { SeededRandom, type Random } from "../../shared/time/random.js";
import { flushMicrotasks, SimClock, SimScheduler } from "../../shared/time/sim.js";
import { drainMicrotasks } from "./drain.js";
import { DEFAULT_GUEST, defaultNodeConfig, type MigrateRequest, type NodeConfig, TscmigNode } from "../../daemon/node.js";
import type { EstimatorName } from "../../shared/migration/blackout.js";
import type { PolicyName } from "../../shared/migration/restore.js";
import type { ChaosEvent, ChaosHistory } from "../history.js";
import { historyHash } from "../history.js";
import { type Fence, type NetStats, type NetTrace, SimNetwork } from "./network.js";
import { drawScenario, type Scenario, type ScenarioOptions } from "./scenario.js";
import { observeRestores } from "./restore-probe.js";
import { type DamagedRecord, type JournalOp, type SimWorld, startIssue9Nemeses, type WorldDaemon } from "./issue9-nemeses.js";
import { journalFullError, restoreStoredVmRecord } from "./journal-faults.js";

/** Wall-clock instant of simulated true time 0 (2026-01-01T00:00:00Z). */
export const SIM_EPOCH_NS = 1_767_225_600_000_000_000n;

export interface SimRunOptions extends ScenarioOptions {
  /**
   * Test seam (never used by production code): replaces the destination's restore, so tests can
   * prove the checker catches a broken build (a restore that forgets the stopped flag, or that
   * subtracts two hosts' realtime where it must not).
   */
  restoreHook?: RestoreFn;
  /** Stop after this many scheduler events (a run that does not converge is a finding). */
  eventLimit?: number;
  /** Sees every simulated message (`tscmig chaos replay`); tracing draws no randomness, so the run is the same. */
  traceMessages?: (m: NetTrace) => void;
  /** Settle promise continuations with a full event-loop turn (setImmediate) instead of a nextTick (same results, slower). */
  drainWithImmediate?: boolean;
}

export interface SimRunStats {
  events: number;
  simNs: bigint;
  daemons: number;
  vms: number;
  migrationsStarted: number;
  outcomes: Record<string, number>;
  /** Why migrations did not commit: "outcome:reason" → count. */
  reasons: Record<string, number>;
  crashes: number;
  kills: number;
  restarts: number;
  faultSites: Record<string, number>;
  net: NetStats;
  active: string[];
}

export interface SimRunResult {
  seed: bigint;
  /** SHA-256 of the canonical history (computed on first use: hashing costs as much as a run's checks). */
  readonly hash: string;
  history: ChaosHistory;
  stats: SimRunStats;
  scenario: Scenario;
}

const MS = 1_000_000n;

class Recorder implements HistorySink {
  readonly samples: GuestSample[] = [];
  readonly events: ChaosEvent[] = [];
  /** Samples recorded before each event: the exact interleaving, for the checker. */
  readonly order: number[] = [];
  sample(s: GuestSample): void {
    this.samples.push(s);
  }
  event(e: ChaosEvent): void {
    this.events.push(e);
    this.order.push(this.samples.length);
  }
}

/**
 * Writes of a dead incarnation never reach the disk; live ones cost `writeCost()` of process time
 * first, and fail as on a full disk while `full()` says so (reads still work).
 */
function fencedJournal(j: JournalStore, fence: Fence, writeCost: () => void, full: () => boolean): JournalStore {
  const write = (fn: () => void) => {
    if (!fence.alive) return;
    writeCost();
    if (full()) throw journalFullError();
    fn();
  };
  return {
    putVm: (r) => write(() => j.putVm(r)),
    getVm: (id) => j.getVm(id),
    listVms: () => j.listVms(),
    deleteVm: (id) => write(() => j.deleteVm(id)),
    putMigration: (r) => write(() => j.putMigration(r)),
    getMigration: (id) => j.getMigration(id),
    getInboundMigration: (source, id) => j.getInboundMigration(source, id),
    listMigrations: (f) => j.listMigrations(f),
    transaction: (fn) => j.transaction(fn),
    close: () => {},
  };
}

interface Incarnation {
  n: number;
  node: TscmigNode;
  fence: Fence;
  /** Resolves when this incarnation dies (callers waiting on it give up). */
  dead: Promise<void>;
  die: () => void;
}

interface SimDaemon extends WorldDaemon {
  name: string;
  host: EmulatedHost;
  journal: MemoryJournal;
  rand: Random;
  incarnations: number;
  current: Incarnation | null;
  restartTimer: Timer | null;
}

/** Runs one seed to its end and returns its history (unchecked). */
export async function runSimulation(seed: bigint, opts: SimRunOptions): Promise<SimRunResult> {
  const root = new SeededRandom(seed);
  const scen = drawScenario(root.fork("scenario"), opts);
  const clock = new SimClock(0n, SIM_EPOCH_NS);
  const sched = new SimScheduler(clock);
  const rec = new Recorder();
  const now = () => clock.monotonicNs();
  const stats: SimRunStats = {
    events: 0,
    simNs: 0n,
    daemons: scen.hosts.length,
    vms: scen.vms.length,
    migrationsStarted: 0,
    outcomes: {},
    reasons: {},
    crashes: 0,
    kills: 0,
    restarts: 0,
    faultSites: {},
    net: { messages: 0, lost: 0, duplicated: 0, resets: 0, partitioned: 0, unauthenticated: 0 },
    active: [...scen.active],
  };
  const fault = (site: string, detail: string) => {
    stats.faultSites[site] = (stats.faultSites[site] ?? 0) + 1;
    rec.event({ kind: "fault", trueNs: now(), site, detail });
  };
  const error = (daemon: string, message: string) => rec.event({ kind: "error", trueNs: now(), daemon, message });

  let faultsActive = true;
  let ended = false;
  let crashesLeft = scen.crashesMax;
  const net = new SimNetwork(sched, now, root.fork("net"), scen.net, fault, error, opts.traceMessages);

  const history: ChaosHistory = {
    meta: {
      mode: "sim",
      seed,
      epochNs: SIM_EPOCH_NS,
      daemons: scen.hosts.map((h) => ({ name: h.name, tscKhz: h.tscKhz, crystalSlopePpm: h.crystalSlopePpm })),
      ntpSource: scen.ntp.source,
      sampleIntervalNs: scen.sampleIntervalNs,
      scenario: {
        faults: scen.active.join(",") || "none",
        daemons: scen.hosts.length,
        vms: scen.vms.length,
        handling: scen.handling,
        watchVmclock: scen.watchVmclock,
        ntpMaxerrorNs: String(scen.ntp.maxerrorNs),
        deadlineNs: String(scen.net.deadlineNs),
      },
    },
    samples: rec.samples,
    events: rec.events,
    order: rec.order,
  };

  // ---- hosts and daemons ------------------------------------------------------------------------
  const daemons: SimDaemon[] = scen.hosts.map((h) => {
    const host = new EmulatedHost({
      name: h.name,
      clock,
      epochNs: SIM_EPOCH_NS,
      tscKhz: h.tscKhz,
      vendor: h.vendor,
      tscScaling: h.tscScaling,
      crystal: h.crystal,
      tsc0: h.tsc0,
      rawBaseNs: h.rawBaseNs,
      skew: h.skew,
      maxerrorNs: h.maxerrorNs,
      jitterSeed: h.jitterSeed,
    });
    rec.event({ kind: "hostClock", trueNs: 0n, daemon: h.name, model: h.skew, maxerrorNs: h.maxerrorNs });
    const d: SimDaemon = {
      name: h.name,
      host,
      journal: new MemoryJournal(),
      rand: root.fork(`process:${h.name}`),
      incarnations: 0,
      current: null,
      restartTimer: null,
      tscKhz: h.tscKhz,
      diskFullUntilNs: -1n,
      node: () => d.current?.node ?? null,
      dead: () => d.current?.dead ?? new Promise<void>(() => {}),
    };
    return d;
  });

  const reference = scen.ntp;
  const nodeConfig = (name: string): NodeConfig => {
    const cfg = defaultNodeConfig(name, name);
    cfg.sampleIntervalNs = scen.sampleIntervalNs;
    cfg.sampleVcpusMax = 4;
    cfg.doorbellDelayNs = scen.doorbellDelayNs;
    cfg.recoveryIntervalNs = 500n * MS;
    cfg.guest = {
      ...DEFAULT_GUEST,
      watchVmclock: scen.watchVmclock,
      pollIntervalNs: scen.pollIntervalNs,
      resyncDelayNs: scen.resyncDelayNs,
      ...(reference.source === "reference"
        ? {
            // A reference NTP server: true time within half the error bound it claims.
            ntpSource: () => ({ realtimeNs: SIM_EPOCH_NS + now() + offsetAt(reference.model, now()), maxerrorNs: reference.maxerrorNs }),
          }
        : {}),
    };
    return cfg;
  };

  // Process time spent inside a daemon's own code: the true clock moves while its code runs, and
  // timers due meanwhile fire late (a synchronous fsync, a GC pause). Only while faults are on.
  const stall = (d: SimDaemon, maxNs: bigint, why: string) => {
    if (!faultsActive || maxNs <= 0n) return;
    const ns = d.rand.bigint(0n, maxNs);
    clock.advanceTo(now() + ns);
    if (ns >= MS) fault(why, `${d.name} stalled ${ns} ns`);
  };
  const journalWrite = (d: SimDaemon) => () => {
    if (scen.fsyncMaxNs <= 0n || !faultsActive) return;
    stall(d, d.rand.chance(scen.fsyncStallP) ? scen.stallMaxNs : scen.fsyncMaxNs, "stall.fsync");
  };

  /** Crash sites armed for one daemon (collide: the first source dies right after journaling its decision). */
  const armed = new Map<string, FaultSite>();
  const faultsFor = (d: SimDaemon, fence: Fence): Faults => ({
    fire: (site: FaultSite) => {
      if (!faultsActive || !fence.alive) return false;
      if (armed.get(d.name) === site) {
        armed.delete(d.name);
        stats.crashes++;
        crash(d, site);
        return true;
      }
      if (scen.pauseP > 0 && d.rand.chance(scen.pauseP)) stall(d, scen.stallMaxNs, `stall.${site}`);
      if (site === "doorbell.lose") {
        if (scen.doorbellLossP > 0 && d.rand.chance(scen.doorbellLossP)) {
          fault(site, `${d.name}: doorbell lost`);
          return true;
        }
        return false;
      }
      if (crashesLeft <= 0 || scen.crashP <= 0 || !d.rand.chance(scen.crashP)) return false;
      crashesLeft--;
      stats.crashes++;
      crash(d, site);
      return true;
    },
    delayNs: () => (faultsActive && scen.doorbellDelayMaxNs > 0n ? d.rand.bigint(0n, scen.doorbellDelayMaxNs) : 0n),
  });

  const fencedScheduler = (d: SimDaemon, fence: Fence): Scheduler => ({
    after: (delayNs, fn) =>
      sched.after(delayNs, () => {
        if (!fence.alive) return;
        try {
          fn();
        } catch (e) {
          if (e instanceof CrashSignal || !fence.alive) return;
          // An exception out of a timer kills a real daemon: record it, and so be it here.
          error(d.name, `timer callback threw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
          crash(d, "uncaught-exception");
        }
      }),
  });

  // The source VM's guest-time function at each pause, so every committed restore can be checked
  // against "what the source would read had it never paused" (I3) even when the source died before
  // it got the restore report. Keyed by VM and the generation the migration creates.
  const pauses = new Map<string, { vm: EmulatedVm; record: PvclockRecord; t: bigint; source: string }>();
  const capturePause = (d: SimDaemon, vmId: string, generation: bigint) => {
    const h = d.current?.node.listVms().find((x) => x.id === vmId);
    if (h) pauses.set(`${vmId}@${generation + 1n}`, { vm: h.vm, record: h.vm.pvclock.guestRead(0), t: now(), source: d.name });
  };
  const restoredEvents = (): ChaosEvent[] => {
    const out: ChaosEvent[] = [];
    for (const d of daemons)
      for (const m of d.journal.listMigrations({ role: "destination", decision: "committed" })) {
        if (!m.report) continue;
        const r = reportFromJson(m.report);
        const p = pauses.get(`${m.vmId}@${m.generation}`);
        if (!p || r.resumedTrueNs <= 0n) continue;
        let st: Extract<ChaosEvent, { kind: "migrateStart" }> | undefined;
        for (const e of rec.events) if (e.kind === "migrateStart" && e.vmId === m.vmId && e.trueNs <= p.t) st = e;
        const ideal = p.vm.guestTscAt(0, r.resumedTrueNs);
        out.push({
          kind: "restored",
          trueNs: r.resumedTrueNs,
          migrationId: m.migrationId,
          vmId: m.vmId,
          source: p.source,
          destination: d.name,
          policy: st?.policy ?? "unknown",
          estimator: st?.estimator ?? "unknown",
          capped: r.capped,
          pauseTrueNs: p.t,
          resumeTrueNs: r.resumedTrueNs,
          estimatedBlackoutNs: r.estimatedBlackoutNs,
          errorBoundNs: r.errorBoundNs,
          tscAtResume: r.tscAtResume,
          tscIdealAtResume: ideal,
          kvmclockAtResume: r.kvmclockAtResumeNs,
          kvmclockIdealAtResume: pvclockReadCycles(p.record, ideal),
          guestTscKhz: p.vm.guestTscKhz,
        });
      }
    return out;
  };

  const boot = (d: SimDaemon) => {
    const fence: Fence = { alive: true };
    let die!: () => void;
    const dead = new Promise<void>((r) => (die = r));
    d.incarnations++;
    const history: HistorySink = {
      sample: (s) => {
        if (fence.alive) rec.sample(s);
      },
      event: (e) => {
        if (!fence.alive) return;
        if (e.kind === "stop" && e.why === "pause") capturePause(d, e.vmId, e.generation);
        rec.event(e);
      },
    };
    const node = new TscmigNode(nodeConfig(d.name), {
      clock,
      scheduler: fencedScheduler(d, fence),
      random: root.fork(`node:${d.name}:${d.incarnations}`),
      log: SILENT_LOGGER,
      host: d.host,
      journal: fencedJournal(d.journal, fence, journalWrite(d), () => faultsActive && now() < d.diskFullUntilNs),
      dialer: net.dialer(d.name, fence),
      faults: faultsFor(d, fence),
      history,
      // Every restore is watched for I9 (the real one, or a test's broken one).
      restore: observeRestores(opts.restoreHook ?? restoreSnapshot, {
        daemon: d.name,
        trueNs: now,
        record: (e) => {
          if (fence.alive) rec.event(e);
        },
      }),
    });
    d.current = { n: d.incarnations, node, fence, dead, die };
    net.attach(d.name, { node, fence });
    try {
      node.start();
      return true;
    } catch (e) {
      // A typed refusal (a damaged journal, say) is a daemon declining to start, as it should;
      // anything else would have killed it with a raw exception.
      if (!isTscmigError(e)) error(d.name, `start() threw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
      else fault("start.refused", `${d.name}: ${e.message}`);
      return false;
    }
  };

  /** Operator actions on a daemon's journal, carried out before its next start. */
  const pendingOps = new Map<string, JournalOp>();
  const restart = (d: SimDaemon) => {
    if (d.current || ended) return;
    stats.restarts++;
    rec.event({ kind: "restart", trueNs: now(), daemon: d.name, incarnation: d.incarnations + 1 });
    const op = pendingOps.get(d.name) ?? null;
    pendingOps.delete(d.name);
    let damaged: DamagedRecord | null = null;
    if (op?.kind === "damage") damaged = issue9.damage(d, op.plan);
    if (op?.kind === "restore") {
      restoreStoredVmRecord(d.journal, op.backup);
      fault("damage.restored", `${d.name}: the operator restored ${op.backup.vmId}'s record from the backup (${op.detail})`);
    }
    const started = boot(d);
    if (!started && !damaged) crash(d, "start.failed"); // a daemon whose start failed exits
    else if (!started) kill(d, "start.failed");
    issue9.started(d, started, damaged);
  };

  /** The process dies at once: nothing more runs, writes or answers; VMs it ran stop. */
  function kill(d: SimDaemon, site: string): void {
    const c = d.current;
    if (!c || !c.fence.alive) return;
    const t = now();
    for (const h of c.node.listVms())
      if (h.vm.running) rec.event({ kind: "stop", trueNs: t, daemon: d.name, vmId: h.id, generation: h.generation, why: "crash" });
    c.fence.alive = false;
    c.die();
    net.detach(d.name);
    d.current = null;
    fault(site, `${d.name} died (incarnation ${c.n})`);
  }

  /** A crash: the daemon dies and, while faults are on (or an operator waits to act), restarts after a downtime. */
  function crash(d: SimDaemon, site: string): void {
    const c = d.current;
    if (!c || !c.fence.alive) return;
    kill(d, site);
    if (faultsActive || pendingOps.has(d.name)) {
      const down = d.rand.bigint(scen.downtimeMinNs, scen.downtimeMaxNs);
      d.restartTimer = sched.after(down, () => {
        d.restartTimer = null;
        restart(d);
      });
    }
  }

  for (const d of daemons) boot(d);

  // ---- VMs and their migrations -----------------------------------------------------------------
  const ownerOf = (vmId: string): { d: SimDaemon; inc: Incarnation } | null => {
    for (const d of daemons) {
      const c = d.current;
      if (!c) continue;
      const h = c.node.listVms().find((x) => x.id === vmId);
      if (h && h.role === "owner" && h.lock === null && h.vm.running) return { d, inc: c };
    }
    return null;
  };

  for (const v of scen.vms) {
    const d = daemons[v.home] as SimDaemon;
    const c = d.current as Incarnation;
    try {
      const h = c.node.createVm({
        id: v.id,
        vcpus: v.vcpus,
        ...(v.guestTscKhz !== undefined ? { guestTscKhz: v.guestTscKhz } : {}),
        clocksource: v.clocksource,
        migrationHandling: scen.handling,
        handlingMode: v.handlingMode,
      });
      rec.event({
        kind: "vm",
        trueNs: now(),
        daemon: d.name,
        vmId: v.id,
        vcpus: v.vcpus,
        guestTscKhz: h.vm.guestTscKhz,
        clocksource: v.clocksource,
        migrationHandling: scen.handling,
        handlingMode: v.handlingMode,
      });
    } catch (e) {
      error(d.name, `createVm threw ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  const sleep = (ns: bigint) => new Promise<void>((r) => sched.after(ns, r));
  /** One migration as the harness drives it: recorded, counted; null when the source died meanwhile or it threw. */
  const migrateOnce = async (o: { d: SimDaemon; inc: Incarnation }, vmId: string, dst: SimDaemon, req: MigrateRequest & { policy: PolicyName; estimator: EstimatorName; doorbell: boolean }) => {
    stats.migrationsStarted++;
    rec.event({ kind: "migrateStart", trueNs: now(), vmId, source: o.d.name, destination: dst.name, policy: req.policy, estimator: req.estimator, doorbell: req.doorbell });
    try {
      const r = await Promise.race([o.inc.node.migrate(vmId, req), o.inc.dead.then(() => null)]);
      if (r) {
        stats.outcomes[r.outcome] = (stats.outcomes[r.outcome] ?? 0) + 1;
        if (r.error) {
          const why = `${r.outcome}:${r.error.reason ?? r.error.code}`;
          stats.reasons[why] = (stats.reasons[why] ?? 0) + 1;
        }
      } else stats.outcomes.crashed = (stats.outcomes.crashed ?? 0) + 1;
      return r;
    } catch (e) {
      if (e instanceof CrashSignal || !o.inc.fence.alive) {
        stats.outcomes.crashed = (stats.outcomes.crashed ?? 0) + 1;
        return null;
      }
      if (!isTscmigError(e)) error(o.d.name, `migrate threw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
      stats.outcomes.error = (stats.outcomes.error ?? 0) + 1;
      return null;
    }
  };
  let driversLeft = scen.vms.length;
  const driver = async (vmIndex: number) => {
    const v = scen.vms[vmIndex] as Scenario["vms"][number];
    for (const p of scen.plans[vmIndex] ?? []) {
      await sleep(p.gapNs);
      if (!faultsActive || ended) break;
      const o = ownerOf(v.id);
      if (!o) continue; // down or still settling: skip this one
      const others = daemons.filter((x) => x !== o.d);
      const dst = others[Math.min(others.length - 1, Math.floor(p.destPick * others.length))] as SimDaemon;
      await migrateOnce(o, v.id, dst, {
        destination: dst.name,
        policy: p.policy,
        estimator: p.estimator,
        doorbell: p.doorbell,
        ...(p.advanceCapNs !== undefined ? { advanceCapNs: p.advanceCapNs } : {}),
      });
    }
    if (--driversLeft === 0) heal();
  };

  // ---- issue 9's nemeses (collide, hostile, disk-full, damage) ----------------------------------
  /** VMs I7 requires at the end: the scenario's, and any a daemon reported creating at run time. */
  const tracked = scen.vms.map((v) => v.id);
  const world: SimWorld = {
    scen,
    daemons,
    net,
    sched,
    now,
    rand: root.fork("issue9"),
    faultsActive: () => faultsActive,
    ended: () => ended,
    sleep,
    task: (fn) => {
      driversLeft++;
      void fn().finally(() => {
        if (--driversLeft === 0) heal();
      });
    },
    fault,
    error,
    record: (e) => {
      if (!ended) rec.event(e);
    },
    ownerOf: (vmId) => ownerOf(vmId)?.d ?? null,
    migrate: (src, vmId, dst, o) => {
      const inc = (src as SimDaemon).current;
      if (!inc) return Promise.resolve(null);
      return migrateOnce({ d: src as SimDaemon, inc }, vmId, dst as SimDaemon, { destination: dst.name, doorbell: false, ...o });
    },
    armCrash: (d, site) => armed.set(d.name, site),
    disarm: (d) => armed.delete(d.name),
    restartWith: (d, site, op) => {
      const sd = d as SimDaemon;
      if (op) pendingOps.set(d.name, op);
      if (sd.current) crash(sd, site);
      else if (op) sched.after(sd.rand.bigint(scen.downtimeMinNs, scen.downtimeMaxNs), () => restart(sd));
    },
    track: (vmId) => tracked.push(vmId),
  };
  const issue9 = startIssue9Nemeses(world);

  // ---- nemeses ------------------------------------------------------------------------------------
  for (const k of scen.kills) {
    sched.after(k.atNs, () => {
      const d = daemons[k.daemon] as SimDaemon;
      if (!faultsActive || !d.current) return;
      stats.kills++;
      crash(d, "kill");
    });
  }

  // ---- healing, I7's bound, the end -------------------------------------------------------------
  const unresolved = (): string[] => {
    const out: string[] = [];
    for (const d of daemons) {
      const c = d.current;
      if (!c) {
        out.push(`${d.name} is down`);
        continue;
      }
      // Past a few of one kind with one peer (a Prepare flood leaves hundreds), one line says how many.
      const lines: { key: string; line: string; many: (n: number, first: string) => string }[] = [];
      const add = (key: string, line: string, many: (n: number, first: string) => string) => lines.push({ key, line, many });
      for (const m of d.journal.listMigrations({ decision: "pending" }))
        add(`p ${m.role} ${m.peer} ${m.phase}`, `${d.name}: ${m.role} side of ${m.migrationId} (${m.vmId}) undecided in phase ${m.phase}`, (n, first) => `${d.name}: ${n} ${m.role} migrations with ${m.peer} undecided in phase ${m.phase} (${first}, …)`);
      for (const m of d.journal.listMigrations({ role: "source", decision: "committed" }))
        if (m.phase !== "committed") add(`c ${m.peer}`, `${d.name}: commit of ${m.migrationId} (${m.vmId}) not acknowledged by ${m.peer}`, (n, first) => `${d.name}: ${n} commits not acknowledged by ${m.peer} (${first}, …)`);
      for (const i of c.node.destination.pending())
        add(`i ${i.req.sourceName} ${i.state.phase}`, `${d.name}: inbound ${i.req.migrationId} (${i.req.vmId}) still ${i.state.phase}`, (n, first) => `${d.name}: ${n} inbound migrations from ${i.req.sourceName} still ${i.state.phase} (${first}, …)`);
      const per = new Map<string, number>();
      for (const l of lines) per.set(l.key, (per.get(l.key) ?? 0) + 1);
      const said = new Set<string>();
      for (const l of lines) {
        const n = per.get(l.key) as number;
        if (n <= 3) out.push(l.line);
        else if (!said.has(l.key)) {
          said.add(l.key);
          out.push(l.many(n, l.line.replace(`${d.name}: `, "")));
        }
      }
    }
    return out;
  };
  const owners = () =>
    tracked.map((vmId) => {
      const held: string[] = [];
      let generation = 0n;
      for (const d of daemons) {
        const h = d.current?.node.listVms().find((x) => x.id === vmId);
        if (h && h.role === "owner" && h.vm.running) {
          held.push(d.name);
          generation = h.generation;
        }
      }
      return { vmId, daemons: held, generation: String(generation) };
    });
  /** The liveness check after healing: null (none), running, or done (it recorded its event). */
  let liveness: "running" | "done" | null = null;
  const finish = () => {
    if (ended) return;
    for (const e of restoredEvents()) rec.event(e);
    if (liveness === "running")
      rec.event({ kind: "liveness", trueNs: now(), what: "the liveness check after healing", ok: false, attempts: 0, detail: "still trying when the recovery bound ran out" });
    rec.event({ kind: "final", trueNs: now(), owners: owners(), unresolved: unresolved() });
    ended = true;
  };
  let healedAt = -1n;
  function heal(): void {
    if (!faultsActive) return;
    faultsActive = false;
    net.faultsOn = false;
    healedAt = now();
    rec.event({ kind: "heal", trueNs: healedAt, recoveryBoundNs: scen.recoveryBoundNs });
    issue9.heal();
    for (const d of daemons) {
      d.restartTimer?.cancel();
      d.restartTimer = null;
      if (!d.current) restart(d);
    }
    const check = () => {
      if (ended) return;
      const since = now() - healedAt;
      const quiet = driversLeft === 0 && liveness !== "running" && owners().every((o) => o.daemons.length === 1) && unresolved().length === 0;
      if (quiet || since >= scen.recoveryBoundNs) finish();
      else sched.after(250n * MS, check);
    };
    sched.after(scen.settleNs, check);
    const live = issue9.liveness();
    if (live) {
      liveness = "running";
      void live.finally(() => (liveness = "done"));
    }
  }
  sched.after(scen.faultsMaxNs, heal);
  if (scen.vms.length === 0) heal();
  scen.vms.forEach((_v, i) => void driver(i));

  // ---- the loop ----------------------------------------------------------------------------------
  const limit = opts.eventLimit ?? 5_000_000;
  const drain = opts.drainWithImmediate ? flushMicrotasks : drainMicrotasks;
  // Operating errors are values here (a refused Prepare, a deadline, a CrashSignal): nobody reads
  // their stack, and capturing one costs more than the rest of the error. Nothing else runs while
  // this loop runs (it yields only to microtasks), so the setting cannot leak; restored on return.
  const stackTraceLimit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    await loop();
  } finally {
    Error.stackTraceLimit = stackTraceLimit;
  }
  async function loop(): Promise<void> {
    while (!ended) {
      await drain();
      if (ended) break;
      let ran: boolean;
      try {
        ran = sched.step();
      } catch (e) {
        error("harness", `scheduler event threw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
        break;
      }
      if (!ran) {
        error("harness", "the simulation ran out of events before the end");
        break;
      }
      if (++stats.events > limit) {
        error("harness", `the run exceeded ${limit} events without ending`);
        break;
      }
    }
  }
  if (!ended) finish();
  stats.simNs = now();
  stats.net = { ...net.stats };
  let hash: string | null = null;
  return {
    seed,
    get hash() {
      return (hash ??= historyHash(history));
    },
    history,
    stats,
    scenario: scen,
  };
}
