// Production code sees time only through these interfaces (STYLE 2, after TigerBeetle's time.zig).
// `Clock` is the *true* reference of a deployment: on one machine, the kernel's CLOCK_MONOTONIC
// shared by every process, or a simulated clock that moves only when told. Emulated hosts derive
// their TSC and realtime from it through offset models; nothing else reads time.

export interface Clock {
  /** True time: nanoseconds on the deployment's shared monotonic reference. Never decreases. */
  monotonicNs(): bigint;
  /** Wall-clock stamp for logs and reports (ns since the Unix epoch); never used for arithmetic. */
  realtimeNs(): bigint;
}

export interface Timer {
  cancel(): void;
}

export interface Scheduler {
  /** Runs `fn` once, `delayNs` of true time from now. */
  after(delayNs: bigint, fn: () => void): Timer;
}

export const NS_PER_US = 1_000n;
export const NS_PER_MS = 1_000_000n;
export const NS_PER_S = 1_000_000_000n;

/** Waits `delayNs` on the given scheduler (simulated or real). */
export function sleep(scheduler: Scheduler, delayNs: bigint): Promise<void> {
  return new Promise((resolve) => {
    scheduler.after(delayNs, resolve);
  });
}
