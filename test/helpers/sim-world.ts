// A small world of TscmigNodes on one SimClock for scene tests: peers are called directly after a
// simulated delay (no codec, no faults unless a test intercepts a call), journals can charge
// process time for their writes. Tests that want the real wire path use the chaos simulator.

import { defaultNodeConfig, type NodeConfig, TscmigNode } from "../../src/daemon/node.js";
import { TscmigError } from "../../src/shared/errors.js";
import type { Faults } from "../../src/shared/faults.js";
import type { HistorySink } from "../../src/shared/history.js";
import { EmulatedHost } from "../../src/shared/hypervisor/host.js";
import { SILENT_LOGGER } from "../../src/shared/logger.js";
import { MemoryJournal, type MigrationRecord, type VmRecord } from "../../src/shared/migration/journal.js";
import type { PeerClient, PeerDialer } from "../../src/shared/migration/messages.js";
import { sleep } from "../../src/shared/time/clock.js";
import { SeededRandom } from "../../src/shared/time/random.js";
import { flushMicrotasks, SimClock, SimScheduler } from "../../src/shared/time/sim.js";

export const EPOCH = 1_767_225_600_000_000_000n;
export const MS = 1_000_000n;

/** A call about to be delivered: a test may drop it (return "drop") to model a lost message. */
export type Interceptor = (from: string, to: string, method: keyof PeerClient, req: unknown) => "deliver" | "drop";

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
  /** Sees every call before delivery (default: deliver). */
  intercept: Interceptor = () => "deliver";
  readonly clock = new SimClock(0n, EPOCH);
  readonly sched = new SimScheduler(this.clock);
  readonly nodes = new Map<string, TscmigNode>();
  readonly dialer: PeerDialer = this.dialerOf("?");

  /** The dialer of daemon `from` (the interceptor sees who calls whom). */
  dialerOf(from: string): PeerDialer {
    return {
    checkAddress: () => {},
    dial: (address) => {
      const hop = async <T>(fn: (n: TscmigNode) => T, method: keyof PeerClient = "ping", req: unknown = null): Promise<T> => {
        await sleep(this.sched, 200_000n);
        if (this.intercept(from, address, method, req) === "drop") {
          await sleep(this.sched, 5_000n * MS);
          throw new TscmigError("deadline_exceeded", `${method} to ${address}: lost`);
        }
        const n = this.nodes.get(address);
        if (!n) throw new TscmigError("unavailable", `${address} is down`);
        const r = fn(n);
        await sleep(this.sched, 300_000n);
        return r;
      };
      const client: PeerClient = {
        prepare: (req) => hop((n) => n.prepare(req), "prepare", req),
        probe: (req) => hop((n) => n.probe(req), "probe", req),
        transfer: (req) => hop((n) => n.transfer(req, n.host.rawNs(), 0n), "transfer", req),
        commit: (req) => hop((n) => n.commit(req), "commit", req),
        abort: (req) => hop((n) => n.abort(req), "abort", req),
        resolve: (req) => hop((n) => n.resolve(req), "resolve", req),
        ping: () => hop(() => undefined),
      };
      return client;
    },
    };
  }
  host(name: string, crystalPpm = 0): EmulatedHost {
    return new EmulatedHost({ name, clock: this.clock, epochNs: EPOCH, crystal: { kind: "drift", ppm: crystalPpm, fromNs: 0n }, maxerrorNs: 50_000n });
  }
  node(name: string, host: EmulatedHost, journal: MemoryJournal, faults?: Faults, tune?: (c: NodeConfig) => void, history?: HistorySink): TscmigNode {
    const cfg = defaultNodeConfig(name, name);
    cfg.sampleIntervalNs = 100n * MS;
    tune?.(cfg);
    const n = new TscmigNode(cfg, { clock: this.clock, scheduler: this.sched, random: new SeededRandom(BigInt(this.nodes.size + 1) * 7n), log: SILENT_LOGGER, host, journal, dialer: this.dialerOf(name), ...(faults ? { faults } : {}), ...(history ? { history } : {}) });
    this.nodes.set(name, n);
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

