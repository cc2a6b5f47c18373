// Goal: the kernel arithmetic, codecs and seqlocks of src/shared/kvm behave as kvm-time.md says. Method: the hand checks of kvm-time.md §9, fast-check properties over the full u64 ranges, and step-by-step seqlock scenarios.

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { TscmigError } from "../../src/shared/errors.js";
import {
  KVM_CLOCK_HOST_TSC,
  KVM_CLOCK_REALTIME,
  KVM_CLOCK_TSC_STABLE,
  PVCLOCK_GUEST_STOPPED,
  PVCLOCK_RECORD_BYTES,
  PVCLOCK_TSC_STABLE_BIT,
  PvclockArea,
  SVM,
  U64_MAX,
  VMCLOCK_FLAG_NOTIFICATION_PRESENT,
  VMCLOCK_FLAG_TAI_OFFSET_VALID,
  VMCLOCK_FLAG_VM_GEN_COUNTER_PRESENT,
  VMCLOCK_MAGIC,
  VMCLOCK_STATUS_UNRELIABLE,
  VMCLOCK_STRUCT_BYTES,
  VMCLOCK_TIME_MONOTONIC,
  VMCLOCK_TIME_TAI,
  VMX,
  decodePvclock,
  decodeVmclock,
  defaultRatio,
  encodePvclock,
  encodeVmclock,
  getTimeScale,
  newVmclockPage,
  pvclockReadCycles,
  pvclockTscKhz,
  s64,
  scaleDelta,
  scaleTsc,
  setClockAdvance,
  setTscKhzDecision,
  tscRatio,
  tscThresholds,
  u32,
  u64,
  vmclockReadTime,
  vmclockSeqRead,
  vmclockUpdate,
  type FracBits,
  type PvclockRecord,
  type VmclockPage,
} from "../../src/shared/kvm/index.js";

const u64Arb = fc.bigInt({ min: 0n, max: U64_MAX });
const u32Arb = fc.bigInt({ min: 0n, max: 0xffff_ffffn });
const fracArb = fc.constantFrom<FracBits>(48, 32);

const pvclockArb: fc.Arbitrary<PvclockRecord> = fc.record({
  version: fc.integer({ min: 0, max: 0x7fff_ffff }).map((v) => v * 2),
  tscTimestamp: u64Arb,
  systemTime: u64Arb,
  tscToSystemMul: u32Arb,
  tscShift: fc.integer({ min: -128, max: 127 }),
  flags: fc.integer({ min: 0, max: 255 }),
});

function thrown(fn: () => unknown): TscmigError {
  try {
    fn();
  } catch (e) {
    if (e instanceof TscmigError) return e;
    throw e;
  }
  throw new Error("expected a TscmigError, nothing was thrown");
}

function record(overrides: Partial<PvclockRecord> = {}): PvclockRecord {
  return { version: 0, tscTimestamp: 1000n, systemTime: 5_000_000n, tscToSystemMul: 1n << 31n, tscShift: 0, flags: PVCLOCK_TSC_STABLE_BIT, ...overrides };
}

describe("hand checks (kvm-time.md §9)", () => {
  it("kvm_get_time_scale matches the worked examples", () => {
    expect(getTimeScale(10n ** 9n, 10n ** 9n)).toEqual({ shift: 1, mul: 1n << 31n });
    expect(getTimeScale(10n ** 9n, 2n * 10n ** 9n)).toEqual({ shift: 0, mul: 1n << 31n });
    expect(getTimeScale(10n ** 9n, 3n * 10n ** 9n)).toEqual({ shift: -1, mul: 2863311530n });
  });

  it("scale_delta of one second at 3 GHz is one ns short of 10^9 (truncation)", () => {
    expect(scaleDelta(3n * 10n ** 9n, 2863311530n, -1)).toBe(999_999_999n);
  });

  it("a 1.5 GHz guest on a 3 GHz VMX host gets ratio 2^47 and half the cycles", () => {
    expect(tscRatio(1_500_000n, 3_000_000n, 48)).toBe(1n << 47n);
    expect(scaleTsc(3n * 10n ** 9n, 1n << 47n, 48)).toBe(1_500_000_000n);
  });

  it("pvclock_tsc_khz(2^31, 0) is 2 GHz and the 2 GHz tolerance band is ±250 ppm", () => {
    expect(pvclockTscKhz(1n << 31n, 0)).toBe(2_000_000n);
    expect(tscThresholds(2_000_000n)).toEqual({ loKhz: 1_999_500n, hiKhz: 2_000_500n });
  });
});

describe("fixed-width helpers", () => {
  it("wrap modulo the width instead of saturating", () => {
    expect(u64(-1n)).toBe(U64_MAX);
    expect(u64(U64_MAX + 2n)).toBe(1n);
    expect(s64(U64_MAX)).toBe(-1n);
    expect(s64(1n << 63n)).toBe(-(1n << 63n));
    expect(u32(0x1_0000_0005n)).toBe(5n);
  });
});

describe("scaling properties", () => {
  it("scaleTsc with the default ratio is the identity", () => {
    fc.assert(fc.property(u64Arb, fracArb, (tsc, frac) => scaleTsc(tsc, defaultRatio(frac), frac) === tsc));
  });

  it("scaleTsc keeps the low 64 bits of the exact product (never saturates)", () => {
    fc.assert(
      fc.property(u64Arb, u64Arb, fracArb, (tsc, ratio, frac) => {
        const exact = (tsc * ratio) >> BigInt(frac);
        return scaleTsc(tsc, ratio, frac) === exact % (1n << 64n);
      }),
    );
  });

  it("scaleDelta equals the 96-bit product shifted, and never exceeds a u64", () => {
    fc.assert(
      fc.property(u64Arb, u32Arb, fc.integer({ min: -32, max: 32 }), (delta, mul, shift) => {
        const d = shift < 0 ? delta >> BigInt(-shift) : (delta << BigInt(shift)) % (1n << 64n);
        const r = scaleDelta(delta, mul, shift);
        return r === (d * mul) >> 32n && r <= U64_MAX;
      }),
    );
  });

  it("a time scale converts one second of the base to the scaled rate within 1 ppm (either side)", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 1_000_000n, max: 10n ** 11n }), fc.bigInt({ min: 1_000_000n, max: 10n ** 11n }), (scaledHz, baseHz) => {
        const ts = getTimeScale(scaledHz, baseHz);
        const oneSecond = scaleDelta(baseHz, ts.mul, ts.shift);
        const error = oneSecond > scaledHz ? oneSecond - scaledHz : scaledHz - oneSecond;
        return ts.mul <= 0xffff_ffffn && error <= scaledHz / 1_000_000n + 1n;
      }),
    );
  });

  it("getTimeScale answers repeated inputs from its cache, and rejects a zero frequency", () => {
    expect(getTimeScale(10n ** 9n, 2_899_999_000n)).toBe(getTimeScale(10n ** 9n, 2_899_999_000n));
    expect(thrown(() => getTimeScale(10n ** 9n, 0n)).field).toBe("baseHz");
    expect(thrown(() => getTimeScale(0n, 10n ** 9n)).field).toBe("scaledHz");
  });

  it("pvclockReadCycles is system_time plus the scaled delta, wrapping below tsc_timestamp", () => {
    const rec = record({ tscTimestamp: 10_000n, systemTime: 7n, tscToSystemMul: 1n << 31n, tscShift: 0 });
    expect(pvclockReadCycles(rec, 12_000n)).toBe(7n + 1000n);
    // A TSC below tsc_timestamp: the delta wraps to ~2^64 and the result is huge, as in the guest.
    expect(pvclockReadCycles(rec, 9_999n)).toBe(u64(7n + ((U64_MAX * (1n << 31n)) >> 32n)));
  });
});

describe("KVM_SET_TSC_KHZ decision", () => {
  it("within tolerance programs the default ratio though the nominal kHz differs", () => {
    const d = setTscKhzDecision({ userKhzArg: 2_000_400n, hostKhz: 2_000_000n, vendor: VMX, hostHasScaling: true });
    expect(d).toMatchObject({ effectiveKhz: 2_000_400n, ratio: 1n << 48n, withinTolerance: true, scaled: false });
    expect(d.computedRatio).not.toBe(1n << 48n);
  });

  it("argument 0 means the host rate", () => {
    const d = setTscKhzDecision({ userKhzArg: 0n, hostKhz: 2_500_000n, vendor: SVM, hostHasScaling: true });
    expect(d.effectiveKhz).toBe(2_500_000n);
    expect(d.ratio).toBe(1n << 32n);
  });

  it("at or above the maximum guest kHz is EINVAL naming guestTscKhz", () => {
    const e = thrown(() => setTscKhzDecision({ userKhzArg: 0x7fff_ffffn, hostKhz: 3_000_000n, vendor: VMX, hostHasScaling: true }));
    expect(e.errno).toBe("EINVAL");
    expect(e.field).toBe("guestTscKhz");
    expect(e.message).toContain("KVM_SET_TSC_KHZ");
  });

  it("without hardware scaling only in-tolerance rates are accepted", () => {
    const ok = setTscKhzDecision({ userKhzArg: 2_000_100n, hostKhz: 2_000_000n, vendor: VMX, hostHasScaling: false });
    expect(ok.scaled).toBe(false);
    for (const userKhzArg of [1_000_000n, 4_000_000n]) {
      const e = thrown(() => setTscKhzDecision({ userKhzArg, hostKhz: 2_000_000n, vendor: VMX, hostHasScaling: false }));
      expect(e.errno).toBe("EINVAL");
      expect(e.field).toBe("guestTscKhz");
      expect(e.message).toMatch(/no TSC scaling/);
    }
  });
});

describe("pvclock codec", () => {
  it("encode/decode round-trips any record through exactly 32 bytes", () => {
    fc.assert(
      fc.property(pvclockArb, (rec) => {
        const bytes = encodePvclock(rec);
        expect(bytes.length).toBe(PVCLOCK_RECORD_BYTES);
        expect(decodePvclock(bytes)).toEqual(rec);
      }),
    );
  });

  it("encodes into a caller's buffer at an offset", () => {
    const out = new Uint8Array(80).fill(0xee);
    const rec = record({ version: 4 });
    encodePvclock(rec, out, 40);
    expect(decodePvclock(out, 40)).toEqual(rec);
    expect(out[39]).toBe(0xee);
    expect(out[72]).toBe(0xee);
  });

  it("rejects short input, odd versions, non-zero padding and out-of-range fields, naming the field", () => {
    expect(thrown(() => decodePvclock(new Uint8Array(31))).field).toBe("pvclock");
    const odd = encodePvclock(record({ version: 7 }));
    expect(thrown(() => decodePvclock(odd, 0, "snapshot.vcpus[3].pvclock")).field).toBe("snapshot.vcpus[3].pvclock.version");
    const padded = encodePvclock(record());
    padded[30] = 1;
    expect(thrown(() => decodePvclock(padded)).field).toBe("pvclock.pad");
    expect(thrown(() => encodePvclock(record({ tscToSystemMul: 1n << 32n }))).field).toBe("pvclock.tscToSystemMul");
    expect(thrown(() => encodePvclock(record({ tscShift: 128 }))).field).toBe("pvclock.tscShift");
    expect(thrown(() => encodePvclock(record({ systemTime: -1n }))).field).toBe("pvclock.systemTime");
  });
});

describe("pvclock seqlock (PvclockArea)", () => {
  it("a reader during a host write fails; after the write it reads the new record", () => {
    const area = new PvclockArea(4);
    area.hostWrite(2, record({ systemTime: 1n }));
    expect(area.version(2)).toBe(2);
    const next = record({ systemTime: 2n, tscTimestamp: 99n });
    expect(area.beginHostWrite(2, next)).toBe(3);
    const e = thrown(() => area.guestRead(2, 5));
    expect(e.code).toBe("unavailable");
    expect(e.field).toBe("pvclock[2].version");
    expect(area.endHostWrite(2)).toBe(4);
    expect(area.guestRead(2)).toEqual({ ...next, version: 4 });
    // Neighbouring records are untouched.
    expect(area.guestRead(1)).toEqual({ version: 0, tscTimestamp: 0n, systemTime: 0n, tscToSystemMul: 0n, tscShift: 0, flags: 0 });
  });

  it("the record may also be supplied at the end of the write", () => {
    const area = new PvclockArea(1);
    area.beginHostWrite(0);
    expect(area.version(0) & 1).toBe(1);
    area.endHostWrite(0, record({ systemTime: 42n }));
    expect(area.guestRead(0).systemTime).toBe(42n);
  });

  it("versions wrap as a u32 and stay even after each write", () => {
    const area = new PvclockArea(1);
    const bytes = encodePvclock(record({ version: 0xffff_fffe }));
    area.setRecordBytes(0, bytes);
    expect(area.beginHostWrite(0)).toBe(0xffff_ffff);
    expect(area.endHostWrite(0)).toBe(0);
    area.hostWrite(0, record());
    expect(area.version(0)).toBe(2);
  });

  it("GUEST_STOPPED survives host rewrites until the guest clears it", () => {
    const area = new PvclockArea(2);
    area.hostWrite(0, record({ flags: PVCLOCK_TSC_STABLE_BIT | PVCLOCK_GUEST_STOPPED }));
    area.hostWrite(0, record({ flags: PVCLOCK_TSC_STABLE_BIT, systemTime: 10n }));
    area.hostWrite(0, record({ flags: 0, systemTime: 20n }));
    expect(area.guestRead(0).flags).toBe(PVCLOCK_GUEST_STOPPED);
    expect(area.flags(1)).toBe(0);
    expect(area.guestClearStopped(0)).toBe(true);
    expect(area.guestClearStopped(0)).toBe(false);
    area.hostWrite(0, record({ flags: PVCLOCK_TSC_STABLE_BIT }));
    expect(area.guestRead(0).flags).toBe(PVCLOCK_TSC_STABLE_BIT);
  });

  it("raw record bytes round-trip for snapshot transfer; odd versions are refused", () => {
    const src = new PvclockArea(3);
    src.hostWrite(1, record({ systemTime: 123n, flags: PVCLOCK_TSC_STABLE_BIT | PVCLOCK_GUEST_STOPPED }));
    const dst = new PvclockArea(3, new SharedArrayBuffer(3 * PVCLOCK_RECORD_BYTES));
    dst.setRecordBytes(1, src.recordBytes(1));
    expect(dst.guestRead(1)).toEqual(src.guestRead(1));
    src.beginHostWrite(1);
    expect(thrown(() => dst.setRecordBytes(1, src.recordBytes(1))).field).toBe("pvclock[1].version");
    expect(thrown(() => dst.setRecordBytes(0, new Uint8Array(16))).field).toBe("pvclock[0]");
  });

  it("misuse is named: bad index, nested begin, end without begin", () => {
    const area = new PvclockArea(2);
    expect(thrown(() => area.guestRead(2)).field).toBe("vcpu");
    expect(thrown(() => new PvclockArea(0)).field).toBe("count");
    area.beginHostWrite(0);
    expect(() => area.beginHostWrite(0)).toThrow(/in progress/);
    expect(() => area.endHostWrite(1)).toThrow(/without beginHostWrite/);
  });
});

describe("KVM_SET_CLOCK", () => {
  const base = { clock: 1_000n, realtime: 5_000n, nowRealNs: 5_000n, nowRawNs: 400n };

  it("never steps the clock backwards, and advances by exactly the positive real-time gap", () => {
    fc.assert(
      fc.property(
        fc.bigInt({ min: 0n, max: 1n << 62n }),
        fc.bigInt({ min: 0n, max: 1n << 62n }),
        fc.bigInt({ min: 0n, max: 1n << 62n }),
        u64Arb,
        fc.subarray([KVM_CLOCK_TSC_STABLE, KVM_CLOCK_REALTIME, KVM_CLOCK_HOST_TSC]),
        (clock, realtime, nowRealNs, nowRawNs, bits) => {
          const flags = bits.reduce((a, b) => a | b, 0);
          const r = setClockAdvance({ clock, flags, realtime, nowRealNs, nowRawNs });
          const gap = (flags & KVM_CLOCK_REALTIME) !== 0 && nowRealNs > realtime ? nowRealNs - realtime : 0n;
          expect(r.advancedClock).toBeGreaterThanOrEqual(clock);
          expect(r.advancedClock - clock).toBe(gap);
          expect(u64(nowRawNs + r.kvmclockOffset)).toBe(r.advancedClock);
        },
      ),
    );
  });

  it("keeps the offset as a signed s64", () => {
    expect(setClockAdvance({ ...base, flags: 0 }).kvmclockOffset).toBe(600n);
    expect(setClockAdvance({ ...base, flags: 0, nowRawNs: 1_600n }).kvmclockOffset).toBe(-600n);
  });

  it("refuses flags outside KVM_CLOCK_VALID_FLAGS with EINVAL naming flags", () => {
    for (const flags of [1, 16, 0x8000_0000]) {
      const e = thrown(() => setClockAdvance({ ...base, flags }));
      expect(e.errno).toBe("EINVAL");
      expect(e.field).toBe("flags");
      expect(e.message).toContain("KVM_SET_CLOCK");
    }
  });
});

describe("vmclock", () => {
  const pageArb: fc.Arbitrary<VmclockPage> = fc.record({
    magic: fc.constant(VMCLOCK_MAGIC),
    size: fc.integer({ min: VMCLOCK_STRUCT_BYTES, max: 0xffff_ffff }),
    version: fc.constant(1),
    counterId: fc.constantFrom(0, 1, 0xff),
    timeType: fc.integer({ min: 0, max: 4 }),
    seqCount: fc.integer({ min: 0, max: 0xffff_ffff }),
    disruptionMarker: u64Arb,
    flags: u64Arb,
    clockStatus: fc.integer({ min: 0, max: 4 }),
    leapSecondSmearingHint: fc.integer({ min: 0, max: 2 }),
    taiOffsetSec: fc.integer({ min: -0x8000, max: 0x7fff }),
    leapIndicator: fc.integer({ min: 0, max: 5 }),
    counterPeriodShift: fc.integer({ min: 0, max: 255 }),
    counterValue: u64Arb,
    counterPeriodFracSec: u64Arb,
    counterPeriodEsterrorRateFracSec: u64Arb,
    counterPeriodMaxerrorRateFracSec: u64Arb,
    timeSec: u64Arb,
    timeFracSec: u64Arb,
    timeEsterrorNanosec: u64Arb,
    timeMaxerrorNanosec: u64Arb,
    vmGenerationCounter: u64Arb,
  });

  it("encode/decode round-trips any valid page through 112 bytes", () => {
    fc.assert(
      fc.property(pageArb, (page) => {
        const bytes = encodeVmclock(page);
        expect(bytes.length).toBe(VMCLOCK_STRUCT_BYTES);
        expect(decodeVmclock(bytes)).toEqual(page);
      }),
    );
  });

  it("puts fields at the ABI offsets", () => {
    const page = { ...newVmclockPage(), seqCount: 6, timeSec: 0x0102n, vmGenerationCounter: 9n, taiOffsetSec: -37 };
    const view = new DataView(encodeVmclock(page).buffer);
    expect(view.getUint32(0, true)).toBe(0x4b4c4356);
    expect(view.getUint32(4, true)).toBe(112);
    expect(view.getUint16(8, true)).toBe(1);
    expect(view.getUint8(10)).toBe(1);
    expect(view.getUint32(12, true)).toBe(6);
    expect(view.getBigUint64(24, true)).toBe(VMCLOCK_FLAG_VM_GEN_COUNTER_PRESENT);
    expect(view.getInt16(36, true)).toBe(-37);
    expect(view.getBigUint64(72, true)).toBe(0x0102n);
    expect(view.getBigUint64(104, true)).toBe(9n);
  });

  it("decode names the bad field: size, magic, version, enums, padding", () => {
    const good = encodeVmclock(newVmclockPage());
    expect(thrown(() => decodeVmclock(good.slice(0, 100))).field).toBe("vmclock");
    const mutate = (at: number, value: number): Uint8Array => {
      const b = good.slice();
      b[at] = value;
      return b;
    };
    expect(thrown(() => decodeVmclock(mutate(0, 0))).field).toBe("vmclock.magic");
    expect(thrown(() => decodeVmclock(mutate(8, 2))).field).toBe("vmclock.version");
    expect(thrown(() => decodeVmclock(mutate(4, 100))).field).toBe("vmclock.size");
    expect(thrown(() => decodeVmclock(mutate(11, 9))).field).toBe("vmclock.timeType");
    expect(thrown(() => decodeVmclock(mutate(32, 1))).field).toBe("vmclock.pad");
    // A 104-byte region has no generation counter; the flag claiming one is refused.
    expect(thrown(() => decodeVmclock(mutate(4, 104))).field).toBe("vmclock.flags");
    const short = decodeVmclock(encodeVmclock({ ...newVmclockPage(), size: 104, flags: 0n }).slice(0, 104));
    expect(short.vmGenerationCounter).toBe(0n);
  });

  it("reads UTC, adds the TAI offset only when valid, refuses UNRELIABLE and other time types", () => {
    const page: VmclockPage = { ...newVmclockPage(), counterValue: 1000n, counterPeriodFracSec: 1n << 62n, timeSec: 100n, timeFracSec: 0n };
    // 2 counts at 2^-2 s each = 0.5 s.
    expect(vmclockReadTime(page, 1002n)).toEqual({ tvSec: 100n, tvNsec: 500_000_000n, fracSec: 1n << 63n });
    const tai = { ...page, timeType: VMCLOCK_TIME_TAI, taiOffsetSec: -37, flags: VMCLOCK_FLAG_TAI_OFFSET_VALID };
    expect(vmclockReadTime(tai, 1004n).tvSec).toBe(100n + 1n - 37n);
    expect(thrown(() => vmclockReadTime({ ...tai, flags: 0n }, 1004n)).field).toBe("timeType");
    expect(thrown(() => vmclockReadTime({ ...page, timeType: VMCLOCK_TIME_MONOTONIC }, 1004n)).errno).toBe("EINVAL");
    expect(thrown(() => vmclockReadTime({ ...page, clockStatus: VMCLOCK_STATUS_UNRELIABLE }, 1004n)).field).toBe("clockStatus");
  });

  it("update publishes odd → mutate → even, then rings the doorbell only if notifications are present", () => {
    const page = newVmclockPage();
    let rung = 0;
    const during: number[] = [];
    vmclockUpdate(page, (p) => {
      during.push(p.seqCount);
      p.disruptionMarker = 1n;
    }, () => rung++);
    expect(during).toEqual([1]);
    expect(page.seqCount).toBe(2);
    expect(rung).toBe(0);
    page.flags |= VMCLOCK_FLAG_NOTIFICATION_PRESENT;
    const seen: number[] = [];
    vmclockUpdate(page, (p) => {
      p.disruptionMarker = 2n;
    }, () => seen.push(page.seqCount));
    expect(seen).toEqual([4]);
  });

  it("a reader inside an update fails; after it, the reader sees the new values", () => {
    const page = newVmclockPage();
    vmclockUpdate(page, (p) => {
      p.timeSec = 5n;
      const e = thrown(() => vmclockSeqRead(p, (q) => q.timeSec, 10));
      expect(e.code).toBe("deadline_exceeded");
      expect(e.field).toBe("vmclock.seqCount");
    });
    expect(vmclockSeqRead(page, (q) => q.timeSec)).toBe(5n);
  });

  it("a failed update restores the old fields and still leaves the count even", () => {
    const page = { ...newVmclockPage(), timeSec: 7n };
    expect(() =>
      vmclockUpdate(page, (p) => {
        p.timeSec = 8n;
        throw new Error("boom");
      }),
    ).toThrow("boom");
    expect(page.timeSec).toBe(7n);
    expect(page.seqCount).toBe(2);
    expect(thrown(() => vmclockUpdate(page, (p) => void (p.clockStatus = 9))).field).toBe("vmclock.clockStatus");
    expect(page.clockStatus).toBe(0);
    expect(page.seqCount).toBe(4);
  });
});

describe("typed errors name their field", () => {
  it("for the hot arithmetic", () => {
    expect(thrown(() => scaleDelta(1n, 1n << 32n, 0)).field).toBe("mul");
    expect(thrown(() => scaleDelta(-1n, 1n, 0)).field).toBe("delta");
    expect(thrown(() => scaleDelta(1n, 1n, 1.5)).field).toBe("shift");
    expect(thrown(() => scaleTsc(1n << 64n, 1n, 48)).field).toBe("tsc");
    expect(thrown(() => scaleTsc(1n, 1n, 40 as FracBits)).field).toBe("fracBits");
    expect(thrown(() => pvclockReadCycles(record(), -1n)).field).toBe("tsc");
    expect(thrown(() => pvclockTscKhz(0n, 0)).field).toBe("tscToSystemMul");
    expect(thrown(() => tscRatio(1n, 0n, 48)).field).toBe("hostTscKhz");
    expect(thrown(() => setClockAdvance({ clock: -5n, flags: 0, realtime: 0n, nowRealNs: 0n, nowRawNs: 0n })).field).toBe("clock");
  });
});
