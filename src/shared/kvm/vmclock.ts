// The vmclock page, `struct vmclock_abi` (include/uapi/linux/vmclock-abi.h, plus the
// NOTIFICATION_PRESENT flag of the 2025-26 notification series), the time computation of
// vmclock_get_crosststamp() (drivers/ptp/ptp_vmclock.c) and the page's seq_count seqlock.
// Semantics: shared/reference/kvm-time.md §5, test/data/vectors/README.md §vmclock_read.json.

import { TscmigError, assert, invalid, kvmError } from "../errors.js";
import { U64_MAX, checkInt, checkU64 } from "./u64.js";

export const VMCLOCK_MAGIC = 0x4b4c_4356; // "VCLK"
export const VMCLOCK_VERSION = 1;
/** offsetof(pad): the smallest region a host may expose. */
export const VMCLOCK_MIN_SIZE = 32;
/** Region size covering every field through time_maxerror_nanosec (what we require). */
export const VMCLOCK_SIZE_WITHOUT_GEN_COUNTER = 104;
/** sizeof(struct vmclock_abi) with vm_generation_counter: what encodeVmclock emits. */
export const VMCLOCK_STRUCT_BYTES = 112;

export const VMCLOCK_COUNTER_ARM_VCNT = 0;
export const VMCLOCK_COUNTER_X86_TSC = 1;
export const VMCLOCK_COUNTER_INVALID = 0xff;

export const VMCLOCK_TIME_UTC = 0;
export const VMCLOCK_TIME_TAI = 1;
export const VMCLOCK_TIME_MONOTONIC = 2;
export const VMCLOCK_TIME_INVALID_SMEARED = 3;
export const VMCLOCK_TIME_INVALID_MAYBE_SMEARED = 4;

export const VMCLOCK_FLAG_TAI_OFFSET_VALID = 1n << 0n;
export const VMCLOCK_FLAG_DISRUPTION_SOON = 1n << 1n;
export const VMCLOCK_FLAG_DISRUPTION_IMMINENT = 1n << 2n;
export const VMCLOCK_FLAG_PERIOD_ESTERROR_VALID = 1n << 3n;
export const VMCLOCK_FLAG_PERIOD_MAXERROR_VALID = 1n << 4n;
export const VMCLOCK_FLAG_TIME_ESTERROR_VALID = 1n << 5n;
export const VMCLOCK_FLAG_TIME_MAXERROR_VALID = 1n << 6n;
export const VMCLOCK_FLAG_TIME_MONOTONIC = 1n << 7n;
export const VMCLOCK_FLAG_VM_GEN_COUNTER_PRESENT = 1n << 8n;
export const VMCLOCK_FLAG_NOTIFICATION_PRESENT = 1n << 9n;

export const VMCLOCK_STATUS_UNKNOWN = 0;
export const VMCLOCK_STATUS_INITIALIZING = 1;
export const VMCLOCK_STATUS_SYNCHRONIZED = 2;
export const VMCLOCK_STATUS_FREERUNNING = 3;
export const VMCLOCK_STATUS_UNRELIABLE = 4;

export const VMCLOCK_SMEARING_STRICT = 0;
export const VMCLOCK_SMEARING_NOON_LINEAR = 1;
export const VMCLOCK_SMEARING_UTC_SLS = 2;

export const VMCLOCK_LEAP_NONE = 0;
export const VMCLOCK_LEAP_PRE_POS = 1;
export const VMCLOCK_LEAP_PRE_NEG = 2;
export const VMCLOCK_LEAP_POS = 3;
export const VMCLOCK_LEAP_POST_POS = 4;
export const VMCLOCK_LEAP_POST_NEG = 5;

/** Every field of struct vmclock_abi except the zero padding. */
export interface VmclockPage {
  magic: number; // u32 @0
  size: number; // u32 @4, size of the region holding the struct
  version: number; // u16 @8
  counterId: number; // u8 @10
  timeType: number; // u8 @11
  seqCount: number; // u32 @12, odd while the host updates
  disruptionMarker: bigint; // u64 @16
  flags: bigint; // u64 @24
  clockStatus: number; // u8 @34
  leapSecondSmearingHint: number; // u8 @35
  taiOffsetSec: number; // s16 @36
  leapIndicator: number; // u8 @38
  counterPeriodShift: number; // u8 @39
  counterValue: bigint; // u64 @40
  counterPeriodFracSec: bigint; // u64 @48, unit 2^-(64+shift) s
  counterPeriodEsterrorRateFracSec: bigint; // u64 @56
  counterPeriodMaxerrorRateFracSec: bigint; // u64 @64
  timeSec: bigint; // u64 @72
  timeFracSec: bigint; // u64 @80, unit 2^-64 s
  timeEsterrorNanosec: bigint; // u64 @88
  timeMaxerrorNanosec: bigint; // u64 @96
  vmGenerationCounter: bigint; // u64 @104, present when size ≥ 112
}

/** A fresh page as a host publishes it before its first calibration (x86 TSC counter, UTC). */
export function newVmclockPage(): VmclockPage {
  return {
    magic: VMCLOCK_MAGIC,
    size: VMCLOCK_STRUCT_BYTES,
    version: VMCLOCK_VERSION,
    counterId: VMCLOCK_COUNTER_X86_TSC,
    timeType: VMCLOCK_TIME_UTC,
    seqCount: 0,
    disruptionMarker: 0n,
    flags: VMCLOCK_FLAG_VM_GEN_COUNTER_PRESENT,
    clockStatus: VMCLOCK_STATUS_UNKNOWN,
    leapSecondSmearingHint: VMCLOCK_SMEARING_STRICT,
    taiOffsetSec: 0,
    leapIndicator: VMCLOCK_LEAP_NONE,
    counterPeriodShift: 0,
    counterValue: 0n,
    counterPeriodFracSec: 0n,
    counterPeriodEsterrorRateFracSec: 0n,
    counterPeriodMaxerrorRateFracSec: 0n,
    timeSec: 0n,
    timeFracSec: 0n,
    timeEsterrorNanosec: 0n,
    timeMaxerrorNanosec: 0n,
    vmGenerationCounter: 0n,
  };
}

const U64_FIELDS = [
  ["disruptionMarker", 16],
  ["flags", 24],
  ["counterValue", 40],
  ["counterPeriodFracSec", 48],
  ["counterPeriodEsterrorRateFracSec", 56],
  ["counterPeriodMaxerrorRateFracSec", 64],
  ["timeSec", 72],
  ["timeFracSec", 80],
  ["timeEsterrorNanosec", 88],
  ["timeMaxerrorNanosec", 96],
] as const;
const OFF_PAD = 32;
const OFF_VM_GEN = 104;

const COUNTER_IDS: readonly number[] = [VMCLOCK_COUNTER_ARM_VCNT, VMCLOCK_COUNTER_X86_TSC, VMCLOCK_COUNTER_INVALID];

/**
 * Rejects a page that is not a version-1 vmclock structure we can emit or consume, naming the
 * field: magic, version 1, size ≥ 104 (every field through time_maxerror), each field within its C
 * type, enums within their defined values, and a generation counter only when the size covers it.
 * An odd seqCount is accepted: it is how a page mid-update looks.
 */
export function checkVmclockPage(page: VmclockPage, field = "vmclock"): void {
  if (page.magic !== VMCLOCK_MAGIC) throw invalid(`${field}.magic`, `must be 0x${VMCLOCK_MAGIC.toString(16)}, got 0x${Number(page.magic).toString(16)}`);
  if (page.version !== VMCLOCK_VERSION) throw invalid(`${field}.version`, `must be ${VMCLOCK_VERSION}, got ${page.version}`);
  checkInt(page.size, VMCLOCK_SIZE_WITHOUT_GEN_COUNTER, 0xffff_ffff, `${field}.size`);
  if (!COUNTER_IDS.includes(page.counterId)) throw invalid(`${field}.counterId`, `unknown counter id ${page.counterId}`);
  checkInt(page.timeType, VMCLOCK_TIME_UTC, VMCLOCK_TIME_INVALID_MAYBE_SMEARED, `${field}.timeType`);
  checkInt(page.seqCount, 0, 0xffff_ffff, `${field}.seqCount`);
  checkInt(page.clockStatus, VMCLOCK_STATUS_UNKNOWN, VMCLOCK_STATUS_UNRELIABLE, `${field}.clockStatus`);
  checkInt(page.leapSecondSmearingHint, VMCLOCK_SMEARING_STRICT, VMCLOCK_SMEARING_UTC_SLS, `${field}.leapSecondSmearingHint`);
  checkInt(page.taiOffsetSec, -0x8000, 0x7fff, `${field}.taiOffsetSec`);
  checkInt(page.leapIndicator, VMCLOCK_LEAP_NONE, VMCLOCK_LEAP_POST_NEG, `${field}.leapIndicator`);
  checkInt(page.counterPeriodShift, 0, 0xff, `${field}.counterPeriodShift`);
  for (const [name] of U64_FIELDS) checkU64(page[name], `${field}.${name}`);
  checkU64(page.vmGenerationCounter, `${field}.vmGenerationCounter`);
  if (page.size < VMCLOCK_STRUCT_BYTES) {
    if ((page.flags & VMCLOCK_FLAG_VM_GEN_COUNTER_PRESENT) !== 0n) {
      throw invalid(`${field}.flags`, `VM_GEN_COUNTER_PRESENT needs size ≥ ${VMCLOCK_STRUCT_BYTES}, size is ${page.size}`);
    }
    if (page.vmGenerationCounter !== 0n) {
      throw invalid(`${field}.vmGenerationCounter`, `lies beyond size ${page.size}; must be 0`);
    }
  }
}

/** The 112-byte little-endian image of `page` at the ABI offsets (padding zero). */
export function encodeVmclock(page: VmclockPage): Uint8Array {
  checkVmclockPage(page);
  const out = new Uint8Array(VMCLOCK_STRUCT_BYTES);
  const view = new DataView(out.buffer);
  view.setUint32(0, page.magic, true);
  view.setUint32(4, page.size, true);
  view.setUint16(8, page.version, true);
  view.setUint8(10, page.counterId);
  view.setUint8(11, page.timeType);
  view.setUint32(12, page.seqCount, true);
  view.setUint8(34, page.clockStatus);
  view.setUint8(35, page.leapSecondSmearingHint);
  view.setInt16(36, page.taiOffsetSec, true);
  view.setUint8(38, page.leapIndicator);
  view.setUint8(39, page.counterPeriodShift);
  for (const [name, off] of U64_FIELDS) view.setBigUint64(off, page[name], true);
  view.setBigUint64(OFF_VM_GEN, page.vmGenerationCounter, true);
  return out;
}

/**
 * Decodes a vmclock image. Checks the byte count first (≥ 104), then magic, version and size, then
 * every field (see checkVmclockPage); padding must be zero. vm_generation_counter is read only when
 * both the bytes and the declared size cover it, else it is 0.
 */
export function decodeVmclock(bytes: Uint8Array, field = "vmclock"): VmclockPage {
  if (!(bytes instanceof Uint8Array)) throw invalid(field, "must be a Uint8Array");
  if (bytes.length < VMCLOCK_SIZE_WITHOUT_GEN_COUNTER) {
    throw invalid(field, `needs at least ${VMCLOCK_SIZE_WITHOUT_GEN_COUNTER} bytes, has ${bytes.length}`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const magic = view.getUint32(0, true);
  if (magic !== VMCLOCK_MAGIC) throw invalid(`${field}.magic`, `must be 0x${VMCLOCK_MAGIC.toString(16)}, got 0x${magic.toString(16)}`);
  const version = view.getUint16(8, true);
  if (version !== VMCLOCK_VERSION) throw invalid(`${field}.version`, `must be ${VMCLOCK_VERSION}, got ${version}`);
  const size = view.getUint32(4, true);
  if (size < VMCLOCK_SIZE_WITHOUT_GEN_COUNTER) throw invalid(`${field}.size`, `must be ≥ ${VMCLOCK_SIZE_WITHOUT_GEN_COUNTER}, got ${size}`);
  if (view.getUint16(OFF_PAD, true) !== 0) throw invalid(`${field}.pad`, "must be zero");
  const hasGen = size >= VMCLOCK_STRUCT_BYTES && bytes.length >= VMCLOCK_STRUCT_BYTES;
  const page: VmclockPage = {
    magic,
    size,
    version,
    counterId: view.getUint8(10),
    timeType: view.getUint8(11),
    seqCount: view.getUint32(12, true),
    disruptionMarker: 0n,
    flags: 0n,
    clockStatus: view.getUint8(34),
    leapSecondSmearingHint: view.getUint8(35),
    taiOffsetSec: view.getInt16(36, true),
    leapIndicator: view.getUint8(38),
    counterPeriodShift: view.getUint8(39),
    counterValue: 0n,
    counterPeriodFracSec: 0n,
    counterPeriodEsterrorRateFracSec: 0n,
    counterPeriodMaxerrorRateFracSec: 0n,
    timeSec: 0n,
    timeFracSec: 0n,
    timeEsterrorNanosec: 0n,
    timeMaxerrorNanosec: 0n,
    vmGenerationCounter: hasGen ? view.getBigUint64(OFF_VM_GEN, true) : 0n,
  };
  for (const [name, off] of U64_FIELDS) page[name] = view.getBigUint64(off, true);
  checkVmclockPage(page, field);
  return page;
}

export interface VmclockTime {
  /** Seconds since the epoch of the page's time type, plus the TAI offset when applied (u64). */
  tvSec: bigint;
  /** Nanoseconds, floor(frac * 10^9 / 2^64), in [0, 10^9). */
  tvNsec: bigint;
  /** The 2^-64 s fraction the nanoseconds came from (R mod 2^64). */
  fracSec: bigint;
}

const NS_PER_S = 1_000_000_000n;

/**
 * The counter → time arithmetic of vmclock_get_crosststamp, without any validity check:
 * `delta = (counter - counter_value) mod 2^64`, `R = (delta * period >> shift) + time_frac_sec`
 * (exact, ≥ 64 bits), `tv_sec = time_sec + (R >> 64)` (mod 2^64), `frac = R mod 2^64`,
 * `tv_nsec = (frac * 10^9) >> 64`. Every step truncates (rounds toward zero). A counter below
 * counter_value wraps and gives nonsense, as in the driver. No TAI offset is applied.
 */
export function vmclockTimeAt(page: VmclockPage, counter: bigint): VmclockTime {
  if (!(counter >= 0n && counter <= U64_MAX)) throw invalid("counter", `must be a u64, got ${counter}`);
  const delta = (counter - page.counterValue) & U64_MAX;
  const r = ((delta * page.counterPeriodFracSec) >> BigInt(page.counterPeriodShift)) + page.timeFracSec;
  const fracSec = r & U64_MAX;
  return { tvSec: (page.timeSec + (r >> 64n)) & U64_MAX, tvNsec: (fracSec * NS_PER_S) >> 64n, fracSec };
}

/**
 * What the driver returns for one counter reading: EINVAL (op `vmclock`) when clock_status is
 * UNRELIABLE (field `clockStatus`), or when the time type is neither UTC nor TAI-with-TAI_OFFSET_VALID
 * (field `timeType`); otherwise vmclockTimeAt, where for TAI the s16 tai_offset_sec is *added* to
 * tv_sec (mod 2^64), as the driver does.
 */
export function vmclockReadTime(page: VmclockPage, counter: bigint): VmclockTime {
  if (page.clockStatus === VMCLOCK_STATUS_UNRELIABLE) {
    throw kvmError("EINVAL", "vmclock", "clock_status is UNRELIABLE", "clockStatus");
  }
  const time = vmclockTimeAt(page, counter);
  if (page.timeType === VMCLOCK_TIME_TAI && (page.flags & VMCLOCK_FLAG_TAI_OFFSET_VALID) !== 0n) {
    time.tvSec = (time.tvSec + BigInt(page.taiOffsetSec)) & U64_MAX;
  } else if (page.timeType !== VMCLOCK_TIME_UTC) {
    throw kvmError("EINVAL", "vmclock", `time type ${page.timeType} is neither UTC nor TAI with TAI_OFFSET_VALID`, "timeType");
  }
  return time;
}

/**
 * The host's seqlock write: seq_count odd → `mutate` → seq_count even, then ring `doorbell` if the page
 * advertises NOTIFICATION_PRESENT ("a notification every time seq_count becomes a new even number").
 * If `mutate` throws, the page's previous fields are put back and the count still ends even, so
 * readers never see a half-made update nor a page stuck odd. Returns the new (even) seq_count.
 */
export function vmclockUpdate(page: VmclockPage, mutate: (p: VmclockPage) => void, doorbell?: () => void): number {
  assert((page.seqCount & 1) === 0, "vmclock update begun while another is in progress");
  const before = { ...page };
  const odd = (page.seqCount + 1) >>> 0;
  page.seqCount = odd;
  try {
    mutate(page);
    assert(page.seqCount === odd, "vmclock mutate must not change seqCount");
    checkVmclockPage(page);
  } catch (err) {
    Object.assign(page, before, { seqCount: (odd + 1) >>> 0 });
    throw err;
  }
  page.seqCount = (odd + 1) >>> 0;
  if (doorbell !== undefined && (page.flags & VMCLOCK_FLAG_NOTIFICATION_PRESENT) !== 0n) doorbell();
  return page.seqCount;
}

/**
 * The driver's read loop: `seq = seq_count & ~1`, `read(page)`, done when seq_count still equals `seq`
 * (an odd count never does). The driver gives up after 100 ms (-ETIMEDOUT); with no real time here
 * it gives up after `maxRetries` attempts with `deadline_exceeded` (reason `vmclock_update_in_progress`).
 */
export function vmclockSeqRead<T>(page: VmclockPage, read: (p: VmclockPage) => T, maxRetries = 1000): T {
  checkInt(maxRetries, 1, Number.MAX_SAFE_INTEGER, "maxRetries");
  for (let attempt = 0; attempt < maxRetries; attempt++) {
    const seq = (page.seqCount & ~1) >>> 0;
    const value = read(page);
    if (page.seqCount === seq) return value;
  }
  throw new TscmigError("deadline_exceeded", `vmclock: seq_count still odd after ${maxRetries} reads (host update in progress)`, {
    field: "vmclock.seqCount",
    reason: "vmclock_update_in_progress",
  });
}
