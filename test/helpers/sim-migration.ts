// One whole migration on simulated time, driving the pure core directly: two EmulatedHosts on one
// SimClock, a source VM and guest, pause → capture → transfer → restore → resume, with every
// duration the estimators see measured exactly as the role drivers measure it
// (src/source/migrate-out.ts, src/destination/migrate-in.ts), on clocks consistent with the true
// time the simulation advanced. True time moves only here, so every figure is exact and replayable.

import { EmulatedHost } from "../../src/shared/hypervisor/host.js";
import { EmulatedVm } from "../../src/shared/hypervisor/vm.js";
import { emulatedTruth } from "../../src/shared/hypervisor/truth.js";
import { Guest, type GuestOptions } from "../../src/shared/guest/guest.js";
import { pvclockReadCycles, type PvclockRecord } from "../../src/shared/kvm/pvclock.js";
import { s64 } from "../../src/shared/kvm/u64.js";
import {
  type BlackoutEstimate,
  estimateBlackout,
  type EstimatorName,
  type OneSidedInputs,
  type ProbeExchange,
  probeOffset,
} from "../../src/shared/migration/blackout.js";
import { type PolicyName, restoreSnapshot, type RestoreResult } from "../../src/shared/migration/restore.js";
import { captureSnapshot, type Snapshot } from "../../src/shared/migration/snapshot.js";
import { type OffsetModel, offsetAt, sum } from "../../src/shared/time/offset-model.js";
import { SimClock, SimScheduler } from "../../src/shared/time/sim.js";

export const EPOCH_NS = 1_767_225_600_000_000_000n;

export interface HostSpec {
  tscKhz: bigint;
  vendor: "vmx" | "svm";
  tscScaling: boolean;
  /** Crystal drift (a constant rate error from true time 0), within ±500 ppm. */
  crystalPpm: number;
  /** Optional crystal wander (periodic); its slope plus |crystalPpm| stays within 500 ppm. */
  crystalWanderNs?: bigint;
  crystalWanderPeriodNs?: bigint;
  tsc0: bigint;
  rawBaseNs: bigint;
  /** Realtime skew: a constant offset plus a drift from true time 0. */
  skewOffsetNs: bigint;
  skewDriftPpm: number;
  /** What the host claims its realtime error is bounded by. */
  maxerrorNs: bigint;
}

/** True-time durations of each step of the protocol (what the network and the daemons cost). */
export interface Timeline {
  /** Guest boot → pause. */
  runNs: bigint;
  /** Pause → the snapshot's KVM_GET_CLOCK (the driver journals the paused VM in between). */
  pauseToCaptureNs: bigint;
  /** Capture → the Transfer call leaves the source. */
  captureToSendNs: bigint;
  /** One-way transit of the snapshot, the destination's hold, the answer's transit. */
  transitNs: bigint;
  holdNs: bigint;
  returnNs: bigint;
  /** Source receives the Transfer answer → destination restores (Commit, its transit). */
  ackToRestoreNs: bigint;
  /** Probe: lead before the pause of the first exchange, each leg, each hold, how many. */
  probeLeadNs: bigint;
  probeLegNs: bigint;
  probeReturnLegNs: bigint;
  probeHoldNs: bigint;
  probeExchanges: number;
  /**
   * One-sided's extra legs (migrate-out.ts, blackout.ts): the source's Transfer answer → its Commit
   * leaving (the rest of ackToRestoreNs is the Commit's transit), and the Handover `opened` answer
   * leaving the destination `anchorLeadNs` before the pause, arriving `anchorBackLegNs` later.
   * Absent: the estimator gets no such bound (a unary peer, a Commit lost and resolved).
   */
  commitGapNs?: bigint;
  anchorLeadNs?: bigint;
  anchorBackLegNs?: bigint;
}

export interface Scenario {
  src: HostSpec;
  dst: HostSpec;
  vcpus: number;
  /** Guest TSC kHz; undefined = the source host's rate. */
  guestTscKhz?: bigint;
  /** Per-vCPU TSC offset perturbation on the source (a guest that wrote its TSCs): none if empty. */
  vcpuOffsetDelta: bigint[];
  policy: PolicyName;
  estimator: EstimatorName;
  capNs?: bigint;
  timeline: Timeline;
}

export interface VcpuOutcome {
  /** The guest's last reads on the source, at the pause. */
  tscAtPause: bigint;
  kvmAtPause: bigint;
  /** What the source would read at the resume instant had it never paused. */
  tscIdeal: bigint;
  kvmIdeal: bigint;
  /** What the destination reads at resume. */
  tscAfter: bigint;
  kvmAfter: bigint;
  /** tscAfter − tscIdeal in cycles, and in ns of the source's nominal guest rate (magnitude rounded up). */
  tscErrCycles: bigint;
  tscErrNs: bigint;
  kvmErrNs: bigint;
}

export interface Outcome {
  scenario: Scenario;
  snapshot: Snapshot;
  result: RestoreResult;
  vcpus: VcpuOutcome[];
  src: EmulatedHost;
  dst: EmulatedHost;
  srcVm: EmulatedVm;
  dstVm: EmulatedVm;
  clock: SimClock;
  tPause: bigint;
  tCapture: bigint;
  tResume: bigint;
  /** Capture → resume in true ns: what the guest TSC must be advanced by. */
  trueAdvanceNs: bigint;
  /** dst skew at the restore − src skew at the capture: what `wallclock` adds to the blackout. */
  skewDeltaNs: bigint;
  /** Source crystal offset gained over capture → resume (the ideal TSC runs that much further). */
  srcCrystalDeltaNs: bigint;
}

export function driftModel(ppm: number): OffsetModel {
  return ppm === 0 ? { kind: "constant", offsetNs: 0n } : { kind: "drift", ppm, fromNs: 0n };
}

export function crystalModel(h: HostSpec): OffsetModel {
  const drift = driftModel(h.crystalPpm);
  if (!h.crystalWanderNs || !h.crystalWanderPeriodNs) return drift;
  return sum(drift, { kind: "periodic", amplitudeNs: h.crystalWanderNs, periodNs: h.crystalWanderPeriodNs, phaseNs: 0n });
}

export function skewModel(h: HostSpec): OffsetModel {
  const parts: OffsetModel[] = [{ kind: "constant", offsetNs: h.skewOffsetNs }];
  if (h.skewDriftPpm !== 0) parts.push({ kind: "drift", ppm: h.skewDriftPpm, fromNs: 0n });
  return parts.length === 1 ? (parts[0] as OffsetModel) : { kind: "sum", parts };
}

export function makeHost(name: string, clock: SimClock, h: HostSpec): EmulatedHost {
  return new EmulatedHost({
    name,
    clock,
    epochNs: EPOCH_NS,
    tscKhz: h.tscKhz,
    vendor: h.vendor,
    tscScaling: h.tscScaling,
    crystal: crystalModel(h),
    tsc0: h.tsc0,
    rawBaseNs: h.rawBaseNs,
    skew: skewModel(h),
    maxerrorNs: h.maxerrorNs,
  });
}

/** A guest that never polls NTP on its own (migration properties need only its clocks). */
export function quietGuestOptions(over: Partial<GuestOptions> = {}): GuestOptions {
  return {
    clocksource: "kvm-clock",
    migrationHandling: true,
    handlingMode: "ditch",
    watchVmclock: true,
    pollIntervalNs: 16_000_000_000n,
    resyncDelayNs: 1_000_000_000n,
    ntpSource: () => ({ realtimeNs: EPOCH_NS, maxerrorNs: 0n }),
    driftAllowancePpm: 500n,
    ...over,
  };
}

const abs = (x: bigint) => (x < 0n ? -x : x);

/** |cycles| in ns at hostKhz·ratio/2^frac kHz, rounded up in magnitude, sign kept. */
function cyclesToNs(cycles: bigint, hostKhz: bigint, ratio: bigint, fracBits: number): bigint {
  const num = abs(cycles) * 1_000_000n << BigInt(fracBits);
  const den = hostKhz * ratio;
  const ns = (num + den - 1n) / den;
  return cycles < 0n ? -ns : ns;
}

export interface Live {
  host: EmulatedHost;
  vm: EmulatedVm;
  guest: Guest;
}

export interface MigrateGuestOptions {
  policy: PolicyName;
  estimator: EstimatorName;
  capNs?: bigint;
  /** Every duration but `runNs` (the caller has already run the guest up to the pause). */
  timeline: Timeline;
  /** The destination guest's options (its clocksource, handling and mode come from the snapshot). */
  guestOptions: GuestOptions;
  /** Start the destination guest's NTP polls and re-arm its resync, as a daemon's adopt() does. */
  startGuest: boolean;
  /** Runs on the destination after the restore, before the vCPUs resume (e.g. ring a doorbell). */
  beforeResume?: (to: Live) => void;
  migrationId?: string;
  generation?: bigint;
}

export interface Migrated {
  to: Live;
  snapshot: Snapshot;
  result: RestoreResult;
  tPause: bigint;
  tCapture: bigint;
  tResume: bigint;
}

/**
 * Migrates the running guest `from` to `dstHost`, pausing now. True time moves through
 * `scheduler.runUntil`, so any other simulated activity runs on time during the blackout.
 */
export function migrateGuest(scheduler: SimScheduler, from: Live, dstHost: EmulatedHost, o: MigrateGuestOptions): Migrated {
  const clock = scheduler.clock;
  const src = from.host;
  const dst = dstHost;
  const tl = o.timeline;
  const tPause = clock.monotonicNs();

  // Probe exchanges before the pause (migrate-out.ts "sendProbe"): realtime stamps on each host,
  // the last exchange's end remembered on the source's raw clock. Hosts are pure functions of
  // true time, so the exchanges can be evaluated after the fact.
  const exchanges: ProbeExchange[] = [];
  let lastProbeRawNs = 0n;
  if (o.estimator === "probe") {
    let t = tPause - tl.probeLeadNs;
    for (let k = 0; k < tl.probeExchanges; k++) {
      const t1 = src.realtimeNsAt(t);
      const t2 = dst.realtimeNsAt(t + tl.probeLegNs);
      const t3 = dst.realtimeNsAt(t + tl.probeLegNs + tl.probeHoldNs);
      t = t + tl.probeLegNs + tl.probeHoldNs + tl.probeReturnLegNs;
      const t4 = src.realtimeNsAt(t);
      exchanges.push({ t1, t2, t3, t4 });
      lastProbeRawNs = src.rawNsAt(t);
    }
    if (t > tPause) throw new Error("scenario: probes must end before the pause");
  }

  // Pause (migrate-out.ts "pause", node.ts pauseOwned).
  from.vm.pause();
  from.guest.stop();

  // Capture (migrate-out.ts "capture").
  const tCapture = tPause + tl.pauseToCaptureNs;
  scheduler.runUntil(tCapture);
  const probe = exchanges.length > 0 ? { ...probeOffset(exchanges), probeToPauseNs: src.rawNs() - lastProbeRawNs } : null;
  const snapshot = captureSnapshot(from.vm, from.guest, {
    migrationId: o.migrationId ?? "m-1",
    vmId: "vm-1",
    generation: o.generation ?? 1n,
    hostMaxerrorNs: src.maxerrorNs(),
    probe,
  });
  // One-sided durations start at the snapshot's clock read, on the source's raw clock.
  const captureRawNs = src.rawNsOfTsc(snapshot.hostTsc);

  // Transfer round trip (migrate-out.ts "sendTransfer", migrate-in.ts transfer()).
  const tSend = tCapture + tl.captureToSendNs;
  scheduler.runUntil(tSend);
  const sendRaw = src.rawNs();
  snapshot.sourceCaptureToSendNs = sendRaw - captureRawNs;
  const tRecv = tSend + tl.transitNs;
  scheduler.runUntil(tRecv);
  const receiveRawNs = dst.rawNs();
  const tReply = tRecv + tl.holdNs;
  scheduler.runUntil(tReply);
  const holdNs = dst.rawNs() - receiveRawNs;
  const tAck = tReply + tl.returnNs;
  scheduler.runUntil(tAck);
  const transferRttNs = src.rawNs() - sendRaw;

  // Commit → restore and resume at one instant (migrate-in.ts restoreAndResume, node.ts adopt).
  const tResume = tAck + tl.ackToRestoreNs;
  const oneSidedLegs = () => {
    const legs: Pick<OneSidedInputs, "commit" | "anchors"> = {};
    if (tl.commitGapNs !== undefined) {
      const gap = tl.commitGapNs < tl.ackToRestoreNs ? tl.commitGapNs : tl.ackToRestoreNs;
      legs.commit = {
        destinationAnswerToCommitNs: dst.rawNsAt(tResume) - dst.rawNsAt(tReply),
        sourceAnswerToCommitNs: src.rawNsAt(tAck + gap) - src.rawNsAt(tAck),
      };
    }
    if (tl.anchorLeadNs !== undefined && tl.anchorBackLegNs !== undefined) {
      const tOut = tPause - tl.anchorLeadNs;
      const tIn = tOut + tl.anchorBackLegNs;
      if (tOut >= 0n && tIn <= tSend)
        legs.anchors = [{ destinationAnswerToReceiveNs: dst.rawNsAt(tRecv) - dst.rawNsAt(tOut), sourceAnswerToSendNs: src.rawNsAt(tSend) - src.rawNsAt(tIn) }];
    }
    return legs;
  };
  scheduler.runUntil(tResume);
  const vm = new EmulatedVm(dst, { vcpus: snapshot.vcpuCount, guestTscKhz: snapshot.guestTscKhz });
  const result = restoreSnapshot(vm, snapshot, {
    policy: o.policy,
    ...(o.capNs !== undefined ? { capNs: o.capNs } : {}),
    estimate: (at): BlackoutEstimate =>
      estimateBlackout(o.estimator, {
        sourceRealtimeNs: snapshot.hostRealtimeNs,
        sourceMaxerrorNs: snapshot.hostMaxerrorNs,
        destinationRealtimeNs: at.destinationRealtimeNs,
        destinationMaxerrorNs: dst.maxerrorNs(),
        probe: snapshot.probe,
        oneSided: () => ({
          sourceCaptureToSendNs: snapshot.sourceCaptureToSendNs,
          transferRttNs,
          destinationHoldNs: holdNs,
          destinationReceiveToNowNs: dst.rawNs() - receiveRawNs,
          ...oneSidedLegs(),
        }),
      }),
  });
  const guest = new Guest(vm, scheduler, o.guestOptions, snapshot.guest);
  const to: Live = { host: dst, vm, guest };
  o.beforeResume?.(to);
  vm.resume();
  if (o.startGuest) {
    guest.start(false);
    guest.resumeTimers();
  }
  return { to, snapshot, result, tPause, tCapture, tResume };
}

/**
 * Runs one migration of `s` and reports every vCPU's clocks before, ideal and after. Throws what
 * the core throws (e.g. a destination that cannot run the guest's TSC rate).
 */
export function runMigration(s: Scenario): Outcome {
  const clock = new SimClock(0n, EPOCH_NS);
  const scheduler = new SimScheduler(clock);
  const src = makeHost("src", clock, s.src);
  const dst = makeHost("dst", clock, s.dst);
  const guestKhz = s.guestTscKhz;

  const srcVm = new EmulatedVm(src, { vcpus: s.vcpus, ...(guestKhz !== undefined ? { guestTscKhz: guestKhz } : {}) });
  const guest = new Guest(srcVm, scheduler, quietGuestOptions());
  s.vcpuOffsetDelta.forEach((d, i) => {
    if (i < s.vcpus && d !== 0n) srcVm.setTscOffset(i, BigInt.asUintN(64, srcVm.getTscOffset(i) + d));
  });

  // The guest's last reads before the pause.
  clock.advanceTo(clock.monotonicNs() + s.timeline.runNs);
  const srcRecords: PvclockRecord[] = [];
  const atPause: { tsc: bigint; kvm: bigint }[] = [];
  for (let i = 0; i < s.vcpus; i++) {
    const rec = srcVm.pvclock.guestRead(i);
    const tsc = srcVm.readGuestTsc(i);
    srcRecords.push(rec);
    atPause.push({ tsc, kvm: pvclockReadCycles(rec, tsc) });
  }

  const m = migrateGuest(scheduler, { host: src, vm: srcVm, guest }, dst, {
    policy: s.policy,
    estimator: s.estimator,
    ...(s.capNs !== undefined ? { capNs: s.capNs } : {}),
    timeline: s.timeline,
    guestOptions: quietGuestOptions(),
    startGuest: false,
  });
  const { snapshot, result, tPause, tCapture, tResume } = m;
  const dstVm = m.to.vm;

  const fracSrc = src.info.vendor.fracBits;
  const vcpus: VcpuOutcome[] = [];
  for (let i = 0; i < s.vcpus; i++) {
    const tscIdeal = emulatedTruth(src).guestTscAt(srcVm, i, tResume);
    const kvmIdeal = pvclockReadCycles(srcRecords[i] as PvclockRecord, tscIdeal);
    const tscAfter = dstVm.readGuestTsc(i);
    const kvmAfter = pvclockReadCycles(dstVm.pvclock.guestRead(i), tscAfter);
    const tscErrCycles = s64(tscAfter - tscIdeal);
    const p = atPause[i] as { tsc: bigint; kvm: bigint };
    vcpus.push({
      tscAtPause: p.tsc,
      kvmAtPause: p.kvm,
      tscIdeal,
      kvmIdeal,
      tscAfter,
      kvmAfter,
      tscErrCycles,
      tscErrNs: cyclesToNs(tscErrCycles, src.info.tscKhz, srcVm.getTscRatio(i), fracSrc),
      kvmErrNs: s64(kvmAfter - kvmIdeal),
    });
  }
  const crystal = crystalModel(s.src);
  return {
    scenario: s,
    snapshot,
    result,
    vcpus,
    src,
    dst,
    srcVm,
    dstVm,
    clock,
    tPause,
    tCapture,
    tResume,
    trueAdvanceNs: tResume - tCapture,
    skewDeltaNs: dst.skew.offsetAt(tResume) - src.skew.offsetAt(tCapture),
    srcCrystalDeltaNs: offsetAt(crystal, tResume) - offsetAt(crystal, tCapture),
  };
}
