// One live run: the same kind of scenario as in simulation, against real daemon processes on
// loopback (cluster.ts: each behind a fault-injecting TCP proxy, supervised, its history pulled).
// Skew goes through the daemons' start flags and the control API (PUT /v1/host/clock), crashes are
// SIGKILL and a restart with the same --data. One VM migrates back and forth a few times with one
// fault each; then the operational and hostile kinds (issue9.ts), healing, and the final ownership I7 checks.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ApiClient } from "../../client/api.js";
import { maxAbsOffsetNs, ZERO_MODEL } from "../../shared/time/offset-model.js";
import { type Random, SeededRandom } from "../../shared/time/random.js";
import { checkHistory } from "../checker.js";
import type { ChaosEvent, ChaosHistory } from "../history.js";
import { daemonSkewSettings, drawSkewModel, jepsenBumpNs, LIVE_SKEW_PARTS } from "../host-skew.js";
import { outcomeOf, type RunOutcome } from "../run-outcome.js";
import { SWITCHOVER_MODES, type SwitchoverMode } from "../../shared/migration/messages.js";
import type { ScenarioOptions } from "../sim/scenario.js";
import { trueEpochNs } from "../../shared/platform/index.js";
import { clock, HarnessError, type Json, LiveCluster, type LiveDaemon, MS, S, wait } from "./cluster.js";
import { collide, diskFullEnd, diskFullWindow, flood, type Issue9Context, liveness, outsiderMigrateIn, startWithPortTaken } from "./issue9.js";
import { foreignAbort, smallDisk } from "./operational.js";
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
  /** Hands each run's history over before it is checked (tests, debugging). */
  onHistory?: (h: ChaosHistory) => void;
  /** Wall-clock instant of true time 0 for every daemon of every run (default: this process's, measured once). */
  trueEpochNs?: bigint;
  /** Ends the run: every daemon is SIGKILLed at once and none starts again (a test's teardown). */
  signal?: AbortSignal;
  /** The daemons' hypervisor backend (`tscmig daemon --backend`; default emulated). */
  backend?: "emulated" | "kvm";
}

/** Reasons a kind was skipped on this machine, printed once per process. */
const skipsPrinted = new Set<string>();

function skipped(reason: string): void {
  if (!skipsPrinted.has(reason)) process.stderr.write(`tscmig chaos live: ${reason}\n`);
  skipsPrinted.add(reason);
}

/** The fault one migration of the main loop carries (at most one each). */
type MigrationFault = "none" | "delay" | "stall" | "reset" | "kill-source" | "kill-destination" | "skew-step" | "foreign-abort" | "disk-full";

/** Runs one live scenario and checks it. */
export async function runLive(run: number, seed: bigint, scen: ScenarioOptions, o: LiveOptions): Promise<RunOutcome> {
  return new LiveRun(run, seed, scen, o).run();
}

class LiveRun {
  private readonly r: SeededRandom;
  /** The faults' own stream, so the scenario draws what it did whether or not faults are on. */
  private readonly rf: Random;
  /** The switchover mode of each migration, from its own stream (the other draws stay as they were). */
  private readonly rs: Random;
  /** Per switchover mode: "mode:started" and "mode:outcome" → count, as the simulator counts them. */
  private readonly switchovers: Record<string, number> = {};
  private readonly allowed: Set<string>;
  private readonly c: LiveCluster;
  private readonly x: Issue9Context;
  /** Live blackouts stay well inside the limits: skew is capped at 50 s. */
  private readonly skewCapNs: bigint;
  private readonly dir = mkdtempSync(join(tmpdir(), "tscmig-chaos-"));
  /** Which of d0 and d1 runs vm0. */
  private owner = 0;

  constructor(
    private readonly runIndex: number,
    private readonly seed: bigint,
    private readonly scen: ScenarioOptions,
    private readonly o: LiveOptions,
  ) {
    this.r = new SeededRandom(seed);
    this.rf = this.r.fork("faults");
    this.rs = this.r.fork("switchover");
    this.allowed = new Set(scen.faults);
    this.c = new LiveCluster({
      ...(o.entry ? { entry: o.entry } : {}),
      ...(o.echo ? { echo: true } : {}),
      ...(o.signal ? { signal: o.signal } : {}),
      handling: scen.handling,
      trueEpochNs: o.trueEpochNs ?? trueEpochNs(),
    });
    this.skewCapNs = scen.skewMaxNs < 50n * S ? scen.skewMaxNs : 50n * S;
    this.x = { c: this.c, run: runIndex, rand: this.r.fork("issue9"), sampleIntervalNs: scen.sampleIntervalNs, peerToken: this.peerToken(), disk: null };
  }

  async run(): Promise<RunOutcome> {
    try {
      await this.startDaemons();
      await this.createVm0();
      const kinds = this.migrationFaults();
      for (let m = 0; m < (this.o.migrations ?? 4); m++) await this.migrateOnce(m, kinds);
      const flooded = await this.issue9Kinds();
      await this.healAndSettle(flooded);
      for (const d of this.c.daemons) await this.c.pull(d);
    } catch (e) {
      if (!(e instanceof HarnessError)) this.c.events.push({ kind: "error", trueNs: clock.monotonicNs(), daemon: "harness", message: `live run failed: ${e instanceof Error ? e.message : String(e)}` });
    } finally {
      await this.c.stopAll();
      if (this.x.disk?.ok) this.x.disk.unmount();
      rmSync(this.dir, { recursive: true, force: true });
    }
    return this.checked();
  }

  /**
   * The deployment's peer token: every daemon of the run requires it on its data plane, so an
   * outsider (no token) is refused by the transport, and only a "compromised peer" (token, no
   * migration key) gets as far as the protocol. Drawn from its own stream.
   */
  private peerToken(): string {
    const k = this.r.fork("peer-token");
    return `live-${this.runIndex}-${k.u32().toString(16)}${k.u32().toString(16)}${k.u32().toString(16)}`;
  }

  /** d0 and d1 with their skew (d2 too for collide), each behind its proxy and advertising it; d1's small disk for disk-full. */
  private async startDaemons(): Promise<void> {
    const c = this.c;
    for (const name of ["d0", "d1"]) c.daemons.push(await this.skewedDaemon(name));
    if (this.allowed.has("collide")) {
      const proxy = new FaultProxy();
      const addr = await proxy.start();
      c.daemons.push({ name: "d2", proxy, http: "127.0.0.1:0", grpc: "127.0.0.1:0", data: join(this.dir, "d2"), args: ["--advertise", addr, "--peer-token", this.x.peerToken, ...this.backendArgs()], proc: null, api: null, stopping: false });
    }
    if (this.allowed.has("disk-full")) {
      this.x.disk = smallDisk((c.daemons[1] as LiveDaemon).data, 8 * 1024 * 1024);
      if (!this.x.disk.ok) skipped(this.x.disk.reason);
    }
    await Promise.all(c.daemons.map((d) => c.start(d)));
  }

  private async skewedDaemon(name: string): Promise<LiveDaemon> {
    const proxy = new FaultProxy();
    const addr = await proxy.start();
    const skew = this.allowed.has("skew") ? drawSkewModel(this.r, { capNs: this.skewCapNs, horizonNs: 0n /* no steps or strobes */, parts: LIVE_SKEW_PARTS }) : ZERO_MODEL;
    const settings = daemonSkewSettings(skew);
    // An honest host claims its offset, wander and jitter with room for its drift over a run
    // (500 ppm for a minute is 30 ms); a lying one claims 100 µs whatever its skew.
    const maxerror = this.r.chance(0.7) ? maxAbsOffsetNs(skew, 0n) + 100n * MS : 100_000n;
    const args = ["--advertise", addr, "--peer-token", this.x.peerToken, "--skew-offset-ns", `${settings.offsetNs}ns`, "--skew-drift-ppm", String(settings.driftPpm), "--host-maxerror-ns", `${maxerror}ns`, ...this.backendArgs()];
    return { name, proxy, http: "127.0.0.1:0", grpc: "127.0.0.1:0", data: join(this.dir, name), args, skewUpdate: settings.update, proc: null, api: null, stopping: false };
  }

  private backendArgs(): string[] {
    return this.o.backend !== undefined ? ["--backend", this.o.backend] : [];
  }

  /** The run's VM, on d0. */
  private async createVm0(): Promise<void> {
    const { r, scen, c } = this;
    const vcpus = r.int(1, Math.max(1, scen.vcpusMax));
    const handlingMode = scen.handlingMode ?? r.pick(["ditch", "widen"] as const);
    const clocksource = scen.clocksource ?? r.pick(["kvm-clock", "tsc"] as const);
    const home = c.daemons[0] as LiveDaemon;
    const created = await (home.api as ApiClient).call<Json>("POST", "/v1/vms", { id: "vm0", vcpus, clocksource, migrationHandling: scen.handling, handlingMode });
    c.vcpusOf.set("vm0", vcpus);
    c.events.push({ kind: "vm", trueNs: BigInt(created.trueNs as string), daemon: home.name, vmId: "vm0", vcpus, guestTscKhz: BigInt(created.guestTscKhz as string), clocksource, migrationHandling: scen.handling, handlingMode });
  }

  /** The faults a migration of the main loop may carry, from the kinds this run allows. */
  private migrationFaults(): MigrationFault[] {
    const a = this.allowed;
    const kinds: MigrationFault[] = [];
    if (a.has("delay") || a.has("reorder")) kinds.push("delay");
    if (a.has("partition")) kinds.push("stall");
    if (a.has("reset")) kinds.push("reset");
    if (a.has("kill") || a.has("crash") || a.has("port-taken")) kinds.push("kill-source", "kill-destination");
    if (a.has("skew")) kinds.push("skew-step");
    if (a.has("hostile")) kinds.push("foreign-abort");
    if (this.x.disk?.ok) kinds.push("disk-full");
    return kinds;
  }

  /** Where vm0 runs now (a kill may have rolled it back). */
  private async findVm0(): Promise<void> {
    for (const [i, d] of this.c.daemons.entries()) {
      try {
        const v = await d.api?.call<Json>("GET", "/v1/vms/vm0?vcpus=0", undefined, 2000);
        if (v?.running) {
          this.owner = i;
          this.c.lastSeenOn.set("vm0", { daemon: d.name, generation: String(v.generation) });
        }
      } catch {
        // not there
      }
    }
  }

  /** Migration m of vm0 to the other daemon, with one fault drawn from `kinds`. */
  private async migrateOnce(m: number, kinds: readonly MigrationFault[]): Promise<void> {
    const { r, rf, c, scen } = this;
    await wait(scen.sampleIntervalNs * 3n + r.bigint(0n, 300n * MS));
    await c.restartExited();
    await this.findVm0();
    const src = c.daemons[this.owner] as LiveDaemon;
    const dst = c.daemons[1 - this.owner] as LiveDaemon;
    if (!src.api || !dst.api) return;
    const policy = r.pick(scen.policies);
    const estimator = r.pick(scen.estimators);
    const doorbell = scen.doorbell ?? r.chance(0.5);
    const kind: MigrationFault = kinds.length > 0 && rf.chance(0.8) ? rf.pick(kinds) : "none";
    const atNs = rf.bigint(0n, 30n * MS);
    await this.faultBeforeMigration(kind, src, dst);
    const migrationId = `live-${this.runIndex}-${m}`;
    const generation = BigInt(c.lastSeenOn.get("vm0")?.generation ?? "0");
    if (kind === "disk-full") await diskFullWindow(this.x, dst === c.daemons[1] ? dst : src, m);
    c.events.push({ kind: "migrateStart", trueNs: clock.monotonicNs(), vmId: "vm0", source: src.name, destination: dst.name, policy, estimator, doorbell });
    const switchover = this.rs.pick(scen.switchovers ?? SWITCHOVER_MODES);
    this.bumpMode(switchover, "started");
    const call = c.migrate(src, "vm0", dst, { policy, estimator, doorbell, migrationId, switchover });
    const nemesis = this.faultDuringMigration(kind, { src, dst, atNs, migrationId, generation });
    const rep = await call;
    await nemesis;
    this.bumpMode(switchover, rep === null ? "crashed" : String(rep.outcome));
    for (const d of c.daemons) d.proxy.heal();
    if (rep?.outcome === "committed") this.owner = 1 - this.owner;
  }

  private bumpMode(mode: SwitchoverMode, what: string): void {
    const key = `${mode}:${what}`;
    this.switchovers[key] = (this.switchovers[key] ?? 0) + 1;
  }

  /** Faults set up before the migration starts: a realtime step on either daemon, a slow link. */
  private async faultBeforeMigration(kind: MigrationFault, src: LiveDaemon, dst: LiveDaemon): Promise<void> {
    const { rf, c } = this;
    if (kind === "skew-step") {
      const step = jepsenBumpNs(rf, this.skewCapNs / 4n > 4n * MS ? this.skewCapNs / 4n : 4n * MS);
      const t = rf.pick(c.daemons);
      if (t.api) {
        c.recordHost(t, await t.api.call<Json>("PUT", "/v1/host/clock", { stepNs: step.toString() }));
        c.fault("skew.step", `${t.name} realtime stepped ${step} ns`);
      }
    }
    if (kind === "delay") {
      dst.proxy.delayNs = rf.bigint(MS, 20n * MS);
      c.fault("net.delay", `${src.name}→${dst.name} +${dst.proxy.delayNs} ns per chunk`);
    }
  }

  /** Faults that strike `atNs` into the migration: a foreign Abort, the disk's end, a stall, resets, a kill and restart. */
  private async faultDuringMigration(kind: MigrationFault, m: { src: LiveDaemon; dst: LiveDaemon; atNs: bigint; migrationId: string; generation: bigint }): Promise<void> {
    if (kind === "none" || kind === "delay" || kind === "skew-step") return;
    const { rf, c, x } = this;
    const { src, dst } = m;
    await wait(m.atNs);
    if (kind === "foreign-abort") {
      const answer = await foreignAbort(dst.grpc, { migrationId: m.migrationId, vmId: "vm0", generation: m.generation + 1n, reason: "hostile", sourceName: src.name, sourceKey: "0f".repeat(16) }, x.peerToken);
      c.fault("hostile.abort", `foreign Abort of ${m.migrationId} (vm0@${m.generation + 1n}) to ${dst.name} over gRPC, with the peer token but not the migration's key: ${answer}`);
    } else if (kind === "disk-full") {
      await diskFullEnd(x, rf);
    } else if (kind === "stall") {
      const p = rf.pick([dst.proxy, src.proxy]);
      p.stall();
      c.fault("net.partition", `proxy ${p.address} stalled`);
      await wait(rf.bigint(100n * MS, 1_500n * MS));
      p.release();
    } else if (kind === "reset") {
      dst.proxy.reset();
      c.fault("net.reset", `${src.name}→${dst.name} connections reset`);
    } else {
      const victim = kind === "kill-source" ? src : dst;
      await c.kill(victim, kind);
      await wait(rf.bigint(100n * MS, 1_000n * MS));
      if (this.allowed.has("port-taken") && x.rand.chance(0.5)) await startWithPortTaken(x, victim, x.rand.chance(0.5) ? "http" : "grpc");
      await c.restart(victim);
    }
  }

  /** Collide, an outsider's migrate-in and a Prepare flood, each by its own chance; returns the flooded daemon. */
  private async issue9Kinds(): Promise<LiveDaemon | null> {
    const { c, x, r, allowed } = this;
    await c.locate();
    if (allowed.has("collide")) await collide(x);
    await c.locate();
    // Each its own stream: adding one never shifts what another draws.
    if (allowed.has("hostile") && r.fork("issue9:migrate-in").chance(0.5)) await outsiderMigrateIn(x);
    await c.locate();
    return allowed.has("hostile") && r.fork("issue9:flood").chance(0.6) ? await flood(x) : null;
  }

  /** Heals the network, restarts what is down, runs the liveness check, then waits up to the recovery bound for one owner per VM. */
  private async healAndSettle(flooded: LiveDaemon | null): Promise<void> {
    const c = this.c;
    for (const d of c.daemons) {
      d.proxy.heal();
      if (!d.proc) await c.start(d);
    }
    const bound = this.o.recoveryBoundNs ?? 20n * S;
    if (flooded) await liveness(this.x, flooded, bound);
    const healAt = clock.monotonicNs();
    c.events.push({ kind: "heal", trueNs: healAt, recoveryBoundNs: bound });
    await wait(this.scen.sampleIntervalNs * 3n);
    for (;;) {
      const { owners, unresolved } = await c.ownership();
      const settled = owners.every((x) => x.daemons.length === 1) && unresolved.length === 0;
      if (settled || clock.monotonicNs() - healAt >= bound) {
        c.events.push({ kind: "final", trueNs: clock.monotonicNs(), owners, unresolved });
        return;
      }
      await wait(250n * MS);
    }
  }

  /** The run's history, checked. */
  private checked(): RunOutcome {
    const c = this.c;
    const byTime = (a: { trueNs: bigint }, b: { trueNs: bigint }) => (a.trueNs < b.trueNs ? -1 : a.trueNs > b.trueNs ? 1 : 0);
    const history: ChaosHistory = {
      meta: {
        mode: "live",
        seed: this.seed,
        epochNs: c.epochNs,
        daemons: c.daemons.map((d) => ({ name: d.name, tscKhz: 2_000_000n, crystalSlopePpm: 0 })),
        ntpSource: "host",
        sampleIntervalNs: 100_000_000n,
        scenario: { daemons: c.daemons.length, handling: this.scen.handling },
      },
      samples: c.samples.sort(byTime),
      events: c.events.sort(byTime),
    };
    this.o.onHistory?.(history);
    const check = checkHistory(history);
    const simNs = history.events.length > 0 ? (history.events[history.events.length - 1] as ChaosEvent).trueNs - (history.events[0] as ChaosEvent).trueNs : 0n;
    const used = [...new Set(Object.keys(c.faultSites).map((k) => k.replace(/^net\./, "").replace(/^skew\..*/, "skew").replace(/^(hostile|disk-full|collide|port-taken)\..*$/, "$1")))];
    return outcomeOf(this.runIndex, this.seed, history, check, { events: c.events.length, simNs, faultSites: c.faultSites, outcomes: c.outcomes, migrationsBySwitchover: this.switchovers, active: used }, 2);
  }
}
