// Run-time skew injection (PUT /v1/host/clock, chaos nemeses): a host's realtime error is a base
// model plus changes applied at given true instants, each kept continuous unless it is a step, a
// set offset, or jitter (noise jumps by nature; removing it returns to the line it rode on).

import { invalid, TscmigError } from "../errors.js";
import { LIMITS } from "../limits.js";
import { type OffsetModel, offsetAt, sum, validateOffsetModel, ZERO_MODEL } from "./offset-model.js";

export interface SkewUpdate {
  /** Set the skew to exactly this offset now (folds every earlier component into it). */
  offsetNs?: bigint;
  /** Drift from now on at this rate (replaces the current drift; no jump). */
  driftPpm?: number;
  /** Add a step of this size now. */
  stepNs?: bigint;
  /** Replace the periodic wander (amplitude 0 removes it); the old one stops where it is, no jump. */
  wanderAmplitudeNs?: bigint;
  wanderPeriodNs?: bigint;
  /** Replace the jitter (amplitude 0 removes it). */
  jitterNs?: bigint;
  jitterIntervalNs?: bigint;
  /** Claimed error bound of this host's realtime (what it would publish as maxerror). */
  maxerrorNs?: bigint;
  /** Drop every component: skew 0 from now. */
  reset?: boolean;
}

export interface SkewState {
  /** The full model, a pure function of true time. */
  model: OffsetModel;
  /** What the host claims its realtime error is bounded by. */
  maxerrorNs: bigint;
}

const abs = (x: bigint): bigint => (x < 0n ? -x : x);

/** Largest |offset| a periodic or jitter part can add (0 for none). */
function amplitude(m: OffsetModel | null): bigint {
  return m !== null && (m.kind === "periodic" || m.kind === "jitter") ? abs(m.amplitudeNs) : 0n;
}

function partsOf(m: OffsetModel): OffsetModel[] {
  return m.kind === "sum" ? m.parts.flatMap(partsOf) : [m];
}

/**
 * `model` with every part that is constant from `nowNs` on (constants, steps at or before it) —
 * and, when `drifts`, every drift, frozen at its value at `nowNs` — folded into one constant.
 * Equal to `model` at every t ≥ nowNs, except for the frozen drifts.
 */
function foldAt(model: OffsetModel, nowNs: bigint, drifts: boolean): OffsetModel {
  let c = 0n;
  const kept: OffsetModel[] = [];
  for (const p of partsOf(model)) {
    if (p.kind === "constant") c += p.offsetNs;
    else if (p.kind === "step" && p.atNs <= nowNs) c += p.stepNs;
    else if (p.kind === "drift" && drifts) c += offsetAt(p, nowNs);
    else kept.push(p);
  }
  return sum({ kind: "constant", offsetNs: c }, ...kept);
}

function checkMaxerror(v: bigint): void {
  if (v < 0n || v > LIMITS.offsetNsMax) throw invalid("maxerrorNs", `must be within 0..${LIMITS.offsetNsMax} ns`);
}

/**
 * Holds the host's skew model and applies updates at true instant `nowNs`. At every update the
 * parts that are constant from now on (constants, steps already taken) are folded into one
 * constant, and drifts too when the drift changes, so the model stays small however many updates
 * arrive; every other part of the initial model (wander, jitter, strobes) keeps running. Folding is
 * exact from `nowNs` on: after an update, evaluate the model only at or after that instant.
 */
export class SkewController {
  private base: OffsetModel; // stable part, continuous through updates
  private drift: { ppm: number; fromNs: bigint } | null = null;
  private wander: OffsetModel | null = null;
  private jitter: OffsetModel | null = null;
  private maxerror: bigint;
  private jitterSeed: bigint;

  constructor(initial: OffsetModel = ZERO_MODEL, maxerrorNs = 0n, jitterSeed = 0n) {
    validateOffsetModel(initial, "skew");
    checkMaxerror(maxerrorNs);
    this.base = initial;
    this.maxerror = maxerrorNs;
    this.jitterSeed = jitterSeed;
  }

  get state(): SkewState {
    return { model: this.model(), maxerrorNs: this.maxerror };
  }

  model(): OffsetModel {
    const parts: OffsetModel[] = [this.base];
    if (this.drift) parts.push({ kind: "drift", ppm: this.drift.ppm, fromNs: this.drift.fromNs });
    if (this.wander) parts.push(this.wander);
    if (this.jitter) parts.push(this.jitter);
    return sum(...parts);
  }

  offsetAt(tNs: bigint): bigint {
    return offsetAt(this.model(), tNs);
  }

  /**
   * Validates all of `u` first, then applies it: nothing is half-applied. The limit holds on the
   * result, not on each request: ten steps of 1000 s are refused from the second on, because the
   * host's skew would then be 2000 s (|skew now| plus the wander and jitter amplitudes ≤ the limit).
   */
  apply(u: SkewUpdate, nowNs: bigint): SkewState {
    const before = { base: this.base, drift: this.drift, wander: this.wander, jitter: this.jitter, maxerror: this.maxerror };
    const state = this.applyUnchecked(u, nowNs);
    const reachNs = abs(offsetAt(sum(this.base, this.drift ? { kind: "drift", ppm: this.drift.ppm, fromNs: this.drift.fromNs } : ZERO_MODEL), nowNs)) + amplitude(this.wander) + amplitude(this.jitter);
    if (reachNs > LIMITS.offsetNsMax) {
      Object.assign(this, before);
      const field = (["stepNs", "offsetNs", "wanderAmplitudeNs", "jitterNs", "driftPpm"] as const).find((k) => u[k] !== undefined) ?? "body";
      throw new TscmigError("invalid_argument", `this change would bring the host's realtime skew to ${reachNs} ns; its magnitude is limited to ${LIMITS.offsetNsMax} ns in all (the limit holds on the skew, not per change)`, {
        field,
        reason: "skew_limit",
      });
    }
    return state;
  }

  private applyUnchecked(u: SkewUpdate, nowNs: bigint): SkewState {
    const bound = LIMITS.offsetNsMax;
    const check = (v: bigint | undefined, f: string) => {
      if (v !== undefined && (v > bound || v < -bound)) throw invalid(f, `|value| must be ≤ ${bound} ns`);
    };
    check(u.offsetNs, "offsetNs");
    check(u.stepNs, "stepNs");
    check(u.wanderAmplitudeNs, "wanderAmplitudeNs");
    check(u.jitterNs, "jitterNs");
    if (u.driftPpm !== undefined && !(Number.isFinite(u.driftPpm) && Math.abs(u.driftPpm) <= LIMITS.driftPpmMax))
      throw invalid("driftPpm", `must be within ±${LIMITS.driftPpmMax} ppm`);
    if ((u.wanderAmplitudeNs !== undefined && u.wanderAmplitudeNs !== 0n && (u.wanderPeriodNs ?? 0n) <= 0n) || (u.wanderPeriodNs !== undefined && u.wanderPeriodNs <= 0n))
      throw invalid("wanderPeriodNs", "a wander needs a positive period");
    if (u.jitterNs !== undefined && u.jitterNs < 0n) throw invalid("jitterNs", "a jitter amplitude cannot be negative");
    if (u.jitterIntervalNs !== undefined && u.jitterIntervalNs <= 0n) throw invalid("jitterIntervalNs", "must be positive");
    if (u.maxerrorNs !== undefined) checkMaxerror(u.maxerrorNs);

    if (u.reset) {
      this.base = ZERO_MODEL;
      this.drift = null;
      this.wander = null;
      this.jitter = null;
    }
    // Steps already taken and constants become one constant, so step after step stays one part.
    this.base = foldAt(this.base, nowNs, false);
    if (u.offsetNs !== undefined) {
      this.base = { kind: "constant", offsetNs: u.offsetNs };
      this.drift = this.drift ? { ppm: this.drift.ppm, fromNs: nowNs } : null;
      this.wander = null;
      this.jitter = null;
    } else if (u.driftPpm !== undefined) {
      // The current drift stops here (continuously): freeze it, and any drift of the initial model,
      // at its value now. Wander, jitter and strobes of the initial model keep running.
      const driftNow = this.drift ? offsetAt({ kind: "drift", ...this.drift }, nowNs) : 0n;
      this.base = foldAt(sum(this.base, { kind: "constant", offsetNs: driftNow }), nowNs, true);
    }
    if (u.driftPpm !== undefined) this.drift = u.driftPpm === 0 ? null : { ppm: u.driftPpm, fromNs: nowNs };
    if (u.stepNs !== undefined && u.stepNs !== 0n) this.base = sum(this.base, { kind: "step", atNs: nowNs, stepNs: u.stepNs });
    if (u.wanderAmplitudeNs !== undefined) {
      // The old wander stops where it is (continuously): its value now joins the base.
      if (this.wander) this.base = foldAt(sum(this.base, { kind: "constant", offsetNs: offsetAt(this.wander, nowNs) }), nowNs, false);
      this.wander =
        u.wanderAmplitudeNs === 0n ? null : { kind: "periodic", amplitudeNs: u.wanderAmplitudeNs, periodNs: u.wanderPeriodNs ?? 1n, phaseNs: -nowNs };
    }
    if (u.jitterNs !== undefined)
      this.jitter =
        u.jitterNs === 0n
          ? null
          : { kind: "jitter", amplitudeNs: u.jitterNs, intervalNs: u.jitterIntervalNs ?? 1_000_000n, seed: this.jitterSeed };
    if (u.maxerrorNs !== undefined) this.maxerror = u.maxerrorNs;
    return this.state;
  }
}
