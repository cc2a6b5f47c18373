// Goal: the library's public API (src/index.ts) offers what docs/library.md promises, computes what
// its own documentation example says, and stays embeddable: nothing it reaches imports a third-party
// package (no gRPC, HTTP, SQLite or logger in a VMM's process) or the daemon's code.
// Method: import the entry point and run the documented example and one call per group; then walk
// the entry point's import graph through the source files and list every non-relative specifier.
import { readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import * as api from "../../src/index.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));

describe("the public API", () => {
  it("computes the example of its package documentation", () => {
    const { mul, shift } = api.getTimeScale(1_000_000_000n, 3_000_000_000n);
    expect(api.scaleDelta(3_000_000_000n, mul, shift)).toBe(999_999_999n);
    const ratio = api.tscRatio(1_500_000n, 3_000_000n, api.VMX.fracBits);
    expect(ratio).toBe(1n << 47n);
    expect(api.scaleTsc(3_000_000_000n, ratio, api.VMX.fracBits)).toBe(1_500_000_000n);
  });

  it("names every policy and estimator, and checks what it is given", () => {
    expect([...api.POLICIES]).toEqual(["advance", "kvm-realtime", "freeze", "advance-capped"]);
    expect([...api.ESTIMATORS]).toEqual(["wallclock", "one-sided", "probe"]);
    expect([...api.INVARIANTS]).toEqual(["I1", "I2", "I3", "I4", "I5", "I6", "I7", "I8", "I9"]);
    expect(() => api.parsePolicy("sideways")).toThrow(api.TscmigError);
    expect(() => api.wallclockEstimate({ sourceRealtimeNs: 0n, destinationRealtimeNs: 1n, sourceMaxerrorNs: -1n, destinationMaxerrorNs: 0n })).toThrow(/sourceMaxerrorNs/);
  });

  it("estimates with a bound that holds: wallclock across 5 ms of honest skew", () => {
    const e = api.wallclockEstimate({ sourceRealtimeNs: 1_000_000_000n, destinationRealtimeNs: 1_035_000_000n, sourceMaxerrorNs: 1_000_000n, destinationMaxerrorNs: 6_000_000n });
    expect(e.estimatedNs).toBe(35_000_000n);
    const trueBlackoutNs = 30_000_000n; // the destination's realtime is 5 ms ahead
    expect(e.estimatedNs - trueBlackoutNs).toBeLessThanOrEqual(e.boundNs);
  });

  it("checks an empty history without finding anything", () => {
    const h = api.emptyHistory({ mode: "sim", seed: 1n, epochNs: 0n, daemons: [], ntpSource: "reference", sampleIntervalNs: 1n, scenario: {} });
    const r = api.checkHistory(h);
    expect(r.violations).toEqual([]);
    expect(r.checked.samples).toBe(0);
  });
});

/** Every import specifier of a TypeScript file (static imports and re-exports). */
function specifiers(file: string): string[] {
  const text = readFileSync(file, "utf8");
  const out: string[] = [];
  for (const m of text.matchAll(/^\s*(?:import|export)\b[^;]*?\bfrom\s+"([^"]+)"/gms)) out.push(m[1]!);
  for (const m of text.matchAll(/^\s*import\s+"([^"]+)"/gm)) out.push(m[1]!);
  return out;
}

describe("what the entry point reaches", () => {
  it("imports only its own pure modules and Node built-ins", () => {
    const seen = new Set<string>();
    const external = new Set<string>();
    const walk = (file: string) => {
      if (seen.has(file)) return;
      seen.add(file);
      for (const s of specifiers(file)) {
        if (s.startsWith(".")) walk(resolve(dirname(file), s.replace(/\.js$/, ".ts")));
        else external.add(`${s} (from ${relative(ROOT, file)})`);
      }
    };
    walk(join(ROOT, "src", "index.ts"));
    expect([...external].filter((s) => !s.startsWith("node:"))).toEqual([]);
    const reached = [...seen].map((f) => relative(ROOT, f));
    expect(reached.filter((f) => /^src\/(daemon|cli|client|source|destination|bench|kvm)\/|^src\/shared\/(rpc|http|platform)\//.test(f))).toEqual([]);
    expect(reached.length).toBeGreaterThan(10);
  });
});
