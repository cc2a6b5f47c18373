// Guest TSC scaling and the KVM_SET_TSC_KHZ decision. Restates kvm_scale_tsc()/__scale_tsc()
// (mul_u64_u64_shr: 128-bit product, low 64 bits kept), the vendor max_guest_tsc_khz setup,
// adjust_tsc_khz(), set_tsc_khz() and kvm_set_tsc_khz() (arch/x86/kvm/x86.c), with the vendor
// constants of vmx.c / svm.c hardware_setup. Semantics: test/data/vectors/README.md §scale_tsc.json,
// §tsc_ratio.json, §pvclock_read.json (tgt_tsc_khz).

import { kvmError, invalid } from "../errors.js";
import { LIMITS } from "../limits.js";
import { getTimeScale, type TimeScale } from "./time-scale.js";
import { U32_MAX, U64_MAX, checkU64, checkU32 } from "./u64.js";

export type FracBits = 48 | 32;

export interface TscVendor {
  readonly name: "vmx" | "svm";
  /** Fractional bits of the hardware ratio (VMX 48, SVM 32). */
  readonly fracBits: FracBits;
  /** KVM rejects a programmed ratio ≥ this (KVM_VMX_TSC_MULTIPLIER_MAX, SVM_TSC_RATIO_MAX). */
  readonly maxRatio: bigint;
}

export const VMX: TscVendor = Object.freeze({ name: "vmx", fracBits: 48, maxRatio: 0xffff_ffff_ffff_ffffn });
export const SVM: TscVendor = Object.freeze({ name: "svm", fracBits: 32, maxRatio: 0x0000_00ff_ffff_ffffn });

/** The vendor whose hardware ratio has `fracBits` fractional bits. */
export function vendorForFracBits(fracBits: FracBits): TscVendor {
  if (fracBits === 48) return VMX;
  if (fracBits === 32) return SVM;
  throw invalid("fracBits", `must be 48 (VMX) or 32 (SVM), got ${String(fracBits)}`);
}

/** `tsc_tolerance_ppm` module parameter default: within it KVM does not scale ("1/2 of NTP's"). */
export const TSC_TOLERANCE_PPM_DEFAULT = 250;
/** KVM's absolute cap on a guest TSC frequency, in kHz. */
export const GUEST_TSC_KHZ_CAP = 0x7fff_ffffn;

const RATIO_ONE_48 = 1n << 48n;
const RATIO_ONE_32 = 1n << 32n;

/** kvm_caps.default_tsc_scaling_ratio: 1.0 in the vendor's fixed point, i.e. 2^fracBits. */
export function defaultRatio(fracBits: FracBits): bigint {
  if (fracBits === 48) return RATIO_ONE_48;
  if (fracBits === 32) return RATIO_ONE_32;
  throw invalid("fracBits", `must be 48 or 32, got ${String(fracBits)}`);
}

/**
 * kvm_scale_tsc(tsc, ratio): `floor(tsc * ratio / 2^fracBits) mod 2^64` from the exact 128-bit
 * product (truncation toward zero; a true value ≥ 2^64 keeps its low 64 bits, never saturates).
 * The default ratio returns `tsc` without multiplying, as the kernel does (same value).
 */
export function scaleTsc(tsc: bigint, ratio: bigint, fracBits: FracBits): bigint {
  if (fracBits !== 48 && fracBits !== 32) throw invalid("fracBits", `must be 48 or 32, got ${String(fracBits)}`);
  const one = fracBits === 48 ? RATIO_ONE_48 : RATIO_ONE_32;
  if (!(tsc >= 0n && tsc <= U64_MAX)) throw invalid("tsc", `must be a u64, got ${tsc}`);
  if (!(ratio >= 0n && ratio <= U64_MAX)) throw invalid("ratio", `must be a u64, got ${ratio}`);
  if (ratio === one) return tsc;
  return ((tsc * ratio) >> (fracBits === 48 ? 48n : 32n)) & U64_MAX;
}

/** Whether scaleTsc takes the kernel's identity shortcut (ratio == 2^fracBits). */
export function isIdentityRatio(ratio: bigint, fracBits: FracBits): boolean {
  return ratio === defaultRatio(fracBits);
}

/** Whether the exact `tsc * ratio >> fracBits` is ≥ 2^64, so scaleTsc returns only its low 64 bits. */
export function scaleTscTruncates(tsc: bigint, ratio: bigint, fracBits: FracBits): boolean {
  checkU64(tsc, "tsc");
  checkU64(ratio, "ratio");
  return (tsc * ratio) >> BigInt(fracBits) > U64_MAX;
}

/**
 * The ratio set_tsc_khz() computes: `floor(2^fracBits * userKhz / hostKhz)` from an exact
 * intermediate (mul_u64_u32_div, `mulq; divq`). Truncates toward zero, so the guest runs at most
 * one ratio unit slow. May exceed 2^64 only for pairs KVM refuses earlier (userKhz ≥ max guest kHz).
 */
export function tscRatio(userKhz: bigint, hostKhz: bigint, fracBits: FracBits): bigint {
  checkU32(userKhz, "userKhz");
  checkHostKhz(hostKhz);
  return (defaultRatio(fracBits) * userKhz) / hostKhz;
}

/** set_tsc_khz()'s acceptance test for a computed ratio: non-zero and below the vendor maximum. */
export function tscRatioValid(ratio: bigint, vendor: TscVendor): boolean {
  return ratio !== 0n && ratio < vendor.maxRatio;
}

/**
 * max_guest_tsc_khz = min(0x7fffffff, __scale_tsc(maxRatio, hostKhz)): the first frequency
 * KVM_SET_TSC_KHZ refuses when hardware scaling exists (the test is `user >= max`).
 */
export function maxGuestTscKhz(hostKhz: bigint, vendor: TscVendor): bigint {
  checkHostKhz(hostKhz);
  const scaled = ((hostKhz * vendor.maxRatio) >> BigInt(vendor.fracBits)) & U64_MAX;
  return scaled < GUEST_TSC_KHZ_CAP ? scaled : GUEST_TSC_KHZ_CAP;
}

export interface TscThresholds {
  loKhz: bigint;
  hiKhz: bigint;
}

/**
 * adjust_tsc_khz(hostKhz, ∓ppm): `floor(hostKhz * (10^6 ∓ ppm) / 10^6)` kept as a u32, the band
 * inside which KVM programs the default ratio instead of scaling.
 */
export function tscThresholds(hostKhz: bigint, tolerancePpm: number = TSC_TOLERANCE_PPM_DEFAULT): TscThresholds {
  checkHostKhz(hostKhz);
  if (!Number.isInteger(tolerancePpm) || tolerancePpm < 0 || tolerancePpm > 1_000_000) {
    throw invalid("tolerancePpm", `must be an integer in [0, 1000000], got ${tolerancePpm}`);
  }
  const ppm = BigInt(tolerancePpm);
  return {
    loKhz: ((hostKhz * (1_000_000n - ppm)) / 1_000_000n) & U32_MAX,
    hiKhz: ((hostKhz * (1_000_000n + ppm)) / 1_000_000n) & U32_MAX,
  };
}

export interface SetTscKhzRequest {
  /** The ioctl argument (u32); 0 means "the host's rate". */
  userKhzArg: bigint;
  /** The host kernel's tsc_khz. */
  hostKhz: bigint;
  vendor: TscVendor;
  /** kvm_caps.has_tsc_control: the CPU can scale the guest TSC in hardware. */
  hostHasScaling: boolean;
  tolerancePpm?: number;
}

export interface SetTscKhzDecision {
  /** The guest's nominal TSC kHz (what KVM_GET_TSC_KHZ reports): arg, or hostKhz when arg is 0. */
  effectiveKhz: bigint;
  /** The ratio programmed into the vCPU: the default 2^frac within tolerance, else `computedRatio`. */
  ratio: bigint;
  /** floor(2^frac * effectiveKhz / hostKhz), whether or not it is programmed. */
  computedRatio: bigint;
  thresholds: TscThresholds;
  withinTolerance: boolean;
  /** True when a non-default ratio is programmed (the guest TSC runs at a rate other than the host's). */
  scaled: boolean;
  /** (virtual_tsc_shift, virtual_tsc_mult) = getTimeScale(effectiveKhz * 1000, 10^9): ns → guest cycles. */
  virtualScale: TimeScale;
}

const OP = "KVM_SET_TSC_KHZ";
const FIELD = "guestTscKhz";

/**
 * The vCPU KVM_SET_TSC_KHZ ioctl: KVM's decision order, throwing `EINVAL` (field `guestTscKhz`)
 * where the kernel does.
 * 1. With hardware scaling, `arg >= maxGuestTscKhz` is refused before anything else.
 * 2. arg 0 becomes the host rate; the virtual ns→cycles scale is derived.
 * 3. Within ±tolerance of the host rate the **default** ratio is programmed: the guest TSC then runs
 *    at the host rate even though its nominal kHz differs (up to 250 ppm by default).
 * 4. Otherwise, with scaling: program `computedRatio` if it is non-zero and below the vendor max,
 *    else EINVAL. Without scaling (`hostHasScaling: false`): the kernel would accept a faster guest
 *    through software catch-up (tsc_always_catchup) and refuse a slower one; catch-up is not
 *    emulated, so both are refused with EINVAL naming the missing hardware scaling.
 */
export function setTscKhzDecision(req: SetTscKhzRequest): SetTscKhzDecision {
  const { vendor, hostHasScaling } = req;
  const userKhzArg = checkU32(req.userKhzArg, FIELD);
  const hostKhz = checkHostKhz(req.hostKhz);
  if (hostHasScaling) {
    const max = maxGuestTscKhz(hostKhz, vendor);
    if (userKhzArg >= max) {
      throw kvmError(
        "EINVAL",
        OP,
        `guest TSC ${userKhzArg} kHz is at or above max_guest_tsc_khz = min(0x7fffffff, host ${hostKhz} kHz × the ${vendor.name} ratio maximum) = ${max} kHz: this host accepts ${LIMITS.tscKhzMin}..${max - 1n} kHz`,
        FIELD,
      );
    }
  }
  const effectiveKhz = userKhzArg === 0n ? hostKhz : userKhzArg;
  const virtualScale = getTimeScale(effectiveKhz * 1000n, 1_000_000_000n);
  const thresholds = tscThresholds(hostKhz, req.tolerancePpm);
  const withinTolerance = thresholds.loKhz <= effectiveKhz && effectiveKhz <= thresholds.hiKhz;
  const computedRatio = tscRatio(effectiveKhz, hostKhz, vendor.fracBits);
  if (withinTolerance) {
    const ratio = defaultRatio(vendor.fracBits);
    return { effectiveKhz, ratio, computedRatio, thresholds, withinTolerance, scaled: false, virtualScale };
  }
  if (!hostHasScaling) {
    throw kvmError(
      "EINVAL",
      OP,
      `guest TSC ${effectiveKhz} kHz is outside ±${req.tolerancePpm ?? TSC_TOLERANCE_PPM_DEFAULT} ppm of the host's ${hostKhz} kHz and the host has no TSC scaling: this host accepts ${thresholds.loKhz}..${thresholds.hiKhz} kHz`,
      FIELD,
    );
  }
  if (!tscRatioValid(computedRatio, vendor)) {
    throw kvmError("EINVAL", OP, `ratio ${computedRatio} for ${effectiveKhz} kHz on a ${hostKhz} kHz host is 0 or ≥ the ${vendor.name} maximum ${vendor.maxRatio}`, FIELD);
  }
  return { effectiveKhz, ratio: computedRatio, computedRatio, thresholds, withinTolerance, scaled: true, virtualScale };
}

/**
 * The guest TSC kHz kvm_guest_time_update() builds the pvclock scale from:
 * kvm_scale_tsc(hostKhz, ratio), replaced by 1 if that is 0.
 */
export function guestTgtTscKhz(hostKhz: bigint, ratio: bigint, fracBits: FracBits): bigint {
  const khz = scaleTsc(checkHostKhz(hostKhz), ratio, fracBits);
  return khz === 0n ? 1n : khz;
}

function checkHostKhz(hostKhz: bigint): bigint {
  if (typeof hostKhz !== "bigint" || hostKhz < 1n || hostKhz > U32_MAX) {
    throw invalid("hostTscKhz", `must be a u32 bigint ≥ 1, got ${String(hostKhz)}`);
  }
  return hostKhz;
}
