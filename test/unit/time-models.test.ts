// Goal: the simulated-time building blocks behave as documented: offset models (each formula, their
// bounds), an emulated host's clocks (the same reading at an instant however it is asked), run-time
// skew updates (continuous where they say so, small however many arrive), the
// SimScheduler (order, cancellation, time only forward) and SeededRandom (replayable, forks
// independent). Method: example checks of each formula plus fast-check properties over random
// models and update sequences.

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type Clock, sleep } from "../../src/shared/time/clock.js";
import {
  maxAbsOffsetNs,
  maxSlopePpm,
  type OffsetModel,
  offsetAt,
  sum,
  validateOffsetModel,
  ZERO_MODEL,
} from "../../src/shared/time/offset-model.js";
import { deriveSeed, hashUnit, SeededRandom } from "../../src/shared/time/random.js";
import { SimClock, SimScheduler } from "../../src/shared/time/sim.js";
import { SkewController, type SkewUpdate } from "../../src/shared/time/skew.js";
import { EmulatedHost } from "../../src/shared/hypervisor/host.js";

const MS = 1_000_000n;
const S = 1_000_000_000n;
const abs = (x: bigint) => (x < 0n ? -x : x);

describe("offset models", () => {
  it("evaluate each kind's formula", () => {
    expect(offsetAt({ kind: "constant", offsetNs: -7n }, 123n)).toBe(-7n);
    expect(offsetAt({ kind: "drift", ppm: 100, fromNs: 10n * S }, 5n * S)).toBe(0n);
    expect(offsetAt({ kind: "drift", ppm: 100, fromNs: 10n * S }, 20n * S)).toBe(1n * MS); // 100 ppm of 10 s
    expect(offsetAt({ kind: "drift", ppm: -0.5, fromNs: 0n }, 2n * S)).toBe(-1_000n);
    expect(offsetAt({ kind: "step", atNs: 5n, stepNs: 9n }, 4n)).toBe(0n);
    expect(offsetAt({ kind: "step", atNs: 5n, stepNs: 9n }, 5n)).toBe(9n);
    const periodic: OffsetModel = { kind: "periodic", amplitudeNs: 1_000n, periodNs: 4n * S, phaseNs: 0n };
    expect([0n, 1n * S, 2n * S, 3n * S].map((t) => offsetAt(periodic, t))).toEqual([0n, 1_000n, 0n, -1_000n]);
    const strobe: OffsetModel = { kind: "strobe", deltaNs: 50n, periodNs: 10n, fromNs: 100n, untilNs: 140n };
    expect([99n, 100n, 109n, 110n, 120n, 139n, 140n].map((t) => offsetAt(strobe, t))).toEqual([0n, 50n, 50n, 0n, 50n, 0n, 0n]);
    expect(offsetAt({ kind: "sum", parts: [{ kind: "constant", offsetNs: 3n }, { kind: "step", atNs: 0n, stepNs: 4n }] }, 1n)).toBe(7n);
  });

  it("jitter is a pure function of (seed, interval): constant within an interval, the same on every evaluation", () => {
    const j: OffsetModel = { kind: "jitter", amplitudeNs: 1_000n, intervalNs: 10n * MS, seed: 42n };
    expect(offsetAt(j, 10n * MS)).toBe(offsetAt(j, 19n * MS));
    expect(offsetAt(j, 10n * MS)).toBe(offsetAt({ ...j }, 10n * MS));
    const values = new Set(Array.from({ length: 50 }, (_, k) => offsetAt(j, BigInt(k) * 10n * MS)));
    expect(values.size).toBeGreaterThan(10);
    expect(offsetAt(j, -1n)).toBe(offsetAt(j, -10n * MS)); // negative times fall in the interval below
  });

  const modelArb: fc.Arbitrary<OffsetModel> = fc.letrec((tie) => ({
    leaf: fc.oneof(
      fc.record({ kind: fc.constant("constant" as const), offsetNs: fc.bigInt({ min: -10n * S, max: 10n * S }) }),
      fc.record({ kind: fc.constant("drift" as const), ppm: fc.integer({ min: -500, max: 500 }), fromNs: fc.bigInt({ min: 0n, max: 100n * S }) }),
      fc.record({ kind: fc.constant("step" as const), atNs: fc.bigInt({ min: 0n, max: 100n * S }), stepNs: fc.bigInt({ min: -S, max: S }) }),
      fc.record({ kind: fc.constant("periodic" as const), amplitudeNs: fc.bigInt({ min: 0n, max: MS }), periodNs: fc.bigInt({ min: 1n, max: 100n * S }), phaseNs: fc.bigInt({ min: 0n, max: S }) }),
      fc.record({ kind: fc.constant("jitter" as const), amplitudeNs: fc.bigInt({ min: 0n, max: MS }), intervalNs: fc.bigInt({ min: 1n, max: S }), seed: fc.bigInt({ min: 0n, max: 1n << 63n }) }),
      fc.record({ kind: fc.constant("strobe" as const), deltaNs: fc.bigInt({ min: -S, max: S }), periodNs: fc.bigInt({ min: 1n, max: S }), fromNs: fc.bigInt({ min: 0n, max: 10n * S }), untilNs: fc.bigInt({ min: 10n * S, max: 100n * S }) }),
    ),
    model: fc.oneof({ maxDepth: 2 }, tie("leaf"), fc.record({ kind: fc.constant("sum" as const), parts: fc.array(tie("model"), { maxLength: 4 }) })),
  })).model as fc.Arbitrary<OffsetModel>;

  it("never exceed maxAbsOffsetNs over the horizon, and valid models validate", () => {
    const horizon = 200n * S;
    fc.assert(
      fc.property(modelArb, fc.array(fc.bigInt({ min: 0n, max: horizon }), { minLength: 1, maxLength: 20 }), (m, ts) => {
        validateOffsetModel(m, "m");
        const bound = maxAbsOffsetNs(m, horizon);
        for (const t of ts) expect(abs(offsetAt(m, t))).toBeLessThanOrEqual(bound);
      }),
      { numRuns: 300 },
    );
  });

  it("continuous models never change faster than maxSlopePpm (plus 1 ns of rounding per part)", () => {
    const continuous = modelArb.filter((m) => Number.isFinite(maxSlopePpm(m)));
    fc.assert(
      fc.property(continuous, fc.bigInt({ min: 0n, max: 100n * S }), fc.bigInt({ min: 1n, max: 10n * S }), (m, t, dt) => {
        const slope = maxSlopePpm(m);
        const parts = m.kind === "sum" ? BigInt(m.parts.length) + 1n : 1n;
        const change = abs(offsetAt(m, t + dt) - offsetAt(m, t));
        expect(Number(change)).toBeLessThanOrEqual((slope * Number(dt)) / 1e6 + 2 * Number(parts) + 1e-6 * Number(change));
      }),
      { numRuns: 300 },
    );
  });

  it("sum() flattens, drops zero constants, and returns ZERO_MODEL for nothing", () => {
    expect(sum()).toEqual(ZERO_MODEL);
    expect(sum(ZERO_MODEL, { kind: "constant", offsetNs: 0n })).toEqual(ZERO_MODEL);
    const d: OffsetModel = { kind: "drift", ppm: 1, fromNs: 0n };
    expect(sum(ZERO_MODEL, d)).toBe(d);
    expect(sum({ kind: "sum", parts: [d, d] }, d)).toEqual({ kind: "sum", parts: [d, d, d] });
  });
});

describe("an emulated host's clocks", () => {
  it("read at instants in any order, repeated or not, equal a fresh host's reading at each (the last instant's reading is kept)", () => {
    const crystal: OffsetModel = sum({ kind: "drift", ppm: 37.5, fromNs: 2n * S }, { kind: "periodic", amplitudeNs: 40_000n, periodNs: 90n * S, phaseNs: 11n });
    const mk = (clock: Clock) => new EmulatedHost({ name: "h", clock, epochNs: 0n, tscKhz: 2_345_678n, tsc0: 987_654_321n, rawBaseNs: 5n * S, crystal });
    let now = 0n; // true time that may go back, to ask the host about any instant
    const host = mk({ monotonicNs: () => now, realtimeNs: () => now });
    fc.assert(
      fc.property(fc.array(fc.bigInt({ min: 0n, max: 600n * S }), { minLength: 1, maxLength: 30 }), (ts) => {
        for (const t of [...ts, ...ts.reverse(), ts[0] as bigint]) {
          const fresh = mk(new SimClock(t));
          expect(host.tscAt(t)).toBe(fresh.tscAt(t));
          expect(host.rawNsAt(t)).toBe(fresh.rawNsAt(t));
          expect(host.tscAt(t)).toBe(fresh.tscAt(t));
          now = t;
          expect(host.rawNs()).toBe(fresh.rawNs());
        }
      }),
      { numRuns: 200 },
    );
  });
});

describe("SkewController (run-time skew injection)", () => {
  it("a drift change is continuous at the instant and runs at the new rate after it", () => {
    const s = new SkewController({ kind: "constant", offsetNs: 5n * MS });
    s.apply({ driftPpm: 100 }, 10n * S);
    expect(s.offsetAt(10n * S)).toBe(5n * MS);
    expect(s.offsetAt(20n * S)).toBe(5n * MS + 1n * MS);
    s.apply({ driftPpm: -50 }, 20n * S);
    expect(s.offsetAt(20n * S)).toBe(6n * MS);
    expect(s.offsetAt(40n * S)).toBe(6n * MS - 1n * MS);
    s.apply({ driftPpm: 0 }, 40n * S);
    expect(s.offsetAt(100n * S)).toBe(5n * MS);
  });

  it("offsetNs sets the skew exactly, keeping the drift rate from now; stepNs adds a step now; reset returns to 0", () => {
    const s = new SkewController();
    s.apply({ driftPpm: 10 }, 0n);
    s.apply({ offsetNs: -3n * MS }, 10n * S);
    expect(s.offsetAt(10n * S)).toBe(-3n * MS);
    expect(s.offsetAt(110n * S)).toBe(-3n * MS + 1n * MS);
    s.apply({ stepNs: 7n * MS }, 110n * S);
    expect(s.offsetAt(110n * S)).toBe(-2n * MS + 7n * MS);
    s.apply({ reset: true }, 200n * S);
    expect(s.offsetAt(200n * S)).toBe(0n);
    expect(s.offsetAt(900n * S)).toBe(0n);
  });

  it("a new wander starts at 0 (continuous); jitter and wander of amplitude 0 remove them", () => {
    const s = new SkewController({ kind: "constant", offsetNs: 1_000n });
    s.apply({ wanderAmplitudeNs: 500n, wanderPeriodNs: 4n * S }, 3n * S);
    expect(s.offsetAt(3n * S)).toBe(1_000n);
    expect(s.offsetAt(4n * S)).toBe(1_500n);
    s.apply({ jitterNs: 80n, jitterIntervalNs: MS }, 5n * S);
    expect(abs(s.offsetAt(6n * S) - 1_000n - 0n)).toBeLessThanOrEqual(80n + 500n);
    s.apply({ wanderAmplitudeNs: 0n, jitterNs: 0n }, 7n * S);
    expect(s.offsetAt(9n * S)).toBe(1_000n);
    expect(s.state.model).toEqual({ kind: "constant", offsetNs: 1_000n });
  });

  it("a drift change keeps the initial model's wander running instead of freezing it", () => {
    const wander: OffsetModel = { kind: "periodic", amplitudeNs: 1n * MS, periodNs: 8n * S, phaseNs: 0n };
    const s = new SkewController(wander);
    s.apply({ driftPpm: 10 }, 1n * S);
    // 2 s after the change the wander has moved on; the drift adds 10 ppm of 2 s.
    expect(s.offsetAt(3n * S)).toBe(offsetAt(wander, 3n * S) + 20_000n);
  });

  it("stays small and valid however many updates arrive (steps fold into one constant)", () => {
    const s = new SkewController({ kind: "jitter", amplitudeNs: 10n, intervalNs: MS, seed: 1n });
    for (let k = 0n; k < 500n; k++) s.apply({ stepNs: 1_000n, driftPpm: Number(k % 7n) }, k * S);
    const m = s.state.model;
    expect(m.kind === "sum" ? m.parts.length : 1).toBeLessThanOrEqual(4);
    validateOffsetModel(m, "skew");
    expect(abs(s.offsetAt(499n * S) - 500n * 1_000n - sumOfDrifts())).toBeLessThanOrEqual(10n);
    function sumOfDrifts(): bigint {
      let acc = 0n;
      for (let k = 0n; k < 499n; k++) acc += (S * ((k % 7n) * 1000n)) / 1_000_000_000n;
      return acc;
    }
  });

  const updateArb: fc.Arbitrary<SkewUpdate> = fc.record(
    {
      offsetNs: fc.bigInt({ min: -10n * S, max: 10n * S }),
      driftPpm: fc.integer({ min: -500, max: 500 }),
      stepNs: fc.bigInt({ min: -S, max: S }),
      wanderAmplitudeNs: fc.bigInt({ min: 0n, max: MS }),
      wanderPeriodNs: fc.bigInt({ min: 1n, max: 100n * S }),
      maxerrorNs: fc.bigInt({ min: 0n, max: S }),
    },
    { requiredKeys: [] },
  );

  it("every update is continuous at its instant except by the offset it sets or the step it adds, and the model stays valid", () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(updateArb, fc.bigInt({ min: 0n, max: 10n * S })), { maxLength: 40 }), (updates) => {
        const s = new SkewController({ kind: "constant", offsetNs: 123n });
        let t = 0n;
        for (const [u, dt] of updates) {
          t += dt;
          if (u.wanderAmplitudeNs !== undefined && u.wanderPeriodNs === undefined) continue;
          const before = s.offsetAt(t);
          s.apply(u, t);
          const after = s.offsetAt(t);
          if (u.offsetNs !== undefined) expect(after).toBe(u.offsetNs + (u.stepNs ?? 0n));
          else expect(after).toBe(before + (u.stepNs ?? 0n));
          validateOffsetModel(s.state.model, "skew");
        }
      }),
      { numRuns: 200 },
    );
  });
});

describe("SimScheduler", () => {
  it("runs events in time order, same-instant events in scheduling order, and moves the clock to each", () => {
    const clock = new SimClock(100n);
    const sched = new SimScheduler(clock);
    const log: string[] = [];
    sched.after(30n, () => log.push(`c@${clock.monotonicNs()}`));
    sched.after(10n, () => log.push(`a@${clock.monotonicNs()}`));
    sched.after(10n, () => log.push(`b@${clock.monotonicNs()}`));
    sched.after(-5n, () => log.push(`now@${clock.monotonicNs()}`));
    sched.runAll();
    expect(log).toEqual(["now@100", "a@110", "b@110", "c@130"]);
  });

  it("a cancelled event never runs; runUntil stops at the instant and sets the clock to it", () => {
    const clock = new SimClock();
    const sched = new SimScheduler(clock);
    let ran = 0;
    const t = sched.after(5n, () => ran++);
    sched.after(20n, () => ran++);
    t.cancel();
    expect(sched.runUntil(10n)).toBe(0);
    expect(clock.monotonicNs()).toBe(10n);
    expect(ran).toBe(0);
    sched.runUntil(20n);
    expect(ran).toBe(1);
  });

  it("the clock never goes back", () => {
    const clock = new SimClock(50n);
    clock.advanceTo(10n);
    expect(clock.monotonicNs()).toBe(50n);
    expect(clock.realtimeNs() - clock.monotonicNs()).toBe(1_767_225_600_000_000_000n);
  });

  it("an event that reschedules itself at the same instant hits the event limit instead of hanging", () => {
    const sched = new SimScheduler(new SimClock());
    const loop = () => void sched.after(0n, loop);
    loop();
    expect(() => sched.runUntil(1n, 1000)).toThrow(/exceeded 1000 events/);
  });

  it("drain lets promise continuations schedule more simulated work (sleep on simulated time)", async () => {
    const clock = new SimClock();
    const sched = new SimScheduler(clock);
    const seen: bigint[] = [];
    const task = (async () => {
      for (let k = 0; k < 3; k++) {
        await sleep(sched, 1n * S);
        seen.push(clock.monotonicNs());
      }
    })();
    await sched.drain();
    await task;
    expect(seen).toEqual([1n * S, 2n * S, 3n * S]);
  });
});

describe("SeededRandom", () => {
  it("one seed replays one stream; forks depend only on the parent seed and their label", () => {
    const a = new SeededRandom(77n);
    const b = new SeededRandom(77n);
    expect(Array.from({ length: 10 }, () => a.u32())).toEqual(Array.from({ length: 10 }, () => b.u32()));
    const p = new SeededRandom(5n);
    const f1 = p.fork("net");
    p.u32();
    p.u32();
    const f2 = p.fork("net");
    expect(f1.u32()).toBe(f2.u32());
    expect(p.fork("net").seed).not.toBe(p.fork("disk").seed);
    expect(deriveSeed(5n, "net")).toBe(p.fork("net").seed);
  });

  it("int, bigint, float and pick stay in range", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.integer({ min: -1000, max: 1000 }), fc.integer({ min: 0, max: 1000 }), (seed, lo, span) => {
        const r = new SeededRandom(seed);
        for (let k = 0; k < 20; k++) {
          const i = r.int(lo, lo + span);
          expect(i).toBeGreaterThanOrEqual(lo);
          expect(i).toBeLessThanOrEqual(lo + span);
          const b = r.bigint(-5n, BigInt(span));
          expect(b >= -5n && b <= BigInt(span)).toBe(true);
          const f = r.float();
          expect(f >= 0 && f < 1).toBe(true);
        }
        expect(["x", "y"]).toContain(r.pick(["x", "y"]));
      }),
      { numRuns: 100 },
    );
    expect(() => new SeededRandom(1n).int(3, 2)).toThrow(RangeError);
    expect(() => new SeededRandom(1n).pick([])).toThrow(RangeError);
  });

  it("hashUnit is a pure function into [0, 1)", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.bigInt({ min: -(1n << 40n), max: 1n << 40n }), (seed, i) => {
        const u = hashUnit(seed, i);
        expect(u).toBe(hashUnit(seed, i));
        expect(u >= 0 && u < 1).toBe(true);
      }),
      { numRuns: 200 },
    );
  });
});
