// Each host's realtime error over true time, as the harness set it (`hostClock` events): a list of
// clock segments per daemon, each an offset model from some instant on with the maxerror the host
// claimed meanwhile. The checker asks it whether a host lied (its real skew beyond its claim) or
// stepped (its realtime jumped, or ran faster than the drift allowance) inside a window, because a
// restore estimated from such a clock is only as good as the clock: its violations are host faults,
// not bugs.

import { maxAbsOffsetNs, maxSlopePpm, type OffsetModel, offsetAt } from "../../shared/time/offset-model.js";
import type { ChaosEvent } from "../history.js";

/** Host clock faults that explain a violation: the host claimed less than its skew, or its realtime stepped. */
export type FaultClass = "lying-clock" | "stepped-clock";

/** A realtime clock drifting more than this is "unstable" for the probe estimator; also I8's crystal drift when a host's is unknown. */
export const DRIFT_ALLOWANCE_PPM = 500;

const abs = (x: bigint) => (x < 0n ? -x : x);

export interface ClockSegment {
  fromNs: bigint;
  model: OffsetModel;
  maxerrorNs: bigint;
}

export class HostClocks {
  private readonly byDaemon = new Map<string, ClockSegment[]>();

  constructor(events: readonly ChaosEvent[]) {
    for (const e of events) {
      if (e.kind !== "hostClock") continue;
      let list = this.byDaemon.get(e.daemon);
      if (!list) this.byDaemon.set(e.daemon, (list = []));
      list.push({ fromNs: e.trueNs, model: e.model, maxerrorNs: e.maxerrorNs });
    }
    for (const l of this.byDaemon.values()) l.sort((a, b) => (a.fromNs < b.fromNs ? -1 : a.fromNs > b.fromNs ? 1 : 0));
  }

  /** The segment in force at t (the first one before any started). */
  private segment(daemon: string, t: bigint): ClockSegment | null {
    const l = this.byDaemon.get(daemon);
    if (!l || l.length === 0) return null;
    let s: ClockSegment | null = null;
    for (const x of l) if (x.fromNs <= t) s = x;
    return s ?? (l[0] as ClockSegment);
  }

  private segmentsIn(daemon: string, t1: bigint, t2: bigint): ClockSegment[] {
    const l = this.byDaemon.get(daemon) ?? [];
    const first = this.segment(daemon, t1);
    return l.filter((s) => s === first || (s.fromNs > t1 && s.fromNs <= t2));
  }

  skewAt(daemon: string, t: bigint): bigint {
    const s = this.segment(daemon, t);
    return s ? offsetAt(s.model, t) : 0n;
  }

  /** |real skew| > claimed maxerror at t. */
  lyingAt(daemon: string, t: bigint): boolean {
    const s = this.segment(daemon, t);
    return s !== null && abs(offsetAt(s.model, t)) > s.maxerrorNs;
  }

  /** Lying at t1 or t2, or at any step inside (a host honest at both ends may lie in between). */
  lyingIn(daemon: string, t1: bigint, t2: bigint): boolean {
    return this.lyingAt(daemon, t1) || this.lyingAt(daemon, t2) || (this.unstableIn(daemon, t1, t2) && this.mayLie(daemon, t2));
  }

  /** The realtime clock stepped (step, strobe edge, jitter redraw, run-time change) or ran faster than the drift allowance inside [t1, t2]. */
  unstableIn(daemon: string, t1: bigint, t2: bigint): boolean {
    const segs = this.segmentsIn(daemon, t1, t2);
    if (segs.length > 1) return true;
    const s = segs[0];
    return s !== undefined && modelUnstable(s.model, t1, t2);
  }

  /**
   * How far apart the two hosts' realtime can have been for a migration paused at t1 on `src` and
   * resumed at t2 on `dst` (snapshot and restore read them somewhere in between): exact when both
   * clocks were stable over the window, else the worst case of their models.
   */
  skewDifferenceMaxIn(src: string, dst: string, t1: bigint, t2: bigint): bigint {
    if (!this.unstableIn(src, t1, t2) && !this.unstableIn(dst, t1, t2)) return abs(this.skewAt(dst, t2) - this.skewAt(src, t1));
    const worst = (d: string) => this.segmentsIn(d, t1, t2).reduce((m, s) => (maxAbsOffsetNs(s.model, t2) > m ? maxAbsOffsetNs(s.model, t2) : m), 0n);
    return worst(src) + worst(dst);
  }

  /** Could this host's real skew exceed what it claims, at any time up to t (worst case of its models)? */
  mayLie(daemon: string, t: bigint): boolean {
    for (const s of this.byDaemon.get(daemon) ?? []) if (s.fromNs <= t && maxAbsOffsetNs(s.model, t) > s.maxerrorNs) return true;
    return false;
  }

  /**
   * The host clock fault, if any, that breaks the bound of a migration estimated with `estimator`.
   * The source reads its realtime at the capture, which follows the pause by however long the
   * source took (a stalled process): anywhere in [pause, resume]; the destination at the restore,
   * just before the resume. `wallclock` trusts both hosts' claims over that window; `probe` trusts
   * their rates from the migration's start (its probes) to the resume.
   */
  faultOf(m: { estimator: string; source: string; destination: string; startNs: bigint; pauseNs: bigint; resumeNs: bigint }): FaultClass | undefined {
    if (m.estimator === "wallclock" && (this.lyingIn(m.source, m.pauseNs, m.resumeNs) || this.lyingIn(m.destination, m.pauseNs, m.resumeNs))) return "lying-clock";
    if (m.estimator === "probe" && (this.unstableIn(m.source, m.startNs, m.resumeNs) || this.unstableIn(m.destination, m.startNs, m.resumeNs))) return "stepped-clock";
    return undefined;
  }
}

function modelUnstable(m: OffsetModel, t1: bigint, t2: bigint): boolean {
  switch (m.kind) {
    case "constant":
      return false;
    case "drift":
      return Math.abs(m.ppm) > DRIFT_ALLOWANCE_PPM;
    case "step":
      return m.stepNs !== 0n && m.atNs > t1 && m.atNs <= t2;
    case "strobe":
      return m.deltaNs !== 0n && m.untilNs > t1 && m.fromNs <= t2;
    case "jitter":
      return m.amplitudeNs !== 0n && t1 / m.intervalNs !== t2 / m.intervalNs;
    case "periodic":
      return maxSlopePpm(m) > DRIFT_ALLOWANCE_PPM;
    case "sum":
      return m.parts.some((p) => modelUnstable(p, t1, t2));
  }
}
