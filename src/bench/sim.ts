// The protocol code alone in simulation, next to the chaos runner's figure (main.ts): two
// TscmigNodes on one SimClock/SimScheduler, in-memory journals, and the peer protocol over a
// transport with no network (rpc/direct-transport.ts: the same codec and protocol core, a simulated
// one-way delay, no faults, guest samples or checker), so the gap between the two figures is what a
// campaign adds around each migration.

import { TscmigError } from "../shared/errors.js";
import { EmulatedHost } from "../shared/hypervisor/host.js";
import { SILENT_LOGGER } from "../shared/logger.js";
import { MemoryJournal } from "../shared/migration/journal.js";
import { DirectNetwork } from "../shared/rpc/direct-transport.js";
import type { Clock } from "../shared/time/clock.js";
import { SeededRandom } from "../shared/time/random.js";
import { flushMicrotasks, SimClock, SimScheduler } from "../shared/time/sim.js";
import { defaultNodeConfig, TscmigNode } from "../daemon/node.js";

export interface SimRunOptions {
  /** Migrations to carry (one VM bounced between the two nodes). */
  migrations: number;
  vcpus: number;
  seed: bigint;
  /** Real clock that times the run (wall time, this process). */
  wallClock: Clock;
}

export interface SimRunResult {
  runner: string;
  migrations: number;
  committed: number;
  wallNs: bigint;
  simulatedNs: bigint;
}

export type SimRunner = (o: SimRunOptions) => Promise<SimRunResult>;

/** One-way delay of every simulated message (loopback-like). */
const ONE_WAY_NS = 50_000n;

/** Drives the scheduler until `p` settles: microtasks first, then the next simulated event. */
async function pump<T>(sched: SimScheduler, p: Promise<T>): Promise<T> {
  let done = false;
  p.then(
    () => (done = true),
    () => (done = true),
  );
  while (!done) {
    await flushMicrotasks();
    if (done) break;
    if (!sched.step()) throw new TscmigError("internal", "simulation ran out of events before the migration finished");
  }
  return p;
}

/** The stand-in runner: two nodes, one VM bounced between them, one migration at a time. */
export const minimalPairRunner: SimRunner = async (o) => {
  const clock = new SimClock();
  const sched = new SimScheduler(clock);
  const net = new DirectNetwork(sched, { outNs: ONE_WAY_NS, backNs: ONE_WAY_NS });
  const root = new SeededRandom(o.seed);
  const mk = (name: string) => {
    const host = new EmulatedHost({ name, clock, epochNs: 1_767_225_600_000_000_000n, maxerrorNs: 100_000n });
    const node = new TscmigNode(defaultNodeConfig(name, name), {
      clock,
      scheduler: sched,
      random: root.fork(name),
      log: SILENT_LOGGER,
      host,
      journal: new MemoryJournal(),
      dialer: net.dialer(name),
    });
    net.attach(name, node.peer, () => node.host.rawNs());
    node.start();
    return node;
  };
  const nodes = [mk("sim-a"), mk("sim-b")] as const;
  nodes[0].createVm({ id: "sim-vm", vcpus: o.vcpus });
  let here = 0;
  let committed = 0;
  const sim0 = clock.monotonicNs();
  const t0 = o.wallClock.monotonicNs();
  for (let i = 0; i < o.migrations; i++) {
    const from = nodes[here] as TscmigNode;
    const to = nodes[1 - here] as TscmigNode;
    const r = await pump(sched, from.migrate("sim-vm", { destination: to.cfg.name }));
    if (r.outcome !== "committed") throw new TscmigError("internal", `simulated migration ${i}: ${r.outcome} ${r.error?.message ?? ""}`);
    committed++;
    here = 1 - here;
  }
  const wallNs = o.wallClock.monotonicNs() - t0;
  for (const n of nodes) n.stop();
  return { runner: "minimal-pair (two TscmigNodes, the peer protocol over a transport with no network)", migrations: o.migrations, committed, wallNs, simulatedNs: clock.monotonicNs() - sim0 };
};

/** The protocol-only runner the benchmark reports beside the chaos runner's figure. */
export const simRunner: SimRunner = minimalPairRunner;
