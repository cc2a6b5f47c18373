// Goal: the chaos reports' blackout histogram takes a million-run campaign's values (a merged
// sharded campaign has millions of migrations). Method: 3,000,000 values, as many as 1,000,000 runs
// commit; before the fix, spreading them into Math.min overflowed the call stack.
import { describe, expect, it } from "vitest";
import { logHistogram } from "../../src/chaos/report/stats.js";

describe("report histogram", () => {
  it("bins millions of values, edges from their least to their greatest decade", () => {
    const values = Array.from({ length: 3_000_000 }, (_v, i) => 1_000 + (i % 1_000_000) * 10);
    const h = logHistogram(values);
    expect(h.counts.reduce((a, n) => a + n, 0)).toBe(values.length);
    expect(h.edges[0]).toBe(1_000);
    expect(h.edges[h.edges.length - 1]).toBeCloseTo(100_000_000, -3);
  });
});
