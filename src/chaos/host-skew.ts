// How a chaos run draws a host's realtime skew: one generator for the simulator and for live
// daemons. Magnitudes follow Jepsen's clock nemesis (bumps of 2^(2..18) ms, 4 ms to 262 s,
// log-uniform, either sign; strobes between a bump and zero); drift, wander and jitter follow
// TigerBeetle's offset models. The result is an offset model (shared/time/offset-model.ts), a pure
// function of true time, so a simulated run replays from its seed.
//
// The simulator runs every part. A live daemon keeps its skew itself: it takes the offset and the
// drift as flags at start and wander and jitter through PUT /v1/host/clock (`daemonSkewSettings`),
// but has no way to hold a step at a future instant or a strobe. So a live host draws only the
// parts a daemon keeps running (`LIVE_SKEW_PARTS`) from this same generator, and the live harness
// steps clocks as nemeses during migrations, with the same bump magnitudes (`jepsenBumpNs`).

import { assert } from "../shared/errors.js";
import type { SkewUpdate } from "../shared/time/skew.js";
import { type OffsetModel, sum, ZERO_MODEL } from "../shared/time/offset-model.js";
import { logUniform, type Random } from "../shared/time/random.js";

const MS = 1_000_000n;
const S = 1_000_000_000n;
/** Jepsen's largest bump, 2^18 ms. */
const BUMP_MAX_NS = 262_144n * MS;
const BUMP_MIN_NS = 4n * MS;

/** The parts of a skew model, in the order they are drawn (a fixed order keeps a seed's draws stable). */
export const SKEW_PARTS = ["offset", "drift", "steps", "strobe", "wander", "jitter"] as const;
export type SkewPart = (typeof SKEW_PARTS)[number];
/** What a live daemon keeps running on its own, from its start flags and PUT /v1/host/clock. */
export const LIVE_SKEW_PARTS: readonly SkewPart[] = ["offset", "drift", "wander", "jitter"];

/**
 * A Jepsen bump: magnitude log-uniform in [4 ms, min(cap, 262 s)], random sign. A cap below 4 ms
 * leaves no log range: the magnitude is uniform in [0, cap] instead.
 */
export function jepsenBumpNs(r: Random, capNs: bigint): bigint {
  const mag = capNs < BUMP_MIN_NS ? r.bigint(0n, capNs) : logUniform(r, BUMP_MIN_NS, capNs < BUMP_MAX_NS ? capNs : BUMP_MAX_NS);
  return r.chance(0.5) ? mag : -mag;
}

export interface SkewDrawOptions {
  /** Largest magnitude of any one part. */
  capNs: bigint;
  /** Steps and strobes start somewhere in [0, horizonNs] of true time. */
  horizonNs: bigint;
  /** Parts that may be drawn (default: all). */
  parts?: readonly SkewPart[];
}

/**
 * One host's realtime skew: each part present by a fixed chance (offset 0.8, drift 0.5, up to two
 * steps, strobe 0.2, wander 0.3, jitter 0.5). Parts left out of `parts` draw nothing.
 */
export function drawSkewModel(r: Random, o: SkewDrawOptions): OffsetModel {
  const { capNs, horizonNs } = o;
  if (capNs <= 0n) return ZERO_MODEL;
  const allowed = new Set(o.parts ?? SKEW_PARTS);
  const parts: OffsetModel[] = [];
  if (allowed.has("offset") && r.chance(0.8)) parts.push({ kind: "constant", offsetNs: jepsenBumpNs(r, capNs) });
  if (allowed.has("drift") && r.chance(0.5)) parts.push({ kind: "drift", ppm: Math.round(r.float() * 10_000 - 5_000) / 10, fromNs: 0n });
  const steps = allowed.has("steps") ? r.int(0, 2) : 0;
  for (let i = 0; i < steps; i++) parts.push({ kind: "step", atNs: r.bigint(0n, horizonNs), stepNs: jepsenBumpNs(r, capNs) });
  if (allowed.has("strobe") && r.chance(0.2)) {
    const fromNs = r.bigint(0n, horizonNs);
    const delta = jepsenBumpNs(r, capNs);
    parts.push({ kind: "strobe", deltaNs: delta < 0n ? -delta : delta, periodNs: logUniform(r, MS, S), fromNs, untilNs: fromNs + r.bigint(0n, 32n * S) });
  }
  if (allowed.has("wander") && r.chance(0.3)) {
    const amp = logUniform(r, 1_000n, capNs < 5n * MS ? capNs : 5n * MS);
    parts.push({ kind: "periodic", amplitudeNs: amp, periodNs: r.bigint(5n * S, 60n * S), phaseNs: r.bigint(0n, 60n * S) });
  }
  if (allowed.has("jitter") && r.chance(0.5)) {
    const amp = logUniform(r, 1_000n, capNs < 500_000n ? capNs : 500_000n);
    parts.push({ kind: "jitter", amplitudeNs: amp, intervalNs: logUniform(r, MS, S), seed: r.bigint(0n, (1n << 63n) - 1n) });
  }
  return sum(...parts);
}

/** How a daemon is given a skew model of `LIVE_SKEW_PARTS`: start flags, then one PUT /v1/host/clock. */
export interface DaemonSkewSettings {
  offsetNs: bigint;
  driftPpm: number;
  /** Wander and jitter (the daemon draws their phase and seed itself); null when there are none. */
  update: SkewUpdate | null;
}

export function daemonSkewSettings(model: OffsetModel): DaemonSkewSettings {
  const out: DaemonSkewSettings = { offsetNs: 0n, driftPpm: 0, update: null };
  const update: SkewUpdate = {};
  for (const p of model.kind === "sum" ? model.parts : [model]) {
    if (p.kind === "constant") out.offsetNs += p.offsetNs;
    else if (p.kind === "drift") out.driftPpm += p.ppm;
    else if (p.kind === "periodic") Object.assign(update, { wanderAmplitudeNs: p.amplitudeNs, wanderPeriodNs: p.periodNs });
    else if (p.kind === "jitter") Object.assign(update, { jitterNs: p.amplitudeNs, jitterIntervalNs: p.intervalNs });
    else assert(false, `a live daemon cannot keep a ${p.kind} skew part on its own: draw live skew with LIVE_SKEW_PARTS`);
  }
  if (Object.keys(update).length > 0) out.update = update;
  return out;
}

/** A skew update as the body of PUT /v1/host/clock (64-bit values as decimal strings). */
export function skewUpdateBody(u: SkewUpdate): Record<string, string | number | boolean> {
  return Object.fromEntries(Object.entries(u).map(([k, v]) => [k, typeof v === "bigint" ? v.toString() : (v as number | boolean)]));
}
