// Goal: the figures in docs/figures/ are what the simulator produces today (so they never go stale),
// they are reproducible byte for byte, and they show what the docs say they show.
// Method: render every figure from scripts/figures/ in memory and compare with the checked-in SVG;
// then check the facts the docs read off them on the same simulated runs: each policy's error at
// resume under 5 ms of host skew, and no estimator's error over its reported bound.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { errorVsBound, POLICY_PANELS, renderFigures, skewedSetup } from "../../scripts/figures/figures.js";
import { MS, simulate } from "../../scripts/figures/simulate.js";
import { num, renderFigure } from "../../scripts/figures/svg.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const DIR = join(ROOT, "docs", "figures");
const REGENERATE = "npm run docs:figures";

describe("docs/figures", () => {
  const rendered = renderFigures();

  it("every checked-in figure equals a fresh rendering, and there is no other", () => {
    const stale: string[] = [];
    for (const [name, svg] of rendered) {
      const path = join(DIR, name);
      if (!existsSync(path)) stale.push(`${name} (missing)`);
      else if (readFileSync(path, "utf8") !== svg) stale.push(name);
    }
    expect(stale, `stale figures: regenerate with \`${REGENERATE}\` and commit them`).toEqual([]);
    const extra = readdirSync(DIR).filter((f) => !rendered.has(f));
    expect(extra, "files in docs/figures that no script writes").toEqual([]);
  });

  it("is well-formed SVG with no external reference", () => {
    for (const [name, svg] of rendered) {
      expect(svg.startsWith("<svg xmlns=\"http://www.w3.org/2000/svg\""), name).toBe(true);
      expect(svg.trimEnd().endsWith("</svg>"), name).toBe(true);
      expect(svg, name).not.toMatch(/href=|@import|url\(http/);
      expect(svg, name).not.toMatch(/NaN|Infinity/);
    }
  });

  it("formats numbers the same everywhere (no locale, no -0)", () => {
    expect([num(-0.001), num(1.005), num(12), num(-3.456), num(0.1)]).toEqual(["0", "1", "12", "-3.46", "0.1"]);
    const once = renderFigure({ title: "t", columns: 1, panelWidth: 200, panelHeight: 150, panels: [{ title: "p", x: { label: "x", min: 0, max: 1 }, y: { label: "y", min: 1, max: 1000, scale: "log" }, marks: [{ kind: "points", points: [[0.5, 10]], color: "#000" }] }] });
    expect(once).toContain('<circle cx="');
    expect(once).toContain(">1000<");
  });
});

describe("what figure 1 shows: one migration per policy, destination realtime 5 ms ahead", () => {
  const runs = new Map(POLICY_PANELS.map((p) => [p.policy, simulate({ ...skewedSetup(p.policy, p.estimator, p.capNs), sampleEveryNs: 0n, afterNs: 0n })]));
  const blackout = (p: string) => {
    const r = runs.get(p as never)!;
    return r.resumeNs - r.pauseNs;
  };
  const abs = (v: bigint) => (v < 0n ? -v : v);

  it("advance with one-sided: the guest TSC lands within a bound far below the skew", () => {
    const r = runs.get("advance")!;
    expect(abs(r.tscErrorNs)).toBeLessThanOrEqual(r.result.errorBoundNs);
    expect(r.result.errorBoundNs).toBeLessThan(1n * MS);
  });

  it("kvm-realtime with wallclock: the guest gains the hosts' 5 ms skew, inside the honest hosts' bound", () => {
    const r = runs.get("kvm-realtime")!;
    expect(r.tscErrorNs).toBeGreaterThan(4_900_000n);
    expect(r.tscErrorNs).toBeLessThan(5_100_000n);
    expect(abs(r.tscErrorNs)).toBeLessThanOrEqual(r.result.errorBoundNs);
  });

  it("freeze: the guest loses the whole blackout; advance-capped loses what exceeds the cap", () => {
    const f = runs.get("freeze")!;
    expect(f.result.advancedNs).toBe(0n);
    expect(-f.tscErrorNs).toBeGreaterThan(blackout("freeze") - 1n * MS);
    const c = runs.get("advance-capped")!;
    expect(c.result.capped).toBe(true);
    expect(c.result.advancedNs).toBe(10n * MS);
    expect(-c.tscErrorNs).toBeGreaterThan(blackout("advance-capped") - 11n * MS);
    expect(abs(c.tscErrorNs)).toBeLessThanOrEqual(c.result.errorBoundNs);
  });
});

describe("what figure 2 shows", () => {
  it("no estimator's error exceeds its bound over the seeded honest migrations, and wallclock's bounds are the widest", () => {
    const data = errorVsBound();
    for (const d of data) expect(d.over, d.estimator).toBe(0);
    const median = (xs: bigint[]) => [...xs].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))[xs.length >> 1]!;
    const bound = new Map(data.map((d) => [d.estimator, median(d.points.map((p) => p.boundNs))]));
    expect(bound.get("wallclock")!).toBeGreaterThan(bound.get("one-sided")!);
    expect(bound.get("wallclock")!).toBeGreaterThan(bound.get("probe")!);
  });
});
