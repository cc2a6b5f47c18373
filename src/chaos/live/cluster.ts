// The daemons of one live run and what the harness records about them: each daemon is a real
// process behind its own fault proxy (it advertises the proxy, so every byte between daemons
// crosses a proxy the harness controls), supervised here — started, SIGKILLed, restarted with the
// same --data — and its history pulled through GET /v1/history. True time is the machine's
// CLOCK_MONOTONIC, shared by every process, so events the harness records and events the daemons
// record line up directly. True realtime is that plus one epoch the campaign pins and hands every
// daemon at every start (TSCMIG_TRUE_EPOCH_NS): the harness checks each host report against it, so
// a daemon on another epoch fails the run as a harness error instead of passing for guest error.
//
// A killed daemon's in-memory history ring dies with it: the cluster pulls the history (and which
// VMs run there) just before each kill and records the kill as a stop of those VMs.

import { ApiClient } from "../../client/api.js";
import { type LocalDaemon, spawnDaemon, type SpawnDaemonOptions } from "../../client/local-daemons.js";
import { BOUNDARY, toJsonText } from "../../shared/codec.js";
import { type GuestSample, historyEventCodec, type HistoryPage, historyPageCodec } from "../../shared/history.js";
import { RealClock, RealScheduler, TRUE_EPOCH_ENV } from "../../shared/platform/index.js";
import { sleep } from "../../shared/time/clock.js";
import { parseOffsetModel } from "../../shared/time/offset-model.js";
import type { SkewUpdate } from "../../shared/time/skew.js";
import type { ChaosEvent } from "../history.js";
import { skewUpdateBody } from "../host-skew.js";
import type { FaultProxy } from "./proxy.js";

export const MS = 1_000_000n;
export const S = 1_000_000_000n;
export type Json = Record<string, unknown>;

export const clock = new RealClock();
const sched = new RealScheduler();
export const wait = (ns: bigint) => sleep(sched, ns);

export interface LiveDaemon {
  name: string;
  proxy: FaultProxy;
  http: string;
  grpc: string;
  data: string;
  args: string[];
  /** The wander and jitter of its skew, set through the control API after every start. */
  skewUpdate?: SkewUpdate | null;
  proc: LocalDaemon | null;
  api: ApiClient | null;
  /** The harness is stopping or killing it (an exit now is expected). */
  stopping: boolean;
}

export interface ClusterOptions {
  /** Node arguments that start the tscmig CLI (default: bin/tscmig.js). */
  entry?: string[];
  /** Forward daemon logs to stderr. */
  echo?: boolean;
  /** Every VM created with guest migration handling on or off. */
  handling: boolean;
  /** Wall-clock instant of true time 0 that every daemon is started with, and reports are checked against. */
  trueEpochNs: bigint;
  /** The daemons live no longer than this: on abort every one is SIGKILLed and no more start. */
  signal?: AbortSignal;
}

type VmRow = { id: string; running: boolean; role: string; generation: string; migrating: string | null };

/** The harness itself went wrong (not a daemon): already recorded as an error event when thrown. */
export class HarnessError extends Error {}

export class LiveCluster {
  readonly daemons: LiveDaemon[] = [];
  readonly events: ChaosEvent[] = [];
  readonly samples: GuestSample[] = [];
  readonly faultSites: Record<string, number> = {};
  readonly outcomes: Record<string, number> = {};
  /** Wall-clock instant of true time 0, pinned for every daemon of the run. */
  readonly epochNs: bigint;
  /** Where the harness last saw each VM run (a daemon that dies on its own takes those with it). */
  readonly lastSeenOn = new Map<string, { daemon: string; generation: string }>();
  /** VMs I7 requires at the end, and their vCPU counts. */
  readonly vmIds = ["vm0"];
  readonly vcpusOf = new Map<string, number>();
  private readonly seen = new Set<string>();
  /** Spawns under way (settled either way). */
  private readonly starting = new Set<Promise<void>>();

  constructor(private readonly o: ClusterOptions) {
    this.epochNs = o.trueEpochNs;
    // Before spawnDaemon's own listeners SIGKILL them (registered later, so called later): those
    // exits are the harness's doing, not crashes. Removed by stopAll (one signal spans a campaign).
    o.signal?.addEventListener("abort", this.onAbort, { once: true });
  }

  private readonly onAbort = () => {
    for (const d of this.daemons) d.stopping = true;
  };

  fault(site: string, detail: string): void {
    this.faultSites[site] = (this.faultSites[site] ?? 0) + 1;
    this.events.push({ kind: "fault", trueNs: clock.monotonicNs(), site, detail });
  }

  /**
   * Records a daemon's clock as GET /v1/host or PUT /v1/host/clock reported it, after checking the
   * epoch it implies (realtime − true − skew, all of one instant) against the pinned one. A daemon
   * on another epoch has every realtime off by the difference while its skew says otherwise: that is
   * the harness's failure, recorded as one (E, naming both values) and thrown, so the run stops
   * before any guest sample of that daemon reaches the bound checks.
   */
  recordHost(d: LiveDaemon, h: Json): void {
    const trueNs = BigInt(h.trueNs as string);
    const impliedNs = BigInt(h.realtimeNs as string) - trueNs - BigInt(h.skewNs as string);
    if (impliedNs !== this.epochNs) {
      const message = `harness error: ${d.name} runs on true epoch ${impliedNs} ns, not the ${this.epochNs} ns the harness pinned (${impliedNs - this.epochNs} ns apart): its clocks cannot be checked against true time`;
      this.events.push({ kind: "error", trueNs, daemon: "harness", message });
      throw new HarnessError(message);
    }
    const model = parseOffsetModel(h.skewModel, "skewModel");
    this.events.push({ kind: "hostClock", trueNs, daemon: d.name, model, maxerrorNs: BigInt(h.maxerrorNs as string) });
  }

  /** Adds what the daemon's history ring holds that the harness has not seen yet. */
  async pull(d: LiveDaemon): Promise<void> {
    if (!d.api) return;
    let body: unknown;
    try {
      body = await d.api.call<unknown>("GET", "/v1/history?limit=100000", undefined, 10_000);
    } catch {
      return; // a daemon that cannot answer has nothing more to give
    }
    let h: HistoryPage;
    try {
      h = historyPageCodec.decode(body, BOUNDARY.api, "history");
    } catch (e) {
      // A daemon serving a history its own schema does not describe is a bug, not a fault.
      this.events.push({ kind: "error", trueNs: clock.monotonicNs(), daemon: d.name, message: `GET /v1/history: ${e instanceof Error ? e.message : String(e)}` });
      return;
    }
    for (const g of h.samples) if (this.firstSight(`s:${g.daemon}:${g.vmId}:${g.trueNs}`)) this.samples.push(g);
    for (const e of h.events) if (this.firstSight(`e:${toJsonText(historyEventCodec, e, BOUNDARY.api)}`)) this.events.push(e);
  }

  private firstSight(key: string): boolean {
    if (this.seen.has(key)) return false;
    this.seen.add(key);
    return true;
  }

  /** A daemon exited without the harness asking: that is a crash (E), and the VMs it ran stop there. */
  private watchExit(d: LiveDaemon, p: LocalDaemon): void {
    p.child.once("exit", (code, signal) => {
      if (d.stopping || d.proc !== p) return;
      const t = clock.monotonicNs();
      for (const [vmId, seen] of this.lastSeenOn) if (seen.daemon === d.name) this.events.push({ kind: "stop", trueNs: t, daemon: d.name, vmId, generation: BigInt(seen.generation), why: "crash" });
      this.events.push({ kind: "error", trueNs: t, daemon: d.name, message: `${d.name} exited on its own (code ${code}, signal ${signal}): ${p.logs.slice(-3).join(" | ").slice(0, 400)}` });
      d.proc = null;
      d.api = null;
    });
  }

  /** Starts `d` (retrying while its old ports close), waits until it is healthy, and gives it its skew. */
  async start(d: LiveDaemon, env: Record<string, string> = {}): Promise<void> {
    this.o.signal?.throwIfAborted();
    d.stopping = false;
    d.proc = await this.spawn(d, env);
    this.watchExit(d, d.proc);
    d.http = d.proc.http.replace(/^http:\/\//, "");
    d.grpc = d.proc.grpc;
    d.proxy.upstream = d.grpc;
    d.api = new ApiClient(d.proc.http);
    await d.api.waitHealthy(100, () => wait(50n * MS));
    this.recordHost(d, await d.api.call<Json>("GET", "/v1/host"));
    if (d.skewUpdate) this.recordHost(d, await d.api.call<Json>("PUT", "/v1/host/clock", skewUpdateBody(d.skewUpdate)));
  }

  /** Spawns `d`; stopAll() waits for it, so a run that gives up mid-start leaves no process behind. */
  private spawn(d: LiveDaemon, env: Record<string, string>): Promise<LocalDaemon> {
    const p = this.spawnRetrying(d, env);
    const settled = p.then(
      () => undefined,
      () => undefined,
    );
    this.starting.add(settled);
    void settled.then(() => this.starting.delete(settled));
    return p;
  }

  private async spawnRetrying(d: LiveDaemon, env: Record<string, string>): Promise<LocalDaemon> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await spawnDaemon(this.spawnOptions(d, { TSCMIG_LOG_LEVEL: this.o.echo ? "info" : "warn", ...env }, this.o.echo === true));
      } catch (e) {
        if (attempt >= 20 || this.o.signal?.aborted) throw e;
        await wait(100n * MS); // the old process's ports may still be closing
      }
    }
  }

  /** Spawns `d` once more with its own flags, outside the cluster's supervision (a start expected to fail). */
  spawnUnsupervised(d: LiveDaemon): Promise<LocalDaemon> {
    return spawnDaemon(this.spawnOptions(d, {}, false));
  }

  /** How `d` is spawned: its own flags and data, the campaign's pinned epoch (which `env` cannot override), this cluster's signal and entry. */
  private spawnOptions(d: LiveDaemon, env: Record<string, string>, echo: boolean): SpawnDaemonOptions {
    return {
      name: d.name,
      http: d.http,
      grpc: d.grpc,
      data: d.data,
      args: d.args,
      readyTimeoutNs: 15n * S,
      env: { ...env, [TRUE_EPOCH_ENV]: String(this.epochNs) },
      ...(this.o.signal ? { signal: this.o.signal } : {}),
      ...(echo ? { echo: true } : {}),
      ...(this.o.entry ? { entry: this.o.entry } : {}),
    };
  }

  /** SIGKILLs `d` after pulling its history; the VMs it ran stop there. */
  async kill(d: LiveDaemon, why: string): Promise<void> {
    if (!d.proc || !d.api) return;
    let running: { id: string; generation: string }[];
    try {
      running = (await d.api.call<{ vms: VmRow[] }>("GET", "/v1/vms", undefined, 2000)).vms.filter((v) => v.running);
    } catch {
      running = [];
    }
    // Pulled after the listing: reading a VM reads its guest's clock, which can make the guest act
    // on a migration just then, and that handling must not die unseen with the process.
    await this.pull(d);
    const child = d.proc.child;
    const exited = new Promise<void>((ok) => (child.exitCode !== null || child.signalCode !== null ? ok() : child.once("exit", () => ok())));
    d.stopping = true;
    child.kill("SIGKILL");
    const t = clock.monotonicNs();
    for (const v of running) this.events.push({ kind: "stop", trueNs: t, daemon: d.name, vmId: v.id, generation: BigInt(v.generation), why: "crash" });
    this.fault("kill", `${d.name} SIGKILLed (${why})`);
    await exited;
    d.proc = null;
    d.api = null;
  }

  /** Starts `d` again and records the restart. */
  async restart(d: LiveDaemon, incarnation = 2, env: Record<string, string> = {}): Promise<void> {
    await this.start(d, env);
    this.events.push({ kind: "restart", trueNs: clock.monotonicNs(), daemon: d.name, incarnation });
  }

  /** A supervisor restarts what died on its own. */
  async restartExited(): Promise<void> {
    for (const d of this.daemons) if (!d.proc) await this.restart(d);
  }

  /** Asks every daemon where each VM runs now (lastSeenOn). */
  async locate(): Promise<void> {
    for (const d of this.daemons) {
      const vms = await d.api?.call<{ vms: VmRow[] }>("GET", "/v1/vms", undefined, 2000).catch(() => null);
      for (const v of vms?.vms ?? []) if (v.running && v.role === "owner") this.lastSeenOn.set(v.id, { daemon: d.name, generation: v.generation });
    }
  }

  /** Creates a 1-vCPU VM the harness tracks for I7 when the daemon lists it; says what happened. */
  async createVm(d: LiveDaemon, id: string): Promise<string> {
    let why = "created";
    try {
      await (d.api as ApiClient).call<Json>("POST", "/v1/vms", { id, vcpus: 1, migrationHandling: this.o.handling });
    } catch (e) {
      why = `refused (${e instanceof Error ? e.message.slice(0, 200) : String(e)})`;
    }
    const listed = await (d.api as ApiClient).call<Json>("GET", `/v1/vms/${id}?vcpus=0`, undefined, 2000).catch(() => null);
    if (listed) {
      // The daemon says it exists: from now on it must run somewhere (I7), durable or not.
      this.events.push({ kind: "vm", trueNs: BigInt(listed.trueNs as string), daemon: d.name, vmId: id, vcpus: 1, guestTscKhz: BigInt(listed.guestTscKhz as string), clocksource: String(listed.clocksource), migrationHandling: this.o.handling, handlingMode: "ditch" });
      this.vmIds.push(id);
      if (listed.running) this.lastSeenOn.set(id, { daemon: d.name, generation: String(listed.generation) });
    }
    return `${why}; ${listed ? "listed" : "not listed"}`;
  }

  /** Migrates `vmId` from `src` to `dst` through the control API, counting the outcome; null when the call failed. */
  migrate(src: LiveDaemon, vmId: string, dst: LiveDaemon, body: Json): Promise<Json | null> {
    return (src.api as ApiClient).call<Json>("POST", `/v1/vms/${vmId}/migrate`, { destination: dst.proxy.address, ...body }, 60_000).then(
      (rep) => {
        this.outcomes[String(rep.outcome)] = (this.outcomes[String(rep.outcome)] ?? 0) + 1;
        return rep;
      },
      () => {
        this.outcomes.crashed = (this.outcomes.crashed ?? 0) + 1;
        return null;
      },
    );
  }

  /** Every tracked VM's owners and what is still migrating, as each daemon lists them. */
  async ownership(): Promise<{ owners: { vmId: string; daemons: string[]; generation: string }[]; unresolved: string[] }> {
    const held = new Map<string, { daemons: string[]; generation: string }>(this.vmIds.map((id) => [id, { daemons: [], generation: "0" }]));
    const unresolved: string[] = [];
    for (const d of this.daemons) {
      try {
        const vms = (await (d.api as ApiClient).call<{ vms: VmRow[] }>("GET", "/v1/vms", undefined, 5000)).vms;
        for (const v of vms) {
          const h = held.get(v.id);
          if (h && v.running && v.role === "owner") {
            h.daemons.push(d.name);
            h.generation = v.generation;
          }
          if (v.migrating) unresolved.push(`${d.name}: ${v.id} still migrating (${v.migrating})`);
        }
      } catch {
        unresolved.push(`${d.name} does not answer`);
      }
    }
    return { owners: [...held].map(([vmId, h]) => ({ vmId, ...h })), unresolved };
  }

  /** Stops every daemon (after any start under way has listened or failed) and closes every proxy. */
  async stopAll(): Promise<void> {
    await Promise.all([...this.starting]);
    this.o.signal?.removeEventListener("abort", this.onAbort);
    await Promise.allSettled(
      this.daemons.map(async (d) => {
        d.stopping = true;
        await d.proc?.stop();
        await d.proxy.close();
      }),
    );
  }
}
