// One run, compacted for the report's campaign timeline: each host's realtime skew and claimed
// bound over the run, each VM's guest error against truth (with its claimed half-width while it
// says synchronized), fault periods and point faults, migrations, and the checker's verdicts.
// Times are ms of true time since the run's start, clock values µs, rounded: a run is a few KB so
// a report of thousands of runs stays a reasonable file, and the page parses a run only when shown.

import type { CheckResult } from "../checker.js";
import type { ChaosEvent, ChaosHistory } from "../history.js";
import { offsetAt, type OffsetModel } from "../../shared/time/offset-model.js";

import type { RunTimeline, TimelineFault, TimelineHost, TimelineMigration, TimelineVerdict, TimelineVm } from "./timeline-types.js";

export type { RunTimeline, TimelineFault, TimelineHost, TimelineMigration, TimelineVerdict, TimelineVm } from "./timeline-types.js";

export interface TimelineLimits {
  /** Points per VM. */
  pointsMax: number;
  /** Evenly spaced points per host, besides both sides of each change of its clock model. */
  hostPointsMax: number;
  faultsMax: number;
  verdictsMax: number;
}

/**
 * Runs whose timeline a campaign keeps besides the failing ones (a few KB each): the report embeds
 * these; the others are listed and can be replayed, and cost no memory in a campaign of millions.
 */
export const TIMELINES_KEPT_MAX = 2000;

export const TIMELINE_LIMITS: TimelineLimits = { pointsMax: 160, hostPointsMax: 80, faultsMax: 160, verdictsMax: 12 };

const ms = (ns: bigint) => Math.round(Number(ns) / 1e3) / 1e3;
const us = (ns: bigint) => Math.round(Number(ns) / 1e2) / 10;

/** Every `k`-th index so that at most `max` remain, always keeping the last. */
function stride(n: number, max: number): number[] {
  if (n <= max) return Array.from({ length: n }, (_v, i) => i);
  const k = Math.ceil(n / max);
  const out: number[] = [];
  for (let i = 0; i < n; i += k) out.push(i);
  if (out[out.length - 1] !== n - 1) out.push(n - 1);
  return out;
}

function endOf(h: ChaosHistory): bigint {
  let end = 0n;
  for (const e of h.events) if (e.trueNs > end) end = e.trueNs;
  const last = h.samples[h.samples.length - 1];
  if (last && last.trueNs > end) end = last.trueNs;
  return end;
}

/** Each host's skew: sampled evenly, plus both sides of every change so a step stays a step. */
function hostsOf(h: ChaosHistory, endNs: bigint, lim: TimelineLimits): TimelineHost[] {
  const clocks = new Map<string, { fromNs: bigint; model: OffsetModel; maxerrorNs: bigint }[]>();
  for (const e of h.events) {
    if (e.kind !== "hostClock") continue;
    let l = clocks.get(e.daemon);
    if (!l) clocks.set(e.daemon, (l = []));
    l.push({ fromNs: e.trueNs, model: e.model, maxerrorNs: e.maxerrorNs });
  }
  const names = [...new Set([...h.meta.daemons.map((d) => d.name), ...clocks.keys()])];
  return names.map((name) => {
    const eras = clocks.get(name) ?? []; // in true-time order, as recorded
    const times: bigint[] = [];
    const n = Math.max(2, lim.hostPointsMax);
    for (let i = 0; i < n; i++) times.push((endNs * BigInt(i)) / BigInt(n - 1));
    for (const x of eras) {
      if (x.fromNs > 0n) times.push(x.fromNs - 1n);
      times.push(x.fromNs);
    }
    times.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const pts: { tMs: number; skewUs: number; maxerrorUs: number }[] = [];
    let k = -1; // the era in force at t: the last one that started at or before it
    let last = -1n;
    for (const t of times) {
      if (t < 0n || t > endNs || t === last) continue;
      last = t;
      while (k + 1 < eras.length && (eras[k + 1] as (typeof eras)[number]).fromNs <= t) k++;
      const era = eras[Math.max(k, 0)];
      pts.push({ tMs: ms(t), skewUs: era ? us(offsetAt(era.model, t)) : 0, maxerrorUs: era ? us(era.maxerrorNs) : 0 });
    }
    const kept = dropCollinear(pts);
    return { name, tMs: kept.map((p) => p.tMs), skewUs: kept.map((p) => p.skewUs), maxerrorUs: kept.map((p) => p.maxerrorUs) };
  });
}

/**
 * Drops points a straight line through their kept neighbours already draws (a constant skew needs
 * two points, a drift two, a step four): most hosts then cost a handful of numbers, not hundreds.
 */
function dropCollinear<P extends { tMs: number; skewUs: number; maxerrorUs: number }>(pts: P[]): P[] {
  if (pts.length <= 2) return pts;
  let lo = Infinity;
  let hi = -Infinity;
  for (const p of pts) {
    lo = Math.min(lo, p.skewUs);
    hi = Math.max(hi, p.skewUs);
  }
  const tol = Math.max(0.1, (hi - lo) * 0.002);
  const out: P[] = [pts[0] as P];
  for (let i = 1; i < pts.length - 1; i++) {
    const a = out[out.length - 1] as P;
    const p = pts[i] as P;
    const b = pts[i + 1] as P;
    const f = b.tMs === a.tMs ? 0 : (p.tMs - a.tMs) / (b.tMs - a.tMs);
    const on = (k: "skewUs" | "maxerrorUs") => Math.abs(a[k] + (b[k] - a[k]) * f - p[k]) <= tol;
    if (!(on("skewUs") && on("maxerrorUs"))) out.push(p);
  }
  out.push(pts[pts.length - 1] as P);
  return out;
}

function vmsOf(h: ChaosHistory, hosts: TimelineHost[], lim: TimelineLimits): TimelineVm[] {
  const byVm = new Map<string, number[]>();
  h.samples.forEach((s, i) => {
    let l = byVm.get(s.vmId);
    if (!l) byVm.set(s.vmId, (l = []));
    l.push(i);
  });
  const hostIndex = new Map(hosts.map((x, i) => [x.name, i]));
  const epoch = h.meta.epochNs;
  return [...byVm].map(([id, idx]) => {
    const vm: TimelineVm = { id, tMs: [], errorUs: [], halfUs: [], host: [] };
    for (const k of stride(idx.length, lim.pointsMax)) {
      const s = h.samples[idx[k] as number];
      if (!s) continue;
      const b = s.bounded;
      if (b.status === "unknown" && b.latestNs === 0n) continue;
      vm.tMs.push(ms(s.trueNs));
      vm.errorUs.push(us(b.realtimeNs - (epoch + s.trueNs)));
      vm.halfUs.push(b.status === "synchronized" ? us((b.latestNs - b.earliestNs) / 2n) : null);
      vm.host.push(hostIndex.get(s.daemon) ?? -1);
    }
    return vm;
  });
}

/**
 * Faults as periods where they have one (a stall's length, a daemon down until it restarts, a
 * partition from its first blackholed message to its last), points otherwise; capped per run.
 */
function faultsOf(h: ChaosHistory, lim: TimelineLimits): { faults: TimelineFault[]; omitted: Record<string, number> } {
  const faults: TimelineFault[] = [];
  const omitted: Record<string, number> = {};
  const down = new Map<string, { fromNs: bigint; detail: string }>();
  const partitions = new Map<string, { fromNs: bigint; toNs: bigint; n: number }>();
  const push = (f: TimelineFault) => {
    if (faults.length < lim.faultsMax) faults.push(f);
    else omitted[f.site] = (omitted[f.site] ?? 0) + 1;
  };
  const flushPartition = (key: string) => {
    const p = partitions.get(key);
    if (!p) return;
    partitions.delete(key);
    push({ site: "net.partition", fromMs: ms(p.fromNs), toMs: ms(p.toNs), detail: `${key}: ${p.n} message(s) blackholed` });
  };
  for (const e of h.events as ChaosEvent[]) {
    if (e.kind === "restart") {
      const d = down.get(e.daemon);
      if (d) push({ site: "daemon.down", fromMs: ms(d.fromNs), toMs: ms(e.trueNs), detail: d.detail });
      down.delete(e.daemon);
      continue;
    }
    if (e.kind !== "fault") continue;
    const died = /^(\S+) died/.exec(e.detail);
    if (died) {
      down.set(died[1] as string, { fromNs: e.trueNs, detail: `${e.site}: ${e.detail}` });
      continue;
    }
    const stalled = /stalled (\d+) ns/.exec(e.detail);
    if (stalled) {
      push({ site: e.site, fromMs: ms(e.trueNs - BigInt(stalled[1] as string)), toMs: ms(e.trueNs), detail: e.detail });
      continue;
    }
    if (e.site === "net.partition") {
      const key = /^(\S+→\S+)/.exec(e.detail)?.[1] ?? "link";
      const p = partitions.get(key);
      // Blackholed messages less than a second apart belong to one partition.
      if (p && e.trueNs - p.toNs < 1_000_000_000n) {
        p.toNs = e.trueNs;
        p.n++;
      } else {
        flushPartition(key);
        partitions.set(key, { fromNs: e.trueNs, toNs: e.trueNs, n: 1 });
      }
      continue;
    }
    push({ site: e.site, fromMs: ms(e.trueNs), toMs: ms(e.trueNs), detail: e.detail });
  }
  for (const key of [...partitions.keys()]) flushPartition(key);
  for (const [daemon, d] of down) push({ site: "daemon.down", fromMs: ms(d.fromNs), toMs: ms(d.fromNs), detail: `${d.detail} (${daemon} never restarted)` });
  faults.sort((a, b) => a.fromMs - b.fromMs);
  return { faults, omitted };
}

function migrationsOf(h: ChaosHistory, check: CheckResult): TimelineMigration[] {
  const starts = h.events.filter((e): e is Extract<ChaosEvent, { kind: "migrateStart" }> => e.kind === "migrateStart");
  const out: TimelineMigration[] = [];
  const used = new Set<number>();
  for (const m of check.migrations) {
    // The harness's start of this migration: the last start of this VM from this source before its pause.
    let start: number | null = null;
    starts.forEach((s, i) => {
      if (!used.has(i) && s.vmId === m.vmId && s.source === m.source && (m.pauseTrueNs === 0n || s.trueNs <= m.pauseTrueNs)) start = i;
    });
    if (start !== null) used.add(start);
    const s = start !== null ? starts[start] : undefined;
    out.push({
      id: m.migrationId,
      vmId: m.vmId,
      source: m.source,
      destination: m.destination,
      policy: m.policy,
      estimator: m.estimator,
      outcome: m.outcome,
      startMs: s ? ms(s.trueNs) : null,
      pauseMs: m.pauseTrueNs > 0n ? ms(m.pauseTrueNs) : null,
      resumeMs: m.resumeTrueNs > 0n ? ms(m.resumeTrueNs) : null,
      errorUs: m.outcome === "committed" && m.resumeTrueNs > 0n ? us(m.tscErrorNs) : null,
      boundUs: m.outcome === "committed" ? us(m.errorBoundNs) : null,
      hostFault: m.hostFault,
    });
  }
  // Starts that never produced a row (the source died first, the call failed): still on the timeline.
  starts.forEach((s, i) => {
    if (used.has(i)) return;
    out.push({ id: `start-${i}`, vmId: s.vmId, source: s.source, destination: s.destination, policy: s.policy, estimator: s.estimator, outcome: "no report", startMs: ms(s.trueNs), pauseMs: null, resumeMs: null, errorUs: null, boundUs: null, hostFault: null });
  });
  return out.sort((a, b) => (a.startMs ?? a.pauseMs ?? 0) - (b.startMs ?? b.pauseMs ?? 0));
}

export function runTimeline(h: ChaosHistory, check: CheckResult, run: number, seed: bigint, lim: TimelineLimits = TIMELINE_LIMITS): RunTimeline {
  const endNs = endOf(h);
  const hosts = hostsOf(h, endNs, lim);
  const { faults, omitted } = faultsOf(h, lim);
  const heal = h.events.find((e) => e.kind === "heal");
  const verdict = (hostFault: boolean) => (v: CheckResult["violations"][number]): TimelineVerdict => ({
    invariant: v.invariant,
    tMs: v.trueNs !== undefined ? ms(v.trueNs) : null,
    vmId: v.vmId ?? null,
    daemon: v.daemon ?? null,
    message: v.message,
    hostFault: hostFault ? (v.faultClass ?? "host clock") : null,
  });
  return {
    run,
    seed: seed.toString(),
    endMs: ms(endNs),
    healMs: heal ? ms(heal.trueNs) : null,
    hosts,
    vms: vmsOf(h, hosts, lim),
    faults,
    faultsOmitted: omitted,
    migrations: migrationsOf(h, check),
    verdicts: [...check.violations.map(verdict(false)), ...check.hostFaults.map(verdict(true))].slice(0, lim.verdictsMax),
  };
}
