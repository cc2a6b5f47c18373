// Goal: the report's numbers read as people write them: three significant digits in the unit that
// fits (never exponent notation, even where rounding crosses into the next unit), axis ticks as
// round values with their unit, and histogram edges on whole decades so an axis can label them.
// Method: the pure formatting and binning functions on edge values.
import { describe, expect, it } from "vitest";
import { fmtNs, fmtTick, logHistogram } from "../../src/chaos/report/stats.js";

describe("report number formats", () => {
  it("formats durations without exponents, also where rounding reaches the next unit", () => {
    expect([fmtNs(0), fmtNs(999), fmtNs(999.6), fmtNs(999_999), fmtNs(-999_999_999), fmtNs(4_910_000), fmtNs(1234)]).toEqual(["0 ns", "999 ns", "1.00 µs", "1.00 ms", "-1.00 s", "4.91 ms", "1.23 µs"]);
  });

  it("labels ticks with round values and units", () => {
    expect([1, 10, 100, 1e3, 1e4, 1e6, 2.5e9].map(fmtTick)).toEqual(["1 ns", "10 ns", "100 ns", "1 µs", "10 µs", "1 ms", "2.5 s"]);
  });

  it("bins on whole decades so every decade is an edge", () => {
    const h = logHistogram([2e5, 3e6, 4e6, 7e7]);
    expect(h.edges[0]).toBe(1e5);
    expect(h.edges.at(-1)).toBeCloseTo(1e8);
    const decades = h.edges.filter((e) => Math.abs(Math.log10(e) - Math.round(Math.log10(e))) < 1e-9);
    expect(decades.length).toBe(4);
    expect(h.counts.reduce((a, n) => a + n, 0)).toBe(4);
  });
});
