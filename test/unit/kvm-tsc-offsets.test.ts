// Goal: the destination offsets follow the documented algorithm, with its units made right (kHz × ns),
// and keep `ofs + host_tsc − kvmclock · freq` across the migration.
// Method: worked numbers at 2.6 GHz, and the invariant checked on them; no /dev/kvm.

import { describe, expect, it } from "vitest";
import { documentedTscOffsets } from "../../src/shared/hypervisor/kvm/tsc-offsets.js";

describe("documentedTscOffsets", () => {
  const base = { guestSrcNs: 1_000_000_000n, hostTscSrc: 5_000_000_000n, tscKhz: 2_600_000n };

  it("adds the cycles of the kvmclock advance and moves the offset by the host TSC difference", () => {
    // 10 ms of kvmclock later, on a host whose TSC reads 1e12 further on.
    const o = documentedTscOffsets({ ...base, ofsSrc: [0n, 7n], guestDstNs: 1_010_000_000n, hostTscDst: 1_005_000_000_000n });
    expect(o).toEqual([(26_000_000n + 5_000_000_000n - 1_005_000_000_000n) & ((1n << 64n) - 1n), (7n + 26_000_000n + 5_000_000_000n - 1_005_000_000_000n) & ((1n << 64n) - 1n)]);
    // Guest TSC on the destination: host_tsc_dst + ofs = source guest TSC + elapsed cycles.
    expect(((1_005_000_000_000n + (o[0] as bigint)) & ((1n << 64n) - 1n)) - 5_000_000_000n).toBe(26_000_000n);
  });

  it("rounds the elapsed cycles down", () => {
    const o = documentedTscOffsets({ ...base, ofsSrc: [0n], guestDstNs: 1_000_000_001n, hostTscDst: 5_000_000_000n });
    expect(o).toEqual([2n]); // 1 ns × 2.6 cycles/ns
  });

  it("refuses a destination kvmclock behind the source's", () => {
    expect(() => documentedTscOffsets({ ...base, ofsSrc: [0n], guestDstNs: 999_999_999n, hostTscDst: 0n })).toThrow(/behind/);
  });
});
