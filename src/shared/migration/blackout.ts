// Blackout estimators: how the destination measures how long the vCPUs were paused.
//
// Why this module is careful. The blackout runs from the source's pause to the destination's
// resume: two instants on two hosts. Subtracting the two hosts' realtime clocks (what KVM's
// documented algorithm does, `wallclock`) measures the blackout *plus the skew between the hosts*,
// and the only bound on that skew is what each host claims about its own realtime error — a claim a
// host with a bad NTP source can break ("lying clock"). Durations measured on one host's own
// monotonic clock add safely: they cost only that host's crystal drift. So `one-sided` never
// subtracts across hosts: it adds the source's pause-to-send duration (source clock), the one-way
// transit of the snapshot (unknown, but within [0, RTT − destination hold], the round trip measured
// on the source clock minus the time the destination held the call, measured on its clock), and
// the destination's receive-to-resume duration (destination clock). `probe` does subtract realtime
// clocks, but corrects by the offset θ measured moments before by NTP-style exchanges, whose error
// is bounded by half their round trip, plus drift since.
//
// Every estimator returns an estimate and a bound such that |true blackout − estimate| ≤ bound
// whenever its assumptions hold (stated per estimator). Estimates are clamped at 0: a blackout is
// never negative, and clamping only moves the estimate toward the truth.

import { invalid } from "../errors.js";

export type EstimatorName = "wallclock" | "one-sided" | "probe";
export const ESTIMATORS: readonly EstimatorName[] = ["wallclock", "one-sided", "probe"];

export interface BlackoutEstimate {
  estimator: EstimatorName;
  estimatedNs: bigint;
  boundNs: bigint;
}

/** Crystal and realtime rate error allowance (Linux's MAXFREQ): no honest clock drifts faster. */
export const DRIFT_ALLOWANCE_PPM = 500n;

function driftAllowance(durationNs: bigint, ppm: bigint): bigint {
  const d = durationNs < 0n ? -durationNs : durationNs;
  return (d * ppm + 999_999n) / 1_000_000n; // round up: the bound must not undercut
}

export function parseEstimator(v: unknown, field = "estimator"): EstimatorName {
  if (typeof v === "string" && (ESTIMATORS as readonly string[]).includes(v)) return v as EstimatorName;
  throw invalid(field, `unknown estimator ${JSON.stringify(v)} (one of ${ESTIMATORS.join(", ")})`);
}

/**
 * `wallclock`: destination realtime minus source realtime (KVM_CLOCK_REALTIME semantics).
 * ⚠ Cross-host subtraction: equals blackout + (dst skew − src skew). Bound = both hosts' *claimed*
 * realtime errors plus drift over the blackout; holds only while both hosts are honest.
 */
export function wallclockEstimate(o: {
  sourceRealtimeNs: bigint;
  destinationRealtimeNs: bigint;
  sourceMaxerrorNs: bigint;
  destinationMaxerrorNs: bigint;
}): BlackoutEstimate {
  if (o.sourceMaxerrorNs < 0n) throw invalid("sourceMaxerrorNs", "a claimed error bound cannot be negative");
  if (o.destinationMaxerrorNs < 0n) throw invalid("destinationMaxerrorNs", "a claimed error bound cannot be negative");
  const raw = o.destinationRealtimeNs - o.sourceRealtimeNs; // blackout + skew: see the header
  const est = raw > 0n ? raw : 0n;
  const bound = o.sourceMaxerrorNs + o.destinationMaxerrorNs + 2n * driftAllowance(est, DRIFT_ALLOWANCE_PPM);
  return { estimator: "wallclock", estimatedNs: est, boundNs: bound };
}

/**
 * `one-sided`: sum of single-host durations plus the Transfer's forward transit, which lies in an
 * interval measured without comparing the two hosts' clocks; the estimate takes its middle.
 *
 *   source    ──anchor answer in── … ──Transfer out──────────── answer in ── … ──Commit out──
 *   destination ──anchor answer out── … ──Transfer in── hold ── answer out ── … ──Commit in──
 *
 * With f the forward leg (Transfer out → in) and b the back leg (answer out → in):
 * - f + b = R, the round trip minus the destination's hold (each on its own clock), and f, b ≥ 0;
 * - `commit`: the Commit that followed left after the answer arrived, so on the destination's clock
 *   (answer out → Commit in) = b + (answer in → Commit out, source clock) + the Commit's own transit:
 *   b ≤ U = their difference, hence f ≥ R − U;
 * - `anchors`: an earlier answer (Handover `opened`, a probe) left the destination before the Transfer
 *   was sent, so (that answer out → Transfer in, destination clock) = its back leg + (that answer in
 *   → Transfer out, source clock) + f: f ≤ A = their difference.
 * So f ∈ [max(0, R − U), min(R, A)]: one stalled leg no longer costs half its stall, unless the
 * bounding legs stalled too. Without `commit` or `anchors` the interval is [0, R].
 * Assumes only that each host's monotonic clock runs within DRIFT_ALLOWANCE_PPM of true time; an
 * inconsistent `commit` or anchor (negative, beyond what drift explains) is ignored.
 */
export function oneSidedEstimate(o: {
  /** Source clock: the snapshot's clock read (not the pause) → the instant the Transfer round trip started. */
  sourcePauseToSendNs: bigint;
  /** Source clock: Transfer call sent → answer received. */
  transferRttNs: bigint;
  /** Destination clock: Transfer received → answered. */
  destinationHoldNs: bigint;
  /** Destination clock: Transfer received → now (resume). */
  destinationReceiveToNowNs: bigint;
  commit?: {
    /** Destination clock: Transfer answered → Commit received. */
    destinationAnswerToCommitNs: bigint;
    /** Source clock: Transfer answer received → Commit sent. */
    sourceAnswerToCommitNs: bigint;
  };
  /** Any number of earlier answers from the destination (each caps f; the least back leg wins). */
  anchors?: readonly {
    /** Destination clock: the anchor answer sent → Transfer received. */
    destinationAnswerToReceiveNs: bigint;
    /** Source clock: the anchor answer received → Transfer sent. */
    sourceAnswerToSendNs: bigint;
  }[];
}): BlackoutEstimate {
  const durations: [string, bigint][] = [
    ["sourcePauseToSendNs", o.sourcePauseToSendNs],
    ["transferRttNs", o.transferRttNs],
    ["destinationHoldNs", o.destinationHoldNs],
    ["destinationReceiveToNowNs", o.destinationReceiveToNowNs],
    ...(o.commit ? Object.entries(o.commit).map(([k, v]): [string, bigint] => [`commit.${k}`, v]) : []),
    ...(o.anchors ?? []).flatMap((a, i) => Object.entries(a).map(([k, v]): [string, bigint] => [`anchors[${i}].${k}`, v])),
  ];
  for (const [k, v] of durations) if (v < 0n) throw invalid(k, "a duration cannot be negative");
  const residual = o.transferRttNs > o.destinationHoldNs ? o.transferRttNs - o.destinationHoldNs : 0n;
  // Each host's clock may be off by the drift allowance over every duration it measured.
  const drift =
    driftAllowance(o.sourcePauseToSendNs + o.transferRttNs, DRIFT_ALLOWANCE_PPM) +
    driftAllowance(o.destinationHoldNs + o.destinationReceiveToNowNs, DRIFT_ALLOWANCE_PPM);
  let t: Transit = transitOf(0n, residual, drift);
  if (o.commit) {
    const u = crossDifference(o.commit.destinationAnswerToCommitNs, o.commit.sourceAnswerToCommitNs); // ≥ b − slack
    if (u.ns >= -u.slack) t = narrower(t, transitOf(maxOf(t.lo, residual - maxOf(u.ns, 0n)), t.hi, t.drift + u.slack));
  }
  for (const anchor of o.anchors ?? []) {
    const a = crossDifference(anchor.destinationAnswerToReceiveNs, anchor.sourceAnswerToSendNs); // ≥ f − slack
    if (a.ns >= -a.slack) t = narrower(t, transitOf(t.lo, minOf(t.hi, maxOf(a.ns, 0n)), t.drift + a.slack));
  }
  const est = o.sourcePauseToSendNs + t.mid + o.destinationReceiveToNowNs;
  return { estimator: "one-sided", estimatedNs: est, boundNs: t.bound };
}

/** A destination-clock duration minus a source-clock one, and how far the two clocks' drift can move it. */
function crossDifference(destinationNs: bigint, sourceNs: bigint): { ns: bigint; slack: bigint } {
  return { ns: destinationNs - sourceNs, slack: driftAllowance(destinationNs, DRIFT_ALLOWANCE_PPM) + driftAllowance(sourceNs, DRIFT_ALLOWANCE_PPM) };
}

/** The forward transit known to lie in [lo, hi] up to `drift`: its middle and the bound around it. */
interface Transit {
  lo: bigint;
  hi: bigint;
  drift: bigint;
  mid: bigint;
  bound: bigint;
}

function transitOf(lo: bigint, hi: bigint, drift: bigint): Transit {
  // lo > hi only within the drift slack (both limits hold up to it): the middle still covers both.
  const mid = (lo + hi) / 2n;
  return { lo, hi, drift, mid, bound: (hi >= lo ? hi - mid : mid - hi) + drift };
}

/** A limit is worth its drift slack only when it narrows the bound. */
function narrower(a: Transit, b: Transit): Transit {
  return b.bound < a.bound ? b : a;
}

const maxOf = (a: bigint, b: bigint) => (a > b ? a : b);
const minOf = (a: bigint, b: bigint) => (a < b ? a : b);

/** One NTP-style exchange: t1 source send, t2 destination receive, t3 destination send, t4 source receive (realtime). */
export interface ProbeExchange {
  t1: bigint;
  t2: bigint;
  t3: bigint;
  t4: bigint;
}

export interface ProbeResult {
  /** θ = destination realtime − source realtime. */
  offsetNs: bigint;
  /** |true θ − offsetNs| ≤ boundNs at the time of the exchange. */
  boundNs: bigint;
}

/** NTP clock filter: the exchange with the smallest round-trip delay wins (least asymmetry room). */
export function probeOffset(exchanges: readonly ProbeExchange[]): ProbeResult {
  if (exchanges.length === 0) throw invalid("probe", "at least one exchange is needed");
  let best: ProbeResult | null = null;
  for (const e of exchanges) {
    const rateSlack = driftAllowance(e.t4 - e.t1, 2n * DRIFT_ALLOWANCE_PPM);
    let delay = e.t4 - e.t1 - (e.t3 - e.t2);
    // A round trip shorter than the two clocks' rate difference can explain reads negative (the
    // destination's realtime ran faster during its hold than the source's over the whole
    // exchange): the true delay is then within that slack of 0, which the bound below already
    // adds. Anything more negative is a clock step inside the exchange: unusable.
    if (delay < -rateSlack) continue;
    if (delay < 0n) delay = 0n;
    const theta2 = e.t2 - e.t1 + (e.t3 - e.t4);
    const offsetNs = theta2 / 2n;
    // θ lies within ±delay/2 of the midpoint estimate; +1 covers the halving's rounding.
    const boundNs = delay / 2n + 1n + rateSlack;
    if (best === null || boundNs < best.boundNs) best = { offsetNs, boundNs };
  }
  if (best === null) throw invalid("probe", "no usable exchange (negative round trip)");
  return best;
}

/**
 * `probe`: wallclock corrected by the probed offset θ. ⚠ Cross-host subtraction, made honest by θ.
 * Assumes each host's realtime rate stays within DRIFT_ALLOWANCE_PPM between the probe and the
 * resume (a step of either host's realtime in that window breaks it).
 */
export function probeEstimate(o: {
  sourceRealtimeNs: bigint;
  destinationRealtimeNs: bigint;
  probe: ProbeResult;
  /** Source clock: probe → pause. */
  sinceProbeNs: bigint;
}): BlackoutEstimate {
  const raw = o.destinationRealtimeNs - o.sourceRealtimeNs - o.probe.offsetNs;
  const est = raw > 0n ? raw : 0n;
  const window = (o.sinceProbeNs > 0n ? o.sinceProbeNs : 0n) + est;
  const bound = o.probe.boundNs + driftAllowance(window, 2n * DRIFT_ALLOWANCE_PPM);
  return { estimator: "probe", estimatedNs: est, boundNs: bound };
}
