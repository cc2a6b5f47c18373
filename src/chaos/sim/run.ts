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
import type { RestoreFn } from "../../destination/migrate-in.js";
import { restoreReportFromJournal } from "../../shared/migration/report.js";
import { restoreSnapshot } from "../../shared/migration/restore.js";
import type { HypervisorVm } from "../../shared/hypervisor/backend.js";
import { emulatedTruth, type TruthProbe } from "../../shared/hypervisor/truth.js";
import { pvclockReadCycles, type PvclockRecord } from "../../shared/kvm/pvclock.js";
import type { Scheduler, Timer } from "../../shared/time/clock.js";
import { offsetAt } from "../../shared/time/offset-model.js";
import { SeededRandom, type Random } from "../../shared/time/random.js";
import { flushMicrotasks, SimClock, SimScheduler } from "../../shared/time/sim.js";
import { settleEach } from "./drain.js";
import { defaultNodeConfig, type NodeConfig, TscmigNode } from "../../daemon/node.js";
import { DEFAULT_GUEST } from "../../daemon/hosted-vms.js";
import type { MigrateRequest } from "../../source/source.js";
import type { EstimatorName } from "../../shared/migration/blackout.js";
import type { PolicyName } from "../../shared/migration/restore.js";
import type { ChaosEvent, ChaosHistory } from "../history.js";
import { historyHash } from "../history.js";
import { type Fence, type NetStats, type NetTrace, SimNetwork } from "./network.js";
import { drawScenario, type HostSpec, type Scenario, type ScenarioOptions } from "./scenario.js";
import { observeRestores } from "./restore-probe.js";
import { type DamagedRecord, type Issue9Nemeses, type JournalOp, type SimWorld, startIssue9Nemeses, type WorldDaemon } from "./issue9-nemeses.js";
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
  /**
   * Test seam (never used by production code): every destination answers an on-receipt source's
   * Resolve without fencing the Transfer, so tests can prove the checker catches a late Transfer
   * run after its source resumed the VM (I6).
   */
  brokenFence?: boolean;
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
  /** Per switchover mode: "mode:started" and "mode:outcome" → count. */
  switchovers: Record<string, number>;
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
  return new SimRun(seed, opts).run();
}

/** A migration request as the harness's drivers make it, and what the source answers. */
type HarnessMigrateRequest = MigrateRequest & { policy: PolicyName; estimator: EstimatorName; doorbell: boolean };
type MigrateResult = Awaited<ReturnType<TscmigNode["migrate"]>>;

/**
 * One run's world and what happens in it. The order in which `run` sets things up is part of the
 * run's determinism (timers due at one instant fire in the order they were set): hosts and daemons,
 * VMs, the operational and hostile nemeses, kills, the healing deadline, then the migration drivers.
 */
class SimRun {
  private readonly root: SeededRandom;
  private readonly scen: Scenario;
  private readonly clock = new SimClock(0n, SIM_EPOCH_NS);
  private readonly sched = new SimScheduler(this.clock);
  private readonly rec = new Recorder();
  private readonly stats: SimRunStats;
  private readonly history: ChaosHistory;
  private readonly net: SimNetwork;
  private readonly daemons: SimDaemon[];
  private faultsActive = true;
  private ended = false;
  private crashesLeft: number;
  /** Crash sites armed for one daemon (collide: the first source dies right after journaling its decision). */
  private readonly armed = new Map<string, FaultSite>();
  /**
   * The source VM's guest-time function at each pause, so every committed restore can be checked
   * against "what the source would read had it never paused" (I3) even when the source died before
   * it got the restore report. Keyed by VM and the generation the migration creates.
   */
  private readonly pauses = new Map<string, { vm: HypervisorVm; truth: TruthProbe; record: PvclockRecord; t: bigint; source: string }>();
  /** Operator actions on a daemon's journal, carried out before its next start. */
  private readonly pendingOps = new Map<string, JournalOp>();
  /** VMs I7 requires at the end: the scenario's, and any a daemon reported creating at run time. */
  private readonly tracked: string[];
  /** Migration drivers and nemesis tasks still running: the run heals when the last one ends. */
  private driversLeft: number;
  private issue9!: Issue9Nemeses;
  /** The liveness check after healing: null (none), running, or done (it recorded its event). */
  private liveness: "running" | "done" | null = null;
  private healedAt = -1n;

  constructor(
    private readonly seed: bigint,
    private readonly opts: SimRunOptions,
  ) {
    this.root = new SeededRandom(seed);
    this.scen = drawScenario(this.root.fork("scenario"), opts);
    this.stats = emptyStats(this.scen);
    this.crashesLeft = this.scen.crashesMax;
    this.net = this.buildNetwork();
    this.history = this.newHistory();
    this.daemons = this.scen.hosts.map((h) => this.newDaemon(h));
    this.tracked = this.scen.vms.map((v) => v.id);
    this.driversLeft = this.scen.vms.length;
  }

  async run(): Promise<SimRunResult> {
    for (const d of this.daemons) this.boot(d);
    this.createVms();
    this.issue9 = startIssue9Nemeses(this.world());
    this.scheduleKills();
    this.sched.after(this.scen.faultsMaxNs, () => this.heal());
    if (this.scen.vms.length === 0) this.heal();
    this.scen.vms.forEach((_v, i) => void this.driveVm(i));
    await this.runEvents();
    if (!this.ended) this.finish();
    this.stats.simNs = this.now();
    this.stats.net = { ...this.net.stats };
    const history = this.history;
    let hash: string | null = null;
    return {
      seed: this.seed,
      get hash() {
        return (hash ??= historyHash(history));
      },
      history,
      stats: this.stats,
      scenario: this.scen,
    };
  }

  private readonly now = (): bigint => this.clock.monotonicNs();

  private readonly fault = (site: string, detail: string): void => {
    this.stats.faultSites[site] = (this.stats.faultSites[site] ?? 0) + 1;
    this.rec.event({ kind: "fault", trueNs: this.now(), site, detail });
  };

  private readonly error = (daemon: string, message: string): void => this.rec.event({ kind: "error", trueNs: this.now(), daemon, message });

  private newHistory(): ChaosHistory {
    const scen = this.scen;
    return {
      meta: {
        mode: "sim",
        seed: this.seed,
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
      samples: this.rec.samples,
      events: this.rec.events,
      order: this.rec.order,
    };
  }

  // ---- the network, hosts and daemons ----------------------------------------------------------------

  /** The simulated network every daemon dials and is reached through. */
  private buildNetwork(): SimNetwork {
    return new SimNetwork(this.sched, this.now, this.root.fork("net"), this.scen.net, this.fault, this.error, this.opts.traceMessages);
  }

  private newDaemon(h: HostSpec): SimDaemon {
    const host = new EmulatedHost({
      name: h.name,
      clock: this.clock,
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
    this.rec.event({ kind: "hostClock", trueNs: 0n, daemon: h.name, model: h.skew, maxerrorNs: h.maxerrorNs });
    const d: SimDaemon = {
      name: h.name,
      host,
      journal: new MemoryJournal(),
      rand: this.root.fork(`process:${h.name}`),
      incarnations: 0,
      current: null,
      restartTimer: null,
      tscKhz: h.tscKhz,
      diskFullUntilNs: -1n,
      node: () => d.current?.node ?? null,
      dead: () => d.current?.dead ?? new Promise<void>(() => {}),
    };
    return d;
  }

  private nodeConfig(name: string): NodeConfig {
    const scen = this.scen;
    const reference = scen.ntp;
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
            ntpSource: () => ({ realtimeNs: SIM_EPOCH_NS + this.now() + offsetAt(reference.model, this.now()), maxerrorNs: reference.maxerrorNs }),
          }
        : {}),
    };
    return cfg;
  }

  /** One incarnation's node over the daemon's host and journal, everything it touches fenced by its life. */
  private buildNode(d: SimDaemon, fence: Fence): TscmigNode {
    return new TscmigNode(this.nodeConfig(d.name), {
      clock: this.clock,
      scheduler: this.fencedScheduler(d, fence),
      random: this.root.fork(`node:${d.name}:${d.incarnations}`),
      log: SILENT_LOGGER,
      host: d.host,
      journal: fencedJournal(d.journal, fence, this.journalWriteCost(d), () => this.faultsActive && this.now() < d.diskFullUntilNs),
      dialer: this.net.dialer(d.name, fence),
      faults: this.faultsFor(d, fence),
      history: this.historySink(d, fence),
      // Every restore is watched for I9 (the real one, or a test's broken one).
      restore: observeRestores(this.opts.restoreHook ?? restoreSnapshot, {
        daemon: d.name,
        truth: emulatedTruth(d.host),
        record: (e) => {
          if (fence.alive) this.rec.event(e);
        },
      }),
      ...(this.opts.brokenFence ? { brokenFence: true } : {}),
    });
  }

  /** What a live incarnation records reaches the history; a pause also keeps the source VM's clock for I3. */
  private historySink(d: SimDaemon, fence: Fence): HistorySink {
    return {
      sample: (s) => {
        if (fence.alive) this.rec.sample(s);
      },
      event: (e) => {
        if (!fence.alive) return;
        if (e.kind === "stop" && e.why === "pause") this.capturePause(d, e.vmId, e.generation);
        this.rec.event(e);
      },
    };
  }

  private capturePause(d: SimDaemon, vmId: string, generation: bigint): void {
    const node = d.current?.node;
    const h = node?.listVms().find((x) => x.id === vmId);
    if (node && h) this.pauses.set(`${vmId}@${generation + 1n}`, { vm: h.vm, truth: node.truth, record: h.vm.pvclock.guestRead(0), t: this.now(), source: d.name });
  }

  // ---- process faults: stalls, crash sites, fenced timers ----------------------------------------------

  /**
   * Process time spent inside a daemon's own code: the true clock moves while its code runs, and
   * timers due meanwhile fire late (a synchronous fsync, a GC pause). Only while faults are on.
   */
  private stall(d: SimDaemon, maxNs: bigint, why: string): void {
    if (!this.faultsActive || maxNs <= 0n) return;
    const ns = d.rand.bigint(0n, maxNs);
    this.clock.advanceTo(this.now() + ns);
    if (ns >= MS) this.fault(why, `${d.name} stalled ${ns} ns`);
  }

  private journalWriteCost(d: SimDaemon): () => void {
    const scen = this.scen;
    return () => {
      if (scen.fsyncMaxNs <= 0n || !this.faultsActive) return;
      this.stall(d, d.rand.chance(scen.fsyncStallP) ? scen.stallMaxNs : scen.fsyncMaxNs, "stall.fsync");
    };
  }

  private faultsFor(d: SimDaemon, fence: Fence): Faults {
    const scen = this.scen;
    return {
      fire: (site: FaultSite) => {
        if (!this.faultsActive || !fence.alive) return false;
        if (this.armed.get(d.name) === site) {
          this.armed.delete(d.name);
          this.stats.crashes++;
          this.crash(d, site);
          return true;
        }
        if (scen.pauseP > 0 && d.rand.chance(scen.pauseP)) this.stall(d, scen.stallMaxNs, `stall.${site}`);
        if (site === "doorbell.lose") {
          if (scen.doorbellLossP > 0 && d.rand.chance(scen.doorbellLossP)) {
            this.fault(site, `${d.name}: doorbell lost`);
            return true;
          }
          return false;
        }
        if (this.crashesLeft <= 0 || scen.crashP <= 0 || !d.rand.chance(scen.crashP)) return false;
        this.crashesLeft--;
        this.stats.crashes++;
        this.crash(d, site);
        return true;
      },
      delayNs: () => (this.faultsActive && scen.doorbellDelayMaxNs > 0n ? d.rand.bigint(0n, scen.doorbellDelayMaxNs) : 0n),
    };
  }

  private fencedScheduler(d: SimDaemon, fence: Fence): Scheduler {
    return {
      after: (delayNs, fn) =>
        this.sched.after(delayNs, () => {
          if (!fence.alive) return;
          try {
            fn();
          } catch (e) {
            if (e instanceof CrashSignal || !fence.alive) return;
            // An exception out of a timer kills a real daemon: record it, and so be it here.
            this.error(d.name, `timer callback threw ${describe(e)}`);
            this.crash(d, "uncaught-exception");
          }
        }),
    };
  }

  // ---- incarnations: boot, kill, crash, restart --------------------------------------------------------

  /** Starts a new incarnation of `d` over its journal; false when it declined to start. */
  private boot(d: SimDaemon): boolean {
    const fence: Fence = { alive: true };
    let die!: () => void;
    const dead = new Promise<void>((r) => (die = r));
    d.incarnations++;
    const node = this.buildNode(d, fence);
    d.current = { n: d.incarnations, node, fence, dead, die };
    this.net.attach(d.name, { peer: node.peer, rawNs: () => node.host.rawNs(), fence });
    try {
      node.start();
      return true;
    } catch (e) {
      // A typed refusal (a damaged journal, say) is a daemon declining to start, as it should;
      // anything else would have killed it with a raw exception.
      if (!isTscmigError(e)) this.error(d.name, `start() threw ${describe(e)}`);
      else this.fault("start.refused", `${d.name}: ${e.message}`);
      return false;
    }
  }

  private restart(d: SimDaemon): void {
    if (d.current || this.ended) return;
    this.stats.restarts++;
    this.rec.event({ kind: "restart", trueNs: this.now(), daemon: d.name, incarnation: d.incarnations + 1 });
    const op = this.pendingOps.get(d.name) ?? null;
    this.pendingOps.delete(d.name);
    let damaged: DamagedRecord | null = null;
    if (op?.kind === "damage") damaged = this.issue9.damage(d, op.plan);
    if (op?.kind === "restore") {
      restoreStoredVmRecord(d.journal, op.backup);
      this.fault("damage.restored", `${d.name}: the operator restored ${op.backup.vmId}'s record from the backup (${op.detail})`);
    }
    const started = this.boot(d);
    if (!started && !damaged) this.crash(d, "start.failed"); // a daemon whose start failed exits
    else if (!started) this.kill(d, "start.failed");
    this.issue9.started(d, started, damaged);
  }

  /** The process dies at once: nothing more runs, writes or answers; VMs it ran stop. */
  private kill(d: SimDaemon, site: string): void {
    const c = d.current;
    if (!c || !c.fence.alive) return;
    const t = this.now();
    for (const h of c.node.listVms())
      if (h.vm.running) this.rec.event({ kind: "stop", trueNs: t, daemon: d.name, vmId: h.id, generation: h.generation, why: "crash" });
    c.fence.alive = false;
    c.die();
    this.net.detach(d.name);
    d.current = null;
    this.fault(site, `${d.name} died (incarnation ${c.n})`);
  }

  /** A crash: the daemon dies and, while faults are on (or an operator waits to act), restarts after a downtime. */
  private crash(d: SimDaemon, site: string): void {
    const c = d.current;
    if (!c || !c.fence.alive) return;
    this.kill(d, site);
    if (this.faultsActive || this.pendingOps.has(d.name)) {
      const down = d.rand.bigint(this.scen.downtimeMinNs, this.scen.downtimeMaxNs);
      d.restartTimer = this.sched.after(down, () => {
        d.restartTimer = null;
        this.restart(d);
      });
    }
  }

  private scheduleKills(): void {
    for (const k of this.scen.kills) {
      this.sched.after(k.atNs, () => {
        const d = this.daemons[k.daemon] as SimDaemon;
        if (!this.faultsActive || !d.current) return;
        this.stats.kills++;
        this.crash(d, "kill");
      });
    }
  }

  // ---- VMs and their migrations --------------------------------------------------------------------

  private createVms(): void {
    const scen = this.scen;
    for (const v of scen.vms) {
      const d = this.daemons[v.home] as SimDaemon;
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
        this.rec.event({ kind: "vm", trueNs: this.now(), daemon: d.name, vmId: v.id, vcpus: v.vcpus, guestTscKhz: h.vm.guestTscKhz, clocksource: v.clocksource, migrationHandling: scen.handling, handlingMode: v.handlingMode });
      } catch (e) {
        this.error(d.name, `createVm threw ${e instanceof Error ? e.message : String(e)}`);
      }
    }
  }

  /** Where `vmId` runs as an owner, unlocked, and the incarnation running it. */
  private ownerOf(vmId: string): { d: SimDaemon; inc: Incarnation } | null {
    for (const d of this.daemons) {
      const c = d.current;
      if (!c) continue;
      const h = c.node.listVms().find((x) => x.id === vmId);
      if (h && h.role === "owner" && h.lock === null && h.vm.running) return { d, inc: c };
    }
    return null;
  }

  private readonly sleep = (ns: bigint): Promise<void> => new Promise<void>((r) => this.sched.after(ns, r));

  /** One migration as the harness drives it: recorded, counted; null when the source died meanwhile or it threw. */
  private async migrateOnce(o: { d: SimDaemon; inc: Incarnation }, vmId: string, dst: SimDaemon, req: HarnessMigrateRequest): Promise<MigrateResult | null> {
    const stats = this.stats;
    stats.migrationsStarted++;
    const mode = req.switchover ?? "two-phase";
    const bumpMode = (what: string) => (stats.switchovers[`${mode}:${what}`] = (stats.switchovers[`${mode}:${what}`] ?? 0) + 1);
    bumpMode("started");
    this.rec.event({ kind: "migrateStart", trueNs: this.now(), vmId, source: o.d.name, destination: dst.name, policy: req.policy, estimator: req.estimator, doorbell: req.doorbell });
    try {
      const r = await Promise.race([o.inc.node.migrate(vmId, req), o.inc.dead.then(() => null)]);
      if (r) {
        stats.outcomes[r.outcome] = (stats.outcomes[r.outcome] ?? 0) + 1;
        bumpMode(r.outcome);
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
      if (!isTscmigError(e)) this.error(o.d.name, `migrate threw ${describe(e)}`);
      stats.outcomes.error = (stats.outcomes.error ?? 0) + 1;
      return null;
    }
  }

  /** Carries out one VM's planned migrations, each after its gap, from wherever the VM runs then. */
  private async driveVm(vmIndex: number): Promise<void> {
    const v = this.scen.vms[vmIndex] as Scenario["vms"][number];
    for (const p of this.scen.plans[vmIndex] ?? []) {
      await this.sleep(p.gapNs);
      if (!this.faultsActive || this.ended) break;
      const o = this.ownerOf(v.id);
      if (!o) continue; // down or still settling: skip this one
      const others = this.daemons.filter((x) => x !== o.d);
      const dst = others[Math.min(others.length - 1, Math.floor(p.destPick * others.length))] as SimDaemon;
      await this.migrateOnce(o, v.id, dst, {
        destination: dst.name,
        policy: p.policy,
        estimator: p.estimator,
        doorbell: p.doorbell,
        switchover: p.switchover,
        ...(p.advanceCapNs !== undefined ? { advanceCapNs: p.advanceCapNs } : {}),
      });
    }
    this.taskEnded();
  }

  private taskEnded(): void {
    if (--this.driversLeft === 0) this.heal();
  }

  /** What the run lends the operational and hostile nemeses (collide, hostile, disk-full, damage). */
  private world(): SimWorld {
    return {
      scen: this.scen,
      daemons: this.daemons,
      net: this.net,
      sched: this.sched,
      now: this.now,
      rand: this.root.fork("issue9"),
      faultsActive: () => this.faultsActive,
      ended: () => this.ended,
      sleep: this.sleep,
      task: (fn) => {
        this.driversLeft++;
        void fn().finally(() => this.taskEnded());
      },
      fault: this.fault,
      error: this.error,
      record: (e) => {
        if (!this.ended) this.rec.event(e);
      },
      ownerOf: (vmId) => this.ownerOf(vmId)?.d ?? null,
      migrate: (src, vmId, dst, o) => {
        const inc = (src as SimDaemon).current;
        if (!inc) return Promise.resolve(null);
        return this.migrateOnce({ d: src as SimDaemon, inc }, vmId, dst as SimDaemon, { destination: dst.name, doorbell: false, ...o });
      },
      armCrash: (d, site) => this.armed.set(d.name, site),
      disarm: (d) => this.armed.delete(d.name),
      restartWith: (d, site, op) => {
        const sd = d as SimDaemon;
        if (op) this.pendingOps.set(d.name, op);
        if (sd.current) this.crash(sd, site);
        else if (op) this.sched.after(sd.rand.bigint(this.scen.downtimeMinNs, this.scen.downtimeMaxNs), () => this.restart(sd));
      },
      track: (vmId) => this.tracked.push(vmId),
    };
  }

  // ---- healing, I7's bound, the end ------------------------------------------------------------------

  /** Faults stop; every daemon that is down restarts; the run ends once all is quiet or the recovery bound runs out. */
  private heal(): void {
    if (!this.faultsActive) return;
    this.faultsActive = false;
    this.net.faultsOn = false;
    this.healedAt = this.now();
    this.rec.event({ kind: "heal", trueNs: this.healedAt, recoveryBoundNs: this.scen.recoveryBoundNs });
    this.issue9.heal();
    for (const d of this.daemons) {
      d.restartTimer?.cancel();
      d.restartTimer = null;
      if (!d.current) this.restart(d);
    }
    this.sched.after(this.scen.settleNs, () => this.endWhenQuiet());
    const live = this.issue9.liveness();
    if (live) {
      this.liveness = "running";
      void live.finally(() => (this.liveness = "done"));
    }
  }

  private endWhenQuiet(): void {
    if (this.ended) return;
    const since = this.now() - this.healedAt;
    const quiet = this.driversLeft === 0 && this.liveness !== "running" && ownersAt(this.tracked, this.daemons).every((o) => o.daemons.length === 1) && !anyUnresolved(this.daemons);
    if (quiet || since >= this.scen.recoveryBoundNs) this.finish();
    else this.sched.after(250n * MS, () => this.endWhenQuiet());
  }

  private finish(): void {
    if (this.ended) return;
    for (const e of restoredEvents(this.daemons, this.pauses, this.rec.events)) this.rec.event(e);
    if (this.liveness === "running")
      this.rec.event({ kind: "liveness", trueNs: this.now(), what: "the liveness check after healing", ok: false, attempts: 0, detail: "still trying when the recovery bound ran out" });
    this.rec.event({ kind: "final", trueNs: this.now(), owners: ownersAt(this.tracked, this.daemons), unresolved: unresolvedAt(this.daemons) });
    this.ended = true;
  }

  // ---- the loop ----------------------------------------------------------------------------------------

  /**
   * Runs scheduler events one at a time until the run ends, settling promise continuations in
   * between. Operating errors are values here (a refused Prepare, a deadline, a CrashSignal): nobody
   * reads their stack, and capturing one costs more than the rest of the error. Nothing else runs
   * while this loop runs (it yields only to microtasks), so the setting cannot leak; restored on return.
   */
  private async runEvents(): Promise<void> {
    const stackTraceLimit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    try {
      const limit = this.opts.eventLimit ?? 5_000_000;
      if (this.opts.drainWithImmediate) await this.stepUntilEnded(limit, flushMicrotasks);
      else await settleEach(() => this.stepOnce(limit));
    } finally {
      Error.stackTraceLimit = stackTraceLimit;
    }
  }

  /** Runs the next scheduler event; false once the run has ended or cannot go on. */
  private stepOnce(limit: number): boolean {
    if (this.ended) return false;
    let ran: boolean;
    try {
      ran = this.sched.step();
    } catch (e) {
      this.error("harness", `scheduler event threw ${describe(e)}`);
      return false;
    }
    if (!ran) {
      this.error("harness", "the simulation ran out of events before the end");
      return false;
    }
    if (++this.stats.events > limit) {
      this.error("harness", `the run exceeded ${limit} events without ending`);
      return false;
    }
    return true;
  }

  /** The same loop over an awaited `drain` (setImmediate: a full event-loop turn per event). */
  private async stepUntilEnded(limit: number, drain: () => Promise<void>): Promise<void> {
    for (;;) {
      await drain();
      if (!this.stepOnce(limit)) break;
    }
  }
}

const describe = (e: unknown): string => (e instanceof Error ? `${e.name}: ${e.message}` : String(e));

function emptyStats(scen: Scenario): SimRunStats {
  return {
    events: 0,
    simNs: 0n,
    daemons: scen.hosts.length,
    vms: scen.vms.length,
    migrationsStarted: 0,
    outcomes: {},
    reasons: {},
    switchovers: {},
    crashes: 0,
    kills: 0,
    restarts: 0,
    faultSites: {},
    net: { messages: 0, lost: 0, duplicated: 0, resets: 0, partitioned: 0, unauthenticated: 0 },
    active: [...scen.active],
  };
}

/** Where each tracked VM runs as an owner now, and at which generation (I7's final ownership). */
function ownersAt(tracked: readonly string[], daemons: readonly SimDaemon[]): { vmId: string; daemons: string[]; generation: string }[] {
  return tracked.map((vmId) => {
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
}

/** What is still undecided: daemons down, migrations pending or unacknowledged, inbound migrations in flight. */
function unresolvedAt(daemons: readonly SimDaemon[]): string[] {
  const out: string[] = [];
  for (const d of daemons) {
    const c = d.current;
    if (!c) out.push(`${d.name} is down`);
    else out.push(...summarizeUnresolved(d.name, unresolvedLines(d, c)));
  }
  return out;
}

/**
 * Whether anything `unresolvedAt` would list is left: the same three questions, answered at the
 * first yes and without the lines (asked every 250 ms of simulated time after healing, while a
 * flood can leave hundreds of Prepares pending).
 */
function anyUnresolved(daemons: readonly SimDaemon[]): boolean {
  for (const d of daemons) {
    const c = d.current;
    if (!c) return true;
    if (d.journal.hasMigration({ decision: "pending" })) return true;
    if (d.journal.hasMigration({ role: "source", decision: "committed" }, (m) => m.phase !== "committed")) return true;
    if (c.node.destination.pending().length > 0) return true;
  }
  return false;
}

interface UnresolvedLine {
  key: string;
  line: string;
  many: (n: number, first: string) => string;
}

function unresolvedLines(d: SimDaemon, c: Incarnation): UnresolvedLine[] {
  const lines: UnresolvedLine[] = [];
  const add = (key: string, line: string, many: (n: number, first: string) => string) => lines.push({ key, line, many });
  for (const m of d.journal.listMigrations({ decision: "pending" }))
    add(`p ${m.role} ${m.peer} ${m.phase}`, `${d.name}: ${m.role} side of ${m.migrationId} (${m.vmId}) undecided in phase ${m.phase}`, (n, first) => `${d.name}: ${n} ${m.role} migrations with ${m.peer} undecided in phase ${m.phase} (${first}, …)`);
  for (const m of d.journal.listMigrations({ role: "source", decision: "committed" }))
    if (m.phase !== "committed") add(`c ${m.peer}`, `${d.name}: commit of ${m.migrationId} (${m.vmId}) not acknowledged by ${m.peer}`, (n, first) => `${d.name}: ${n} commits not acknowledged by ${m.peer} (${first}, …)`);
  for (const i of c.node.destination.pending())
    add(`i ${i.req.sourceName} ${i.state.phase}`, `${d.name}: inbound ${i.req.migrationId} (${i.req.vmId}) still ${i.state.phase}`, (n, first) => `${d.name}: ${n} inbound migrations from ${i.req.sourceName} still ${i.state.phase} (${first}, …)`);
  return lines;
}

/** Past a few of one kind with one peer (a Prepare flood leaves hundreds), one line says how many. */
function summarizeUnresolved(daemon: string, lines: readonly UnresolvedLine[]): string[] {
  const out: string[] = [];
  const per = new Map<string, number>();
  for (const l of lines) per.set(l.key, (per.get(l.key) ?? 0) + 1);
  const said = new Set<string>();
  for (const l of lines) {
    const n = per.get(l.key) as number;
    if (n <= 3) out.push(l.line);
    else if (!said.has(l.key)) {
      said.add(l.key);
      out.push(l.many(n, l.line.replace(`${daemon}: `, "")));
    }
  }
  return out;
}

/**
 * The harness's account of every committed restore (I3 for migrations whose source never got the
 * report): the destination's journaled report beside what the source VM would read at the resume
 * had it never paused.
 */
function restoredEvents(daemons: readonly SimDaemon[], pauses: ReadonlyMap<string, { vm: HypervisorVm; truth: TruthProbe; record: PvclockRecord; t: bigint; source: string }>, events: readonly ChaosEvent[]): ChaosEvent[] {
  const out: ChaosEvent[] = [];
  for (const d of daemons)
    for (const m of d.journal.listMigrations({ role: "destination", decision: "committed" })) {
      if (!m.report) continue;
      const r = restoreReportFromJournal(m.report);
      const p = pauses.get(`${m.vmId}@${m.generation}`);
      if (!p || r.resumeTrueNs <= 0n) continue;
      let st: Extract<ChaosEvent, { kind: "migrateStart" }> | undefined;
      for (const e of events) if (e.kind === "migrateStart" && e.vmId === m.vmId && e.trueNs <= p.t) st = e;
      const ideal = p.truth.guestTscAt(p.vm, 0, r.resumeTrueNs);
      out.push({
        kind: "restored",
        trueNs: r.resumeTrueNs,
        migrationId: m.migrationId,
        vmId: m.vmId,
        source: p.source,
        destination: d.name,
        policy: st?.policy ?? "unknown",
        estimator: st?.estimator ?? "unknown",
        capped: r.capped,
        pauseTrueNs: p.t,
        resumeTrueNs: r.resumeTrueNs,
        estimatedBlackoutNs: r.estimatedBlackoutNs,
        errorBoundNs: r.errorBoundNs,
        tscAtResume: r.tscAtResume,
        tscIdealAtResume: ideal,
        kvmclockAtResumeNs: r.kvmclockAtResumeNs,
        kvmclockIdealAtResumeNs: pvclockReadCycles(p.record, ideal),
        guestTscKhz: p.vm.guestTscKhz,
      });
    }
  return out;
}
