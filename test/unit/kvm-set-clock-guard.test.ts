// Goal: no KVM_SET_CLOCK that would step kvmclock back, wrap it, or jump it further than allowed
// ever reaches the kernel, and every legitimate restore passes.
// Method: table of requests against a fixed guard (floor, bound, host realtime), each refusal
// checked for the field it names; accepted requests checked for the kvmclock KVM would produce.

import { describe, expect, it } from "vitest";
import { checkSetClock, KVMCLOCK_NS_MAX } from "../../src/shared/hypervisor/kvm/set-clock-guard.js";
import { KVM_CLOCK_REALTIME, KVM_CLOCK_TSC_STABLE, KVM_CLOCK_HOST_TSC } from "../../src/shared/kvm/set-clock.js";

const guard = { floorNs: 10_000_000_000n, maxForwardNs: 1_000_000_000n, nowRealtimeNs: 1_700_000_000_000_000_000n };
const S = 1_000_000_000n;

describe("checkSetClock", () => {
  it("accepts a computed clock at or above the floor within the bound", () => {
    expect(checkSetClock({ clock: guard.floorNs, flags: 0, realtime: 0n }, guard)).toBe(guard.floorNs);
    expect(checkSetClock({ clock: guard.floorNs + S, flags: 0, realtime: 0n }, guard)).toBe(guard.floorNs + S);
  });

  it("accepts REALTIME and returns the clock plus the advance KVM will add", () => {
    const r = checkSetClock({ clock: guard.floorNs, flags: KVM_CLOCK_REALTIME, realtime: guard.nowRealtimeNs - 300_000_000n }, guard);
    expect(r).toBe(guard.floorNs + 300_000_000n);
    // A source realtime ahead of ours (negative skew): KVM adds nothing.
    expect(checkSetClock({ clock: guard.floorNs, flags: KVM_CLOCK_REALTIME, realtime: guard.nowRealtimeNs + S / 2n }, guard)).toBe(guard.floorNs);
  });

  it("judges the floor on the clock KVM will produce: an older clock handed back with its realtime passes", () => {
    const older = { clock: guard.floorNs - 5_000n, flags: KVM_CLOCK_REALTIME, realtime: guard.nowRealtimeNs - 5_000n };
    expect(checkSetClock(older, guard)).toBe(guard.floorNs);
    expect(() => checkSetClock({ ...older, realtime: guard.nowRealtimeNs - 4_999n }, guard)).toThrow(/step back by 1 ns/);
  });

  it("accepts the flags KVM_GET_CLOCK returns (so its output can be passed back)", () => {
    expect(() => checkSetClock({ clock: guard.floorNs, flags: KVM_CLOCK_TSC_STABLE | KVM_CLOCK_REALTIME | KVM_CLOCK_HOST_TSC, realtime: guard.nowRealtimeNs }, guard)).not.toThrow();
  });

  const refusals: [string, { clock: bigint; flags: number; realtime: bigint }, RegExp][] = [
    ["a backward step", { clock: guard.floorNs - 1n, flags: 0, realtime: 0n }, /setClock\.clock: .*step back by 1 ns/],
    ["a jump past the bound", { clock: guard.floorNs + S + 1n, flags: 0, realtime: 0n }, /setClock\.clock: .*jump/],
    ["a realtime advance past the bound", { clock: guard.floorNs, flags: KVM_CLOCK_REALTIME, realtime: guard.nowRealtimeNs - 2n * S }, /setClock\.realtime: .*jump/],
    ["a realtime far in the future", { clock: guard.floorNs, flags: KVM_CLOCK_REALTIME, realtime: guard.nowRealtimeNs + 2n * S }, /setClock\.realtime: .*ahead/],
    ["a clock past 2^63", { clock: KVMCLOCK_NS_MAX + 1n, flags: 0, realtime: 0n }, /wrap/],
    ["a negative clock", { clock: -1n, flags: 0, realtime: 0n }, /u64/],
    ["an unknown flag", { clock: guard.floorNs, flags: 1, realtime: 0n }, /setClock\.flags/],
  ];
  for (const [what, req, re] of refusals) it(`refuses ${what}`, () => expect(() => checkSetClock(req, guard)).toThrow(re));

  it("refuses a realtime advance that wraps past 2^63 even with no bound", () => {
    const g = { ...guard, floorNs: KVMCLOCK_NS_MAX - 10n, maxForwardNs: 1n << 64n };
    expect(() => checkSetClock({ clock: KVMCLOCK_NS_MAX - 10n, flags: KVM_CLOCK_REALTIME, realtime: guard.nowRealtimeNs - 100n }, g)).toThrow(/2\^63/);
  });
});
