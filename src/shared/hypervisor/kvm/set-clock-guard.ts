// The checks made before every KVM_SET_CLOCK on a real VM. KVM itself accepts any u64: it steps
// kvmclock backwards when told to without KVM_CLOCK_REALTIME, lets the s64 kvmclock_offset wrap, and
// adds `now_real − realtime` with no upper bound. Each of those is a guest-visible time jump that no
// migration should ever cause, so the backend refuses them before the ioctl (and changes nothing).

import { invalid } from "../../errors.js";
import { KVM_CLOCK_REALTIME, KVM_CLOCK_VALID_FLAGS } from "../../kvm/set-clock.js";
import { U64_MAX } from "../../kvm/u64.js";

/** kvmclock values at or past 2^63 read as negative to the kernel's s64 arithmetic and to guests. */
export const KVMCLOCK_NS_MAX = (1n << 63n) - 1n;

export interface SetClockRequest {
  clock: bigint;
  flags: number;
  realtime: bigint;
}

export interface SetClockGuard {
  /** The kvmclock the guest has already seen: the request may not go below it. */
  floorNs: bigint;
  /** The most kvmclock may move forward past the floor, KVM's REALTIME advance included. */
  maxForwardNs: bigint;
  /** The host's CLOCK_REALTIME (as the VM's host reports it) when the check is made. */
  nowRealtimeNs: bigint;
}

/**
 * Throws `invalid` naming the field when the request would step kvmclock back, wrap it, or jump it
 * forward by more than allowed; returns the kvmclock KVM will produce at the check instant (the
 * kernel adds the microseconds between this check and the ioctl on top when REALTIME is set).
 */
export function checkSetClock(req: SetClockRequest, guard: SetClockGuard): bigint {
  if (!Number.isInteger(req.flags) || (req.flags & ~KVM_CLOCK_VALID_FLAGS) !== 0) throw invalid("setClock.flags", `unknown flags 0x${req.flags.toString(16)}`);
  if (req.clock < 0n || req.clock > U64_MAX) throw invalid("setClock.clock", "must be a u64");
  if (req.realtime < 0n || req.realtime > U64_MAX) throw invalid("setClock.realtime", "must be a u64");
  if (guard.maxForwardNs < 0n) throw invalid("setClock.maxForwardNs", "must be ≥ 0");
  if (req.clock > KVMCLOCK_NS_MAX) throw invalid("setClock.clock", `${req.clock} ns is past 2^63 − 1: kvmclock would wrap`);
  let advanceNs = 0n;
  if ((req.flags & KVM_CLOCK_REALTIME) !== 0) {
    // KVM adds now_real − realtime when positive (kvm_vm_ioctl_set_clock). A realtime far in the
    // future is not a jump but a sign of a garbage input: bounded the same way.
    const ahead = req.realtime - guard.nowRealtimeNs;
    if (ahead > guard.maxForwardNs) throw invalid("setClock.realtime", `${ahead} ns ahead of this host's realtime: not a realtime this migration could have read`);
    if (ahead < 0n) advanceNs = -ahead;
  }
  // The floor is checked on what KVM will produce: a clock read earlier and handed back with its
  // realtime (KVM_GET_CLOCK's output, as QEMU does) lands at or above the floor once KVM adds the
  // elapsed real time.
  const result = req.clock + advanceNs;
  if (result < guard.floorNs)
    throw invalid("setClock.clock", `${result} ns is below the ${guard.floorNs} ns the guest has already seen: kvmclock would step back by ${guard.floorNs - result} ns`);
  if (result > KVMCLOCK_NS_MAX) throw invalid("setClock.realtime", `the realtime advance takes kvmclock past 2^63 − 1`);
  const forward = result - guard.floorNs;
  if (forward > guard.maxForwardNs)
    throw invalid(
      (req.flags & KVM_CLOCK_REALTIME) !== 0 && advanceNs > 0n ? "setClock.realtime" : "setClock.clock",
      `kvmclock would jump ${forward} ns forward of what the guest saw, more than the ${guard.maxForwardNs} ns allowed`,
    );
  return result;
}
