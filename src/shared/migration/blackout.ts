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

/**
 * How far `ppm` of rate error moves a span a host measured as `durationNs`. The measuring clock may
 * itself run DRIFT_ALLOWANCE_PPM slow, so the true span is up to measured·10⁶/(10⁶ − that): the
 * allowance is taken over that, rounded up (over milliseconds the difference is nanoseconds, but a
 * bound must not undercut by any).
 */
function driftAllowance(durationNs: bigint, ppm: bigint): bigint {
  const d = durationNs < 0n ? -durationNs : durationNs;
  const den = 1_000_000n - DRIFT_ALLOWANCE_PPM;
  return (d * ppm + den - 1n) / den;
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
 *   source      ─req out─ … ─anchor answer in─ … ─Transfer out──────────── answer in ─ … ─Commit out─
 *   destination ──req in─ … ─anchor answer out─ … ───Transfer in── hold ── answer out ─ … ─Commit in──
 *
 * With f the forward leg (Transfer out → in) and b the back leg (answer out → in):
 * - f + b = R, the round trip minus the destination's hold (each on its own clock), and f, b ≥ 0;
 * - `commit`: the Commit that followed left after the answer arrived, so on the destination's clock
 *   (answer out → Commit in) = b + (answer in → Commit out, source clock) + the Commit's own transit:
 *   b ≤ U = their difference, hence f ≥ R − U;
 * - `anchors`: an earlier answer (Handover `opened`, a probe) left the destination before the Transfer
 *   was sent, so (that answer out → Transfer in, destination clock) = its back leg + (that answer in
 *   → Transfer out, source clock) + f: f ≤ A = their difference;
 * - `requests`: an earlier request (Handover `open`, a probe) reached the destination before the
 *   Transfer did, so (that request in → Transfer in, destination clock) = (that request out →
 *   Transfer out, source clock) + f − the request's own transit: f ≥ L = their difference.
 * So f ∈ [max(0, R − U, L…), min(R, A…)]: the error is half the difference between the quickest
 * message each way (as NTP's clock filter), not half the Transfer's own asymmetry; a stall costs
 * only when every message one way stalled. Without the extra legs the interval is [0, R].
 * Assumes only that each host's monotonic clock runs within DRIFT_ALLOWANCE_PPM of true time: every
 * limit is widened by what that drift can move it. A limit the round trip alone contradicts (a
 * negative leg beyond the drift) is ignored; limits that contradict each other fall back to [0, R].
 */
export function oneSidedEstimate(o: {
  /** Source clock: the snapshot's clock read (its KVM_GET_CLOCK, after the pause) → the instant the Transfer round trip started. */
  sourceCaptureToSendNs: bigint;
  /**
   * Source clock: Transfer call sent → answer received. null on receipt (on-receipt switchover: the
   * destination restores before it answers): the anchors alone then cap the forward leg.
   */
  transferRttNs: bigint | null;
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
  /** Any number of earlier answers from the destination (each caps f from above; the quickest back leg wins). */
  anchors?: readonly {
    /** Destination clock: the anchor answer sent → Transfer received. */
    destinationAnswerToReceiveNs: bigint;
    /** Source clock: the anchor answer received → Transfer sent. */
    sourceAnswerToSendNs: bigint;
  }[];
  /** Any number of earlier requests to the destination (each caps f from below; the quickest forward leg wins). */
  requests?: readonly {
    /** Destination clock: the request received → Transfer received. */
    destinationRequestToReceiveNs: bigint;
    /** Source clock: the request sent → Transfer sent. */
    sourceRequestToSendNs: bigint;
  }[];
}): BlackoutEstimate {
  checkDurations(o);
  const drift = (d: bigint) => driftAllowance(d, DRIFT_ALLOWANCE_PPM);
  if (o.transferRttNs === null) return onReceiptEstimate(o, drift);
  const residualNs = o.transferRttNs - o.destinationHoldNs; // R on two clocks: within residualDrift of the true R
  const residualDrift = drift(o.transferRttNs) + drift(o.destinationHoldNs);
  const base: Interval = { lo: 0n, hi: maxOf(residualNs, 0n) + residualDrift };
  const limits: Interval[] = [];
  if (o.commit) {
    const u = crossDifference(o.commit.destinationAnswerToCommitNs, o.commit.sourceAnswerToCommitNs); // b ≤ u.ns + u.slack
    limits.push({ lo: residualNs - residualDrift - u.ns - u.slack, hi: base.hi });
  }
  for (const a of o.anchors ?? []) {
    const x = crossDifference(a.destinationAnswerToReceiveNs, a.sourceAnswerToSendNs); // f ≤ x.ns + x.slack
    limits.push({ lo: 0n, hi: x.ns + x.slack });
  }
  for (const r of o.requests ?? []) {
    const x = crossDifference(r.destinationRequestToReceiveNs, r.sourceRequestToSendNs); // f ≥ x.ns − x.slack
    limits.push({ lo: x.ns - x.slack, hi: base.hi });
  }
  const t = intersect(base, limits);
  const mid = (t.lo + t.hi) / 2n; // rounds down: hi − mid ≥ mid − lo, so the bound below covers both ends
  const est = o.sourceCaptureToSendNs + mid + o.destinationReceiveToNowNs;
  const bound = t.hi - mid + drift(o.sourceCaptureToSendNs) + drift(o.destinationReceiveToNowNs);
  return { estimator: "one-sided", estimatedNs: est, boundNs: bound };
}

/**
 * One-sided before the Transfer's round trip is known (on receipt): no R, so the forward leg is
 * capped only by the anchors (an earlier answer of the destination: the Prepare's, Handover's
 * `opened`, a probe's) and bounded below by the earlier requests. Without an anchor there is no cap
 * and no honest bound: refused (the destination refuses the Transfer; the source resolves).
 */
function onReceiptEstimate(o: OneSidedInputs, drift: (d: bigint) => bigint): BlackoutEstimate {
  let hi: bigint | null = null;
  for (const a of o.anchors ?? []) {
    const x = crossDifference(a.destinationAnswerToReceiveNs, a.sourceAnswerToSendNs);
    const cap = maxOf(x.ns + x.slack, 0n);
    hi = hi === null ? cap : minOf(hi, cap);
  }
  if (hi === null) throw invalid("sourceAnchorsToSendNs", "one-sided on receipt needs an earlier answer of the destination to cap the Transfer's transit; none arrived");
  const base: Interval = { lo: 0n, hi };
  const limits = (o.requests ?? []).map((r): Interval => {
    const x = crossDifference(r.destinationRequestToReceiveNs, r.sourceRequestToSendNs);
    return { lo: x.ns - x.slack, hi };
  });
  const t = intersect(base, limits);
  const mid = (t.lo + t.hi) / 2n;
  const est = o.sourceCaptureToSendNs + mid + o.destinationReceiveToNowNs;
  const bound = t.hi - mid + drift(o.sourceCaptureToSendNs) + drift(o.destinationReceiveToNowNs);
  return { estimator: "one-sided", estimatedNs: est, boundNs: bound };
}

function checkDurations(o: Parameters<typeof oneSidedEstimate>[0]): void {
  // Runs inside the blackout: a leg's field name is only spelled out for the one refused.
  const fields = (x: object, prefix: string): void => {
    for (const [k, v] of Object.entries(x)) if ((v as bigint) < 0n) throw invalid(`${prefix}${k}`, "a duration cannot be negative");
  };
  const { sourceCaptureToSendNs, destinationHoldNs, destinationReceiveToNowNs } = o;
  fields({ sourceCaptureToSendNs, transferRttNs: o.transferRttNs ?? 0n, destinationHoldNs, destinationReceiveToNowNs }, "");
  if (o.commit) fields(o.commit, "commit.");
  (o.anchors ?? []).forEach((a, i) => fields(a, `anchors[${i}].`));
  (o.requests ?? []).forEach((r, i) => fields(r, `requests[${i}].`));
}

/** A destination-clock duration minus a source-clock one, and how far the two clocks' drift can move it. */
function crossDifference(destinationNs: bigint, sourceNs: bigint): { ns: bigint; slack: bigint } {
  return { ns: destinationNs - sourceNs, slack: driftAllowance(destinationNs, DRIFT_ALLOWANCE_PPM) + driftAllowance(sourceNs, DRIFT_ALLOWANCE_PPM) };
}

/** Where the forward transit lies, drift included. */
interface Interval {
  lo: bigint;
  hi: bigint;
}

/**
 * `base` narrowed by every limit that `base` alone does not contradict. Each limit holds while the
 * clocks keep their allowance, so an empty result means one did not: keep only `base` then.
 */
function intersect(base: Interval, limits: readonly Interval[]): Interval {
  let lo = base.lo;
  let hi = base.hi;
  for (const l of limits) {
    if (l.lo > base.hi || l.hi < base.lo) continue;
    lo = maxOf(lo, l.lo);
    hi = minOf(hi, l.hi);
  }
  return lo <= hi ? { lo, hi } : base;
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

/**
 * θ from several exchanges. Each exchange alone puts θ within ±delay/2 of its midpoint: θ − its back
 * leg ≤ midpoint ≤ θ + its forward leg. Intersecting those intervals leaves [θ − the quickest back
 * leg, θ + the quickest forward leg], as narrow as NTP's clock filter (the least-delay exchange) or
 * narrower: the quickest legs each way need not belong to one exchange. θ is given at the last
 * exchange's t4; each exchange's interval is widened by the two clocks' rate difference over its own
 * round trip and from its t4 to there. Exchanges whose intervals do not meet (a clock stepped between them) leave the
 * least-delay exchange alone, as before.
 */
export function probeOffset(exchanges: readonly ProbeExchange[]): ProbeResult {
  if (exchanges.length === 0) throw invalid("probe", "at least one exchange is needed");
  const usable: { lo: bigint; hi: bigint; result: ProbeResult }[] = [];
  const lastT4 = exchanges.reduce((m, e) => (e.t4 > m ? e.t4 : m), exchanges[0]!.t4);
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
    // Held to the last exchange's t4, where θ is given (probeEstimate adds the drift from there on).
    const aged = boundNs + driftAllowance(lastT4 > e.t4 ? lastT4 - e.t4 : 0n, 2n * DRIFT_ALLOWANCE_PPM);
    usable.push({ lo: offsetNs - aged, hi: offsetNs + aged, result: { offsetNs, boundNs: aged } });
  }
  if (usable.length === 0) throw invalid("probe", "no usable exchange (negative round trip)");
  const lo = usable.reduce((m, u) => (u.lo > m ? u.lo : m), usable[0]!.lo);
  const hi = usable.reduce((m, u) => (u.hi < m ? u.hi : m), usable[0]!.hi);
  const best = usable.reduce((b, u) => (u.result.boundNs < b.result.boundNs ? u : b)).result;
  if (lo > hi) return best;
  const offsetNs = lo + (hi - lo) / 2n;
  const boundNs = hi - offsetNs; // ≥ offsetNs − lo (the halving rounds down)
  return boundNs < best.boundNs ? { offsetNs, boundNs } : best;
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

export type OneSidedInputs = Parameters<typeof oneSidedEstimate>[0];

/** What any estimator may need at the restore instant; each reads only its own part. */
export interface BlackoutInputs {
  /** From the snapshot: the source's realtime at its clock read, and its claimed error. */
  sourceRealtimeNs: bigint;
  sourceMaxerrorNs: bigint;
  /** The destination's realtime at the restore instant, and its claimed error. */
  destinationRealtimeNs: bigint;
  destinationMaxerrorNs: bigint;
  /** The snapshot's probed offset, when the source probed. */
  probe: (ProbeResult & { probeToPauseNs: bigint }) | null;
  /** The one-sided durations, assembled only when that estimator runs (they cost work inside the blackout). */
  oneSided: () => OneSidedInputs;
}

/** The one place that maps an estimator's name to its arithmetic: the daemon and the simulator both call it. */
export function estimateBlackout(estimator: EstimatorName, i: BlackoutInputs): BlackoutEstimate {
  switch (estimator) {
    case "wallclock":
      return wallclockEstimate(i);
    case "one-sided":
      return oneSidedEstimate(i.oneSided());
    case "probe":
      if (i.probe === null) throw invalid("snapshot.probe", "the probe estimator needs the source's probed offset, and the snapshot has none");
      return probeEstimate({ sourceRealtimeNs: i.sourceRealtimeNs, destinationRealtimeNs: i.destinationRealtimeNs, probe: i.probe, sinceProbeNs: i.probe.probeToPauseNs });
  }
}
