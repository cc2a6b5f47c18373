// Goal: the two role drivers (src/source/migrate-out.ts, src/destination/migrate-in.ts) measure the
// blackout as the estimators assume, including when the source daemon stalls between pausing the
// VM and capturing it. Method: two TscmigNodes on one SimClock joined by the peer protocol over a
// transport with simulated latency and no network (rpc/direct-transport.ts); journal writes cost simulated time, and a stall (a GC pause) is injected at
// the source's after-pause fault site; every report's TSC error is checked against its bound.

import { describe, expect, it } from "vitest";
import { defaultNodeConfig, TscmigNode } from "../../src/daemon/node.js";
import { EmulatedHost } from "../../src/shared/hypervisor/host.js";
import { SILENT_LOGGER } from "../../src/shared/logger.js";
import { ESTIMATORS, type EstimatorName } from "../../src/shared/migration/blackout.js";
import type { Faults } from "../../src/shared/faults.js";
import { MemoryJournal, type VmRecord } from "../../src/shared/migration/journal.js";
import { DirectNetwork } from "../../src/shared/rpc/direct-transport.js";
import { POLICIES, type PolicyName } from "../../src/shared/migration/restore.js";
import { SeededRandom } from "../../src/shared/time/random.js";
import { flushMicrotasks, SimClock, SimScheduler } from "../../src/shared/time/sim.js";
import { EPOCH_NS } from "../helpers/sim-migration.js";

const MS = 1_000_000n;
const abs = (x: bigint) => (x < 0n ? -x : x);

/** A journal whose every VM write takes `costNs` of simulated time (an fsync of the VM's state). */
class SlowJournal extends MemoryJournal {
  constructor(
    private readonly clock: SimClock,
    private readonly costNs: bigint,
  ) {
    super();
  }
  override putVm(rec: VmRecord): void {
    this.clock.advanceTo(this.clock.monotonicNs() + this.costNs);
    super.putVm(rec);
  }
}

/** Never crashes; the source stalls for `stallNs` right after pausing the VM (a GC pause, a slow page-out). */
function stallAfterPause(clock: SimClock, stallNs: bigint): Faults {
  return {
    fire: (site) => {
      if (site === "crash.source.afterPause") clock.advanceTo(clock.monotonicNs() + stallNs);
      return false;
    },
    delayNs: () => 0n,
  };
}

function pair(o: { journalCostNs: bigint; stallNs: bigint; outNs: bigint; backNs: bigint; dstSkewNs: bigint }) {
  const clock = new SimClock(0n, EPOCH_NS);
  const sched = new SimScheduler(clock);
  const net = new DirectNetwork(sched, { outNs: o.outNs, backNs: o.backNs });
  const faults = stallAfterPause(clock, o.stallNs);
  const node = (name: string, skewNs: bigint, tscKhz: bigint, crystalPpm: number) => {
    const host = new EmulatedHost({
      name,
      clock,
      epochNs: EPOCH_NS,
      tscKhz,
      crystal: { kind: "drift", ppm: crystalPpm, fromNs: 0n },
      skew: { kind: "constant", offsetNs: skewNs },
      maxerrorNs: 100_000n,
    });
    const n = new TscmigNode(defaultNodeConfig(name, name), {
      clock,
      scheduler: sched,
      random: new SeededRandom(7n),
      log: SILENT_LOGGER,
      host,
      journal: new SlowJournal(clock, o.journalCostNs),
      dialer: net.dialer(name),
      faults,
    });
    net.attach(name, n.peer, () => n.host.rawNs());
    return n;
  };
  return { clock, sched, a: node("a", 0n, 2_500_000n, 120), b: node("b", o.dstSkewNs, 3_100_000n, -80) };
}

/** Steps simulated time until `p` settles. */
async function run<T>(sched: SimScheduler, p: Promise<T>): Promise<T> {
  let done = false;
  void p.finally(() => {
    done = true;
  });
  for (let n = 0; n < 1_000_000; n++) {
    await flushMicrotasks();
    if (done) return p;
    if (!sched.step()) break;
  }
  await flushMicrotasks();
  if (!done) throw new Error("simulation ran dry before the migration finished");
  return p;
}

describe("role drivers on simulated time", () => {
  const cases: [PolicyName, EstimatorName][] = POLICIES.flatMap((p) => ESTIMATORS.map((e): [PolicyName, EstimatorName] => [p, e]));
  for (const [policy, estimator] of cases)
    it(`${policy} / ${estimator}: a 20 ms stall between pause and capture stays out of the advance`, async () => {
      const { sched, a } = pair({ journalCostNs: 2n * MS, stallNs: 20n * MS, outNs: 300_000n, backNs: 700_000n, dstSkewNs: 0n });
      const vm = a.createVm({ vcpus: 4, guestTscKhz: 2_000_000n });
      sched.runUntil(3_000n * MS);
      const r = await run(sched, a.migrate(vm.id, { destination: "b", policy, estimator, doorbell: true }));
      expect(r.outcome, JSON.stringify(r.error)).toBe("committed");
      expect(r.trueBlackoutNs).toBeGreaterThan(20n * MS);
      if (policy === "freeze") {
        // The snapshot's clocks are those of the capture, after the stall: freeze loses capture → resume.
        expect(abs(r.tscErrorNs)).toBeLessThanOrEqual(r.errorBoundNs);
        expect(r.tscErrorNs).toBeLessThan(0n);
      } else {
        expect(abs(r.tscErrorNs), `error ${r.tscErrorNs} bound ${r.errorBoundNs}`).toBeLessThanOrEqual(r.errorBoundNs);
        expect(abs(r.kvmclockErrorNs)).toBeLessThanOrEqual(r.errorBoundNs);
      }
    });

  it("one-sided ignores a 10 s skew between the two daemons' hosts", async () => {
    const { sched, a, b } = pair({ journalCostNs: 5n * MS, stallNs: 0n, outNs: 200_000n, backNs: 200_000n, dstSkewNs: -10_000n * MS });
    const vm = a.createVm({ vcpus: 2 });
    sched.runUntil(1_000n * MS);
    const r = await run(sched, a.migrate(vm.id, { destination: "b", policy: "advance", estimator: "one-sided" }));
    expect(r.outcome).toBe("committed");
    expect(abs(r.tscErrorNs)).toBeLessThanOrEqual(r.errorBoundNs);
    expect(r.errorBoundNs).toBeLessThan(1n * MS);
    expect(b.readVm(vm.id).running).toBe(true);
  });
});
