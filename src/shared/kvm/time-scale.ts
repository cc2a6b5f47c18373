// The 32.32 fixed-point scale pair (shift, mul) that converts counts of one frequency into another.
// Restates kvm_get_time_scale() (arch/x86/kvm/x86.c, with div_frac = one `divl`) and
// pvclock_scale_delta() (arch/x86/include/asm/pvclock.h, `mulq; shrd $32` on x86-64).
// Semantics: test/data/vectors/README.md §time_scale.json and §scale_delta.json.

import { invalid } from "../errors.js";
import { U32_MAX, U64_MAX, checkU64 } from "./u64.js";

export interface TimeScale {
  /** Pre-shift applied to the count: `<< shift` when positive, `>> -shift` when negative (an s8). */
  readonly shift: number;
  /** 32.32 fixed-point multiplier; a u32 held in a bigint. */
  readonly mul: bigint;
}

/** Largest input frequency accepted: keeps `2 * scaledHz` inside u64 so the kernel loop ends. */
const HZ_LIMIT = 0x8000_0000_0000_0000n;
const BIT31 = 0x8000_0000n;

/**
 * kvm_get_time_scale(scaledHz, baseHz): picks `(shift, mul)` so that
 * `x_scaled ≈ ((x_base shifted by shift) * mul) >> 32`. Rounding: every step truncates, so the
 * scale is at most one unit low (`one_second_of_base_in_scaled_units` is usually scaledHz − 1).
 * Both frequencies must be in [1, 2^63); the kernel loops forever on 0.
 */
export function getTimeScale(scaledHz: bigint, baseHz: bigint): TimeScale {
  let inner = memo.get(scaledHz);
  const hit = inner?.get(baseHz);
  if (hit !== undefined) return hit;
  const computed = computeTimeScale(scaledHz, baseHz);
  if (memoEntries >= MEMO_ENTRIES_MAX) {
    memo.clear();
    memoEntries = 0;
    inner = undefined;
  }
  if (inner === undefined) {
    inner = new Map();
    memo.set(scaledHz, inner);
  }
  inner.set(baseHz, computed);
  memoEntries++;
  return computed;
}

// Called for every vCPU clock update with a handful of distinct frequencies per host, so a small
// cache answers almost every call. Bounded: when full it is emptied (simpler than LRU, and a miss
// costs only a few dozen bigint steps).
const MEMO_ENTRIES_MAX = 256;
const memo = new Map<bigint, Map<bigint, TimeScale>>();
let memoEntries = 0;

function computeTimeScale(scaledHz: bigint, baseHz: bigint): TimeScale {
  checkHz(scaledHz, "scaledHz");
  checkHz(baseHz, "baseHz");
  let shift = 0;
  let tps64 = baseHz;
  let scaled64 = scaledHz;
  // Bring the base below 2^32 and below twice the target (scaled64 * 2 cannot wrap: < 2^64).
  while (tps64 > scaled64 * 2n || tps64 > U32_MAX) {
    tps64 >>= 1n;
    shift--;
  }
  // Now make the (32-bit) base exceed the target, halving the target or doubling the base.
  let tps32 = tps64;
  while (tps32 <= scaled64 || scaled64 > U32_MAX) {
    if (scaled64 > U32_MAX || (tps32 & BIT31) !== 0n) scaled64 >>= 1n;
    else tps32 = (tps32 << 1n) & U32_MAX;
    shift++;
  }
  // div_frac: (scaled64 << 32) / tps32 with scaled64 < tps32, so the quotient fits 32 bits.
  return Object.freeze({ shift, mul: (scaled64 << 32n) / tps32 });
}

function checkHz(x: bigint, field: string): void {
  if (typeof x !== "bigint" || x < 1n || x >= HZ_LIMIT) {
    throw invalid(field, `must be a bigint in [1, 2^63), got ${String(x)}`);
  }
}

// Shift amounts as bigints, indexed by shift + 128 (the s8 range), so the hot path converts nothing.
const SHIFT_BIG: readonly bigint[] = Array.from({ length: 256 }, (_, i) => BigInt(Math.abs(i - 128)));

/**
 * pvclock_scale_delta(delta, mul, shift): `d = shift < 0 ? delta >> -shift : (delta << shift) mod 2^64`,
 * then `(d * mul) >> 32` from the full 96-bit product. Truncates (rounds toward zero); bits shifted
 * out on the left are lost, exactly as in the guest (see `shiftOverflows`). `shift` is an s8;
 * |shift| ≥ 64 yields 0 (every bit shifted out), which the kernel never produces.
 */
export function scaleDelta(delta: bigint, mul: bigint, shift: number): bigint {
  const amount = SHIFT_BIG[shift + 128];
  if (amount === undefined) throw invalid("shift", `must be an integer in [-128, 127], got ${shift}`);
  if (!(delta >= 0n && delta <= U64_MAX)) throw invalid("delta", `must be a u64, got ${delta}`);
  if (!(mul >= 0n && mul <= U32_MAX)) throw invalid("mul", `must be a u32, got ${mul}`);
  const d = shift < 0 ? delta >> amount : (delta << amount) & U64_MAX;
  return (d * mul) >> 32n; // < 2^96 >> 32, so already a u64
}

/** True when scaleDelta's left pre-shift pushes set bits out of the 64-bit word. */
export function shiftOverflows(delta: bigint, shift: number): boolean {
  checkU64(delta, "delta");
  if (shift <= 0 || delta === 0n) return false;
  return delta << BigInt(shift) > U64_MAX;
}
