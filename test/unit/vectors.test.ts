// Goal: every golden vector agrees with src/shared/kvm bit for bit. Method: one checker per vector `function`; each case is read through a tracking accessor, so every field is either an input or compared, and any field left unexamined is itself a failure.

import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { isTscmigError } from "../../src/shared/errors.js";
import {
  PvclockArea,
  decodePvclock,
  decodeVmclock,
  encodePvclock,
  encodeVmclock,
  getTimeScale,
  guestTgtTscKhz,
  isIdentityRatio,
  maxGuestTscKhz,
  newVmclockPage,
  pvclockReadCycles,
  pvclockTscKhz,
  scaleDelta,
  scaleTsc,
  scaleTscTruncates,
  setClockAdvance,
  setTscKhzDecision,
  shiftOverflows,
  tscRatio,
  tscRatioValid,
  tscThresholds,
  u64,
  vendorForFracBits,
  vmclockReadTime,
  vmclockTimeAt,
  type FracBits,
  type PvclockRecord,
  type SetTscKhzDecision,
  type VmclockPage,
} from "../../src/shared/kvm/index.js";

/** The repository's own copy (test data); TSCMIG_VECTORS_DIR checks another set instead. */
const SHIPPED_DIR = fileURLToPath(new URL("../data/vectors", import.meta.url));
const VECTORS_DIR = process.env.TSCMIG_VECTORS_DIR !== undefined ? path.resolve(process.cwd(), process.env.TSCMIG_VECTORS_DIR) : SHIPPED_DIR;
/** Cases in the shipped set (kvm-time.md §9); checked only when the default directory is used. */
const SHIPPED_CASES = 694;
const MISMATCHES_SHOWN = 10;

interface Mismatch {
  file: string;
  id: string;
  field: string;
  expected: string;
  actual: string;
}

type Scalar = bigint | number | boolean | string;

/** Malformed vector data (not an implementation mismatch); fails the case all the same. */
class VectorFormatError extends Error {}

/** One case, read field by field; remembers which fields the checker looked at. */
class CaseReader {
  private readonly used = new Set<string>(["id"]);
  constructor(
    private readonly raw: Record<string, unknown>,
    private readonly report: (field: string, expected: string, actual: string) => void,
  ) {}

  private get(name: string): unknown {
    this.used.add(name);
    if (!(name in this.raw)) throw new VectorFormatError(`missing field ${name}`);
    return this.raw[name];
  }

  big(name: string): bigint {
    const v = this.get(name);
    if (typeof v !== "string" || !/^-?\d+$/.test(v)) throw new VectorFormatError(`${name}: expected a decimal string, got ${JSON.stringify(v)}`);
    return BigInt(v);
  }

  num(name: string): number {
    const v = this.get(name);
    if (typeof v !== "number" || !Number.isInteger(v)) throw new VectorFormatError(`${name}: expected an integer, got ${JSON.stringify(v)}`);
    return v;
  }

  str(name: string): string {
    const v = this.get(name);
    if (typeof v !== "string") throw new VectorFormatError(`${name}: expected a string, got ${JSON.stringify(v)}`);
    return v;
  }

  bool(name: string): boolean {
    const v = this.get(name);
    if (typeof v !== "boolean") throw new VectorFormatError(`${name}: expected a boolean, got ${JSON.stringify(v)}`);
    return v;
  }

  /** Informational fields (groups, notes, nominal rates) that carry no checkable value. */
  ignore(...names: string[]): void {
    for (const n of names) this.used.add(n);
  }

  /** Compares `actual` with the field, parsed according to `actual`'s type. */
  eq(name: string, actual: Scalar, normalize: (expected: string) => string = (e) => e): void {
    let expected: Scalar;
    if (typeof actual === "bigint") expected = this.big(name);
    else if (typeof actual === "number") expected = this.num(name);
    else if (typeof actual === "boolean") expected = this.bool(name);
    else expected = normalize(this.str(name));
    if (expected !== actual) this.report(name, String(expected), String(actual));
  }

  /** A derived comparison that is not a field of its own (round trips, second paths). */
  same(label: string, expected: Scalar, actual: Scalar): void {
    if (expected !== actual) this.report(label, String(expected), String(actual));
  }

  /** Compares a redundant `0x…` rendering with `actual`. */
  hex(name: string, actual: bigint): void {
    this.eq(name, `0x${actual.toString(16)}`, (e) => e.toLowerCase());
  }

  /** Reports every field no checker looked at: a vector field must never pass unexamined. */
  finish(): void {
    for (const key of Object.keys(this.raw)) {
      if (!this.used.has(key)) this.report(key, "(a checked field)", "not examined by the suite");
    }
  }
}

type Checker = (c: CaseReader) => void;

function fracBitsOf(c: CaseReader): FracBits {
  const f = c.num("frac_bits");
  if (f !== 48 && f !== 32) throw new VectorFormatError(`frac_bits: ${f}`);
  return f;
}

function errorTag(e: unknown): string {
  if (isTscmigError(e)) return `${e.errno ?? e.code}[${e.field ?? "?"}]: ${e.message}`;
  return `threw ${String(e)}`;
}

function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("hex");
}

function fromHex(hex: string): Uint8Array {
  if (!/^([0-9a-f]{2})*$/i.test(hex)) throw new VectorFormatError(`not hex: ${hex}`);
  return new Uint8Array(Buffer.from(hex, "hex"));
}

const PVCLOCK_FIELDS = ["version", "tscTimestamp", "systemTime", "tscToSystemMul", "tscShift", "flags"] as const;

// One area reused for every pvclock case: the raw record goes in through the snapshot path and
// comes out through the guest's seqlock reader.
const area = new PvclockArea(1);

const CHECKERS: Record<string, Checker> = {
  kvm_get_time_scale(c) {
    c.ignore("group");
    const baseHz = c.big("base_hz");
    const ts = getTimeScale(c.big("scaled_hz"), baseHz);
    c.eq("shift", ts.shift);
    c.eq("mul", ts.mul);
    c.hex("mul_hex", ts.mul);
    c.eq("one_second_of_base_in_scaled_units", scaleDelta(baseHz, ts.mul, ts.shift));
  },

  pvclock_scale_delta(c) {
    c.ignore("group");
    const delta = c.big("delta");
    const shift = c.num("shift");
    const result = scaleDelta(delta, c.big("mul"), shift);
    c.eq("result", result);
    c.hex("result_hex", result);
    c.eq("shift_overflow", shiftOverflows(delta, shift));
  },

  kvm_scale_tsc(c) {
    c.ignore("group");
    const frac = fracBitsOf(c);
    const tsc = c.big("tsc");
    const ratio = c.big("ratio");
    c.hex("ratio_hex", ratio);
    c.eq("result", scaleTsc(tsc, ratio, frac));
    c.eq("identity_shortcut", isIdentityRatio(ratio, frac));
    c.eq("truncated", scaleTscTruncates(tsc, ratio, frac));
  },

  "kvm_set_tsc_khz/set_tsc_khz ratio computation"(c) {
    const frac = fracBitsOf(c);
    const vendor = vendorForFracBits(frac);
    c.eq("vendor", vendor.name);
    c.eq("max_tsc_scaling_ratio", vendor.maxRatio);
    const arg = c.big("user_tsc_khz_arg");
    const host = c.big("host_tsc_khz");
    c.eq("max_guest_tsc_khz", maxGuestTscKhz(host, vendor));
    let d: SetTscKhzDecision | undefined;
    let err: unknown;
    try {
      d = setTscKhzDecision({ userKhzArg: arg, hostKhz: host, vendor, hostHasScaling: true });
    } catch (e) {
      err = e;
    }
    const category = (e: string): string => (e.startsWith("EINVAL") ? "EINVAL" : e);
    if (d === undefined) {
      // The kernel refuses before computing anything; the vectors report zeros for what it skipped.
      const refused = isTscmigError(err) && err.errno === "EINVAL" && err.field === "guestTscKhz";
      c.eq("ioctl_result", refused ? "EINVAL" : errorTag(err), category);
      c.eq("user_tsc_khz_effective", arg);
      c.eq("ratio", 0n);
      c.hex("ratio_hex", 0n);
      c.eq("ratio_valid", false);
      c.eq("thresh_lo_khz", 0n);
      c.eq("thresh_hi_khz", 0n);
      c.eq("within_tolerance", false);
      c.eq("programmed_ratio", 0n);
      c.eq("virtual_tsc_shift", 0);
      c.eq("virtual_tsc_mult", 0n);
      return;
    }
    c.eq("ioctl_result", d.scaled ? "ok(scaled)" : "ok(default ratio, within tolerance)", category);
    c.eq("user_tsc_khz_effective", d.effectiveKhz);
    c.eq("ratio", d.computedRatio);
    c.eq("ratio", tscRatio(d.effectiveKhz, host, frac));
    c.hex("ratio_hex", d.computedRatio);
    c.eq("ratio_valid", tscRatioValid(d.computedRatio, vendor));
    const th = tscThresholds(host);
    c.eq("thresh_lo_khz", th.loKhz);
    c.eq("thresh_hi_khz", th.hiKhz);
    c.eq("thresh_lo_khz", d.thresholds.loKhz);
    c.eq("thresh_hi_khz", d.thresholds.hiKhz);
    c.eq("within_tolerance", d.withinTolerance);
    c.eq("programmed_ratio", d.ratio);
    c.eq("virtual_tsc_shift", d.virtualScale.shift);
    c.eq("virtual_tsc_mult", d.virtualScale.mul);
  },

  __pvclock_read_cycles(c) {
    const frac = fracBitsOf(c);
    const host = c.big("host_tsc_khz");
    const d = setTscKhzDecision({ userKhzArg: c.big("requested_guest_tsc_khz"), hostKhz: host, vendor: vendorForFracBits(frac), hostHasScaling: true });
    c.eq("l1_tsc_scaling_ratio", d.ratio);
    const tgt = guestTgtTscKhz(host, d.ratio, frac);
    c.eq("tgt_tsc_khz", tgt);
    const scale = getTimeScale(1_000_000_000n, tgt * 1000n);
    c.eq("tsc_shift", scale.shift);
    c.eq("tsc_to_system_mul", scale.mul);

    const rec: PvclockRecord = {
      version: Number(c.big("version")),
      tscTimestamp: c.big("tsc_timestamp"),
      systemTime: c.big("system_time"),
      tscToSystemMul: c.big("tsc_to_system_mul"),
      tscShift: c.num("tsc_shift"),
      flags: c.num("flags"),
    };
    const bytes = encodePvclock(rec);
    c.eq("record_hex_le", toHex(bytes), (e) => e.toLowerCase());
    const decoded = decodePvclock(fromHex(c.str("record_hex_le")));
    for (const f of PVCLOCK_FIELDS) c.same(`record_hex_le(decoded).${f}`, rec[f], decoded[f]);

    const tsc = c.big("tsc");
    c.eq("delta", u64(tsc - rec.tscTimestamp));
    const ns = pvclockReadCycles(rec, tsc);
    c.eq("ns", ns);
    c.hex("ns_hex", ns);
    area.setRecordBytes(0, bytes);
    c.same("ns(via PvclockArea.guestRead)", ns, pvclockReadCycles(area.guestRead(0), tsc));
    c.eq("guest_pvclock_tsc_khz", pvclockTscKhz(rec.tscToSystemMul, rec.tscShift));
  },

  kvm_vm_ioctl_set_clock(c) {
    c.ignore("note");
    const nowRawNs = c.big("now_raw_ns");
    let r: ReturnType<typeof setClockAdvance> | undefined;
    let err: unknown;
    try {
      r = setClockAdvance({ clock: c.big("clock"), flags: c.num("flags"), realtime: c.big("realtime"), nowRealNs: c.big("now_real_ns"), nowRawNs });
    } catch (e) {
      err = e;
    }
    if (r === undefined) {
      const refused = isTscmigError(err) && err.errno === "EINVAL" && err.field === "flags";
      c.eq("result", refused ? "EINVAL" : errorTag(err));
      c.eq("valid", false);
      c.eq("advanced_clock", 0n);
      c.eq("kvmclock_offset", 0n);
      c.eq("kvmclock_at_now_raw", 0n);
      return;
    }
    c.eq("result", "ok");
    c.eq("valid", true);
    c.eq("advanced_clock", r.advancedClock);
    c.eq("kvmclock_offset", r.kvmclockOffset);
    c.eq("kvmclock_at_now_raw", u64(nowRawNs + r.kvmclockOffset));
  },

  "vmclock_get_crosststamp (time part)"(c) {
    c.ignore("counter_hz_nominal");
    const page: VmclockPage = {
      ...newVmclockPage(),
      counterValue: c.big("counter_value"),
      counterPeriodFracSec: c.big("counter_period_frac_sec"),
      counterPeriodShift: c.num("counter_period_shift"),
      timeSec: c.big("time_sec"),
      timeFracSec: c.big("time_frac_sec"),
      timeType: c.num("time_type"),
      flags: c.big("flags"),
      taiOffsetSec: c.num("tai_offset_sec"),
      clockStatus: c.num("clock_status"),
    };
    const again = decodeVmclock(encodeVmclock(page));
    for (const k of Object.keys(page) as (keyof VmclockPage)[]) c.same(`page(round trip).${k}`, page[k], again[k]);
    const counter = c.big("counter");
    c.hex("frac_after_add_hex", vmclockTimeAt(page, counter).fracSec);
    let t: ReturnType<typeof vmclockReadTime> | undefined;
    let err: unknown;
    try {
      t = vmclockReadTime(page, counter);
    } catch (e) {
      err = e;
    }
    if (t === undefined) {
      let tag = errorTag(err);
      if (isTscmigError(err) && err.errno === "EINVAL") {
        if (err.field === "clockStatus") tag = "EINVAL(clock_status UNRELIABLE)";
        if (err.field === "timeType") tag = "EINVAL(not UTC and not TAI with TAI_OFFSET_VALID)";
      }
      c.eq("result", tag);
      c.eq("tv_sec", 0n);
      c.eq("tv_nsec", 0n);
      return;
    }
    c.eq("result", "ok");
    c.eq("tv_sec", t.tvSec);
    c.eq("tv_nsec", t.tvNsec);
  },
};

interface Outcome {
  files: number;
  found: number;
  checked: number;
  failedCases: number;
  mismatches: Mismatch[];
}

function runVectors(dir: string): Outcome {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new Error(`vectors directory not found: ${dir} (set TSCMIG_VECTORS_DIR, relative to ${process.cwd()})`);
  }
  const files = readdirSync(dir).filter((f) => f.endsWith(".json")).sort();
  if (files.length === 0) throw new Error(`no *.json vector files in ${dir}`);
  const out: Outcome = { files: files.length, found: 0, checked: 0, failedCases: 0, mismatches: [] };
  for (const file of files) {
    const doc = JSON.parse(readFileSync(path.join(dir, file), "utf8")) as { function?: unknown; cases?: unknown };
    if (!Array.isArray(doc.cases)) {
      out.failedCases++;
      out.mismatches.push({ file, id: "-", field: "cases", expected: "an array", actual: typeof doc.cases });
      continue;
    }
    out.found += doc.cases.length;
    const checker = typeof doc.function === "string" ? CHECKERS[doc.function] : undefined;
    if (checker === undefined) {
      // An unknown function is an error: a vector file nobody checks would pass silently.
      out.failedCases += doc.cases.length;
      out.mismatches.push({ file, id: "*", field: "function", expected: Object.keys(CHECKERS).join(" | "), actual: String(doc.function) });
      continue;
    }
    for (const raw of doc.cases as Record<string, unknown>[]) {
      const id = String(raw.id);
      let failed = false;
      const reader = new CaseReader(raw, (field, expected, actual) => {
        failed = true;
        out.mismatches.push({ file, id, field, expected, actual });
      });
      try {
        checker(reader);
        reader.finish();
      } catch (e) {
        failed = true;
        out.mismatches.push({ file, id, field: "(case)", expected: "no exception", actual: e instanceof Error ? `${e.name}: ${e.message}` : String(e) });
      }
      out.checked++;
      if (failed) out.failedCases++;
    }
  }
  return out;
}

describe("golden vectors", () => {
  it("every case of every vector file matches the kernel arithmetic", () => {
    const r = runVectors(VECTORS_DIR);
    console.log(`vectors: ${r.checked} cases checked, ${r.failedCases} failed`);
    const shown = r.mismatches
      .slice(0, MISMATCHES_SHOWN)
      .map((m) => `  ${m.file}#${m.id} ${m.field}: expected ${m.expected}, actual ${m.actual}`)
      .join("\n");
    expect(r.failedCases, `${r.failedCases} failing case(s), ${r.mismatches.length} mismatch(es); first:\n${shown}`).toBe(0);
    expect(r.checked, "every case found was checked").toBe(r.found);
    if (process.env.TSCMIG_VECTORS_DIR === undefined) expect(r.found, "cases in the shipped vector set").toBe(SHIPPED_CASES);
  });
});
