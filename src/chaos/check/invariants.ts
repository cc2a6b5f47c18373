// One function per invariant, each over the history index (history-index.ts). A check reports what
// it finds with `out.add(at, violation)`, where `at` places the finding in the run's report, and
// counts what it covered in `out.checked`. Adding an invariant is adding a function to CHECKS.
//
// The report lists a run's findings by `at`, stage first, so that it reads in the order a person
// would check the run: single events (I9, L, E) in history order; each migration's error (I3); the
// timeline in true-time order, where one sample shows ownership, identity, then per vCPU
// monotonicity, rate, and last the guest's bound; each VM's handling (I5); the end state (I7).
// Findings with the same `at` keep the order of CHECKS.

import type { GuestSample } from "../../shared/history.js";
import type { CheckCounts, Value, Violation } from "../checker.js";
import { policyConformance } from "../policy-conformance.js";
import { type Entry, type Era, eraAt, type EventOf, type HistoryIndex, lastRunNsAt, type VmInfo, type VmTrack } from "./history-index.js";
import { DRIFT_ALLOWANCE_PPM, type FaultClass } from "./host-clocks.js";

export interface Findings {
  add(at: readonly number[], v: Violation): void;
  readonly checked: CheckCounts;
}

export type Check = (ix: HistoryIndex, out: Findings) => void;

/** Report stages, in listing order. */
export const STAGE = { events: 0, migrations: 1, timeline: 2, vms: 3, end: 4 } as const;
/** What one sample shows, in listing order. */
const AT_SAMPLE = { owner: 0, identity: 1, monotonic: 2, rate: 3, bound: 4 } as const;

/** KVM's TSC rate tolerance: a guest within it of the host's rate runs unscaled at the host's rate. */
const TSC_TOLERANCE_PPM = 250;
const NO_BOUND: GuestSample["bounded"] = { earliestNs: 0n, latestNs: 0n, realtimeNs: 0n, status: "unknown" };

const samplesOf = (tr: VmTrack) => tr.entries.filter((x): x is Entry & { kind: "sample" } => x.kind === "sample");

// ---- single events ---------------------------------------------------------------------------------

/** I9: every restore set the clocks its policy defines (policy-conformance.ts). */
export const checkPolicyConformance: Check = (ix, out) => {
  ix.history.events.forEach((e, i) => {
    if (e.kind !== "restoreClocks") return;
    out.checked.restores++;
    for (const f of policyConformance(e))
      out.add([STAGE.events, i], {
        invariant: "I9",
        message: `migration ${e.migrationId} of ${e.vmId} (${e.policy}/${e.estimator}) restored on ${e.daemon}: ${f.message}`,
        vmId: e.vmId,
        ...(f.vcpu !== undefined ? { vcpu: f.vcpu } : {}),
        daemon: e.daemon,
        trueNs: e.trueNs,
        values: f.values,
      });
  });
};

/** L: every check that the deployment works again after healing passed. */
export const checkLiveness: Check = (ix, out) => {
  ix.history.events.forEach((e, i) => {
    if (e.kind !== "liveness") return;
    out.checked.livenessChecks++;
    if (!e.ok) out.add([STAGE.events, i], { invariant: "L", message: `${e.what}: ${e.detail} (${e.attempts} attempt(s))`, trueNs: e.trueNs, values: { what: e.what, attempts: e.attempts, detail: e.detail } });
  });
};

/** E: nothing threw that would have killed a daemon. */
export const checkNoDaemonException: Check = (ix, out) => {
  ix.history.events.forEach((e, i) => {
    if (e.kind === "error") out.add([STAGE.events, i], { invariant: "E", message: `unexpected exception on ${e.daemon}: ${e.message}`, daemon: e.daemon, trueNs: e.trueNs, values: { message: e.message } });
  });
};

// ---- I3: each migration's error at resume against the bound it reported ------------------------

export const checkMigrationErrors: Check = (ix, out) => {
  ix.migrations.forEach((m, i) => {
    if (!m.committed || !m.boundApplies) return;
    out.checked.migrations++;
    if (!m.tscOverBound && !m.kvmclockOverBound) return;
    const e = m.account;
    const sourceSkewNs = ix.clocks.skewAt(e.source, e.pauseTrueNs);
    const destinationSkewNs = ix.clocks.skewAt(e.destination, e.resumeTrueNs);
    out.add([STAGE.migrations, i], {
      invariant: "I3",
      message:
        `migration ${e.migrationId} of ${e.vmId} (${e.policy}/${e.estimator}) ${e.source}→${e.destination}: ` +
        `error at resume ${m.tscOverBound ? `TSC ${m.tscErrorNs} ns` : `kvmclock ${m.kvmclockErrorNs} ns`} exceeds the reported bound ${e.errorBoundNs} ns` +
        (m.hostFault ? ` (${m.hostFault}: source skew ${sourceSkewNs} ns, destination skew ${destinationSkewNs} ns)` : ""),
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
        tscErrorNs: String(m.tscErrorNs),
        kvmclockAtResumeNs: String(e.kvmclockAtResumeNs),
        kvmclockIdealAtResumeNs: String(e.kvmclockIdealAtResumeNs),
        kvmclockErrorNs: String(m.kvmclockErrorNs),
        errorBoundNs: String(e.errorBoundNs),
        estimatedBlackoutNs: String(e.estimatedBlackoutNs),
        trueBlackoutNs: String(e.resumeTrueNs - e.pauseTrueNs),
        capped: e.capped,
        sourceSkewNs: String(sourceSkewNs),
        destinationSkewNs: String(destinationSkewNs),
      },
      ...(m.hostFault ? { faultClass: m.hostFault } : {}),
    });
  });
};

// ---- I6: one owner at a time ---------------------------------------------------------------------

/** I6 from run/stop events (two daemons run the VM at once), and from the samples themselves: a sample is proof the VM ran there then. */
export const checkSingleOwner: Check = (ix, out) => {
  for (const tr of ix.tracks.values()) {
    /** Daemons where the VM runs now, since when. */
    const open = new Map<string, bigint>();
    let overlapReported = false;
    for (const x of tr.entries) {
      if (x.kind === "sample") {
        checkSampleOwner(x.s, open, x.pos, out);
        continue;
      }
      const e = x.e;
      if (e.kind === "run") {
        if (!open.has(e.daemon)) open.set(e.daemon, e.trueNs);
        if (open.size > 1 && !overlapReported) {
          overlapReported = true;
          const others = [...open.entries()].filter(([d]) => d !== e.daemon);
          out.add([STAGE.timeline, x.pos], {
            invariant: "I6",
            message: `${e.vmId} runs on ${[...open.keys()].join(" and ")} at once from true time ${e.trueNs} ns`,
            vmId: e.vmId,
            daemon: e.daemon,
            trueNs: e.trueNs,
            values: { daemons: [...open.keys()].join(","), sinceNs: String(others[0]?.[1] ?? e.trueNs), atNs: String(e.trueNs), generation: String(e.generation) },
          });
        }
      } else if (e.kind === "stop") {
        open.delete(e.daemon);
        if (open.size <= 1) overlapReported = false;
      }
    }
  }
};

function checkSampleOwner(s: GuestSample, open: ReadonlyMap<string, bigint>, pos: number, out: Findings): void {
  const here = open.has(s.daemon);
  const others = [...open.keys()].filter((d) => d !== s.daemon);
  if (here && others.length === 0) return;
  out.add([STAGE.timeline, pos, AT_SAMPLE.owner], {
    invariant: "I6",
    message: here
      ? `${s.vmId} sampled on ${s.daemon} at ${s.trueNs} ns while it also runs on ${others.join(", ")}`
      : `${s.vmId} sampled on ${s.daemon} at ${s.trueNs} ns outside any run interval there${others.length ? ` (it runs on ${others.join(", ")})` : ""}`,
    vmId: s.vmId,
    daemon: s.daemon,
    trueNs: s.trueNs,
    values: { daemon: s.daemon, trueNs: String(s.trueNs), runningOn: others.join(","), generation: String(s.generation) },
  });
}

// ---- I7: nothing lost ----------------------------------------------------------------------------

/**
 * I7, guest state intact: a VM's identity is kept by every daemon that runs it — its vCPUs are the
 * ones it was created with, sampled alike every time, and its fencing generation never goes back.
 * The first break is reported (what follows a break is the same break seen again).
 */
export const checkVmIdentity: Check = (ix, out) => {
  for (const tr of ix.tracks.values()) {
    const seen: IdentitySeen = { maxGeneration: null, sampledVcpus: -1 };
    for (const { s, pos } of samplesOf(tr)) {
      const broke = identityBroken(s, seen, tr.info);
      if (!broke) continue;
      out.add([STAGE.timeline, pos, AT_SAMPLE.identity], { invariant: "I7", message: `${s.vmId} on ${s.daemon} at ${s.trueNs} ns: ${broke.message}`, vmId: s.vmId, daemon: s.daemon, trueNs: s.trueNs, values: broke.values });
      break;
    }
  }
};

interface IdentitySeen {
  maxGeneration: bigint | null;
  sampledVcpus: number;
}

function identityBroken(s: GuestSample, seen: IdentitySeen, info: VmInfo | undefined): { message: string; values: Record<string, Value> } | null {
  const beyond = info ? s.vcpus.find((c) => c >= info.vcpus) : undefined;
  if (info && beyond !== undefined) return { message: `runs vCPU ${beyond}, but it was created with ${info.vcpus} vCPU(s) (0..${info.vcpus - 1})`, values: { vcpu: beyond, createdVcpus: info.vcpus } };
  if (seen.sampledVcpus >= 0 && s.vcpus.length !== seen.sampledVcpus)
    return { message: `sampled with ${s.vcpus.length} vCPUs, ${seen.sampledVcpus} before: its vCPU count changed`, values: { vcpus: s.vcpus.length, before: seen.sampledVcpus } };
  if (seen.maxGeneration !== null && s.generation < seen.maxGeneration)
    return { message: `runs at generation ${s.generation} after generation ${seen.maxGeneration} ran`, values: { generation: String(s.generation), maxGeneration: String(seen.maxGeneration) } };
  seen.sampledVcpus = s.vcpus.length;
  if (seen.maxGeneration === null || s.generation > seen.maxGeneration) seen.maxGeneration = s.generation;
  return null;
}

/** I7 after healing: every VM runs on exactly one daemon, at the newest generation that ran, and nothing is left undecided. */
export const checkEndState: Check = (ix, out) => {
  const { final, heal } = ix;
  if (!final) return;
  const at = [STAGE.end];
  const seen = new Set<string>();
  for (const o of final.owners) {
    seen.add(o.vmId);
    if (o.daemons.length !== 1)
      out.add(at, {
        invariant: "I7",
        message: `${o.vmId} runs on ${o.daemons.length === 0 ? "no daemon" : o.daemons.join(" and ")} ${heal ? `${final.trueNs - heal.trueNs} ns after the network healed (bound ${heal.recoveryBoundNs} ns)` : "at the end"}`,
        vmId: o.vmId,
        trueNs: final.trueNs,
        values: { daemons: o.daemons.join(","), healNs: String(heal?.trueNs ?? 0n), finalNs: String(final.trueNs) },
      });
    const eras = ix.tracks.get(o.vmId)?.eras ?? [];
    const maxGen = eras.reduce((m, e) => (e.generation > m ? e.generation : m), 0n);
    if (o.daemons.length === 1 && BigInt(o.generation) !== maxGen)
      out.add(at, {
        invariant: "I7",
        message: `${o.vmId} ends at generation ${o.generation} on ${o.daemons[0]}, but generation ${maxGen} ran`,
        vmId: o.vmId,
        trueNs: final.trueNs,
        values: { generation: o.generation, maxGeneration: String(maxGen) },
      });
  }
  for (const vmId of ix.vms.keys()) if (!seen.has(vmId)) out.add(at, { invariant: "I7", message: `${vmId} is lost: no daemon holds it at the end`, vmId, trueNs: final.trueNs, values: {} });
  for (const u of final.unresolved) out.add(at, { invariant: "I7", message: `still unresolved after the recovery bound: ${u}`, trueNs: final.trueNs, values: { what: u } });
};

// ---- I1, I2: per vCPU, across daemons, in true-time order -----------------------------------------

/** I1: no vCPU's guest TSC ever reads less than it read before, wherever the VM ran. */
export const checkTscMonotonic: Check = (ix, out) => checkMonotonic(ix, out, "I1");
/** I2: no vCPU's kvmclock ever reads less than it read before. */
export const checkKvmclockMonotonic: Check = (ix, out) => checkMonotonic(ix, out, "I2");

function checkMonotonic(ix: HistoryIndex, out: Findings, invariant: "I1" | "I2"): void {
  const what = invariant === "I1" ? "guest TSC" : "kvmclock";
  for (const tr of ix.tracks.values()) {
    const last = new Map<number, { v: bigint; s: GuestSample }>();
    for (const { s, pos } of samplesOf(tr))
      s.vcpus.forEach((cpu, k) => {
        const v = (invariant === "I1" ? s.tsc[k] : s.kvmclockNs[k]) as bigint;
        const p = last.get(cpu);
        if (p && v < p.v)
          out.add([STAGE.timeline, pos, AT_SAMPLE.monotonic, k], {
            invariant,
            message: `${s.vmId} vCPU ${cpu}: ${what} went back from ${p.v} (${p.s.daemon} at ${p.s.trueNs} ns) to ${v} (${s.daemon} at ${s.trueNs} ns)`,
            vmId: s.vmId,
            vcpu: cpu,
            daemon: s.daemon,
            trueNs: s.trueNs,
            values: { before: String(p.v), after: String(v), beforeNs: String(p.s.trueNs), afterNs: String(s.trueNs), beforeDaemon: p.s.daemon, afterDaemon: s.daemon },
          });
        last.set(cpu, { v, s });
      });
  }
}

// ---- I8: rate continuity ---------------------------------------------------------------------------

/**
 * I8: the guest TSC runs at the guest's rate between consecutive samples of one uninterrupted run
 * on one daemon — and, in sim runs, across a stop on that daemon at that generation (a pause a
 * migration rolled back, a crash and restart from the journal) unless a restore ran in between: the
 * guest TSC runs on while the vCPUs are stopped, so a jump there is state the daemon did not keep
 * (a damaged record). A restore's snapshot must follow from the source's last reading the same way,
 * and the first sample after a restore is measured from where the restore left the TSC (a restart
 * before that sample must not lose what the restore set).
 */
export const checkRateContinuity: Check = (ix, out) => {
  for (const tr of ix.tracks.values()) {
    let last: GuestSample | null = null;
    /**
     * Per vCPU, its latest reading and whether a run or stop came since: a sample may hold a subset
     * of the vCPUs (a real guest reports each vCPU at its own instant), so each vCPU is measured
     * from its own previous reading, not from the VM's previous sample.
     */
    const byCpu = new Map<number, { s: GuestSample; broke: boolean }>();
    for (const x of tr.entries) {
      if (x.kind === "sample") {
        checkRateSince(ix, tr, { byCpu, s: x.s, pos: x.pos }, out);
        last = x.s;
        for (const cpu of x.s.vcpus) byCpu.set(cpu, { s: x.s, broke: false });
        continue;
      }
      const e = x.e;
      if (e.kind === "run" || e.kind === "stop") for (const v of byCpu.values()) v.broke = true;
      else if (e.kind === "restoreClocks") {
        if (last) checkSnapshotFollows(ix, tr, { prev: last, e, pos: x.pos }, out);
        const restored: GuestSample = { trueNs: e.trueNs, daemon: e.daemon, vmId: e.vmId, generation: e.generation, vcpus: e.tscAtResume.map((_t, i) => i), tsc: e.tscAtResume, kvmclockNs: [], bounded: NO_BOUND, guestTscKhz: 0n };
        last = restored;
        for (const cpu of restored.vcpus) byCpu.set(cpu, { s: restored, broke: false });
      }
    }
  }
};

function checkRateSince(ix: HistoryIndex, tr: VmTrack, w: { byCpu: ReadonlyMap<number, { s: GuestSample; broke: boolean }>; s: GuestSample; pos: number }, out: Findings): void {
  const { s } = w;
  const khz = Number(tr.info?.guestTscKhz ?? s.guestTscKhz);
  s.vcpus.forEach((cpu, k) => {
    const p = w.byCpu.get(cpu);
    if (!p) return;
    const { s: prev, broke } = p;
    if (prev.daemon !== s.daemon || prev.generation !== s.generation || s.trueNs - prev.trueNs < ix.options.rateMinIntervalNs) return;
    if (broke && !(ix.sim && !ix.restoredIn(s.vmId, prev.trueNs, s.trueNs))) return;
    const j = prev.vcpus.indexOf(cpu);
    const expected = (khz * Number(s.trueNs - prev.trueNs)) / 1e6; // cycles
    // Drift of this host's crystal, KVM's 250 ppm tolerance (the tolerance is of the host's kHz,
    // ×1.00025 in the guest's, and KVM rounds the thresholds to whole kHz: two kHz more), two cycles
    // of rounding.
    const tol = (ix.crystalPpm.get(s.daemon) ?? DRIFT_ALLOWANCE_PPM) + TSC_TOLERANCE_PPM * 1.00025 + 2e6 / khz + (2 / expected) * 1e6 + 0.01;
    out.checked.ratePairs++;
    const dTsc = Number((s.tsc[k] as bigint) - (prev.tsc[j] as bigint));
    const ppm = ((dTsc - expected) / expected) * 1e6;
    if (Math.abs(ppm) <= tol) return;
    out.add([STAGE.timeline, w.pos, AT_SAMPLE.rate], {
      invariant: "I8",
      message: `${s.vmId} vCPU ${cpu} on ${s.daemon}: guest TSC ran ${ppm.toFixed(1)} ppm off ${khz} kHz between ${prev.trueNs} and ${s.trueNs} ns${broke ? " across a stop and restart there" : ""} (tolerance ${tol.toFixed(1)} ppm)`,
      vmId: s.vmId,
      vcpu: cpu,
      daemon: s.daemon,
      trueNs: s.trueNs,
      values: { fromNs: String(prev.trueNs), toNs: String(s.trueNs), cycles: dTsc, expectedCycles: Math.round(expected), ppm: Number(ppm.toFixed(3)), tolerancePpm: Number(tol.toFixed(3)), guestTscKhz: khz },
    });
  });
}

/** The snapshot follows from the source's last reading at the guest's rate (sim runs, whose histories hold every restore). */
function checkSnapshotFollows(ix: HistoryIndex, tr: VmTrack, w: { prev: GuestSample; e: EventOf<"restoreClocks">; pos: number }, out: Findings): void {
  const { prev, e } = w;
  if (!ix.sim || prev.generation !== e.generation - 1n || ix.restoredIn(e.vmId, prev.trueNs, e.trueNs - 1n)) return;
  const jump = snapshotJump(prev, e, ix.crystalPpm.get(prev.daemon) ?? DRIFT_ALLOWANCE_PPM, Number(tr.info?.guestTscKhz ?? 0n));
  if (!jump) return;
  out.add([STAGE.timeline, w.pos], {
    invariant: "I8",
    message: `${e.vmId} vCPU ${jump.vcpu}: the snapshot of migration ${e.migrationId} holds guest TSC ${jump.tsc}, ${jump.cycles} cycles past ${prev.daemon}'s reading at ${prev.trueNs} ns, where its rate allows ${jump.lo}..${jump.hi} by the restore at ${e.restoreStartNs} ns`,
    vmId: e.vmId,
    vcpu: jump.vcpu,
    daemon: prev.daemon,
    trueNs: e.restoreStartNs,
    values: { migrationId: e.migrationId, fromNs: String(prev.trueNs), toNs: String(e.restoreStartNs), cycles: String(jump.cycles), lowestCycles: String(jump.lo), highestCycles: String(jump.hi) },
  });
}

/**
 * The first vCPU whose snapshot TSC does not follow from the source's reading `prev` at the guest's
 * rate: the capture came after `prev` and before the restore began, so the cycles between lie in
 * [0, rate·(restoreStart − prev)] widened by the I8 tolerance (null: it follows).
 */
function snapshotJump(
  prev: GuestSample,
  e: EventOf<"restoreClocks">,
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

// ---- I4: a synchronized bounded clock contains true time -------------------------------------------

/** What I4 remembers of a VM's history as it walks it. */
interface BoundWalk {
  /** Daemons the VM ran on so far. */
  visited: Set<string>;
  /** A host clock fault the guest's bound inherited (widened by a wrong published figure), until the guest is back within its bound or stops claiming sync. */
  taint: FaultClass | null;
  /** Last sample whose bounded clock held true time or claimed no sync (reports count migrations since). */
  lastContainedNs: bigint;
  lastHandledMode: string | null;
  lastHandledNs: bigint;
}

/**
 * I4: whenever a guest says its clock is synchronized, the bound it gives holds true time. A guest
 * that takes its time from a host that lied, or that widened its bound by a figure a host fault made
 * wrong, is a host fault (its class carries over until the guest holds true time again).
 */
export const checkHonestBounds: Check = (ix, out) => {
  for (const tr of ix.tracks.values()) {
    const walk: BoundWalk = { visited: new Set(), taint: null, lastContainedNs: -1n, lastHandledMode: null, lastHandledNs: -1n };
    for (const x of tr.entries) {
      if (x.kind === "sample") {
        walk.visited.add(x.s.daemon);
        checkSampleBound(ix, tr, walk, x.s, x.pos, out);
        continue;
      }
      const e = x.e;
      if (e.kind === "run") walk.visited.add(e.daemon);
      else if (e.kind === "handled") noteHandling(ix, tr, walk, e, x.pos);
    }
  }
};

function noteHandling(ix: HistoryIndex, tr: VmTrack, walk: BoundWalk, e: EventOf<"handled">, pos: number): void {
  walk.lastHandledMode = e.mode;
  walk.lastHandledNs = e.trueNs;
  // Widening by a figure a host clock fault made wrong: the guest now carries that error (until it
  // resyncs), whether or not a sample shows it before the next migration.
  const era = eraAt(tr, pos);
  if (e.mode !== "widen" || !era) return;
  const cls = ix.eraHostFault(tr.vmId, era, pos);
  if (cls) walk.taint = cls;
}

function checkSampleBound(ix: HistoryIndex, tr: VmTrack, walk: BoundWalk, s: GuestSample, pos: number, out: Findings): void {
  const b = s.bounded;
  const trueRt = ix.history.meta.epochNs + s.trueNs;
  // The read happened somewhere in [trueNs, trueNs + span]: held if any instant of it is inside.
  if (b.status !== "synchronized" || (trueRt + (s.trueSpanNs ?? 0n) >= b.earliestNs && trueRt <= b.latestNs)) {
    walk.taint = null;
    walk.lastContainedNs = s.trueNs;
    return;
  }
  const era = tr.eras.find((x) => x.generation === s.generation) as Era;
  const cls = boundFaultClass(ix, tr, walk, { s, era, pos });
  const half = (b.latestNs - b.earliestNs) / 2n;
  // Every migration since the guest last held true time added its hosts' skew difference (several
  // can come between two samples): what a wallclock restore got wrong in all of them.
  const since = tr.eras.filter((x) => x.startPos <= pos && x.source !== null && x.startNs > walk.lastContainedNs);
  const skewSum = since.reduce((acc, x) => acc + ix.clocks.skewDifferenceMaxIn(x.source as string, x.daemon, x.pauseNs, lastRunNsAt(x, pos)), 0n);
  out.add([STAGE.timeline, pos, AT_SAMPLE.bound], {
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
      hostSkewNs: String(ix.clocks.skewAt(s.daemon, s.trueNs)),
      ...(era.source !== null
        ? {
            migratedFrom: era.source,
            resumeNs: String(lastRunNsAt(era, pos)),
            // What a wallclock estimate of that migration got wrong: the two hosts' skew difference.
            hostSkewDifferenceNs: String(ix.clocks.skewAt(era.daemon, lastRunNsAt(era, pos)) - ix.clocks.skewAt(era.source, era.pauseNs)),
          }
        : {}),
      migrationsSinceContained: since.length,
      // At most, per migration: exact over stable clocks, the models' worst case over a step or strobe.
      hostSkewDifferencesSinceContainedNs: String(skewSum),
    },
    ...(cls ? { faultClass: cls } : {}),
  });
}

/** The host clock fault that explains a guest outside its bound, if any (and the taint it leaves). */
function boundFaultClass(ix: HistoryIndex, tr: VmTrack, walk: BoundWalk, w: { s: GuestSample; era: Era; pos: number }): FaultClass | undefined {
  const { s, era } = w;
  let cls: FaultClass | undefined;
  // Guests that take NTP from their host believe any host they ran on: one that may have claimed
  // less than its real skew explains a wrong bound.
  if (ix.history.meta.ntpSource === "host" && [...walk.visited].some((d) => ix.clocks.mayLie(d, s.trueNs))) cls = "lying-clock";
  // A guest that widened its bound by what the destination published inherits that figure's host
  // clock fault (a wallclock bound built on a lying host's claim).
  if (!cls && tr.info?.migrationHandling && walk.lastHandledMode === "widen" && era.source !== null && walk.lastHandledNs >= era.startNs) cls = ix.eraHostFault(tr.vmId, era, w.pos);
  // Still carrying an error a host fault put there (no resync since): same class.
  if (cls) walk.taint = cls;
  else if (tr.info?.migrationHandling && walk.taint) cls = walk.taint;
  return cls;
}

// ---- I5: exactly one handling per committed migration ------------------------------------------------

export const checkHandledOnce: Check = (ix, out) => {
  [...ix.tracks.values()].forEach((tr, rank) => {
    const at = [STAGE.vms, rank];
    const vmId = tr.vmId;
    const markers = new Map<bigint, number>();
    const eras = [...tr.eras].sort((a, b) => (a.startNs < b.startNs ? -1 : a.startNs > b.startNs ? 1 : 0));
    eras.forEach((era, i) => {
      for (const hd of era.handled) markers.set(hd.marker, (markers.get(hd.marker) ?? 0) + 1);
      const first = era.handled[0];
      if (tr.info && !tr.info.migrationHandling) {
        if (first) out.add(at, { invariant: "I5", message: `${vmId}: the guest acted on a migration with handling off`, vmId, trueNs: first.trueNs, values: { generation: String(era.generation) } });
      } else if (i === 0) {
        if (first) out.add(at, { invariant: "I5", message: `${vmId}: the guest acted on a migration before any migration`, vmId, trueNs: first.trueNs, values: { generation: String(era.generation), marker: String(first.marker) } });
      } else if (era.handled.length > 1) {
        out.add(at, {
          invariant: "I5",
          message: `${vmId}: the guest acted ${era.handled.length} times on the migration into generation ${era.generation} (${era.handled.map((x) => `${x.via}@${x.trueNs}`).join(", ")})`,
          vmId,
          trueNs: era.handled[1]?.trueNs ?? era.startNs,
          values: { generation: String(era.generation), count: era.handled.length, markers: era.handled.map((x) => String(x.marker)).join(",") },
        });
      } else if (era.handled.length === 0 && era.samples > 0 && tr.info) {
        out.add(at, {
          invariant: "I5",
          message: `${vmId}: the guest ran ${era.samples} samples after the migration into generation ${era.generation} (resumed at ${era.startNs} ns) without acting on it`,
          vmId,
          trueNs: era.startNs,
          values: { generation: String(era.generation), samplesAfter: era.samples, resumeNs: String(era.startNs) },
        });
      }
    });
    for (const [marker, n] of markers) if (n > 1) out.add(at, { invariant: "I5", message: `${vmId}: the guest acted ${n} times on disruption marker ${marker}`, vmId, values: { marker: String(marker), count: n } });
  });
};

// ---- D: a rerun of the seed gives the same history -----------------------------------------------

/** D, which compares two runs of one seed (the campaign reruns a sample of its seeds). */
export function checkDeterminism(r: { seed: bigint; hash: string; rerunHash: string }): Violation | null {
  if (r.hash === r.rerunHash) return null;
  return { invariant: "D", message: `seed ${r.seed} is not deterministic: two runs gave histories ${r.hash.slice(0, 16)}… and ${r.rerunHash.slice(0, 16)}…`, values: { hash: r.hash, rerunHash: r.rerunHash } };
}

/** Every check of one history, in the order findings with the same `at` are listed. */
export const CHECKS: readonly Check[] = [
  checkPolicyConformance,
  checkLiveness,
  checkNoDaemonException,
  checkMigrationErrors,
  checkSingleOwner,
  checkVmIdentity,
  checkTscMonotonic,
  checkKvmclockMonotonic,
  checkRateContinuity,
  checkHonestBounds,
  checkHandledOnce,
  checkEndState,
];
