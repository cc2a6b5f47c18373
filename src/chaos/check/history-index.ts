// The checker's view of one run, built once so that each invariant is a short function over it:
//
//   timeline    samples and events merged into one true-time order; `pos` is a record's place in it
//   tracks      per VM, in the order VMs first appear: its guest configuration, its own records
//               (run, stop, restoreClocks, handled, samples) and its eras, one per generation that ran
//   migrations  per migration, the account of its resume and the error measured against truth
//   clocks      per daemon, the segments of its realtime error (host-clocks.ts)
//
// plus the harness's facts that invariants look up: migration starts, restores, heal and final.
// Nothing here judges; the invariants in invariants.ts do.

import type { GuestSample, MigrationEvent } from "../../shared/history.js";
import type { ChaosEvent, ChaosHistory, RESTORED_FIELDS } from "../history.js";
import { type FaultClass, HostClocks } from "./host-clocks.js";

export type EventOf<K extends ChaosEvent["kind"]> = Extract<ChaosEvent, { kind: K }>;

/** One record of the merged timeline. */
export type Entry = { pos: number; t: bigint } & ({ kind: "event"; e: ChaosEvent } | { kind: "sample"; s: GuestSample });

export interface VmInfo {
  vmId: string;
  vcpus: number;
  guestTscKhz: bigint;
  migrationHandling: boolean;
  handlingMode: string;
}

/** One generation of a VM: from its first run (or sample) on, and where the migration into it came from. */
export interface Era {
  generation: bigint;
  startNs: bigint;
  /** Timeline position of the record that began it. */
  startPos: number;
  /** Where the VM ran this era (its first run), and where and when the migration into it paused. */
  daemon: string;
  source: string | null;
  pauseNs: bigint;
  /** Every run of this generation: a restore a crash undid is redone later, after a restart. */
  runs: { pos: number; t: bigint }[];
  samples: number;
  /** The guest's handling of a migration, filed under the era that had begun when it came. */
  handled: { trueNs: bigint; marker: bigint; via: string; mode: string }[];
}

export interface VmTrack {
  vmId: string;
  /** From the VM's creation event (absent when the history holds none). */
  info: VmInfo | undefined;
  /** Its run, stop, restoreClocks and handled events and its samples, in timeline order. */
  entries: Entry[];
  /** In the order they began. */
  eras: Era[];
}

/** What the checker needs of a migration's report (`migration`) or the harness's account of its restore (`restored`). */
export type MigrationAccount = Pick<MigrationEvent, (typeof RESTORED_FIELDS)[number] | "outcome"> & { policy: string; estimator: string };

/** A migration's error at resume against truth and against the bound it reported. */
export interface MigrationError {
  account: MigrationAccount;
  /** Committed with a resume: only these have an error. */
  committed: boolean;
  /** Guest TSC (vCPU 0) at resume minus what the source would read, in cycles and in ns of guest time. */
  tscErrorCycles: bigint;
  tscErrorNs: bigint;
  kvmclockErrorNs: bigint;
  tscOverBound: boolean;
  kvmclockOverBound: boolean;
  /** For a migration over its bound: the host clock fault that explains it, if any. */
  hostFault: FaultClass | undefined;
  /** Policies whose bound I3 holds them to (a capped advance-capped is allowed to fall behind). */
  boundApplies: boolean;
}

export interface IndexOptions {
  rateMinIntervalNs: bigint;
}

export class HistoryIndex {
  readonly sim: boolean;
  readonly clocks: HostClocks;
  /** Each daemon's TSC crystal drift bound, ppm. */
  readonly crystalPpm: Map<string, number>;
  readonly vms: Map<string, VmInfo>;
  readonly timeline: Entry[];
  readonly tracks: Map<string, VmTrack>;
  readonly starts: EventOf<"migrateStart">[];
  readonly migrations: MigrationError[];
  /** The network healed here (the first heal); the run ended here (the last final). */
  readonly heal: EventOf<"heal"> | undefined;
  readonly final: EventOf<"final"> | undefined;
  private readonly restoresByVm: Map<string, bigint[]>;

  constructor(
    readonly history: ChaosHistory,
    readonly options: IndexOptions,
  ) {
    const events = history.events;
    this.sim = history.meta.mode === "sim";
    this.clocks = new HostClocks(events);
    this.crystalPpm = new Map(history.meta.daemons.map((d) => [d.name, d.crystalSlopePpm]));
    this.vms = vmInfos(events);
    this.timeline = mergeTimeline(history);
    this.tracks = vmTracks(this.timeline, this.vms);
    this.starts = events.filter((e): e is EventOf<"migrateStart"> => e.kind === "migrateStart");
    this.restoresByVm = restoreInstants(events);
    this.heal = events.find((e): e is EventOf<"heal"> => e.kind === "heal");
    this.final = [...events].reverse().find((e): e is EventOf<"final"> => e.kind === "final");
    this.migrations = migrationAccounts(events).map((a) => this.migrationError(a));
  }

  /** The last start of a migration of `vmId` (from `source`, when given) at or before t. */
  startBefore(vmId: string, t: bigint, source?: string): EventOf<"migrateStart"> | undefined {
    let found: EventOf<"migrateStart"> | undefined;
    for (const st of this.starts) if (st.vmId === vmId && st.trueNs <= t && (source === undefined || st.source === source)) found = st;
    return found;
  }

  /** Whether a restore of a VM resumed it inside (t1, t2] (sim runs record every restore). */
  restoredIn(vmId: string, t1: bigint, t2: bigint): boolean {
    return (this.restoresByVm.get(vmId) ?? []).some((t) => t > t1 && t <= t2);
  }

  /** The host clock fault, if any, behind the migration into `era`, judged with the era's runs up to `pos`. */
  eraHostFault(vmId: string, era: Era, pos: number): FaultClass | undefined {
    if (era.source === null) return undefined;
    const st = this.startBefore(vmId, era.pauseNs, era.source);
    if (!st) return undefined;
    return this.clocks.faultOf({ estimator: st.estimator, source: era.source, destination: era.daemon, startNs: st.trueNs, pauseNs: era.pauseNs, resumeNs: lastRunNsAt(era, pos) });
  }

  private migrationHostFault(a: MigrationAccount): FaultClass | undefined {
    const startNs = this.startBefore(a.vmId, a.pauseTrueNs, a.source)?.trueNs ?? a.pauseTrueNs;
    return this.clocks.faultOf({ estimator: a.estimator, source: a.source, destination: a.destination, startNs, pauseNs: a.pauseTrueNs, resumeNs: a.resumeTrueNs });
  }

  private migrationError(a: MigrationAccount): MigrationError {
    const committed = a.outcome === "committed" && a.resumeTrueNs > 0n;
    const khz = a.guestTscKhz > 0n ? a.guestTscKhz : 1n;
    const tscErrorCycles = a.tscAtResume - a.tscIdealAtResume;
    const kvmclockErrorNs = committed ? a.kvmclockAtResumeNs - a.kvmclockIdealAtResumeNs : 0n;
    // Exact: |Δcycles|/kHz·10^6 ns > bound.
    const tscOverBound = committed && abs(tscErrorCycles) * 1_000_000n > a.errorBoundNs * khz;
    const kvmclockOverBound = committed && abs(kvmclockErrorNs) > a.errorBoundNs;
    const hostFault = tscOverBound || kvmclockOverBound ? this.migrationHostFault(a) : undefined;
    return {
      account: a,
      committed,
      tscErrorCycles,
      tscErrorNs: committed ? (tscErrorCycles * 1_000_000n) / khz : 0n,
      kvmclockErrorNs,
      tscOverBound,
      kvmclockOverBound,
      hostFault,
      boundApplies: a.policy === "advance" || a.policy === "kvm-realtime" || (a.policy === "advance-capped" && !a.capped),
    };
  }
}

const abs = (x: bigint) => (x < 0n ? -x : x);

/** The latest start of an era as seen at timeline position `pos` (its first record when no run came yet). */
export function lastRunNsAt(era: Era, pos: number): bigint {
  let t = era.startNs;
  for (const r of era.runs) if (r.pos <= pos) t = r.t;
  return t;
}

/** The era that had begun last by timeline position `pos`. */
export function eraAt(track: VmTrack, pos: number): Era | undefined {
  for (let i = track.eras.length - 1; i >= 0; i--) {
    const era = track.eras[i] as Era;
    if (era.startPos <= pos) return era;
  }
  return undefined;
}

function vmInfos(events: readonly ChaosEvent[]): Map<string, VmInfo> {
  const vms = new Map<string, VmInfo>();
  for (const e of events)
    if (e.kind === "vm") vms.set(e.vmId, { vmId: e.vmId, vcpus: e.vcpus, guestTscKhz: e.guestTscKhz, migrationHandling: e.migrationHandling, handlingMode: e.handlingMode });
  return vms;
}

/**
 * Merges samples and events into one true-time order. Sim runs record `order` (samples recorded
 * before each event) and are merged exactly; live runs are merged by true time, and at one instant
 * a stop sorts before samples and samples before a run.
 */
function mergeTimeline(h: ChaosHistory): Entry[] {
  const out: Entry[] = [];
  const pushSample = (s: GuestSample) => out.push({ pos: out.length, t: s.trueNs, kind: "sample", s });
  if (h.order && h.order.length === h.events.length) {
    let si = 0;
    h.events.forEach((e, i) => {
      const upto = h.order?.[i] as number;
      for (; si < upto && si < h.samples.length; si++) pushSample(h.samples[si] as GuestSample);
      out.push({ pos: out.length, t: e.trueNs, kind: "event", e });
    });
    for (; si < h.samples.length; si++) pushSample(h.samples[si] as GuestSample);
    return out;
  }
  const rank = (x: Entry) => (x.kind === "sample" ? 1 : x.e.kind === "stop" ? 0 : x.e.kind === "run" ? 2 : 1);
  for (const s of h.samples) pushSample(s);
  for (const e of h.events) out.push({ pos: out.length, t: e.trueNs, kind: "event", e });
  out.sort((a, b) => (a.t < b.t ? -1 : a.t > b.t ? 1 : rank(a) - rank(b) || a.pos - b.pos));
  out.forEach((x, i) => (x.pos = i));
  return out;
}

/** The VM a timeline record is about, for the records a VM's track holds. */
function trackedVm(x: Entry): string | undefined {
  if (x.kind === "sample") return x.s.vmId;
  const e = x.e;
  return e.kind === "run" || e.kind === "stop" || e.kind === "restoreClocks" || e.kind === "handled" ? e.vmId : undefined;
}

function vmTracks(timeline: readonly Entry[], vms: ReadonlyMap<string, VmInfo>): Map<string, VmTrack> {
  const tracks = new Map<string, VmTrack>();
  for (const x of timeline) {
    const vmId = trackedVm(x);
    if (vmId === undefined) continue;
    let tr = tracks.get(vmId);
    if (!tr) tracks.set(vmId, (tr = { vmId, info: vms.get(vmId), entries: [], eras: [] }));
    tr.entries.push(x);
  }
  for (const tr of tracks.values()) tr.eras = erasOf(tr.entries);
  return tracks;
}

/**
 * A VM's eras: a generation begins at its first run or sample; the migration into it left from the
 * VM's last stop before (none for the first era). Handling is filed under the era begun last.
 */
function erasOf(entries: readonly Entry[]): Era[] {
  const eras: Era[] = [];
  let lastStop: { daemon: string; t: bigint } | null = null;
  const eraFor = (generation: bigint, t: bigint, daemon: string, pos: number): Era => {
    let era = eras.find((x) => x.generation === generation);
    if (!era) {
      const from = eras.length > 0 ? lastStop : null;
      eras.push((era = { generation, startNs: t, startPos: pos, daemon, source: from?.daemon ?? null, pauseNs: from?.t ?? t, runs: [], samples: 0, handled: [] }));
    }
    return era;
  };
  for (const x of entries) {
    if (x.kind === "sample") {
      eraFor(x.s.generation, x.s.trueNs, x.s.daemon, x.pos).samples++;
      continue;
    }
    const e = x.e;
    if (e.kind === "run") eraFor(e.generation, e.trueNs, e.daemon, x.pos).runs.push({ pos: x.pos, t: e.trueNs });
    else if (e.kind === "stop") lastStop = { daemon: e.daemon, t: e.trueNs };
    else if (e.kind === "handled") eras[eras.length - 1]?.handled.push({ trueNs: e.trueNs, marker: e.marker, via: e.via, mode: e.mode });
  }
  return eras;
}

function restoreInstants(events: readonly ChaosEvent[]): Map<string, bigint[]> {
  const at = new Map<string, bigint[]>();
  for (const e of events) {
    if (e.kind !== "restoreClocks") continue;
    let l = at.get(e.vmId);
    if (!l) at.set(e.vmId, (l = []));
    l.push(e.trueNs);
  }
  return at;
}

/**
 * One account per migration: the source's report (`migration`), else the harness's account of a
 * restore whose source never got the report (`restored`), counted as committed.
 */
function migrationAccounts(events: readonly ChaosEvent[]): MigrationAccount[] {
  const reported = new Set<string>();
  for (const e of events) if (e.kind === "migration" && e.outcome === "committed" && e.resumeTrueNs > 0n) reported.add(e.migrationId);
  return events.flatMap((e): MigrationAccount[] => {
    if (e.kind === "migration") return [e];
    if (e.kind === "restored" && !reported.has(e.migrationId)) {
      reported.add(e.migrationId);
      return [{ ...e, outcome: "committed" }];
    }
    return [];
  });
}
