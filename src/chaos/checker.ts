// The checker (SPEC §3): reads one run's history — every guest sample with true time, every
// run/stop/handled/migration event, and the harness's facts about hosts, VMs and faults — and proves
// I1–I9 or names each violation with the VM, vCPU, daemons, instants and values involved.
//
// It trusts nothing the daemons concluded: the bound a migration reports is compared with the error
// measured against shared truth, ownership is rebuilt from run/stop events and cross-checked with
// the samples themselves, and rates are measured between samples.
//
// Host clock faults are not bugs. A restore whose estimate rests on the hosts' own realtime claims
// (`wallclock`) is only as good as those claims: when a host's real skew exceeded the maxerror it
// claimed, the resulting I3 violation is reported as fault class "lying-clock", apart from bugs. The
// `probe` estimator assumes each host's realtime is rate-stable between probe and resume; a step,
// strobe or jitter edge inside that window makes its I3 violations "stepped-clock". A guest that
// widened its bound by a figure a host fault made wrong inherits the class for its I4 violations.

import type { GuestSample } from "../shared/history.js";
import { maxAbsOffsetNs, maxSlopePpm, type OffsetModel, offsetAt } from "../shared/time/offset-model.js";
import type { ChaosEvent, ChaosHistory } from "./history.js";
import { policyConformance } from "./policy-conformance.js";

export const INVARIANTS = ["I1", "I2", "I3", "I4", "I5", "I6", "I7", "I8", "I9"] as const;
/** L: the deployment did not work again after healing; E: something threw that would have killed a daemon; D: a rerun of the seed differed. */
export type Invariant = (typeof INVARIANTS)[number] | "L" | "E" | "D";
/** Everything a report lists a count for, in order. */
export const CHECKS: readonly Invariant[] = [...INVARIANTS, "L", "E", "D"];
export type FaultClass = "lying-clock" | "stepped-clock";

export const INVARIANT_TITLES: Record<Invariant, string> = {
  I1: "TSC monotonic",
  I2: "kvmclock monotonic",
  I3: "bounded migration error",
  I4: "honest guest bounds",
  I5: "exactly-once migration handling",
  I6: "single owner",
  I7: "nothing lost",
  I8: "rate continuity",
  I9: "policy conformance",
  L: "liveness after healing",
  E: "no daemon exception",
  D: "determinism",
};

export type Value = string | number | boolean;

export interface Violation {
  invariant: Invariant;
  message: string;
  vmId?: string;
  vcpu?: number;
  daemon?: string;
  trueNs?: bigint;
  values: Record<string, Value>;
  faultClass?: FaultClass;
  /** Filled by the campaign. */
  run?: number;
  seed?: bigint;
}

export interface MigrationRow {
  migrationId: string;
  vmId: string;
  source: string;
  destination: string;
  policy: string;
  estimator: string;
  outcome: string;
  capped: boolean;
  pauseTrueNs: bigint;
  resumeTrueNs: bigint;
  blackoutNs: bigint;
  estimatedBlackoutNs: bigint;
  /** Guest TSC (vCPU 0) at resume minus what the source would read, in ns of guest time. */
  tscErrorNs: bigint;
  kvmclockErrorNs: bigint;
  errorBoundNs: bigint;
  hostFault: FaultClass | null;
}

export interface CheckCounts {
  samples: number;
  /** vCPU readings inside the samples (each is checked for I1, I2 and I8). */
  vcpuReadings: number;
  /** Migrations whose resume was reported and whose error was checked against its bound (I3). */
  migrations: number;
  migrationsCommitted: number;
  migrationsStarted: number;
  faults: number;
  vms: number;
  handled: number;
  /** Sample pairs whose rate was measured (I8). */
  ratePairs: number;
  /** Restores whose clocks were checked against their policy's definition (I9; sim runs record them). */
  restores: number;
  /** Liveness checks after healing (L). */
  livenessChecks: number;
}

export interface CheckResult {
  /** The first `perInvariantMax` violations of each invariant, with their values. */
  violations: Violation[];
  /** Violations explained by a host clock that broke its claim (not bugs), listed the same way. */
  hostFaults: Violation[];
  /** Every violation counted, listed or not: invariant (or "invariant/faultClass") → count. */
  counts: Record<string, number>;
  checked: CheckCounts;
  migrations: MigrationRow[];
}

export interface CheckOptions {
  /** Largest violations kept per invariant (the rest are counted). */
  perInvariantMax?: number;
  /** Rate pairs shorter than this are not measured (rounding dominates). */
  rateMinIntervalNs?: bigint;
}

const abs = (x: bigint) => (x < 0n ? -x : x);
const NO_BOUND: GuestSample["bounded"] = { earliestNs: 0n, latestNs: 0n, realtimeNs: 0n, status: "unknown" };
const DRIFT_ALLOWANCE_PPM = 500;
const TSC_TOLERANCE_PPM = 250;

// ---- host clock timelines ----------------------------------------------------------------------

interface ClockSegment {
  fromNs: bigint;
  model: OffsetModel;
  maxerrorNs: bigint;
}

class HostClocks {
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
  segment(daemon: string, t: bigint): ClockSegment | null {
    const l = this.byDaemon.get(daemon);
    if (!l || l.length === 0) return null;
    let s: ClockSegment | null = null;
    for (const x of l) if (x.fromNs <= t) s = x;
    return s ?? (l[0] as ClockSegment);
  }
  segmentsIn(daemon: string, t1: bigint, t2: bigint): ClockSegment[] {
    const l = this.byDaemon.get(daemon) ?? [];
    const first = this.segment(daemon, t1);
    return l.filter((s) => s === first || (s.fromNs > t1 && s.fromNs <= t2));
  }
  known(daemon: string): boolean {
    return (this.byDaemon.get(daemon)?.length ?? 0) > 0;
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

// ---- the check ---------------------------------------------------------------------------------

type Timeline = { t: bigint; order: number; kind: "event"; e: ChaosEvent } | { t: bigint; order: number; kind: "sample"; s: GuestSample };

/**
 * Merges samples and events into one true-time order. Sim runs record `order` (samples recorded
 * before each event) and are merged exactly; live runs are merged by true time, and at one instant
 * a stop sorts before samples and samples before a run.
 */
function timeline(h: ChaosHistory, order: readonly number[] | undefined): Timeline[] {
  const out: Timeline[] = [];
  if (order && order.length === h.events.length) {
    let si = 0;
    h.events.forEach((e, i) => {
      const upto = order[i] as number;
      while (si < upto && si < h.samples.length) {
        const s = h.samples[si] as GuestSample;
        out.push({ t: s.trueNs, order: out.length, kind: "sample", s });
        si++;
      }
      out.push({ t: e.trueNs, order: out.length, kind: "event", e });
    });
    for (; si < h.samples.length; si++) {
      const s = h.samples[si] as GuestSample;
      out.push({ t: s.trueNs, order: out.length, kind: "sample", s });
    }
    return out;
  }
  const rank = (x: Timeline) => (x.kind === "sample" ? 1 : x.e.kind === "stop" ? 0 : x.e.kind === "run" ? 2 : 1);
  for (const s of h.samples) out.push({ t: s.trueNs, order: 0, kind: "sample", s });
  for (const e of h.events) out.push({ t: e.trueNs, order: 0, kind: "event", e });
  out.forEach((x, i) => (x.order = i));
  out.sort((a, b) => (a.t < b.t ? -1 : a.t > b.t ? 1 : rank(a) - rank(b) || a.order - b.order));
  return out;
}

/**
 * The first vCPU whose snapshot TSC does not follow from the source's reading `prev` at the guest's
 * rate: the capture came after `prev` and before the restore began, so the cycles between lie in
 * [0, rate·(restoreStart − prev)] widened by the I8 tolerance (null: it follows).
 */
function snapshotJump(
  prev: GuestSample,
  e: Extract<ChaosEvent, { kind: "restoreClocks" }>,
  crystalPpm: number,
  khzCreated: number,
): { vcpu: number; tsc: bigint; cycles: bigint; lo: bigint; hi: bigint } | null {
  const khz = khzCreated > 0 ? khzCreated : Number(prev.guestTscKhz);
  if (!(khz > 0) || e.restoreStartNs < prev.trueNs) return null;
  const tolPpm = crystalPpm + TSC_TOLERANCE_PPM * 1.00025 + 2e6 / khz + 0.01;
  const hi = BigInt(Math.ceil((Number(e.restoreStartNs - prev.trueNs) * khz * (1 + tolPpm / 1e6)) / 1e6)) + 2n;
  for (let k = 0; k < prev.vcpus.length; k++) {
    const cpu = prev.vcpus[k] as number;
    const tsc = e.stoppedTsc[cpu];
    if (tsc === undefined) continue;
    const cycles = tsc - (prev.tsc[k] as bigint);
    if (cycles < -2n || cycles > hi) return { vcpu: cpu, tsc, cycles, lo: 0n, hi };
  }
  return null;
}

/** Whether a restore of a VM resumed it inside (t1, t2] (sim runs record every restore). */
function restoresIndex(events: readonly ChaosEvent[]): (vmId: string, t1: bigint, t2: bigint) => boolean {
  const at = new Map<string, bigint[]>();
  for (const e of events) {
    if (e.kind !== "restoreClocks") continue;
    let l = at.get(e.vmId);
    if (!l) at.set(e.vmId, (l = []));
    l.push(e.trueNs);
  }
  return (vmId, t1, t2) => (at.get(vmId) ?? []).some((t) => t > t1 && t <= t2);
}

/**
 * A VM's identity, kept by every daemon that runs it (I7's "guest state intact"): its vCPUs are the
 * ones it was created with, sampled alike every time, and its fencing generation never goes back.
 */
function identityBroken(
  s: GuestSample,
  tr: { maxGeneration: bigint | null; sampledVcpus: number },
  info: VmInfo | undefined,
): { message: string; values: Record<string, Value> } | null {
  const beyond = info ? s.vcpus.find((c) => c >= info.vcpus) : undefined;
  if (info && beyond !== undefined) return { message: `runs vCPU ${beyond}, but it was created with ${info.vcpus} vCPU(s) (0..${info.vcpus - 1})`, values: { vcpu: beyond, createdVcpus: info.vcpus } };
  if (tr.sampledVcpus >= 0 && s.vcpus.length !== tr.sampledVcpus)
    return { message: `sampled with ${s.vcpus.length} vCPUs, ${tr.sampledVcpus} before: its vCPU count changed`, values: { vcpus: s.vcpus.length, before: tr.sampledVcpus } };
  if (tr.maxGeneration !== null && s.generation < tr.maxGeneration)
    return { message: `runs at generation ${s.generation} after generation ${tr.maxGeneration} ran`, values: { generation: String(s.generation), maxGeneration: String(tr.maxGeneration) } };
  tr.sampledVcpus = s.vcpus.length;
  if (tr.maxGeneration === null || s.generation > tr.maxGeneration) tr.maxGeneration = s.generation;
  return null;
}

interface VmInfo {
  vmId: string;
  vcpus: number;
  guestTscKhz: bigint;
  migrationHandling: boolean;
  handlingMode: string;
}

export function checkHistory(h: ChaosHistory, opts: CheckOptions = {}): CheckResult {
  const perMax = opts.perInvariantMax ?? 20;
  const rateMin = opts.rateMinIntervalNs ?? 10_000_000n;
  const epoch = h.meta.epochNs;
  const clocks = new HostClocks(h.events);
  const sim = h.meta.mode === "sim";
  const restoredIn = restoresIndex(h.events);
  const crystal = new Map(h.meta.daemons.map((d) => [d.name, d.crystalSlopePpm]));
  const violations: Violation[] = [];
  const hostFaults: Violation[] = [];
  const kept = new Map<string, number>();
  const counts: CheckCounts = { samples: h.samples.length, vcpuReadings: 0, migrations: 0, migrationsCommitted: 0, migrationsStarted: 0, faults: 0, vms: 0, handled: 0, ratePairs: 0, restores: 0, livenessChecks: 0 };
  const report = (v: Violation) => {
    const key = v.faultClass ? `${v.invariant}/${v.faultClass}` : v.invariant;
    const n = (kept.get(key) ?? 0) + 1;
    kept.set(key, n);
    if (n <= perMax) (v.faultClass ? hostFaults : violations).push(v);
  };

  const vms = new Map<string, VmInfo>();
  for (const e of h.events) {
    if (e.kind === "vm") vms.set(e.vmId, { vmId: e.vmId, vcpus: e.vcpus, guestTscKhz: e.guestTscKhz, migrationHandling: e.migrationHandling, handlingMode: e.handlingMode });
    else if (e.kind === "fault") counts.faults++;
    else if (e.kind === "migrateStart") counts.migrationsStarted++;
    else if (e.kind === "handled") counts.handled++;
    else if (e.kind === "restoreClocks") {
      counts.restores++;
      for (const f of policyConformance(e))
        report({ invariant: "I9", message: `migration ${e.migrationId} of ${e.vmId} (${e.policy}/${e.estimator}) restored on ${e.daemon}: ${f.message}`, vmId: e.vmId, ...(f.vcpu !== undefined ? { vcpu: f.vcpu } : {}), daemon: e.daemon, trueNs: e.trueNs, values: f.values });
    } else if (e.kind === "liveness") {
      counts.livenessChecks++;
      if (!e.ok) report({ invariant: "L", message: `${e.what}: ${e.detail} (${e.attempts} attempt(s))`, trueNs: e.trueNs, values: { what: e.what, attempts: e.attempts, detail: e.detail } });
    } else if (e.kind === "error")
      report({ invariant: "E", message: `unexpected exception on ${e.daemon}: ${e.message}`, daemon: e.daemon, trueNs: e.trueNs, values: { message: e.message } });
  }
  counts.vms = vms.size;

  // ---- I3: the error at resume against the reported bound -------------------------------------
  const migrations: MigrationRow[] = [];
  const starts = h.events.filter((e): e is Extract<ChaosEvent, { kind: "migrateStart" }> => e.kind === "migrateStart");
  const startBefore = (vmId: string, t: bigint, source?: string) => {
    let found: (typeof starts)[number] | undefined;
    for (const st of starts) if (st.vmId === vmId && st.trueNs <= t && (source === undefined || st.source === source)) found = st;
    return found;
  };
  /** The host clock fault, if any, that breaks the bound of a migration estimated with `estimator`. */
  // The source reads its realtime at the capture, which follows the pause by however long the
  // source took (a stalled process): anywhere in [pause, resume]; the destination at the restore,
  // just before the resume.
  const hostFault = (estimator: string, source: string, pauseNs: bigint, destination: string, resumeNs: bigint, startNs: bigint): FaultClass | undefined => {
    if (estimator === "wallclock" && (clocks.lyingIn(source, pauseNs, resumeNs) || clocks.lyingIn(destination, pauseNs, resumeNs))) return "lying-clock";
    if (estimator === "probe" && (clocks.unstableIn(source, startNs, resumeNs) || clocks.unstableIn(destination, startNs, resumeNs))) return "stepped-clock";
    return undefined;
  };
  // The source's reports (migration events), and the harness's account of restores whose source
  // never got the report (restored events): one entry per migration, the source's report first.
  const reported = new Set<string>();
  for (const e of h.events) if (e.kind === "migration" && e.outcome === "committed" && e.resumeTrueNs > 0n) reported.add(e.migrationId);
  type Account = Pick<
    Extract<ChaosEvent, { kind: "migration" }>,
    | "migrationId"
    | "vmId"
    | "source"
    | "destination"
    | "outcome"
    | "policy"
    | "estimator"
    | "capped"
    | "pauseTrueNs"
    | "resumeTrueNs"
    | "estimatedBlackoutNs"
    | "errorBoundNs"
    | "tscAtResume"
    | "tscIdealAtResume"
    | "kvmclockAtResume"
    | "kvmclockIdealAtResume"
    | "guestTscKhz"
  >;
  const accounts = h.events.flatMap((e): Account[] => {
    if (e.kind === "migration") return [e];
    if (e.kind === "restored" && !reported.has(e.migrationId)) {
      reported.add(e.migrationId);
      return [{ ...e, outcome: "committed" }];
    }
    return [];
  });
  for (const e of accounts) {
    const committed = e.outcome === "committed" && e.resumeTrueNs > 0n;
    const khz = e.guestTscKhz > 0n ? e.guestTscKhz : 1n;
    const dCycles = e.tscAtResume - e.tscIdealAtResume;
    const tscErrorNs = committed ? (dCycles * 1_000_000n) / khz : 0n;
    const kvmErr = committed ? e.kvmclockAtResume - e.kvmclockIdealAtResume : 0n;
    const row: MigrationRow = {
      migrationId: e.migrationId,
      vmId: e.vmId,
      source: e.source,
      destination: e.destination,
      policy: e.policy,
      estimator: e.estimator,
      outcome: e.outcome,
      capped: e.capped,
      pauseTrueNs: e.pauseTrueNs,
      resumeTrueNs: e.resumeTrueNs,
      blackoutNs: committed ? e.resumeTrueNs - e.pauseTrueNs : 0n,
      estimatedBlackoutNs: e.estimatedBlackoutNs,
      tscErrorNs,
      kvmclockErrorNs: kvmErr,
      errorBoundNs: e.errorBoundNs,
      hostFault: null,
    };
    migrations.push(row);
    if (!committed) continue;
    const tscOver = abs(dCycles) * 1_000_000n > e.errorBoundNs * khz; // exact: |Δcycles|/kHz·10^6 ns > bound
    const kvmOver = abs(kvmErr) > e.errorBoundNs;
    const cls = tscOver || kvmOver ? hostFault(e.estimator, e.source, e.pauseTrueNs, e.destination, e.resumeTrueNs, startBefore(e.vmId, e.pauseTrueNs, e.source)?.trueNs ?? e.pauseTrueNs) : undefined;
    row.hostFault = cls ?? null;
    const inScope = e.policy === "advance" || e.policy === "kvm-realtime" || (e.policy === "advance-capped" && !e.capped);
    if (!inScope) continue;
    counts.migrations++;
    if (!tscOver && !kvmOver) continue;
    report({
      invariant: "I3",
      message:
        `migration ${e.migrationId} of ${e.vmId} (${e.policy}/${e.estimator}) ${e.source}→${e.destination}: ` +
        `error at resume ${tscOver ? `TSC ${tscErrorNs} ns` : `kvmclock ${kvmErr} ns`} exceeds the reported bound ${e.errorBoundNs} ns` +
        (cls ? ` (${cls}: source skew ${clocks.skewAt(e.source, e.pauseTrueNs)} ns, destination skew ${clocks.skewAt(e.destination, e.resumeTrueNs)} ns)` : ""),
      vmId: e.vmId,
      vcpu: 0,
      daemon: e.destination,
      trueNs: e.resumeTrueNs,
      values: {
        migrationId: e.migrationId,
        policy: e.policy,
        estimator: e.estimator,
        source: e.source,
        destination: e.destination,
        pauseTrueNs: String(e.pauseTrueNs),
        resumeTrueNs: String(e.resumeTrueNs),
        tscAtResume: String(e.tscAtResume),
        tscIdealAtResume: String(e.tscIdealAtResume),
        tscErrorNs: String(tscErrorNs),
        kvmclockAtResume: String(e.kvmclockAtResume),
        kvmclockIdealAtResume: String(e.kvmclockIdealAtResume),
        kvmclockErrorNs: String(kvmErr),
        errorBoundNs: String(e.errorBoundNs),
        estimatedBlackoutNs: String(e.estimatedBlackoutNs),
        trueBlackoutNs: String(e.resumeTrueNs - e.pauseTrueNs),
        capped: e.capped,
        sourceSkewNs: String(clocks.skewAt(e.source, e.pauseTrueNs)),
        destinationSkewNs: String(clocks.skewAt(e.destination, e.resumeTrueNs)),
      },
      ...(cls ? { faultClass: cls } : {}),
    });
  }

  // ---- one pass over the merged timeline: I1, I2, I4, I6, I8 (and I5's eras) -------------------
  interface Era {
    generation: bigint;
    startNs: bigint;
    /** Where the VM ran this era (its first run), and where and when the migration into it paused. */
    daemon: string;
    source: string | null;
    pauseNs: bigint;
    /** The latest start of this generation: a restore a crash undid is redone later, after a restart. */
    lastRunNs: bigint;
    samples: number;
    handled: { trueNs: bigint; marker: bigint; via: string; mode: string }[];
  }
  interface VmTrack {
    last: GuestSample | null;
    lastTsc: Map<number, { v: bigint; s: GuestSample }>;
    lastKvm: Map<number, { v: bigint; s: GuestSample }>;
    /** Daemons where the VM runs now, since when. */
    open: Map<string, bigint>;
    /** A run/stop of this VM happened since `last` (breaks rate continuity). */
    broke: boolean;
    overlapReported: boolean;
    eras: Era[];
    /** The VM's last stop (pause or crash): where and when a migration into a new era left from. */
    lastStop: { daemon: string; t: bigint } | null;
    lastHandledMode: string | null;
    lastHandledNs: bigint;
    /** Daemons the VM ran on so far. */
    visited: Set<string>;
    /** A host clock fault the guest's bound inherited (widened by a wrong published figure), until the guest is back within its bound or stops claiming sync. */
    taint: FaultClass | null;
    /** Last sample whose bounded clock held true time or claimed no sync (I4 reports count migrations since). */
    lastContainedNs: bigint;
    /** Highest generation sampled so far, the vCPUs sampled per sample, and whether its identity broke already (I7). */
    maxGeneration: bigint | null;
    sampledVcpus: number;
    identityReported: boolean;
  }
  const tracks = new Map<string, VmTrack>();
  const track = (vmId: string): VmTrack => {
    let t = tracks.get(vmId);
    if (!t)
      tracks.set(
        vmId,
        (t = { last: null, lastTsc: new Map(), lastKvm: new Map(), open: new Map(), broke: false, overlapReported: false, eras: [], lastStop: null, lastHandledMode: null, lastHandledNs: -1n, visited: new Set(), taint: null, lastContainedNs: -1n, maxGeneration: null, sampledVcpus: -1, identityReported: false }),
      );
    return t;
  };
  const eraOf = (tr: VmTrack, generation: bigint, t: bigint, daemon: string) => {
    let era = tr.eras.find((x) => x.generation === generation);
    if (!era) {
      const from = tr.eras.length > 0 ? tr.lastStop : null;
      tr.eras.push((era = { generation, startNs: t, daemon, source: from?.daemon ?? null, pauseNs: from?.t ?? t, lastRunNs: t, samples: 0, handled: [] }));
    }
    return era;
  };

  for (const x of timeline(h, h.order)) {
    if (x.kind === "event") {
      const e = x.e;
      if (e.kind === "run" || e.kind === "stop") {
        const tr = track(e.vmId);
        tr.broke = true;
        if (e.kind === "run") {
          tr.visited.add(e.daemon);
          eraOf(tr, e.generation, e.trueNs, e.daemon).lastRunNs = e.trueNs;
          if (!tr.open.has(e.daemon)) tr.open.set(e.daemon, e.trueNs);
          if (tr.open.size > 1 && !tr.overlapReported) {
            tr.overlapReported = true;
            const others = [...tr.open.entries()].filter(([d]) => d !== e.daemon);
            report({
              invariant: "I6",
              message: `${e.vmId} runs on ${[...tr.open.keys()].join(" and ")} at once from true time ${e.trueNs} ns`,
              vmId: e.vmId,
              daemon: e.daemon,
              trueNs: e.trueNs,
              values: { daemons: [...tr.open.keys()].join(","), sinceNs: String(others[0]?.[1] ?? e.trueNs), atNs: String(e.trueNs), generation: String(e.generation) },
            });
          }
        } else {
          tr.open.delete(e.daemon);
          tr.lastStop = { daemon: e.daemon, t: e.trueNs };
          if (tr.open.size <= 1) tr.overlapReported = false;
        }
      } else if (e.kind === "restoreClocks") {
        // Where the restore left the guest TSC at resume: I8 measures the first sample of the new
        // run from here (a restart before that sample must not lose what the restore set).
        const tr = track(e.vmId);
        const prev = tr.last;
        // The snapshot follows from the source's last reading at the guest's rate (the capture lies
        // between that reading and the restore): a jump there is state the source did not keep.
        if (sim && prev && prev.generation === e.generation - 1n && !restoredIn(e.vmId, prev.trueNs, e.trueNs - 1n)) {
          const jump = snapshotJump(prev, e, crystal.get(prev.daemon) ?? DRIFT_ALLOWANCE_PPM, Number(vms.get(e.vmId)?.guestTscKhz ?? 0n));
          if (jump)
            report({
              invariant: "I8",
              message: `${e.vmId} vCPU ${jump.vcpu}: the snapshot of migration ${e.migrationId} holds guest TSC ${jump.tsc}, ${jump.cycles} cycles past ${prev.daemon}'s reading at ${prev.trueNs} ns, where its rate allows ${jump.lo}..${jump.hi} by the restore at ${e.restoreStartNs} ns`,
              vmId: e.vmId,
              vcpu: jump.vcpu,
              daemon: prev.daemon,
              trueNs: e.restoreStartNs,
              values: { migrationId: e.migrationId, fromNs: String(prev.trueNs), toNs: String(e.restoreStartNs), cycles: String(jump.cycles), lowestCycles: String(jump.lo), highestCycles: String(jump.hi) },
            });
        }
        tr.last = { trueNs: e.trueNs, daemon: e.daemon, vmId: e.vmId, generation: e.generation, vcpus: e.tscAtResume.map((_t, i) => i), tsc: e.tscAtResume, kvmclockNs: [], bounded: NO_BOUND, guestTscKhz: 0n };
      } else if (e.kind === "handled") {
        const tr = track(e.vmId);
        const era = tr.eras[tr.eras.length - 1];
        if (era) era.handled.push({ trueNs: e.trueNs, marker: e.marker, via: e.via, mode: e.mode });
        tr.lastHandledMode = e.mode;
        tr.lastHandledNs = e.trueNs;
        // Widening by a figure a host clock fault made wrong: the guest now carries that error
        // (until it resyncs), whether or not a sample shows it before the next migration.
        if (e.mode === "widen" && era && era.source !== null) {
          const st = startBefore(e.vmId, era.pauseNs, era.source);
          const cls = st ? hostFault(st.estimator, era.source, era.pauseNs, era.daemon, era.lastRunNs, st.trueNs) : undefined;
          if (cls) tr.taint = cls;
        }
      }
      continue;
    }
    const s = x.s;
    const tr = track(s.vmId);
    const info = vms.get(s.vmId);
    // I6 from the samples themselves: a sample is proof the VM ran there then.
    if (!tr.open.has(s.daemon) || tr.open.size > 1) {
      const others = [...tr.open.keys()].filter((d) => d !== s.daemon);
      if (others.length > 0 || !tr.open.has(s.daemon))
        report({
          invariant: "I6",
          message: tr.open.has(s.daemon)
            ? `${s.vmId} sampled on ${s.daemon} at ${s.trueNs} ns while it also runs on ${others.join(", ")}`
            : `${s.vmId} sampled on ${s.daemon} at ${s.trueNs} ns outside any run interval there${others.length ? ` (it runs on ${others.join(", ")})` : ""}`,
          vmId: s.vmId,
          daemon: s.daemon,
          trueNs: s.trueNs,
          values: { daemon: s.daemon, trueNs: String(s.trueNs), runningOn: others.join(","), generation: String(s.generation) },
        });
    }
    tr.visited.add(s.daemon);
    if (!tr.identityReported) {
      const broke = identityBroken(s, tr, info);
      if (broke) {
        tr.identityReported = true;
        report({ invariant: "I7", message: `${s.vmId} on ${s.daemon} at ${s.trueNs} ns: ${broke.message}`, vmId: s.vmId, daemon: s.daemon, trueNs: s.trueNs, values: broke.values });
      }
    }
    const era = eraOf(tr, s.generation, s.trueNs, s.daemon);
    era.samples++;
    counts.vcpuReadings += s.vcpus.length;
    // I1, I2: per vCPU, across daemons, in true-time order.
    for (let k = 0; k < s.vcpus.length; k++) {
      const cpu = s.vcpus[k] as number;
      const tsc = s.tsc[k] as bigint;
      const kvm = s.kvmclockNs[k] as bigint;
      const pt = tr.lastTsc.get(cpu);
      if (pt && tsc < pt.v)
        report({
          invariant: "I1",
          message: `${s.vmId} vCPU ${cpu}: guest TSC went back from ${pt.v} (${pt.s.daemon} at ${pt.s.trueNs} ns) to ${tsc} (${s.daemon} at ${s.trueNs} ns)`,
          vmId: s.vmId,
          vcpu: cpu,
          daemon: s.daemon,
          trueNs: s.trueNs,
          values: { before: String(pt.v), after: String(tsc), beforeNs: String(pt.s.trueNs), afterNs: String(s.trueNs), beforeDaemon: pt.s.daemon, afterDaemon: s.daemon },
        });
      const pk = tr.lastKvm.get(cpu);
      if (pk && kvm < pk.v)
        report({
          invariant: "I2",
          message: `${s.vmId} vCPU ${cpu}: kvmclock went back from ${pk.v} (${pk.s.daemon} at ${pk.s.trueNs} ns) to ${kvm} (${s.daemon} at ${s.trueNs} ns)`,
          vmId: s.vmId,
          vcpu: cpu,
          daemon: s.daemon,
          trueNs: s.trueNs,
          values: { before: String(pk.v), after: String(kvm), beforeNs: String(pk.s.trueNs), afterNs: String(s.trueNs), beforeDaemon: pk.s.daemon, afterDaemon: s.daemon },
        });
      tr.lastTsc.set(cpu, { v: tsc, s });
      tr.lastKvm.set(cpu, { v: kvm, s });
    }
    // I8: rate between consecutive samples of one uninterrupted run on one daemon — and, in sim
    // runs, across a stop on that daemon at that generation (a pause a migration rolled back, a
    // crash and restart from the journal) unless a restore ran in between: the guest TSC runs on
    // while the vCPUs are stopped, so a jump there is state the daemon did not keep (a damaged record).
    const prev = tr.last;
    const across = tr.broke && sim && prev !== null && !restoredIn(s.vmId, prev.trueNs, s.trueNs);
    if (prev && (!tr.broke || across) && prev.daemon === s.daemon && prev.generation === s.generation && s.trueNs - prev.trueNs >= rateMin) {
      const khz = Number(info?.guestTscKhz ?? s.guestTscKhz);
      const dtNs = Number(s.trueNs - prev.trueNs);
      const expected = (khz * dtNs) / 1e6; // cycles
      // Drift of this host's crystal, KVM's 250 ppm tolerance (a guest within it runs unscaled at the
      // host's rate; the tolerance is of the host's kHz, ×1.00025 in the guest's, and KVM rounds the
      // thresholds to whole kHz: two kHz more), two cycles of rounding.
      const tol = (crystal.get(s.daemon) ?? DRIFT_ALLOWANCE_PPM) + TSC_TOLERANCE_PPM * 1.00025 + 2e6 / khz + (2 / expected) * 1e6 + 0.01;
      for (let k = 0; k < s.vcpus.length; k++) {
        const cpu = s.vcpus[k] as number;
        const j = prev.vcpus.indexOf(cpu);
        if (j < 0) continue;
        counts.ratePairs++;
        const dTsc = Number((s.tsc[k] as bigint) - (prev.tsc[j] as bigint));
        const ppm = ((dTsc - expected) / expected) * 1e6;
        if (Math.abs(ppm) > tol)
          report({
            invariant: "I8",
            message: `${s.vmId} vCPU ${cpu} on ${s.daemon}: guest TSC ran ${ppm.toFixed(1)} ppm off ${khz} kHz between ${prev.trueNs} and ${s.trueNs} ns${tr.broke ? " across a stop and restart there" : ""} (tolerance ${tol.toFixed(1)} ppm)`,
            vmId: s.vmId,
            vcpu: cpu,
            daemon: s.daemon,
            trueNs: s.trueNs,
            values: { fromNs: String(prev.trueNs), toNs: String(s.trueNs), cycles: dTsc, expectedCycles: Math.round(expected), ppm: Number(ppm.toFixed(3)), tolerancePpm: Number(tol.toFixed(3)), guestTscKhz: khz },
          });
      }
    }
    tr.last = s;
    tr.broke = false;
    // I4: a synchronized bounded clock must contain true time.
    const b = s.bounded;
    if (b.status !== "synchronized") {
      tr.taint = null;
      tr.lastContainedNs = s.trueNs;
    } else {
      const trueRt = epoch + s.trueNs;
      // The read happened somewhere in [trueNs, trueNs + span]: held if any instant of it is inside.
      if (trueRt + (s.trueSpanNs ?? 0n) >= b.earliestNs && trueRt <= b.latestNs) {
        tr.taint = null;
        tr.lastContainedNs = s.trueNs;
      } else {
        let cls: FaultClass | undefined;
        // Guests that take NTP from their host believe any host they ran on: one that may have
        // claimed less than its real skew explains a wrong bound.
        if (h.meta.ntpSource === "host" && [...tr.visited].some((d) => clocks.mayLie(d, s.trueNs))) cls = "lying-clock";
        // A guest that widened its bound by what the destination published inherits that
        // figure's host clock fault (a wallclock bound built on a lying host's claim).
        if (!cls && info?.migrationHandling && tr.lastHandledMode === "widen" && era.source !== null && tr.lastHandledNs >= era.startNs) {
          const st = startBefore(s.vmId, era.pauseNs, era.source);
          if (st) cls = hostFault(st.estimator, era.source, era.pauseNs, era.daemon, era.lastRunNs, st.trueNs);
        }
        // Still carrying an error a host fault put there (no resync since): same class.
        if (cls) tr.taint = cls;
        else if (info?.migrationHandling && tr.taint) cls = tr.taint;
        const half = (b.latestNs - b.earliestNs) / 2n;
        // Every migration since the guest last held true time added its hosts' skew difference
        // (several can come between two samples): what a wallclock restore got wrong in all.
        const skewDifference = (x: Era) => clocks.skewAt(x.daemon, x.lastRunNs) - clocks.skewAt(x.source as string, x.pauseNs);
        const since = tr.eras.filter((x) => x.source !== null && x.startNs > tr.lastContainedNs);
        const skewSum = since.reduce((acc, x) => acc + clocks.skewDifferenceMaxIn(x.source as string, x.daemon, x.pauseNs, x.lastRunNs), 0n);
        report({
          invariant: "I4",
          message: `${s.vmId} on ${s.daemon} at ${s.trueNs} ns: guest says synchronized within ±${half} ns but is ${b.realtimeNs - trueRt} ns off true time${cls ? ` (${cls})` : ""}`,
          vmId: s.vmId,
          daemon: s.daemon,
          trueNs: s.trueNs,
          values: {
            trueNs: String(s.trueNs),
            trueRealtimeNs: String(trueRt),
            earliestNs: String(b.earliestNs),
            latestNs: String(b.latestNs),
            guestRealtimeNs: String(b.realtimeNs),
            errorNs: String(b.realtimeNs - trueRt),
            halfWidthNs: String(half),
            hostSkewNs: String(clocks.skewAt(s.daemon, s.trueNs)),
            ...(era.source !== null
              ? {
                  migratedFrom: era.source,
                  resumeNs: String(era.lastRunNs),
                  // What a wallclock estimate of that migration got wrong: the two hosts' skew difference.
                  hostSkewDifferenceNs: String(skewDifference(era)),
                }
              : {}),
            migrationsSinceContained: since.length,
            // At most, per migration: exact over stable clocks, the models' worst case over a step or strobe.
            hostSkewDifferencesSinceContainedNs: String(skewSum),
          },
          ...(cls ? { faultClass: cls } : {}),
        });
      }
    }
  }

  // Every new generation that ran is a committed migration, whether or not its source lived to
  // report it (only reported ones can be checked for I3).
  counts.migrationsCommitted = 0;
  for (const tr of tracks.values()) counts.migrationsCommitted += Math.max(0, tr.eras.length - 1);

  // ---- I5: exactly one handling per committed migration -----------------------------------------
  for (const [vmId, tr] of tracks) {
    const info = vms.get(vmId);
    const markers = new Map<bigint, number>();
    tr.eras.sort((a, b) => (a.startNs < b.startNs ? -1 : a.startNs > b.startNs ? 1 : 0));
    tr.eras.forEach((era, i) => {
      for (const hd of era.handled) markers.set(hd.marker, (markers.get(hd.marker) ?? 0) + 1);
      if (info && !info.migrationHandling) {
        if (era.handled.length > 0)
          report({ invariant: "I5", message: `${vmId}: the guest acted on a migration with handling off`, vmId, trueNs: era.handled[0]?.trueNs ?? 0n, values: { generation: String(era.generation) } });
        return;
      }
      if (i === 0) {
        if (era.handled.length > 0)
          report({ invariant: "I5", message: `${vmId}: the guest acted on a migration before any migration`, vmId, trueNs: era.handled[0]?.trueNs ?? 0n, values: { generation: String(era.generation), marker: String(era.handled[0]?.marker ?? 0n) } });
        return;
      }
      if (era.handled.length > 1)
        report({
          invariant: "I5",
          message: `${vmId}: the guest acted ${era.handled.length} times on the migration into generation ${era.generation} (${era.handled.map((x) => `${x.via}@${x.trueNs}`).join(", ")})`,
          vmId,
          trueNs: era.handled[1]?.trueNs ?? era.startNs,
          values: { generation: String(era.generation), count: era.handled.length, markers: era.handled.map((x) => String(x.marker)).join(",") },
        });
      else if (era.handled.length === 0 && era.samples > 0 && info)
        report({
          invariant: "I5",
          message: `${vmId}: the guest ran ${era.samples} samples after the migration into generation ${era.generation} (resumed at ${era.startNs} ns) without acting on it`,
          vmId,
          trueNs: era.startNs,
          values: { generation: String(era.generation), samplesAfter: era.samples, resumeNs: String(era.startNs) },
        });
    });
    for (const [marker, n] of markers)
      if (n > 1) report({ invariant: "I5", message: `${vmId}: the guest acted ${n} times on disruption marker ${marker}`, vmId, values: { marker: String(marker), count: n } });
  }

  // ---- I7: after healing, every VM runs on exactly one daemon ------------------------------------
  const final = [...h.events].reverse().find((e): e is Extract<ChaosEvent, { kind: "final" }> => e.kind === "final");
  const heal = h.events.find((e): e is Extract<ChaosEvent, { kind: "heal" }> => e.kind === "heal");
  if (final) {
    const seen = new Set<string>();
    for (const o of final.owners) {
      seen.add(o.vmId);
      if (o.daemons.length !== 1)
        report({
          invariant: "I7",
          message: `${o.vmId} runs on ${o.daemons.length === 0 ? "no daemon" : o.daemons.join(" and ")} ${heal ? `${final.trueNs - heal.trueNs} ns after the network healed (bound ${heal.recoveryBoundNs} ns)` : "at the end"}`,
          vmId: o.vmId,
          trueNs: final.trueNs,
          values: { daemons: o.daemons.join(","), healNs: String(heal?.trueNs ?? 0n), finalNs: String(final.trueNs) },
        });
      const tr = tracks.get(o.vmId);
      const maxGen = tr ? tr.eras.reduce((m, e) => (e.generation > m ? e.generation : m), 0n) : 0n;
      if (o.daemons.length === 1 && BigInt(o.generation) !== maxGen)
        report({
          invariant: "I7",
          message: `${o.vmId} ends at generation ${o.generation} on ${o.daemons[0]}, but generation ${maxGen} ran`,
          vmId: o.vmId,
          trueNs: final.trueNs,
          values: { generation: o.generation, maxGeneration: String(maxGen) },
        });
    }
    for (const vmId of vms.keys())
      if (!seen.has(vmId)) report({ invariant: "I7", message: `${vmId} is lost: no daemon holds it at the end`, vmId, trueNs: final.trueNs, values: {} });
    for (const u of final.unresolved) report({ invariant: "I7", message: `still unresolved after the recovery bound: ${u}`, trueNs: final.trueNs, values: { what: u } });
  }

  return { violations, hostFaults, counts: Object.fromEntries(kept), checked: counts, migrations };
}
