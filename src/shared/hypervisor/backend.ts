// The hypervisor seam (SPEC §7): every KVM-like operation the daemons use sits behind these
// interfaces. The emulated backend (emulated.ts) is the default; a native backend driving /dev/kvm
// ioctls can implement the same surface later, so the emulator's predictions can be checked against
// the kernel itself. Operations fail the way the ioctls do (TscmigError with an errno).

import type { TscVendor } from "../kvm/tsc.js";
import type { PvclockRecord } from "../kvm/pvclock.js";
import type { VmclockPage } from "../kvm/vmclock.js";

/** struct kvm_clock_data, as KVM_GET_CLOCK fills it. */
export interface KvmClockData {
  clock: bigint;
  flags: number;
  realtime: bigint;
  hostTsc: bigint;
}

export interface HostInfo {
  name: string;
  tscKhz: bigint;
  vendor: TscVendor;
  /** Hardware TSC scaling (VMX TSC multiplier / SVM TSC ratio MSR). */
  tscScaling: boolean;
}

/** A VM's hypervisor-side operations (VM and vCPU ioctls). */
export interface VmBackend {
  readonly vcpuCount: number;
  /** KVM_GET_CLOCK. */
  getClock(): KvmClockData;
  /** KVM_SET_CLOCK (REALTIME flag honoured, never steps backward). */
  setClock(data: { clock: bigint; flags: number; realtime: bigint }): { advancedClock: bigint; kvmclockOffset: bigint };
  /** KVM_SET_CLOCK_GUEST: keep kvmclock the same function of the guest TSC. */
  setClockGuest(record: PvclockRecord): void;
  /** KVM_GET_CLOCK_GUEST: the boot vCPU's pvclock as the guest sees it (master clock only). */
  getClockGuest(): PvclockRecord;
  getTscOffset(vcpu: number): bigint;
  setTscOffset(vcpu: number, offset: bigint): void;
  /** KVM_VCPU_TSC_SCALE (read-only). */
  getTscScale(vcpu: number): { ratio: bigint; fracBits: number };
  getTscKhz(vcpu: number): bigint;
  setTscKhz(vcpu: number, khz: bigint): void;
  /** KVM_KVMCLOCK_CTRL: request PVCLOCK_GUEST_STOPPED at the vCPU's next clock update. */
  kvmclockCtrl(vcpu: number): void;
  /** Guest TSC of a vCPU now (what RDTSC returns in the guest). */
  readGuestTsc(vcpu: number): bigint;
  pause(): void;
  resume(): void;
  readonly running: boolean;
  vmclock(): VmclockPage;
  updateVmclock(mutate: (page: VmclockPage) => void): void;
}
