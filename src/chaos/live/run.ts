// One live run: the same kind of scenario as in simulation, against real daemon processes on
// loopback. Each daemon's gRPC port sits behind a fault-injecting TCP proxy and advertises the
// proxy, so every byte between the daemons (Prepare…Commit one way, Abort and Resolve the other)
// crosses a proxy the harness controls. Skew goes through the control API (PUT /v1/host/clock),
// crashes are SIGKILL and a restart with the same --data. True time is the machine's
// CLOCK_MONOTONIC, shared by every process, so the checker reads each daemon's GET /v1/history and
// measures against it directly.
//
// A killed daemon's in-memory history ring dies with it: the harness pulls the history (and which
// VMs run there) just before each kill and records the kill as a stop of those VMs.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ApiClient } from "../../cli/api.js";
import { type LocalDaemon, spawnDaemon } from "../../cli/local-pair.js";
import type { GuestSample } from "../../shared/history.js";
import { RealClock, RealScheduler } from "../../shared/platform/index.js";
import { sleep } from "../../shared/time/clock.js";
import { parseOffsetModel } from "../../shared/time/offset-model.js";
import { SeededRandom, type Random } from "../../shared/time/random.js";
import { checkHistory } from "../checker.js";
import type { ChaosEvent, ChaosHistory } from "../history.js";
import { outcomeOf, type RunOutcome } from "../run-outcome.js";
import type { ScenarioOptions } from "../sim/scenario.js";
import { FaultProxy } from "./proxy.js";

export interface LiveOptions {
  /** Node arguments that start the tscmig CLI (default: bin/tscmig.js, i.e. the build). */
  entry?: string[];
  /** Forward daemon logs to stderr. */
  echo?: boolean;
  /** Migrations per run (default 4). */
  migrations?: number;
  /** I7's bound in live runs (default 20 s). */
  recoveryBoundNs?: bigint;
}

const MS = 1_000_000n;
const S = 1_000_000_000n;
type Json = Record<string, unknown>;

const clock = new RealClock();
const sched = new RealScheduler();
const wait = (ns: bigint) => sleep(sched, ns);

const BIG_KEYS = new Set([
  "trueNs",
  "generation",
  "marker",
  "handledCount",
  "widenedByNs",
  "pauseTrueNs",
  "resumeTrueNs",
  "estimatedBlackoutNs",
  "advancedNs",
  "errorBoundNs",
  "tscAtPause",
  "tscAtResume",
  "tscIdealAtResume",
  "kvmclockAtResume",
  "kvmclockIdealAtResume",
  "guestTscKhz",
  "earliestNs",
  "latestNs",
  "realtimeNs",
]);

/** JSON from GET /v1/history (64-bit values as decimal strings) back to domain values. */
function revive(v: unknown, key = ""): unknown {
  if (Array.isArray(v)) return key === "tsc" || key === "kvmclockNs" ? v.map((x) => BigInt(x as string)) : v.map((x) => revive(x));
  if (v !== null && typeof v === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v as Json)) out[k] = revive(x, k);
    return out;
  }
  if (BIG_KEYS.has(key) && (typeof v === "string" || typeof v === "number")) return BigInt(v);
  return v;
}

interface LiveDaemon {
  name: string;
  proxy: FaultProxy;
  http: string;
  grpc: string;
  data: string;
  args: string[];
  proc: LocalDaemon | null;
  api: ApiClient | null;
}

function jepsenNs(r: Random, capNs: bigint): bigint {
  const lo = 4n * MS;
  const hi = capNs < 262_144n * MS ? capNs : 262_144n * MS;
  if (hi <= lo) return r.bigint(-capNs, capNs);
  const a = Math.log(Number(lo));
  const b = Math.log(Number(hi));
  const mag = BigInt(Math.round(Math.exp(a + (b - a) * r.float())));
  return r.chance(0.5) ? mag : -mag;
}

/** Runs one live scenario and checks it. */
export async function runLive(run: number, seed: bigint, scen: ScenarioOptions, o: LiveOptions): Promise<RunOutcome> {
  const r = new SeededRandom(seed);
  const rf = r.fork("faults");
  const allowed = new Set(scen.faults);
  const dir = mkdtempSync(join(tmpdir(), "tscmig-chaos-"));
  const events: ChaosEvent[] = [];
  const samples: GuestSample[] = [];
  const faultSites: Record<string, number> = {};
  const outcomes: Record<string, number> = {};
  const fault = (site: string, detail: string) => {
    faultSites[site] = (faultSites[site] ?? 0) + 1;
    events.push({ kind: "fault", trueNs: clock.monotonicNs(), site, detail });
  };
  const skewCap = scen.skewMaxNs < 50n * S ? scen.skewMaxNs : 50n * S; // keep live blackouts well inside the limits
  const daemons: LiveDaemon[] = [];
  let epochNs = 0n;
  const seen = new Set<string>();
  const collected = { samples, events };

  const recordHost = (d: LiveDaemon, h: Json) => {
    const model = parseOffsetModel(h.skewModel, "skewModel");
    events.push({ kind: "hostClock", trueNs: BigInt(h.trueNs as string), daemon: d.name, model, maxerrorNs: BigInt(h.maxerrorNs as string) });
    epochNs = BigInt(h.realtimeNs as string) - BigInt(h.trueNs as string) - BigInt(h.skewNs as string);
  };

  const pull = async (d: LiveDaemon) => {
    if (!d.api) return;
    try {
      const h = await d.api.call<{ samples: unknown[]; events: unknown[] }>("GET", "/v1/history?limit=100000", undefined, 10_000);
      for (const s of h.samples) {
        const g = revive(s) as GuestSample;
        const key = `s:${g.daemon}:${g.vmId}:${g.trueNs}`;
        if (!seen.has(key)) {
          seen.add(key);
          collected.samples.push(g);
        }
      }
      for (const e of h.events) {
        const ev = revive(e) as ChaosEvent;
        const key = `e:${JSON.stringify(e)}`;
        if (!seen.has(key)) {
          seen.add(key);
          collected.events.push(ev);
        }
      }
    } catch {
      // a daemon that cannot answer has nothing more to give
    }
  };

  const start = async (d: LiveDaemon) => {
    for (let attempt = 0; ; attempt++) {
      try {
        d.proc = await spawnDaemon({
          name: d.name,
          http: d.http,
          grpc: d.grpc,
          data: d.data,
          args: d.args,
          env: { TSCMIG_LOG_LEVEL: o.echo ? "info" : "warn" },
          ...(o.echo ? { echo: true } : {}),
          ...(o.entry ? { entry: o.entry } : {}),
        });
        break;
      } catch (e) {
        if (attempt >= 20) throw e;
        await wait(100n * MS); // the old process's ports may still be closing
      }
    }
    d.http = d.proc.http.replace(/^http:\/\//, "");
    d.grpc = d.proc.grpc;
    d.proxy.upstream = d.grpc;
    d.api = new ApiClient(d.proc.http);
    await d.api.waitHealthy(100, () => wait(50n * MS));
    recordHost(d, await d.api.call<Json>("GET", "/v1/host"));
  };

  const kill = async (d: LiveDaemon, why: string) => {
    if (!d.proc || !d.api) return;
    await pull(d);
    let running: { id: string; generation: string }[];
    try {
      running = (await d.api.call<{ vms: { id: string; generation: string; running: boolean; role: string }[] }>("GET", "/v1/vms", undefined, 2000)).vms.filter((v) => v.running);
    } catch {
      running = [];
    }
    const child = d.proc.child;
    const exited = new Promise<void>((ok) => (child.exitCode !== null || child.signalCode !== null ? ok() : child.once("exit", () => ok())));
    child.kill("SIGKILL");
    const t = clock.monotonicNs();
    for (const v of running) events.push({ kind: "stop", trueNs: t, daemon: d.name, vmId: v.id, generation: BigInt(v.generation), why: "crash" });
    fault("kill", `${d.name} SIGKILLed (${why})`);
    await exited;
    d.proc = null;
    d.api = null;
  };

  try {
    // Daemons, each behind its proxy, advertising the proxy.
    for (const name of ["d0", "d1"]) {
      const proxy = new FaultProxy();
      const addr = await proxy.start();
      const offset = allowed.has("skew") && r.chance(0.8) ? jepsenNs(r, skewCap) : 0n;
      const drift = allowed.has("skew") && r.chance(0.5) ? Math.round((r.float() * 2 - 1) * 500) : 0;
      const honest = r.chance(0.7);
      const abs = offset < 0n ? -offset : offset;
      const maxerror = honest ? abs + 100n * MS : 100_000n;
      const args = ["--advertise", addr, "--skew-offset-ns", `${offset}ns`, "--skew-drift-ppm", String(drift), "--host-maxerror-ns", `${maxerror}ns`];
      daemons.push({ name, proxy, http: "127.0.0.1:0", grpc: "127.0.0.1:0", data: join(dir, name), args, proc: null, api: null });
    }
    await Promise.all(daemons.map((d) => start(d)));

    // One VM, a few migrations back and forth with a fault each.
    const vcpus = r.int(1, Math.max(1, scen.vcpusMax));
    const handlingMode = scen.handlingMode ?? r.pick(["ditch", "widen"] as const);
    const clocksource = scen.clocksource ?? r.pick(["kvm-clock", "tsc"] as const);
    const home = daemons[0] as LiveDaemon;
    const created = await (home.api as ApiClient).call<Json>("POST", "/v1/vms", { id: "vm0", vcpus, clocksource, migrationHandling: scen.handling, handlingMode });
    events.push({
      kind: "vm",
      trueNs: BigInt(created.trueNs as string),
      daemon: home.name,
      vmId: "vm0",
      vcpus,
      guestTscKhz: BigInt(created.guestTscKhz as string),
      clocksource,
      migrationHandling: scen.handling,
      handlingMode,
    });
    const kinds: string[] = [];
    if (allowed.has("delay") || allowed.has("reorder")) kinds.push("delay");
    if (allowed.has("partition")) kinds.push("stall");
    if (allowed.has("reset")) kinds.push("reset");
    if (allowed.has("kill") || allowed.has("crash")) kinds.push("kill-source", "kill-destination");
    if (allowed.has("skew")) kinds.push("skew-step");
    let owner = 0;
    const n = o.migrations ?? 4;
    for (let m = 0; m < n; m++) {
      await wait(scen.sampleIntervalNs * 3n + r.bigint(0n, 300n * MS));
      // Find where the VM runs now (a kill may have rolled it back).
      for (const [i, d] of daemons.entries()) {
        try {
          const v = await d.api?.call<Json>("GET", "/v1/vms/vm0?vcpus=0", undefined, 2000);
          if (v?.running) owner = i;
        } catch {
          // not there
        }
      }
      const src = daemons[owner] as LiveDaemon;
      const dst = daemons[1 - owner] as LiveDaemon;
      if (!src.api || !dst.api) continue;
      const policy = r.pick(scen.policies);
      const estimator = r.pick(scen.estimators);
      const doorbell = scen.doorbell ?? r.chance(0.5);
      const kind = kinds.length > 0 && rf.chance(0.8) ? rf.pick(kinds) : "none";
      const atNs = rf.bigint(0n, 30n * MS);
      if (kind === "skew-step") {
        const step = jepsenNs(rf, skewCap / 4n > 4n * MS ? skewCap / 4n : 4n * MS);
        const t = rf.pick(daemons);
        if (t.api) {
          recordHost(t, await t.api.call<Json>("PUT", "/v1/host/clock", { stepNs: step.toString() }));
          fault("skew.step", `${t.name} realtime stepped ${step} ns`);
        }
      }
      if (kind === "delay") {
        dst.proxy.delayNs = rf.bigint(MS, 20n * MS);
        fault("net.delay", `${src.name}→${dst.name} +${dst.proxy.delayNs} ns per chunk`);
      }
      events.push({ kind: "migrateStart", trueNs: clock.monotonicNs(), vmId: "vm0", source: src.name, destination: dst.name, policy, estimator, doorbell });
      const call = src.api.call<Json>("POST", "/v1/vms/vm0/migrate", { destination: dst.proxy.address, policy, estimator, doorbell }, 60_000).then(
        (rep) => {
          outcomes[String(rep.outcome)] = (outcomes[String(rep.outcome)] ?? 0) + 1;
          return rep;
        },
        () => {
          outcomes.crashed = (outcomes.crashed ?? 0) + 1;
          return null;
        },
      );
      const nemesis = (async () => {
        if (kind === "none" || kind === "delay" || kind === "skew-step") return;
        await wait(atNs);
        if (kind === "stall") {
          const p = rf.pick([dst.proxy, src.proxy]);
          p.stall();
          fault("net.partition", `proxy ${p.address} stalled`);
          await wait(rf.bigint(100n * MS, 1_500n * MS));
          p.release();
        } else if (kind === "reset") {
          dst.proxy.reset();
          fault("net.reset", `${src.name}→${dst.name} connections reset`);
        } else {
          const victim = kind === "kill-source" ? src : dst;
          await kill(victim, kind);
          await wait(rf.bigint(100n * MS, 1_000n * MS));
          await start(victim);
          events.push({ kind: "restart", trueNs: clock.monotonicNs(), daemon: victim.name, incarnation: 2 });
        }
      })();
      const rep = await call;
      await nemesis;
      for (const d of daemons) d.proxy.heal();
      if (rep?.outcome === "committed") owner = 1 - owner;
    }

    // Heal and give recovery its stated bound.
    for (const d of daemons) {
      d.proxy.heal();
      if (!d.proc) await start(d);
    }
    const bound = o.recoveryBoundNs ?? 20n * S;
    const healAt = clock.monotonicNs();
    events.push({ kind: "heal", trueNs: healAt, recoveryBoundNs: bound });
    let owners: { vmId: string; daemons: string[]; generation: string }[] = [];
    let unresolved: string[] = [];
    await wait(scen.sampleIntervalNs * 3n);
    for (;;) {
      const held: string[] = [];
      let generation = "0";
      unresolved = [];
      for (const d of daemons) {
        try {
          const vms = (await (d.api as ApiClient).call<{ vms: { id: string; running: boolean; role: string; generation: string; migrating: string | null }[] }>("GET", "/v1/vms", undefined, 5000)).vms;
          for (const v of vms) {
            if (v.id === "vm0" && v.running && v.role === "owner") {
              held.push(d.name);
              generation = v.generation;
            }
            if (v.migrating) unresolved.push(`${d.name}: ${v.id} still migrating (${v.migrating})`);
          }
        } catch {
          unresolved.push(`${d.name} does not answer`);
        }
      }
      owners = [{ vmId: "vm0", daemons: held, generation }];
      if ((held.length === 1 && unresolved.length === 0) || clock.monotonicNs() - healAt >= bound) break;
      await wait(250n * MS);
    }
    events.push({ kind: "final", trueNs: clock.monotonicNs(), owners, unresolved });
    for (const d of daemons) await pull(d);
  } catch (e) {
    events.push({ kind: "error", trueNs: clock.monotonicNs(), daemon: "harness", message: `live run failed: ${e instanceof Error ? e.message : String(e)}` });
  } finally {
    await Promise.allSettled(daemons.map(async (d) => {
      await d.proc?.stop();
      await d.proxy.close();
    }));
    rmSync(dir, { recursive: true, force: true });
  }

  const history: ChaosHistory = {
    meta: {
      mode: "live",
      seed,
      epochNs,
      daemons: daemons.map((d) => ({ name: d.name, tscKhz: 2_000_000n, crystalSlopePpm: 0 })),
      ntpSource: "host",
      sampleIntervalNs: 100_000_000n,
      scenario: { daemons: daemons.length, handling: scen.handling },
    },
    samples: samples.sort((a, b) => (a.trueNs < b.trueNs ? -1 : a.trueNs > b.trueNs ? 1 : 0)),
    events: events.sort((a, b) => (a.trueNs < b.trueNs ? -1 : a.trueNs > b.trueNs ? 1 : 0)),
  };
  const check = checkHistory(history);
  const simNs = history.events.length > 0 ? (history.events[history.events.length - 1] as ChaosEvent).trueNs - (history.events[0] as ChaosEvent).trueNs : 0n;
  const used = [...new Set(Object.keys(faultSites).map((k) => k.replace(/^net\./, "").replace(/^skew\..*/, "skew")))];
  return outcomeOf(run, seed, history, check, { events: events.length, simNs, faultSites, outcomes, active: used }, 2);
}
