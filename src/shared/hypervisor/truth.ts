// The truth probe: reads of the deployment's reference clock and of what a guest saw at a true
// instant. Only observers use it — the workload sampler, the chaos harness, reports and their
// diagnostics — never capture, restore or a migration decision: a hypervisor cannot know true
// time, so nothing that must work on a real one may depend on it.

import { u64 } from "../kvm/u64.js";
import { scaleTsc } from "../kvm/tsc.js";
import type { HypervisorVm } from "./backend.js";
import type { EmulatedHost } from "./host.js";

export interface TruthProbe {
  /** True time now. */
  nowNs(): bigint;
  /** What RDTSC on vCPU `i` of `vm` (a VM of this probe's host) returned at true instant `tNs`, its TSC state unchanged since. */
  guestTscAt(vm: HypervisorVm, i: number, tNs: bigint): bigint;
  /** The host's realtime at true instant `tNs`. */
  hostRealtimeNsAt(tNs: bigint): bigint;
  /** The true instant at which vCPU `i` of `vm` read `tsc` (a real guest's RDTSC); absent where no guest reports one. */
  instantOfGuestTsc?(vm: HypervisorVm, i: number, tsc: bigint): bigint;
}

/** The truth of an emulated host: its clocks are functions of true time. */
export function emulatedTruth(host: EmulatedHost): TruthProbe {
  const fracBits = host.info.vendor.fracBits;
  return {
    nowNs: () => host.trueNs(),
    guestTscAt: (vm, i, tNs) => u64(scaleTsc(host.tscAt(tNs), vm.getTscRatio(i), fracBits) + vm.getTscOffset(i)),
    hostRealtimeNsAt: (tNs) => host.realtimeNsAt(tNs),
  };
}
