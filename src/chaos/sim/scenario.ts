// One run's world, drawn from one seed (TigerBeetle's VOPR: the seed is the whole test case). Each
// concern draws from its own `fork(label)` of the run's stream, so adding a knob to one concern never
// shifts what another draws.
//
// Fault kinds activate per run with a seeded coin (FoundationDB's BUGGIFY: a site is enabled for a
// run, then fires by chance), so a campaign mixes quiet runs, runs with one kind of trouble, and
// runs where everything goes wrong at once. Ranges follow the peers: Jepsen's clock nemesis and
// TigerBeetle's time simulator for host skew (drawn by ../host-skew.ts, as live runs draw it),
// TigerBeetle's packet simulator (loss, replay, partitions), Toxiproxy's toxics.

import type { EstimatorName } from "../../shared/migration/blackout.js";
import type { PolicyName } from "../../shared/migration/restore.js";
import { SWITCHOVER_MODES, type SwitchoverMode } from "../../shared/migration/messages.js";
import type { Clocksource, HandlingMode } from "../../shared/guest/guest.js";
import { setTscKhzDecision, SVM, VMX } from "../../shared/kvm/tsc.js";
import { maxAbsOffsetNs, maxSlopePpm, type OffsetModel, sum, ZERO_MODEL } from "../../shared/time/offset-model.js";
import { logUniform, type Random } from "../../shared/time/random.js";
import { drawSkewModel } from "../host-skew.js";
import type { NetConfig, Partition } from "./network.js";

/** The kinds `--faults all` (and the default campaign) draw from. */
export const FAULT_KINDS = ["delay", "reorder", "loss", "dup", "partition", "reset", "crash", "kill", "stall", "doorbell", "skew", "crystal", "collide", "hostile", "disk-full", "damage", "port-taken", "late"] as const;
/**
 * The operational and hostile fault kinds. Named in `--faults` and drawn per run like the others,
 * but kept out of `all` while the daemons fail some of their seeds (test/sim/issue9-faults.test.ts
 * lists them); they join FAULT_KINDS when none fails.
 */
export const ISSUE9_FAULT_KINDS = ["collide", "hostile", "disk-full", "damage", "port-taken"] as const;
/** Kinds only a live run can inject (a simulated daemon has no ports); the simulator never draws them. */
export const LIVE_ONLY_FAULT_KINDS: readonly FaultKind[] = ["port-taken"];
/** Every kind `--faults` accepts by name. */
export const KNOWN_FAULT_KINDS = [...FAULT_KINDS, ...ISSUE9_FAULT_KINDS.filter((k): k is Exclude<(typeof ISSUE9_FAULT_KINDS)[number], (typeof FAULT_KINDS)[number]> => !(FAULT_KINDS as readonly string[]).includes(k))] as const;
export type FaultKind = (typeof KNOWN_FAULT_KINDS)[number];

export const FAULT_KIND_DOCS: Record<FaultKind, string> = {
  delay: "long, variable one-way network delays",
  reorder: "per-message delay jitter (messages overtake each other)",
  loss: "requests and replies lost",
  dup: "requests delivered twice",
  partition: "links cut for a while, one or both ways",
  reset: "connections reset before or after the call ran",
  crash: "daemon crashes at named protocol phases (crash.* fault sites), then restart from the journal",
  kill: "daemons killed at random instants, then restarted",
  stall: "a daemon's process stops for a while inside its own code: slow journal writes (fsync), pauses (GC) at named fault sites",
  doorbell: "doorbell interrupts delayed or lost",
  skew: "host realtime skew: offsets, drift, steps, strobes, wander, jitter (Jepsen ranges, capped by --skew-max)",
  crystal: "host TSC crystal drift and wander",
  collide:
    "two or three daemons migrate different VMs to one destination with the same caller-given migration id, racing 0-40 ms apart, sometimes after the first source crashed at crash.source.afterCommitJournal",
  hostile:
    "a non-daemon peer on the network: calls without credentials (refused by the transport), and with a peer's credentials foreign Abort/Commit/Transfer for migrations it sees, replays of old messages, a Prepare flood at one destination (real migrations must succeed again after healing)",
  "disk-full": "a daemon's journal writes fail with ENOSPC for a window (a VM create is tried meanwhile), sometimes followed by an operator restart",
  damage: "a VM record edited in place while its daemon is down (TSC offset, ratio, vCPU count, generation): refused or quarantined, never run; the operator then restores the record from a backup",
  late: "requests that reach their server only after the caller's deadline (the caller gave up; the server still runs them, unary or on a Handover call): a Transfer after its source already resolved it",
  "port-taken": "live only: a daemon restarts with its HTTP or gRPC port taken; it must exit non-zero at once and release everything, then restarts with the port free",
};

export interface ScenarioOptions {
  policies: readonly PolicyName[];
  estimators: readonly EstimatorName[];
  /** Guest migration handling (this project's extension: docs/time-across-migration.md#what-the-guest-is-told) on, or off as Linux is today. */
  handling: boolean;
  /** Largest magnitude of any one skew component. */
  skewMaxNs: bigint;
  faults: readonly FaultKind[];
  vcpusMax: number;
  vmsMax: number;
  daemonsMax: number;
  migrationsMin: number;
  migrationsMax: number;
  sampleIntervalNs: bigint;
  /** Where guests take NTP from (default: a reference server, so host skew alone cannot fool them). */
  ntpSource: "reference" | "host";
  /** Force the guests' vmclock-marker watch (default: seeded, mostly on). */
  watchVmclock?: boolean;
  /** Force the doorbell on every migration (default: seeded per migration). */
  doorbell?: boolean;
  /** Force every VM's handling mode (default: seeded per VM). */
  handlingMode?: HandlingMode;
  /** Force every VM's clocksource (default: seeded per VM). */
  clocksource?: Clocksource;
  /** Switchover modes drawn per migration (default: both, by seed). */
  switchovers?: readonly SwitchoverMode[];
}

export const DEFAULT_SCENARIO: ScenarioOptions = {
  policies: ["advance"],
  estimators: ["one-sided"],
  handling: true,
  skewMaxNs: 262_144_000_000n,
  faults: FAULT_KINDS,
  vcpusMax: 4,
  vmsMax: 2,
  daemonsMax: 3,
  migrationsMin: 4,
  migrationsMax: 8,
  sampleIntervalNs: 100_000_000n,
  ntpSource: "reference",
};

export interface HostSpec {
  name: string;
  tscKhz: bigint;
  vendor: "vmx" | "svm";
  tscScaling: boolean;
  tsc0: bigint;
  rawBaseNs: bigint;
  crystal: OffsetModel;
  crystalSlopePpm: number;
  skew: OffsetModel;
  maxerrorNs: bigint;
  jitterSeed: bigint;
}

export interface VmSpec {
  id: string;
  home: number;
  vcpus: number;
  guestTscKhz?: bigint;
  clocksource: Clocksource;
  handlingMode: HandlingMode;
}

export interface MigrationPlan {
  /** Wait this long (true time) after the previous migration of the VM finished. */
  gapNs: bigint;
  /** Picks the destination among the other daemons. */
  destPick: number;
  policy: PolicyName;
  estimator: EstimatorName;
  doorbell: boolean;
  advanceCapNs?: bigint;
  switchover: SwitchoverMode;
}

/** collide: sources migrate their own VMs to one destination with one caller-given migration id. */
export interface CollisionPlan {
  atNs: bigint;
  migrationId: string;
  /** Daemon indices of the sources (2 or 3) and of the destination; `vms[k]` is the VM index source k migrates. */
  sources: number[];
  destination: number;
  vms: number[];
  /** Each later source starts this long after the one before (0-40 ms: a race). */
  gapsNs: bigint[];
  /** The first source crashes at crash.source.afterCommitJournal; the next ones start once it died. */
  crashFirst: boolean;
  policy: PolicyName;
  estimator: EstimatorName;
}

/** hostile: one non-daemon peer. Chances are per migration it sees (its Prepare and Transfer go by). */
export interface HostilePlan {
  /** Each of its calls goes out without credentials with this chance (an outsider; the transport refuses it). */
  unauthenticatedP: number;
  /** After a real Transfer it saw: a foreign Abort, or a foreign Commit, to that destination. */
  abortP: number;
  commitP: number;
  /** After a real Prepare it saw: a Transfer of an old snapshot of that VM patched to this migration, racing the real one. */
  transferP: number;
  /** Instants it replays one old message it recorded. */
  replaysAtNs: bigint[];
  /** Instants it tries to migrate a VM that runs elsewhere onto another daemon (an old snapshot, without credentials). */
  migrateInAtNs: bigint[];
  /** A Prepare flood at one daemon, and the VM the liveness check migrates there after healing. */
  /** probeVm: null when no host pair of the world can carry a probe (then no liveness check). */
  flood: { atNs: bigint; target: number; count: number; probeVm: number | null; policy: PolicyName; estimator: EstimatorName } | null;
}

export type DamageEdit = "tsc" | "ratio" | "vcpus" | "generation";

/** damage: the operator restarts `daemon` at `atNs`; while it is down one of its VM records is edited in place. */
export interface DamagePlan {
  atNs: bigint;
  daemon: number;
  edit: DamageEdit;
}

/** disk-full: `daemon`'s journal writes fail from `fromNs` to `untilNs`. */
export interface DiskFullPlan {
  daemon: number;
  fromNs: bigint;
  untilNs: bigint;
  /** A VM create tried on it meanwhile (null: none). */
  createAtNs: bigint | null;
  /** The operator restarts it once space is back (reveals what was reported but never made durable). */
  restartAfter: boolean;
}

export interface Scenario {
  active: FaultKind[];
  hosts: HostSpec[];
  vms: VmSpec[];
  plans: MigrationPlan[][];
  net: NetConfig;
  crashP: number;
  crashesMax: number;
  kills: { atNs: bigint; daemon: number; downNs: bigint }[];
  /** Every journal write costs up to this much process time (an fsync); one in `fsyncStallP` stalls up to `stallMaxNs`. */
  fsyncMaxNs: bigint;
  fsyncStallP: number;
  /** At a named fault site that does not crash, the process pauses (GC) with this chance, up to `stallMaxNs`. */
  pauseP: number;
  stallMaxNs: bigint;
  downtimeMinNs: bigint;
  downtimeMaxNs: bigint;
  doorbellLossP: number;
  doorbellDelayNs: bigint;
  doorbellDelayMaxNs: bigint;
  sampleIntervalNs: bigint;
  pollIntervalNs: bigint;
  resyncDelayNs: bigint;
  watchVmclock: boolean;
  ntp: { source: "reference" | "host"; maxerrorNs: bigint; model: OffsetModel };
  /** Faults stop (and the network heals) when every planned migration is done, or at this instant. */
  faultsMaxNs: bigint;
  /** I7's stated bound: how long after healing every VM must run on exactly one daemon. */
  recoveryBoundNs: bigint;
  /** Least time after healing before the run may end (so the last migration is sampled). */
  settleNs: bigint;
  handling: boolean;
  collisions: CollisionPlan[];
  hostile: HostilePlan | null;
  damage: DamagePlan[];
  diskFull: DiskFullPlan[];
}

const MS = 1_000_000n;
const S = 1_000_000_000n;

/**
 * A TSC crystal: ±100 ppm, or up to ±`stressPpm` in one host in seven. A guest kernel assumes its
 * clock runs within MAXFREQ (500 ppm) of true time, and a guest on a `tsc` clocksource also keeps
 * its boot calibration when a host within KVM's 250 ppm tolerance runs it unscaled, so the budget is
 * shared: crystal + frequency offset stay within 450 ppm (a host beyond that makes every guest's
 * NTP bound lie — a hardware fault this campaign does not inject). The wander adds at most ~13 ppm.
 */
function crystalModel(r: Random, stressPpm: number): OffsetModel {
  const stress = r.chance(0.15);
  const ppm = Math.round((r.float() * 2 - 1) * (stress ? stressPpm : Math.min(100, stressPpm)) * 10) / 10;
  const parts: OffsetModel[] = [{ kind: "drift", ppm, fromNs: 0n }];
  // Phase 0: a crystal model must read 0 at true time 0, where the host TSC is tsc0 by definition.
  if (r.chance(0.3)) parts.push({ kind: "periodic", amplitudeNs: r.bigint(10n, 2_000n), periodNs: r.bigint(S, 20n * S), phaseNs: 0n });
  return sum(...parts);
}

const BASE_KHZ = [2_000_000n, 2_100_000n, 2_500_000n, 3_000_000n] as const;

function compatible(guestKhz: bigint, h: HostSpec): boolean {
  try {
    setTscKhzDecision({ userKhzArg: guestKhz, hostKhz: h.tscKhz, vendor: h.vendor === "svm" ? SVM : VMX, hostHasScaling: h.tscScaling });
    return true;
  } catch {
    return false;
  }
}

/** Draws one run's world. `r` is the run's scenario stream. */
export function drawScenario(root: Random, o: ScenarioOptions): Scenario {
  const allowed = new Set(o.faults);
  const rk = root.fork("kinds");
  // New kinds come last, so a campaign without them draws exactly what it drew before they existed.
  // `late` draws from a stream of its own: naming or leaving out the kinds before it shifts nothing.
  const rl = root.fork("kinds:late");
  const active = KNOWN_FAULT_KINDS.filter((k) => allowed.has(k) && !LIVE_ONLY_FAULT_KINDS.includes(k) && (k === "late" ? rl.chance(0.5) : rk.chance(k === "skew" ? 0.8 : k === "crystal" ? 0.7 : 0.5)));
  const on = (k: FaultKind) => active.includes(k);
  const rc = root.fork("collide");
  const collideSources = on("collide") ? (rc.chance(0.3) ? 3 : 2) : 0;

  // Workload first: its length sets the horizon faults are spread over.
  const rw = root.fork("workload");
  const sampleIntervalNs = o.sampleIntervalNs;
  const drawnDaemons = rw.chance(0.6) ? 2 : rw.int(2, Math.max(2, o.daemonsMax));
  const nDaemons = Math.max(drawnDaemons, collideSources + 1);
  const nVms = rw.int(1, Math.max(1, o.vmsMax));
  const nMigrations = rw.int(o.migrationsMin, Math.max(o.migrationsMin, o.migrationsMax));
  const plans: MigrationPlan[][] = Array.from({ length: nVms }, () => []);
  // Its own stream: drawing the mode shifts nothing the workload drew before modes existed.
  const rs = root.fork("switchover");
  const modes = o.switchovers ?? SWITCHOVER_MODES;
  for (let i = 0; i < nMigrations; i++) {
    const vm = rw.int(0, nVms - 1);
    const plan: MigrationPlan = {
      gapNs: 2n * sampleIntervalNs + rw.bigint(20n * MS, 400n * MS),
      destPick: rw.float(),
      policy: rw.pick(o.policies),
      estimator: rw.pick(o.estimators),
      doorbell: o.doorbell ?? rw.chance(0.5),
      switchover: rs.pick(modes),
    };
    if (plan.policy === "advance-capped" && rw.chance(0.5)) plan.advanceCapNs = logUniform(rw, MS, S);
    (plans[vm] as MigrationPlan[]).push(plan);
  }
  const horizonNs = plans.reduce((m, p) => {
    const t = p.reduce((a, x) => a + x.gapNs, 0n);
    return t > m ? t : m;
  }, 0n);

  // Hosts.
  const rh = root.fork("hosts");
  const sameBase = rh.chance(0.7);
  const base0 = rh.pick(BASE_KHZ);
  const hosts: HostSpec[] = [];
  const rkhz = root.fork("hosts:khz");
  const khz = Array.from({ length: nDaemons }, () => {
    const base = sameBase ? base0 : rkhz.pick(BASE_KHZ);
    // Within KVM's 250 ppm tolerance of the base: a guest may run here unscaled.
    const offsetPpm = rkhz.chance(0.25) ? rkhz.int(-200, 200) : 0;
    return { base, offsetPpm, tscKhz: base + (base * BigInt(offsetPpm)) / 1_000_000n };
  });
  // A guest calibrated on one host can run unscaled on another up to 250 ppm away: that mismatch
  // and the crystal share the guest kernel's 500 ppm budget (see crystalModel).
  let mismatchPpm = 0;
  for (const a of khz) for (const b of khz) if (a.base === b.base) mismatchPpm = Math.max(mismatchPpm, Math.abs(a.offsetPpm - b.offsetPpm));
  const crystalBudgetPpm = Math.max(20, 430 - Math.min(250, mismatchPpm));
  for (let i = 0; i < nDaemons; i++) {
    const tscKhz = (khz[i] as (typeof khz)[number]).tscKhz;
    const crystal = on("crystal") ? crystalModel(rh, crystalBudgetPpm) : ZERO_MODEL;
    const skew = on("skew") ? drawSkewModel(rh, { capNs: o.skewMaxNs, horizonNs }) : ZERO_MODEL;
    const honest = rh.chance(0.3);
    const claimed = logUniform(rh, 10_000n, 5n * MS);
    const worst = maxAbsOffsetNs(skew, horizonNs + 60n * S);
    hosts.push({
      name: `d${i}`,
      tscKhz,
      vendor: rh.chance(0.7) ? "vmx" : "svm",
      tscScaling: rh.chance(0.9),
      tsc0: rh.bigint(0n, 1n << 50n),
      rawBaseNs: rh.bigint(0n, 1_000_000n * S),
      crystal,
      crystalSlopePpm: maxSlopePpm(crystal),
      skew,
      maxerrorNs: honest && worst + 1_000n > claimed ? worst + 1_000n : claimed,
      jitterSeed: rh.bigint(0n, (1n << 63n) - 1n),
    });
  }

  // Guests.
  const rg = root.fork("guests");
  const watchVmclock = o.watchVmclock ?? rg.chance(0.8);
  const vms: VmSpec[] = [];
  for (let i = 0; i < nVms; i++) {
    const home = rg.int(0, nDaemons - 1);
    const h = hosts[home] as HostSpec;
    let guestTscKhz: bigint | undefined;
    if (rg.chance(0.4)) {
      const k = rg.pick(hosts).tscKhz;
      if (k !== h.tscKhz && compatible(k, h)) guestTscKhz = k;
    }
    const cs: Clocksource = o.clocksource ?? (watchVmclock ? rg.pick(["kvm-clock", "tsc"] as const) : "kvm-clock");
    vms.push({
      id: `vm${i}`,
      home,
      vcpus: rg.int(1, Math.max(1, o.vcpusMax)),
      ...(guestTscKhz !== undefined ? { guestTscKhz } : {}),
      clocksource: cs,
      handlingMode: o.handlingMode ?? rg.pick(["ditch", "widen"] as const),
    });
  }
  const ntpMaxerror = logUniform(rg, 20_000n, 2n * MS);
  const resyncDelayNs = logUniform(rg, 100n * MS, S);
  const ntpModel: OffsetModel = { kind: "jitter", amplitudeNs: ntpMaxerror / 2n, intervalNs: logUniform(rg, 100n * MS, 2n * S), seed: rg.bigint(0n, (1n << 63n) - 1n) };

  // Network.
  const rn = root.fork("net");
  const deadlineNs = logUniform(rn, 250n * MS, 2n * S);
  const baseDelayNs = logUniform(rn, 20_000n, MS);
  let jitterMeanNs = baseDelayNs / 10n;
  if (on("delay")) jitterMeanNs += logUniform(rn, MS, 20n * MS);
  if (on("reorder")) jitterMeanNs += logUniform(rn, 500_000n, 5n * MS);
  const partitions: Partition[] = [];
  if (on("partition")) {
    const n = rn.int(1, 3);
    for (let i = 0; i < n; i++) {
      const a = rn.int(0, nDaemons - 1);
      let b = rn.int(0, nDaemons - 2);
      if (b >= a) b++;
      const fromNs = rn.bigint(0n, horizonNs);
      partitions.push({ fromNs, untilNs: fromNs + logUniform(rn, 5n * MS, 5n * S), a: `d${a}`, b: `d${b}`, oneWay: rn.chance(0.3) });
    }
  }
  const net: NetConfig = {
    baseDelayNs,
    jitterMeanNs,
    delayMaxNs: deadlineNs / 2n < 100n * MS ? deadlineNs / 2n : 100n * MS,
    lossP: on("loss") ? 0.005 + rn.float() * 0.075 : 0,
    dupP: on("dup") ? 0.01 + rn.float() * 0.09 : 0,
    resetP: on("reset") ? 0.005 + rn.float() * 0.045 : 0,
    deadlineNs,
    partitions,
    // Its own stream: a run without this kind draws what it drew before the kind existed.
    ...(on("late") ? { lateP: 0.02 + root.fork("net:late").float() * 0.1 } : {}),
  };

  // Processes and doorbells.
  const rp = root.fork("process");
  const kills: Scenario["kills"] = [];
  if (on("kill")) {
    const n = rp.int(1, 2);
    for (let i = 0; i < n; i++) kills.push({ atNs: rp.bigint(0n, horizonNs), daemon: rp.int(0, nDaemons - 1), downNs: logUniform(rp, MS, 3n * S) });
  }
  const scenario: Scenario = {
    active,
    hosts,
    vms,
    plans,
    net,
    crashP: on("crash") ? rp.pick([0.02, 0.05, 0.1, 0.2]) : 0,
    crashesMax: on("crash") ? rp.int(1, 3) : 0,
    kills,
    fsyncMaxNs: on("stall") ? logUniform(rp, 20_000n, 2n * MS) : 0n,
    fsyncStallP: on("stall") ? 0.002 + rp.float() * 0.01 : 0,
    pauseP: on("stall") ? rp.pick([0.05, 0.1, 0.3]) : 0,
    stallMaxNs: on("stall") ? logUniform(rp, 5n * MS, 500n * MS) : 0n,
    downtimeMinNs: MS,
    downtimeMaxNs: 3n * S,
    doorbellLossP: on("doorbell") ? 0.1 + rp.float() * 0.4 : 0,
    doorbellDelayNs: rp.bigint(0n, MS),
    doorbellDelayMaxNs: on("doorbell") ? logUniform(rp, MS, 2n * S) : 0n,
    sampleIntervalNs,
    pollIntervalNs: rg.pick([2n * S, 4n * S, 8n * S, 16n * S]),
    resyncDelayNs,
    watchVmclock,
    ntp: { source: o.ntpSource, maxerrorNs: ntpMaxerror, model: ntpModel },
    faultsMaxNs: horizonNs + 60n * S,
    recoveryBoundNs: 30n * S,
    settleNs: 0n, // set below: the guests' resync delay plus a few samples
    handling: o.handling,
    collisions: [],
    hostile: null,
    damage: [],
    diskFull: [],
  };
  scenario.settleNs = resyncDelayNs + 3n * sampleIntervalNs;
  drawIssue9Faults(root, o, scenario, { on, collideSources, horizonNs });
  return scenario;
}

/** A VM of the harness's own (no planned migrations): collision sources and the liveness probe. */
function extraVm(r: Random, s: Scenario, o: ScenarioOptions, id: string, home: number): number {
  s.vms.push({
    id,
    home,
    vcpus: r.int(1, Math.max(1, o.vcpusMax)),
    clocksource: o.clocksource ?? (s.watchVmclock ? r.pick(["kvm-clock", "tsc"] as const) : "kvm-clock"),
    handlingMode: o.handlingMode ?? r.pick(["ditch", "widen"] as const),
  });
  s.plans.push([]);
  return s.vms.length - 1;
}

/**
 * The liveness probe: a VM that some other host runs and the flooded daemon `target` can take — a
 * guest TSC rate both hosts accept — so that only the flood can refuse its migration. Null when no
 * host pair of this world can carry one (then the flood has no liveness check).
 */
function probeVm(r: Random, s: Scenario, o: ScenarioOptions, target: number): number | null {
  const pairs: { home: number; khz: bigint }[] = [];
  for (let home = 0; home < s.hosts.length; home++) {
    if (home === target) continue;
    for (const khz of new Set(s.hosts.map((h) => h.tscKhz)))
      if (compatible(khz, s.hosts[home] as HostSpec) && compatible(khz, s.hosts[target] as HostSpec)) pairs.push({ home, khz });
  }
  if (pairs.length === 0) return null;
  const pick = pairs[r.int(0, pairs.length - 1)] as { home: number; khz: bigint };
  const vm = extraVm(r, s, o, "probe0", pick.home);
  (s.vms[vm] as VmSpec).guestTscKhz = pick.khz;
  return vm;
}

/** The operational and hostile kinds, each from its own stream: a run without them draws nothing here. */
function drawIssue9Faults(root: Random, o: ScenarioOptions, s: Scenario, x: { on: (k: FaultKind) => boolean; collideSources: number; horizonNs: bigint }): void {
  const n = s.hosts.length;
  if (x.on("collide")) {
    const r = root.fork("collide:plans");
    const times = r.int(1, 3);
    for (let c = 0; c < times; c++) {
      const destination = r.int(0, n - 1);
      const pool = Array.from({ length: n }, (_v, i) => i).filter((i) => i !== destination);
      const sources: number[] = [];
      while (sources.length < Math.min(x.collideSources, pool.length)) sources.push(pool.splice(r.int(0, pool.length - 1), 1)[0] as number);
      const vms = sources.map((home, k) => extraVm(r, s, o, `c${c}vm${k}`, home));
      s.collisions.push({
        atNs: r.bigint(200n * MS, x.horizonNs > 400n * MS ? x.horizonNs : 400n * MS),
        migrationId: `collide-${c}`,
        sources,
        destination,
        vms,
        gapsNs: sources.slice(1).map(() => logUniform(r, 10_000n, 40n * MS)), // many inside one simulated migration (~1 ms)
        crashFirst: r.chance(0.5),
        policy: r.pick(o.policies),
        estimator: r.pick(o.estimators),
      });
    }
  }
  if (x.on("hostile")) {
    const r = root.fork("hostile");
    const times = (k: number) => Array.from({ length: k }, () => r.bigint(0n, x.horizonNs)).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const flood = r.chance(0.6);
    const target = r.int(0, n - 1);
    s.hostile = {
      unauthenticatedP: r.pick([0, 0.2, 0.5]),
      abortP: r.pick([0, 0.3, 0.8]),
      commitP: r.pick([0, 0.3]),
      transferP: r.pick([0, 0.3]),
      replaysAtNs: times(r.int(0, 6)),
      migrateInAtNs: times(r.int(0, 2)),
      flood: flood ? { atNs: r.bigint(0n, x.horizonNs), target, count: r.int(256, 300), probeVm: probeVm(r, s, o, target), policy: r.pick(o.policies), estimator: r.pick(o.estimators) } : null,
    };
  }
  if (x.on("damage")) {
    const r = root.fork("damage");
    const k = r.int(1, 2);
    for (let i = 0; i < k; i++) s.damage.push({ atNs: r.bigint(100n * MS, x.horizonNs + 200n * MS), daemon: r.int(0, n - 1), edit: r.pick(["tsc", "ratio", "vcpus", "generation"] as const) });
  }
  if (x.on("disk-full")) {
    const r = root.fork("disk-full");
    const k = r.int(1, 2);
    for (let i = 0; i < k; i++) {
      const fromNs = r.bigint(0n, x.horizonNs);
      const untilNs = fromNs + logUniform(r, 50n * MS, 5n * S);
      s.diskFull.push({ daemon: r.int(0, n - 1), fromNs, untilNs, createAtNs: r.chance(0.5) ? r.bigint(fromNs, untilNs) : null, restartAfter: r.chance(0.5) });
    }
  }
}
