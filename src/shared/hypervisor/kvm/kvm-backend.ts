// The real-KVM hypervisor backend (`tscmig daemon --backend kvm`): every VM a real KVM VM running the
// project's guest (guest.S), behind the same seam as the emulated backend. Clock operations are the
// real ioctls (kvm-vm.ts); the host's TSC is placed on the daemon's clocks by a calibration against
// KVM_GET_CLOCK (host-clock.ts); capture carries guest memory and registers in the snapshot's backend
// payload (payload.ts), from which the destination builds a fresh VM.
//
// Who owns what, with a real guest:
// - PVCLOCK_GUEST_STOPPED is the real guest's: it clears the flag in its record and counts the stop
//   once per VM. The guest model (shared/guest) still reads the record, but its "clear" here only
//   reports the flag: clearing the real record would hide the stop from the real guest.
// - The history's samples and `handled` events come from the real guest's mailbox
//   (drainGuestReports), not from the model.
// - TSC offsets go to KVM; where the kernel ignores them (kvm info's functional check) the offsets
//   in effect are zero, and that is what getTscOffset answers.
// - No KVM_SET_TSC_KHZ ever: guests run at the host's rate (on a software virtualiser a VM-wide rate
//   off the host's breaks RDTSC), so only the host's rate is accepted.
// - KVM_SET_CLOCK_GUEST does not exist on the kernels this runs on: restore's fallback (KVM_SET_CLOCK)
//   is taken. A KVM_SET_CLOCK without REALTIME is anchored at the realtime of the clock read the
//   caller computed it from, so KVM adds the microseconds spent since (as QEMU's migration does).

import { readFileSync } from "node:fs";
import { invalid, kvmError, TscmigError } from "../../errors.js";
import { LIMITS } from "../../limits.js";
import { KVM_CLOCK_HOST_TSC, KVM_CLOCK_REALTIME } from "../../kvm/set-clock.js";
import { PVCLOCK_GUEST_STOPPED, PVCLOCK_RECORD_BYTES, pvclockReadCycles, type PvclockRecord } from "../../kvm/pvclock.js";
import { defaultRatio, SVM, VMX } from "../../kvm/tsc.js";
import { newVmclockPage, vmclockUpdate, type VmclockPage } from "../../kvm/vmclock.js";
import type { HostClockPair, HostInfo, HypervisorBackend, HypervisorVm, KvmClockData, PvclockPages, RealGuestCounters, RealGuestReports, RealGuestSample, VmSpec, VmState } from "../backend.js";
import type { EmulatedHost } from "../host.js";
import type { TruthProbe } from "../truth.js";
import { KvmSystem } from "./device.js";
import { pvclockGpa, readActed, readMailbox } from "./guest.js";
import { HostTscClock } from "./host-clock.js";
import { kvmInfo } from "./info.js";
import { KvmVm } from "./kvm-vm.js";
import { VcpuThreadPool } from "./thread-pool.js";
import { KVMCLOCK_NS_MAX } from "./set-clock-guard.js";
import { decodeKvmPayloadFor, encodeKvmPayload } from "./payload.js";

export interface KvmBackendOptions {
  /** The daemon's emulated host: its true time, realtime frame (skew) and raw clock. */
  host: EmulatedHost;
  /** Pause between a vCPU's samples, µs (the guest samples, HLTs, and the host runs it again). */
  paceUs?: number;
  /** vCPU threads per VM (default min(vCPUs, 2)). */
  threads?: number;
  /** How long a guest's boot or first entry may take before it is an error, ms. */
  bootTimeoutMs?: number;
  devicePath?: string;
}

const DEFAULT_PACE_US = 10_000;
const DEFAULT_BOOT_TIMEOUT_MS = 5000;
/** Threads kept started: one VM's worth at the default of two threads per VM. */
const POOLED_THREADS = 2;

export class KvmBackend implements HypervisorBackend {
  readonly name = "kvm";
  readonly hostInfo: HostInfo;
  readonly clock: HostTscClock;
  /** Whether KVM_VCPU_TSC_OFFSET is in effect on this host (kvm info's functional check). */
  readonly offsetsHonoured: boolean;
  readonly flavour: string;
  readonly sys: KvmSystem;
  readonly host: EmulatedHost;
  private readonly clockVm: KvmVm;
  private readonly vms = new Set<KvmBackedVm>();
  /** vCPU threads started ahead (a VM's first resume would otherwise wait for one to start). */
  private readonly pool = new VcpuThreadPool(POOLED_THREADS);
  private readonly opts: Required<Omit<KvmBackendOptions, "host" | "devicePath" | "threads">> & { threads?: number };
  private closed = false;

  private constructor(sys: KvmSystem, clockVm: KvmVm, o: KvmBackendOptions, probe: { offsetsHonoured: boolean; flavour: string }) {
    this.sys = sys;
    this.host = o.host;
    this.clockVm = clockVm;
    this.opts = { paceUs: o.paceUs ?? DEFAULT_PACE_US, bootTimeoutMs: o.bootTimeoutMs ?? DEFAULT_BOOT_TIMEOUT_MS, ...(o.threads !== undefined ? { threads: o.threads } : {}) };
    const khz = clockVm.getTscKhz(0);
    this.hostInfo = { name: o.host.info.name, tscKhz: khz, vendor: cpuVendor() === "svm" ? SVM : VMX, tscScaling: false };
    this.offsetsHonoured = probe.offsetsHonoured;
    this.flavour = probe.flavour;
    this.clock = new HostTscClock(sys.libc, () => this.kernelPair(), o.host, khz);
  }

  /**
   * Opens /dev/kvm (a KvmUnavailable naming why when it cannot: absent, permission, no FFI), runs
   * the functional checks of `tscmig kvm info` (are TSC offsets honoured?) and boots the clock VM
   * whose KVM_GET_CLOCK gives the host's (realtime, TSC) pairs.
   */
  static async open(o: KvmBackendOptions): Promise<KvmBackend> {
    const path = o.devicePath;
    const info = await kvmInfo(path !== undefined ? { device: path } : {});
    if (!info.available || !info.verdict.usable) {
      const sys = KvmSystem.open(path); // throws the typed reason when it is the open that fails
      sys.close();
      throw new TscmigError("failed_precondition", `${info.device}: KVM opens but is not usable here: ${info.verdict.notes.join("; ") || info.message || "functional checks failed"}`, { reason: "kvm_unusable" });
    }
    const sys = KvmSystem.open(path);
    let clockVm: KvmVm | null = null;
    try {
      clockVm = KvmVm.create(sys, { vcpus: 1, program: "idle", threads: 1, paceUs: 1_000_000 });
      clockVm.resume();
      const ran = clockVm.waitRunsSync(0, 1, o.bootTimeoutMs ?? DEFAULT_BOOT_TIMEOUT_MS);
      clockVm.pause();
      if (!ran) throw new TscmigError("unavailable", "the clock VM's vCPU did not run within its boot timeout", { reason: "kvm_boot_timeout" });
      return new KvmBackend(sys, clockVm, o, { offsetsHonoured: info.checks?.tscOffset.honoured === true, flavour: info.flavour });
    } catch (e) {
      void clockVm?.close().finally(() => sys.close());
      if (clockVm === null) sys.close();
      throw e;
    }
  }

  private kernelPair(): { realtimeNs: bigint; hostTsc: bigint } {
    const c = this.clockVm.getClock();
    if ((c.flags & KVM_CLOCK_HOST_TSC) === 0) throw new TscmigError("internal", "KVM_GET_CLOCK on the clock VM gave no host TSC");
    return { realtimeNs: c.realtime, hostTsc: c.hostTsc };
  }

  /** The host's TSC and kernel realtime of one instant (KVM_GET_CLOCK on the clock VM). */
  kernelClocks(): { realtimeNs: bigint; hostTsc: bigint } {
    const p = this.kernelPair();
    this.clock.absorb(p);
    return p;
  }

  createVm(spec: VmSpec): KvmBackedVm {
    this.live();
    if (spec.guestTscKhz !== undefined && spec.guestTscKhz !== this.hostInfo.tscKhz)
      throw invalid("guestTscKhz", `the kvm backend runs guests at this host's rate only (${this.hostInfo.tscKhz} kHz): it never sets KVM_SET_TSC_KHZ`);
    const payload = spec.payload !== undefined ? decodeKvmPayloadFor(spec.payload, spec.vcpus) : null;
    this.reserve(spec.vcpus);
    const vmOpts = { paceUs: this.opts.paceUs, takeThread: () => this.pool.take(), ...(this.opts.threads !== undefined ? { threads: this.opts.threads } : {}) };
    const kvm = payload !== null ? KvmVm.restore(this.sys, payload, vmOpts) : KvmVm.create(this.sys, { vcpus: spec.vcpus, ...vmOpts });
    const vm = new KvmBackedVm(this, kvm, payload);
    try {
      if (payload === null) vm.boot(this.opts.bootTimeoutMs);
    } catch (e) {
      void vm.destroy();
      throw e;
    }
    this.vms.add(vm);
    return vm;
  }

  /**
   * A daemon restart: a real VM does not survive its process, so the guest boots again and kvmclock
   * continues from the journaled records (the host TSC, which is the guest's, ran on meanwhile).
   */
  restoreVm(state: VmState): KvmBackedVm {
    const vm = this.createVm({ vcpus: state.vcpus });
    try {
      vm.continueFrom(state);
    } catch (e) {
      void vm.destroy();
      throw e;
    }
    return vm;
  }

  checkPayload(payload: Uint8Array | undefined, vcpus: number): void {
    if (payload === undefined) throw invalid("snapshot.backendPayload", "missing: a kvm daemon needs the guest's memory and registers (the source runs another backend)");
    // All of it, inflation, vCPU count and room included: on receipt the Transfer is the decision, so
    // what the restore (createVm) would refuse must be refused here, before it.
    decodeKvmPayloadFor(payload, vcpus);
    this.reserve(vcpus);
  }

  /** Bookkeeping of the resource limits (LIMITS.kvmVmsMax, kvmVcpusTotalMax). */
  private reserve(vcpus: number): void {
    let total = vcpus;
    for (const v of this.vms) total += v.vcpuCount;
    if (this.vms.size >= LIMITS.kvmVmsMax) throw new TscmigError("resource_exhausted", `at most ${LIMITS.kvmVmsMax} KVM VMs per daemon`, { reason: "kvm_vm_limit" });
    if (total > LIMITS.kvmVcpusTotalMax) throw new TscmigError("resource_exhausted", `at most ${LIMITS.kvmVcpusTotalMax} KVM vCPUs per daemon (${total} asked)`, { reason: "kvm_vcpu_limit" });
  }

  describe(): Record<string, string | number | boolean> {
    return { flavour: this.flavour, tscKhz: this.hostInfo.tscKhz.toString(), tscOffsetRestores: this.offsetsHonoured ? "in effect" : "not in effect", vms: this.vms.size };
  }

  forget(vm: KvmBackedVm): void {
    this.vms.delete(vm);
  }

  get vmCount(): number {
    return this.vms.size;
  }

  /** Destroys every VM, the clock VM, and closes /dev/kvm. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.vms].map((v) => v.destroy()));
    await this.pool.close();
    await this.clockVm.close();
    this.sys.close();
  }

  private live(): void {
    if (this.closed) throw new TscmigError("failed_precondition", "the kvm backend is closed");
  }
}

/** One real VM behind the seam. */
export class KvmBackedVm implements HypervisorVm {
  readonly vcpuCount: number;
  readonly pvclock: PvclockPages;
  private kvm: KvmVm | null;
  /** Guest memory after destroy (a handed-off VM's records are still read for its report). */
  private memCopy: Uint8Array | null = null;
  private readonly offsets: bigint[];
  private readonly enabled: boolean[];
  private page: VmclockPage = newVmclockPage();
  /** Kernel realtime of the latest (realtime, TSC) read for this VM: what a computed clock is anchored at. */
  private anchorKernelRealtimeNs = 0n;
  private ranHere = false;
  private readonly lastSamples: number[];
  private lastActed: number;

  constructor(
    private readonly backend: KvmBackend,
    kvm: KvmVm,
    restored: { systemTimeMsr: readonly bigint[] } | null,
  ) {
    this.kvm = kvm;
    this.vcpuCount = kvm.vcpuCount;
    // What is in effect: the kernel's (a new vCPU's TSC starts near 0) where offsets are honoured, else none.
    this.offsets = Array.from({ length: this.vcpuCount }, (_, i) => (backend.offsetsHonoured ? kvm.getTscOffset(i) : 0n));
    this.enabled = Array.from({ length: this.vcpuCount }, (_, i) => restored !== null && restored.systemTimeMsr[i] !== 0n);
    this.pvclock = pagesOf(this);
    // Only what the guest reports from now on is this VM's news (a restored VM's mailboxes hold the source's).
    this.lastSamples = Array.from({ length: this.vcpuCount }, (_, i) => this.mailboxSamples(i));
    this.lastActed = readActed(this.memory());
  }

  get hostInfo(): HostInfo {
    return this.backend.hostInfo;
  }

  get guestTscKhz(): bigint {
    return this.backend.hostInfo.tscKhz;
  }

  get running(): boolean {
    return this.kvm?.running ?? false;
  }

  /** The guest's memory: live while the VM exists, its last copy after. */
  memory(): Uint8Array {
    return this.kvm !== null ? this.kvm.guestMemory() : (this.memCopy as Uint8Array);
  }

  private vm(): KvmVm {
    if (this.kvm === null) throw new TscmigError("failed_precondition", "the KVM VM was destroyed");
    return this.kvm;
  }

  private mailboxSamples(i: number): number {
    try {
      return readMailbox(this.memory(), i).samples;
    } catch {
      return 0;
    }
  }

  /**
   * First run of a new VM: kvmclock starts at the daemon's raw clock, as an emulated VM's does (the
   * guest model's realtime before its first NTP sync is its clocksource, so a kvmclock near zero
   * would put it near 1970); then every vCPU enables kvmclock (its first instruction) and takes a
   * sample; paused again.
   */
  boot(timeoutMs: number): void {
    const k = this.vm();
    k.setClock({ clock: this.backend.host.rawNs(), flags: 0, realtime: 0n }, { floorNs: 0n, maxForwardNs: KVMCLOCK_NS_MAX });
    k.resume();
    this.ranHere = true;
    for (let i = 0; i < this.vcpuCount; i++) {
      if (!k.waitHltsSync(i, 1, timeoutMs)) {
        k.pause();
        throw new TscmigError("unavailable", `KVM guest: vCPU ${i} did not take its first sample within ${timeoutMs} ms`, { reason: "kvm_boot_timeout" });
      }
    }
    k.pause();
    this.enabled.fill(true);
    for (let i = 0; i < this.vcpuCount; i++) this.lastSamples[i] = this.mailboxSamples(i);
    this.lastActed = readActed(this.memory());
  }

  /** After a restart: kvmclock continues from the journaled records at the host TSC now. */
  continueFrom(state: VmState): void {
    const at = this.vm().getClock();
    let clock = 0n;
    let floorNs = 0n; // the newest record's time: the guest saw at least that
    for (let i = 0; i < state.vcpus; i++) {
      const rec = this.recordFromBytes(state.pvclock, i);
      if (rec.tscToSystemMul === 0n) continue;
      const ns = pvclockReadCycles(rec, at.hostTsc + (this.offsets[i] as bigint));
      if (ns > clock) clock = ns;
      if (rec.systemTime > floorNs) floorNs = rec.systemTime;
    }
    this.page = { ...state.vmclock };
    // Forward by however long the daemon was down: no bound but kvmclock's own.
    if (clock > 0n) this.vm().setClock({ clock, flags: KVM_CLOCK_REALTIME, realtime: at.realtime }, { floorNs, maxForwardNs: KVMCLOCK_NS_MAX });
    // The guest was stopped (and lost its memory): it hears of it as of any pause, once, at its next
    // entry; a migration it had not acted on before the crash is acted on then (hosted-vms decides
    // whether that is news for the history).
    for (let i = 0; i < this.vcpuCount; i++) this.vm().kvmclockCtrl(i);
  }

  private recordFromBytes(bytes: Uint8Array, i: number): PvclockRecord {
    const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    return recordAt(v, i * PVCLOCK_RECORD_BYTES);
  }

  // ---- clocks -------------------------------------------------------------------------------------

  getClock(): KvmClockData {
    const c = this.vm().getClock();
    if ((c.flags & KVM_CLOCK_REALTIME) === 0) return { clock: c.clock, flags: c.flags, realtime: 0n, hostTsc: 0n };
    this.anchorKernelRealtimeNs = c.realtime;
    this.backend.clock.absorb({ realtimeNs: c.realtime, hostTsc: c.hostTsc });
    return { clock: c.clock, flags: c.flags, realtime: this.backend.clock.toDaemonRealtime(c.realtime), hostTsc: c.hostTsc };
  }

  setClock(data: { clock: bigint; flags: number; realtime: bigint }): { advancedClock: bigint } {
    const req =
      (data.flags & KVM_CLOCK_REALTIME) !== 0
        ? { clock: data.clock, flags: data.flags, realtime: this.backend.clock.toKernelRealtime(data.realtime) }
        : this.anchorKernelRealtimeNs !== 0n
          ? { clock: data.clock, flags: data.flags | KVM_CLOCK_REALTIME, realtime: this.anchorKernelRealtimeNs }
          : data;
    const r = this.vm().setClock(req, { floorNs: this.seenFloorNs() });
    return { advancedClock: r.expectedClockNs };
  }

  /** The most kvmclock this guest has reported seeing (its mailboxes; its clock now if it ran here). */
  private seenFloorNs(): bigint {
    let floor = 0n;
    for (let i = 0; i < this.vcpuCount; i++) {
      try {
        const r = readMailbox(this.memory(), i);
        if (r.record !== null && r.record.tscToSystemMul !== 0n) {
          const ns = pvclockReadCycles(r.record, r.tsc);
          if (ns > floor) floor = ns;
        }
      } catch {
        // a vCPU stopped mid-sample: its previous sample is not readable; the others bound it
      }
    }
    if (this.ranHere) {
      const now = this.vm().getClock().clock;
      if (now > floor) floor = now;
    }
    return floor;
  }

  setClockGuest(): void {
    throw kvmError("ENXIO", "KVM_SET_CLOCK_GUEST", "not provided by this kernel");
  }

  getClockGuest(): PvclockRecord {
    throw kvmError("ENXIO", "KVM_GET_CLOCK_GUEST", "not provided by this kernel");
  }

  hostClocks(): HostClockPair {
    const p = this.backend.kernelClocks();
    this.anchorKernelRealtimeNs = p.realtimeNs;
    return { hostTsc: p.hostTsc, realtimeNs: this.backend.clock.toDaemonRealtime(p.realtimeNs) };
  }

  hostRawNsOfTsc(hostTsc: bigint): bigint {
    return this.backend.host.rawNsAt(this.backend.clock.monoOfTsc(hostTsc));
  }

  // ---- TSC ----------------------------------------------------------------------------------------

  private check(i: number): void {
    if (!Number.isInteger(i) || i < 0 || i >= this.vcpuCount) throw invalid("vcpu", `no vCPU ${i} (VM has ${this.vcpuCount})`);
  }

  getTscOffset(i: number): bigint {
    this.check(i);
    return this.offsets[i] as bigint;
  }

  setTscOffset(i: number, offset: bigint): void {
    this.check(i);
    this.vm().setTscOffset(i, offset);
    if (this.backend.offsetsHonoured) this.offsets[i] = offset;
  }

  setTscOffsetAll(offset: bigint): void {
    for (let i = 0; i < this.vcpuCount; i++) this.setTscOffset(i, offset);
  }

  getTscRatio(i: number): bigint {
    this.check(i);
    return defaultRatio(this.hostInfo.vendor.fracBits);
  }

  getTscScale(): { ratio: bigint; fracBits: number } {
    throw kvmError("ENXIO", "KVM_VCPU_TSC_SCALE", "no hardware TSC scaling on this host");
  }

  getTscKhz(i: number): bigint {
    this.check(i);
    return this.guestTscKhz;
  }

  setTscKhz(i: number, khz: bigint): void {
    this.check(i);
    if (khz !== this.guestTscKhz) throw kvmError("EINVAL", "KVM_SET_TSC_KHZ", `the kvm backend never sets a rate off the host's ${this.guestTscKhz} kHz`, "guestTscKhz");
  }

  readGuestTsc(i: number): bigint {
    this.check(i);
    return this.backend.clock.tscAtMono(this.backend.host.trueNs()) + (this.offsets[i] as bigint);
  }

  // ---- kvmclock and running -----------------------------------------------------------------------

  kvmclockEnabled(i: number): boolean {
    this.check(i);
    return this.enabled[i] as boolean;
  }

  /** The real guest enables kvmclock itself (its first instruction); a restored one came with its MSRs. */
  guestEnableKvmclock(): void {}

  kvmclockCtrl(i: number): void {
    this.check(i);
    this.vm().kvmclockCtrl(i);
  }

  pause(): void {
    if (this.kvm !== null && this.kvm.running) this.kvm.pause();
  }

  /** Resumes and waits for vCPU 0's first entry, where KVM writes its pvclock record (what a reader sees next). */
  resume(): void {
    const k = this.vm();
    if (k.running) return;
    const runs = k.stats(0).runs;
    k.resume();
    this.ranHere = true;
    k.waitRunsSync(0, runs + 1, DEFAULT_BOOT_TIMEOUT_MS);
  }

  vmclock(): VmclockPage {
    return this.page;
  }

  updateVmclock(mutate: (page: VmclockPage) => void): void {
    vmclockUpdate(this.page, mutate);
  }

  loadVmclock(page: VmclockPage): void {
    this.page = page;
  }

  exportState(): VmState {
    const n = this.vcpuCount;
    return {
      vcpus: n,
      tscOffset: BigUint64Array.from(this.offsets),
      ratio: new BigUint64Array(n).fill(defaultRatio(this.hostInfo.vendor.fracBits)),
      virtualKhz: new BigUint64Array(n).fill(this.guestTscKhz),
      flags: Uint8Array.from(this.enabled, (e) => (e ? 1 : 0)),
      kvmclockOffset: 0n,
      pvclock: this.pvclock.copyBytes(),
      vmclock: { ...this.page },
      running: this.running,
    };
  }

  // ---- the real guest -----------------------------------------------------------------------------

  capturePayload(): Uint8Array {
    const s = this.vm().capture();
    return encodeKvmPayload(s);
  }

  injectDoorbell(): void {
    if (this.kvm !== null) this.kvm.ringDoorbell(0);
  }

  guestCounters(): RealGuestCounters {
    const mem = this.memory();
    const c: RealGuestCounters = { acted: readActed(mem), stopped: [], doorbells: [], samples: [] };
    for (let i = 0; i < this.vcpuCount; i++) {
      try {
        const r = readMailbox(mem, i, 1000);
        c.stopped.push(r.stopped);
        c.doorbells.push(r.doorbells);
        c.samples.push(r.samples);
      } catch {
        c.stopped.push(-1);
        c.doorbells.push(-1);
        c.samples.push(-1);
      }
    }
    return c;
  }

  drainGuestReports(): RealGuestReports {
    const mem = this.memory();
    const samples: RealGuestSample[] = [];
    const stopped: number[] = [];
    const doorbells: number[] = [];
    for (let i = 0; i < this.vcpuCount; i++) {
      let r;
      try {
        r = readMailbox(mem, i, 1000);
      } catch {
        stopped.push(-1);
        doorbells.push(-1);
        continue; // mid-sample (a kicked vCPU): its next sample comes with the next drain
      }
      stopped.push(r.stopped);
      doorbells.push(r.doorbells);
      if (r.samples === this.lastSamples[i] || r.record === null) continue;
      this.lastSamples[i] = r.samples;
      samples.push({ vcpu: i, tsc: r.tsc, kvmclockNs: pvclockReadCycles(r.record, r.tsc), flags: r.record.flags });
    }
    const acted = readActed(mem);
    const actedDelta = acted - this.lastActed;
    this.lastActed = acted;
    return { samples, actedDelta, stopped, doorbells };
  }

  async destroy(): Promise<void> {
    const k = this.kvm;
    if (k === null) return;
    this.memCopy = k.guestMemory().slice();
    this.kvm = null;
    this.backend.forget(this);
    await k.close();
  }
}

/** The pvclock records in the real guest's memory, read under their version seqlock. */
function pagesOf(vm: KvmBackedVm): PvclockPages {
  const view = () => {
    const m = vm.memory();
    return new DataView(m.buffer, m.byteOffset, m.byteLength);
  };
  const at = (i: number) => {
    if (!Number.isInteger(i) || i < 0 || i >= vm.vcpuCount) throw invalid("vcpu", `no vCPU ${i} (VM has ${vm.vcpuCount})`);
    return pvclockGpa(i);
  };
  return {
    guestRead(i) {
      const v = view();
      const o = at(i);
      for (let n = 0; n < 100_000; n++) {
        const ver = v.getUint32(o, true);
        if ((ver & 1) !== 0) continue;
        const rec = recordAt(v, o);
        if (v.getUint32(o, true) === ver) return rec;
      }
      throw new TscmigError("unavailable", `pvclock[${i}]: version stayed odd (KVM mid-update)`);
    },
    flags: (i) => view().getUint8(at(i) + 29),
    // The real guest owns the flag (file header): report it, leave it for the guest to clear.
    guestClearStopped: (i) => (view().getUint8(at(i) + 29) & PVCLOCK_GUEST_STOPPED) !== 0,
    copyBytes: () => vm.memory().slice(pvclockGpa(0), pvclockGpa(vm.vcpuCount)),
    loadBytes(bytes) {
      if (vm.running) throw invalid("vm", "loading pvclock records needs the vCPUs paused");
      if (bytes.length !== vm.vcpuCount * PVCLOCK_RECORD_BYTES) throw invalid("pvclock", `must be ${vm.vcpuCount} × 32 bytes`);
      vm.memory().set(bytes, pvclockGpa(0));
    },
  };
}

function recordAt(v: DataView, o: number): PvclockRecord {
  return {
    version: v.getUint32(o, true),
    tscTimestamp: v.getBigUint64(o + 8, true),
    systemTime: v.getBigUint64(o + 16, true),
    tscToSystemMul: BigInt(v.getUint32(o + 24, true)),
    tscShift: v.getInt8(o + 28),
    flags: v.getUint8(o + 29),
  };
}

/** The truth of a live kvm daemon: CLOCK_MONOTONIC, with guest TSCs from the host TSC calibration. */
export function kvmTruth(backend: KvmBackend): TruthProbe {
  const host = backend.host;
  return {
    nowNs: () => host.trueNs(),
    guestTscAt: (vm, i, tNs) => backend.clock.tscAtMono(tNs) + vm.getTscOffset(i),
    hostRealtimeNsAt: (tNs) => host.realtimeNsAt(tNs),
    instantOfGuestTsc: (vm, i, tsc) => backend.clock.monoOfTsc(tsc - vm.getTscOffset(i)),
  };
}

function cpuVendor(): "vmx" | "svm" {
  try {
    return /^vendor_id\s*:\s*AuthenticAMD/m.test(readFileSync("/proc/cpuinfo", "utf8")) ? "svm" : "vmx";
  } catch {
    return "vmx";
  }
}
