// Embedding tscmig: migrate a VM's clocks between two emulated hosts and check the guest's history.
//
// Uses only the package's public API (`import … from "tscmig"`), as a VMM would: build two hosts on
// simulated time (the destination's realtime 5 ms ahead), boot a guest that disciplines its clock
// against a reference time server, record what it reads every 10 ms, migrate it (pause, capture the
// snapshot, estimate the blackout on the destination, restore under a policy, resume), and hand the
// recorded history to the checker, which proves invariants I1–I9 or names each violation.
//
// Two runs: the upstream KVM algorithm with a guest that ignores migrations (Linux today), which the
// checker must catch claiming a bound that excludes the truth (I4), and `advance` with the
// `one-sided` estimator and a guest that widens its bound by what the destination publishes.
//
//   npm run build && node --import ./test/helpers/ts-register.mjs examples/migrate-and-check.ts
//   (from an installed package: any TypeScript runner, or compile it with tsc)

import {
  captureSnapshot,
  type ChaosEvent,
  type ChaosHistory,
  checkHistory,
  EmulatedHost,
  EmulatedVm,
  emulatedTruth,
  estimateBlackout,
  type EstimatorName,
  Guest,
  type GuestOptions,
  type GuestSample,
  type PolicyName,
  pvclockReadCycles,
  restoreSnapshot,
  SimClock,
  SimScheduler,
} from "tscmig";

const EPOCH_NS = 1_767_225_600_000_000_000n;
const MS = 1_000_000n;
const VM = "vm-1";

interface Case {
  policy: PolicyName;
  estimator: EstimatorName;
  migrationHandling: boolean;
}

/** One migration from "src" to "dst" under `c`, recorded as the checker reads it. */
export function migrateAndRecord(c: Case): ChaosHistory {
  const clock = new SimClock(0n, EPOCH_NS);
  const sched = new SimScheduler(clock);
  const host = (name: string, skewNs: bigint, tscKhz: bigint) =>
    new EmulatedHost({ name, clock, epochNs: EPOCH_NS, tscKhz, skew: { kind: "constant", offsetNs: skewNs }, maxerrorNs: skewNs + 1n * MS });
  const src = host("src", 0n, 2_000_000n);
  const dst = host("dst", 5n * MS, 2_500_000n);
  const events: ChaosEvent[] = [];
  const samples: GuestSample[] = [];
  for (const h of [src, dst])
    events.push({ kind: "hostClock", trueNs: 0n, daemon: h.info.name, model: { kind: "constant", offsetNs: h.realtimeNsAt(0n) - EPOCH_NS }, maxerrorNs: h.maxerrorNs() });

  const options: GuestOptions = {
    clocksource: "kvm-clock",
    migrationHandling: c.migrationHandling,
    handlingMode: "widen",
    watchVmclock: true,
    pollIntervalNs: 1_000n * MS,
    resyncDelayNs: 100n * MS,
    ntpSource: () => ({ realtimeNs: EPOCH_NS + clock.monotonicNs(), maxerrorNs: 100_000n }),
    driftAllowancePpm: 50n,
  };
  let at = { host: src, guest: new Guest(new EmulatedVm(src, { vcpus: 2 }), sched, options), generation: 1n };
  events.push({ kind: "vm", trueNs: 0n, daemon: "src", vmId: VM, vcpus: 2, guestTscKhz: at.guest.vm.guestTscKhz, clocksource: "kvm-clock", migrationHandling: c.migrationHandling, handlingMode: "widen" });
  events.push({ kind: "run", trueNs: 0n, daemon: "src", vmId: VM, generation: 1n });
  at.guest.start();
  const record = (untilNs: bigint) => {
    for (let t = clock.monotonicNs() + 10n * MS; t <= untilNs; t += 10n * MS) {
      sched.runUntil(t);
      const vm = at.guest.vm;
      samples.push({
        trueNs: t,
        daemon: at.host.info.name,
        vmId: VM,
        generation: at.generation,
        vcpus: [0, 1],
        tsc: [vm.readGuestTsc(0), vm.readGuestTsc(1)],
        kvmclockNs: [at.guest.readKvmclock(0), at.guest.readKvmclock(1)],
        bounded: at.guest.now(),
        guestTscKhz: vm.guestTscKhz,
      });
    }
  };
  record(1_000n * MS);

  // Source: pause, capture. 20 ms of final memory copy, then the snapshot's round trip and a Commit.
  sched.runUntil(clock.monotonicNs() + 5n * MS);
  const tPause = clock.monotonicNs();
  const srcVm = at.guest.vm;
  srcVm.pause();
  at.guest.stop();
  events.push({ kind: "stop", trueNs: tPause, daemon: "src", vmId: VM, generation: 1n, why: "migration" });
  const pauseRecord = srcVm.pvclock.guestRead(0);
  const snap = captureSnapshot(srcVm, at.guest, { migrationId: "m-1", vmId: VM, generation: 2n, hostMaxerrorNs: src.maxerrorNs(), probe: null });
  const captureRawNs = src.rawNsOfTsc(snap.hostTsc);
  const [tSend, tRecv, tReply, tAck] = [tPause + 20n * MS, tPause + 21n * MS, tPause + 21_300_000n, tPause + 21_800_000n];
  const tResume = tAck + 600_000n;
  snap.sourceCaptureToSendNs = src.rawNsAt(tSend) - captureRawNs;
  sched.runUntil(tResume);

  // Destination: restore under the policy, with the blackout measured by the estimator, then resume.
  const vm = new EmulatedVm(dst, { vcpus: snap.vcpuCount, guestTscKhz: snap.guestTscKhz });
  const result = restoreSnapshot(vm, snap, {
    policy: c.policy,
    estimate: (now) =>
      estimateBlackout(c.estimator, {
        sourceRealtimeNs: snap.hostRealtimeNs,
        sourceMaxerrorNs: snap.hostMaxerrorNs,
        destinationRealtimeNs: now.destinationRealtimeNs,
        destinationMaxerrorNs: dst.maxerrorNs(),
        probe: null,
        oneSided: () => ({
          sourceCaptureToSendNs: snap.sourceCaptureToSendNs,
          transferRttNs: src.rawNsAt(tAck) - src.rawNsAt(tSend),
          destinationHoldNs: dst.rawNsAt(tReply) - dst.rawNsAt(tRecv),
          destinationReceiveToNowNs: now.destinationRawNs - dst.rawNsAt(tRecv),
        }),
      }),
  });
  at = { host: dst, guest: new Guest(vm, sched, options, snap.guest), generation: 2n };
  at.guest.onHandled = (h) => events.push({ kind: "handled", trueNs: clock.monotonicNs(), daemon: "dst", vmId: VM, ...h });
  vm.resume();
  at.guest.start(false);
  at.guest.resumeTimers();
  events.push({ kind: "run", trueNs: tResume, daemon: "dst", vmId: VM, generation: 2n });

  const tscIdeal = emulatedTruth(src).guestTscAt(srcVm, 0, tResume);
  const tscAfter = vm.readGuestTsc(0);
  events.push({
    kind: "migration",
    trueNs: tResume,
    migrationId: "m-1",
    vmId: VM,
    source: "src",
    destination: "dst",
    outcome: "committed",
    policy: c.policy,
    estimator: c.estimator,
    pauseTrueNs: tPause,
    resumeTrueNs: tResume,
    estimatedBlackoutNs: result.estimate.estimatedNs,
    advancedNs: result.advancedNs,
    errorBoundNs: result.errorBoundNs,
    capped: result.capped,
    disruptionMarker: result.marker,
    tscAtPause: snap.tsc[0]!,
    tscAtResume: tscAfter,
    tscIdealAtResume: tscIdeal,
    kvmclockAtResumeNs: pvclockReadCycles(vm.pvclock.guestRead(0), tscAfter),
    kvmclockIdealAtResumeNs: pvclockReadCycles(pauseRecord, tscIdeal),
    guestTscKhz: snap.guestTscKhz,
    hostsHonest: true,
    path: "unary",
  });
  record(tResume + 600n * MS);
  events.sort((a, b) => (a.trueNs < b.trueNs ? -1 : a.trueNs > b.trueNs ? 1 : 0));
  return {
    meta: {
      mode: "sim",
      seed: 0n,
      epochNs: EPOCH_NS,
      daemons: [src, dst].map((h) => ({ name: h.info.name, tscKhz: h.info.tscKhz, crystalSlopePpm: 0 })),
      ntpSource: "reference",
      sampleIntervalNs: 10n * MS,
      scenario: { policy: c.policy, estimator: c.estimator, migrationHandling: c.migrationHandling },
    },
    samples,
    events,
  };
}

const CASES: Case[] = [
  { policy: "kvm-realtime", estimator: "wallclock", migrationHandling: false },
  { policy: "advance", estimator: "one-sided", migrationHandling: true },
];

for (const c of CASES) {
  const result = checkHistory(migrateAndRecord(c));
  const m = result.migrations[0]!;
  const found = Object.entries(result.counts).map(([k, n]) => `${k}×${n}`).join(" ") || "none";
  console.log(`${c.policy} + ${c.estimator}, guest migration handling ${c.migrationHandling ? "on" : "off"}:`);
  console.log(`  blackout ${m.blackoutNs} ns, estimated ${m.estimatedBlackoutNs} ns; TSC error at resume ${m.tscErrorNs} ns, bound ${m.errorBoundNs} ns`);
  console.log(`  checked ${result.checked.samples} samples, ${result.checked.migrations} migration(s); violations: ${found}`);
  const first = result.violations[0];
  if (first) console.log(`  first: ${first.invariant} ${first.message}`);
}
