// The documentation's figures, computed from the simulator: each is a pure function of fixed
// scenarios and a seed, rendered to SVG by ./svg.ts. `scripts/figures.ts` writes them to
// docs/figures/; test/unit/docs-figures.test.ts regenerates them and fails if a checked-in file differs.

import { SeededRandom } from "../../src/shared/time/random.js";
import type { EstimatorName, PolicyName } from "../../src/index.js";
import { MS, type Network, type Run, type Sample, type Setup, simulate } from "./simulate.js";
import { type Figure, type Mark, type Panel, renderFigure } from "./svg.js";

export const FIGURE_SEED = 20260101n;

const COLORS: Record<EstimatorName, string> = { wallclock: "#c0392b", "one-sided": "#2471a3", probe: "#239b56" };

/** A LAN migration whose final memory copy takes 30 ms on the source before the Transfer leaves. */
export const LAN: Network = {
  pauseToCaptureNs: 200_000n,
  captureToSendNs: 30n * MS,
  forwardNs: 400_000n,
  holdNs: 300_000n,
  backNs: 300_000n,
  commitGapNs: 100_000n,
  commitTransitNs: 300_000n,
  probeForwardNs: 300_000n,
  probeBackNs: 300_000n,
  probeHoldNs: 50_000n,
};

/** Source on time; destination 5 ms ahead, and both honest about it. */
export function skewedSetup(policy: PolicyName, estimator: EstimatorName, capNs?: bigint): Setup {
  return {
    policy,
    estimator,
    ...(capNs !== undefined ? { capNs } : {}),
    src: { skewNs: 0n, maxerrorNs: 1n * MS, crystalPpm: 20, tscKhz: 2_000_000n },
    dst: { skewNs: 5n * MS, maxerrorNs: 6n * MS, crystalPpm: -30, tscKhz: 2_400_000n },
    net: LAN,
    beforeNs: 1_100n * MS,
    afterNs: 500n * MS,
    sampleEveryNs: 1n * MS,
    guest: {},
  };
}

export const POLICY_PANELS: { policy: PolicyName; estimator: EstimatorName; capNs?: bigint }[] = [
  { policy: "advance", estimator: "one-sided" },
  { policy: "kvm-realtime", estimator: "wallclock" },
  { policy: "freeze", estimator: "wallclock" },
  { policy: "advance-capped", estimator: "one-sided", capNs: 10n * MS },
];

const ms = (ns: bigint) => Number(ns) / 1e6;

/** Splits samples into runs where `keep` holds and no sample is missing (the VM was paused in a gap). */
function runsWhere(xs: Sample[], keep: (x: Sample) => boolean): Sample[][] {
  const out: Sample[][] = [];
  let cur: Sample[] = [];
  for (const x of xs) {
    const gap = cur.length > 0 && x.trueNs - cur[cur.length - 1]!.trueNs > 2n * MS;
    if (!keep(x) || gap) {
      if (cur.length > 0) out.push(cur);
      cur = [];
    }
    if (keep(x)) cur.push(x);
  }
  if (cur.length > 0) out.push(cur);
  return out;
}

function policyPanel(run: Run, title: string): Panel {
  const rel = (t: bigint) => ms(t - run.pauseNs);
  const window = run.samples.filter((s) => s.trueNs >= run.pauseNs - 100n * MS);
  const err = (s: (typeof window)[number], v: bigint) => ms(v - (s.trueNs + 1_767_225_600_000_000_000n));
  const marks: Mark[] = [{ kind: "xspan", from: rel(run.pauseNs), to: rel(run.resumeNs), color: "#888", opacity: 0.35, label: "blackout" }];
  for (const seg of runsWhere(window, (s) => s.now.status !== "synchronized"))
    marks.push({ kind: "xspan", from: rel(seg[0]!.trueNs), to: rel(seg[seg.length - 1]!.trueNs), color: "#f0b27a", opacity: 0.3 });
  for (const seg of runsWhere(window, (s) => s.now.status === "synchronized"))
    marks.push({
      kind: "band",
      xs: seg.map((s) => rel(s.trueNs)),
      lo: seg.map((s) => err(s, s.now.earliestNs)),
      hi: seg.map((s) => err(s, s.now.latestNs)),
      color: "#2471a3",
      opacity: 0.18,
    });
  marks.push({ kind: "line", points: [[-100, 0], [500, 0]], color: "#555", width: 0.8, dash: "3 3" });
  for (const seg of runsWhere(window, () => true))
    marks.push({ kind: "line", points: seg.map((s) => [rel(s.trueNs), err(s, s.now.realtimeNs)]), color: "#1b2631", width: 1.6 });
  const r = run.result;
  marks.push({ kind: "text", x: 490, y: 10, anchor: "end", text: `advanced ${ms(r.advancedNs).toFixed(3)} ms, bound ${ms(r.errorBoundNs).toFixed(3)} ms`, color: "#1b2631" });
  return {
    title,
    x: { label: "true time since pause (ms)", min: -100, max: 500 },
    y: { label: "guest realtime − true time (ms)", min: -40, max: 15 },
    marks,
    legend: [
      { label: "guest realtime error", color: "#1b2631" },
      { label: "[earliest, latest] while synchronized", color: "#9ec3e0" },
      { label: "not synchronized", color: "#f6d7b9" },
    ],
    legendAt: "bottom",
  };
}

/** Figure 1: guest realtime − true time around one migration under each policy, 5 ms host skew. */
export function policiesFigure(): Figure {
  const runs = POLICY_PANELS.map((p) => ({ p, run: simulate(skewedSetup(p.policy, p.estimator, p.capNs)) }));
  const panels = runs.map(({ p, run }) => policyPanel(run, `${p.policy} (${p.estimator}${p.capNs !== undefined ? `, cap ${ms(p.capNs)} ms` : ""})`));
  const blackoutMs = ms(runs[0]!.run.resumeNs - runs[0]!.run.pauseNs).toFixed(1);
  return {
    title: "Guest realtime − true time around one migration, destination realtime 5 ms ahead",
    columns: 2,
    panelWidth: 520,
    panelHeight: 300,
    panels,
    caption: `2-vCPU guest, NTP against a reference server (100 µs), handling mode widen; blackout ${blackoutMs} ms; the hosts claim 1 ms and 6 ms of realtime error.`,
  };
}

function logUniformNs(r: SeededRandom, lo: bigint, hi: bigint): bigint {
  const l0 = Math.log(Number(lo));
  const l1 = Math.log(Number(hi));
  return BigInt(Math.round(Math.exp(l0 + r.float() * (l1 - l0))));
}

/** A random honest scenario: skews up to ±10 ms (claimed with up to 1 ms to spare), asymmetric links. */
export function randomSetup(r: SeededRandom, estimator: EstimatorName): Setup {
  const skew = () => r.bigint(-10n * MS, 10n * MS);
  const srcSkew = skew();
  const dstSkew = skew();
  const abs = (v: bigint) => (v < 0n ? -v : v);
  return {
    policy: "advance",
    estimator,
    src: { skewNs: srcSkew, maxerrorNs: abs(srcSkew) + r.bigint(0n, MS), crystalPpm: r.int(-100, 100), tscKhz: 2_000_000n },
    dst: { skewNs: dstSkew, maxerrorNs: abs(dstSkew) + r.bigint(0n, MS), crystalPpm: r.int(-100, 100), tscKhz: 3_000_000n },
    net: {
      pauseToCaptureNs: r.bigint(50_000n, 500_000n),
      captureToSendNs: logUniformNs(r, MS, 200n * MS),
      forwardNs: logUniformNs(r, 50_000n, 20n * MS),
      holdNs: logUniformNs(r, 20_000n, 2n * MS),
      backNs: logUniformNs(r, 50_000n, 20n * MS),
      commitGapNs: logUniformNs(r, 10_000n, 500_000n),
      commitTransitNs: logUniformNs(r, 50_000n, 20n * MS),
      probeForwardNs: logUniformNs(r, 50_000n, 5n * MS),
      probeBackNs: logUniformNs(r, 50_000n, 5n * MS),
      probeHoldNs: logUniformNs(r, 10_000n, 200_000n),
    },
    beforeNs: 50n * MS,
    afterNs: 0n,
    sampleEveryNs: 0n,
    guest: {},
  };
}

export const ESTIMATOR_RUNS = 80;

export interface ErrorVsBound {
  estimator: EstimatorName;
  points: { boundNs: bigint; errorNs: bigint }[];
  over: number;
}

/** The TSC error at resume against the reported bound for ESTIMATOR_RUNS random migrations per estimator. */
export function errorVsBound(): ErrorVsBound[] {
  const estimators: EstimatorName[] = ["wallclock", "one-sided", "probe"];
  return estimators.map((estimator) => {
    const r = new SeededRandom(FIGURE_SEED);
    const points = [];
    for (let i = 0; i < ESTIMATOR_RUNS; i++) {
      const run = simulate(randomSetup(r, estimator));
      points.push({ boundNs: run.result.errorBoundNs, errorNs: run.tscErrorNs < 0n ? -run.tscErrorNs : run.tscErrorNs });
    }
    return { estimator, points, over: points.filter((p) => p.errorNs > p.boundNs).length };
  });
}

/** Figure 2: |error| against the reported bound, per estimator (every point must lie under the diagonal). */
export function errorVsBoundFigure(data = errorVsBound()): Figure {
  const us = (ns: bigint) => Math.max(Number(ns) / 1e3, 0.001);
  const panels: Panel[] = data.map((d) => ({
    title: `${d.estimator}: ${d.over} of ${d.points.length} over the bound`,
    x: { label: "reported error bound (µs)", min: 1, max: 1e5, scale: "log" },
    y: { label: "|guest TSC error at resume| (µs)", min: 0.001, max: 1e5, scale: "log" },
    marks: [
      { kind: "line", points: [[1, 1], [1e5, 1e5]], color: "#555", width: 0.8, dash: "4 3" },
      { kind: "points", points: d.points.map((p) => [us(p.boundNs), us(p.errorNs)]), color: COLORS[d.estimator], radius: 2.2 },
      { kind: "text", x: 2, y: 3e4, text: "error = bound", color: "#555" },
    ],
  }));
  return {
    title: `Introduced error vs reported bound, policy advance, ${ESTIMATOR_RUNS} random honest migrations per estimator`,
    columns: 3,
    panelWidth: 360,
    panelHeight: 320,
    panels,
    caption: `Seed ${FIGURE_SEED}: host skew up to ±10 ms (claimed honestly), crystals ±100 ppm, asymmetric legs 50 µs–20 ms; errors below 1 ns drawn at 1 ns.`,
  };
}

export const SKEWS_MS = Array.from({ length: 41 }, (_, i) => i - 20);

/** Figure 3: the blackout estimate's error as the destination's skew grows, per estimator, with its bound. */
export function estimateVsSkewFigure(): Figure {
  const estimators: EstimatorName[] = ["wallclock", "one-sided", "probe"];
  const marks: Mark[] = [];
  for (const e of estimators) {
    const rows = SKEWS_MS.map((skewMs) => {
      const s = skewedSetup("advance", e);
      const skewNs = BigInt(skewMs) * MS;
      const abs = skewNs < 0n ? -skewNs : skewNs;
      const run = simulate({ ...s, dst: { ...s.dst, skewNs, maxerrorNs: abs + 100_000n }, net: { ...LAN, forwardNs: 2n * MS, backNs: 500_000n }, sampleEveryNs: 0n, afterNs: 0n });
      return { x: skewMs, err: ms(run.estimateErrorNs), bound: ms(run.result.estimate.boundNs) };
    });
    marks.push({ kind: "band", xs: rows.map((r) => r.x), lo: rows.map((r) => -r.bound), hi: rows.map((r) => r.bound), color: COLORS[e], opacity: 0.12 });
    marks.push({ kind: "line", points: rows.map((r) => [r.x, r.err]), color: COLORS[e], width: 2 });
  }
  const panel: Panel = {
    title: "",
    x: { label: "destination realtime − source realtime (ms)", min: -20, max: 20 },
    y: { label: "estimate − true blackout (ms)", min: -22, max: 22 },
    marks,
    legend: estimators.map((e) => ({ label: e, color: COLORS[e] })),
  };
  return {
    title: "Blackout estimate − true blackout as the hosts' realtime clocks disagree",
    panelHeight: 360,
    columns: 2,
    panelWidth: 500,
    panels: [
      { ...panel, title: "line: estimate error; shaded: ± its bound" },
      { ...panel, title: "the same, ±2 ms", y: { ...panel.y, min: -2, max: 2 } },
    ],
    caption: "The destination claims its skew + 100 µs. Link: 2 ms forward, 0.5 ms back. one-sided and probe pay link asymmetry, never skew.",
  };
}

/** Every figure by file name, as SVG text. */
export function renderFigures(): Map<string, string> {
  return new Map([
    ["policies.svg", renderFigure(policiesFigure())],
    ["error-vs-bound.svg", renderFigure(errorVsBoundFigure())],
    ["estimate-vs-skew.svg", renderFigure(estimateVsSkewFigure())],
  ]);
}
