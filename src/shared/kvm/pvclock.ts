// kvmclock's per-vCPU record, `struct pvclock_vcpu_time_info` (arch/x86/include/asm/pvclock-abi.h),
// its read arithmetic __pvclock_read_cycles() and pvclock_tsc_khz() (asm/pvclock.h,
// arch/x86/kernel/pvclock.c), and the version seqlock between the host writer
// (kvm_setup_guest_pvclock() in arch/x86/kvm/x86.c) and the guest reader (pvclock_read_begin/retry).
// Semantics: shared/reference/kvm-time.md §4, test/data/vectors/README.md §pvclock_read.json.

import { TscmigError, assert, invalid } from "../errors.js";
import { LIMITS } from "../limits.js";
import { scaleDelta } from "./time-scale.js";
import { U64_MAX, checkInt, checkU32, checkU64 } from "./u64.js";

export const PVCLOCK_TSC_STABLE_BIT = 1;
export const PVCLOCK_GUEST_STOPPED = 2;
/** Historic flag, never set by current KVM; kept so a decoded record's flags round-trip. */
export const PVCLOCK_COUNTS_FROM_ZERO = 4;
export const PVCLOCK_RECORD_BYTES = 32;

export interface PvclockRecord {
  /** Seqlock word: odd while the host rewrites the record. A u32. */
  version: number;
  /** Guest TSC at the reference instant (u64). */
  tscTimestamp: bigint;
  /** kvmclock ns at the reference instant (u64). */
  systemTime: bigint;
  /** 32.32 multiplier, guest TSC cycles → ns (u32 held in a bigint). */
  tscToSystemMul: bigint;
  /** Pre-shift of the cycle delta (s8). */
  tscShift: number;
  /** PVCLOCK_* bits (u8). */
  flags: number;
}

// Byte offsets of the packed little-endian ABI struct (32 bytes).
const OFF_VERSION = 0;
const OFF_PAD0 = 4;
const OFF_TSC_TIMESTAMP = 8;
const OFF_SYSTEM_TIME = 16;
const OFF_MUL = 24;
const OFF_SHIFT = 28;
const OFF_FLAGS = 29;
const OFF_PAD = 30;

/** Rejects a record whose fields do not fit their C types, naming the field under `field`. */
export function checkPvclockRecord(rec: PvclockRecord, field = "pvclock"): void {
  checkInt(rec.version, 0, 0xffff_ffff, `${field}.version`);
  checkU64(rec.tscTimestamp, `${field}.tscTimestamp`);
  checkU64(rec.systemTime, `${field}.systemTime`);
  checkU32(rec.tscToSystemMul, `${field}.tscToSystemMul`);
  checkInt(rec.tscShift, -128, 127, `${field}.tscShift`);
  checkInt(rec.flags, 0, 0xff, `${field}.flags`);
}

/**
 * Encodes `rec` as the exact 32-byte ABI record (padding zero). Writes into `out` at `offset` when
 * given (and returns `out`), else returns a new 32-byte array.
 */
export function encodePvclock(rec: PvclockRecord, out?: Uint8Array, offset = 0): Uint8Array {
  checkPvclockRecord(rec);
  const target = out ?? new Uint8Array(PVCLOCK_RECORD_BYTES);
  checkRoom(target, offset, "out");
  const view = new DataView(target.buffer, target.byteOffset + offset, PVCLOCK_RECORD_BYTES);
  writeFields(view, 0, rec, rec.flags);
  view.setUint32(OFF_VERSION, rec.version, true);
  return target;
}

/**
 * Decodes one ABI record at `offset`. Checks the size first, then every field: non-zero padding
 * and an odd version (a record captured while the host was rewriting it, unusable for a restore)
 * are rejected with `invalid`, naming the field under `field`.
 */
export function decodePvclock(bytes: Uint8Array, offset = 0, field = "pvclock"): PvclockRecord {
  if (!(bytes instanceof Uint8Array)) throw invalid(field, "must be a Uint8Array");
  checkRoom(bytes, offset, field);
  const view = new DataView(bytes.buffer, bytes.byteOffset + offset, PVCLOCK_RECORD_BYTES);
  const version = view.getUint32(OFF_VERSION, true);
  if ((version & 1) !== 0) throw invalid(`${field}.version`, `odd (${version}): record captured during a host update`);
  if (view.getUint32(OFF_PAD0, true) !== 0) throw invalid(`${field}.pad0`, "must be zero");
  if (view.getUint16(OFF_PAD, true) !== 0) throw invalid(`${field}.pad`, "must be zero");
  return {
    version,
    tscTimestamp: view.getBigUint64(OFF_TSC_TIMESTAMP, true),
    systemTime: view.getBigUint64(OFF_SYSTEM_TIME, true),
    tscToSystemMul: BigInt(view.getUint32(OFF_MUL, true)),
    tscShift: view.getInt8(OFF_SHIFT),
    flags: view.getUint8(OFF_FLAGS),
  };
}

/**
 * __pvclock_read_cycles(rec, tsc): `system_time + scale_delta(tsc - tsc_timestamp, mul, shift)`,
 * all mod 2^64. A TSC below tsc_timestamp wraps the delta to ~2^64 and yields a huge bogus time,
 * as in the guest: the formula has no signed handling, a correct host never lets that happen.
 */
export function pvclockReadCycles(rec: PvclockRecord, tsc: bigint): bigint {
  const { tscTimestamp, systemTime } = rec;
  if (!(tsc >= 0n && tsc <= U64_MAX)) throw invalid("tsc", `must be a u64, got ${tsc}`);
  if (!(tscTimestamp >= 0n && tscTimestamp <= U64_MAX)) throw invalid("tscTimestamp", `must be a u64, got ${tscTimestamp}`);
  if (!(systemTime >= 0n && systemTime <= U64_MAX)) throw invalid("systemTime", `must be a u64, got ${systemTime}`);
  return (systemTime + scaleDelta((tsc - tscTimestamp) & U64_MAX, rec.tscToSystemMul, rec.tscShift)) & U64_MAX;
}

const KHZ_DIVIDEND = 1_000_000n << 32n;

/**
 * pvclock_tsc_khz(): the TSC kHz a Linux guest calibrates from a record,
 * `floor((10^6 << 32) / mul)` then `<< -shift` (mod 2^64) if shift < 0, else `>> shift`.
 */
export function pvclockTscKhz(mul: bigint, shift: number): bigint {
  checkU32(mul, "tscToSystemMul");
  if (mul === 0n) throw invalid("tscToSystemMul", "must be non-zero");
  checkInt(shift, -128, 127, "tscShift");
  const khz = KHZ_DIVIDEND / mul;
  return shift < 0 ? (khz << BigInt(-shift)) & U64_MAX : khz >> BigInt(shift);
}

function checkRoom(bytes: Uint8Array, offset: number, field: string): void {
  if (!Number.isInteger(offset) || offset < 0 || offset + PVCLOCK_RECORD_BYTES > bytes.length) {
    throw invalid(field, `needs ${PVCLOCK_RECORD_BYTES} bytes at offset ${offset}, has ${bytes.length}`);
  }
}

/** Writes every field but the version; `flags` is passed separately so writers can merge bits. */
function writeFields(view: DataView, base: number, rec: PvclockRecord, flags: number): void {
  view.setUint32(base + OFF_PAD0, 0, true);
  view.setBigUint64(base + OFF_TSC_TIMESTAMP, rec.tscTimestamp, true);
  view.setBigUint64(base + OFF_SYSTEM_TIME, rec.systemTime, true);
  view.setUint32(base + OFF_MUL, Number(rec.tscToSystemMul), true);
  view.setInt8(base + OFF_SHIFT, rec.tscShift);
  view.setUint8(base + OFF_FLAGS, flags);
  view.setUint16(base + OFF_PAD, 0, true);
}

const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

function bswap32(v: number): number {
  return (((v & 0xff) << 24) | ((v & 0xff00) << 8) | ((v >>> 8) & 0xff00) | (v >>> 24)) >>> 0;
}

/** Most records one area may hold: every vCPU of every VM one daemon hosts. */
export const PVCLOCK_AREA_RECORDS_MAX = LIMITS.vcpuCountMax * LIMITS.vmCountMax;

/**
 * N pvclock records in one buffer (N × 32 bytes, no per-record objects), written by the emulated host
 * and read by the emulated guest under the ABI's version seqlock.
 *
 * The version word goes through `Atomics` (sequentially consistent), the other fields through a
 * little-endian DataView, so the protocol also holds when the buffer is a SharedArrayBuffer read by
 * another worker: the writer makes the version odd before touching a field and even after the last.
 *
 *   host:  version = (version + 1) | 1   →  fields (flags |= guest's GUEST_STOPPED)  →  version + 1
 *   guest: v = version & ~1  →  fields  →  retry unless version == v   (odd never matches)
 */
export class PvclockArea {
  readonly count: number;
  readonly buffer: ArrayBuffer | SharedArrayBuffer;
  readonly byteOffset: number;
  private readonly view: DataView;
  private readonly words: Uint32Array;

  /** A zeroed area of `count` records, or a view over `buffer` (e.g. shared with a worker). */
  constructor(count: number, buffer?: ArrayBuffer | SharedArrayBuffer, byteOffset = 0) {
    checkInt(count, 1, PVCLOCK_AREA_RECORDS_MAX, "count");
    const bytes = count * PVCLOCK_RECORD_BYTES;
    const buf = buffer ?? new ArrayBuffer(bytes);
    checkInt(byteOffset, 0, Number.MAX_SAFE_INTEGER, "byteOffset");
    if (byteOffset % 4 !== 0) throw invalid("byteOffset", `must be a multiple of 4, got ${byteOffset}`);
    if (byteOffset + bytes > buf.byteLength) {
      throw invalid("buffer", `needs ${bytes} bytes at offset ${byteOffset}, has ${buf.byteLength}`);
    }
    this.count = count;
    this.buffer = buf;
    this.byteOffset = byteOffset;
    this.view = new DataView(buf, byteOffset, bytes);
    this.words = new Uint32Array(buf, byteOffset, bytes / 4);
  }

  /** The whole area as bytes (a view, not a copy): snapshots copy it, restores fill it. */
  bytes(): Uint8Array {
    return new Uint8Array(this.buffer, this.byteOffset, this.count * PVCLOCK_RECORD_BYTES);
  }

  /** Every record, copied (a snapshot's pvclock column). */
  copyBytes(): Uint8Array {
    return this.bytes().slice();
  }

  /** Overwrites every record with `bytes` (count × 32 of them: a restore, before any vCPU runs). */
  loadBytes(bytes: Uint8Array): void {
    if (!(bytes instanceof Uint8Array) || bytes.length !== this.count * PVCLOCK_RECORD_BYTES)
      throw invalid("pvclock", `must be exactly ${this.count} × ${PVCLOCK_RECORD_BYTES} bytes`);
    this.bytes().set(bytes);
  }

  /** The guest-visible version of record `i` (odd while a host write is in progress). */
  version(i: number): number {
    return this.loadVersion(this.offset(i));
  }

  /** The guest-visible flags byte of record `i`. */
  flags(i: number): number {
    return this.view.getUint8(this.offset(i) + OFF_FLAGS);
  }

  /**
   * The kernel writer in one step (kvm_setup_guest_pvclock). `rec.version` is ignored: the
   * area owns the version. A GUEST_STOPPED bit the guest has not yet cleared is preserved.
   */
  hostWrite(i: number, rec: PvclockRecord): void {
    this.beginHostWrite(i, rec);
    this.endHostWrite(i);
  }

  /**
   * First half of a host write: makes the version odd, then writes `rec`'s fields if given.
   * Returns the odd version. Until endHostWrite, every guestRead of `i` retries.
   */
  beginHostWrite(i: number, rec?: PvclockRecord): number {
    const base = this.offset(i);
    if (rec !== undefined) checkPvclockRecord(rec, `pvclock[${i}]`);
    const current = this.loadVersion(base);
    assert((current & 1) === 0, `pvclock[${i}]: host write begun while another is in progress`);
    const odd = ((current + 1) | 1) >>> 0;
    this.storeVersion(base, odd);
    if (rec !== undefined) this.writeMerged(base, rec);
    return odd;
  }

  /** Second half of a host write: writes `rec`'s fields if given, then makes the version even. */
  endHostWrite(i: number, rec?: PvclockRecord): number {
    const base = this.offset(i);
    if (rec !== undefined) checkPvclockRecord(rec, `pvclock[${i}]`);
    const odd = this.loadVersion(base);
    assert((odd & 1) === 1, `pvclock[${i}]: endHostWrite without beginHostWrite`);
    if (rec !== undefined) this.writeMerged(base, rec);
    const even = (odd + 1) >>> 0;
    this.storeVersion(base, even);
    return even;
  }

  /**
   * The guest reader: snapshot `version & ~1`, read the fields, re-read the version; retry while they
   * differ. An odd version never matches, so a reader facing an unfinished write fails after
   * `maxRetries` attempts with `unavailable` (reason `pvclock_update_in_progress`).
   */
  guestRead(i: number, maxRetries = 1000): PvclockRecord {
    const base = this.offset(i);
    checkInt(maxRetries, 1, Number.MAX_SAFE_INTEGER, "maxRetries");
    const view = this.view;
    for (let attempt = 0; attempt < maxRetries; attempt++) {
      const version = (this.loadVersion(base) & ~1) >>> 0;
      const tscTimestamp = view.getBigUint64(base + OFF_TSC_TIMESTAMP, true);
      const systemTime = view.getBigUint64(base + OFF_SYSTEM_TIME, true);
      const mul = view.getUint32(base + OFF_MUL, true);
      const tscShift = view.getInt8(base + OFF_SHIFT);
      const flags = view.getUint8(base + OFF_FLAGS);
      if (this.loadVersion(base) === version) {
        return { version, tscTimestamp, systemTime, tscToSystemMul: BigInt(mul), tscShift, flags };
      }
    }
    throw new TscmigError("unavailable", `pvclock[${i}]: version still odd after ${maxRetries} reads (host update in progress)`, {
      field: `pvclock[${i}].version`,
      reason: "pvclock_update_in_progress",
    });
  }

  /**
   * The guest clears its GUEST_STOPPED bit in the shared record (kvm_check_and_clear_guest_paused);
   * returns whether it was set.
   */
  guestClearStopped(i: number): boolean {
    const at = this.offset(i) + OFF_FLAGS;
    const flags = this.view.getUint8(at);
    if ((flags & PVCLOCK_GUEST_STOPPED) === 0) return false;
    this.view.setUint8(at, flags & ~PVCLOCK_GUEST_STOPPED);
    return true;
  }

  /** A copy of record `i`'s 32 raw bytes (for snapshot transfer). */
  recordBytes(i: number): Uint8Array {
    const base = this.offset(i);
    return new Uint8Array(this.buffer, this.byteOffset + base, PVCLOCK_RECORD_BYTES).slice();
  }

  /**
   * Installs 32 raw bytes as record `i` (restore before any vCPU runs). The bytes are validated as
   * a record first: exact size, zero padding, even version.
   */
  setRecordBytes(i: number, bytes: Uint8Array): void {
    const base = this.offset(i);
    const field = `pvclock[${i}]`;
    if (!(bytes instanceof Uint8Array) || bytes.length !== PVCLOCK_RECORD_BYTES) {
      throw invalid(field, `must be exactly ${PVCLOCK_RECORD_BYTES} bytes`);
    }
    decodePvclock(bytes, 0, field);
    new Uint8Array(this.buffer, this.byteOffset + base, PVCLOCK_RECORD_BYTES).set(bytes);
  }

  private writeMerged(base: number, rec: PvclockRecord): void {
    const stopped = this.view.getUint8(base + OFF_FLAGS) & PVCLOCK_GUEST_STOPPED;
    writeFields(this.view, base, rec, rec.flags | stopped);
  }

  private offset(i: number): number {
    if (!Number.isInteger(i) || i < 0 || i >= this.count) {
      throw invalid("vcpu", `record index must be an integer in [0, ${this.count}), got ${i}`);
    }
    return i * PVCLOCK_RECORD_BYTES;
  }

  private loadVersion(base: number): number {
    const raw = Atomics.load(this.words, base >>> 2);
    return LITTLE_ENDIAN_HOST ? raw : bswap32(raw);
  }

  private storeVersion(base: number, version: number): void {
    Atomics.store(this.words, base >>> 2, LITTLE_ENDIAN_HOST ? version : bswap32(version));
  }
}
