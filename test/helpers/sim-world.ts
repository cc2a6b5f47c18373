// A small world of TscmigNodes on one SimClock, for scene tests and unit tests of the node's own
// behaviour (persistence, recovery, durability): peers talk through the peer protocol over a
// transport with no network (rpc/direct-transport.ts: the real codec and protocol core, a simulated
// delay, no faults unless a test intercepts a message); each node runs over a journal the test hands
// in (and keeps, across "restarts"); journals can charge process time for their writes. Time moves
// only through the scheduler.

import { defaultNodeConfig, type NodeConfig, TscmigNode } from "../../src/daemon/node.js";
import type { RestoreFn } from "../../src/destination/migrate-in.js";
import type { Faults } from "../../src/shared/faults.js";
import type { HistorySink } from "../../src/shared/history.js";
import type { HypervisorBackend } from "../../src/shared/hypervisor/backend.js";
import { EmulatedHost } from "../../src/shared/hypervisor/host.js";
import { type Logger, SILENT_LOGGER } from "../../src/shared/logger.js";
import { type JournalStore, MemoryJournal, type MigrationRecord, type VmRecord } from "../../src/shared/migration/journal.js";
import { DirectNetwork, type Intercept } from "../../src/shared/rpc/direct-transport.js";
import { SeededRandom } from "../../src/shared/time/random.js";
import { flushMicrotasks, SimClock, SimScheduler } from "../../src/shared/time/sim.js";

export const EPOCH = 1_767_225_600_000_000_000n;
export const MS = 1_000_000n;

/** Writes cost `costNs(record)` of process time (an fsync): the true clock moves inside the call. */
export class CostlyJournal extends MemoryJournal {
  constructor(
    private readonly clock: SimClock,
    private readonly costNs: (rec: VmRecord | MigrationRecord) => bigint,
  ) {
    super();
  }
  override putVm(rec: VmRecord): void {
    this.clock.advanceTo(this.clock.monotonicNs() + this.costNs(rec));
    super.putVm(rec);
  }
  override putMigration(rec: MigrationRecord): void {
    this.clock.advanceTo(this.clock.monotonicNs() + this.costNs(rec));
    super.putMigration(rec);
  }
}

export interface WorldOptions {
  /** One-way delays of the peer protocol (default 200 µs out, 300 µs back) and its call deadline (default 5 s). */
  outNs?: bigint;
  backNs?: bigint;
  deadlineNs?: bigint;
  /** Every node's workload sampling period (default 100 ms; 0: none). */
  sampleIntervalNs?: bigint;
  /** Whether peers offer the Handover exchange (default true; false: the unary calls only). */
  exchange?: boolean;
}

export interface NodeOptions {
  /** Default: this world's host of that name (one per name, kept across restarts of its node). */
  host?: EmulatedHost;
  faults?: Faults;
  tune?: (c: NodeConfig) => void;
  history?: HistorySink;
  log?: Logger;
  /** The node's random seed (default: 7 × how many nodes this world holds, plus one). */
  seed?: bigint;
  /** The hypervisor backend over the node's host (default: emulated VMs). */
  backend?: (host: EmulatedHost) => HypervisorBackend;
  /** Test seam: a fencing Resolve answers without fencing (the checker's sensitivity). */
  brokenFence?: boolean;
  /** Test seam: replaces the destination's restore (a broken one). */
  restore?: RestoreFn;
}

export class World {
  readonly clock = new SimClock(0n, EPOCH);
  readonly sched = new SimScheduler(this.clock);
  readonly nodes = new Map<string, TscmigNode>();
  readonly net: DirectNetwork;
  private readonly hosts = new Map<string, EmulatedHost>();
  private readonly sampleIntervalNs: bigint;

  constructor(o: WorldOptions = {}) {
    this.net = new DirectNetwork(this.sched, { outNs: o.outNs ?? 200_000n, backNs: o.backNs ?? 300_000n, deadlineNs: o.deadlineNs ?? 5_000n * MS, ...(o.exchange === false ? { exchange: false } : {}) });
    this.sampleIntervalNs = o.sampleIntervalNs ?? 100n * MS;
  }

  /** Sees every message before delivery (default: deliver); Handover steps are named as their calls. */
  set intercept(f: Intercept) {
    this.net.intercept = f;
  }

  /** The node at `name` goes away (its process, not its journal). */
  drop(name: string): void {
    this.nodes.get(name)?.stop();
    this.nodes.delete(name);
    this.net.detach(name);
  }

  /** A fresh host `name` whose crystal drifts `crystalPpm` from true time. */
  host(name: string, crystalPpm = 0): EmulatedHost {
    return new EmulatedHost({ name, clock: this.clock, epochNs: EPOCH, crystal: { kind: "drift", ppm: crystalPpm, fromNs: 0n }, maxerrorNs: 50_000n });
  }

  /** A node named `name` over `journal` (not started), reachable at its name. */
  node(name: string, journal: JournalStore, o: NodeOptions = {}): TscmigNode {
    const cfg = defaultNodeConfig(name, name);
    cfg.sampleIntervalNs = this.sampleIntervalNs;
    o.tune?.(cfg);
    const host = o.host ?? this.stableHost(name);
    const n = new TscmigNode(cfg, {
      clock: this.clock,
      scheduler: this.sched,
      random: new SeededRandom(o.seed ?? BigInt(this.nodes.size + 1) * 7n),
      log: o.log ?? SILENT_LOGGER,
      host,
      ...(o.backend ? { backend: o.backend(host) } : {}),
      journal,
      dialer: this.net.dialer(name),
      ...(o.faults ? { faults: o.faults } : {}),
      ...(o.history ? { history: o.history } : {}),
      ...(o.brokenFence ? { brokenFence: true } : {}),
      ...(o.restore ? { restore: o.restore } : {}),
    });
    this.nodes.set(name, n);
    this.net.attach(name, n.peer, () => n.host.rawNs());
    return n;
  }

  private stableHost(name: string): EmulatedHost {
    let h = this.hosts.get(name);
    if (!h) this.hosts.set(name, (h = this.host(name)));
    return h;
  }

  /** Steps simulated time until `p` settles (or rejects); throws if nothing is left to run first. */
  async settle<T>(p: Promise<T>): Promise<T> {
    let done = false;
    void p.then(
      () => (done = true),
      () => (done = true),
    );
    for (let i = 0; i < 1_000_000 && !done; i++) {
      await flushMicrotasks();
      if (done || !this.sched.step()) break;
    }
    await flushMicrotasks();
    if (!done) throw new Error("simulation ran dry before the promise settled");
    return p;
  }

  /** Runs every timer due within the next `ns` (a timer set meanwhile for later waits). */
  async advance(ns: bigint): Promise<void> {
    this.sched.runUntil(this.clock.monotonicNs() + ns);
    await flushMicrotasks();
  }

  /** Steps event by event, settling promises between events, until `ns` has passed. */
  async runFor(ns: bigint): Promise<void> {
    let done = false;
    this.sched.after(ns, () => (done = true));
    while (!done) {
      await flushMicrotasks();
      if (!this.sched.step()) break;
    }
    await flushMicrotasks();
  }
}
