// The emulated model's prediction of what a real guest reads after a restore, from exactly the
// inputs the real VM got: the pvclock records in the captured memory, the clock step handed to
// KVM_SET_CLOCK, KVM_KVMCLOCK_CTRL on every vCPU, and the real host's TSC and CLOCK_REALTIME.
//
// Mirroring the host: one KVM_GET_CLOCK pair (realtime R_ref, host TSC H_ref) read just before the
// real ioctl fixes the emulated host: its true time 0 is H_ref, its TSC runs at the real kHz from
// there, its CLOCK_REALTIME is R_ref + t. The real ioctl happened at some instant inside
// [H_ref, H_after] that userspace cannot see; the model is evaluated at `ioctlHostTsc` (the caller
// picks the window's middle). With KVM_CLOCK_REALTIME and a positive advance the instant cancels
// out (the advance grows exactly as the TSC does), so the prediction is sharp; without it
// (computed clocks, or an advance clamped at zero) the prediction is uncertain by ± half the window.

import type { Clock } from "../shared/time/clock.js";
import { EmulatedHost } from "../shared/hypervisor/host.js";
import { EmulatedVm } from "../shared/hypervisor/vm.js";
import { PVCLOCK_GUEST_STOPPED, pvclockReadCycles, type PvclockRecord } from "../shared/kvm/pvclock.js";

export interface PredictInput {
  vcpus: number;
  tscKhz: bigint;
  /** The captured pvclock records, vcpus × 32 bytes (from guest memory). */
  pvclock: Uint8Array;
  /** The real host's (CLOCK_REALTIME, TSC) pair from KVM_GET_CLOCK just before the ioctl. */
  refRealtimeNs: bigint;
  refHostTsc: bigint;
  /** The host TSC at which the model performs KVM_SET_CLOCK. */
  ioctlHostTsc: bigint;
  setClock: { clock: bigint; flags: number; realtime: bigint };
}

export interface Prediction {
  /** Each vCPU's record as the model writes it at the vCPU's first entry. */
  records: PvclockRecord[];
  /** kvmclock the model's guest reads on vCPU i at guest TSC `tsc`. */
  kvmclockAt(i: number, tsc: bigint): bigint;
  /** Whether vCPU i's first read after resume sees PVCLOCK_GUEST_STOPPED. */
  stopped(i: number): boolean;
}

class SettableClock implements Clock {
  t = 0n;
  monotonicNs(): bigint {
    return this.t;
  }
  realtimeNs(): bigint {
    return 0n;
  }
}

export function predictRestore(p: PredictInput): Prediction {
  const clock = new SettableClock();
  const hz = p.tscKhz * 1000n;
  const host = new EmulatedHost({ name: "mirror", clock, epochNs: p.refRealtimeNs, tscKhz: p.tscKhz, tsc0: p.refHostTsc, rawBaseNs: 0n });
  const vm = new EmulatedVm(host, { vcpus: p.vcpus });
  vm.pvclock.bytes().set(p.pvclock);
  vm.guestEnableKvmclock();
  // True time of the ioctl: the TSC distance from the reference, converted at the nominal rate.
  clock.t = ((p.ioctlHostTsc - p.refHostTsc) * 1_000_000_000n) / hz;
  vm.setClock(p.setClock);
  for (let i = 0; i < p.vcpus; i++) vm.kvmclockCtrl(i);
  vm.resume();
  const records = Array.from({ length: p.vcpus }, (_, i) => vm.pvclock.guestRead(i));
  return {
    records,
    kvmclockAt: (i, tsc) => pvclockReadCycles(records[i] as PvclockRecord, tsc),
    stopped: (i) => ((records[i] as PvclockRecord).flags & PVCLOCK_GUEST_STOPPED) !== 0,
  };
}
