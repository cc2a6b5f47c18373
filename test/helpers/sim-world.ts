// A small world of TscmigNodes on one SimClock for scene tests: peers talk through the peer protocol
// over a transport with no network (rpc/direct-transport.ts: the real codec and protocol core, a
// simulated delay, no faults unless a test drops a message), journals can charge process time for
// their writes.

import { defaultNodeConfig, type NodeConfig, TscmigNode } from "../../src/daemon/node.js";
import type { Faults } from "../../src/shared/faults.js";
import type { HistorySink } from "../../src/shared/history.js";
import { EmulatedHost } from "../../src/shared/hypervisor/host.js";
import { SILENT_LOGGER } from "../../src/shared/logger.js";
import { MemoryJournal, type MigrationRecord, type VmRecord } from "../../src/shared/migration/journal.js";
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

export class World {
  readonly clock = new SimClock(0n, EPOCH);
  readonly sched = new SimScheduler(this.clock);
  readonly nodes = new Map<string, TscmigNode>();
  /** The peer protocol between the nodes: 200 µs out, 300 µs back, no network faults. */
  readonly net = new DirectNetwork(this.sched, { outNs: 200_000n, backNs: 300_000n, deadlineNs: 5_000n * MS });

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

  host(name: string, crystalPpm = 0): EmulatedHost {
    return new EmulatedHost({ name, clock: this.clock, epochNs: EPOCH, crystal: { kind: "drift", ppm: crystalPpm, fromNs: 0n }, maxerrorNs: 50_000n });
  }
  node(name: string, host: EmulatedHost, journal: MemoryJournal, faults?: Faults, tune?: (c: NodeConfig) => void, history?: HistorySink): TscmigNode {
    const cfg = defaultNodeConfig(name, name);
    cfg.sampleIntervalNs = 100n * MS;
    tune?.(cfg);
    const n = new TscmigNode(cfg, { clock: this.clock, scheduler: this.sched, random: new SeededRandom(BigInt(this.nodes.size + 1) * 7n), log: SILENT_LOGGER, host, journal, dialer: this.net.dialer(name), ...(faults ? { faults } : {}), ...(history ? { history } : {}) });
    this.nodes.set(name, n);
    this.net.attach(name, n.peer, () => n.host.rawNs());
    return n;
  }
  /** Steps simulated time until `p` settles (or rejects). */
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
    return p;
  }
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

