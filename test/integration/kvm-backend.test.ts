// Goal: the kvm backend behind the hypervisor seam: capture and restore (the same functions the
// daemons run) move a real VM into a fresh one through the snapshot's backend payload, per policy,
// and the real guest there reports the stopped flag once and a kvmclock that continues; a bad payload
// is refused with a typed error; teardown leaves no fd behind.
// Method: one KvmBackend over this host's /dev/kvm and an emulated host on the real clock; waits on
// the guest's own sample counters (no wall-clock sleeps); skipped with the reason where /dev/kvm does
// not open.

import { readdirSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EmulatedHost } from "../../src/shared/hypervisor/host.js";
import { kvmProblem } from "../helpers/kvm.js";
import { KvmBackend, type KvmBackedVm } from "../../src/shared/hypervisor/kvm/kvm-backend.js";
import { Guest } from "../../src/shared/guest/guest.js";
import { captureSnapshot, checkBackendPayload, validateSnapshot } from "../../src/shared/migration/snapshot.js";
import { restoreSnapshot, type PolicyName } from "../../src/shared/migration/restore.js";
import { estimateBlackout } from "../../src/shared/migration/blackout.js";
import { RealClock, RealScheduler, trueEpochNs } from "../../src/shared/platform/index.js";
import { isTscmigError } from "../../src/shared/errors.js";
import { LIMITS } from "../../src/shared/limits.js";

const problem = kvmProblem();
if (problem !== null) console.warn(`kvm backend tests skipped: ${problem}`);

const fds = () => readdirSync("/proc/self/fd").length;

/** Drains the VM's guest reports until `pred` holds on the accumulated samples (the guest samples every pace). */
async function until(vm: KvmBackedVm, pred: (perVcpu: number[]) => boolean): Promise<{ samples: ReturnType<KvmBackedVm["drainGuestReports"]>["samples"]; acted: number; last: ReturnType<KvmBackedVm["drainGuestReports"]> }> {
  const samples: ReturnType<KvmBackedVm["drainGuestReports"]>["samples"] = [];
  let acted = 0;
  for (let k = 0; k < 20_000; k++) {
    const r = vm.drainGuestReports();
    samples.push(...r.samples);
    acted += r.actedDelta;
    const per = Array.from({ length: vm.vcpuCount }, (_, i) => samples.filter((s) => s.vcpu === i).length);
    if (pred(per)) return { samples, acted, last: r };
    await new Promise((res) => setImmediate(res));
  }
  throw new Error("the guest did not report enough samples");
}

describe.skipIf(problem !== null)("kvm backend: capture and restore through the seam", () => {
  let backend: KvmBackend;
  let host: EmulatedHost;
  let fdsBefore = 0;
  beforeAll(async () => {
    fdsBefore = fds();
    host = new EmulatedHost({ name: "kvmtest", clock: new RealClock(), epochNs: trueEpochNs(), maxerrorNs: 100_000n });
    backend = await KvmBackend.open({ host, paceUs: 200 });
  });
  afterAll(async () => {
    await backend?.close();
    expect(fds()).toBe(fdsBefore);
  });

  const guestOpts = { clocksource: "kvm-clock" as const, migrationHandling: true, handlingMode: "ditch" as const, watchVmclock: true, pollIntervalNs: 16_000_000_000n, resyncDelayNs: 1_000_000_000n, driftAllowancePpm: 500n, ntpSource: () => ({ realtimeNs: host.realtimeNs(), maxerrorNs: 100_000n }) };

  for (const policy of ["advance", "kvm-realtime", "freeze"] as const satisfies readonly PolicyName[])
    it(`moves a 2-vCPU guest into a fresh VM (${policy}): stopped flag once, kvmclock continues`, async () => {
      const src = backend.createVm({ vcpus: 2 });
      const guest = new Guest(src, new RealScheduler(), guestOpts);
      const ran = await until(src, (per) => per.every((n) => n >= 3));
      src.pause();
      const before = await until(src, () => true);
      const lastSrc = Math.max(...[...ran.samples, ...before.samples].filter((s) => s.vcpu === 0).map((s) => Number(s.kvmclockNs)));
      expect(lastSrc).toBeGreaterThan(0);
      const snap = captureSnapshot(src, guest, { migrationId: "m1", vmId: "vm1", generation: 1n, hostMaxerrorNs: 100_000n, probe: null });
      snap.sourceCaptureToSendNs = 0n;
      validateSnapshot(snap);
      checkBackendPayload(backend, snap);
      expect(snap.backendPayload?.length).toBeGreaterThan(0);
      const dst = backend.createVm({ vcpus: 2, payload: snap.backendPayload as Uint8Array });
      const r = restoreSnapshot(dst, snap, {
        policy,
        estimate: (at) => estimateBlackout("wallclock", { sourceRealtimeNs: snap.hostRealtimeNs, sourceMaxerrorNs: 100_000n, destinationRealtimeNs: at.destinationRealtimeNs, destinationMaxerrorNs: 100_000n, probe: null, oneSided: () => { throw new Error("unused"); } }),
      });
      expect(r.clockGuest).toBe(false); // KVM_SET_CLOCK_GUEST is absent: the fallback ran
      dst.resume();
      const after = await until(dst, (per) => per.every((n) => n >= 3)); // every vCPU ran on the destination
      dst.pause();
      const first = after.samples[0];
      expect(first).toBeDefined();
      // kvmclock continues: not below what the guest saw on the source, ahead by at most the blackout (+ 50 ms of slack)
      const firstDst = Number(after.samples.find((s) => s.vcpu === 0)?.kvmclockNs ?? 0n);
      expect(firstDst).toBeGreaterThanOrEqual(lastSrc);
      const settled = dst.drainGuestReports(); // paused: every mailbox whole (vCPUs stop between samples)
      expect(after.acted + settled.actedDelta).toBe(1);
      // -1: a mailbox caught mid-sample by that read; the other read has it
      const stopped = settled.stopped.map((n, i) => Math.max(n, after.last.stopped[i] as number));
      expect(stopped.every((n) => n >= 1)).toBe(true);
      await src.destroy();
      await dst.destroy();
    });

  it("refuses a damaged payload with a typed error naming the field", () => {
    const vm = backend.createVm({ vcpus: 1 });
    vm.pause();
    const p = vm.capturePayload();
    for (const bad of [p.slice(0, 10), Uint8Array.from(p).fill(7, 0, 8), Uint8Array.from([...p, 0])]) {
      let err: unknown;
      try {
        backend.checkPayload(bad, 1);
      } catch (e) {
        err = e;
      }
      expect(isTscmigError(err) && err.field?.startsWith("snapshot.backendPayload")).toBe(true);
    }
    expect(() => backend.checkPayload(undefined, 1)).toThrow(/backendPayload/);
    // A whole payload for another vCPU count: refused at the check (on receipt the Transfer is the
    // decision; a refusal left to the restore would decide a migration that can never run).
    expect(() => backend.checkPayload(p, 2)).toThrow(/carries 1 vCPUs, the snapshot 2/);
    return vm.destroy();
  });

  it("refuses a payload it has no room for at the check, not first at the restore", async () => {
    const vm = backend.createVm({ vcpus: 1 });
    vm.pause();
    const p = vm.capturePayload();
    backend.checkPayload(p, 1);
    // Restored from the payload (no boot): the daemon's VM limit filled cheaply.
    const fill = Array.from({ length: LIMITS.kvmVmsMax - backend.vmCount }, () => backend.createVm({ vcpus: 1, payload: p }));
    let err: unknown;
    try {
      backend.checkPayload(p, 1);
    } catch (e) {
      err = e;
    }
    expect(isTscmigError(err) && err.code === "resource_exhausted" && err.reason === "kvm_vm_limit").toBe(true);
    await Promise.all([vm, ...fill].map((v) => v.destroy()));
    backend.checkPayload(p, 1);
  });
});
