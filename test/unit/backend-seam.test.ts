// Goal: the hypervisor is a dependency of the node: a second backend plugs in through
// `NodeDeps.backend` and a migration runs on it, under every policy, with no change to the source,
// destination or restore code; a restart rebuilds the VM through the same backend.
// Method: two nodes on simulated time, each over a recording backend (test/helpers/recording-
// backend.ts) whose VMs have only the members of `HypervisorVm` and log every operation; migrate,
// then check the outcome, where the VM lives, its error against its bound, and the order of the
// hypervisor operations capture and restore made (KVM's documented sequence, per policy).

import { describe, expect, it } from "vitest";
import { EmulatedBackend } from "../../src/shared/hypervisor/emulated-backend.js";
import type { EmulatedHost } from "../../src/shared/hypervisor/host.js";
import { emulatedTruth } from "../../src/shared/hypervisor/truth.js";
import { MemoryJournal } from "../../src/shared/migration/journal.js";
import type { PolicyName } from "../../src/shared/migration/restore.js";
import { RecordingBackend, RecordingVm } from "../helpers/recording-backend.js";
import { startAppDaemon } from "../helpers/daemon-app.js";
import { MS, World } from "../helpers/sim-world.js";

/** 200 µs each way, no workload sampling. */
const QUIET = { outNs: 200_000n, backNs: 200_000n, sampleIntervalNs: 0n };

const abs = (x: bigint) => (x < 0n ? -x : x);

/** Whether `want` occurs in `ops` in order (other operations may come between). */
function inOrder(ops: readonly string[], want: readonly string[]): boolean {
  let k = 0;
  for (const op of ops) if (op === want[k]) k++;
  return k === want.length;
}

/** What restore does on the fresh destination VM before it runs, per policy (after the guest memory comes across). */
const RESTORE_CLOCKS: Record<PolicyName, readonly string[]> = {
  advance: ["getClock", "setTscOffsetAll", "setClockGuest"],
  "advance-capped": ["getClock", "setTscOffsetAll", "setClockGuest"],
  "kvm-realtime": ["getClock", "setClock", "getClock", "setTscOffsetAll"],
  freeze: ["getClock", "setClock", "hostClocks", "setTscOffsetAll"],
};

function pairOnRecordingBackends() {
  const w = new World(QUIET);
  const backends = new Map<string, RecordingBackend>();
  const backend = (name: string) => (host: EmulatedHost) => {
    const b = new RecordingBackend(name, new EmulatedBackend(host));
    backends.set(name, b);
    return b;
  };
  const journals = { a: new MemoryJournal(), b: new MemoryJournal() };
  const a = w.node("a", journals.a, { seed: 7n, backend: backend("a") });
  const b = w.node("b", journals.b, { seed: 7n, backend: backend("b") });
  a.start();
  b.start();
  return { w, a, b, journals, backend, backends, rec: (n: string) => backends.get(n) as RecordingBackend };
}

describe("a second hypervisor backend, injected through the node's dependencies", () => {
  for (const policy of ["advance", "kvm-realtime", "freeze", "advance-capped"] as const)
    it(`migrates a VM between two nodes on it (${policy})`, async () => {
      const { w, a, b, rec } = pairOnRecordingBackends();
      const created = a.createVm({ id: "vm", vcpus: 3, guestTscKhz: 2_000_000n });
      expect(created.vm).toBeInstanceOf(RecordingVm);
      await w.advance(500n * MS);
      const r = await w.settle(a.migrate("vm", { destination: "b", policy, estimator: "one-sided", doorbell: true }));
      expect(r.outcome).toBe("committed");
      expect(r.stoppedVcpus).toBe(3);
      expect(abs(r.tscErrorNs)).toBeLessThanOrEqual(r.errorBoundNs);
      const moved = b.getVm("vm");
      expect(moved.vm).toBeInstanceOf(RecordingVm);
      expect(rec("b").vms).toContain(moved.vm);
      expect(() => a.getVm("vm")).toThrow();

      // Source: capture after the pause, through the seam.
      expect(inOrder(rec("a").opsOf(0), ["createVm", "guestEnableKvmclock", "resume", "pause", "kvmclockCtrl", "getClock", "pvclock.copyBytes"])).toBe(true);
      // Destination: guest memory first, then the clocks per policy, the stopped flag, the vmclock page, the resume.
      const dst = rec("b").opsOf(0);
      const memory = ["createVm", "pvclock.loadBytes", "loadVmclock", "guestEnableKvmclock"];
      expect(inOrder(dst, [...memory, ...RESTORE_CLOCKS[policy], "kvmclockCtrl", "updateVmclock", "resume"]), dst.join(" ")).toBe(true);
      expect(dst.filter((op) => op === "resume")).toHaveLength(1);

      // The guest on the new host acts on the migration, once.
      await w.advance(2_000n * MS);
      const reading = b.readVm("vm");
      expect(reading.running).toBe(true);
      expect(reading.handledMigrations).toBe(1n);
    });

  it("rebuilds a journaled VM through the backend after a restart", async () => {
    const { w, a, journals, backend, rec } = pairOnRecordingBackends();
    a.createVm({ id: "vm", vcpus: 2 });
    await w.advance(100n * MS);
    const before = a.readVm("vm");
    a.stop();
    const again = w.node("a", journals.a, { seed: 7n, backend: backend("a") });
    again.start();
    expect(rec("a").calls.map((c) => c.op)).toContain("restoreVm");
    const h = again.getVm("vm");
    expect(h.vm).toBeInstanceOf(RecordingVm);
    expect(h.vm.running).toBe(true);
    const after = again.readVm("vm");
    expect(after.vcpu[0]?.tscOffset).toBe(before.vcpu[0]?.tscOffset);
    expect(after.kvmNs).toBeGreaterThanOrEqual(before.kvmNs);
  });

  it("reaches a whole daemon through buildDaemon's dependencies", async () => {
    let made: RecordingBackend | null = null;
    const app = await startAppDaemon({ backend: (host) => (made = new RecordingBackend("app", new EmulatedBackend(host))) });
    try {
      const res = await app.daemon.http.inject({ method: "POST", url: "/v1/vms", payload: { id: "vm", vcpus: 2 } });
      expect(res.statusCode).toBe(201);
      expect(app.daemon.node.getVm("vm").vm).toBeInstanceOf(RecordingVm);
      expect((made as RecordingBackend | null)?.calls.map((c) => c.op).slice(0, 3)).toEqual(["createVm", "guestEnableKvmclock", "resume"]);
    } finally {
      await app.close();
    }
  });

});

describe("the truth probe and the guest-memory view", () => {
  it("reads what the guest reads: the guest TSC at a true instant is RDTSC at that instant, vCPU by vCPU", async () => {
    const w = new World(QUIET);
    const host = w.host("h");
    const vm = new EmulatedBackend(host).createVm({ vcpus: 3, guestTscKhz: 3_000_000n });
    vm.setTscOffset(1, 123_456_789n);
    const truth = emulatedTruth(host);
    await w.advance(1_234n * MS);
    const t = truth.nowNs();
    for (let i = 0; i < 3; i++) expect(truth.guestTscAt(vm, i, t)).toBe(vm.readGuestTsc(i));
    expect(truth.guestTscAt(vm, 1, t) - truth.guestTscAt(vm, 0, t)).toBe(123_456_789n);
    expect(truth.hostRealtimeNsAt(t)).toBe(host.realtimeNs());
  });

  it("loads pvclock records only whole: a wrong size is refused and changes nothing", () => {
    const w = new World(QUIET);
    const vm = new EmulatedBackend(w.host("h")).createVm({ vcpus: 2 });
    vm.guestEnableKvmclock();
    vm.resume();
    const before = vm.pvclock.copyBytes();
    expect(() => vm.pvclock.loadBytes(new Uint8Array(32))).toThrow(/2 × 32 bytes/);
    expect(vm.pvclock.copyBytes()).toEqual(before);
    const copy = vm.pvclock.copyBytes();
    copy.fill(0);
    expect(vm.pvclock.copyBytes()).toEqual(before); // a copy, not a view
  });
});
