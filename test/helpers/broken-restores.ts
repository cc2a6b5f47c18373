// Deliberately broken restores for the checker's sensitivity tests, plugged in through the
// destination's test seam (NodeDeps.restore). Production never sets that seam.
import type { RestoreFn } from "../../src/destination/migrate-in.js";
import type { EmulatedVm } from "../../src/shared/hypervisor/vm.js";
import { wallclockEstimate } from "../../src/shared/migration/blackout.js";
import { restoreSnapshot } from "../../src/shared/migration/restore.js";

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
