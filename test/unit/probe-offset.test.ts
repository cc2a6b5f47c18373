// Goal: the probe estimator's offset θ (destination − source realtime) from several NTP-style
// exchanges contains the truth within its bound whatever the legs, stalls and clock rates, and is
// as narrow as the quickest leg each way allows — never wider than the least-delay exchange alone.
// Method: true instants of back-to-back exchanges drawn by fast-check (calm or stalled legs); each
// host's realtime runs at its own rate (within ±500 ppm) from its own offset; θ is checked at the
// last exchange's answer, where probeOffset gives it.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { DRIFT_ALLOWANCE_PPM, type ProbeExchange, probeOffset } from "../../src/shared/migration/blackout.js";

const US = 1_000n;
const MS = 1_000_000n;
const abs = (x: bigint) => (x < 0n ? -x : x);

interface Host {
  offsetNs: bigint;
  ppm: bigint;
}
/** A host's realtime at true instant t. */
const at = (h: Host, t: bigint) => h.offsetNs + t + (t * h.ppm) / 1_000_000n;

interface Leg {
  fwd: bigint;
  hold: bigint;
  back: bigint;
}

/** Exchanges one after another (gap between them), and the true instant of the last answer. */
function exchanges(src: Host, dst: Host, legs: readonly Leg[], gap: bigint): { xs: ProbeExchange[]; lastNs: bigint } {
  const xs: ProbeExchange[] = [];
  let t = 10n * MS;
  let lastNs = t;
  for (const l of legs) {
    const t2 = t + l.fwd;
    const t3 = t2 + l.hold;
    const t4 = t3 + l.back;
    xs.push({ t1: at(src, t), t2: at(dst, t2), t3: at(dst, t3), t4: at(src, t4) });
    lastNs = t4;
    t = t4 + gap;
  }
  return { xs, lastNs };
}

/** What the least-delay exchange alone bounds θ by (the filter before intersection), held to the last answer. */
function leastDelayBound(xs: readonly ProbeExchange[]): bigint {
  const last = xs[xs.length - 1] as ProbeExchange;
  // 1000 ppm over the true span, which a clock up to 500 ppm slow measured as d (blackout.ts driftAllowance).
  const den = 1_000_000n - DRIFT_ALLOWANCE_PPM;
  const drift = (d: bigint) => (abs(d) * 2n * DRIFT_ALLOWANCE_PPM + den - 1n) / den;
  return xs.reduce((m, e) => {
    const delay = e.t4 - e.t1 - (e.t3 - e.t2);
    const b = (delay > 0n ? delay : 0n) / 2n + 1n + drift(e.t4 - e.t1) + drift(last.t4 - e.t4);
    return b < m ? b : m;
  }, 1n << 62n);
}

const leg = fc.oneof(fc.bigInt({ min: 0n, max: 300n * US }), fc.bigInt({ min: 0n, max: 20n * MS }));
const host = fc.record({ offsetNs: fc.bigInt({ min: -2_000_000_000n, max: 2_000_000_000n }), ppm: fc.bigInt({ min: -500n, max: 500n }) });
const legs = fc.array(fc.record({ fwd: leg, hold: fc.bigInt({ min: 0n, max: 100n * US }), back: leg }), { minLength: 1, maxLength: 8 });

describe("probe offset", () => {
  it("contains the true offset at the last answer within its bound, for any legs, stalls and clock rates", () => {
    fc.assert(
      fc.property(host, host, legs, leg, (src, dst, ls, gap) => {
        const { xs, lastNs } = exchanges(src, dst, ls, gap);
        const p = probeOffset(xs);
        const theta = at(dst, lastNs) - at(src, lastNs);
        expect(abs(p.offsetNs - theta) <= p.boundNs, `error ${p.offsetNs - theta} bound ${p.boundNs}`).toBe(true);
      }),
      { numRuns: 3000 },
    );
  });

  it("is never wider than the least-delay exchange alone", () => {
    fc.assert(
      fc.property(host, host, legs, leg, (src, dst, ls, gap) => {
        const { xs } = exchanges(src, dst, ls, gap);
        expect(probeOffset(xs).boundNs <= leastDelayBound(xs)).toBe(true);
      }),
    );
  });

  it("takes the quickest forward leg from one exchange and the quickest back leg from another", () => {
    const src = { offsetNs: 0n, ppm: 0n };
    const dst = { offsetNs: 1_000_000_000n, ppm: 0n };
    // Each exchange has one quick leg and one slow one: alone, each bounds θ by ±(30 + 900)/2 µs.
    const ls = [
      { fwd: 30n * US, hold: 10n * US, back: 900n * US },
      { fwd: 900n * US, hold: 10n * US, back: 40n * US },
    ];
    const { xs } = exchanges(src, dst, ls, 100n * US);
    const p = probeOffset(xs);
    // θ ∈ [θ − 40 µs, θ + 30 µs]: error 5 µs, bound 35 µs (plus a few µs of rate slack).
    expect(abs(p.offsetNs - 1_000_000_000n)).toBeLessThanOrEqual(8n * US);
    expect(p.boundNs).toBeLessThanOrEqual(40n * US);
    expect(leastDelayBound(xs)).toBeGreaterThan(400n * US);
  });

  it("falls back to the least-delay exchange when the exchanges contradict each other (a step between them)", () => {
    const src = { offsetNs: 0n, ppm: 0n };
    const before = exchanges(src, { offsetNs: 0n, ppm: 0n }, [{ fwd: 50n * US, hold: 0n, back: 50n * US }], 0n).xs;
    const after = exchanges(src, { offsetNs: 5n * MS, ppm: 0n }, [{ fwd: 900n * US, hold: 0n, back: 20n * US }, { fwd: 30n * US, hold: 0n, back: 900n * US }], 0n).xs;
    const p = probeOffset([...before, ...after]);
    expect(p.offsetNs).toBe(0n); // the first exchange has the least delay
  });
});

describe("probe offset, found cases", () => {
  it("clocks at opposite extremes of their allowance over a 6 ms wait between exchanges (the drift allowance is over the true span)", () => {
    const src = { offsetNs: 0n, ppm: -500n };
    const dst = { offsetNs: 0n, ppm: 500n };
    const { xs, lastNs } = exchanges(src, dst, [{ fwd: 0n, hold: 0n, back: 48_032n }, { fwd: 5_518_913n, hold: 26_042n, back: 267_534n }], 185_479n);
    const p = probeOffset(xs);
    const theta = at(dst, lastNs) - at(src, lastNs);
    expect(abs(p.offsetNs - theta) <= p.boundNs, `error ${p.offsetNs - theta} bound ${p.boundNs}`).toBe(true);
  });
});
