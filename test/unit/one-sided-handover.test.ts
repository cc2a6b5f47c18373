// Goal: over a Handover link the two role drivers hand one-sided every leg it can use — the earlier
// answers (anchors) and the earlier requests — so that when the Transfer and the
// Commit both stall on their way to the destination (a destination that went idle), the error and
// the bound stay at what the quick probe exchanges allow instead of half a stall.
// Method: two TscmigNodes on one SimClock, the peer protocol over a transport with no network whose
// forward delay depends on the message (rpc/direct-transport.ts: the protocol core dates each
// request's arrival as it does over gRPC); probes take 50 µs each way, the Transfer's and the
// Commit's forward legs 3 ms. The report's error must be
// within its bound, and the bound well under the stall.

import { describe, expect, it } from "vitest";
import { defaultNodeConfig, TscmigNode } from "../../src/daemon/node.js";
import type { Faults } from "../../src/shared/faults.js";
import { EmulatedHost } from "../../src/shared/hypervisor/host.js";
import { SILENT_LOGGER } from "../../src/shared/logger.js";
import { MemoryJournal } from "../../src/shared/migration/journal.js";
import { DirectNetwork } from "../../src/shared/rpc/direct-transport.js";
import { SeededRandom } from "../../src/shared/time/random.js";
import { flushMicrotasks, SimClock, SimScheduler } from "../../src/shared/time/sim.js";
import { EPOCH_NS } from "../helpers/sim-migration.js";

const US = 1_000n;
const MS = 1_000_000n;
const abs = (x: bigint) => (x < 0n ? -x : x);
const NO_FAULTS: Faults = { fire: () => false, delayNs: () => 0n };

interface Legs {
  /** Forward (source → destination) delay of each kind of message, and the delay of every answer. */
  probeNs: bigint;
  transferNs: bigint;
  commitNs: bigint;
  backNs: bigint;
}

function pair(legs: Legs) {
  const clock = new SimClock(0n, EPOCH_NS);
  const sched = new SimScheduler(clock);
  // Per message kind forward (Handover steps are named as their unary calls), every answer `backNs`.
  const net = new DirectNetwork(sched, { outNs: (m) => (m === "Transfer" ? legs.transferNs : m === "Commit" ? legs.commitNs : legs.probeNs), backNs: legs.backNs });
  const node = (name: string, tscKhz: bigint, crystalPpm: number, skewNs: bigint) => {
    const host = new EmulatedHost({ name, clock, epochNs: EPOCH_NS, tscKhz, crystal: { kind: "drift", ppm: crystalPpm, fromNs: 0n }, skew: { kind: "constant", offsetNs: skewNs }, maxerrorNs: 100_000n });
    const n = new TscmigNode(defaultNodeConfig(name, name), { clock, scheduler: sched, random: new SeededRandom(3n), log: SILENT_LOGGER, host, journal: new MemoryJournal(), dialer: net.dialer(name), faults: NO_FAULTS });
    net.attach(name, n.peer, () => n.host.rawNs());
    return n;
  };
  return { sched, a: node("a", 2_500_000n, 120, 0n), b: node("b", 3_100_000n, -80, 1_000n * MS) };
}

async function run<T>(sched: SimScheduler, p: Promise<T>): Promise<T> {
  let done = false;
  void p.finally(() => {
    done = true;
  });
  for (let n = 0; n < 1_000_000 && !done; n++) {
    await flushMicrotasks();
    if (!done && !sched.step()) break;
  }
  await flushMicrotasks();
  if (!done) throw new Error("simulation ran dry before the migration finished");
  return p;
}

describe("one-sided over a Handover link", () => {
  it("a stalled Transfer and a stalled Commit cost no more than the quick probes allow", async () => {
    const { sched, a } = pair({ probeNs: 50n * US, transferNs: 3n * MS, commitNs: 3n * MS, backNs: 50n * US });
    const vm = a.createVm({ vcpus: 2 });
    sched.runUntil(1_000n * MS);
    const r = await run(sched, a.migrate(vm.id, { destination: "b", policy: "advance", estimator: "one-sided" }));
    expect(r.outcome, JSON.stringify(r.error)).toBe("committed");
    expect(r.path).toBe("handover");
    expect(abs(r.tscErrorNs), `error ${r.tscErrorNs} bound ${r.errorBoundNs}`).toBeLessThanOrEqual(r.errorBoundNs);
    // f ∈ [f − 50 µs, f + 50 µs] from the probes, plus drift slack; without the requests' lower
    // limits the Commit's 3 ms would leave f ∈ [f − 3 ms, f + 50 µs]: a bound of 1.5 ms.
    expect(r.errorBoundNs).toBeLessThan(200n * US);
  });

  it("calm legs: the same link gives a bound of about one leg", async () => {
    const { sched, a } = pair({ probeNs: 50n * US, transferNs: 50n * US, commitNs: 50n * US, backNs: 50n * US });
    const vm = a.createVm({ vcpus: 2 });
    sched.runUntil(1_000n * MS);
    const r = await run(sched, a.migrate(vm.id, { destination: "b", policy: "advance", estimator: "one-sided" }));
    expect(r.outcome).toBe("committed");
    expect(abs(r.tscErrorNs)).toBeLessThanOrEqual(r.errorBoundNs);
    expect(r.errorBoundNs).toBeLessThan(200n * US);
  });
});
