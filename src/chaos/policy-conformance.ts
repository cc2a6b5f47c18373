// I9, policy conformance: at resume, each policy's guest clocks match its definition (docs/time-across-migration.md#the-four-policies,
// docs/invariants.md). I3 asks whether a restore's error stayed within the bound it reported; I9 asks
// whether it did what its policy says at all — a `freeze` that quietly advances the TSC, or an
// `advance` whose kvmclock moves by something else than its TSC, stays inside a generous bound and
// passes I3. Checked per restore from what the harness saw at the hypervisor seam (`restoreClocks`):
//
//   freeze          TSC and kvmclock where they stopped (the snapshot), within one cycle
//   advance         both moved by the reported advance, which is the blackout estimate
//   advance-capped  both moved by the reported advance, min(estimate, cap), `capped` iff it was cut
//   kvm-realtime    kvmclock moved as KVM_SET_CLOCK with KVM_CLOCK_REALTIME moves it (set-clock.ts)
//                   for the prescribed realtime argument — the source's realtime in the snapshot
//                   (wallclock), else the destination's realtime minus the estimate — and the
//                   destination's realtime at that ioctl; the TSC moved by as much at its own rate
//   always          at the first resume, the kvmclock each vCPU's guest computes from its pvclock
//                   record and TSC equals KVM's kvmclock
//
// "Moved" is measured at the instant the restore returned, before any vCPU ran, so time the
// destination spends between restore and resume (journal writes, a stalled process) is not counted
// against the policy: both clocks run through it alike.
//
// Rounding allowed, and why: a TSC advance is floor(advance · rate) cycles (one cycle); kvmclock
// kept as the same function of the TSC (KVM_SET_CLOCK_GUEST) moves by the advance as the pvclock
// record's kHz-rounded rate scales it (advance/kHz + 1 ppm, plus a cycle and 2 ns of scaling); a
// pvclock record extrapolates from the master clock pair the restore set, at its kHz-rounded rate,
// so at resume it may stand apart from KVM's clock by as much over the time since (plus 2 ns).

import { KVM_CLOCK_REALTIME, setClockAdvance } from "../shared/kvm/set-clock.js";
import { s64, u64 } from "../shared/kvm/u64.js";
import type { ChaosEvent } from "./history.js";

export type RestoreClocks = Extract<ChaosEvent, { kind: "restoreClocks" }>;

export interface ConformanceFinding {
  message: string;
  vcpu?: number;
  values: Record<string, string | number | boolean>;
}

const abs = (x: bigint) => (x < 0n ? -x : x);
/** The destination's crystal may run this far off while the restore itself takes time (ppm). */
const DRIFT_PPM = 500n;

/** Cycles in `ns` at hostKhz · ratio / 2^fracBits kHz (floor), as a restore advances a TSC. */
function cyclesIn(ns: bigint, e: RestoreClocks, ratio: bigint): bigint {
  return (ns * e.sourceHostTscKhz * ratio) / (1_000_000n << BigInt(e.sourceFracBits));
}

/** One cycle of vCPU 0 at the source rate, in ns, rounded up. */
function cycleNsCeil(e: RestoreClocks): bigint {
  const hzNum = e.sourceHostTscKhz * 1000n * (e.sourceRatio[0] ?? 1n);
  return hzNum > 0n ? ((1_000_000_000n << BigInt(e.sourceFracBits)) + hzNum - 1n) / hzNum : 1n;
}

/** The guest TSC kHz of vCPU 0 (the scale a pvclock record's rate is rounded at). */
function guestKhz(e: RestoreClocks): bigint {
  const k = (e.sourceHostTscKhz * (e.sourceRatio[0] ?? 0n)) >> BigInt(e.sourceFracBits);
  return k > 0n ? k : 1n;
}

/** How far a kHz-rounded pvclock rate may carry a span of `ns` from the exact one (ns, rounded up). */
function recordRateNs(ns: bigint, e: RestoreClocks): bigint {
  const n = ns < 0n ? 0n : ns;
  return (n + guestKhz(e) - 1n) / guestKhz(e) + (n + 999_999n) / 1_000_000n;
}

function driftNs(ns: bigint): bigint {
  return ns + (ns * DRIFT_PPM + 999_999n) / 1_000_000n;
}

/** The realtime KVM_SET_CLOCK compares against: the first REALTIME call's, else the restore's start. */
function destinationRealtimeAtSet(e: RestoreClocks): bigint {
  const call = e.setClock.find((c) => (c.flags & KVM_CLOCK_REALTIME) !== 0) ?? e.setClock[0];
  return call ? call.destinationRealtimeNs : e.destinationRealtimeNs;
}

/** The kvm-realtime advance the upstream algorithm prescribes, and the realtime argument it rests on. */
function kvmRealtimeAdvance(e: RestoreClocks): { advanceNs: bigint; realtimeArgNs: bigint; destinationRealtimeNs: bigint } {
  const realtimeArgNs = e.estimator === "wallclock" ? e.sourceRealtimeNs : e.destinationRealtimeNs - e.estimatedBlackoutNs;
  const destinationRealtimeNs = destinationRealtimeAtSet(e);
  const r = setClockAdvance({ clock: e.stoppedKvmclockNs, flags: KVM_CLOCK_REALTIME, realtime: u64(realtimeArgNs), nowRealNs: u64(destinationRealtimeNs), nowRawNs: 0n });
  return { advanceNs: r.advanceNs, realtimeArgNs, destinationRealtimeNs };
}

/** The advance the policy prescribes (ns), and what its report must say. */
function prescribed(e: RestoreClocks): { advanceNs: bigint; capped: boolean; why: string } | null {
  const est = e.estimatedBlackoutNs;
  switch (e.policy) {
    case "freeze":
      return { advanceNs: 0n, capped: false, why: "freeze keeps both clocks where they stopped" };
    case "advance":
      return { advanceNs: est, capped: false, why: `advance moves both by the blackout estimate ${est} ns` };
    case "advance-capped":
      return est > e.capNs
        ? { advanceNs: e.capNs, capped: true, why: `advance-capped moves both by its cap ${e.capNs} ns (estimate ${est} ns) and says so` }
        : { advanceNs: est, capped: false, why: `advance-capped moves both by the estimate ${est} ns (within its cap ${e.capNs} ns)` };
    case "kvm-realtime": {
      const k = kvmRealtimeAdvance(e);
      return { advanceNs: k.advanceNs, capped: false, why: `KVM_SET_CLOCK(REALTIME) with realtime ${k.realtimeArgNs} at destination realtime ${k.destinationRealtimeNs} advances kvmclock ${k.advanceNs} ns` };
    }
    default:
      return null;
  }
}

function baseValues(e: RestoreClocks): Record<string, string | number | boolean> {
  return {
    migrationId: e.migrationId,
    policy: e.policy,
    estimator: e.estimator,
    destination: e.daemon,
    estimatedBlackoutNs: String(e.estimatedBlackoutNs),
    reportedAdvancedNs: String(e.advancedNs),
    reportedCapped: e.capped,
  };
}

/** Every way one restore departs from its policy's definition (empty: it conforms). */
export function policyConformance(e: RestoreClocks): ConformanceFinding[] {
  const p = prescribed(e);
  if (!p) return [{ message: `unknown policy ${JSON.stringify(e.policy)}`, values: baseValues(e) }];
  const out: ConformanceFinding[] = [];
  const base = { ...baseValues(e), prescribedAdvanceNs: String(p.advanceNs) };
  if (e.advancedNs !== p.advanceNs || e.capped !== p.capped)
    out.push({ message: `reports advancing ${e.advancedNs} ns${e.capped ? " (capped)" : ""}, but ${p.why}`, values: base });
  const duringNs = driftNs(e.restoreEndNs - e.restoreStartNs);
  // TSC: every recorded vCPU moved by the advance at its rate, within one cycle (plus the restore's own duration).
  for (let i = 0; i < e.stoppedTsc.length; i++) {
    const ratio = e.sourceRatio[i] ?? 0n;
    const moved = s64(u64((e.restoredTsc[i] ?? 0n) - (e.stoppedTsc[i] as bigint)));
    const expected = cyclesIn(p.advanceNs, e, ratio);
    const slack = 1n + cyclesIn(duringNs, e, ratio);
    if (moved < expected - 1n || moved > expected + slack) {
      out.push({
        message: `vCPU ${i}'s guest TSC moved ${moved} cycles from where it stopped, not ${expected} (${p.why})`,
        vcpu: i,
        values: { ...base, stoppedTsc: String(e.stoppedTsc[i]), restoredTsc: String(e.restoredTsc[i]), movedCycles: String(moved), expectedCycles: String(expected) },
      });
      break;
    }
  }
  // kvmclock, as KVM holds it once the restore returned.
  const movedKvm = s64(u64(e.restoredKvmclockNs - e.stoppedKvmclockNs));
  const viaRecord = e.policy === "advance" || e.policy === "advance-capped" ? recordRateNs(p.advanceNs, e) : 0n;
  const tolKvm = cycleNsCeil(e) + 2n + e.stoppedKvmclockSpreadNs + viaRecord;
  if (movedKvm < p.advanceNs - tolKvm || movedKvm > p.advanceNs + tolKvm + duringNs)
    out.push({
      message: `kvmclock moved ${movedKvm} ns from where it stopped, not ${p.advanceNs} ns (±${tolKvm} ns; ${p.why})`,
      values: { ...base, stoppedKvmclockNs: String(e.stoppedKvmclockNs), restoredKvmclockNs: String(e.restoredKvmclockNs), movedNs: String(movedKvm), toleranceNs: String(tolKvm), setClock: e.setClock.map((c) => `clock=${c.clockNs} flags=0x${c.flags.toString(16)} realtime=${c.realtimeNs} at destination realtime ${c.destinationRealtimeNs}`).join("; ") },
    });
  // Always: the guest's pvclock reading equals KVM's kvmclock at the first resume.
  const tolPv = 2n + cycleNsCeil(e) + recordRateNs(e.trueNs - e.restoreStartNs, e);
  for (let k = 0; k < e.pvclockVcpus.length; k++) {
    const d = s64(u64((e.pvclockKvmclockNs[k] as bigint) - e.kvmclockAtResumeNs));
    if (abs(d) > tolPv) {
      const i = e.pvclockVcpus[k] as number;
      out.push({
        message: `at resume vCPU ${i}'s guest computes kvmclock ${e.pvclockKvmclockNs[k]} ns from its pvclock record, ${d} ns off KVM's ${e.kvmclockAtResumeNs} ns (±${tolPv} ns)`,
        vcpu: i,
        values: { ...base, guestKvmclockNs: String(e.pvclockKvmclockNs[k]), kvmclockNs: String(e.kvmclockAtResumeNs), differenceNs: String(d), toleranceNs: String(tolPv) },
      });
      break;
    }
  }
  return out;
}
