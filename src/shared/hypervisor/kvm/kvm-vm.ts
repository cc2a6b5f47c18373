// A real KVM VM running the project's own guest (guest.S): memory, vCPUs, the vCPU threads, the
// clock and TSC ioctls, the doorbell, and capture of memory and registers into a fresh VM. Its
// clock/TSC methods have the shape of the hypervisor seam (`VmBackend`: getClock, setClock,
// getTscOffset, setTscOffset, kvmclockCtrl, readGuestTsc, pause, resume), so it can stand behind
// it once the seam is what capture and restore are written against.
//
// Threads: vCPU ioctls (KVM_KVMCLOCK_CTRL, the TSC attribute, registers, MSRs) take the vCPU's
// mutex, which KVM_RUN holds; they are made while the VM is paused (`requirePaused`), never racing
// a run. KVM_INTERRUPT must come from the thread that runs the vCPU: the doorbell is handed to it.

import { Worker } from "node:worker_threads";
import { invalid, TscmigError } from "../../errors.js";
import { LIMITS } from "../../limits.js";
import { koffiPath, MAP_ANONYMOUS, MAP_NORESERVE, MAP_PRIVATE, MAP_SHARED, PROT_READ, PROT_WRITE, type Pointer } from "../../platform/libc.js";
import { PVCLOCK_RECORD_BYTES, decodePvclock, type PvclockRecord } from "../../kvm/pvclock.js";
import {
  decodeClockData,
  decodeMsrs,
  decodeRegs,
  encodeClockData,
  encodeDeviceAttr,
  encodeMemoryRegion,
  encodeMsrs,
  encodeRegs,
  IOCTLS,
  KVM_EXIT,
  KVM_REGS,
  KVM_SREGS,
  KVM_VCPU_TSC_CTRL,
  KVM_VCPU_TSC_OFFSET,
  MSR_IA32_TSC,
  MSR_KVM_SYSTEM_TIME_NEW,
  type ClockData,
  type Regs,
  setRealModeSegment,
} from "./abi.js";
import { ioctlError, type KvmSystem } from "./device.js";
import { type GuestProgram, initialState, installGuest, LAYOUT, pvclockGpa, readActed, readMailbox, type GuestReport } from "./guest.js";
import { checkSetClock, type SetClockGuard, type SetClockRequest } from "./set-clock-guard.js";
import { CMD, CTL, controlWords, HISTOGRAM_BUCKETS, T, THREAD_STATE, threadBase, TIMING_WORDS, TM, V, vcpuBase, vcpuThreadSource, type VcpuThreadData } from "./vcpu-thread.js";

export interface KvmVmOptions {
  vcpus: number;
  /** vCPU threads (each runs vCPUs i ≡ t mod threads). Default min(vcpus, 2). */
  threads?: number;
  /** Pause between a thread's rounds of samples, µs. Default 1000; 0 samples back to back. */
  paceUs?: number;
  /**
   * How long pause() waits for a thread to stop on its own (between runs, so the guest is at its HLT
   * with a whole sample published) before kicking it out of KVM_RUN wherever the guest is, µs.
   * Default 500000: the guest HLTs every few tens of µs, so only a stuck guest needs the kick; a
   * host too busy to schedule the vCPU thread would not be helped by it, and a kicked vCPU can be
   * left mid-sample (its mailbox unreadable until it runs again).
   */
  kickAfterUs?: number;
  /** How long pause() waits in all, ms. Default 5000. */
  pauseTimeoutMs?: number;
  /** The kick signal is SIGRTMIN + this. Default 6. */
  signalOffset?: number;
  /** What the vCPUs run (create only): the sampling guest, or a bare HLT loop for timing. */
  program?: GuestProgram;
  /** Started vCPU threads to take instead of starting new ones (VcpuThreadPool); null when none is left. */
  takeThread?: () => Worker | null;
}

/** Per-vCPU counters kept by the vCPU threads. */
export interface VcpuStats {
  runs: number;
  hltExits: number;
  intrExits: number;
  injected: number;
  lastExit: number;
}

/** Time spent inside KVM_RUN for runs that ended in the guest's HLT, measured by the vCPU thread. */
export interface RunTiming {
  runs: number;
  meanNs: number;
  minNs: number;
  maxNs: number;
  /** CLOCK_REALTIME just before the latest KVM_INTERRUPT (0 before the first). */
  injectRealtimeNs: bigint;
}

/** Everything a fresh VM needs to continue this one: memory, registers, kvmclock MSR, clock, TSC. */
export interface KvmVmState {
  vcpus: number;
  memory: Uint8Array;
  regs: Uint8Array[];
  sregs: Uint8Array[];
  /** MSR_KVM_SYSTEM_TIME_NEW per vCPU (GPA | enable bit; 0 when the guest never enabled kvmclock). */
  systemTimeMsr: bigint[];
  tscOffset: bigint[];
  /** Guest TSC per vCPU (MSR_IA32_TSC) read just after the clock. */
  guestTsc: bigint[];
  clock: ClockData;
}

/** What a fresh VM is rebuilt from (the clock is the caller's to set). */
export type KvmRestoreState = Pick<KvmVmState, "vcpus" | "memory" | "regs" | "sregs" | "systemTimeMsr">;

const DEFAULT_PACE_US = 1000;
const DEFAULT_KICK_AFTER_US = 500_000;
const DEFAULT_PAUSE_TIMEOUT_MS = 5000;
const DEFAULT_SIGNAL_OFFSET = 6;
const TSS_ADDR = 0xfffb_d000;

export class KvmVm {
  readonly vcpuCount: number;
  readonly sys: KvmSystem;
  readonly vmFd: number;
  private readonly memPtr: Pointer;
  private readonly mem: Uint8Array;
  private readonly scratchPtr: Pointer;
  private readonly scratch: DataView;
  private readonly scratchAddr: bigint;
  private readonly vcpuFds: number[] = [];
  private readonly runPtrs: Pointer[] = [];
  private readonly runPages: Uint8Array[] = [];
  private readonly runBytes: number;
  private readonly threadCount: number;
  private readonly ctl: Int32Array;
  private readonly timingBlock: BigInt64Array;
  private readonly opts: Required<Omit<KvmVmOptions, "vcpus" | "program" | "takeThread">>;
  private readonly takeThread: (() => Worker | null) | undefined;
  private workers: Worker[] = [];
  private workerErrors: Error[] = [];
  private isRunning = false;
  private closed = false;

  private constructor(sys: KvmSystem, opts: KvmVmOptions) {
    const vcpus = opts.vcpus;
    if (!Number.isInteger(vcpus) || vcpus < 1 || vcpus > Math.min(LIMITS.vcpuCountMax, LAYOUT.vcpusMax))
      throw invalid("vcpus", `must be an integer in 1..${Math.min(LIMITS.vcpuCountMax, LAYOUT.vcpusMax)}`);
    this.opts = {
      threads: Math.min(vcpus, opts.threads ?? 2),
      paceUs: opts.paceUs ?? DEFAULT_PACE_US,
      kickAfterUs: opts.kickAfterUs ?? DEFAULT_KICK_AFTER_US,
      pauseTimeoutMs: opts.pauseTimeoutMs ?? DEFAULT_PAUSE_TIMEOUT_MS,
      signalOffset: opts.signalOffset ?? DEFAULT_SIGNAL_OFFSET,
    };
    if (!Number.isInteger(this.opts.threads) || this.opts.threads < 1 || this.opts.threads > 64) throw invalid("threads", "must be an integer in 1..64");
    if (!Number.isInteger(this.opts.paceUs) || this.opts.paceUs < 0 || this.opts.paceUs > 1_000_000) throw invalid("paceUs", "must be an integer in 0..1000000");
    this.sys = sys;
    this.takeThread = opts.takeThread;
    this.vcpuCount = vcpus;
    this.threadCount = this.opts.threads;
    this.runBytes = sys.vcpuMmapBytes();
    this.ctl = new Int32Array(new SharedArrayBuffer(controlWords(this.threadCount, vcpus) * 4));
    this.timingBlock = new BigInt64Array(new SharedArrayBuffer((vcpus * TIMING_WORDS + HISTOGRAM_BUCKETS) * 8));
    for (let v = 0; v < vcpus; v++) this.ctl[vcpuBase(this.threadCount, v) + V.pending] = -1;
    this.vmFd = sys.call(sys.fd, "KVM_CREATE_VM", 0);
    const c = sys.libc;
    const mp = c.mmap(LAYOUT.memoryBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    const sp = c.mmap(4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mp === null || sp === null) {
      const errno = c.errno();
      if (mp !== null) c.munmap(mp, LAYOUT.memoryBytes);
      if (sp !== null) c.munmap(sp, 4096);
      c.close(this.vmFd);
      throw ioctlError("mmap", errno, "guest memory");
    }
    this.memPtr = mp;
    this.mem = new Uint8Array(c.view(mp, LAYOUT.memoryBytes));
    this.scratchPtr = sp;
    this.scratch = new DataView(c.view(sp, 4096));
    this.scratchAddr = c.address(sp);
  }

  /** A new VM with the guest installed and every vCPU at the guest's entry, paused. */
  static create(sys: KvmSystem, opts: KvmVmOptions): KvmVm {
    const vm = new KvmVm(sys, opts);
    try {
      vm.setup();
      installGuest(vm.mem, vm.vcpuCount);
      for (let i = 0; i < vm.vcpuCount; i++) vm.setInitialRegisters(i, opts.program ?? "sample");
    } catch (e) {
      vm.release();
      throw e;
    }
    return vm;
  }

  /** A fresh VM holding `state`'s memory, registers and kvmclock MSRs, paused; the clock is the caller's. */
  static restore(sys: KvmSystem, state: KvmRestoreState, opts: Omit<KvmVmOptions, "vcpus"> = {}): KvmVm {
    checkState(state);
    const vm = new KvmVm(sys, { ...opts, vcpus: state.vcpus });
    try {
      vm.setup();
      vm.mem.set(state.memory);
      for (let i = 0; i < vm.vcpuCount; i++) {
        const fd = vm.vcpuFds[i] as number;
        sys.callBuf(fd, "KVM_SET_SREGS", state.sregs[i] as Uint8Array);
        sys.callBuf(fd, "KVM_SET_REGS", state.regs[i] as Uint8Array);
        const msr = state.systemTimeMsr[i] as bigint;
        if (msr !== 0n) vm.setMsr(i, MSR_KVM_SYSTEM_TIME_NEW, msr);
      }
    } catch (e) {
      vm.release();
      throw e;
    }
    return vm;
  }

  private setup(): void {
    const sys = this.sys;
    sys.callBuf(
      this.vmFd,
      "KVM_SET_USER_MEMORY_REGION",
      encodeMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0n, memorySize: BigInt(LAYOUT.memoryBytes), userspaceAddr: sys.libc.address(this.memPtr) }),
    );
    // Real mode on VMX without unrestricted guest needs a TSS area; harmless elsewhere.
    sys.libc.ioctl(this.vmFd, IOCTLS.KVM_SET_TSS_ADDR, TSS_ADDR);
    for (let i = 0; i < this.vcpuCount; i++) {
      const fd = sys.call(this.vmFd, "KVM_CREATE_VCPU", i);
      this.vcpuFds.push(fd);
      const run = sys.libc.mmap(this.runBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (run === null) throw ioctlError("mmap(kvm_run)", sys.libc.errno());
      this.runPtrs.push(run);
      this.runPages.push(new Uint8Array(sys.libc.view(run, this.runBytes)));
    }
  }

  private setInitialRegisters(i: number, program: GuestProgram): void {
    const fd = this.vcpuFds[i] as number;
    const s = initialState(i, program);
    const sregs = new Uint8Array(KVM_SREGS.size);
    this.sys.callBuf(fd, "KVM_GET_SREGS", sregs);
    setRealModeSegment(sregs, "cs", s.segments.cs);
    setRealModeSegment(sregs, "ds", s.segments.ds);
    setRealModeSegment(sregs, "es", s.segments.es);
    setRealModeSegment(sregs, "fs", s.segments.fs);
    setRealModeSegment(sregs, "gs", 0);
    setRealModeSegment(sregs, "ss", s.segments.ss);
    this.sys.callBuf(fd, "KVM_SET_SREGS", sregs);
    const regs = decodeRegs(new Uint8Array(KVM_REGS.size));
    regs.rip = s.rip;
    regs.rsp = s.rsp;
    regs.rdi = s.rdi;
    regs.rflags = s.rflags;
    this.sys.callBuf(fd, "KVM_SET_REGS", encodeRegs(regs));
  }

  get running(): boolean {
    return this.isRunning;
  }

  get threads(): number {
    return this.threadCount;
  }

  // ---- the seam's clock and TSC operations -----------------------------------------------------

  /** KVM_GET_CLOCK. REALTIME and HOST_TSC are set only once a vCPU has run (master clock). */
  getClock(): ClockData {
    this.live();
    const buf = new Uint8Array(48);
    this.sys.callBuf(this.vmFd, "KVM_GET_CLOCK", buf);
    return decodeClockData(buf);
  }

  /**
   * KVM_SET_CLOCK after `checkSetClock`: nothing reaches the kernel that would step kvmclock back
   * below `guard.floorNs`, wrap it, or jump it further forward than `guard.maxForwardNs`. Without a
   * guard the floor is the VM's kvmclock now and the jump is bounded by the blackout limit.
   */
  setClock(req: SetClockRequest, guard?: Partial<SetClockGuard>): { expectedClockNs: bigint } {
    this.live();
    const nowRealtimeNs = guard?.nowRealtimeNs ?? this.sys.libc.clockNs(0);
    const floorNs = guard?.floorNs ?? this.getClock().clock;
    const expectedClockNs = checkSetClock(req, { floorNs, nowRealtimeNs, maxForwardNs: guard?.maxForwardNs ?? LIMITS.blackoutNsMax });
    this.sys.callBuf(this.vmFd, "KVM_SET_CLOCK", encodeClockData({ ...req, hostTsc: 0n }));
    return { expectedClockNs };
  }

  /** KVM_GET_DEVICE_ATTR(KVM_VCPU_TSC_CTRL, KVM_VCPU_TSC_OFFSET). */
  getTscOffset(i: number): bigint {
    const fd = this.vcpuFd(i);
    this.scratch.setBigUint64(0, 0n, true);
    this.sys.callBuf(fd, "KVM_GET_DEVICE_ATTR", encodeDeviceAttr({ group: KVM_VCPU_TSC_CTRL, attr: BigInt(KVM_VCPU_TSC_OFFSET), addr: this.scratchAddr }));
    return this.scratch.getBigUint64(0, true);
  }

  /** KVM_SET_DEVICE_ATTR(KVM_VCPU_TSC_OFFSET). Some hosts accept and ignore it: see offsetsHonoured(). */
  setTscOffset(i: number, offset: bigint): void {
    if (offset < 0n || offset > 0xffff_ffff_ffff_ffffn) throw invalid("tscOffset", "must be a u64");
    const fd = this.vcpuFd(i);
    this.requirePaused("KVM_SET_DEVICE_ATTR(TSC_OFFSET)");
    this.scratch.setBigUint64(0, offset, true);
    this.sys.callBuf(fd, "KVM_SET_DEVICE_ATTR", encodeDeviceAttr({ group: KVM_VCPU_TSC_CTRL, attr: BigInt(KVM_VCPU_TSC_OFFSET), addr: this.scratchAddr }));
  }

  /** KVM_HAS_DEVICE_ATTR(KVM_VCPU_TSC_OFFSET) on vCPU i: whether the kernel knows the attribute. */
  hasTscOffsetAttribute(i = 0): boolean {
    const r = this.sys.tryBuf(this.vcpuFd(i), "KVM_HAS_DEVICE_ATTR", encodeDeviceAttr({ group: KVM_VCPU_TSC_CTRL, attr: BigInt(KVM_VCPU_TSC_OFFSET), addr: 0n }));
    return r.ok;
  }

  /** KVM_KVMCLOCK_CTRL: PVCLOCK_GUEST_STOPPED appears in vCPU i's record at its next entry. */
  kvmclockCtrl(i: number): void {
    const fd = this.vcpuFd(i);
    this.requirePaused("KVM_KVMCLOCK_CTRL");
    this.sys.call(fd, "KVM_KVMCLOCK_CTRL", 0);
  }

  /** The guest TSC of vCPU i now (MSR_IA32_TSC through KVM_GET_MSRS: offset and scaling applied). */
  readGuestTsc(i: number): bigint {
    return this.getMsr(i, MSR_IA32_TSC);
  }

  /** KVM_GET_TSC_KHZ of vCPU i. */
  getTscKhz(i: number): bigint {
    return BigInt(this.sys.call(this.vcpuFd(i), "KVM_GET_TSC_KHZ", 0));
  }

  getMsr(i: number, index: number): bigint {
    const buf = encodeMsrs([{ index, data: 0n }]);
    const n = this.sys.callBuf(this.vcpuFd(i), "KVM_GET_MSRS", buf);
    if (n !== 1) throw new TscmigError("unimplemented", `KVM_GET_MSRS: MSR 0x${index.toString(16)} not readable on this host`);
    return (decodeMsrs(buf)[0] as { data: bigint }).data;
  }

  setMsr(i: number, index: number, data: bigint): void {
    const n = this.sys.callBuf(this.vcpuFd(i), "KVM_SET_MSRS", encodeMsrs([{ index, data }]));
    if (n !== 1) throw invalid("msr", `KVM_SET_MSRS refused MSR 0x${index.toString(16)} = 0x${data.toString(16)}`);
  }

  // ---- running ---------------------------------------------------------------------------------

  /** Lets every vCPU run (starting the vCPU threads the first time). */
  resume(): void {
    this.live();
    this.throwIfFailed();
    if (this.workers.length === 0) this.startThreads();
    this.command(CMD.run);
    this.isRunning = true;
  }

  /** Stops every vCPU and returns once none is inside KVM_RUN (kicking threads that do not stop). */
  pause(): void {
    this.live();
    this.command(CMD.pause);
    this.isRunning = false;
    if (this.workers.length === 0) return;
    this.waitAcks(Atomics.load(this.ctl, CTL.seq));
  }

  /** Queues the doorbell (a KVM_INTERRUPT of the guest's vector) for vCPU i's next entry. */
  ringDoorbell(i = 0): void {
    this.vcpuFd(i);
    Atomics.store(this.ctl, vcpuBase(this.threadCount, i) + V.pending, LAYOUT.doorbellVector);
    this.wakeThreads();
  }

  /** Whether vCPU i still has a doorbell waiting to be injected. */
  doorbellPending(i = 0): boolean {
    return Atomics.load(this.ctl, vcpuBase(this.threadCount, i) + V.pending) >= 0;
  }

  stats(i: number): VcpuStats {
    this.vcpuFd(i);
    const b = vcpuBase(this.threadCount, i);
    return {
      runs: Atomics.load(this.ctl, b + V.runs),
      hltExits: Atomics.load(this.ctl, b + V.hlt),
      intrExits: Atomics.load(this.ctl, b + V.intr),
      injected: Atomics.load(this.ctl, b + V.injected),
      lastExit: Atomics.load(this.ctl, b + V.lastExit),
    };
  }

  timing(i: number): RunTiming {
    this.vcpuFd(i);
    const t = i * TIMING_WORDS;
    const runs = Number(this.timingBlock[t + TM.runs]);
    return {
      runs,
      meanNs: runs === 0 ? 0 : Number(this.timingBlock[t + TM.sumNs]) / runs,
      minNs: Number(this.timingBlock[t + TM.minNs]),
      maxNs: Number(this.timingBlock[t + TM.maxNs]),
      injectRealtimeNs: this.timingBlock[t + TM.injectRealtimeNs] as bigint,
    };
  }

  /** Percentiles (ns, 1 µs resolution) of every vCPU's HLT-ended KVM_RUN durations so far. */
  runPercentiles(ps: readonly number[]): number[] {
    const at = this.vcpuCount * TIMING_WORDS;
    const counts = Array.from({ length: HISTOGRAM_BUCKETS }, (_, b) => Number(Atomics.load(this.timingBlock, at + b)));
    const total = counts.reduce((a, b) => a + b, 0);
    return ps.map((p) => {
      let seen = 0;
      for (let b = 0; b < counts.length; b++) {
        seen += counts[b] as number;
        if (total > 0 && seen >= p * total) return (b + 1) * 1000;
      }
      return 0;
    });
  }

  /**
   * Resolves once vCPU i has completed at least `runs` KVM_RUN calls in all, or rejects after
   * `timeoutMs` of real time. A run can end before the guest did anything (an interrupt window, a
   * kick): to wait for whole samples, use waitForHlts.
   */
  async waitForRuns(i: number, runs: number, timeoutMs = 5000): Promise<void> {
    await this.waitForCounter(i, V.runs, runs, timeoutMs, "runs");
  }

  /** Resolves once vCPU i's guest has HLTed `hlts` times in all: with the sampling guest, each HLT ends a whole sample. */
  async waitForHlts(i: number, hlts: number, timeoutMs = 5000): Promise<void> {
    await this.waitForCounter(i, V.hlt, hlts, timeoutMs, "HLT exits");
  }

  private async waitForCounter(i: number, word: number, target: number, timeoutMs: number, what: string): Promise<void> {
    this.vcpuFd(i);
    const base = vcpuBase(this.threadCount, i);
    const start = this.sys.libc.clockNs(1);
    for (;;) {
      this.throwIfFailed();
      const runs = Atomics.load(this.ctl, base + V.runs);
      const now = Atomics.load(this.ctl, base + word);
      if (now >= target) return;
      const leftMs = timeoutMs - Number(this.sys.libc.clockNs(1) - start) / 1e6;
      if (leftMs <= 0) throw new TscmigError("deadline_exceeded", `vCPU ${i}: ${now} of ${target} ${what} after ${timeoutMs} ms (is the VM running?)`);
      // The thread notifies the run counter after every run, whatever ended it.
      await waitAsync(this.ctl, base + V.runs, runs, Math.min(leftMs, 50));
    }
  }

  /**
   * Blocks this thread until vCPU i completed `runs` KVM_RUN calls in all (the vCPU threads run
   * them; this only waits), for at most `timeoutMs`. For the short waits a synchronous caller needs
   * (a guest's boot, a resume's first entry); returns whether the count was reached.
   */
  waitRunsSync(i: number, runs: number, timeoutMs: number): boolean {
    return this.waitCounterSync(i, V.runs, runs, timeoutMs);
  }

  /** The same for the guest's HLTs (with the sampling guest, each ends a whole sample). */
  waitHltsSync(i: number, hlts: number, timeoutMs: number): boolean {
    return this.waitCounterSync(i, V.hlt, hlts, timeoutMs);
  }

  private waitCounterSync(i: number, word: number, target: number, timeoutMs: number): boolean {
    this.vcpuFd(i);
    const base = vcpuBase(this.threadCount, i);
    const start = this.sys.libc.clockNs(1);
    for (;;) {
      this.throwIfFailed();
      const runs = Atomics.load(this.ctl, base + V.runs);
      if (Atomics.load(this.ctl, base + word) >= target) return true;
      const leftMs = timeoutMs - Number(this.sys.libc.clockNs(1) - start) / 1e6;
      if (leftMs <= 0) return false;
      Atomics.wait(this.ctl, base + V.runs, runs, Math.min(leftMs, 5));
    }
  }

  /** The guest's memory itself (no copy): valid until close(); the guest writes it while running. */
  guestMemory(): Uint8Array {
    this.live();
    return this.mem;
  }

  /** vCPU i's mailbox: the guest's latest sample, its stop and doorbell counts. */
  report(i: number): GuestReport {
    this.vcpuFd(i);
    return readMailbox(this.mem, i);
  }

  /** How many stops the guest acted on, VM-wide (one per pause, whichever vCPU saw it first). */
  acted(): number {
    this.live();
    return readActed(this.mem);
  }

  /** vCPU i's pvclock record as it sits in guest memory now. */
  pvclock(i: number): PvclockRecord {
    this.vcpuFd(i);
    return decodePvclock(this.mem, pvclockGpa(i), `pvclock[${i}]`);
  }

  /** A copy of `length` bytes of guest memory at `gpa`. */
  readMemory(gpa: number, length: number): Uint8Array {
    this.live();
    if (!Number.isInteger(gpa) || !Number.isInteger(length) || gpa < 0 || length < 0 || gpa + length > LAYOUT.memoryBytes)
      throw invalid("gpa", `range ${gpa}+${length} is outside guest memory`);
    return this.mem.slice(gpa, gpa + length);
  }

  /** Memory, registers, kvmclock MSRs, TSC offsets and one KVM_GET_CLOCK; the VM must be paused. */
  capture(): KvmVmState {
    this.requirePaused("capture");
    const regs: Uint8Array[] = [];
    const sregs: Uint8Array[] = [];
    const systemTimeMsr: bigint[] = [];
    const tscOffset: bigint[] = [];
    const guestTsc: bigint[] = [];
    for (let i = 0; i < this.vcpuCount; i++) {
      const fd = this.vcpuFd(i);
      const r = new Uint8Array(KVM_REGS.size);
      this.sys.callBuf(fd, "KVM_GET_REGS", r);
      const s = new Uint8Array(KVM_SREGS.size);
      this.sys.callBuf(fd, "KVM_GET_SREGS", s);
      regs.push(r);
      sregs.push(s);
      systemTimeMsr.push(this.getMsr(i, MSR_KVM_SYSTEM_TIME_NEW));
      tscOffset.push(this.getTscOffset(i));
    }
    const clock = this.getClock();
    for (let i = 0; i < this.vcpuCount; i++) guestTsc.push(this.readGuestTsc(i));
    return { vcpus: this.vcpuCount, memory: this.mem.slice(), regs, sregs, systemTimeMsr, tscOffset, guestTsc, clock };
  }

  /** Stops the threads, unmaps every mapping and closes every fd. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    Atomics.store(this.ctl, CTL.command, CMD.exit);
    this.wakeThreads();
    const exits = this.workers.map((w) => new Promise<void>((resolve) => (w.threadId === -1 ? resolve() : w.once("exit", () => resolve()))));
    for (let t = 0; t < this.workers.length; t++) this.kick(t);
    await Promise.all(exits);
    this.workers = [];
    this.release();
  }

  private release(): void {
    const c = this.sys.libc;
    for (let i = 0; i < this.runPtrs.length; i++) c.munmap(this.runPtrs[i], this.runBytes);
    this.runPtrs.length = 0;
    for (const fd of this.vcpuFds) c.close(fd);
    this.vcpuFds.length = 0;
    c.munmap(this.memPtr, LAYOUT.memoryBytes);
    c.munmap(this.scratchPtr, 4096);
    c.close(this.vmFd);
    this.closed = true;
  }

  // ---- vCPU threads ----------------------------------------------------------------------------

  private startThreads(): void {
    Atomics.store(this.ctl, CTL.paceUs, this.opts.paceUs);
    const signal = this.sys.libc.sigrtmin() + this.opts.signalOffset;
    const path = koffiPath();
    for (let t = 0; t < this.threadCount; t++) {
      const vcpus: number[] = [];
      for (let v = t; v < this.vcpuCount; v += this.threadCount) vcpus.push(v);
      const data: VcpuThreadData = {
        koffiPath: path,
        ctl: this.ctl,
        timing: this.timingBlock,
        histogramAt: this.vcpuCount * TIMING_WORDS,
        thread: t,
        threads: this.threadCount,
        vcpus,
        fds: vcpus.map((v) => this.vcpuFds[v] as number),
        runMmapBytes: this.runBytes,
        signal,
        KVM_RUN: IOCTLS.KVM_RUN,
        KVM_INTERRUPT: IOCTLS.KVM_INTERRUPT,
        KVM_SET_SIGNAL_MASK: IOCTLS.KVM_SET_SIGNAL_MASK,
        EXIT_HLT: KVM_EXIT.HLT,
        EXIT_IRQ_WINDOW_OPEN: KVM_EXIT.IRQ_WINDOW_OPEN,
      };
      const pooled = this.takeThread?.() ?? null;
      const w = pooled ?? new Worker(vcpuThreadSource(), { eval: true, workerData: data });
      if (pooled !== null) {
        pooled.ref(); // a VM's thread keeps the process alive until close, as a new one does
        pooled.postMessage(data);
      }
      w.on("error", (e) => this.workerErrors.push(e));
      this.workers.push(w);
    }
  }

  private command(cmd: number): void {
    Atomics.store(this.ctl, CTL.command, cmd);
    Atomics.add(this.ctl, CTL.seq, 1);
    this.wakeThreads();
  }

  private wakeThreads(): void {
    Atomics.add(this.ctl, CTL.wake, 1);
    Atomics.notify(this.ctl, CTL.wake);
  }

  /** Waits (on this thread: pause is synchronous) until every vCPU thread acknowledged `seq`. */
  private waitAcks(seq: number): void {
    const c = this.sys.libc;
    const start = c.clockNs(1);
    const kickAfterNs = BigInt(this.opts.kickAfterUs) * 1000n;
    const deadlineNs = BigInt(this.opts.pauseTimeoutMs) * 1_000_000n;
    const kicked = new Set<number>();
    for (let t = 0; t < this.threadCount; t++) {
      const at = threadBase(t);
      for (;;) {
        this.throwIfFailed();
        const ack = Atomics.load(this.ctl, at + T.ack);
        if (ack === seq) break;
        const waitedNs = c.clockNs(1) - start;
        if (waitedNs > deadlineNs) throw new TscmigError("deadline_exceeded", `pause: vCPU thread ${t} did not stop within ${this.opts.pauseTimeoutMs} ms`);
        if (waitedNs > kickAfterNs && !kicked.has(t) && Atomics.load(this.ctl, at + T.tid) !== 0) {
          this.kick(t);
          kicked.add(t);
        }
        Atomics.wait(this.ctl, at + T.ack, ack, 0.2);
      }
    }
  }

  /** immediate_exit on the vCPU the thread runs, then the signal that breaks KVM_RUN. */
  private kick(t: number): void {
    const at = threadBase(t);
    const tid = Atomics.load(this.ctl, at + T.tid);
    const state = Atomics.load(this.ctl, at + T.state);
    if (tid === 0 || state === THREAD_STATE.exited || state === THREAD_STATE.failed) return;
    Atomics.store(this.ctl, at + T.forced, Atomics.load(this.ctl, CTL.seq));
    const v = Atomics.load(this.ctl, at + T.current);
    if (v >= 0) (this.runPages[v] as Uint8Array)[1] = 1;
    this.sys.libc.tgkill(tid, this.sys.libc.sigrtmin() + this.opts.signalOffset);
  }

  private throwIfFailed(): void {
    const e = this.workerErrors[0];
    if (e !== undefined) throw new TscmigError("internal", `vCPU thread failed: ${e.message}`);
    for (let t = 0; t < this.threadCount; t++) {
      const at = threadBase(t);
      if (Atomics.load(this.ctl, at + T.state) !== THREAD_STATE.failed) continue;
      const errno = Atomics.load(this.ctl, at + T.errno);
      const v = Atomics.load(this.ctl, at + T.failedVcpu);
      if (errno < 0) throw new TscmigError("internal", `vCPU ${v}: unexpected exit ${-errno} (the guest crashed or KVM refused it)`);
      throw ioctlError(`KVM_RUN (vCPU ${v})`, errno);
    }
  }

  // ---- checks ----------------------------------------------------------------------------------

  private live(): void {
    if (this.closed) throw new TscmigError("failed_precondition", "VM is closed");
  }

  private vcpuFd(i: number): number {
    this.live();
    if (!Number.isInteger(i) || i < 0 || i >= this.vcpuCount) throw invalid("vcpu", `no vCPU ${i} (VM has ${this.vcpuCount})`);
    return this.vcpuFds[i] as number;
  }

  private requirePaused(op: string): void {
    if (this.isRunning) throw new TscmigError("failed_precondition", `${op} needs the VM paused`);
  }
}

/** Atomics.waitAsync (V8 has it; the ES2022 lib this project compiles against does not declare it). */
function waitAsync(a: Int32Array, index: number, value: number, timeoutMs: number): Promise<unknown> {
  const w = (Atomics as unknown as { waitAsync(a: Int32Array, i: number, v: number, t: number): { value: unknown } }).waitAsync(a, index, value, timeoutMs);
  return Promise.resolve(w.value);
}

function checkState(s: KvmRestoreState): void {
  if (!Number.isInteger(s.vcpus) || s.vcpus < 1 || s.vcpus > LAYOUT.vcpusMax) throw invalid("state.vcpus", `must be in 1..${LAYOUT.vcpusMax}`);
  if (!(s.memory instanceof Uint8Array) || s.memory.length !== LAYOUT.memoryBytes) throw invalid("state.memory", `must be ${LAYOUT.memoryBytes} bytes`);
  for (const [name, col, size] of [["regs", s.regs, KVM_REGS.size], ["sregs", s.sregs, KVM_SREGS.size]] as const) {
    if (col.length !== s.vcpus) throw invalid(`state.${name}`, `has ${col.length} entries for ${s.vcpus} vCPUs`);
    col.forEach((b, i) => {
      if (!(b instanceof Uint8Array) || b.length !== size) throw invalid(`state.${name}[${i}]`, `must be ${size} bytes`);
    });
  }
  if (s.systemTimeMsr.length !== s.vcpus) throw invalid("state.systemTimeMsr", `has ${s.systemTimeMsr.length} entries for ${s.vcpus} vCPUs`);
  s.systemTimeMsr.forEach((m, i) => {
    const gpa = m & ~1n;
    if (m !== 0n && (gpa + BigInt(PVCLOCK_RECORD_BYTES) > BigInt(LAYOUT.memoryBytes) || gpa % 4n !== 0n)) throw invalid(`state.systemTimeMsr[${i}]`, "record outside guest memory");
  });
}

export type { Regs };
