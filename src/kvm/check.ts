// `tscmig kvm check`: the emulated model against the kernel. For each policy × blackout × skew, a
// real source VM running the project's guest is paused and captured; after the blackout its memory,
// registers and kvmclock MSRs go into a fresh real VM, which gets the policy's clock step
// (KVM_SET_CLOCK), KVM_KVMCLOCK_CTRL on every vCPU and the doorbell, and resumes. The guest's first
// samples give the kvmclock it really read; the model (predict.ts), fed the same inputs, says what it
// should have read at the same TSC. Reported: |real − predicted| (p50/p99/max), the stopped flag as
// each real vCPU saw it, doorbell deliveries, the TSC verdict; and the KVM_RUN round trip and the
// doorbell's latency on this host.
//
// Skew: both VMs live on one host and share CLOCK_REALTIME, so a destination whose realtime runs
// `skew` ahead is emulated by handing KVM a source realtime `skew` earlier (the kernel then adds
// blackout + skew, as a skewed host's would), and by adding `skew` to what the destination reads.

import { TscmigError } from "../shared/errors.js";
import { sleep, type Scheduler } from "../shared/time/clock.js";
import { KVM_CLOCK_REALTIME } from "../shared/kvm/set-clock.js";
import { PVCLOCK_RECORD_BYTES, pvclockReadCycles } from "../shared/kvm/pvclock.js";
import type { ClockData } from "../shared/hypervisor/kvm/abi.js";
import { KVM_DEVICE_PATH, KvmSystem, KvmUnavailable } from "../shared/hypervisor/kvm/device.js";
import { LAYOUT } from "../shared/hypervisor/kvm/guest.js";
import { kvmInfo } from "../shared/hypervisor/kvm/info.js";
import { KvmVm, type KvmVmState } from "../shared/hypervisor/kvm/kvm-vm.js";
import { predictRestore } from "./predict.js";

/**
 * The policies' clock steps. `advance` and `freeze` hand KVM a computed clock without a realtime,
 * as restore.ts does; KVM then starts it at an instant inside the ioctl that userspace cannot see.
 * The `-anchored` variants hand the same computed clock with KVM_CLOCK_REALTIME and the host
 * realtime at which it was computed, so KVM adds the time it took to get there (one host's
 * realtime on both sides: no skew enters).
 */
export type CheckPolicy = "kvm-realtime" | "advance" | "freeze" | "advance-anchored" | "freeze-anchored";
export const CHECK_POLICIES: readonly CheckPolicy[] = ["kvm-realtime", "advance", "freeze", "advance-anchored", "freeze-anchored"];

export interface CheckOptions {
  /** The KVM device (default /dev/kvm). */
  device?: string;
  vcpus: number;
  policies: readonly CheckPolicy[];
  blackoutsNs: readonly bigint[];
  skewsNs: readonly bigint[];
  /** Waits the blackouts (real time in the CLI). */
  scheduler: Scheduler;
  progress?: (line: string) => void;
}

export interface CaseResult {
  policy: CheckPolicy;
  blackoutNs: string;
  skewNs: string;
  /** The clock step handed to KVM_SET_CLOCK. */
  step: { clock: string; flags: number; realtime: string };
  /** real − predicted kvmclock per vCPU at its first samples after resume (ns). */
  diffNs: number[];
  /** Whether the prediction is sharp (REALTIME with a positive advance) or ± half the ioctl window. */
  sharp: boolean;
  ioctlWindowNs: number;
  /** Per vCPU: stops the guest saw since the restore (1 = exactly once), predicted flag. */
  stoppedSeen: number[];
  stoppedPredicted: boolean[];
  actedDelta: number;
  doorbells: number[];
  /** Guest kvmclock at resume minus the last value it read before the pause, vCPU 0 (ns). */
  guestStepNs: number;
}

export interface Stats {
  n: number;
  p50: number;
  p99: number;
  max: number;
  meanSigned: number;
}

export interface CheckReport {
  host: { flavour: string; tscKhz: string; offsetsHonoured: boolean };
  vcpus: number;
  cases: CaseResult[];
  summary: Record<CheckPolicy | "all" | "sharp", Stats>;
  /** Unsharp cases whose difference lies inside ± half the ioctl window (+1 µs). */
  insideWindow: { ok: number; of: number };
  stoppedExactlyOnce: { ok: number; of: number };
  doorbellExactlyOnce: { ok: number; of: number };
  tsc: string;
  measurements: { kvmRunRoundTripNs: { mean: number; min: number; p50: number; p99: number; max: number; runs: number }; doorbellLatencyNs: { fromInterrupt: Stats; fromRing: Stats } };
  goal: { p99Ns: number; met: boolean };
}

function stats(values: readonly number[]): Stats {
  if (values.length === 0) return { n: 0, p50: 0, p99: 0, max: 0, meanSigned: 0 };
  const abs = values.map(Math.abs).sort((a, b) => a - b);
  const q = (p: number) => abs[Math.min(abs.length - 1, Math.ceil(p * abs.length) - 1)] as number;
  return { n: values.length, p50: q(0.5), p99: q(0.99), max: abs.at(-1) as number, meanSigned: values.reduce((a, b) => a + b, 0) / values.length };
}

/**
 * Runs every vCPU for at least one more complete sample, then pauses; with `doorbell`, also until
 * vCPU 0's doorbell was injected and a sample followed it. (A vCPU that never ran reports itself not
 * ready for injection, so the first doorbell waits for its first exit.)
 */
async function sampleOnce(vm: KvmVm, doorbell = false): Promise<void> {
  const targets = Array.from({ length: vm.vcpuCount }, (_, i) => vm.stats(i).hltExits + 1);
  vm.resume();
  try {
    for (let i = 0; i < vm.vcpuCount; i++) await vm.waitForHlts(i, targets[i] as number, 20_000);
    if (doorbell) {
      while (vm.doorbellPending(0)) await vm.waitForRuns(0, vm.stats(0).runs + 1, 20_000);
      await vm.waitForHlts(0, vm.stats(0).hltExits + 1, 20_000);
    }
  } finally {
    vm.pause();
  }
}

/** The kvmclock the guest itself read at the capture (restore.ts guestKvmclockAtSnapshot). */
function guestKvmclockAtCapture(vm: KvmVm, state: KvmVmState): bigint {
  let max = state.clock.clock;
  for (let i = 0; i < state.vcpus; i++) {
    const ns = pvclockReadCycles(vm.pvclock(i), state.guestTsc[i] as bigint);
    if (ns > max) max = ns;
  }
  return max;
}

function clockStep(policy: CheckPolicy, baseNs: bigint, src: ClockData, dstRealtimeNs: bigint, skewNs: bigint): { clock: bigint; flags: number; realtime: bigint } {
  if (policy === "kvm-realtime") return { clock: baseNs, flags: KVM_CLOCK_REALTIME, realtime: src.realtime - skewNs };
  const anchored = policy.endsWith("-anchored");
  let clock = baseNs;
  if (policy.startsWith("advance")) {
    // The destination's (skewed) realtime minus the source's: blackout + skew, across hosts.
    const estimateNs = dstRealtimeNs + skewNs - src.realtime;
    clock += estimateNs > 0n ? estimateNs : 0n;
  }
  return anchored ? { clock, flags: KVM_CLOCK_REALTIME, realtime: dstRealtimeNs } : { clock, flags: 0, realtime: 0n };
}

interface CaseInput {
  policy: CheckPolicy;
  blackoutNs: bigint;
  skewNs: bigint;
}

async function runCase(sys: KvmSystem, src: KvmVm, c: CaseInput, tscKhz: bigint, scheduler: Scheduler): Promise<CaseResult> {
  await sampleOnce(src);
  const state = src.capture();
  const baseNs = guestKvmclockAtCapture(src, state);
  const lastSeen = pvclockReadCycles(src.report(0).record ?? src.pvclock(0), src.report(0).tsc);
  const actedBefore = src.acted();
  const stoppedBefore = Array.from({ length: state.vcpus }, (_, i) => src.report(i).stopped);
  if (c.blackoutNs > 0n) await sleep(scheduler, c.blackoutNs);
  const dst = KvmVm.restore(sys, state, { paceUs: 0, threads: Math.min(state.vcpus, 2) });
  try {
    const before = src.getClock(); // (realtime, host TSC) pair: src has run, so it has the master clock
    const step = clockStep(c.policy, baseNs, state.clock, before.realtime, c.skewNs);
    dst.setClock(step, { floorNs: baseNs, nowRealtimeNs: before.realtime });
    const after = src.getClock();
    for (let i = 0; i < dst.vcpuCount; i++) dst.kvmclockCtrl(i);
    dst.ringDoorbell(0);
    await sampleOnce(dst, true);
    const pvclock = state.memory.slice(LAYOUT.pvclockGpa, LAYOUT.pvclockGpa + state.vcpus * PVCLOCK_RECORD_BYTES);
    const prediction = predictRestore({
      vcpus: state.vcpus,
      tscKhz,
      pvclock,
      refRealtimeNs: before.realtime,
      refHostTsc: before.hostTsc,
      ioctlHostTsc: (before.hostTsc + after.hostTsc) / 2n,
      setClock: step,
    });
    const reports = Array.from({ length: dst.vcpuCount }, (_, i) => dst.report(i));
    const diffNs = reports.map((r, i) => Number(pvclockReadCycles(r.record ?? dst.pvclock(i), r.tsc) - prediction.kvmclockAt(i, r.tsc)));
    // REALTIME with an advance KVM will find positive (its real-time read comes after `before`).
    const sharp = (step.flags & KVM_CLOCK_REALTIME) !== 0 && before.realtime >= step.realtime;
    return {
      policy: c.policy,
      blackoutNs: c.blackoutNs.toString(),
      skewNs: c.skewNs.toString(),
      step: { clock: step.clock.toString(), flags: step.flags, realtime: step.realtime.toString() },
      diffNs,
      sharp,
      ioctlWindowNs: Number(((after.hostTsc - before.hostTsc) * 1_000_000n) / tscKhz),
      stoppedSeen: reports.map((r, i) => r.stopped - (stoppedBefore[i] as number)),
      stoppedPredicted: reports.map((_, i) => prediction.stopped(i)),
      actedDelta: dst.acted() - actedBefore,
      doorbells: reports.map((r) => r.doorbells),
      guestStepNs: Number(pvclockReadCycles(reports[0]?.record ?? dst.pvclock(0), reports[0]?.tsc ?? 0n) - lastSeen),
    };
  } finally {
    await dst.close();
  }
}

/** The bare KVM_RUN round trip: a vCPU that only HLTs, run back to back. */
async function measureRoundTrip(sys: KvmSystem, runs: number): Promise<CheckReport["measurements"]["kvmRunRoundTripNs"]> {
  const vm = KvmVm.create(sys, { vcpus: 1, threads: 1, paceUs: 0, program: "idle" });
  try {
    vm.resume();
    await vm.waitForRuns(0, runs, 60_000);
    vm.pause();
    const t = vm.timing(0);
    const [p50, p99] = vm.runPercentiles([0.5, 0.99]) as [number, number];
    return { mean: t.meanNs, min: t.minNs, p50, p99, max: t.maxNs, runs: t.runs };
  } finally {
    await vm.close();
  }
}

/** Doorbells into an idle guest: KVM_INTERRUPT → handler, and ring (main thread) → handler. */
async function measureDoorbell(sys: KvmSystem, rings: number, tscKhz: bigint): Promise<CheckReport["measurements"]["doorbellLatencyNs"]> {
  const vm = KvmVm.create(sys, { vcpus: 1, threads: 1, paceUs: 20_000 });
  const fromInterrupt: number[] = [];
  const fromRing: number[] = [];
  try {
    vm.resume();
    await vm.waitForRuns(0, 2, 20_000);
    for (let k = 0; k < rings; k++) {
      const hlts = vm.stats(0).hltExits;
      const ringRealtime = sys.libc.clockNs(0);
      vm.ringDoorbell(0);
      await vm.waitForHlts(0, hlts + 1, 20_000);
      const pair = vm.getClock();
      const r = vm.report(0);
      const handlerRealtime = pair.realtime - ((pair.hostTsc - r.doorbellTsc) * 1_000_000n) / tscKhz;
      fromInterrupt.push(Number(handlerRealtime - vm.timing(0).injectRealtimeNs));
      fromRing.push(Number(handlerRealtime - ringRealtime));
    }
    vm.pause();
  } finally {
    await vm.close();
  }
  return { fromInterrupt: stats(fromInterrupt), fromRing: stats(fromRing) };
}

export async function runCheck(o: CheckOptions): Promise<CheckReport> {
  const device = o.device ?? KVM_DEVICE_PATH;
  const info = await kvmInfo({ device });
  if (info.problem !== null) throw new KvmUnavailable(info.problem, `kvm check needs a usable KVM device: ${info.message ?? device}`);
  if (!info.available || info.checks === null) throw new TscmigError("unavailable", `kvm check needs a usable KVM device: ${device}: ${info.verdict.notes.join("; ")}`);
  const tscKhz = BigInt(info.checks.tscKhz);
  const sys = KvmSystem.open(device);
  try {
    const src = KvmVm.create(sys, { vcpus: o.vcpus, threads: Math.min(o.vcpus, 2), paceUs: 0 });
    const cases: CaseResult[] = [];
    try {
      for (const policy of o.policies)
        for (const blackoutNs of o.blackoutsNs)
          for (const skewNs of o.skewsNs) {
            const r = await runCase(sys, src, { policy, blackoutNs, skewNs }, tscKhz, o.scheduler);
            o.progress?.(`${policy} blackout ${blackoutNs} ns skew ${skewNs} ns: real − predicted ${r.diffNs.join(", ")} ns`);
            cases.push(r);
          }
    } finally {
      await src.close();
    }
    const measurements = { kvmRunRoundTripNs: await measureRoundTrip(sys, 2000), doorbellLatencyNs: await measureDoorbell(sys, 30, tscKhz) };
    return summarise(o, info.flavour, tscKhz, info.checks.tscOffset.honoured, cases, measurements);
  } finally {
    sys.close();
  }
}

function summarise(o: CheckOptions, flavour: string, tscKhz: bigint, honoured: boolean, cases: CaseResult[], measurements: CheckReport["measurements"]): CheckReport {
  const all = cases.flatMap((c) => c.diffNs);
  const summary = {
    all: stats(all),
    sharp: stats(cases.filter((c) => c.sharp).flatMap((c) => c.diffNs)),
    ...(Object.fromEntries(CHECK_POLICIES.map((p) => [p, stats(cases.filter((c) => c.policy === p).flatMap((c) => c.diffNs))])) as Record<CheckPolicy, Stats>),
  };
  const unsharp = cases.filter((c) => !c.sharp).flatMap((c) => c.diffNs.map((d) => Math.abs(d) <= c.ioctlWindowNs / 2 + 1000));
  const perVcpu = cases.flatMap((c) => c.stoppedSeen.map((s, i) => s === 1 && c.stoppedPredicted[i] === true));
  return {
    host: { flavour, tscKhz: tscKhz.toString(), offsetsHonoured: honoured },
    vcpus: o.vcpus,
    cases,
    summary,
    insideWindow: { ok: unsharp.filter(Boolean).length, of: unsharp.length },
    stoppedExactlyOnce: { ok: perVcpu.filter(Boolean).length + cases.filter((c) => c.actedDelta === 1).length, of: perVcpu.length + cases.length },
    doorbellExactlyOnce: { ok: cases.filter((c) => c.doorbells[0] === 1 && c.doorbells.slice(1).every((d) => d === 0)).length, of: cases.length },
    tsc: honoured ? "offsets honoured: TSC restores not yet cross-checked by this prototype" : "not applicable: offsets not honoured on this host (the guest TSC is the host TSC)",
    measurements,
    goal: { p99Ns: 1000, met: summary.sharp.p99 <= 1000 },
  };
}

const us = (ns: number) => `${(ns / 1000).toFixed(2)} µs`;

export function renderCheck(r: CheckReport): string {
  const lines = [`kvm check on ${r.host.flavour}, TSC ${r.host.tscKhz} kHz, ${r.vcpus} vCPUs, ${r.cases.length} restores`, ""];
  lines.push("policy             blackout      skew          real−predicted per vCPU (ns)     window   stopped/vCPU  acted  doorbell");
  for (const c of r.cases) {
    lines.push(
      `${c.policy.padEnd(16)} ${c.blackoutNs.padStart(11)}  ${c.skewNs.padStart(11)}   ${c.diffNs.map((d) => String(d).padStart(7)).join(" ").padEnd(30)}${c.sharp ? " " : "±"} ${us(c.ioctlWindowNs).padStart(9)}   ${c.stoppedSeen.join(",").padEnd(12)}  ${String(c.actedDelta).padStart(5)}  ${c.doorbells.join(",")}`,
    );
  }
  lines.push("", "|real − predicted| kvmclock at resume:");
  for (const k of ["sharp", ...CHECK_POLICIES, "all"] as const) {
    const s = r.summary[k];
    if (s.n === 0) continue;
    lines.push(`  ${k.padEnd(16)} n=${String(s.n).padStart(4)}  p50 ${us(s.p50).padStart(10)}  p99 ${us(s.p99).padStart(10)}  max ${us(s.max).padStart(10)}  mean signed ${us(s.meanSigned)}`);
  }
  lines.push(
    `  goal: p99 ≤ 1 µs where the prediction is sharp (REALTIME with a positive advance): ${r.goal.met ? "met" : "NOT met"}`,
    "  (real − predicted > 0 there is KVM_SET_CLOCK's own gap: it reads CLOCK_REALTIME after the TSC/raw-clock pair it bases kvmclock on, and adds that gap to the advance)",
    `  computed clocks without REALTIME and clamped advances are predicted ± half the ioctl window (userspace cannot see the instant inside KVM_SET_CLOCK): ${r.insideWindow.ok}/${r.insideWindow.of} inside it`,
    `stopped flag   ${r.stoppedExactlyOnce.ok}/${r.stoppedExactlyOnce.of} (every vCPU saw it once, as predicted; the VM acted once)`,
    `doorbell       ${r.doorbellExactlyOnce.ok}/${r.doorbellExactlyOnce.of} restores delivered it exactly once, to vCPU 0 only`,
    `TSC            ${r.tsc}`,
    `KVM_RUN        round trip (HLT guest) min ${us(r.measurements.kvmRunRoundTripNs.min)}, p50 ≤ ${us(r.measurements.kvmRunRoundTripNs.p50)}, p99 ≤ ${us(r.measurements.kvmRunRoundTripNs.p99)}, mean ${us(r.measurements.kvmRunRoundTripNs.mean)}, max ${us(r.measurements.kvmRunRoundTripNs.max)} over ${r.measurements.kvmRunRoundTripNs.runs} runs`,
    `doorbell       KVM_INTERRUPT → handler p50 ${us(r.measurements.doorbellLatencyNs.fromInterrupt.p50)}, p99 ${us(r.measurements.doorbellLatencyNs.fromInterrupt.p99)}; ring → handler p50 ${us(r.measurements.doorbellLatencyNs.fromRing.p50)}, p99 ${us(r.measurements.doorbellLatencyNs.fromRing.p99)}`,
  );
  return `${lines.join("\n")}\n`;
}
