// Goal: the spread table BENCHMARKS.md quotes is read straight from the bench's JSON — each run's
// figures in its row, the range of each column over the runs that have it, "-" where a run lacks a
// section. Method: two hand-written results in the bench's JSON shape (64-bit values as strings).
import { describe, expect, it } from "vitest";
import { renderSpread } from "../../src/bench/spread.js";

const run = (bareP50: string, oneSidedP99: string, outside: number) => ({
  baseline: { grpcBare: { p50Ns: bareP50 }, grpcUnary: { p50Ns: "900000" } },
  blackout: { "1": { p50Ns: "1500000", ratios: { p50ToPing: 1.6 } } },
  error: { "one-sided": { "+1s": { p99Ns: oneSidedP99, outsideBound: outside }, "-1s": { p99Ns: "20000", outsideBound: 0 } }, probe: { "+1s": { p99Ns: "30000", outsideBound: 0 } } },
  targets: [{ name: "1 vCPU blackout p50 ≤ 2.5 × bare grpc-js unary p50", value: "2.21×" }],
});

describe("bench spread", () => {
  it("puts each run in a row and the range of every column under them", () => {
    const text = renderSpread([
      { name: "a.json", result: run("600000", "25000", 0) },
      { name: "b.json", result: run("700000", "90000", 1) },
    ]);
    const lines = text.trim().split("\n");
    expect(lines).toHaveLength(5); // header, rule, two runs, range
    expect(lines[2]).toContain("a.json");
    expect(lines[2]).toContain("600.0 µs");
    expect(lines[2]).toContain("2.21×");
    expect(lines[4]).toContain("range (2 runs)");
    expect(lines[4]).toContain("600.0 µs – 700.0 µs");
    expect(lines[4]).toContain("25.0 µs – 90.0 µs");
    expect(lines[4]).toContain("0 – 1");
  });

  it("shows a missing section as - and keeps it out of the range", () => {
    const text = renderSpread([{ name: "only-error.json", result: { error: run("1", "25000", 0).error } }]);
    const row = text.trim().split("\n")[2] as string;
    expect(row).toContain("25.0 µs");
    expect(row.split(/\s{2,}/).filter((c) => c === "-").length).toBeGreaterThanOrEqual(5);
  });
});
