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
import { ApiClient } from "../../client/api.js";
import { type LocalDaemon, spawnDaemon } from "../../client/local-daemons.js";
import type { GuestSample } from "../../shared/history.js";
import { RealClock, RealScheduler } from "../../shared/platform/index.js";
import { sleep } from "../../shared/time/clock.js";
import { maxAbsOffsetNs, parseOffsetModel, ZERO_MODEL } from "../../shared/time/offset-model.js";
import { SeededRandom } from "../../shared/time/random.js";
import type { SkewUpdate } from "../../shared/time/skew.js";
import { checkHistory } from "../checker.js";
import type { ChaosEvent, ChaosHistory } from "../history.js";
import { daemonSkewSettings, drawSkewModel, jepsenBumpNs, LIVE_SKEW_PARTS, skewUpdateBody } from "../host-skew.js";
import { outcomeOf, type RunOutcome } from "../run-outcome.js";
import type { ScenarioOptions } from "../sim/scenario.js";
import { FaultProxy } from "./proxy.js";
import { floodPrepares, foreignAbort, migrateIn, portFree, type SmallDisk, smallDisk, takePort } from "./operational.js";

export interface LiveOptions {
  /** Node arguments that start the tscmig CLI (default: bin/tscmig.js, i.e. the build). */
  entry?: string[];
  /** Forward daemon logs to stderr. */
  echo?: boolean;
  /** Migrations per run (default 4). */
  migrations?: number;
  /** I7's bound in live runs (default 20 s). */
  recoveryBoundNs?: bigint;
  /** Hands each run's history over before it is checked (tests, debugging). */
  onHistory?: (h: ChaosHistory) => void;
}

const MS = 1_000_000n;
const S = 1_000_000_000n;
type Json = Record<string, unknown>;

const clock = new RealClock();
const sched = new RealScheduler();
const wait = (ns: bigint) => sleep(sched, ns);

const BIG_KEYS = new Set([
  "trueSpanNs",
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
  /** The wander and jitter of its skew, set through the control API after every start. */
  skewUpdate?: SkewUpdate | null;
  proc: LocalDaemon | null;
  api: ApiClient | null;
  /** The harness is stopping or killing it (an exit now is expected). */
  stopping: boolean;
}

/** Reasons a kind was skipped on this machine, printed once per process. */
const skipsPrinted = new Set<string>();

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

  /** Where the harness last saw each VM run (a daemon that dies on its own takes those with it). */
  const lastSeenOn = new Map<string, { daemon: string; generation: string }>();
  const vmIds = ["vm0"];
  const vcpusOf = new Map<string, number>();
  /** A daemon exited without the harness asking: that is a crash (E), and the VMs it ran stop there. */
  const watchExit = (d: LiveDaemon, p: LocalDaemon) =>
    p.child.once("exit", (code, signal) => {
      if (d.stopping || d.proc !== p) return;
      const t = clock.monotonicNs();
      for (const [vmId, seen] of lastSeenOn) if (seen.daemon === d.name) events.push({ kind: "stop", trueNs: t, daemon: d.name, vmId, generation: BigInt(seen.generation), why: "crash" });
      events.push({ kind: "error", trueNs: t, daemon: d.name, message: `${d.name} exited on its own (code ${code}, signal ${signal}): ${p.logs.slice(-3).join(" | ").slice(0, 400)}` });
      d.proc = null;
      d.api = null;
    });
  const start = async (d: LiveDaemon, env: Record<string, string> = {}) => {
    d.stopping = false;
    for (let attempt = 0; ; attempt++) {
      try {
        d.proc = await spawnDaemon({
          name: d.name,
          http: d.http,
          grpc: d.grpc,
          data: d.data,
          args: d.args,
          readyTimeoutNs: 15n * S,
          env: { TSCMIG_LOG_LEVEL: o.echo ? "info" : "warn", ...env },
          ...(o.echo ? { echo: true } : {}),
          ...(o.entry ? { entry: o.entry } : {}),
        });
        break;
      } catch (e) {
        if (attempt >= 20) throw e;
        await wait(100n * MS); // the old process's ports may still be closing
      }
    }
    watchExit(d, d.proc);
    d.http = d.proc.http.replace(/^http:\/\//, "");
    d.grpc = d.proc.grpc;
    d.proxy.upstream = d.grpc;
    d.api = new ApiClient(d.proc.http);
    await d.api.waitHealthy(100, () => wait(50n * MS));
    recordHost(d, await d.api.call<Json>("GET", "/v1/host"));
    if (d.skewUpdate) recordHost(d, await d.api.call<Json>("PUT", "/v1/host/clock", skewUpdateBody(d.skewUpdate)));
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
    d.stopping = true;
    child.kill("SIGKILL");
    const t = clock.monotonicNs();
    for (const v of running) events.push({ kind: "stop", trueNs: t, daemon: d.name, vmId: v.id, generation: BigInt(v.generation), why: "crash" });
    fault("kill", `${d.name} SIGKILLed (${why})`);
    await exited;
    d.proc = null;
    d.api = null;
  };

  // ---- issue 9's kinds (collide, hostile, disk-full, port-taken) ----------------------------------
  const r9 = r.fork("issue9");
  let disk: SmallDisk | null = null;
  const skipped = (reason: string) => {
    if (!skipsPrinted.has(reason)) process.stderr.write(`tscmig chaos live: ${reason}\n`);
    skipsPrinted.add(reason);
  };
  /** Asks every daemon where each VM runs now (lastSeenOn). */
  const locate = async () => {
    for (const d of daemons) {
      const vms = await d.api?.call<{ vms: { id: string; running: boolean; role: string; generation: string }[] }>("GET", "/v1/vms", undefined, 2000).catch(() => null);
      for (const v of vms?.vms ?? []) if (v.running && v.role === "owner") lastSeenOn.set(v.id, { daemon: d.name, generation: v.generation });
    }
  };
  const restartExited = async () => {
    for (const d of daemons)
      if (!d.proc) {
        await start(d);
        events.push({ kind: "restart", trueNs: clock.monotonicNs(), daemon: d.name, incarnation: 2 });
      }
  };
  /** Creates a VM the harness tracks for I7; null when the daemon refused (and does not list it). */
  const createVm = async (d: LiveDaemon, id: string): Promise<string> => {
    let why = "created";
    try {
      await (d.api as ApiClient).call<Json>("POST", "/v1/vms", { id, vcpus: 1, migrationHandling: scen.handling });
    } catch (e) {
      why = `refused (${e instanceof Error ? e.message.slice(0, 200) : String(e)})`;
    }
    const listed = await (d.api as ApiClient).call<Json>("GET", `/v1/vms/${id}?vcpus=0`, undefined, 2000).catch(() => null);
    if (listed) {
      // The daemon says it exists: from now on it must run somewhere (I7), durable or not.
      events.push({ kind: "vm", trueNs: BigInt(listed.trueNs as string), daemon: d.name, vmId: id, vcpus: 1, guestTscKhz: BigInt(listed.guestTscKhz as string), clocksource: String(listed.clocksource), migrationHandling: scen.handling, handlingMode: "ditch" });
      vmIds.push(id);
      if (listed.running) lastSeenOn.set(id, { daemon: d.name, generation: String(listed.generation) });
    }
    return `${why}; ${listed ? "listed" : "not listed"}`;
  };
  /** d1's small disk fills; a VM create is tried on it; the migration that follows runs on a full disk. */
  const diskFullWindow = async (d: LiveDaemon, m: number) => {
    if (!disk?.ok) return;
    disk.fill();
    fault("disk-full", `${d.name}: its data directory's filesystem is full`);
    if (d.api) fault("disk-full.create", `${d.name}: VM df${m} ${await createVm(d, `df${m}`)}`);
  };
  /** Restarts `d` with one of its ports taken: it must exit non-zero at once and release everything. */
  const startWithPortTaken = async (d: LiveDaemon, which: "http" | "grpc") => {
    const taken = which === "http" ? d.http : d.grpc;
    const other = which === "http" ? d.grpc : d.http;
    const hold = await takePort(taken).catch(() => null);
    if (!hold) return;
    fault("port-taken", `${d.name}: its ${which} port ${taken} is taken as it restarts`);
    const t0 = clock.monotonicNs();
    try {
      const p = await spawnDaemon({ name: d.name, http: d.http, grpc: d.grpc, data: d.data, args: d.args, readyTimeoutNs: 15n * S, ...(o.entry ? { entry: o.entry } : {}) });
      events.push({ kind: "error", trueNs: clock.monotonicNs(), daemon: d.name, message: `${d.name} reported listening although its ${which} port ${taken} was taken` });
      await p.stop();
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      const code = /exited \((\w+)\)/.exec(msg)?.[1];
      const ms = (clock.monotonicNs() - t0) / MS;
      if (!code) events.push({ kind: "error", trueNs: clock.monotonicNs(), daemon: d.name, message: `${d.name} started with its ${which} port taken neither exited nor listened within 15 s (killed): a failed start must exit at once and release its ports and journal lock` });
      else if (code === "0") events.push({ kind: "error", trueNs: clock.monotonicNs(), daemon: d.name, message: `${d.name} started with its ${which} port taken exited with status 0: a failed start must exit non-zero` });
      else if (!(await portFree(other))) events.push({ kind: "error", trueNs: clock.monotonicNs(), daemon: d.name, message: `${d.name} exited (${code}) with its ${which} port taken but left ${other} bound` });
      else fault("port-taken.exit", `${d.name} exited (${code}) in ${ms} ms and released everything`);
    } finally {
      await hold.release();
    }
  };
  /** Two sources migrate their own VMs to one destination under one migration id (d2 crashes first, or they race). */
  const collide = async () => {
    const d2 = daemons[2] as LiveDaemon;
    const other = r9.chance(0.5) ? 0 : 1;
    const s2 = daemons[other] as LiveDaemon;
    const dst = daemons[1 - other] as LiveDaemon;
    if (!d2.api || !s2.api || !dst.api) return;
    const ids = [`c${run}a`, `c${run}b`];
    await createVm(d2, ids[0] as string);
    await createVm(s2, ids[1] as string);
    await wait(scen.sampleIntervalNs * 3n);
    const migrationId = `collide-${run}`;
    const crashFirst = r9.chance(0.5);
    fault("collide", `${d2.name}, ${s2.name} → ${dst.name} with migration id ${migrationId}${crashFirst ? `; ${d2.name} crashes at crash.source.afterCommitJournal` : ""}`);
    const migrate = (src: LiveDaemon, vmId: string) => {
      events.push({ kind: "migrateStart", trueNs: clock.monotonicNs(), vmId, source: src.name, destination: dst.name, policy: "advance", estimator: "one-sided", doorbell: false });
      return (src.api as ApiClient).call<Json>("POST", `/v1/vms/${vmId}/migrate`, { destination: dst.proxy.address, migrationId }, 60_000).then(
        (rep) => ((outcomes[String(rep.outcome)] = (outcomes[String(rep.outcome)] ?? 0) + 1), rep),
        () => ((outcomes.crashed = (outcomes.crashed ?? 0) + 1), null),
      );
    };
    if (crashFirst) {
      await kill(d2, "collide: restart with crash.source.afterCommitJournal armed");
      await start(d2, { TSCMIG_FAULTS: "crash.source.afterCommitJournal" });
      events.push({ kind: "restart", trueNs: clock.monotonicNs(), daemon: d2.name, incarnation: 2 });
      const p = d2.proc as LocalDaemon;
      d2.stopping = true; // it is meant to die at the site
      const died = new Promise<void>((ok) => (p.child.exitCode !== null ? ok() : p.child.once("exit", () => ok())));
      const first = migrate(d2, ids[0] as string);
      await Promise.race([first, died]);
      await died;
      const t = clock.monotonicNs();
      events.push({ kind: "stop", trueNs: t, daemon: d2.name, vmId: ids[0] as string, generation: 0n, why: "crash" });
      fault("crash.source.afterCommitJournal", `${d2.name} died at the site`);
      d2.proc = null;
      d2.api = null;
      await wait(r9.bigint(0n, 40n * MS));
      await migrate(s2, ids[1] as string);
      await start(d2);
      events.push({ kind: "restart", trueNs: clock.monotonicNs(), daemon: d2.name, incarnation: 3 });
    } else {
      const first = migrate(d2, ids[0] as string);
      await wait(r9.bigint(0n, 40n * MS));
      await Promise.all([first, migrate(s2, ids[1] as string)]);
    }
  };
  /** An outsider migrates a crafted snapshot of vm0, which runs elsewhere, onto the other daemon. */
  const outsiderMigrateIn = async () => {
    const seen = lastSeenOn.get("vm0");
    const target = daemons.slice(0, 2).find((d) => d.name !== seen?.daemon && d.proc);
    if (!seen || !target) return;
    const answer = await migrateIn(target.grpc, { vmId: "vm0", generation: BigInt(seen.generation), vcpus: vcpusOf.get("vm0") ?? 1, guestTscKhz: 2_000_000n }, `x${run}`);
    fault("hostile.migrate-in", `a crafted snapshot of vm0 (running on ${seen.daemon} at generation ${seen.generation}) migrated into ${target.name} over gRPC, without credentials: ${answer}`);
    // If the daemon took it, it runs the VM too: the harness sees it there from now on.
    await wait(scen.sampleIntervalNs * 3n);
  };
  /** A flood of Prepares at the daemon vm0 is not on, through real gRPC; returns that daemon. */
  const flood = async (): Promise<LiveDaemon | null> => {
    const on = lastSeenOn.get("vm0")?.daemon;
    const target = daemons.slice(0, 2).find((d) => d.name !== on && d.proc);
    if (!target) return null;
    const count = 260 + r9.int(0, 40);
    const f = await floodPrepares(target.grpc, count, 2_000_000n, `x${run}`, peerToken);
    fault("hostile.flood", `${count} Prepares at ${target.name} over gRPC, never followed up, with the deployment's peer token: ${f.accepted} accepted, ${f.refused} refused${f.lastRefusal ? ` (${f.lastRefusal.slice(0, 160)})` : ""}`);
    return target;
  };
  /** After healing, vm0 migrated to the flooded daemon must commit within the recovery bound. */
  const liveness = async (target: LiveDaemon, boundNs: bigint) => {
    const t0 = clock.monotonicNs();
    let attempts = 0;
    let last = "no attempt";
    while (clock.monotonicNs() - t0 < boundNs - 2n * S) {
      await wait(S);
      await locate();
      const src = daemons.find((d) => d !== target && lastSeenOn.get("vm0")?.daemon === d.name);
      if (!src?.api || !target.api) {
        last = "vm0 is not where the harness last saw it";
        break;
      }
      attempts++;
      events.push({ kind: "migrateStart", trueNs: clock.monotonicNs(), vmId: "vm0", source: src.name, destination: target.name, policy: "advance", estimator: "one-sided", doorbell: false });
      const rep = await src.api.call<Json>("POST", "/v1/vms/vm0/migrate", { destination: target.proxy.address }, 60_000).catch((e: unknown) => ({ outcome: "error", error: { message: e instanceof Error ? e.message : String(e) } }) as Json);
      if (rep.outcome === "committed") {
        events.push({ kind: "liveness", trueNs: clock.monotonicNs(), what: `migrate vm0 to ${target.name} after a Prepare flood`, ok: true, attempts, detail: "committed" });
        return;
      }
      last = `${String(rep.outcome)}: ${JSON.stringify(rep.error ?? {}).slice(0, 200)}`;
    }
    events.push({ kind: "liveness", trueNs: clock.monotonicNs(), what: `migrate vm0 to ${target.name} after a Prepare flood`, ok: false, attempts, detail: `no commit within the recovery bound; last attempt: ${last}` });
  };

  // The deployment's peer token: every daemon of the run requires it on its data plane, so an outsider
  // (no token) is refused by the transport, and only a "compromised peer" (token, no migration key)
  // gets as far as the protocol. Drawn from its own stream: the rest of the run draws what it did.
  const keyRand = r.fork("peer-token");
  const peerToken = `live-${run}-${keyRand.u32().toString(16)}${keyRand.u32().toString(16)}${keyRand.u32().toString(16)}`;
  try {
    // Daemons, each behind its proxy, advertising the proxy.
    for (const name of ["d0", "d1"]) {
      const proxy = new FaultProxy();
      const addr = await proxy.start();
      const skew = allowed.has("skew") ? drawSkewModel(r, { capNs: skewCap, horizonNs: 0n /* no steps or strobes */, parts: LIVE_SKEW_PARTS }) : ZERO_MODEL;
      const settings = daemonSkewSettings(skew);
      // An honest host claims its offset, wander and jitter with room for its drift over a run
      // (500 ppm for a minute is 30 ms); a lying one claims 100 µs whatever its skew.
      const maxerror = r.chance(0.7) ? maxAbsOffsetNs(skew, 0n) + 100n * MS : 100_000n;
      const args = ["--advertise", addr, "--peer-token", peerToken, "--skew-offset-ns", `${settings.offsetNs}ns`, "--skew-drift-ppm", String(settings.driftPpm), "--host-maxerror-ns", `${maxerror}ns`];
      daemons.push({ name, proxy, http: "127.0.0.1:0", grpc: "127.0.0.1:0", data: join(dir, name), args, skewUpdate: settings.update, proc: null, api: null, stopping: false });
    }
    // Issue 9's kinds draw from their own stream: a run without them draws what it always did.
    if (allowed.has("collide")) {
      const proxy = new FaultProxy();
      const addr = await proxy.start();
      daemons.push({ name: "d2", proxy, http: "127.0.0.1:0", grpc: "127.0.0.1:0", data: join(dir, "d2"), args: ["--advertise", addr, "--peer-token", peerToken], proc: null, api: null, stopping: false });
    }
    if (allowed.has("disk-full")) {
      disk = smallDisk((daemons[1] as LiveDaemon).data, 8 * 1024 * 1024);
      if (!disk.ok) skipped(disk.reason);
    }
    await Promise.all(daemons.map((d) => start(d)));

    // One VM, a few migrations back and forth with a fault each.
    const vcpus = r.int(1, Math.max(1, scen.vcpusMax));
    const handlingMode = scen.handlingMode ?? r.pick(["ditch", "widen"] as const);
    const clocksource = scen.clocksource ?? r.pick(["kvm-clock", "tsc"] as const);
    const home = daemons[0] as LiveDaemon;
    const created = await (home.api as ApiClient).call<Json>("POST", "/v1/vms", { id: "vm0", vcpus, clocksource, migrationHandling: scen.handling, handlingMode });
    vcpusOf.set("vm0", vcpus);
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
    if (allowed.has("kill") || allowed.has("crash") || allowed.has("port-taken")) kinds.push("kill-source", "kill-destination");
    if (allowed.has("skew")) kinds.push("skew-step");
    if (allowed.has("hostile")) kinds.push("foreign-abort");
    if (disk?.ok) kinds.push("disk-full");
    let owner = 0;
    const n = o.migrations ?? 4;
    for (let m = 0; m < n; m++) {
      await wait(scen.sampleIntervalNs * 3n + r.bigint(0n, 300n * MS));
      await restartExited(); // a supervisor restarts what died on its own
      // Find where the VM runs now (a kill may have rolled it back).
      for (const [i, d] of daemons.entries()) {
        try {
          const v = await d.api?.call<Json>("GET", "/v1/vms/vm0?vcpus=0", undefined, 2000);
          if (v?.running) {
            owner = i;
            lastSeenOn.set("vm0", { daemon: d.name, generation: String(v.generation) });
          }
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
        const step = jepsenBumpNs(rf, skewCap / 4n > 4n * MS ? skewCap / 4n : 4n * MS);
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
      const migrationId = `live-${run}-${m}`;
      const generation = BigInt(lastSeenOn.get("vm0")?.generation ?? "0");
      if (kind === "disk-full") await diskFullWindow(dst === daemons[1] ? dst : src, m);
      events.push({ kind: "migrateStart", trueNs: clock.monotonicNs(), vmId: "vm0", source: src.name, destination: dst.name, policy, estimator, doorbell });
      const call = src.api.call<Json>("POST", "/v1/vms/vm0/migrate", { destination: dst.proxy.address, policy, estimator, doorbell, migrationId }, 60_000).then(
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
        if (kind === "foreign-abort") {
          const answer = await foreignAbort(dst.grpc, { migrationId, vmId: "vm0", generation: generation + 1n, reason: "hostile", sourceName: src.name, sourceKey: "0f".repeat(16) }, peerToken);
          fault("hostile.abort", `foreign Abort of ${migrationId} (vm0@${generation + 1n}) to ${dst.name} over gRPC, with the peer token but not the migration's key: ${answer}`);
        } else if (kind === "disk-full") {
          await wait(rf.bigint(300n * MS, 2n * S));
          const full = daemons[1] as LiveDaemon;
          if (disk?.ok) disk.free();
          fault("disk-full.end", `${full.name}: space is back`);
          if (r9.chance(0.5)) {
            // The operator restarts it: what it reported but never made durable is gone now.
            await kill(full, "disk-full: operator restart");
            await start(full);
            events.push({ kind: "restart", trueNs: clock.monotonicNs(), daemon: full.name, incarnation: 2 });
          }
        } else if (kind === "stall") {
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
          if (allowed.has("port-taken") && r9.chance(0.5)) await startWithPortTaken(victim, r9.chance(0.5) ? "http" : "grpc");
          await start(victim);
          events.push({ kind: "restart", trueNs: clock.monotonicNs(), daemon: victim.name, incarnation: 2 });
        }
      })();
      const rep = await call;
      await nemesis;
      for (const d of daemons) d.proxy.heal();
      if (rep?.outcome === "committed") owner = 1 - owner;
    }

    await locate();
    if (allowed.has("collide")) await collide();
    await locate();
    // Each its own stream: adding one never shifts what another draws.
    if (allowed.has("hostile") && r.fork("issue9:migrate-in").chance(0.5)) await outsiderMigrateIn();
    await locate();
    const flooded = allowed.has("hostile") && r.fork("issue9:flood").chance(0.6) ? await flood() : null;

    // Heal and give recovery its stated bound.
    for (const d of daemons) {
      d.proxy.heal();
      if (!d.proc) await start(d);
    }
    if (flooded) await liveness(flooded, o.recoveryBoundNs ?? 20n * S);
    const bound = o.recoveryBoundNs ?? 20n * S;
    const healAt = clock.monotonicNs();
    events.push({ kind: "heal", trueNs: healAt, recoveryBoundNs: bound });
    let owners: { vmId: string; daemons: string[]; generation: string }[] = [];
    let unresolved: string[] = [];
    await wait(scen.sampleIntervalNs * 3n);
    for (;;) {
      const held = new Map<string, { daemons: string[]; generation: string }>(vmIds.map((id) => [id, { daemons: [], generation: "0" }]));
      unresolved = [];
      for (const d of daemons) {
        try {
          const vms = (await (d.api as ApiClient).call<{ vms: { id: string; running: boolean; role: string; generation: string; migrating: string | null }[] }>("GET", "/v1/vms", undefined, 5000)).vms;
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
      owners = [...held].map(([vmId, h]) => ({ vmId, ...h }));
      if ((owners.every((x) => x.daemons.length === 1) && unresolved.length === 0) || clock.monotonicNs() - healAt >= bound) break;
      await wait(250n * MS);
    }
    events.push({ kind: "final", trueNs: clock.monotonicNs(), owners, unresolved });
    for (const d of daemons) await pull(d);
  } catch (e) {
    events.push({ kind: "error", trueNs: clock.monotonicNs(), daemon: "harness", message: `live run failed: ${e instanceof Error ? e.message : String(e)}` });
  } finally {
    await Promise.allSettled(daemons.map(async (d) => {
      d.stopping = true;
      await d.proc?.stop();
      await d.proxy.close();
    }));
    if (disk?.ok) disk.unmount();
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
  o.onHistory?.(history);
  const check = checkHistory(history);
  const simNs = history.events.length > 0 ? (history.events[history.events.length - 1] as ChaosEvent).trueNs - (history.events[0] as ChaosEvent).trueNs : 0n;
  const used = [...new Set(Object.keys(faultSites).map((k) => k.replace(/^net\./, "").replace(/^skew\..*/, "skew").replace(/^(hostile|disk-full|collide|port-taken)\..*$/, "$1")))];
  return outcomeOf(run, seed, history, check, { events: events.length, simNs, faultSites, outcomes, active: used }, 2);
}
