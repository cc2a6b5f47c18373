// TscmigNodes on one SimClock for unit tests of the node's own behaviour (persistence, recovery,
// durability): each node over a journal the test hands in (and keeps, across "restarts"), peers
// reached through the peer protocol after a simulated hop (rpc/direct-transport.ts). Time moves only through the scheduler.

import { defaultNodeConfig, type NodeConfig, TscmigNode } from "../../src/daemon/node.js";
import type { HistorySink } from "../../src/shared/history.js";
import type { HypervisorBackend } from "../../src/shared/hypervisor/backend.js";
import { EmulatedHost } from "../../src/shared/hypervisor/host.js";
import { SILENT_LOGGER } from "../../src/shared/logger.js";
import type { Logger } from "../../src/shared/logger.js";
import type { JournalStore } from "../../src/shared/migration/journal.js";
import { DirectNetwork } from "../../src/shared/rpc/direct-transport.js";
import { SeededRandom } from "../../src/shared/time/random.js";
import { flushMicrotasks, SimClock, SimScheduler } from "../../src/shared/time/sim.js";
import { EPOCH_NS } from "./sim-migration.js";

export const MS = 1_000_000n;

export class SimWorld {
  readonly clock = new SimClock(0n, EPOCH_NS);
  readonly sched = new SimScheduler(this.clock);
  /** The peer protocol between the nodes, 200 µs each way, no network faults. */
  readonly net = new DirectNetwork(this.sched, { outNs: 200_000n, backNs: 200_000n });
  private readonly hosts = new Map<string, EmulatedHost>();

  /** Host `name` (one per name, kept across restarts of its node). */
  host(name: string): EmulatedHost {
    let h = this.hosts.get(name);
    if (!h)
      this.hosts.set(
        name,
        (h = new EmulatedHost({ name, clock: this.clock, epochNs: EPOCH_NS, tscKhz: 2_500_000n, skew: { kind: "constant", offsetNs: 0n }, maxerrorNs: 100_000n })),
      );
    return h;
  }

  /** A node named `name` over `journal` (not started). */
  node(
    name: string,
    journal: JournalStore,
    o: { tune?: (c: NodeConfig) => void; log?: Logger; seed?: bigint; history?: HistorySink; backend?: (host: EmulatedHost) => HypervisorBackend } = {},
  ): TscmigNode {
    const cfg = defaultNodeConfig(name, name);
    o.tune?.(cfg);
    const n = new TscmigNode(cfg, {
      clock: this.clock,
      scheduler: this.sched,
      random: new SeededRandom(o.seed ?? 7n),
      log: o.log ?? SILENT_LOGGER,
      host: this.host(name),
      journal,
      dialer: this.net.dialer(name),
      ...(o.history ? { history: o.history } : {}),
      ...(o.backend ? { backend: o.backend(this.host(name)) } : {}),
    });
    this.net.attach(name, n);
    return n;
  }

  /** Steps simulated time until `p` settles. */
  async run<T>(p: Promise<T>): Promise<T> {
    let done = false;
    void p.then(
      () => (done = true),
      () => (done = true),
    );
    for (let n = 0; n < 1_000_000; n++) {
      await flushMicrotasks();
      if (done) return p;
      if (!this.sched.step()) break;
    }
    await flushMicrotasks();
    if (!done) throw new Error("simulation ran dry before the promise settled");
    return p;
  }

  /** Advances simulated time by `ns`, running every timer due. */
  async advance(ns: bigint): Promise<void> {
    this.sched.runUntil(this.clock.monotonicNs() + ns);
    await flushMicrotasks();
  }
}
