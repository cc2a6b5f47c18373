// Deliberately broken restores for the checker's sensitivity tests, plugged in through the
// destination's test seam (NodeDeps.restore). Production never sets that seam.
import type { RestoreFn } from "../../src/destination/migrate-in.js";
import type { EmulatedVm } from "../../src/shared/hypervisor/vm.js";
import { wallclockEstimate } from "../../src/shared/migration/blackout.js";
import { cyclesIn, restoreSnapshot } from "../../src/shared/migration/restore.js";
import { KVM_CLOCK_REALTIME } from "../../src/shared/kvm/set-clock.js";
import { u64 } from "../../src/shared/kvm/u64.js";

/** Restores like the real one but never requests KVMCLOCK_CTRL: no vCPU ever shows PVCLOCK_GUEST_STOPPED. */
export const restoreForgettingStoppedFlag: RestoreFn = (vm, snap, opts) => {
  const noCtrl = new Proxy(vm, {
    get(target, prop) {
      if (prop === "kvmclockCtrl") return () => {};
      const v = Reflect.get(target, prop, target) as unknown;
      return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  }) as EmulatedVm;
  return restoreSnapshot(noCtrl, snap, opts);
};

/**
 * Advances guest time by destination realtime minus source realtime (blackout plus the hosts' skew)
 * while still reporting the one-sided estimate's bound: the cross-host subtraction STYLE 5 forbids.
 */
export const restoreSubtractingHostRealtimes: RestoreFn = (vm, snap, opts) =>
  restoreSnapshot(vm, snap, {
    ...opts,
    estimate: (at) => {
      const honest = opts.estimate(at);
      const wc = wallclockEstimate({
        sourceRealtimeNs: snap.hostRealtimeNs,
        destinationRealtimeNs: at.destinationRealtimeNs,
        sourceMaxerrorNs: 0n,
        destinationMaxerrorNs: 0n,
      });
      return { ...honest, estimatedNs: wc.estimatedNs };
    },
  });

// ---- policy conformance (I9): each breaks one policy's definition and reports as if it had not ----

/** freeze that leaves kvmclock where it stopped but advances every vCPU's TSC by the blackout estimate. */
export const restoreFreezeAdvancingTsc: RestoreFn = (vm, snap, opts) => {
  const r = restoreSnapshot(vm, snap, opts);
  if (opts.policy !== "freeze") return r;
  for (let i = 0; i < vm.vcpuCount; i++)
    vm.setTscOffset(i, u64(vm.getTscOffset(i) + cyclesIn(r.estimate.estimatedNs, snap.hostTscKhz, snap.ratio[i] as bigint, snap.fracBits)));
  return r;
};

/**
 * advance (and advance-capped) whose kvmclock moves by half the reported error bound more than its
 * TSC: inside the bound, so I3 holds, but kvmclock is no longer the same function of the TSC.
 */
export const restoreAdvanceKvmclockApart: RestoreFn = (vm, snap, opts) => {
  const r = restoreSnapshot(vm, snap, opts);
  if (opts.policy !== "advance" && opts.policy !== "advance-capped") return r;
  vm.setClock({ clock: u64(vm.getClock().clock + r.errorBoundNs / 2n), flags: 0, realtime: 0n });
  return r;
};

/** kvm-realtime whose KVM_SET_CLOCK drops KVM_CLOCK_REALTIME: the realtime argument is ignored, kvmclock not advanced. */
export const restoreKvmRealtimeIgnoringRealtime: RestoreFn = (vm, snap, opts) => {
  if (opts.policy !== "kvm-realtime") return restoreSnapshot(vm, snap, opts);
  const ignoring = new Proxy(vm, {
    get(target, prop) {
      if (prop === "setClock") return (d: { clock: bigint; flags: number; realtime: bigint }) => target.setClock({ ...d, flags: d.flags & ~KVM_CLOCK_REALTIME });
      const v = Reflect.get(target, prop, target) as unknown;
      return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  }) as EmulatedVm;
  return restoreSnapshot(ignoring, snap, opts);
};

/** Any policy: the pvclock records the guest finds at resume are written for a kvmclock 100 µs ahead of the one restored. */
export const restorePvclockApart: RestoreFn = (vm, snap, opts) => {
  const r = restoreSnapshot(vm, snap, opts);
  const emulated = vm as EmulatedVm; // writes records as the emulated host does: these tests run on that backend
  emulated.serviceRequests(); // records written now, so the resume has nothing left to rewrite
  for (let i = 0; i < vm.vcpuCount; i++) {
    if (!vm.kvmclockEnabled(i)) continue;
    const rec = vm.pvclock.guestRead(i);
    emulated.pvclock.hostWrite(i, { ...rec, systemTime: u64(rec.systemTime + 100_000n) });
  }
  return r;
};
