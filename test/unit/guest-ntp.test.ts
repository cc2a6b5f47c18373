// Goal: the guest's NTP error state follows Linux (kvm-time.md §6) and its bounded clock is honest
// (I4) while no migration happens: maxerror grows 500 µs per second and saturates at 16 s with
// STA_UNSYNC, statuses move unknown → synchronized → freeRunning / disrupted → synchronized, and
// the bounds always contain true time. Method: pure ntp.ts functions, then a Guest on a simulated
// host whose crystal drifts up to ±500 ppm, synced to a server whose error is within its claim.

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Guest } from "../../src/shared/guest/guest.js";
import {
  adjtimexState,
  adjtimexSync,
  bootNtpState,
  ditchSync,
  NTP_PHASE_LIMIT_US,
  secondOverflow,
  STA_PLL,
  STA_UNSYNC,
  TIME_ERROR,
  TIME_OK,
} from "../../src/shared/guest/ntp.js";
import { EmulatedHost } from "../../src/shared/hypervisor/host.js";
import { EmulatedVm } from "../../src/shared/hypervisor/vm.js";
import { SimClock, SimScheduler } from "../../src/shared/time/sim.js";
import { replayable } from "../helpers/sim-arbitraries.js";
import { EPOCH_NS, quietGuestOptions } from "../helpers/sim-migration.js";

const US = 1_000n;
const MS = 1_000_000n;
const S = 1_000_000_000n;

describe("NTP error state (kernel/time/ntp.c)", () => {
  it("boots unsynchronised at the phase limit", () => {
    const s = bootNtpState(5n);
    expect(s.status & STA_UNSYNC).toBe(STA_UNSYNC);
    expect(s.maxerrorUs).toBe(NTP_PHASE_LIMIT_US);
    expect(adjtimexState(s)).toBe(TIME_ERROR);
  });

  it("adjtimex sets the error fields (clamped to 0..16 s), PLL, clears UNSYNC, and restarts the tick", () => {
    const s = bootNtpState(0n);
    adjtimexSync(s, 100n, 50n, 7n * S);
    expect([s.maxerrorUs, s.esterrorUs, s.status & (STA_PLL | STA_UNSYNC), s.tickClocksourceNs]).toEqual([100n, 50n, STA_PLL, 7n * S]);
    expect(adjtimexState(s)).toBe(TIME_OK);
    adjtimexSync(s, -5n, 99_000_000n, 8n * S);
    expect([s.maxerrorUs, s.esterrorUs]).toEqual([0n, NTP_PHASE_LIMIT_US]);
  });

  it("second_overflow adds 500 µs per whole clocksource second and never counts one twice", () => {
    const s = bootNtpState(0n);
    adjtimexSync(s, 100n, 50n, 0n);
    secondOverflow(s, 999_999_999n);
    expect(s.maxerrorUs).toBe(100n);
    secondOverflow(s, 2_500_000_000n);
    expect(s.maxerrorUs).toBe(1_100n);
    expect(s.tickClocksourceNs).toBe(2n * S);
    secondOverflow(s, 1n * S); // a clocksource read from the past changes nothing
    secondOverflow(s, 2_999_999_999n);
    expect(s.maxerrorUs).toBe(1_100n);
  });

  it("maxerror saturates at 16 s and sets STA_UNSYNC after ⌈(16 s − m)/500 µs⌉ seconds", () => {
    const s = bootNtpState(0n);
    adjtimexSync(s, 100n, 50n, 0n);
    const seconds = (NTP_PHASE_LIMIT_US - 100n + 499n) / 500n; // 32 000 s (≈ 8.9 h)
    secondOverflow(s, (seconds - 1n) * S);
    expect(s.status & STA_UNSYNC).toBe(0);
    secondOverflow(s, seconds * S);
    expect(s.maxerrorUs).toBe(NTP_PHASE_LIMIT_US);
    expect(s.status & STA_UNSYNC).toBe(STA_UNSYNC);
  });

  it("ditching the sync is __ntp_clear for the error fields", () => {
    const s = bootNtpState(0n);
    adjtimexSync(s, 100n, 50n, 0n);
    ditchSync(s);
    expect([s.status & STA_UNSYNC, s.maxerrorUs, s.esterrorUs]).toEqual([STA_UNSYNC, NTP_PHASE_LIMIT_US, NTP_PHASE_LIMIT_US]);
  });
});

describe("Guest bounded clock", () => {
  function guestOn(o: { crystalPpm: number; serverErrorNs: bigint; serverMaxerrorNs: bigint; clocksource: "tsc" | "kvm-clock" }) {
    const clock = new SimClock(0n, EPOCH_NS);
    const sched = new SimScheduler(clock);
    const host = new EmulatedHost({ name: "h", clock, epochNs: EPOCH_NS, tscKhz: 2_700_000n, crystal: { kind: "drift", ppm: o.crystalPpm, fromNs: 0n } });
    const vm = new EmulatedVm(host, { vcpus: 2 });
    const guest = new Guest(
      vm,
      sched,
      quietGuestOptions({
        clocksource: o.clocksource,
        ntpSource: () => ({ realtimeNs: EPOCH_NS + clock.monotonicNs() + o.serverErrorNs, maxerrorNs: o.serverMaxerrorNs }),
      }),
    );
    return { clock, sched, guest };
  }

  it("is unknown before the first sync, then synchronized with bounds 2 × (maxerror + drift allowance) wide", () => {
    const { clock, guest } = guestOn({ crystalPpm: 0, serverErrorNs: 0n, serverMaxerrorNs: 100n * US, clocksource: "kvm-clock" });
    expect(guest.now().status).toBe("unknown");
    clock.advanceTo(1n * S);
    guest.sync();
    clock.advanceTo(1n * S + 400n * MS);
    const r = guest.now();
    expect(r.status).toBe("synchronized");
    // 400 ms since the tick at 500 ppm: 200 µs of drift allowance on top of the 100 µs maxerror,
    // plus the slow-clock terms over the 400 ms since the sync: 500/(10^6 − 500) ppm (101 ns) and
    // 1 ns per started second for the clocksource's mul.
    expect(r.latestNs - r.earliestNs).toBe(2n * (100n * US + 200n * US + 101n + 1n));
    expect(r.realtimeNs).toBe(EPOCH_NS + clock.monotonicNs());
  });

  it("goes freeRunning once maxerror saturates without polls, and disrupted → synchronized around a ditch", () => {
    const { clock, sched, guest } = guestOn({ crystalPpm: 0, serverErrorNs: 0n, serverMaxerrorNs: 100n * US, clocksource: "tsc" });
    guest.sync();
    clock.advanceTo(31_990n * S);
    expect(guest.now().status).toBe("synchronized");
    clock.advanceTo(32_010n * S); // 32 000 guest seconds after the sync
    expect(guest.now().status).toBe("freeRunning");
    guest.sync();
    expect(guest.now().status).toBe("synchronized");
    guest.vm.updateVmclock((p) => (p.disruptionMarker += 1n)); // a migration the guest notices
    expect(guest.now().status).toBe("disrupted");
    expect(guest.ntp().maxerrorUs).toBe(NTP_PHASE_LIMIT_US);
    sched.runUntil(clock.monotonicNs() + 1n * S); // resyncDelayNs
    expect(guest.now().status).toBe("synchronized");
    expect(guest.handledCount).toBe(1n);
  });

  it("I4 without migrations: when synchronized, true time lies within the bounds, whatever the crystal's drift (±500 ppm) and the server's honest error", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: -500, max: 500 }),
        fc.bigInt({ min: 1n * US, max: 10n * MS }),
        fc.double({ min: -1, max: 1, noNaN: true }),
        fc.constantFrom<"tsc" | "kvm-clock">("tsc", "kvm-clock"),
        fc.array(fc.bigInt({ min: 0n, max: 40_000n * S }), { minLength: 1, maxLength: 30 }),
        (ppm, claimNs, errFraction, clocksource, times) => {
          const serverErrorNs = BigInt(Math.trunc(Number(claimNs) * errFraction));
          const { clock, guest } = guestOn({ crystalPpm: ppm, serverErrorNs, serverMaxerrorNs: claimNs, clocksource });
          clock.advanceTo(5n * S);
          guest.sync();
          for (const t of [...times].sort((a, b) => (a < b ? -1 : 1))) {
            clock.advanceTo(5n * S + t);
            const r = guest.now();
            const truth = EPOCH_NS + clock.monotonicNs();
            if (r.status === "synchronized") {
              expect(r.earliestNs).toBeLessThanOrEqual(truth);
              expect(r.latestNs).toBeGreaterThanOrEqual(truth);
            }
          }
        },
      ),
      replayable(200),
    );
  });
});
