// An emulated KVM VM and its vCPUs, with KVM's semantics and errors (kvm-time.md §1–§4):
// master-clock mode when every vCPU is TSC-matched, per-vCPU pvclock records written under the
// version seqlock, KVMCLOCK_CTRL as a one-shot request honoured at the vCPU's next clock update
// (so the stopped bit appears only when the vCPU next enters, as on real KVM), and a vmclock page.
//
// State is kept in flat typed arrays, one slot per vCPU, so an idle vCPU costs a few dozen bytes.

import { invalid, kvmError } from "../errors.js";
import { LIMITS } from "../limits.js";
import { u64, s64 } from "../kvm/u64.js";
import { getTimeScale, scaleDelta } from "../kvm/time-scale.js";
import { defaultRatio, guestTgtTscKhz, maxGuestTscKhz, scaleTsc, setTscKhzDecision, tscThresholds } from "../kvm/tsc.js";
import {
  PVCLOCK_GUEST_STOPPED,
  PVCLOCK_TSC_STABLE_BIT,
  PvclockArea,
  pvclockReadCycles,
  type PvclockRecord,
} from "../kvm/pvclock.js";
import { KVM_CLOCK_HOST_TSC, KVM_CLOCK_REALTIME, KVM_CLOCK_TSC_STABLE, setClockAdvance } from "../kvm/set-clock.js";
import { newVmclockPage, vmclockUpdate, type VmclockPage } from "../kvm/vmclock.js";
import type { HostClockPair, HostInfo, HypervisorVm, KvmClockData, VmSpec, VmState } from "./backend.js";
import type { EmulatedHost } from "./host.js";

const F_KVMCLOCK = 1; // guest wrote MSR_KVM_SYSTEM_TIME_NEW
const F_STOP_REQ = 2; // pvclock_set_guest_stopped_request
const F_UPDATE = 4; // KVM_REQ_CLOCK_UPDATE pending

export type VmOptions = VmSpec;

export class EmulatedVm implements HypervisorVm {
  readonly vcpuCount: number;
  readonly host: EmulatedHost;
  readonly pvclock: PvclockArea;
  private readonly tscOffset: BigUint64Array;
  private readonly ratio: BigUint64Array;
  private readonly virtualKhz: BigUint64Array;
  private readonly flags: Uint8Array;
  private kvmclockOffset = 0n;
  private masterCycleNow = 0n;
  private masterKernelNs = 0n;
  private matchedDirty = true;
  private matched = true;
  private page: VmclockPage;
  private isRunning = false;

  constructor(host: EmulatedHost, opts: VmOptions) {
    if (!Number.isInteger(opts.vcpus) || opts.vcpus < 1 || opts.vcpus > LIMITS.vcpuCountMax)
      throw invalid("vcpus", `must be an integer in 1..${LIMITS.vcpuCountMax}`);
    this.host = host;
    this.vcpuCount = opts.vcpus;
    this.pvclock = new PvclockArea(opts.vcpus);
    this.tscOffset = new BigUint64Array(opts.vcpus);
    this.ratio = new BigUint64Array(opts.vcpus);
    this.virtualKhz = new BigUint64Array(opts.vcpus);
    this.flags = new Uint8Array(opts.vcpus);
    const fracDefault = defaultRatio(host.info.vendor.fracBits);
    this.ratio.fill(fracDefault);
    this.virtualKhz.fill(host.info.tscKhz);
    // VM-level KVM_SET_TSC_KHZ before any vCPU exists: validate once, then apply to all.
    if (opts.guestTscKhz !== undefined && opts.guestTscKhz !== host.info.tscKhz) {
      const d = this.decide(opts.guestTscKhz);
      this.ratio.fill(d.ratio);
      this.virtualKhz.fill(d.effectiveKhz);
    }
    this.refreshMasterClock();
    this.page = newVmclockPage();
  }

  get running(): boolean {
    return this.isRunning;
  }

  get guestTscKhz(): bigint {
    return this.virtualKhz[0] as bigint;
  }

  get hostInfo(): HostInfo {
    return this.host.info;
  }

  hostClocks(): HostClockPair {
    const t = this.host.trueNs();
    return { hostTsc: this.host.tscAt(t), realtimeNs: this.host.realtimeNsAt(t) };
  }

  hostRawNsOfTsc(hostTsc: bigint): bigint {
    return this.host.rawNsOfTsc(hostTsc);
  }

  private decide(khz: bigint) {
    // Outside what any KVM takes: a plain range error. Inside it, KVM's own rules (EINVAL), whose
    // messages give the same range for this host: what is advertised is what is accepted.
    if (khz < LIMITS.tscKhzMin || khz > LIMITS.tscKhzMax) {
      const { min, max } = guestTscKhzRange(this.host.info);
      throw invalid("guestTscKhz", `must be within ${min}..${max} kHz on this host (${this.host.info.tscScaling ? "below KVM's max_guest_tsc_khz" : "no TSC scaling: near the host's rate"})`);
    }
    return setTscKhzDecision({
      userKhzArg: khz,
      hostKhz: this.host.info.tscKhz,
      vendor: this.host.info.vendor,
      hostHasScaling: this.host.info.tscScaling,
    });
  }

  private checkVcpu(i: number): void {
    if (!Number.isInteger(i) || i < 0 || i >= this.vcpuCount) throw invalid("vcpu", `no vCPU ${i} (VM has ${this.vcpuCount})`);
  }

  /** pvclock_update_vm_gtod_copy: a fresh (master_kernel_ns, master_cycle_now) pair. */
  private refreshMasterClock(): void {
    const t = this.host.trueNs();
    this.masterCycleNow = this.host.tscAt(t);
    this.masterKernelNs = this.host.rawNsOfTsc(this.masterCycleNow);
  }

  /** Master clock needs every vCPU TSC-matched: same offset and same ratio (kvm-time.md §1.2). */
  useMasterClock(): boolean {
    if (this.matchedDirty) {
      const o = this.tscOffset[0];
      const r = this.ratio[0];
      let m = true;
      for (let i = 1; i < this.vcpuCount && m; i++) m = this.tscOffset[i] === o && this.ratio[i] === r;
      this.matched = m;
      this.matchedDirty = false;
    }
    return this.matched;
  }

  getClock(): KvmClockData {
    const t = this.host.trueNs();
    const hostTsc = this.host.tscAt(t);
    if (this.useMasterClock()) {
      const s = this.host.rawScale;
      const clock = u64(this.masterKernelNs + this.kvmclockOffset + scaleDelta(u64(hostTsc - this.masterCycleNow), s.mul, s.shift));
      return { clock, flags: KVM_CLOCK_TSC_STABLE | KVM_CLOCK_REALTIME | KVM_CLOCK_HOST_TSC, realtime: this.host.realtimeNsAt(t), hostTsc };
    }
    return { clock: u64(this.host.rawNsOfTsc(hostTsc) + this.kvmclockOffset), flags: 0, realtime: 0n, hostTsc: 0n };
  }

  setClock(data: { clock: bigint; flags: number; realtime: bigint }): { advancedClock: bigint; kvmclockOffset: bigint } {
    this.refreshMasterClock();
    const t = this.host.trueNs();
    const nowRaw = this.useMasterClock() ? this.masterKernelNs : this.host.rawNsAt(t);
    const r = setClockAdvance({ clock: data.clock, flags: data.flags, realtime: data.realtime, nowRealNs: this.host.realtimeNsAt(t), nowRawNs: nowRaw });
    this.kvmclockOffset = r.kvmclockOffset;
    this.requestAll();
    return r;
  }

  /** Scaled TSC Hz a pvclock record implies, inverted from mul/shift (KVM_SET_CLOCK_GUEST). */
  private static recordHz(rec: PvclockRecord): bigint {
    if (rec.tscToSystemMul === 0n) return 0n;
    const hz = (1_000_000_000n << 32n) / rec.tscToSystemMul;
    return rec.tscShift < 0 ? hz << BigInt(-rec.tscShift) : hz >> BigInt(rec.tscShift);
  }

  setClockGuest(rec: PvclockRecord): void {
    if (!this.useMasterClock()) throw kvmError("EINVAL", "KVM_SET_CLOCK_GUEST", "master clock not active (vCPUs not TSC-matched)");
    const tgtHz = guestTgtTscKhz(this.host.info.tscKhz, this.ratio[0] as bigint, this.host.info.vendor.fracBits) * 1000n;
    const userHz = EmulatedVm.recordHz(rec);
    const diff = userHz > tgtHz ? userHz - tgtHz : tgtHz - userHz;
    if (diff > 1000n) throw kvmError("ERANGE", "KVM_SET_CLOCK_GUEST", `record implies ${userHz} Hz, vCPU runs at ${tgtHz} Hz`, "pvclock");
    this.refreshMasterClock();
    const guestTsc = this.guestTscAtHostTsc(0, this.masterCycleNow);
    const userNs = pvclockReadCycles(rec, guestTsc);
    this.kvmclockOffset = s64(userNs - this.masterKernelNs);
    this.requestAll();
  }

  getClockGuest(): PvclockRecord {
    if (!this.useMasterClock()) throw kvmError("EINVAL", "KVM_GET_CLOCK_GUEST", "master clock not active");
    return this.computeRecord(0, this.pvclock.guestRead(0).version);
  }

  getTscOffset(i: number): bigint {
    this.checkVcpu(i);
    return this.tscOffset[i] as bigint;
  }

  setTscOffset(i: number, offset: bigint): void {
    this.checkVcpu(i);
    if (offset < 0n || offset > 0xffff_ffff_ffff_ffffn) throw invalid("tscOffset", "must be a u64");
    this.tscOffset[i] = offset;
    this.matchedDirty = true;
    this.request(i);
  }

  /** Sets every vCPU's offset at once (one generation: master clock survives). */
  setTscOffsetAll(offset: bigint): void {
    if (offset < 0n || offset > 0xffff_ffff_ffff_ffffn) throw invalid("tscOffset", "must be a u64");
    this.tscOffset.fill(offset);
    this.matchedDirty = true;
    this.requestAll();
  }

  getTscScale(i: number): { ratio: bigint; fracBits: number } {
    this.checkVcpu(i);
    if (!this.host.info.tscScaling) throw kvmError("ENXIO", "KVM_VCPU_TSC_SCALE", "no hardware TSC scaling on this host");
    return { ratio: this.ratio[i] as bigint, fracBits: this.host.info.vendor.fracBits };
  }

  /** The programmed ratio, without KVM_VCPU_TSC_SCALE's ENXIO rule (a host without scaling runs the default). */
  getTscRatio(i: number): bigint {
    this.checkVcpu(i);
    return this.ratio[i] as bigint;
  }

  getTscKhz(i: number): bigint {
    this.checkVcpu(i);
    return this.virtualKhz[i] as bigint;
  }

  setTscKhz(i: number, khz: bigint): void {
    this.checkVcpu(i);
    const d = this.decide(khz);
    this.ratio[i] = d.ratio;
    this.virtualKhz[i] = d.effectiveKhz;
    this.matchedDirty = true;
    this.request(i);
  }

  kvmclockCtrl(i: number): void {
    this.checkVcpu(i);
    if (((this.flags[i] as number) & F_KVMCLOCK) === 0)
      throw kvmError("EINVAL", "KVM_KVMCLOCK_CTRL", `vCPU ${i} has not enabled kvmclock`);
    this.flags[i] = (this.flags[i] as number) | F_STOP_REQ;
    this.request(i);
  }

  kvmclockEnabled(i: number): boolean {
    return ((this.flags[i] as number) & F_KVMCLOCK) !== 0;
  }

  /** Guest side: MSR_KVM_SYSTEM_TIME_NEW write on every vCPU (boot). */
  guestEnableKvmclock(): void {
    for (let i = 0; i < this.vcpuCount; i++) this.flags[i] = (this.flags[i] as number) | F_KVMCLOCK;
    this.requestAll();
  }

  private guestTscAtHostTsc(i: number, hostTsc: bigint): bigint {
    return u64(scaleTsc(hostTsc, this.ratio[i] as bigint, this.host.info.vendor.fracBits) + (this.tscOffset[i] as bigint));
  }

  readGuestTsc(i: number): bigint {
    this.checkVcpu(i);
    return this.guestTscAtHostTsc(i, this.host.tscAt(this.host.trueNs()));
  }

  pause(): void {
    this.isRunning = false;
  }

  /** Resume: each vCPU enters and services its pending clock update first. */
  resume(): void {
    this.isRunning = true;
    this.serviceRequests();
  }

  vmclock(): VmclockPage {
    return this.page;
  }

  updateVmclock(mutate: (page: VmclockPage) => void): void {
    vmclockUpdate(this.page, mutate);
  }

  /** Replace the whole page (restore from a snapshot). */
  loadVmclock(page: VmclockPage): void {
    this.page = page;
  }

  // ---- clock updates -------------------------------------------------------------------------

  private request(i: number): void {
    this.flags[i] = (this.flags[i] as number) | F_UPDATE;
    if (this.isRunning) this.serviceRequests();
  }

  private requestAll(): void {
    for (let i = 0; i < this.vcpuCount; i++) this.flags[i] = (this.flags[i] as number) | F_UPDATE;
    if (this.isRunning) this.serviceRequests();
  }

  /** kvm_guest_time_update for every vCPU with a pending request (at guest entry). */
  serviceRequests(): void {
    const master = this.useMasterClock();
    let hostTsc = this.masterCycleNow;
    let kernelNs = this.masterKernelNs;
    if (!master) {
      hostTsc = this.host.tscAt(this.host.trueNs());
      kernelNs = this.host.rawNsOfTsc(hostTsc);
    }
    const systemTime = u64(kernelNs + this.kvmclockOffset);
    // vCPUs of one VM nearly always share ratio and offset: their records then differ in nothing,
    // so the scale and the TSC timestamp are computed once per distinct (ratio, offset).
    let memoRatio = -1n;
    let memoOffset = -1n;
    let memo: PvclockRecord | null = null;
    for (let i = 0; i < this.vcpuCount; i++) {
      const f = this.flags[i] as number;
      if ((f & F_UPDATE) === 0) continue;
      this.flags[i] = f & ~F_UPDATE;
      if ((f & F_KVMCLOCK) === 0) continue; // kvmclock not active: nothing to write
      const ratio = this.ratio[i] as bigint;
      const offset = this.tscOffset[i] as bigint;
      if (memo === null || ratio !== memoRatio || offset !== memoOffset) {
        memo = this.recordFor(i, hostTsc, systemTime, master);
        memoRatio = ratio;
        memoOffset = offset;
      }
      const rec = { ...memo };
      if ((f & F_STOP_REQ) !== 0) {
        rec.flags |= PVCLOCK_GUEST_STOPPED;
        this.flags[i] = (this.flags[i] as number) & ~F_STOP_REQ;
      }
      this.pvclock.hostWrite(i, rec);
    }
  }

  private recordFor(i: number, hostTsc: bigint, systemTime: bigint, master: boolean): PvclockRecord {
    const ratio = this.ratio[i] as bigint;
    const tgtKhz = guestTgtTscKhz(this.host.info.tscKhz, ratio, this.host.info.vendor.fracBits);
    const scale = getTimeScale(1_000_000_000n, tgtKhz * 1000n);
    return {
      version: 0,
      tscTimestamp: this.guestTscAtHostTsc(i, hostTsc),
      systemTime,
      tscToSystemMul: scale.mul,
      tscShift: scale.shift,
      flags: master ? PVCLOCK_TSC_STABLE_BIT : 0,
    };
  }

  private computeRecord(i: number, version: number): PvclockRecord {
    const rec = this.recordFor(i, this.masterCycleNow, u64(this.masterKernelNs + this.kvmclockOffset), this.useMasterClock());
    rec.version = version;
    return rec;
  }

  /** Raw state for snapshots and the journal. */
  exportState(): VmState {
    return {
      vcpus: this.vcpuCount,
      tscOffset: BigUint64Array.from(this.tscOffset),
      ratio: BigUint64Array.from(this.ratio),
      virtualKhz: BigUint64Array.from(this.virtualKhz),
      flags: Uint8Array.from(this.flags),
      kvmclockOffset: this.kvmclockOffset,
      pvclock: this.pvclock.copyBytes(),
      vmclock: { ...this.page },
      running: this.isRunning,
    };
  }

  /** Restores raw state (daemon restart): the VM continues exactly where it was. */
  importState(s: VmState): void {
    if (s.vcpus !== this.vcpuCount) throw invalid("state.vcpus", "vCPU count mismatch");
    this.tscOffset.set(s.tscOffset);
    this.ratio.set(s.ratio);
    this.virtualKhz.set(s.virtualKhz);
    this.flags.set(s.flags);
    this.kvmclockOffset = s.kvmclockOffset;
    this.pvclock.bytes().set(s.pvclock);
    this.page = { ...s.vmclock };
    this.matchedDirty = true;
    this.refreshMasterClockKeepingKvmclock();
    this.isRunning = s.running;
  }

  /** After a restart the master pair is new; the kvmclock offset is relative to the raw clock, so
   * kvmclock is unchanged (both pairs lie on the same raw clock line). */
  private refreshMasterClockKeepingKvmclock(): void {
    this.refreshMasterClock();
  }
}

/**
 * The guest TSC rates KVM_SET_TSC_KHZ accepts on `host`, as one closed range: with scaling, from the
 * emulator's floor up to one below max_guest_tsc_khz (the ioctl refuses `arg >= max`); without it,
 * the tolerance band around the host rate (arch/x86/kvm/x86.c, kvm_set_tsc_khz). What an API
 * advertises and what the VM accepts are this one range.
 */
export function guestTscKhzRange(host: HostInfo): { min: bigint; max: bigint } {
  if (!host.tscScaling) {
    const t = tscThresholds(host.tscKhz);
    return { min: t.loKhz > LIMITS.tscKhzMin ? t.loKhz : LIMITS.tscKhzMin, max: t.hiKhz };
  }
  return { min: LIMITS.tscKhzMin, max: maxGuestTscKhz(host.tscKhz, host.vendor) - 1n };
}
