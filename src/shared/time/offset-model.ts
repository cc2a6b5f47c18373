// Offset models: how far a host's clock is from true time, as a pure function of true time
// (TigerBeetle's TimeSim models, Jepsen's bump and strobe). The same code drives a host's realtime
// skew and its TSC crystal, in the simulator and in live daemons. A pure function of t keeps every
// run replayable: jitter is a hash of (seed, interval index), not a stream of draws.

import { invalid, TscmigError } from "../errors.js";
import { LIMITS } from "../limits.js";
import { hashUnit } from "./random.js";

export type OffsetModel =
  | { kind: "constant"; offsetNs: bigint }
  /** offset = (t - fromNs)·ppm/10^6 for t ≥ fromNs, else 0. */
  | { kind: "drift"; ppm: number; fromNs: bigint }
  /** offset = stepNs for t ≥ atNs. */
  | { kind: "step"; atNs: bigint; stepNs: bigint }
  /** offset = amplitude·sin(2π(t + phase)/period): slow wander. */
  | { kind: "periodic"; amplitudeNs: bigint; periodNs: bigint; phaseNs: bigint }
  /** piecewise-constant noise in [-amplitude, amplitude], redrawn every intervalNs, by seed. */
  | { kind: "jitter"; amplitudeNs: bigint; intervalNs: bigint; seed: bigint }
  /** Jepsen strobe: alternates +deltaNs / 0 every periodNs between fromNs and untilNs. */
  | { kind: "strobe"; deltaNs: bigint; periodNs: bigint; fromNs: bigint; untilNs: bigint }
  | { kind: "sum"; parts: OffsetModel[] };

export const ZERO_MODEL: OffsetModel = { kind: "constant", offsetNs: 0n };

const PPB_PER_PPM = 1000;

function ppbOf(ppm: number): bigint {
  return BigInt(Math.round(ppm * PPB_PER_PPM));
}

/** Offset in ns of a clock following `model` at true time `tNs`. */
export function offsetAt(model: OffsetModel, tNs: bigint): bigint {
  switch (model.kind) {
    case "constant":
      return model.offsetNs;
    case "drift":
      return tNs <= model.fromNs ? 0n : ((tNs - model.fromNs) * ppbOf(model.ppm)) / 1_000_000_000n;
    case "step":
      return tNs >= model.atNs ? model.stepNs : 0n;
    case "periodic": {
      const phase = Number((tNs + model.phaseNs) % model.periodNs) / Number(model.periodNs);
      return BigInt(Math.round(Number(model.amplitudeNs) * Math.sin(2 * Math.PI * phase)));
    }
    case "jitter": {
      const index = tNs >= 0n ? tNs / model.intervalNs : (tNs - model.intervalNs + 1n) / model.intervalNs;
      const u = hashUnit(model.seed, index);
      return BigInt(Math.round(Number(model.amplitudeNs) * (2 * u - 1)));
    }
    case "strobe": {
      if (tNs < model.fromNs || tNs >= model.untilNs) return 0n;
      return ((tNs - model.fromNs) / model.periodNs) % 2n === 0n ? model.deltaNs : 0n;
    }
    case "sum": {
      let sum = 0n;
      for (const part of model.parts) sum += offsetAt(part, tNs);
      return sum;
    }
  }
}

/** Largest |offset| the model can reach (a bound used to validate and to report). */
export function maxAbsOffsetNs(model: OffsetModel, horizonNs: bigint): bigint {
  const abs = (x: bigint) => (x < 0n ? -x : x);
  switch (model.kind) {
    case "constant":
      return abs(model.offsetNs);
    case "drift":
      return abs(offsetAt(model, horizonNs));
    case "step":
      return abs(model.stepNs);
    case "periodic":
    case "jitter":
      return abs(model.amplitudeNs);
    case "strobe":
      return abs(model.deltaNs);
    case "sum":
      return model.parts.reduce((acc, p) => acc + maxAbsOffsetNs(p, horizonNs), 0n);
  }
}

/** Largest |d offset / dt| in ppm, for models that are continuous (a crystal must be). */
export function maxSlopePpm(model: OffsetModel): number {
  switch (model.kind) {
    case "constant":
      return 0;
    case "drift":
      return Math.abs(model.ppm);
    case "periodic":
      return (2 * Math.PI * Math.abs(Number(model.amplitudeNs)) * 1e6) / Number(model.periodNs);
    case "sum":
      return model.parts.reduce((acc, p) => acc + maxSlopePpm(p), 0);
    default:
      return Number.POSITIVE_INFINITY;
  }
}

export interface ValidateOptions {
  /** A TSC crystal: continuous, monotone (slope well below 10^6 ppm), drift within 500 ppm. */
  crystal?: boolean;
}

/** Throws a TscmigError naming `field` when the model is impossible or out of limits. */
export function validateOffsetModel(model: OffsetModel, field: string, opts: ValidateOptions = {}): void {
  const checkOffset = (v: bigint, f: string) => {
    if (v > LIMITS.offsetNsMax || v < -LIMITS.offsetNsMax) throw invalid(f, `|offset| must be ≤ ${LIMITS.offsetNsMax} ns`);
  };
  switch (model.kind) {
    case "constant":
      checkOffset(model.offsetNs, `${field}.offsetNs`);
      break;
    case "drift":
      if (!Number.isFinite(model.ppm) || Math.abs(model.ppm) > LIMITS.driftPpmMax)
        throw invalid(`${field}.ppm`, `drift must be a finite number within ±${LIMITS.driftPpmMax} ppm`);
      break;
    case "step":
      checkOffset(model.stepNs, `${field}.stepNs`);
      break;
    case "periodic":
      checkOffset(model.amplitudeNs, `${field}.amplitudeNs`);
      if (model.periodNs <= 0n) throw invalid(`${field}.periodNs`, "period must be positive");
      break;
    case "jitter":
      checkOffset(model.amplitudeNs, `${field}.amplitudeNs`);
      if (model.amplitudeNs < 0n) throw invalid(`${field}.amplitudeNs`, "amplitude must be ≥ 0");
      if (model.intervalNs <= 0n) throw invalid(`${field}.intervalNs`, "interval must be positive");
      break;
    case "strobe":
      checkOffset(model.deltaNs, `${field}.deltaNs`);
      if (model.periodNs <= 0n) throw invalid(`${field}.periodNs`, "period must be positive");
      if (model.untilNs < model.fromNs) throw invalid(`${field}.untilNs`, "must not precede fromNs");
      break;
    case "sum":
      if (model.parts.length > 64) throw invalid(`${field}.parts`, "at most 64 parts");
      model.parts.forEach((p, i) => validateOffsetModel(p, `${field}.parts[${i}]`, opts));
      break;
    default:
      throw invalid(`${field}.kind`, `unknown offset model kind ${JSON.stringify((model as { kind: unknown }).kind)}`);
  }
  if (opts.crystal) {
    const slope = maxSlopePpm(model);
    if (!(slope <= LIMITS.driftPpmMax))
      throw new TscmigError("invalid_argument", `${field}: a TSC crystal only drifts and wanders, within ±${LIMITS.driftPpmMax} ppm (got a slope of ${slope} ppm)`, { field });
  }
}

/** Composes models, flattening nested sums and dropping zero constants. */
export function sum(...parts: OffsetModel[]): OffsetModel {
  const flat: OffsetModel[] = [];
  for (const p of parts) {
    if (p.kind === "sum") flat.push(...p.parts);
    else if (!(p.kind === "constant" && p.offsetNs === 0n)) flat.push(p);
  }
  if (flat.length === 0) return ZERO_MODEL;
  if (flat.length === 1) return flat[0] as OffsetModel;
  return { kind: "sum", parts: flat };
}

// ---- JSON form (64-bit values as decimal strings) -------------------------------------------------

function big(v: unknown, field: string): bigint {
  if (typeof v === "bigint") return v;
  if (typeof v === "number" && Number.isSafeInteger(v)) return BigInt(v);
  if (typeof v === "string" && /^-?\d{1,20}$/.test(v)) return BigInt(v);
  throw invalid(field, "must be an integer (a decimal string for 64-bit values)");
}

function num(v: unknown, field: string): number {
  if (typeof v === "number" && Number.isFinite(v)) return v;
  if (typeof v === "string" && v.trim() !== "" && Number.isFinite(Number(v))) return Number(v);
  throw invalid(field, "must be a finite number");
}

function only(obj: Record<string, unknown>, allowed: string[], field: string): void {
  for (const k of Object.keys(obj)) if (!allowed.includes(k)) throw invalid(`${field}.${k}`, "unknown key");
}

/** Parses and validates the JSON form of an offset model. */
export function parseOffsetModel(json: unknown, field: string, opts: ValidateOptions = {}): OffsetModel {
  if (typeof json !== "object" || json === null || Array.isArray(json)) throw invalid(field, "must be an object");
  const o = json as Record<string, unknown>;
  let model: OffsetModel;
  switch (o.kind) {
    case "constant":
      only(o, ["kind", "offsetNs"], field);
      model = { kind: "constant", offsetNs: big(o.offsetNs, `${field}.offsetNs`) };
      break;
    case "drift":
      only(o, ["kind", "ppm", "fromNs"], field);
      model = { kind: "drift", ppm: num(o.ppm, `${field}.ppm`), fromNs: o.fromNs === undefined ? 0n : big(o.fromNs, `${field}.fromNs`) };
      break;
    case "step":
      only(o, ["kind", "atNs", "stepNs"], field);
      model = { kind: "step", atNs: big(o.atNs, `${field}.atNs`), stepNs: big(o.stepNs, `${field}.stepNs`) };
      break;
    case "periodic":
      only(o, ["kind", "amplitudeNs", "periodNs", "phaseNs"], field);
      model = {
        kind: "periodic",
        amplitudeNs: big(o.amplitudeNs, `${field}.amplitudeNs`),
        periodNs: big(o.periodNs, `${field}.periodNs`),
        phaseNs: o.phaseNs === undefined ? 0n : big(o.phaseNs, `${field}.phaseNs`),
      };
      break;
    case "jitter":
      only(o, ["kind", "amplitudeNs", "intervalNs", "seed"], field);
      model = {
        kind: "jitter",
        amplitudeNs: big(o.amplitudeNs, `${field}.amplitudeNs`),
        intervalNs: big(o.intervalNs, `${field}.intervalNs`),
        seed: o.seed === undefined ? 0n : big(o.seed, `${field}.seed`),
      };
      break;
    case "strobe":
      only(o, ["kind", "deltaNs", "periodNs", "fromNs", "untilNs"], field);
      model = {
        kind: "strobe",
        deltaNs: big(o.deltaNs, `${field}.deltaNs`),
        periodNs: big(o.periodNs, `${field}.periodNs`),
        fromNs: big(o.fromNs, `${field}.fromNs`),
        untilNs: big(o.untilNs, `${field}.untilNs`),
      };
      break;
    case "sum":
      only(o, ["kind", "parts"], field);
      if (!Array.isArray(o.parts)) throw invalid(`${field}.parts`, "must be an array");
      model = { kind: "sum", parts: o.parts.map((p, i) => parseOffsetModel(p, `${field}.parts[${i}]`)) };
      break;
    default:
      throw invalid(`${field}.kind`, `unknown offset model kind ${JSON.stringify(o.kind)}`);
  }
  validateOffsetModel(model, field, opts);
  return model;
}

/** JSON form of a model (bigints as decimal strings). */
export function offsetModelToJson(model: OffsetModel): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(model)) {
    if (k === "parts") out.parts = (v as OffsetModel[]).map(offsetModelToJson);
    else out[k] = typeof v === "bigint" ? v.toString() : v;
  }
  return out;
}
