// The destination's TSC offsets by the documented migration algorithm
// (Documentation/virt/kvm/devices/vcpu.rst, KVM_VCPU_TSC_OFFSET; kvm-time.md §2.1), for hosts without
// TSC scaling (ratio 1, the only case the real backend meets: it never sets a TSC rate):
//
//   ofs_dst[i] = ofs_src[i] + (guest_dst − guest_src) · freq + (tsc_src − tsc_dst)
//
// with `freq` in kHz and the kvmclock difference in ns, so the cycle term is
// floor((guest_dst − guest_src) · khz / 10^6): rounded down, the guest TSC never runs ahead of where
// the source's would be. The invariant: `ofs + host_tsc − kvmclock · freq` is the same on both sides.
// On a host that accepts and ignores offsets (see info.ts) writing them is harmless and changes nothing.

import { invalid } from "../../errors.js";
import { U64_MAX } from "../../kvm/u64.js";

export interface TscOffsetInput {
  /** KVM_VCPU_TSC_OFFSET of every source vCPU. */
  ofsSrc: readonly bigint[];
  /** Source KVM_GET_CLOCK: kvmclock ns and host TSC of one instant. */
  guestSrcNs: bigint;
  hostTscSrc: bigint;
  /** Destination KVM_GET_CLOCK after KVM_SET_CLOCK: kvmclock ns and host TSC of one instant. */
  guestDstNs: bigint;
  hostTscDst: bigint;
  /** Guest TSC frequency (KVM_GET_TSC_KHZ). */
  tscKhz: bigint;
}

export function documentedTscOffsets(p: TscOffsetInput): bigint[] {
  if (p.guestDstNs < p.guestSrcNs) throw invalid("guestDstNs", "destination kvmclock is behind the source's: KVM_SET_CLOCK stepped it back");
  if (p.tscKhz <= 0n) throw invalid("tscKhz", "must be positive");
  const elapsedCycles = ((p.guestDstNs - p.guestSrcNs) * p.tscKhz) / 1_000_000n;
  return p.ofsSrc.map((o) => (o + elapsedCycles + p.hostTscSrc - p.hostTscDst) & U64_MAX);
}
