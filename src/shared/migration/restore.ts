// Restore on the destination (docs/time-across-migration.md#restore-in-order), one pure function per
// policy over the hypervisor seam (backend.ts, any backend): no I/O, the caller supplies the blackout
// estimate, evaluated at the restore instant.
// Order (Firecracker, Cloud Hypervisor #7932): clocks first, then the stopped flag on every vCPU,
// then the vmclock marker and the published bound under the page's seqlock. The caller rings the
// doorbell and resumes.
//
// Rounding: TSC advances are floor(blackout · rate) — the guest TSC may lag the ideal by < 1 cycle,
// never lead it, so a restore can never make the TSC run ahead of where the source would be.
// That one cycle is in the reported bound.

import { invalid, TscmigError } from "../errors.js";
import { LIMITS } from "../limits.js";
import { u64 } from "../kvm/u64.js";
import { type FracBits, scaleTsc } from "../kvm/tsc.js";
import { KVM_CLOCK_REALTIME } from "../kvm/set-clock.js";
import { PVCLOCK_GUEST_STOPPED, pvclockReadCycles } from "../kvm/pvclock.js";
import {
  decodeVmclock,
  VMCLOCK_FLAG_TIME_ESTERROR_VALID,
  VMCLOCK_FLAG_TIME_MAXERROR_VALID,
  VMCLOCK_STATUS_SYNCHRONIZED,
  VMCLOCK_STATUS_UNRELIABLE,
} from "../kvm/vmclock.js";
import type { HostClockPair, HypervisorVm } from "../hypervisor/backend.js";
import { type BlackoutEstimate, DRIFT_ALLOWANCE_PPM } from "./blackout.js";
import { type Snapshot, snapshotRecord } from "./snapshot.js";

export type PolicyName = "advance" | "kvm-realtime" | "freeze" | "advance-capped";
export const POLICIES: readonly PolicyName[] = ["advance", "kvm-realtime", "freeze", "advance-capped"];

export function parsePolicy(v: unknown, field = "policy"): PolicyName {
  if (typeof v === "string" && (POLICIES as readonly string[]).includes(v)) return v as PolicyName;
  throw invalid(field, `unknown policy ${JSON.stringify(v)} (one of ${POLICIES.join(", ")})`);
}

/** What the destination's clocks read at the restore instant, for the estimator. */
export interface RestoreInstant {
  destinationRealtimeNs: bigint;
  /** The destination host's raw monotonic clock at the same instant (one-sided durations end here). */
  destinationRawNs: bigint;
}

export interface RestoreOptions {
  policy: PolicyName;
  /** Evaluated once, at the restore instant (after the destination's KVM_GET_CLOCK). */
  estimate: (at: RestoreInstant) => BlackoutEstimate;
  capNs?: bigint;
}

export interface RestoreResult {
  policy: PolicyName;
  estimate: BlackoutEstimate;
  /** How far guest time (TSC and kvmclock) was moved past where it stopped. */
  advancedNs: bigint;
  /** Bound on |guest time at resume − what the source would read had it never paused|. */
  errorBoundNs: bigint;
  /** advance-capped only: the blackout exceeded the cap and the rest was frozen. */
  capped: boolean;
  /** The new vmclock disruption marker. */
  marker: bigint;
  /** kvmclock was restored with KVM_SET_CLOCK_GUEST (else KVM_SET_CLOCK). */
  clockGuest: boolean;
}

/** Cycles a vCPU's TSC runs in `ns` on a host of `hostKhz` with `ratio` (exact floor). */
export function cyclesIn(ns: bigint, hostKhz: bigint, ratio: bigint, fracBits: number): bigint {
  return (ns * hostKhz * ratio) / (1_000_000n << BigInt(fracBits));
}

/** ns one cycle lasts at that rate, rounded up (the rounding term of the bound). */
function cycleNsCeil(hostKhz: bigint, ratio: bigint, fracBits: number): bigint {
  const hzNum = hostKhz * 1000n * ratio;
  const den = 1n << BigInt(fracBits);
  return (1_000_000_000n * den + hzNum - 1n) / hzNum;
}

/**
 * The kvmclock the guest itself read at the snapshot instant: the largest pvclock reading over the
 * vCPUs, each record applied to that vCPU's TSC in the snapshot. KVM_GET_CLOCK (`snap.kvmNs`)
 * scales the host TSC with the host's rate, while the guest scales its own TSC with the record's
 * mul/shift, built from the scaled rate rounded down to a kHz: the two drift apart by up to ~1 ppm
 * since the record was last written, so restoring `kvmNs` can step the guest's kvmclock back (I2)
 * and off the source's line (I3). QEMU reads guest memory for the same reason
 * (kvmclock_current_nsec). Without kvmclock the guest reads none: then `kvmNs` is all there is.
 */
export function guestKvmclockAtSnapshot(snap: Snapshot): bigint {
  if (!snap.kvmclockEnabled) return snap.kvmNs;
  let max = -1n;
  for (let i = 0; i < snap.vcpuCount; i++) {
    const ns = pvclockReadCycles(snapshotRecord(snap, i), snap.tsc[i] as bigint);
    if (ns > max) max = ns;
  }
  return max;
}

function drift(ns: bigint): bigint {
  return (ns * DRIFT_ALLOWANCE_PPM + 999_999n) / 1_000_000n;
}

/**
 * Restores `snap` into `vm` (paused, created with the snapshot's shape). Validates everything before
 * touching `vm`; on a thrown error the VM is unusable and the caller discards it.
 */
export function restoreSnapshot(vm: HypervisorVm, snap: Snapshot, opts: RestoreOptions): RestoreResult {
  parsePolicy(opts.policy); // an unknown name would otherwise fall through to freeze
  if (vm.running) throw invalid("vm", "restore needs the vCPUs paused");
  if (vm.vcpuCount !== snap.vcpuCount) throw invalid("snapshot.vcpuCount", `VM has ${vm.vcpuCount} vCPUs, snapshot ${snap.vcpuCount}`);
  const capNs = opts.capNs ?? LIMITS.advanceCapNsDefault;
  if (capNs < 0n || capNs > LIMITS.blackoutNsMax) throw invalid("advanceCapNs", "out of range");
  const page = decodeVmclock(snap.vmclock);
  const kvmBaseNs = guestKvmclockAtSnapshot(snap); // reads every record: throws before vm is touched
  const n = snap.vcpuCount;
  const fracDst = vm.hostInfo.vendor.fracBits;

  // Guest-visible memory comes across as is: pvclock records (versions continue), vmclock page.
  vm.pvclock.loadBytes(snap.pvclock);
  vm.loadVmclock(page);
  if (snap.kvmclockEnabled) vm.guestEnableKvmclock();

  // One instant for everything derived from "now": the estimate (realtime for wallclock and probe,
  // the raw clock for one-sided) and the host TSC the offsets are computed against. Read at
  // different moments, the gap between them (a preemption on a busy host) would become guest error.
  const at = vm.getClock();
  // Outside master-clock mode getClock gives no (realtime, TSC) pair: the VMM reads its host's own.
  const own = at.hostTsc !== 0n && at.realtime !== 0n ? null : vm.hostClocks();
  const hostTscNow = at.hostTsc !== 0n ? at.hostTsc : (own as HostClockPair).hostTsc;
  const realtimeNow = at.realtime !== 0n ? at.realtime : (own as HostClockPair).realtimeNs;
  const estimate = opts.estimate({ destinationRealtimeNs: realtimeNow, destinationRawNs: vm.hostRawNsOfTsc(hostTscNow) });
  // No refusal here however long the blackout was: the source has already handed the VM over, so
  // refusing would lose it. How far to advance is the policy's business (advance-capped).
  const est = estimate.estimatedNs;
  // Rounding and rate terms common to every policy: one cycle of the slowest vCPU, and the source
  // crystal's drift over the blackout (we advance at its nominal rate).
  let rounding = 0n;
  for (let i = 0; i < n; i++) {
    const c = cycleNsCeil(snap.hostTscKhz, snap.ratio[i] as bigint, snap.fracBits as FracBits);
    if (c > rounding) rounding = c;
    if (i > 8 && snap.ratio[i] === snap.ratio[0]) break; // uniform VMs: one is enough
  }
  const rateTerm = rounding + 1n + drift(est + estimate.boundNs);

  let advancedNs = 0n;
  let errorBoundNs: bigint;
  let capped = false;
  let clockGuest = false;

  if (opts.policy === "advance" || opts.policy === "advance-capped") {
    let adv = est;
    if (opts.policy === "advance-capped" && est > capNs) {
      adv = capNs;
      capped = true;
    }
    setOffsetsAdvanced(vm, snap, hostTscNow, adv, fracDst);
    // kvmclock stays the same function of the guest TSC (KVM_SET_CLOCK_GUEST); where KVM refuses
    // (no master clock, or the record's rate is > 1 kHz off), fall back to KVM_SET_CLOCK.
    const rec = snapshotRecord(snap, 0);
    rec.flags &= ~PVCLOCK_GUEST_STOPPED;
    try {
      vm.setClockGuest(rec);
      clockGuest = true;
    } catch (e) {
      if (!(e instanceof TscmigError && e.errno !== undefined)) throw e;
      vm.setClock({ clock: u64(kvmBaseNs + adv), flags: 0, realtime: 0n });
    }
    advancedNs = adv;
    errorBoundNs = capped ? est - capNs + estimate.boundNs + rateTerm : estimate.boundNs + rateTerm;
  } else if (opts.policy === "kvm-realtime") {
    // The upstream document: KVM_SET_CLOCK(REALTIME) then re-offset every TSC, with Bonzini's
    // scaling correction. With a non-wallclock estimator we hand KVM a source realtime corrected by
    // the estimate, as a VMM would: realtime_arg = now_real_dst − estimate.
    // (A VM none of whose vCPUs ran yet has no realtime in its KVM_GET_CLOCK: the host's own read stands in.)
    const realtimeArg = estimate.estimator === "wallclock" ? snap.hostRealtimeNs : realtimeNow - est;
    const set = vm.setClock({ clock: kvmBaseNs, flags: KVM_CLOCK_REALTIME, realtime: realtimeArg });
    const after = vm.getClock();
    const guestDst = after.clock;
    const elapsed = u64(guestDst - kvmBaseNs); // ≥ 0: SET_CLOCK never steps backward
    const hostTscDst = after.hostTsc !== 0n ? after.hostTsc : vm.hostClocks().hostTsc;
    let lastOfs = -1n;
    let uniform = true;
    const ofs = new BigUint64Array(n);
    for (let i = 0; i < n; i++) {
      const rSrc = snap.ratio[i] as bigint;
      const rDst = vm.getTscRatio(i);
      // ofs_dst = ofs_src + (guest_dst − guest_src)·guest_freq + scale(tsc_src, r_src) − scale(tsc_dst, r_dst)
      const o = u64(
        (snap.tscOffset[i] as bigint) +
          cyclesIn(elapsed, snap.hostTscKhz, rSrc, snap.fracBits as FracBits) +
          scaleTsc(snap.hostTsc, rSrc, snap.fracBits as FracBits) -
          scaleTsc(hostTscDst, rDst, fracDst),
      );
      ofs[i] = o;
      if (i > 0 && o !== lastOfs) uniform = false;
      lastOfs = o;
    }
    if (uniform) vm.setTscOffsetAll(ofs[0] as bigint);
    else for (let i = 0; i < n; i++) vm.setTscOffset(i, ofs[i] as bigint);
    advancedNs = u64(set.advancedClock - kvmBaseNs);
    errorBoundNs = estimate.boundNs + rateTerm;
  } else {
    // freeze (upstream QEMU): kvmclock and TSC resume where they stopped; the guest loses the
    // blackout, so its error is the blackout itself.
    vm.setClock({ clock: kvmBaseNs, flags: 0, realtime: 0n });
    setOffsetsAdvanced(vm, snap, vm.hostClocks().hostTsc, 0n, fracDst);
    errorBoundNs = est + estimate.boundNs + rateTerm;
  }

  // The stopped flag on every vCPU: KVMCLOCK_CTRL now, written at each vCPU's first entry.
  for (let i = 0; i < n; i++) if (vm.kvmclockEnabled(i)) vm.kvmclockCtrl(i);

  // vmclock: odd, new marker, status and published bounds, even (STYLE 8).
  const marker = page.disruptionMarker + 1n;
  const reliable = !capped && opts.policy !== "freeze";
  vm.updateVmclock((p) => {
    p.disruptionMarker = marker;
    p.clockStatus = reliable ? VMCLOCK_STATUS_SYNCHRONIZED : VMCLOCK_STATUS_UNRELIABLE;
    p.timeMaxerrorNanosec = errorBoundNs;
    p.timeEsterrorNanosec = estimate.boundNs / 2n;
    p.flags |= VMCLOCK_FLAG_TIME_MAXERROR_VALID | VMCLOCK_FLAG_TIME_ESTERROR_VALID;
    if (!reliable) p.flags &= ~VMCLOCK_FLAG_TIME_MAXERROR_VALID;
  });
  return { policy: opts.policy, estimate, advancedNs, errorBoundNs, capped, marker, clockGuest };
}

/** ofs_dst[i] = (tsc_src[i] + cycles(adv)) − scale(host_tsc_dst, ratio_dst[i]); uniform VMs in one write. */
function setOffsetsAdvanced(vm: HypervisorVm, snap: Snapshot, hostTscDst: bigint, advNs: bigint, fracDst: FracBits): void {
  const n = snap.vcpuCount;
  let prevKey = -1n;
  let prevRatio = -1n;
  let prevOfs = 0n;
  let uniform = true;
  const ofs = new BigUint64Array(n);
  for (let i = 0; i < n; i++) {
    const rSrc = snap.ratio[i] as bigint;
    const rDst = vm.getTscRatio(i);
    const tsc = snap.tsc[i] as bigint;
    let o: bigint;
    if (tsc === prevKey && rSrc === prevRatio) o = prevOfs;
    else o = u64(tsc + cyclesIn(advNs, snap.hostTscKhz, rSrc, snap.fracBits as FracBits) - scaleTsc(hostTscDst, rDst, fracDst));
    if (i > 0 && o !== prevOfs) uniform = false;
    ofs[i] = o;
    prevKey = tsc;
    prevRatio = rSrc;
    prevOfs = o;
  }
  if (uniform) vm.setTscOffsetAll(ofs[0] as bigint);
  else for (let i = 0; i < n; i++) vm.setTscOffset(i, ofs[i] as bigint);
}
