// The harness's view of each restore, for I9 (policy conformance). It wraps the destination's restore
// step (the seam NodeDeps.restore) and watches the VM at the hypervisor seam, the way a tracer of KVM
// ioctls would: the snapshot the restore was handed (where the clocks stopped), every KVM_SET_CLOCK
// it issued with the destination's realtime at that instant, the VM's clocks when it returned (before
// any vCPU ran), and at the VM's first resume the kvmclock each vCPU's guest computes from its
// pvclock record beside KVM's own. It trusts nothing the restore says about itself except what the
// checker compares against (its estimate and the advance it reports), so a restore that does not do
// what its policy says is caught whatever it reports.

import type { RestoreFn } from "../../destination/migrate-in.js";
import type { HypervisorVm } from "../../shared/hypervisor/backend.js";
import type { TruthProbe } from "../../shared/hypervisor/truth.js";
import { LIMITS } from "../../shared/limits.js";
import { pvclockReadCycles } from "../../shared/kvm/pvclock.js";
import { snapshotRecord, type Snapshot } from "../../shared/migration/snapshot.js";
import type { ChaosEvent } from "../history.js";

/** Per-vCPU facts are recorded for the first this many vCPUs (VMs are uniform; this bounds history size). */
export const RESTORE_VCPUS_RECORDED = 16;

type RestoreClocks = Extract<ChaosEvent, { kind: "restoreClocks" }>;

export interface RestoreProbeContext {
  daemon: string;
  /** True time, and the destination host's clocks and guests at true instants. */
  truth: TruthProbe;
  /** Records the event (the harness drops it when the process died meanwhile). */
  record: (e: RestoreClocks) => void;
}

/** The guest's kvmclock where it stopped: its own pvclock reading at the snapshot (largest and spread over vCPUs), else KVM's. */
function stoppedKvmclock(snap: Snapshot): { ns: bigint; spreadNs: bigint } {
  if (!snap.kvmclockEnabled) return { ns: snap.kvmNs, spreadNs: 0n };
  let max = -1n;
  let min = -1n;
  for (let i = 0; i < snap.vcpuCount; i++) {
    const ns = pvclockReadCycles(snapshotRecord(snap, i), snap.tsc[i] as bigint);
    if (ns > max) max = ns;
    if (min < 0n || ns < min) min = ns;
  }
  return { ns: max, spreadNs: max - min };
}

function guestTscs(truth: TruthProbe, vm: HypervisorVm, n: number, t: bigint): bigint[] {
  return Array.from({ length: n }, (_v, i) => truth.guestTscAt(vm, i, t));
}

/** `restore`, observed: same results, plus one `restoreClocks` event when the restored VM first resumes. */
export function observeRestores(restore: RestoreFn, ctx: RestoreProbeContext): RestoreFn {
  return (vm, snap, opts) => {
    const n = Math.min(snap.vcpuCount, RESTORE_VCPUS_RECORDED);
    const truth = ctx.truth;
    const restoreStartNs = truth.nowNs();
    const destinationRealtimeNs = truth.hostRealtimeNsAt(restoreStartNs);
    const setClock: RestoreClocks["setClock"] = [];
    const realSetClock = vm.setClock.bind(vm);
    vm.setClock = (data) => {
      const t = truth.nowNs();
      setClock.push({ trueNs: t, clockNs: data.clock, flags: data.flags, realtimeNs: data.realtime, destinationRealtimeNs: truth.hostRealtimeNsAt(t) });
      return realSetClock(data);
    };
    let result: ReturnType<RestoreFn>;
    try {
      result = restore(vm, snap, opts);
    } finally {
      Reflect.deleteProperty(vm, "setClock"); // the class's own again
    }
    const restoreEndNs = truth.nowNs();
    const stopped = stoppedKvmclock(snap);
    const facts = {
      kind: "restoreClocks" as const,
      daemon: ctx.daemon,
      migrationId: snap.migrationId,
      vmId: snap.vmId,
      generation: snap.generation,
      policy: opts.policy,
      estimator: result.estimate.estimator,
      capNs: opts.capNs ?? LIMITS.advanceCapNsDefault,
      estimatedBlackoutNs: result.estimate.estimatedNs,
      advancedNs: result.advancedNs,
      capped: result.capped,
      sourceHostTscKhz: snap.hostTscKhz,
      sourceFracBits: snap.fracBits,
      sourceRatio: Array.from(snap.ratio.subarray(0, n)),
      stoppedTsc: Array.from(snap.tsc.subarray(0, n)),
      stoppedKvmclockNs: stopped.ns,
      stoppedKvmclockSpreadNs: stopped.spreadNs,
      sourceRealtimeNs: snap.hostRealtimeNs,
      restoreStartNs,
      restoreEndNs,
      destinationRealtimeNs,
      restoredTsc: guestTscs(truth, vm, n, restoreEndNs),
      restoredKvmclockNs: vm.getClock().clock,
      setClock,
    };
    watchFirstResume(truth, vm, n, (atResume) => ctx.record({ ...facts, trueNs: truth.nowNs(), ...atResume }));
    return result;
  };
}

/** Calls `seen` right after the VM's first resume (its vCPUs' first entry: records rewritten), once. */
function watchFirstResume(truth: TruthProbe, vm: HypervisorVm, n: number, seen: (f: Pick<RestoreClocks, "tscAtResume" | "pvclockVcpus" | "pvclockKvmclockNs" | "kvmclockAtResumeNs">) => void): void {
  const realResume = vm.resume.bind(vm);
  vm.resume = () => {
    Reflect.deleteProperty(vm, "resume");
    realResume();
    const t = truth.nowNs();
    const pvclockVcpus: number[] = [];
    const pvclockKvmclockNs: bigint[] = [];
    for (let i = 0; i < n; i++) {
      if (!vm.kvmclockEnabled(i)) continue;
      pvclockVcpus.push(i);
      pvclockKvmclockNs.push(pvclockReadCycles(vm.pvclock.guestRead(i), truth.guestTscAt(vm, i, t)));
    }
    seen({ tscAtResume: guestTscs(truth, vm, n, t), pvclockVcpus, pvclockKvmclockNs, kvmclockAtResumeNs: vm.getClock().clock });
  };
}
