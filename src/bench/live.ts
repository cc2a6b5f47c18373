// Real daemons on loopback for the benchmark: two processes started with `spawnDaemon` (exactly
// what `tscmig up` runs), driven through their HTTP control API, migrating VMs back and forth.
// Blackout, phases and introduced error come from each migration's report, measured inside the
// daemons (true time: CLOCK_MONOTONIC, shared by both processes).

import { readFileSync } from "node:fs";
import { ApiClient } from "../client/api.js";
import { spawnDaemon, type LocalDaemon } from "../client/local-daemons.js";
import { TscmigError } from "../shared/errors.js";
import type { Scheduler } from "../shared/time/clock.js";
import { sleep } from "../shared/time/clock.js";

export interface Side {
  name: string;
  api: ApiClient;
  grpc: string;
  pid: number;
  daemon: LocalDaemon;
}

export interface PairOptions {
  /** Extra daemon flags (e.g. a journal or log setting under test). */
  daemonArgs?: string[];
  /** Flags for the daemons' node (e.g. --cpu-prof --cpu-prof-dir=DIR). */
  nodeArgs?: string[];
}

/** `data`: the daemon's --data (default: a fresh temporary directory). */
export async function startSide(name: string, o: PairOptions, data?: string): Promise<Side> {
  const d = await spawnDaemon({ name, echo: false, ...(o.daemonArgs ? { args: o.daemonArgs } : {}), ...(o.nodeArgs ? { nodeArgs: o.nodeArgs } : {}), ...(data !== undefined ? { data } : {}) });
  return { name, api: new ApiClient(d.http), grpc: d.grpc, pid: d.child.pid ?? 0, daemon: d };
}

export async function startPair(o: PairOptions): Promise<[Side, Side]> {
  const got = await Promise.allSettled([startSide("bench-a", o), startSide("bench-b", o)]);
  const up = got.flatMap((g) => (g.status === "fulfilled" ? [g.value] : []));
  const failed = got.find((g) => g.status === "rejected");
  if (failed) {
    await stopSides(up);
    throw failed.reason;
  }
  return up as [Side, Side];
}

export async function stopSides(sides: readonly Side[]): Promise<void> {
  await Promise.all(sides.map((s) => s.daemon.stop()));
}

/** The fields of a migration report the benchmark reads (64-bit values arrive as decimal strings). */
export interface Migrated {
  outcome: string;
  trueBlackoutNs: bigint;
  estimatedBlackoutNs: bigint;
  errorBoundNs: bigint;
  tscErrorNs: bigint;
  /** Half the difference of the Transfer round trip's two legs (true clock): one-sided's blind spot. */
  legAsymmetryNs: bigint;
  phases: { captureNs: bigint; encodeNs: bigint; transferNs: bigint; decodeNs: bigint; restoreNs: bigint; commitNs: bigint };
  error?: string;
}

const big = (v: unknown): bigint => (typeof v === "string" && /^-?\d+$/.test(v) ? BigInt(v) : 0n);

export function parseReport(j: Record<string, unknown>): Migrated {
  const p = (j.phases ?? {}) as Record<string, unknown>;
  const err = j.error as { code?: string; message?: string } | undefined;
  return {
    outcome: String(j.outcome),
    trueBlackoutNs: big(j.trueBlackoutNs),
    estimatedBlackoutNs: big(j.estimatedBlackoutNs),
    errorBoundNs: big(j.errorBoundNs),
    tscErrorNs: big(j.tscErrorNs),
    legAsymmetryNs: (() => {
      const d = big(j.transferForwardNs) - big(j.transferBackNs);
      return (d < 0n ? -d : d) / 2n;
    })(),
    phases: {
      captureNs: big(p.captureNs),
      encodeNs: big(p.encodeNs),
      transferNs: big(p.transferNs),
      decodeNs: big(p.decodeNs),
      restoreNs: big(p.restoreNs),
      commitNs: big(p.commitNs),
    },
    ...(err ? { error: `${err.code}: ${err.message}` } : {}),
  };
}

export async function createVm(side: Side, id: string, vcpus: number): Promise<void> {
  await side.api.call("POST", "/v1/vms", { id, vcpus });
}

export interface MigrateOpts {
  policy?: string;
  estimator?: string;
  switchover?: "two-phase" | "on-receipt";
}

export async function migrate(from: Side, to: Side, id: string, o: MigrateOpts = {}): Promise<Migrated> {
  const j = await from.api.call<Record<string, unknown>>(
    "POST",
    `/v1/vms/${encodeURIComponent(id)}/migrate`,
    { destination: to.grpc, ...(o.policy ? { policy: o.policy } : {}), ...(o.estimator ? { estimator: o.estimator } : {}), ...(o.switchover ? { switchover: o.switchover } : {}) },
    60_000,
  );
  return parseReport(j);
}

/** A VM that bounces between two daemons: each call migrates it to the other side. */
export class Bouncer {
  here: 0 | 1 = 0;
  constructor(
    private readonly sides: readonly [Side, Side],
    readonly id: string,
    /** Options every migration of this VM takes (a call's own override them). */
    private readonly defaults: MigrateOpts = {},
  ) {}
  /** Source and destination of the next migration. */
  next(): { from: Side; to: Side } {
    return { from: this.sides[this.here], to: this.sides[this.here === 0 ? 1 : 0] };
  }
  async migrate(o: MigrateOpts = {}): Promise<Migrated> {
    const { from, to } = this.next();
    const r = await migrate(from, to, this.id, { ...this.defaults, ...o });
    if (r.outcome === "committed") this.here = this.here === 0 ? 1 : 0;
    else throw new TscmigError("internal", `migration of ${this.id} ${from.name} → ${to.name}: ${r.outcome} ${r.error ?? ""}`);
    return r;
  }
}

/** Runs `fn` over `items` with at most `concurrency` calls in flight; results in item order. */
export async function pool<T, R>(items: readonly T[], concurrency: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i] as T, i);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, items.length)) }, worker));
  return out;
}

/** Resident set size of a process (VmRSS of /proc/PID/status), bytes. */
export function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!m) throw new TscmigError("unavailable", `no VmRSS for pid ${pid}`);
  return Number(m[1]) * 1024;
}

export function settle(scheduler: Scheduler, ms: number): Promise<void> {
  return sleep(scheduler, BigInt(ms) * 1_000_000n);
}
