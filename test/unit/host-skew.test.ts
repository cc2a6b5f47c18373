// Goal: simulated and live chaos runs draw host skew from one generator, with Jepsen's ranges, and a
// live daemon can keep every part it is given. Method: seeded draws checked against the ranges and a
// pinned model (a change of draw order would silently change every simulated history); the live
// settings applied to a SkewController the way a daemon applies its flags and PUT /v1/host/clock.
import { describe, expect, it } from "vitest";
import { daemonSkewSettings, drawSkewModel, jepsenBumpNs, LIVE_SKEW_PARTS, skewUpdateBody } from "../../src/chaos/host-skew.js";
import { maxAbsOffsetNs, type OffsetModel, sum, validateOffsetModel, ZERO_MODEL } from "../../src/shared/time/offset-model.js";
import { SeededRandom } from "../../src/shared/time/random.js";
import { SkewController } from "../../src/shared/time/skew.js";

const MS = 1_000_000n;
const S = 1_000_000_000n;
const abs = (x: bigint) => (x < 0n ? -x : x);
const partsOf = (m: OffsetModel) => (m.kind === "sum" ? m.parts : [m]);

describe("Jepsen bumps", () => {
  it("are log-uniform in [4 ms, 262 s] with either sign", () => {
    const r = new SeededRandom(7n);
    const draws = Array.from({ length: 4000 }, () => jepsenBumpNs(r, 1000n * S));
    for (const v of draws) expect(abs(v) >= 4n * MS && abs(v) <= 262_144n * MS, String(v)).toBe(true);
    const negative = draws.filter((v) => v < 0n).length / draws.length;
    expect(negative).toBeGreaterThan(0.45);
    expect(negative).toBeLessThan(0.55);
    // Log-uniform: half of the magnitudes lie below the geometric middle of the range (about 1 s).
    const below = draws.filter((v) => abs(v) < 1_024n * MS).length / draws.length;
    expect(below).toBeGreaterThan(0.45);
    expect(below).toBeLessThan(0.55);
  });

  it("keep within a cap, and a cap below 4 ms draws uniformly below it", () => {
    const r = new SeededRandom(8n);
    for (let i = 0; i < 500; i++) expect(abs(jepsenBumpNs(r, 50n * MS)) <= 50n * MS).toBe(true);
    const small = Array.from({ length: 500 }, () => jepsenBumpNs(r, 3n * MS));
    expect(small.every((v) => abs(v) <= 3n * MS)).toBe(true);
    expect(small.some((v) => abs(v) < MS)).toBe(true);
  });
});

describe("skew models", () => {
  it("draw the same model for the same seed, pinned so that simulated histories stay put", () => {
    const draw = () => drawSkewModel(new SeededRandom(41n), { capNs: 262_144n * MS, horizonNs: 10n * S });
    expect(draw()).toEqual(draw());
    expect(draw()).toEqual({
      kind: "sum",
      parts: [
        { kind: "constant", offsetNs: -4433477462n },
        { kind: "drift", ppm: -357.4, fromNs: 0n },
        { kind: "step", atNs: 4488557788n, stepNs: 5290257n },
        { kind: "strobe", deltaNs: 10846940022n, periodNs: 180331698n, fromNs: 3563557761n, untilNs: 26815670132n },
        { kind: "periodic", amplitudeNs: 69201n, periodNs: 32354689974n, phaseNs: 11341079959n },
        { kind: "jitter", amplitudeNs: 380907n, intervalNs: 356713913n, seed: 4325707106169146120n },
      ],
    });
  });

  it("are valid, keep each part within the cap, and a zero cap means no skew", () => {
    for (let seed = 1n; seed <= 300n; seed++) {
      const m = drawSkewModel(new SeededRandom(seed), { capNs: 50n * MS, horizonNs: 10n * S });
      validateOffsetModel(m, "skew");
      for (const p of partsOf(m)) if (p.kind !== "drift") expect(maxAbsOffsetNs(p, 10n * S) <= 50n * MS, JSON.stringify(p, (_k, v) => String(v))).toBe(true);
    }
    expect(drawSkewModel(new SeededRandom(1n), { capNs: 0n, horizonNs: 10n * S })).toEqual(ZERO_MODEL);
  });

  it("live hosts draw from the same generator: the same offset and drift for a seed, never a step or strobe", () => {
    let kinds = new Set<string>();
    for (let seed = 1n; seed <= 300n; seed++) {
      const sim = partsOf(drawSkewModel(new SeededRandom(seed), { capNs: 5n * S, horizonNs: 10n * S }));
      const live = partsOf(drawSkewModel(new SeededRandom(seed), { capNs: 5n * S, horizonNs: 10n * S, parts: LIVE_SKEW_PARTS }));
      const firstTwo = (ps: OffsetModel[]) => ps.filter((p) => (p.kind === "constant" && p.offsetNs !== 0n) || p.kind === "drift");
      expect(firstTwo(live)).toEqual(firstTwo(sim));
      kinds = new Set([...kinds, ...live.map((p) => p.kind)]);
    }
    expect([...kinds].sort()).toEqual(["constant", "drift", "jitter", "periodic"]);
  });
});

describe("a live daemon keeps the skew it is given", () => {
  it("start flags and one PUT /v1/host/clock rebuild every part of a live model", () => {
    for (let seed = 1n; seed <= 100n; seed++) {
      const model = drawSkewModel(new SeededRandom(seed), { capNs: 5n * S, horizonNs: 0n, parts: LIVE_SKEW_PARTS });
      const s = daemonSkewSettings(model);
      // As the daemon builds its skew from --skew-offset-ns and --skew-drift-ppm, then applies the PUT.
      const c = new SkewController(sum({ kind: "constant", offsetNs: s.offsetNs }, s.driftPpm !== 0 ? { kind: "drift", ppm: s.driftPpm, fromNs: 0n } : ZERO_MODEL), 0n, 99n);
      if (s.update) c.apply(s.update, 0n);
      const strip = (m: OffsetModel) =>
        partsOf(m)
          .map((p) => (p.kind === "periodic" ? { ...p, phaseNs: 0n } : p.kind === "jitter" ? { ...p, seed: 0n } : p))
          .sort((a, b) => a.kind.localeCompare(b.kind));
      // The daemon picks the wander's phase and the jitter's seed itself.
      expect(strip(c.state.model)).toEqual(strip(model));
    }
  });

  it("the PUT body carries 64-bit values as decimal strings", () => {
    expect(skewUpdateBody({ wanderAmplitudeNs: 5n, wanderPeriodNs: 6_000_000_000n, jitterNs: 7n, jitterIntervalNs: 8n })).toEqual({ wanderAmplitudeNs: "5", wanderPeriodNs: "6000000000", jitterNs: "7", jitterIntervalNs: "8" });
  });

  it("a step or strobe cannot be handed to a daemon to keep", () => {
    expect(() => daemonSkewSettings({ kind: "step", atNs: S, stepNs: MS })).toThrow(/cannot keep a step/);
  });
});
