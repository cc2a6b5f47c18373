// One live migration on simulated time, for the documentation's figures: two emulated hosts on one
// SimClock, a guest booted on the source and disciplined by NTP, pause → capture → Transfer round
// trip → Commit → restore → resume, with every duration an estimator sees measured on the host that
// measures it, exactly as the daemons do. Built only from the library's public API (src/index.ts),
// so the figures show what an embedder gets. True time moves only here: every figure is exact.

import {
  captureSnapshot,
  EmulatedHost,
  EmulatedVm,
  emulatedTruth,
  estimateBlackout,
  Guest,
  type BoundedNow,
  type EstimatorName,
  type GuestOptions,
  type OffsetModel,
  type PolicyName,
  type ProbeExchange,
  probeOffset,
  restoreSnapshot,
  type RestoreResult,
  SimClock,
  SimScheduler,
} from "../../src/index.js";

export const EPOCH_NS = 1_767_225_600_000_000_000n;
export const MS = 1_000_000n;

export interface HostSetup {
  /** Realtime error (constant) and the bound the host claims for it. */
  skewNs: bigint;
  maxerrorNs: bigint;
  /** TSC crystal rate error, ppm. */
  crystalPpm: number;
  tscKhz: bigint;
}

/** True-time durations of the protocol's steps. */
export interface Network {
  /** Pause → capture (the snapshot's KVM_GET_CLOCK). */
  pauseToCaptureNs: bigint;
  /** Capture → the Transfer leaves the source (the final dirty memory, measured on the source). */
  captureToSendNs: bigint;
  forwardNs: bigint;
  holdNs: bigint;
  backNs: bigint;
  /** Answer received → Commit sent, and the Commit's transit (the restore runs on its arrival). */
  commitGapNs: bigint;
  commitTransitNs: bigint;
  /** Probe exchanges before the pause (probe estimator): each leg and hold. */
  probeForwardNs: bigint;
  probeBackNs: bigint;
  probeHoldNs: bigint;
}

export interface Setup {
  policy: PolicyName;
  estimator: EstimatorName;
  capNs?: bigint;
  src: HostSetup;
  dst: HostSetup;
  net: Network;
  /** Guest run time before the pause, and after the resume. */
  beforeNs: bigint;
  afterNs: bigint;
  /** The guest's clock is sampled this often while it runs (0: no samples). */
  sampleEveryNs: bigint;
  guest: Partial<GuestOptions>;
}

export interface Sample {
  trueNs: bigint;
  now: BoundedNow;
}

export interface Run {
  samples: Sample[];
  pauseNs: bigint;
  resumeNs: bigint;
  result: RestoreResult;
  /** Guest TSC (vCPU 0) at resume − what the source would read then had it never paused, in ns. */
  tscErrorNs: bigint;
  /** The estimate minus the true capture → resume span. */
  estimateErrorNs: bigint;
  /** When the destination guest handled the migration and when it next synchronised NTP. */
  handledNs: bigint | null;
  resyncNs: bigint | null;
}

function host(name: string, clock: SimClock, h: HostSetup): EmulatedHost {
  const crystal: OffsetModel = h.crystalPpm === 0 ? { kind: "constant", offsetNs: 0n } : { kind: "drift", ppm: h.crystalPpm, fromNs: 0n };
  return new EmulatedHost({
    name,
    clock,
    epochNs: EPOCH_NS,
    tscKhz: h.tscKhz,
    vendor: "vmx",
    crystal,
    tsc0: 7_000_000_000_000n,
    rawBaseNs: 3_600_000_000_000n,
    skew: { kind: "constant", offsetNs: h.skewNs },
    maxerrorNs: h.maxerrorNs,
  });
}

function guestOptions(clock: SimClock, over: Partial<GuestOptions>): GuestOptions {
  return {
    clocksource: "kvm-clock",
    migrationHandling: true,
    handlingMode: "widen",
    watchVmclock: true,
    pollIntervalNs: 250n * MS,
    resyncDelayNs: 100n * MS,
    // A reference time server: true time, claiming 100 µs.
    ntpSource: () => ({ realtimeNs: EPOCH_NS + clock.monotonicNs(), maxerrorNs: 100_000n }),
    driftAllowancePpm: 50n,
    ...over,
  };
}

/** Runs one migration of a 2-vCPU VM under `s` and returns what the guest saw. */
export function simulate(s: Setup): Run {
  const clock = new SimClock(0n, EPOCH_NS);
  const sched = new SimScheduler(clock);
  const src = host("source", clock, s.src);
  const dst = host("destination", clock, s.dst);
  const samples: Sample[] = [];
  const opts = guestOptions(clock, s.guest);

  let guest = new Guest(new EmulatedVm(src, { vcpus: 2 }), sched, opts);
  guest.start();
  const sample = () => {
    if (guest.vm.running) samples.push({ trueNs: clock.monotonicNs(), now: guest.now() });
  };
  const every = (from: bigint, to: bigint) => {
    if (s.sampleEveryNs <= 0n) return;
    for (let t = from; t <= to; t += s.sampleEveryNs) {
      sched.runUntil(t);
      sample();
    }
  };
  const tPause = s.beforeNs;
  every(0n, tPause);
  const n = s.net;

  // Probe exchanges just before the pause: realtime stamps on each host (hosts are pure functions of
  // true time, so the exchanges can be evaluated now).
  const exchanges: ProbeExchange[] = [];
  let lastProbeEndNs = 0n;
  if (s.estimator === "probe") {
    const one = n.probeForwardNs + n.probeHoldNs + n.probeBackNs;
    for (let k = 4n; k >= 1n; k--) {
      const t = tPause - k * (one + MS);
      exchanges.push({
        t1: src.realtimeNsAt(t),
        t2: dst.realtimeNsAt(t + n.probeForwardNs),
        t3: dst.realtimeNsAt(t + n.probeForwardNs + n.probeHoldNs),
        t4: src.realtimeNsAt(t + one),
      });
      lastProbeEndNs = t + one;
    }
  }

  guest.vm.pause();
  guest.stop();
  const srcVm = guest.vm;
  const tCapture = tPause + n.pauseToCaptureNs;
  sched.runUntil(tCapture);
  const probe = exchanges.length > 0 ? { ...probeOffset(exchanges), probeToPauseNs: src.rawNsAt(tCapture) - src.rawNsAt(lastProbeEndNs) } : null;
  const snap = captureSnapshot(srcVm, guest, { migrationId: "m-1", vmId: "vm-1", generation: 1n, hostMaxerrorNs: src.maxerrorNs(), probe });
  const tSend = tCapture + n.captureToSendNs;
  const tRecv = tSend + n.forwardNs;
  const tReply = tRecv + n.holdNs;
  const tAck = tReply + n.backNs;
  const tResume = tAck + n.commitGapNs + n.commitTransitNs;
  snap.sourceCaptureToSendNs = src.rawNsAt(tSend) - src.rawNsOfTsc(snap.hostTsc);
  sched.runUntil(tResume);

  const vm = new EmulatedVm(dst, { vcpus: snap.vcpuCount, guestTscKhz: snap.guestTscKhz });
  const result = restoreSnapshot(vm, snap, {
    policy: s.policy,
    ...(s.capNs !== undefined ? { capNs: s.capNs } : {}),
    estimate: (at) =>
      estimateBlackout(s.estimator, {
        sourceRealtimeNs: snap.hostRealtimeNs,
        sourceMaxerrorNs: snap.hostMaxerrorNs,
        destinationRealtimeNs: at.destinationRealtimeNs,
        destinationMaxerrorNs: dst.maxerrorNs(),
        probe: snap.probe,
        oneSided: () => ({
          sourceCaptureToSendNs: snap.sourceCaptureToSendNs,
          transferRttNs: src.rawNsAt(tAck) - src.rawNsAt(tSend),
          destinationHoldNs: dst.rawNsAt(tReply) - dst.rawNsAt(tRecv),
          destinationReceiveToNowNs: at.destinationRawNs - dst.rawNsAt(tRecv),
          commit: {
            destinationAnswerToCommitNs: dst.rawNsAt(tResume) - dst.rawNsAt(tReply),
            sourceAnswerToCommitNs: src.rawNsAt(tAck + n.commitGapNs) - src.rawNsAt(tAck),
          },
        }),
      }),
  });
  guest = new Guest(vm, sched, opts, snap.guest);
  let handledNs: bigint | null = null;
  let resyncNs: bigint | null = null;
  guest.onHandled = () => (handledNs ??= clock.monotonicNs());
  guest.onSync = () => (resyncNs ??= clock.monotonicNs());
  const tscIdeal = emulatedTruth(src).guestTscAt(srcVm, 0, tResume);
  const tscAfter = emulatedTruth(dst).guestTscAt(vm, 0, tResume);
  vm.resume();
  guest.start(false);
  guest.resumeTimers();
  sample();
  every(tResume + s.sampleEveryNs, tResume + s.afterNs);

  const cycles = BigInt.asIntN(64, tscAfter - tscIdeal);
  return {
    samples,
    pauseNs: tPause,
    resumeNs: tResume,
    result,
    tscErrorNs: (cycles * 1_000_000n) / snap.guestTscKhz,
    estimateErrorNs: result.estimate.estimatedNs - (tResume - tCapture),
    handledNs,
    resyncNs,
  };
}
