// Goal: the host TSC calibration of the kvm backend places a TSC value on CLOCK_MONOTONIC from
// KVM_GET_CLOCK's (realtime, TSC) pairs: exact on a clean host, not moved by a preemption inside the
// CLOCK_REALTIME − CLOCK_MONOTONIC bracket (which once made a live run's I8 see 261 ppm), and it
// follows a realtime step; the daemon's realtime frame (skew) maps both ways.
// Method: a scripted C library (clock reads from a list) and kernel pairs from a TSC line; no KVM.

import { describe, expect, it } from "vitest";
import { EmulatedHost } from "../../src/shared/hypervisor/host.js";
import { HostTscClock } from "../../src/shared/hypervisor/kvm/host-clock.js";
import type { Libc } from "../../src/shared/platform/libc.js";
import { SimClock } from "../../src/shared/time/sim.js";

const KHZ = 2_600_000n;
const REAL_MINUS_MONO = 1_700_000_000_000_000_000n;

/** Clock reads: MONOTONIC = now (+ a delay injected after the next MONOTONIC read), REALTIME = now + offset. */
function world(clock: SimClock) {
  let stallNs = 0n;
  let stalls = 0;
  let offset = REAL_MINUS_MONO;
  const libc = {
    clockNs(id: number): bigint {
      const t = clock.monotonicNs();
      if (id === 1 && stalls > 0) {
        clock.advanceTo(clock.monotonicNs() + stallNs); // preempted right after this read
        stalls--;
      }
      return id === 0 ? t + offset : t;
    },
  } as unknown as Libc;
  const pair = () => ({ realtimeNs: clock.monotonicNs() + offset, hostTsc: (clock.monotonicNs() * KHZ) / 1_000_000n });
  return { libc, pair, stall: (ns: bigint, times: number) => {
      stallNs = ns;
      stalls = times;
    }, step: (ns: bigint) => (offset += ns) };
}

describe("HostTscClock", () => {
  it("maps TSC and CLOCK_MONOTONIC both ways; a stalled bracket does not move it; a realtime step does", () => {
    const clock = new SimClock(5_000_000_000n);
    const w = world(clock);
    const host = new EmulatedHost({ name: "h", clock, epochNs: 0n });
    const c = new HostTscClock(w.libc, w.pair, host, KHZ, 0n /* refresh on every read */);
    const check = () => {
      const t = clock.monotonicNs();
      expect(c.tscAtMono(t)).toBe((t * KHZ) / 1_000_000n);
      expect(c.monoOfTsc((t * KHZ) / 1_000_000n)).toBe(t);
    };
    check();
    clock.advanceTo(clock.monotonicNs() + 2_000_000_000n);
    // Every bracket of this refresh preempted by 50 µs: the earlier, narrower reading stands.
    w.stall(50_000n, 20); // both refreshes of one check: every bracket of each
    check();
    clock.advanceTo(clock.monotonicNs() + 1_000_000n);
    w.step(5_000_000_000n); // settimeofday: the difference really moved
    check();
  });

  it("moves realtimes between the kernel's frame and the daemon's skewed one", () => {
    const clock = new SimClock(1_000_000_000n);
    const w = world(clock);
    const epoch = REAL_MINUS_MONO;
    const host = new EmulatedHost({ name: "h", clock, epochNs: epoch, skew: { kind: "constant", offsetNs: 3_000_000n } });
    const c = new HostTscClock(w.libc, w.pair, host, KHZ);
    const kernel = clock.monotonicNs() + REAL_MINUS_MONO;
    expect(c.toDaemonRealtime(kernel)).toBe(kernel + 3_000_000n);
    expect(c.toKernelRealtime(kernel + 3_000_000n)).toBe(kernel);
  });
});
