// The KVM_SET_CLOCK advance rule, restating kvm_vm_ioctl_set_clock() (arch/x86/kvm/x86.c) with the
// flag values of include/uapi/linux/kvm.h (struct kvm_clock_data). Semantics:
// shared/reference/kvm-time.md §1.3, test/data/vectors/README.md §set_clock.json.

import { kvmError } from "../errors.js";
import { checkInt, checkU64, s64 } from "./u64.js";

/** GET: the clock is the exact kvmclock every vCPU sees (master-clock mode). Ignored on SET. */
export const KVM_CLOCK_TSC_STABLE = 2;
/** `realtime` holds the host CLOCK_REALTIME ns; on SET, elapsed real time is added to the clock. */
export const KVM_CLOCK_REALTIME = 1 << 2;
/** `host_tsc` holds the host TSC. Ignored on SET. */
export const KVM_CLOCK_HOST_TSC = 1 << 3;
export const KVM_CLOCK_VALID_FLAGS = KVM_CLOCK_TSC_STABLE | KVM_CLOCK_REALTIME | KVM_CLOCK_HOST_TSC;

export interface SetClockInput {
  /** kvmclock ns from the source (kvm_clock_data.clock, u64). */
  clock: bigint;
  /** kvm_clock_data.flags (u32). */
  flags: number;
  /** Source host CLOCK_REALTIME ns at KVM_GET_CLOCK (u64; used only with KVM_CLOCK_REALTIME). */
  realtime: bigint;
  /** Destination host CLOCK_REALTIME ns at the ioctl (u64). */
  nowRealNs: bigint;
  /** Destination raw reference at the ioctl: master_kernel_ns, boot-based CLOCK_MONOTONIC_RAW (u64). */
  nowRawNs: bigint;
}

export interface SetClockResult {
  /** The kvmclock value at `nowRawNs` after the ioctl (u64). */
  advancedClock: bigint;
  /** kvmclock_offset as the kernel's s64: kvmclock = raw reference + offset (mod 2^64). */
  kvmclockOffset: bigint;
  /** How much the clock was advanced (u64; 0 when not advanced). */
  advanceNs: bigint;
}

/**
 * KVM_SET_CLOCK: EINVAL on any flag outside KVM_CLOCK_VALID_FLAGS. With KVM_CLOCK_REALTIME and
 * `nowRealNs > realtime` (strictly) the clock advances by `nowRealNs - realtime`; otherwise it is kept
 * as given, so it never steps backwards, and no upper bound applies (bounding the blackout is the
 * caller's policy). Then `kvmclockOffset = (clock - nowRawNs) mod 2^64` read as s64. All sums wrap
 * mod 2^64 as in the kernel. The real-time difference spans two hosts: it is blackout *plus* the
 * realtime skew between them.
 */
export function setClockAdvance(input: SetClockInput): SetClockResult {
  const flags = checkInt(input.flags, 0, 0xffff_ffff, "flags");
  let clock = checkU64(input.clock, "clock");
  const realtime = checkU64(input.realtime, "realtime");
  const nowRealNs = checkU64(input.nowRealNs, "nowRealNs");
  const nowRawNs = checkU64(input.nowRawNs, "nowRawNs");
  if ((flags & ~KVM_CLOCK_VALID_FLAGS) !== 0) {
    throw kvmError("EINVAL", "KVM_SET_CLOCK", `flags 0x${flags.toString(16)} outside KVM_CLOCK_VALID_FLAGS 0x${KVM_CLOCK_VALID_FLAGS.toString(16)}`, "flags");
  }
  let advanceNs = 0n;
  if ((flags & KVM_CLOCK_REALTIME) !== 0 && nowRealNs > realtime) {
    advanceNs = nowRealNs - realtime;
    clock = BigInt.asUintN(64, clock + advanceNs);
  }
  return { advancedClock: clock, kvmclockOffset: s64(clock - nowRawNs), advanceNs };
}
