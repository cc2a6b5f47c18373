// The hypervisor seam (docs/architecture.md#seams): every KVM-like operation the daemons use sits
// behind these interfaces, and capture, restore, the guest, the roles and the VM registry are written
// against them alone. The emulated backend (emulated-backend.ts) is the default; another one (real
// KVM, a test double) implements `HypervisorBackend` and is handed to the node through its
// dependencies (`NodeDeps.backend`). Operations fail the way the ioctls do (TscmigError with an errno).
//
// What is not here on purpose: true time. A backend reports what a hypervisor can know (its host's
// clocks, its VMs' state); what the deployment's reference clock says is the truth probe's
// (truth.ts), which only the sampler, the chaos harness and reports read.

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

/** The host's TSC and CLOCK_REALTIME read at one instant (what a VMM reads outside master-clock mode). */
export interface HostClockPair {
  hostTsc: bigint;
  realtimeNs: bigint;
}

/**
 * The pvclock records of a VM's vCPUs: guest memory the hypervisor writes and the guest reads. A
 * narrow view: the guest's reads (under the version seqlock), the guest clearing its stopped flag,
 * and whole-area copies for snapshots and restores.
 */
export interface PvclockPages {
  /** vCPU i's record as the guest reads it (version seqlock). */
  guestRead(i: number): PvclockRecord;
  /** vCPU i's flags byte (one byte: no seqlock needed). */
  flags(i: number): number;
  /** The guest clears PVCLOCK_GUEST_STOPPED in its record (kvm_check_and_clear_guest_paused); returns whether it was set. */
  guestClearStopped(i: number): boolean;
  /** Every vCPU's record, vcpus × 32 bytes, copied. */
  copyBytes(): Uint8Array;
  /** Overwrites every record (a restore, before any vCPU runs: the records are guest memory). */
  loadBytes(bytes: Uint8Array): void;
}

/** A VM's journal form: everything a restarted daemon needs to continue it exactly where it was. */
export interface VmState {
  vcpus: number;
  tscOffset: BigUint64Array;
  ratio: BigUint64Array;
  virtualKhz: BigUint64Array;
  flags: Uint8Array;
  kvmclockOffset: bigint;
  pvclock: Uint8Array;
  vmclock: VmclockPage;
  running: boolean;
}

/** A VM's hypervisor-side operations (VM and vCPU ioctls), its host's clocks, its clock pages. */
export interface HypervisorVm {
  readonly vcpuCount: number;
  /** The host this VM runs on (rate, vendor, scaling). */
  readonly hostInfo: HostInfo;
  /** Guest TSC rate (KVM_GET_TSC_KHZ; every vCPU of a VM runs at it). */
  readonly guestTscKhz: bigint;
  readonly running: boolean;
  /** The pvclock records (guest memory). */
  readonly pvclock: PvclockPages;
  /** KVM_GET_CLOCK. */
  getClock(): KvmClockData;
  /**
   * KVM_SET_CLOCK (REALTIME flag honoured, never steps backward). Returns the kvmclock it set: the
   * argument, advanced with KVM_CLOCK_REALTIME by the realtime elapsed since `realtime`.
   */
  setClock(data: { clock: bigint; flags: number; realtime: bigint }): { advancedClock: bigint };
  /** KVM_SET_CLOCK_GUEST: keep kvmclock the same function of the guest TSC. */
  setClockGuest(record: PvclockRecord): void;
  /** KVM_GET_CLOCK_GUEST: the boot vCPU's pvclock as the guest sees it (master clock only). */
  getClockGuest(): PvclockRecord;
  /** The host's TSC and realtime now, read together (clock_gettime and RDTSC on the VMM's side). */
  hostClocks(): HostClockPair;
  /** The host's raw monotonic clock at the instant its TSC read `hostTsc` (the clocksource conversion). */
  hostRawNsOfTsc(hostTsc: bigint): bigint;
  getTscOffset(vcpu: number): bigint;
  setTscOffset(vcpu: number, offset: bigint): void;
  /** Every vCPU's offset to one value, in one step (what a VMM's loop over the vCPUs achieves). */
  setTscOffsetAll(offset: bigint): void;
  /** The vCPU's TSC multiplier as programmed (the default ratio on a host without scaling). */
  getTscRatio(vcpu: number): bigint;
  /** KVM_VCPU_TSC_SCALE (read-only; ENXIO without hardware scaling). */
  getTscScale(vcpu: number): { ratio: bigint; fracBits: number };
  getTscKhz(vcpu: number): bigint;
  setTscKhz(vcpu: number, khz: bigint): void;
  /** Whether the guest enabled kvmclock on the vCPU (MSR_KVM_SYSTEM_TIME_NEW written). */
  kvmclockEnabled(vcpu: number): boolean;
  /** MSR_KVM_SYSTEM_TIME_NEW on every vCPU: the guest's boot, or a restore carrying the MSR across. */
  guestEnableKvmclock(): void;
  /** KVM_KVMCLOCK_CTRL: request PVCLOCK_GUEST_STOPPED at the vCPU's next clock update. */
  kvmclockCtrl(vcpu: number): void;
  /** Guest TSC of a vCPU now (what RDTSC returns in the guest). */
  readGuestTsc(vcpu: number): bigint;
  pause(): void;
  resume(): void;
  vmclock(): VmclockPage;
  /** Changes the vmclock page under its seqlock. */
  updateVmclock(mutate: (page: VmclockPage) => void): void;
  /** Replaces the whole vmclock page (a restore, before any vCPU runs). */
  loadVmclock(page: VmclockPage): void;
  /** The journal form (persistence; the VM is not changed). */
  exportState(): VmState;

  // ---- what only a backend with a real guest has (absent on the emulated one) ----------------------

  /**
   * The guest's own state beyond its clocks (memory, vCPU registers) for a snapshot, paused; the
   * destination's backend rebuilds the VM from it (`VmSpec.payload`). Bounded by
   * LIMITS.backendPayloadBytesMax.
   */
  capturePayload?(): Uint8Array;
  /** The doorbell as a real interrupt into the guest (besides the guest model's handler). */
  injectDoorbell?(): void;
  /** The real guest's own counters, cumulative over the VM's life (they travel with its memory); read only. */
  guestCounters?(): RealGuestCounters;
  /** What the real guest reported since the last call: per-vCPU samples and the stops it acted on. */
  drainGuestReports?(): RealGuestReports;
  /** Releases everything the VM holds (threads, memory, fds). Reads of its clocks still answer from copies. */
  destroy?(): Promise<void>;
}

/** One sample a real guest took: RDTSC inside its pvclock read, and the kvmclock that gives. */
export interface RealGuestSample {
  vcpu: number;
  tsc: bigint;
  kvmclockNs: bigint;
  /** The record's flags as the guest read them (PVCLOCK_GUEST_STOPPED included when it saw it). */
  flags: number;
}

export interface RealGuestCounters {
  /** Stops it acted on, VM-wide (one per stop, whichever vCPU saw it first). */
  acted: number;
  /** Per vCPU: times it saw and cleared PVCLOCK_GUEST_STOPPED, doorbell interrupts its handler counted, samples taken (−1: mid-sample). */
  stopped: number[];
  doorbells: number[];
  samples: number[];
}

export interface RealGuestReports {
  samples: RealGuestSample[];
  /** Stops the guest acted on since the last call (VM-wide, once per stop whichever vCPU saw it). */
  actedDelta: number;
  /** Per vCPU: times it saw the stopped flag, doorbells its handler counted (cumulative). */
  stopped: number[];
  doorbells: number[];
}

/** What a new VM is made of. */
export interface VmSpec {
  vcpus: number;
  /** Guest TSC frequency; default the host's. */
  guestTscKhz?: bigint;
  /** A snapshot's backend payload (capturePayload on the source): the VM is rebuilt from it, paused. */
  payload?: Uint8Array;
}

/** A hypervisor: makes VMs on one host. */
export interface HypervisorBackend {
  /** Short name for logs and `/v1/host` ("emulated", "kvm", ...). */
  readonly name: string;
  readonly hostInfo: HostInfo;
  /** A new VM, paused, kvmclock not yet enabled (a guest boots it, or a restore fills it). */
  createVm(spec: VmSpec): HypervisorVm;
  /** A VM rebuilt from its journal form (a daemon restart), paused or running as `state` says. */
  restoreVm(state: VmState): HypervisorVm;
  /**
   * Whether this backend can host a snapshot of `vcpus` vCPUs with (or without) a backend payload
   * now; throws a typed `invalid_argument` naming `snapshot.backendPayload` otherwise, or
   * `resource_exhausted` when it has no room for the VM. Absent: only payload-less snapshots.
   */
  checkPayload?(payload: Uint8Array | undefined, vcpus: number): void;
  /** Releases the backend's own resources (after every VM was destroyed). */
  close?(): Promise<void>;
  /** What `/v1/host` says of the backend beyond its name (JSON-safe). */
  describe?(): Record<string, string | number | boolean>;
}
