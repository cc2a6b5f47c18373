// The true epoch: the wall-clock instant (ns since the Unix epoch) of CLOCK_MONOTONIC's zero, which
// turns true time (the kernel's monotonic clock, docs/time-across-migration.md#the-time-model) into
// true realtime. Every daemon checked against one truth must use the same value: the launcher that
// starts them pins it (TSCMIG_TRUE_EPOCH_NS); a daemon started alone measures it.
//
// Why not /proc/stat `btime`: it is CLOCK_REALTIME − CLOCK_BOOTTIME truncated to whole seconds, so a
// kernel realtime offset near a second boundary (ours sat 70 ms above one) flips it by a full second
// when the offset moves across it, and two daemons started on either side of that move disagree
// about realtime by 1 s. Node has no sub-millisecond realtime read, but its millisecond read (the
// kernel's realtime floored to the ms) ticks at an exact millisecond boundary: catching a tick between
// two monotonic reads brackets realtime − monotonic to the width of that bracket (µs, not 1 s). The
// reads themselves are the platform module's (shared/platform), handed in as EpochClocks.

import { invalid } from "../errors.js";

/** The two clock reads the measurement takes (the platform module's monotonic and millisecond realtime reads in production). */
export interface EpochClocks {
  monotonicNs(): bigint;
  realtimeMs(): number;
}

/** Ticks of the millisecond clock to catch; the narrowest bracket wins (a preempted read only widens one). */
export const EPOCH_TICKS = 3;
/** Give up catching ticks after this much monotonic time (a realtime clock that stands still). */
export const EPOCH_BUDGET_NS = 20_000_000n;

const MS_NS = 1_000_000n;

/**
 * realtime − monotonic, ns: the midpoint of the narrowest bracket around a tick of `realtimeMs`,
 * taken over up to `EPOCH_TICKS` ticks within `EPOCH_BUDGET_NS`. Without any tick in the budget,
 * one millisecond read (the error is then below 1 ms).
 */
export function measureEpochNs(c: EpochClocks): bigint {
  let best: { lowNs: bigint; highNs: bigint } | null = null;
  let ticks = 0;
  const startNs = c.monotonicNs();
  let beforeNs = startNs;
  let ms = c.realtimeMs();
  while (ticks < EPOCH_TICKS) {
    const a = c.monotonicNs();
    const next = c.realtimeMs();
    const b = c.monotonicNs();
    if (next > ms) {
      // Realtime reached `next` ms after the previous read (after `beforeNs`) and before this one (before `b`).
      const atNs = BigInt(next) * MS_NS;
      const bracket = { lowNs: atNs - b, highNs: atNs - beforeNs };
      if (!best || bracket.highNs - bracket.lowNs < best.highNs - best.lowNs) best = bracket;
      ticks++;
    }
    ms = next; // a step back is no tick: catch the next one from here
    beforeNs = a;
    if (b - startNs > EPOCH_BUDGET_NS) break;
  }
  if (!best) return BigInt(c.realtimeMs()) * MS_NS - c.monotonicNs();
  return best.lowNs + (best.highNs - best.lowNs) / 2n;
}

/**
 * Largest pinned epoch (2^62 ns, in 2116). Realtime is the epoch plus true time plus skew, and the
 * wire carries it and the guest's wall offset in 64 bits (the offset signed): an epoch near 2^64 made
 * every realtime overflow, so each migration failed to encode its probe. Below 2^62 a century of
 * uptime still fits the signed range, as Linux's own 64-bit realtime does until 2262.
 */
export const TRUE_EPOCH_NS_MAX = 1n << 62n;

/** A pinned epoch as the environment carries it: decimal ns since the Unix epoch, at most TRUE_EPOCH_NS_MAX. */
export function parseTrueEpochNs(text: string, field: string): bigint {
  if (!/^\d{1,20}$/.test(text)) throw invalid(field, `must be a decimal count of ns since the Unix epoch, not ${JSON.stringify(text.slice(0, 40))}`);
  const v = BigInt(text);
  if (v > TRUE_EPOCH_NS_MAX) throw invalid(field, `must be at most ${TRUE_EPOCH_NS_MAX} (2^62 ns, in 2116), not ${text}`);
  return v;
}
