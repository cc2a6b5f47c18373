// Goal: the model's prediction of a real restore follows KVM_SET_CLOCK's arithmetic, including the
// property `tscmig kvm check` relies on: with KVM_CLOCK_REALTIME and a positive advance, the
// predicted kvmclock does not depend on the (unobservable) instant of the ioctl; without it, it
// moves one for one with that instant.
// Method: pure computation on a mirrored host (2.6 GHz), no /dev/kvm.

import { describe, expect, it } from "vitest";
import { predictRestore } from "../../src/kvm/predict.js";
import { encodePvclock, PVCLOCK_RECORD_BYTES } from "../../src/shared/kvm/pvclock.js";
import { KVM_CLOCK_REALTIME } from "../../src/shared/kvm/set-clock.js";

const KHZ = 2_600_000n;
const H0 = 95_000_000_000_000n; // host TSC at the reference pair
const R0 = 1_796_000_000_000_000_000n; // host realtime at the reference pair
const cycles = (ns: bigint) => (ns * KHZ) / 1_000_000n;

function records(n: number): Uint8Array {
  const b = new Uint8Array(n * PVCLOCK_RECORD_BYTES);
  for (let i = 0; i < n; i++) encodePvclock({ version: 6, tscTimestamp: H0 - 1000n, systemTime: 5_000_000n, tscToSystemMul: 3303820996n, tscShift: -1, flags: 1 }, b, i * PVCLOCK_RECORD_BYTES);
  return b;
}

describe("predictRestore", () => {
  const base = { vcpus: 2, tscKhz: KHZ, pvclock: records(2), refRealtimeNs: R0, refHostTsc: H0 };

  it("REALTIME with a positive advance: kvmclock at a TSC is clock − realtime + the host realtime there, whatever the ioctl instant", () => {
    const step = { clock: 50_000_000n, flags: KVM_CLOCK_REALTIME, realtime: R0 - 10_000_000n };
    const t = H0 + cycles(2_000_000n); // 2 ms after the reference
    const at = (ioctlNs: bigint) => predictRestore({ ...base, ioctlHostTsc: H0 + cycles(ioctlNs), setClock: step }).kvmclockAt(1, t);
    const expected = step.clock + 10_000_000n + 2_000_000n;
    for (const ioctlNs of [0n, 30_000n, 700_000n]) expect(Number(at(ioctlNs) - expected)).toBeLessThanOrEqual(2);
    for (const ioctlNs of [0n, 30_000n, 700_000n]) expect(Number(at(ioctlNs) - expected)).toBeGreaterThanOrEqual(-2);
  });

  it("a computed clock without REALTIME starts at the ioctl instant: a later ioctl reads lower", () => {
    const step = { clock: 50_000_000n, flags: 0, realtime: 0n };
    const t = H0 + cycles(2_000_000n);
    const early = predictRestore({ ...base, ioctlHostTsc: H0, setClock: step }).kvmclockAt(0, t);
    const late = predictRestore({ ...base, ioctlHostTsc: H0 + cycles(40_000n), setClock: step }).kvmclockAt(0, t);
    expect(Number(early - late)).toBeGreaterThanOrEqual(39_998);
    expect(Number(early - late)).toBeLessThanOrEqual(40_002);
  });

  it("a source realtime ahead of the host's (negative skew) advances nothing", () => {
    const step = { clock: 50_000_000n, flags: KVM_CLOCK_REALTIME, realtime: R0 + 1_000_000_000n };
    const p = predictRestore({ ...base, ioctlHostTsc: H0, setClock: step });
    expect(p.kvmclockAt(0, H0)).toBe(step.clock);
  });

  it("every vCPU's first read sees PVCLOCK_GUEST_STOPPED, records continue the captured versions", () => {
    const p = predictRestore({ ...base, ioctlHostTsc: H0, setClock: { clock: 1n, flags: 0, realtime: 0n } });
    expect([p.stopped(0), p.stopped(1)]).toEqual([true, true]);
    expect(p.records.every((r) => r.version > 6 && r.version % 2 === 0)).toBe(true);
  });
});
