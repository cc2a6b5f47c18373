// Run-time skew injection (PUT /v1/host/clock, chaos nemeses): a host's realtime error is a base
// model plus changes applied at given true instants, each kept continuous unless it is a step.

import { invalid } from "../errors.js";
import { LIMITS } from "../limits.js";
import { type OffsetModel, offsetAt, sum, validateOffsetModel, ZERO_MODEL } from "./offset-model.js";

export interface SkewUpdate {
  /** Set the skew to exactly this offset now (folds every earlier component into it). */
  offsetNs?: bigint;
  /** Drift from now on at this rate (replaces the current drift; no jump). */
  driftPpm?: number;
  /** Add a step of this size now. */
  stepNs?: bigint;
  /** Replace the periodic wander (amplitude 0 removes it). */
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

/**
 * Holds the host's skew model and applies updates at true instant `nowNs`. The "stable" part of the
 * model (constants, drifts, steps) is folded into one constant at `nowNs` whenever the drift changes,
 * so the resulting model stays small however many updates arrive.
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

  /** Validates all of `u` first, then applies it: nothing is half-applied. */
  apply(u: SkewUpdate, nowNs: bigint): SkewState {
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
    if (u.wanderAmplitudeNs !== undefined && u.wanderAmplitudeNs !== 0n && (u.wanderPeriodNs ?? 0n) <= 0n)
      throw invalid("wanderPeriodNs", "a wander needs a positive period");
    if (u.jitterIntervalNs !== undefined && u.jitterIntervalNs <= 0n) throw invalid("jitterIntervalNs", "must be positive");
    if (u.maxerrorNs !== undefined && (u.maxerrorNs < 0n || u.maxerrorNs > bound)) throw invalid("maxerrorNs", "must be within 0..1000 s");

    if (u.reset) {
      this.base = ZERO_MODEL;
      this.drift = null;
      this.wander = null;
      this.jitter = null;
    }
    // Fold the continuous stable part (base + drift so far) into a constant at now.
    const stableNow = offsetAt(this.base, nowNs) + (this.drift ? offsetAt({ kind: "drift", ...this.drift }, nowNs) : 0n);
    if (u.offsetNs !== undefined) {
      this.base = { kind: "constant", offsetNs: u.offsetNs };
      this.drift = this.drift ? { ppm: this.drift.ppm, fromNs: nowNs } : null;
      this.wander = null;
      this.jitter = null;
    } else if (u.driftPpm !== undefined) {
      this.base = { kind: "constant", offsetNs: stableNow };
    }
    if (u.driftPpm !== undefined) this.drift = u.driftPpm === 0 ? null : { ppm: u.driftPpm, fromNs: nowNs };
    if (u.stepNs !== undefined && u.stepNs !== 0n) this.base = sum(this.base, { kind: "step", atNs: nowNs, stepNs: u.stepNs });
    if (u.wanderAmplitudeNs !== undefined)
      this.wander =
        u.wanderAmplitudeNs === 0n ? null : { kind: "periodic", amplitudeNs: u.wanderAmplitudeNs, periodNs: u.wanderPeriodNs ?? 1n, phaseNs: -nowNs };
    if (u.jitterNs !== undefined)
      this.jitter =
        u.jitterNs === 0n
          ? null
          : { kind: "jitter", amplitudeNs: u.jitterNs, intervalNs: u.jitterIntervalNs ?? 1_000_000n, seed: this.jitterSeed };
    if (u.maxerrorNs !== undefined) this.maxerror = u.maxerrorNs;
    return this.state;
  }
}
