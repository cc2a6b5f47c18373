// A second hypervisor backend for tests: wraps another backend and records every call made at the
// seam, in order. Its VMs are not the wrapped backend's objects and have nothing but the members of
// `HypervisorVm`: code that reached past the seam (a cast to the emulated VM, its host, its raw
// arrays) would fail on them, so a migration that completes on this backend used the seam alone.

import type { HostClockPair, HostInfo, HypervisorBackend, HypervisorVm, KvmClockData, PvclockPages, VmSpec, VmState } from "../../src/shared/hypervisor/backend.js";
import type { PvclockRecord } from "../../src/shared/kvm/pvclock.js";
import type { VmclockPage } from "../../src/shared/kvm/vmclock.js";

/** One call at the seam: which backend, which VM (its creation index), which operation. */
export interface SeamCall {
  backend: string;
  vm: number;
  op: string;
}

export class RecordingBackend implements HypervisorBackend {
  readonly name: string;
  readonly calls: SeamCall[] = [];
  readonly vms: RecordingVm[] = [];
  private readonly inner: HypervisorBackend;

  constructor(name: string, inner: HypervisorBackend) {
    this.name = name;
    this.inner = inner;
  }

  get hostInfo(): HostInfo {
    return this.inner.hostInfo;
  }

  createVm(spec: VmSpec): HypervisorVm {
    return this.track("createVm", this.inner.createVm(spec));
  }

  restoreVm(state: VmState): HypervisorVm {
    return this.track("restoreVm", this.inner.restoreVm(state));
  }

  /** The operations made on VM `vm`, in order. */
  opsOf(vm: number): string[] {
    return this.calls.filter((c) => c.vm === vm).map((c) => c.op);
  }

  private track(op: string, inner: HypervisorVm): RecordingVm {
    const index = this.vms.length;
    this.calls.push({ backend: this.name, vm: index, op });
    const vm = new RecordingVm(inner, (o) => this.calls.push({ backend: this.name, vm: index, op: o }));
    this.vms.push(vm);
    return vm;
  }
}

export class RecordingVm implements HypervisorVm {
  readonly pvclock: PvclockPages;
  private readonly inner: HypervisorVm;
  private readonly note: (op: string) => void;

  constructor(inner: HypervisorVm, note: (op: string) => void) {
    this.inner = inner;
    this.note = note;
    const p = inner.pvclock;
    this.pvclock = {
      guestRead: (i) => p.guestRead(i),
      flags: (i) => p.flags(i),
      guestClearStopped: (i) => p.guestClearStopped(i),
      copyBytes: () => (note("pvclock.copyBytes"), p.copyBytes()),
      loadBytes: (b) => (note("pvclock.loadBytes"), p.loadBytes(b)),
    };
  }

  get vcpuCount(): number {
    return this.inner.vcpuCount;
  }
  get hostInfo(): HostInfo {
    return this.inner.hostInfo;
  }
  get guestTscKhz(): bigint {
    return this.inner.guestTscKhz;
  }
  get running(): boolean {
    return this.inner.running;
  }
  getClock(): KvmClockData {
    this.note("getClock");
    return this.inner.getClock();
  }
  setClock(data: { clock: bigint; flags: number; realtime: bigint }): { advancedClock: bigint } {
    this.note("setClock");
    return this.inner.setClock(data);
  }
  setClockGuest(record: PvclockRecord): void {
    this.note("setClockGuest");
    this.inner.setClockGuest(record);
  }
  getClockGuest(): PvclockRecord {
    this.note("getClockGuest");
    return this.inner.getClockGuest();
  }
  hostClocks(): HostClockPair {
    this.note("hostClocks");
    return this.inner.hostClocks();
  }
  hostRawNsOfTsc(hostTsc: bigint): bigint {
    return this.inner.hostRawNsOfTsc(hostTsc);
  }
  getTscOffset(vcpu: number): bigint {
    return this.inner.getTscOffset(vcpu);
  }
  setTscOffset(vcpu: number, offset: bigint): void {
    this.note("setTscOffset");
    this.inner.setTscOffset(vcpu, offset);
  }
  setTscOffsetAll(offset: bigint): void {
    this.note("setTscOffsetAll");
    this.inner.setTscOffsetAll(offset);
  }
  getTscRatio(vcpu: number): bigint {
    return this.inner.getTscRatio(vcpu);
  }
  getTscScale(vcpu: number): { ratio: bigint; fracBits: number } {
    return this.inner.getTscScale(vcpu);
  }
  getTscKhz(vcpu: number): bigint {
    return this.inner.getTscKhz(vcpu);
  }
  setTscKhz(vcpu: number, khz: bigint): void {
    this.note("setTscKhz");
    this.inner.setTscKhz(vcpu, khz);
  }
  kvmclockEnabled(vcpu: number): boolean {
    return this.inner.kvmclockEnabled(vcpu);
  }
  guestEnableKvmclock(): void {
    this.note("guestEnableKvmclock");
    this.inner.guestEnableKvmclock();
  }
  kvmclockCtrl(vcpu: number): void {
    this.note("kvmclockCtrl");
    this.inner.kvmclockCtrl(vcpu);
  }
  readGuestTsc(vcpu: number): bigint {
    return this.inner.readGuestTsc(vcpu);
  }
  pause(): void {
    this.note("pause");
    this.inner.pause();
  }
  resume(): void {
    this.note("resume");
    this.inner.resume();
  }
  vmclock(): VmclockPage {
    return this.inner.vmclock();
  }
  updateVmclock(mutate: (page: VmclockPage) => void): void {
    this.note("updateVmclock");
    this.inner.updateVmclock(mutate);
  }
  loadVmclock(page: VmclockPage): void {
    this.note("loadVmclock");
    this.inner.loadVmclock(page);
  }
  exportState(): VmState {
    return this.inner.exportState();
  }
}
