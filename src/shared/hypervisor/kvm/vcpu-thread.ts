// The vCPU threads: KVM_RUN blocks, so it never runs on the event loop. Each VM gets a few worker
// threads; each owns a fixed set of vCPUs and runs them round-robin (a run lasts until the guest's
// HLT, tens of µs), so 1024 vCPUs need neither 1024 threads nor 1024 V8 isolates.
//
// The thread body is `vcpuThreadMain`, started with its source text (`eval` worker): it must not
// use anything from this module's scope, and it loads its own koffi instance from the path given.
// The main thread steers it through a shared Int32Array (layout below, CTL_*):
//
//   main                                     vCPU thread
//   command = PAUSE; seq++; wake++  ───────► sees PAUSE before/after a KVM_RUN: ack = seq, notify,
//   wait for ack == seq                      sleep on `wake`
//   (after kickAfter: immediate_exit = 1,    ◄── tgkill(SIGRTMIN+n): KVM_RUN returns EINTR; the signal
//    tgkill the thread)                          is blocked outside KVM_RUN (KVM_SET_SIGNAL_MASK opens
//                                                it only inside), so it can never kill the process
//   command = RUN; seq++; wake++  ──────────► runs its vCPUs, then sleeps on `wake` for `pace`
//   doorbell: pending[v] = vector; wake++ ──► KVM_INTERRUPT before vCPU v's next KVM_RUN
//   command = EXIT; wake++  ────────────────► unmaps its kvm_run pages and returns
//
// Sleeping on `wake` with a timeout is the vCPU's idle time between samples (a halted CPU waiting
// for its timer), the only real-time wait of the backend.

/** Words of the control block. */
export const CTL = {
  command: 0,
  wake: 1,
  seq: 2,
  paceUs: 3,
  header: 8,
  /** Per thread: tid, ack, running vCPU (−1 none), state, errno, failed vCPU, forced (seq of a kicked pause), spare. */
  threadWords: 8,
  /** Per vCPU: pending vector (−1 none), completed runs (notified), last exit, HLT exits, EINTR exits, injections, IRQ-window exits, spare. */
  vcpuWords: 8,
} as const;
export const CMD = { pause: 0, run: 1, exit: 2 } as const;
export const THREAD_STATE = { starting: 0, paused: 1, running: 2, exited: 3, failed: 4 } as const;
export const T = { tid: 0, ack: 1, current: 2, state: 3, errno: 4, failedVcpu: 5, forced: 6 } as const;
export const V = { pending: 0, runs: 1, lastExit: 2, hlt: 3, intr: 4, injected: 5, window: 6 } as const;

/** Per vCPU in the timing block (BigInt64Array): timed runs, their total, min and max ns, and the
 * CLOCK_REALTIME of the latest KVM_INTERRUPT. */
export const TIMING_WORDS = 5;
/** A VM-wide histogram of HLT-ended KVM_RUN durations follows the per-vCPU words: 1 µs buckets, the last one open. */
export const HISTOGRAM_BUCKETS = 512;
export const TM = { runs: 0, sumNs: 1, minNs: 2, maxNs: 3, injectRealtimeNs: 4 } as const;

export function controlWords(threads: number, vcpus: number): number {
  return CTL.header + threads * CTL.threadWords + vcpus * CTL.vcpuWords;
}
export function threadBase(t: number): number {
  return CTL.header + t * CTL.threadWords;
}
export function vcpuBase(threads: number, v: number): number {
  return CTL.header + threads * CTL.threadWords + v * CTL.vcpuWords;
}

export interface VcpuThreadData {
  koffiPath: string;
  ctl: Int32Array;
  timing: BigInt64Array;
  /** Index of the run-duration histogram in `timing`. */
  histogramAt: number;
  thread: number;
  threads: number;
  /** The vCPU indices this thread runs, and their fds. */
  vcpus: number[];
  fds: number[];
  runMmapBytes: number;
  signal: number;
  /** Request numbers and constants (the body cannot import them). */
  KVM_RUN: number;
  KVM_INTERRUPT: number;
  KVM_SET_SIGNAL_MASK: number;
  EXIT_HLT: number;
  EXIT_IRQ_WINDOW_OPEN: number;
}

/** The thread body. Self-contained: see the header. */
export function vcpuThreadMain(d: VcpuThreadData): void {
  // An eval worker is CommonJS: its own require loads its own koffi instance.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const koffi = require(d.koffiPath);
  const lib = koffi.load("libc.so.6");
  const ioctlInt = lib.func("int ioctl(int, unsigned long, unsigned long)");
  const ioctlPtr = lib.func("int ioctl(int, unsigned long, void *)");
  const mmap = lib.func("void *mmap(void *, size_t, int, int, int, int64_t)");
  const munmap = lib.func("int munmap(void *, size_t)");
  const gettid = lib.func("int gettid()");
  const sigemptyset = lib.func("int sigemptyset(void *)");
  const sigaddset = lib.func("int sigaddset(void *, int)");
  const pthreadSigmask = lib.func("int pthread_sigmask(int, void *, void *)");
  const sigtimedwait = lib.func("int sigtimedwait(void *, void *, void *)");
  const clockGettime = lib.func("int clock_gettime(int, void *)");
  const ts = new BigInt64Array(2);
  const nowNs = (clock: number): bigint => {
    clockGettime(clock, ts);
    return (ts[0] as bigint) * 1_000_000_000n + (ts[1] as bigint);
  };
  const ctl = d.ctl;
  const tm = d.timing;
  const tb = 8 + d.thread * 8;
  const vb = (v: number) => 8 + d.threads * 8 + v * 8;
  const fail = (vcpu: number, errno: number): void => {
    Atomics.store(ctl, tb + 4, errno);
    Atomics.store(ctl, tb + 5, vcpu);
    Atomics.store(ctl, tb + 3, 4);
    Atomics.notify(ctl, tb + 1);
  };

  // Block the kick signal in this thread; each vCPU unblocks it for the duration of KVM_RUN.
  const set = new Uint8Array(128);
  const old = new Uint8Array(128);
  sigemptyset(set);
  sigaddset(set, d.signal);
  pthreadSigmask(0 /* SIG_BLOCK */, set, old);
  const oldMask = new DataView(old.buffer).getBigUint64(0, true);
  const runMask = new Uint8Array(12);
  new DataView(runMask.buffer).setUint32(0, 8, true);
  new DataView(runMask.buffer).setBigUint64(4, oldMask & ~(1n << BigInt(d.signal - 1)), true);
  const runs: { ptr: unknown; page: Uint8Array; view: DataView }[] = [];
  for (let k = 0; k < d.fds.length; k++) {
    const fd = d.fds[k] as number;
    if (ioctlPtr(fd, d.KVM_SET_SIGNAL_MASK, runMask) !== 0) return fail(d.vcpus[k] as number, koffi.errno());
    const ptr = mmap(null, d.runMmapBytes, 3, 1 /* MAP_SHARED */, fd, 0);
    if (ptr === null || koffi.address(ptr) === (1n << 64n) - 1n) return fail(d.vcpus[k] as number, koffi.errno());
    const ab = koffi.view(ptr, d.runMmapBytes);
    runs.push({ ptr, page: new Uint8Array(ab), view: new DataView(ab) });
  }
  const zero = new BigInt64Array(2);
  const irq = new Uint8Array(4);
  Atomics.store(ctl, tb + 0, gettid());

  const inject = (k: number, v: number, fd: number, base: number): number => {
    const r = runs[k] as { page: Uint8Array; view: DataView };
    const vec = Atomics.load(ctl, base);
    if (vec < 0) return 0;
    if (r.page[12] === 0 /* ready_for_interrupt_injection */) {
      r.page[0] = 1; // request_interrupt_window: exit as soon as the guest can take it
      return 0;
    }
    r.page[0] = 0;
    new DataView(irq.buffer).setUint32(0, vec, true);
    tm[v * 5 + 4] = nowNs(0 /* CLOCK_REALTIME */);
    if (ioctlPtr(fd, d.KVM_INTERRUPT, irq) !== 0) return koffi.errno();
    Atomics.compareExchange(ctl, base, vec, -1);
    Atomics.add(ctl, base + 5, 1);
    return 0;
  };

  // A vCPU is settled when its last run ended at the guest's HLT: its sample is whole. A pause lets
  // unsettled vCPUs run on to their HLT (no doorbell injected meanwhile) unless the main thread
  // forced the stop with a kick (it then writes the pause's seq into the thread's `forced` word).
  const settled = d.fds.map(() => true);
  let stop = false;
  const runOne = (k: number, running: boolean): boolean => {
    const fd = d.fds[k] as number;
    const v = d.vcpus[k] as number;
    const base = vb(v);
    const r = runs[k] as { page: Uint8Array; view: DataView };
    if (running) {
      const injErr = inject(k, v, fd, base);
      if (injErr !== 0) return fail(v, injErr), false;
    } else r.page[0] = 0; // no interrupt window while finishing a sample
    Atomics.store(ctl, tb + 2, v);
    const t0 = nowNs(1 /* CLOCK_MONOTONIC */);
    const rc = ioctlInt(fd, d.KVM_RUN, 0);
    const errno = rc < 0 ? koffi.errno() : 0;
    const dt = nowNs(1) - t0;
    Atomics.store(ctl, tb + 2, -1);
    if (rc < 0) {
      r.page[1] = 0; // immediate_exit served
      if (errno !== 4 /* EINTR */ && errno !== 11 /* EAGAIN */) return fail(v, errno), false;
      while (sigtimedwait(set, null, zero) === d.signal) {
        // drain every pending kick
      }
      settled[k] = false;
      Atomics.add(ctl, base + 4, 1);
    } else {
      const exit = r.view.getUint32(8, true);
      Atomics.store(ctl, base + 2, exit);
      settled[k] = exit === d.EXIT_HLT;
      if (exit === d.EXIT_HLT) {
        const t = v * 5;
        tm[t] = (tm[t] as bigint) + 1n;
        tm[t + 1] = (tm[t + 1] as bigint) + dt;
        if (tm[t] === 1n || dt < (tm[t + 2] as bigint)) tm[t + 2] = dt;
        if (dt > (tm[t + 3] as bigint)) tm[t + 3] = dt;
        const bucket = Number(dt / 1000n);
        Atomics.add(tm, d.histogramAt + (bucket < 511 ? bucket : 511), 1n);
        Atomics.add(ctl, base + 3, 1);
      } else if (exit === d.EXIT_IRQ_WINDOW_OPEN) Atomics.add(ctl, base + 6, 1);
      else return fail(v, -exit), false; // an exit the guest never causes: report it, stop this thread
    }
    Atomics.add(ctl, base + 1, 1);
    Atomics.notify(ctl, base + 1);
    return true;
  };
  while (!stop) {
    const cmd = Atomics.load(ctl, 0);
    const wake = Atomics.load(ctl, 1);
    const seq = Atomics.load(ctl, 2);
    if (cmd === 2) break;
    if (cmd !== 1) {
      const forced = Atomics.load(ctl, tb + 6) === seq;
      const k = forced ? -1 : settled.indexOf(false);
      if (k >= 0) {
        stop = !runOne(k, false);
        continue;
      }
    }
    Atomics.store(ctl, tb + 3, cmd === 1 ? 2 : 1);
    Atomics.store(ctl, tb + 1, seq);
    Atomics.notify(ctl, tb + 1);
    if (cmd !== 1) {
      Atomics.wait(ctl, 1, wake);
      continue;
    }
    for (let k = 0; k < d.fds.length && !stop; k++) {
      if (Atomics.load(ctl, 0) !== 1) break;
      stop = !runOne(k, true);
    }
    if (stop) break;
    const paceUs = Atomics.load(ctl, 3);
    if (paceUs > 0 && Atomics.load(ctl, 0) === 1) Atomics.wait(ctl, 1, wake, paceUs / 1000);
  }
  for (const r of runs) munmap(r.ptr, d.runMmapBytes);
  if (Atomics.load(ctl, tb + 3) !== 4) Atomics.store(ctl, tb + 3, 3);
  Atomics.notify(ctl, tb + 1);
}

/** The source text an `eval` worker runs. */
export function vcpuThreadSource(): string {
  return `(${vcpuThreadMain.toString()})(require("node:worker_threads").workerData)`;
}

/**
 * A vCPU thread started ahead of its VM (a pool: thread start, an isolate and koffi, takes tens of
 * ms, which a migration's destination would otherwise spend inside the blackout): it loads koffi
 * now and runs `vcpuThreadMain` on the VM's data once that arrives as its first message.
 */
export function pooledVcpuThreadSource(): string {
  return `const wt = require("node:worker_threads"); require(wt.workerData.koffiPath).load("libc.so.6"); wt.parentPort.once("message", (d) => (${vcpuThreadMain.toString()})(d));`;
}
