// Fixed-width integer views over `bigint`, as the kernel's u64/s64/u32 C types behave: every
// arithmetic result is reduced mod 2^width (wrap, never saturate). Restates the implicit C
// conversions used throughout arch/x86/kvm/x86.c and arch/x86/include/asm/pvclock.h.

import { invalid } from "../errors.js";

export const U64_MAX = 0xffff_ffff_ffff_ffffn;
export const U32_MAX = 0xffff_ffffn;
export const S64_MIN = -0x8000_0000_0000_0000n;
export const S64_MAX = 0x7fff_ffff_ffff_ffffn;
export const TWO_POW_64 = 0x1_0000_0000_0000_0000n;

/** `x mod 2^64`, the value a C `u64` holds after any arithmetic producing `x`. */
export function u64(x: bigint): bigint {
  return BigInt.asUintN(64, x);
}

/** Reinterprets the low 64 bits of `x` as a two's-complement `s64`. */
export function s64(x: bigint): bigint {
  return BigInt.asIntN(64, x);
}

/** `x mod 2^32`, a C `u32`. */
export function u32(x: bigint): bigint {
  return BigInt.asUintN(32, x);
}

export function isU64(x: unknown): x is bigint {
  return typeof x === "bigint" && x >= 0n && x <= U64_MAX;
}

export function isU32(x: unknown): x is bigint {
  return typeof x === "bigint" && x >= 0n && x <= U32_MAX;
}

/** Rejects anything but an integer in [0, 2^64), naming `field`. */
export function checkU64(x: unknown, field: string): bigint {
  if (!isU64(x)) throw invalid(field, `must be a u64 bigint, got ${describe(x)}`);
  return x;
}

/** Rejects anything but an integer in [0, 2^32) held in a bigint, naming `field`. */
export function checkU32(x: unknown, field: string): bigint {
  if (!isU32(x)) throw invalid(field, `must be a u32 bigint, got ${describe(x)}`);
  return x;
}

/** Rejects anything but a JS integer number in [lo, hi], naming `field`. */
export function checkInt(x: unknown, lo: number, hi: number, field: string): number {
  if (typeof x !== "number" || !Number.isInteger(x) || x < lo || x > hi) {
    throw invalid(field, `must be an integer in [${lo}, ${hi}], got ${describe(x)}`);
  }
  return x;
}

function describe(x: unknown): string {
  if (typeof x === "bigint") return `${x}n`;
  if (typeof x === "string") return JSON.stringify(x);
  return String(x);
}
