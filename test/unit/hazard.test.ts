// Goal: reproduce the seed thread's hazard and show the guest's migration handling closes it (I4),
// acting exactly once per migration whichever signal it sees first (I5). Method: a guest NTP-synced
// to true time (maxerror 100 µs) migrates under kvm-realtime/wallclock between simulated hosts
// whose realtime differs by 5 ms; a sampler checks every `synchronized` reading against true time.

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { EmulatedHost } from "../../src/shared/hypervisor/host.js";
import { EmulatedVm } from "../../src/shared/hypervisor/vm.js";
import { type BoundedNow, type Clocksource, Guest, type GuestOptions, type HandledEvent, type HandlingMode } from "../../src/shared/guest/guest.js";
import { PVCLOCK_GUEST_STOPPED } from "../../src/shared/kvm/pvclock.js";
import { SimClock, SimScheduler } from "../../src/shared/time/sim.js";
import { replayable } from "../helpers/sim-arbitraries.js";
import { EPOCH_NS, type Live, migrateGuest, quietGuestOptions, type Timeline } from "../helpers/sim-migration.js";

const US = 1_000n;
const MS = 1_000_000n;
const S = 1_000_000_000n;
/** Realtime of host B minus host A. */
const SKEW_NS = 5n * MS;
/** The guest's NTP server: true time, 20 µs off, claiming 100 µs. */
const SERVER_ERROR_NS = 20n * US;
const SERVER_MAXERROR_NS = 100n * US;
const SAMPLE_EVERY_NS = 50n * MS;

const BLACKOUT: Timeline = {
  runNs: 0n,
  pauseToCaptureNs: 1n * MS,
  captureToSendNs: 1n * MS,
  transitNs: 2n * MS,
  holdNs: 1n * MS,
  returnNs: 2n * MS,
  ackToRestoreNs: 300n * MS,
  probeLeadNs: 0n,
  probeLegNs: 0n,
  probeReturnLegNs: 0n,
  probeHoldNs: 0n,
  probeExchanges: 0,
};

interface Violation {
  trueNs: bigint;
  reading: BoundedNow;
}

interface WorldOptions {
  handling: boolean;
  clocksource: Clocksource;
  watchVmclock: boolean;
  handlingMode?: HandlingMode;
  vcpus?: number;
  /** What each host claims its realtime error is (the widen mode publishes a bound built on it). */
  claimNs?: bigint;
}

/** Two hosts 5 ms apart, a guest on A synced to a true NTP server, and an I4 sampler. */
class World {
  readonly clock = new SimClock(0n, EPOCH_NS);
  readonly sched = new SimScheduler(this.clock);
  readonly a: EmulatedHost;
  readonly b: EmulatedHost;
  readonly guestOptions: GuestOptions;
  readonly violations: Violation[] = [];
  readonly handled: HandledEvent[] = [];
  samples = 0;
  current: Live;

  constructor(o: WorldOptions) {
    const claim = o.claimNs ?? 100n * US;
    const host = (name: string, offsetNs: bigint) =>
      new EmulatedHost({ name, clock: this.clock, epochNs: EPOCH_NS, skew: { kind: "constant", offsetNs }, maxerrorNs: claim });
    this.a = host("a", 0n);
    this.b = host("b", SKEW_NS);
    this.guestOptions = quietGuestOptions({
      clocksource: o.clocksource,
      migrationHandling: o.handling,
      handlingMode: o.handlingMode ?? "ditch",
      watchVmclock: o.watchVmclock,
      ntpSource: () => ({ realtimeNs: EPOCH_NS + this.clock.monotonicNs() + SERVER_ERROR_NS, maxerrorNs: SERVER_MAXERROR_NS }),
    });
    const vm = new EmulatedVm(this.a, { vcpus: o.vcpus ?? 4 });
    const guest = new Guest(vm, this.sched, this.guestOptions);
    this.current = { host: this.a, vm, guest };
    this.wire(guest);
    guest.start();
    const tick = () => {
      if (this.current.vm.running) this.observe();
      this.sched.after(SAMPLE_EVERY_NS, tick);
    };
    this.sched.after(SAMPLE_EVERY_NS, tick);
  }

  private wire(g: Guest): void {
    g.onHandled = (e) => this.handled.push(e);
  }

  /** One bounded-clock read, checked against true time (I4). */
  observe(): BoundedNow {
    const r = this.current.guest.now();
    this.samples++;
    const trueRealtime = EPOCH_NS + this.clock.monotonicNs();
    if (r.status === "synchronized" && !(r.earliestNs <= trueRealtime && trueRealtime <= r.latestNs))
      this.violations.push({ trueNs: this.clock.monotonicNs(), reading: r });
    return r;
  }

  runUntil(tNs: bigint): void {
    this.sched.runUntil(tNs);
  }

  /** kvm-realtime / wallclock to the other host; `doorbell` rings at resume, before any guest read. */
  migrate(doorbell = false) {
    const to = this.current.host === this.a ? this.b : this.a;
    const m = migrateGuest(this.sched, this.current, to, {
      policy: "kvm-realtime",
      estimator: "wallclock",
      timeline: BLACKOUT,
      guestOptions: this.guestOptions,
      startGuest: true,
      migrationId: `m-${this.handled.length}-${this.clock.monotonicNs()}`,
    });
    this.current = m.to;
    this.wire(m.to.guest);
    if (doorbell) m.to.guest.doorbell();
    return m;
  }
}

/** Where a guest whose last NTP poll was at 16 s gets migrated (its maxerror is still ~100 µs). */
const MIGRATE_AT_NS = 16n * S + 500n * MS;

describe("the hazard (I4, docs/invariants.md): a synchronized guest migrated across a 5 ms realtime skew", () => {
  it("with migration handling off, reports synchronized with bounds that exclude true time", () => {
    const w = new World({ handling: false, clocksource: "kvm-clock", watchVmclock: true });
    w.runUntil(MIGRATE_AT_NS);
    expect(w.violations).toEqual([]);
    const m = w.migrate(true);
    expect(m.result.errorBoundNs).toBeLessThan(SKEW_NS); // both hosts claim 100 µs: a lie
    const first = w.observe();
    expect(first.status).toBe("synchronized");
    const trueRealtime = EPOCH_NS + w.clock.monotonicNs();
    expect(first.earliestNs).toBeGreaterThan(trueRealtime); // 5 ms ahead, bound ≈ 0.4 ms
    expect(first.realtimeNs - trueRealtime).toBeGreaterThan(SKEW_NS - 100n * US);
    w.runUntil(MIGRATE_AT_NS + 5n * S);
    expect(w.violations.length).toBeGreaterThan(50); // every sample until maxerror outgrows 5 ms or NTP polls
    expect(w.current.guest.handledCount).toBe(0n);
  });

  const configs: { name: string; clocksource: Clocksource; watchVmclock: boolean; doorbell: boolean }[] = [
    { name: "the pvclock flag (kvm-clock clocksource)", clocksource: "kvm-clock", watchVmclock: false, doorbell: false },
    { name: "the vmclock marker (TSC clocksource, ClockBound-style reader)", clocksource: "tsc", watchVmclock: true, doorbell: false },
    { name: "the doorbell (TSC clocksource)", clocksource: "tsc", watchVmclock: false, doorbell: true },
    { name: "flag, marker and doorbell together", clocksource: "kvm-clock", watchVmclock: true, doorbell: true },
  ];
  for (const c of configs)
    it(`with migration handling on, never reports bounds that exclude true time; it acts once, on ${c.name}`, () => {
      const w = new World({ handling: true, clocksource: c.clocksource, watchVmclock: c.watchVmclock });
      w.runUntil(MIGRATE_AT_NS);
      w.migrate(c.doorbell);
      const first = w.observe();
      expect(first.status).toBe("disrupted");
      w.runUntil(MIGRATE_AT_NS + 40n * S);
      expect(w.violations).toEqual([]);
      expect(w.handled).toHaveLength(1);
      expect(w.current.guest.handledCount).toBe(1n);
      const later = w.observe();
      expect(later.status).toBe("synchronized"); // resynchronised to the true server
    });

  it("widen mode keeps honest bounds when the hosts' claims cover their skew", () => {
    const w = new World({ handling: true, clocksource: "kvm-clock", watchVmclock: true, handlingMode: "widen", claimNs: SKEW_NS });
    w.runUntil(MIGRATE_AT_NS);
    const m = w.migrate();
    expect(m.result.errorBoundNs).toBeGreaterThanOrEqual(SKEW_NS);
    const r = w.observe();
    expect(r.status).toBe("synchronized");
    expect(w.handled.map((e) => e.mode)).toEqual(["widen"]);
    w.runUntil(MIGRATE_AT_NS + 40n * S);
    expect(w.violations).toEqual([]);
  });

  it("widen mode trusts the published bound, so hosts that under-claim their skew break it (a lying clock, not a guest bug)", () => {
    const w = new World({ handling: true, clocksource: "kvm-clock", watchVmclock: true, handlingMode: "widen", claimNs: 100n * US });
    w.runUntil(MIGRATE_AT_NS);
    w.migrate();
    w.observe();
    expect(w.violations.length).toBeGreaterThan(0);
  });

  it("a TSC-clocksource guest that learns only by doorbell is exposed until the doorbell is handled (why the flag and the marker exist)", () => {
    const w = new World({ handling: true, clocksource: "tsc", watchVmclock: false });
    w.runUntil(MIGRATE_AT_NS);
    w.migrate(false);
    w.observe(); // a read before the interrupt arrives
    expect(w.violations).toHaveLength(1);
    w.current.guest.doorbell();
    expect(w.observe().status).toBe("disrupted");
    expect(w.current.guest.handledCount).toBe(1n);
  });

  it("a rolled-back migration is none: the source's vCPUs show the stopped flag, the guest does not act, its clocks never jumped", () => {
    const w = new World({ handling: true, clocksource: "kvm-clock", watchVmclock: true });
    w.runUntil(MIGRATE_AT_NS);
    const { vm, guest } = w.current;
    const offsetBefore = vm.getTscOffset(0);
    const kvmBefore = guest.readKvmclock(0);
    vm.pause();
    guest.stop();
    for (let i = 0; i < vm.vcpuCount; i++) vm.kvmclockCtrl(i); // the capture's KVMCLOCK_CTRL
    w.runUntil(MIGRATE_AT_NS + 300n * MS);
    vm.resume(); // rollback: the destination provably never ran it
    guest.start(false);
    for (let i = 0; i < vm.vcpuCount; i++) expect(vm.pvclock.flags(i) & PVCLOCK_GUEST_STOPPED).toBe(PVCLOCK_GUEST_STOPPED);
    expect(w.observe().status).toBe("synchronized");
    expect(guest.handledCount).toBe(0n);
    for (let i = 0; i < vm.vcpuCount; i++) expect(vm.pvclock.flags(i) & PVCLOCK_GUEST_STOPPED).toBe(0);
    expect(vm.getTscOffset(0)).toBe(offsetBefore); // the TSC is the same function of the host's: as if never paused
    expect(guest.readKvmclock(0) - kvmBefore).toBeGreaterThanOrEqual(300n * MS - 1n * US);
    w.runUntil(MIGRATE_AT_NS + 20n * S);
    expect(w.violations).toEqual([]);
  });
});

describe("I5: exactly once per migration, whichever signal and vCPU", () => {
  type Action = { kind: "read"; cpu: number } | { kind: "now" } | { kind: "marker" } | { kind: "doorbell" } | { kind: "advance"; ns: bigint };
  const actionArb = (vcpus: number): fc.Arbitrary<Action> =>
    fc.oneof(
      fc.record({ kind: fc.constant("read" as const), cpu: fc.integer({ min: 0, max: vcpus - 1 }) }),
      fc.constant({ kind: "now" as const }),
      fc.constant({ kind: "marker" as const }),
      fc.constant({ kind: "doorbell" as const }),
      fc.record({ kind: fc.constant("advance" as const), ns: fc.bigInt({ min: 0n, max: 200n * MS }) }),
    );

  it("the guest acts once per migration and never reports a false synchronized bound, over 1–3 migrations, 1–64 vCPUs and any order of signals", () => {
    const caseArb = fc
      .record({
        vcpus: fc.oneof(fc.integer({ min: 1, max: 8 }), fc.constant(64)),
        clocksource: fc.constantFrom<Clocksource>("kvm-clock", "tsc"),
        watchVmclock: fc.boolean(),
        doorbell: fc.boolean(),
        gapsNs: fc.array(fc.bigInt({ min: 2n * S, max: 20n * S }), { minLength: 1, maxLength: 3 }),
      })
      // The guest must be able to see something: a kvm-clock read, the marker, or the doorbell.
      .filter((c) => c.clocksource === "kvm-clock" || c.watchVmclock || c.doorbell)
      .chain((c) => fc.record({ c: fc.constant(c), actions: fc.array(fc.array(actionArb(c.vcpus), { maxLength: 12 }), { minLength: c.gapsNs.length, maxLength: c.gapsNs.length }) }));
    fc.assert(
      fc.property(caseArb, ({ c, actions }) => {
        const w = new World({ handling: true, clocksource: c.clocksource, watchVmclock: c.watchVmclock, vcpus: c.vcpus });
        let t = 1n * S;
        c.gapsNs.forEach((gap, k) => {
          t += gap;
          w.runUntil(t);
          w.migrate(false);
          // A doorbell-only guest learns at the interrupt: deliver it before its first read.
          const onlyDoorbell = c.clocksource === "tsc" && !c.watchVmclock;
          if (onlyDoorbell) w.current.guest.doorbell();
          for (const a of actions[k] ?? []) {
            const g = w.current.guest;
            if (a.kind === "read") g.readKvmclock(a.cpu);
            else if (a.kind === "now") w.observe();
            else if (a.kind === "marker") g.checkMarker();
            else if (a.kind === "doorbell") {
              if (c.doorbell) g.doorbell();
            } else w.runUntil(w.clock.monotonicNs() + a.ns);
          }
          w.observe();
          t = w.clock.monotonicNs();
        });
        w.runUntil(t + 2n * S);
        expect(w.violations).toEqual([]);
        expect(w.handled).toHaveLength(c.gapsNs.length);
        expect(w.current.guest.handledCount).toBe(BigInt(c.gapsNs.length));
        const markers = w.handled.map((e) => e.marker);
        expect(markers).toEqual([...markers].sort((x, y) => (x < y ? -1 : 1)));
        expect(new Set(markers).size).toBe(markers.length);
      }),
      replayable(60),
    );
  });
});
