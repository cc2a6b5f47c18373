// Goal: the true epoch a daemon takes when no launcher pins one is realtime − monotonic to a few µs,
// not /proc/stat btime's whole second (two daemons started either side of a kernel offset move
// across a second boundary were 1 s apart); a pinned TSCMIG_TRUE_EPOCH_NS is validated.
// Method: measureEpochNs over simulated clock reads (exact offsets, reads that advance by a fixed
// step, a preempted read, a realtime step back, a realtime clock that never ticks); trueEpochNs()
// against a bracket of this process's own clock reads; malformed pins refused with typed errors.
import { afterEach, describe, expect, it } from "vitest";
import { isTscmigError } from "../../src/shared/errors.js";
import { TRUE_EPOCH_ENV, trueEpochNs } from "../../src/shared/platform/index.js";
import { EPOCH_BUDGET_NS, measureEpochNs, parseTrueEpochNs } from "../../src/shared/time/epoch.js";

const S = 1_000_000_000n;
const MS = 1_000_000n;

/** A kernel whose realtime is `offsetNs` + monotonic; every read moves monotonic on by `stepNs` (or by `stall(i)` on read i). */
function kernel(offsetNs: bigint, stepNs: bigint, o: { stall?: (i: number) => bigint; realtimeShiftNs?: (monoNs: bigint) => bigint } = {}) {
  let mono = 5_000n * S + 123_457n;
  let reads = 0;
  const tick = () => {
    mono += o.stall?.(reads) ?? stepNs;
    reads++;
  };
  return {
    monotonicNs: () => {
      tick();
      return mono;
    },
    realtimeMs: () => {
      tick();
      return Number((offsetNs + mono + (o.realtimeShiftNs?.(mono) ?? 0n)) / MS);
    },
    reads: () => reads,
  };
}

const abs = (x: bigint) => (x < 0n ? -x : x);

describe("measureEpochNs", () => {
  it("brackets realtime − monotonic to the read step, whatever its fraction of a second", () => {
    // The offset this machine had when two daemons' btime disagreed: 69.4 ms past a second boundary.
    for (const offsetNs of [1_796_239_527_069_402_713n, 1_796_239_526_999_999_999n, 1_796_239_527_000_000_000n, 1_796_239_527_999_000_001n]) {
      const k = kernel(offsetNs, 300n);
      const e = measureEpochNs(k);
      expect(abs(e - offsetNs), `offset ${offsetNs}`).toBeLessThanOrEqual(1_000n); // bracket ≤ 3 reads of 300 ns
    }
    const e = measureEpochNs(kernel(1_796_239_527_069_402_713n, 300n));
    expect(e % S).not.toBe(0n); // btime's truncation would give 1_796_239_527_000_000_000
  });

  it("keeps the narrowest bracket when one read is preempted", () => {
    const offsetNs = 1_796_239_527_069_402_713n;
    // Read 40 stalls 1.5 ms (a context switch): the tick caught across it has a bracket that wide.
    const k = kernel(offsetNs, 250n, { stall: (i) => (i === 40 ? 1_500_000n : 250n) });
    expect(abs(measureEpochNs(k) - offsetNs)).toBeLessThanOrEqual(1_000n);
  });

  it("does not take a realtime step back for a tick", () => {
    const offsetNs = 1_796_239_527_069_402_713n;
    let stepped = false;
    const k = kernel(offsetNs, 300n, {
      // 100 µs in, realtime is stepped back 5 ms and stays there.
      realtimeShiftNs: (mono) => {
        if (mono > 5_000n * S + 100_000n) stepped = true;
        return stepped ? -5n * MS : 0n;
      },
    });
    expect(abs(measureEpochNs(k) - (offsetNs - 5n * MS))).toBeLessThanOrEqual(1_000n);
  });

  it("gives up after its budget on a realtime clock that never ticks, with a millisecond read", () => {
    let mono = 0n;
    const frozen = { monotonicNs: () => (mono += 1_000n), realtimeMs: () => 1_796_239_527_069 };
    const e = measureEpochNs(frozen);
    expect(mono).toBeGreaterThan(EPOCH_BUDGET_NS);
    expect(mono).toBeLessThan(2n * EPOCH_BUDGET_NS);
    expect(abs(e - (1_796_239_527_069n * MS - mono))).toBeLessThanOrEqual(1_000n);
  });
});

describe("trueEpochNs", () => {
  const saved = process.env[TRUE_EPOCH_ENV];
  afterEach(() => {
    if (saved === undefined) delete process.env[TRUE_EPOCH_ENV];
    else process.env[TRUE_EPOCH_ENV] = saved;
  });

  it("without a pin, is this kernel's realtime − monotonic (to the ms reads' bracket), not a whole second", () => {
    delete process.env[TRUE_EPOCH_ENV];
    const e = trueEpochNs();
    expect(trueEpochNs()).toBe(e); // measured once per process: every daemon it starts gets the same
    // Realtime is in [d, d + 1 ms) at the Date.now() read, which lies between the two hrtime reads.
    const before = process.hrtime.bigint();
    const d = BigInt(Date.now()) * MS;
    const after = process.hrtime.bigint();
    // Only a step of the kernel's realtime since the measurement can move it out (none is expected in a test run).
    expect(e).toBeGreaterThanOrEqual(d - after);
    expect(e).toBeLessThan(d + MS - before);
  });

  it("takes a pinned epoch as given, an empty one as unset, and refuses a malformed one with a typed error", () => {
    process.env[TRUE_EPOCH_ENV] = "1700000000123456789";
    expect(trueEpochNs()).toBe(1_700_000_000_123_456_789n);
    process.env[TRUE_EPOCH_ENV] = "";
    expect(trueEpochNs() % S).not.toBe(1_700_000_000_123_456_789n % S);
    // 2^62 + 1 and u64's max: realtime (epoch + true time) would overflow what the wire carries.
    for (const bad of ["-5", "1e18", "12 ", "0x10", "99999999999999999999", "4611686018427387905", "18446744073709551615"]) {
      process.env[TRUE_EPOCH_ENV] = bad;
      let err: unknown;
      try {
        trueEpochNs();
      } catch (e) {
        err = e;
      }
      expect(isTscmigError(err) && err.code === "invalid_argument" && err.field === TRUE_EPOCH_ENV, `${bad}: ${String(err)}`).toBe(true);
    }
    expect(parseTrueEpochNs("4611686018427387904", "x")).toBe(1n << 62n);
  });
});
