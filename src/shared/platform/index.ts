// The only module that reads real time, randomness and the environment (STYLE 2). Everything else
// receives a Clock, a Scheduler and a Random built here (or simulated ones in tests).

import { randomBytes } from "node:crypto";
import type { Clock, Scheduler, Timer } from "../time/clock.js";
import { measureEpochNs, parseTrueEpochNs } from "../time/epoch.js";
import { SeededRandom } from "../time/random.js";

/** CLOCK_MONOTONIC (shared by every process on the machine, and by containers on one kernel). */
export class RealClock implements Clock {
  monotonicNs(): bigint {
    return process.hrtime.bigint();
  }
  realtimeNs(): bigint {
    return BigInt(Date.now()) * 1_000_000n;
  }
}

export class RealScheduler implements Scheduler {
  after(delayNs: bigint, fn: () => void): Timer {
    const ms = delayNs <= 0n ? 0 : Number(delayNs) / 1e6;
    const handle = setTimeout(fn, ms);
    return { cancel: () => clearTimeout(handle) };
  }
}

/**
 * Runs `fn` after `delayMs` of real time unless the process has exited by then; the timer never
 * keeps the process alive on its own (a hard deadline, e.g. forcing exit when a graceful shutdown
 * hangs).
 */
export function hardDeadline(delayMs: number, fn: () => void): Timer {
  const handle = setTimeout(fn, delayMs);
  handle.unref();
  return { cancel: () => clearTimeout(handle) };
}

/** Read by the daemon: the pid of the launcher it must not outlive (set by client/local-daemons.ts). */
export const PARENT_PID_ENV = "TSCMIG_EXIT_WITH_PARENT";

/**
 * Calls `onGone` once when this process's parent is no longer `parentPid` (it exited, however it
 * died: the kernel re-parents the orphan), polling every `periodMs`. The timer never keeps the
 * process alive on its own.
 */
export function watchParent(parentPid: number, onGone: () => void, periodMs = 500): Timer {
  const handle = setInterval(() => {
    if (process.ppid === parentPid) return;
    clearInterval(handle);
    onGone();
  }, periodMs);
  handle.unref();
  return { cancel: () => clearInterval(handle) };
}

/** CPU time this process has used so far, user and system, every thread (workers, V8's GC and compiler threads), ns. */
export function processCpuNs(): bigint {
  const u = process.cpuUsage();
  return BigInt(u.user + u.system) * 1000n;
}

/** A Random seeded from the OS, or from `seed` when given (replays). */
export function realRandom(seed?: bigint): SeededRandom {
  return new SeededRandom(seed ?? randomBytes(8).readBigUInt64LE());
}

/** Read by trueEpochNs(); the daemons' configuration loader accepts it as a known `TSCMIG_*` variable. */
export const TRUE_EPOCH_ENV = "TSCMIG_TRUE_EPOCH_NS";

let measuredEpochNs: bigint | null = null;

/**
 * The wall-clock instant (ns since the Unix epoch) of CLOCK_MONOTONIC's zero: true realtime is
 * this plus true time. TSCMIG_TRUE_EPOCH_NS when set (a launcher starting several daemons pins one
 * value for all, so they agree on true realtime exactly and any disagreement between their emulated
 * hosts is injected skew only); otherwise realtime − monotonic measured once per process to a few
 * µs (time/epoch.ts), so daemons on one kernel started apart agree to within what the kernel's
 * realtime was stepped between their starts. Not /proc/stat `btime`: whole seconds, it puts two
 * daemons 1 s apart whenever the kernel's offset moves across a second boundary.
 * Throws invalid_argument on a malformed TSCMIG_TRUE_EPOCH_NS (an empty one counts as unset).
 */
export function trueEpochNs(): bigint {
  const fromEnv = process.env[TRUE_EPOCH_ENV];
  if (fromEnv !== undefined && fromEnv !== "") return parseTrueEpochNs(fromEnv, TRUE_EPOCH_ENV);
  measuredEpochNs ??= measureEpochNs({ monotonicNs: () => process.hrtime.bigint(), realtimeMs: () => Date.now() });
  return measuredEpochNs;
}

export function env(): NodeJS.ProcessEnv {
  return process.env;
}

export function platform(): { clock: RealClock; scheduler: RealScheduler; random: SeededRandom } {
  return { clock: new RealClock(), scheduler: new RealScheduler(), random: realRandom() };
}

/**
 * The absolute deadline grpc-js wants (a Date on the wall clock) for a call that may take
 * `timeoutNs`. grpc-js turns it straight back into a relative `grpc-timeout` header, so the wall
 * clock only carries the duration across its API. Rounded up to the next millisecond, so a
 * positive timeout never becomes an already-expired deadline.
 */
export function grpcDeadlineAfterNs(timeoutNs: bigint): Date {
  const timeoutMs = timeoutNs <= 0n ? 0n : (timeoutNs + 999_999n) / 1_000_000n;
  return new Date(Date.now() + Number(timeoutMs));
}
