// Goal: the product bugs the chaos campaigns found stay fixed, each pinned by the smallest scene
// that shows it. Method: one or two TscmigNodes on one SimClock, peers called directly after a
// simulated delay, journals whose writes can cost process time, faults that crash or stall at a
// named site; assertions on what the guest and the reports say against true time.
import { describe, expect, it } from "vitest";
import { TscmigNode } from "../../src/daemon/node.js";
import { CrashSignal, type Faults } from "../../src/shared/faults.js";
import { Guest, type GuestOptions } from "../../src/shared/guest/guest.js";
import { EmulatedVm } from "../../src/shared/hypervisor/vm.js";
import { VMCLOCK_FLAG_TIME_MAXERROR_VALID } from "../../src/shared/kvm/vmclock.js";
import { MemoryJournal, type MigrationRecord, type VmRecord } from "../../src/shared/migration/journal.js";
import { SILENT_LOGGER } from "../../src/shared/logger.js";
import type { GuestSample } from "../../src/shared/history.js";
import { SeededRandom } from "../../src/shared/time/random.js";
import { CostlyJournal, EPOCH, MS, World } from "../helpers/sim-world.js";

const abs = (x: bigint) => (x < 0n ? -x : x);

describe("regressions found by the chaos campaigns", () => {
  it("a source restarted mid-migration resumes its VM even when an earlier attempt at that generation was refused", async () => {
    const w = new World();
    const journal = new MemoryJournal();
    const host = w.host("a");
    let crash = false;
    const faults: Faults = { fire: (site) => crash && site === "crash.source.afterPause", delayNs: () => 0n };
    const a = w.node("a", journal, { host, faults });
    a.start();
    const vm = a.createVm({ vcpus: 2 });
    // First attempt: nobody at "b" → refused (decision aborted, phase "refused", generation 1).
    const first = await w.settle(a.migrate(vm.id, { destination: "b" }));
    expect(first.outcome).toBe("refused");
    // Second attempt: "b" answers, and the source dies right after pausing.
    w.node("b", new MemoryJournal(), { host: w.host("b") }).start();
    crash = true;
    await expect(w.settle(a.migrate(vm.id, { destination: "b" }))).rejects.toBeInstanceOf(CrashSignal);
    a.stop();
    // Restart over the same journal: the undecided migration is aborted and the VM runs again.
    const a2 = new TscmigNode(a.cfg, { clock: w.clock, scheduler: w.sched, random: new SeededRandom(99n), log: SILENT_LOGGER, host, journal, dialer: w.net.dialer("a") });
    a2.start();
    const h = a2.getVm(vm.id);
    expect([h.role, h.vm.running, h.lock]).toEqual(["owner", true, null]);
  });

  it("a widen-mode guest that missed a disruption ditches instead of widening by the last bound only", () => {
    const w = new World();
    const vm = new EmulatedVm(w.host("h"), { vcpus: 1 });
    const opts: GuestOptions = {
      clocksource: "kvm-clock",
      migrationHandling: true,
      handlingMode: "widen",
      watchVmclock: true,
      pollIntervalNs: 16_000n * MS,
      resyncDelayNs: 1_000n * MS,
      driftAllowancePpm: 500n,
      ntpSource: () => ({ realtimeNs: EPOCH + w.clock.monotonicNs(), maxerrorNs: 100_000n }),
    };
    const guest = new Guest(vm, w.sched, opts);
    guest.sync();
    const modes: string[] = [];
    guest.onHandled = (e) => modes.push(e.mode);
    const disrupt = (by: bigint) =>
      vm.updateVmclock((p) => {
        p.disruptionMarker += by;
        p.timeMaxerrorNanosec = 10_000n;
        p.flags |= VMCLOCK_FLAG_TIME_MAXERROR_VALID;
      });
    disrupt(1n);
    guest.checkMarker();
    disrupt(2n); // two migrations since the guest last looked
    guest.checkMarker();
    expect(modes).toEqual(["widen", "ditch-fallback"]);
    expect(guest.now().status).toBe("disrupted");
  });

  it("a guest never claims sync from a source whose error bound reaches NTP_PHASE_LIMIT", () => {
    const w = new World();
    const vm = new EmulatedVm(w.host("h"), { vcpus: 1 });
    let maxerrorNs = 100_000n;
    const guest = new Guest(vm, w.sched, {
      clocksource: "kvm-clock",
      migrationHandling: true,
      handlingMode: "ditch",
      watchVmclock: true,
      pollIntervalNs: 16_000n * MS,
      resyncDelayNs: 1_000n * MS,
      driftAllowancePpm: 500n,
      ntpSource: () => ({ realtimeNs: EPOCH + w.clock.monotonicNs() + 17_000_000_000n, maxerrorNs }),
    });
    guest.sync();
    expect(guest.now().status).toBe("synchronized"); // an honest 100 µs claim (the offset is the source's problem)
    maxerrorNs = 17_600_000_000n; // honest about 17.6 s of error: more than the kernel can hold
    guest.sync();
    expect(guest.now().status).not.toBe("synchronized");
  });

  it("a restart never rolls the guest's NTP state back to an older sync", async () => {
    const w = new World();
    const journal = new MemoryJournal();
    const host = w.host("a");
    let stepNs = 0n;
    const a = w.node("a", journal, {
      host,
      tune: (c) => {
        c.guest.pollIntervalNs = 1_000n * MS;
        c.guest.ntpSource = () => ({ realtimeNs: EPOCH + w.clock.monotonicNs() + stepNs, maxerrorNs: 20_000n });
      },
    });
    a.start();
    const vm = a.createVm({ vcpus: 1 });
    await w.runFor(500n * MS);
    stepNs = 3n * MS; // the time source moved; the next poll steps the guest onto it
    await w.runFor(1_000n * MS);
    const before = a.getVm(vm.id).guest.exportState();
    a.stop();
    const a2 = new TscmigNode(a.cfg, { clock: w.clock, scheduler: w.sched, random: new SeededRandom(5n), log: SILENT_LOGGER, host, journal, dialer: w.net.dialer("a") });
    a2.start();
    const after = a2.getVm(vm.id).guest.exportState();
    expect(after.wallOffsetNs).toBe(before.wallOffsetNs);
    expect(after.syncClocksourceNs).toBe(before.syncClocksourceNs);
  });

  it("a slow journal write of the adopted VM happens after the resume: outside the blackout, error inside the bound", async () => {
    const w = new World();
    // The destination's write of the adopted VM takes 2 s; it is journaled once the vCPUs run.
    const slow = (rec: VmRecord | MigrationRecord) => ("role" in rec && rec.role === "owner" ? 2_000n * MS : 0n);
    const a = w.node("a", new MemoryJournal(), { host: w.host("a", 400) });
    const b = w.node("b", new CostlyJournal(w.clock, slow), { host: w.host("b", -400) });
    a.start();
    b.start();
    const vm = a.createVm({ vcpus: 2 });
    await w.runFor(300n * MS);
    const r = await w.settle(a.migrate(vm.id, { destination: "b", policy: "advance", estimator: "one-sided" }));
    expect(r.outcome).toBe("committed");
    expect(r.trueBlackoutNs).toBeLessThan(1_000n * MS);
    expect(abs(r.tscErrorNs)).toBeLessThanOrEqual(r.errorBoundNs);
    expect(abs(r.kvmclockErrorNs)).toBeLessThanOrEqual(r.errorBoundNs);
    expect(b.getVm(vm.id).vm.vmclock().timeMaxerrorNanosec).toBe(r.errorBoundNs);
  });

  it("a sample whose clock read made the guest act on a migration is stamped where the guest read its clock", async () => {
    const w = new World();
    const slow = () => 30n * MS; // every journal write (the handled migration's too) takes 30 ms
    const a = w.node("a", new MemoryJournal(), { host: w.host("a") });
    const samples: GuestSample[] = [];
    const b = w.node("b", new CostlyJournal(w.clock, slow), {
      host: w.host("b"),
      tune: (c) => {
        c.guest.ntpSource = () => ({ realtimeNs: EPOCH + w.clock.monotonicNs(), maxerrorNs: 20_000n });
      },
      history: { sample: (x) => samples.push(x), event: () => {} },
    });
    a.start();
    b.start();
    const vm = a.createVm({ vcpus: 1, handlingMode: "widen" });
    await w.runFor(300n * MS);
    const r = await w.settle(a.migrate(vm.id, { destination: "b", policy: "advance", estimator: "one-sided" }));
    expect(r.outcome).toBe("committed");
    await w.runFor(500n * MS);
    expect(samples.length).toBeGreaterThan(2);
    for (const x of samples)
      if (x.bounded.status === "synchronized") expect(abs(x.bounded.realtimeNs - (EPOCH + x.trueNs))).toBeLessThanOrEqual((x.bounded.latestNs - x.bounded.earliestNs) / 2n);
  });
});
