// Goal: the snapshot's backend payload (a real VM's memory and registers) crosses the wire in proto
// field 100 unchanged, is validated on receipt (bounded size; the kvm layout exactly, inflation
// bounded), and a backend that cannot host it refuses it with a typed error naming the field, as a
// kvm one refuses a snapshot without it; `--backend kvm` is a live-mode flag of the chaos campaign.
// Method: an emulated snapshot given a payload encoded from a synthetic VM state; no KVM needed.

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { parseChaosFlags, replayCommand } from "../../src/chaos/cli.js";
import { SnapshotSchema } from "../../src/gen/tscmig/v1/migration_pb.js";
import { isTscmigError } from "../../src/shared/errors.js";
import { Guest } from "../../src/shared/guest/guest.js";
import { EmulatedBackend } from "../../src/shared/hypervisor/emulated-backend.js";
import { EmulatedHost } from "../../src/shared/hypervisor/host.js";
import { KVM_REGS, KVM_SREGS } from "../../src/shared/hypervisor/kvm/abi.js";
import { LAYOUT } from "../../src/shared/hypervisor/kvm/guest.js";
import { checkKvmPayloadShape, decodeKvmPayload, decodeKvmPayloadFor, encodeKvmPayload } from "../../src/shared/hypervisor/kvm/payload.js";
import { LIMITS } from "../../src/shared/limits.js";
import { captureSnapshot, checkBackendPayload, type Snapshot, validateSnapshot } from "../../src/shared/migration/snapshot.js";
import { snapshotFromPb, snapshotToPb } from "../../src/shared/rpc/codec.js";
import { SimClock, SimScheduler } from "../../src/shared/time/sim.js";
import { EPOCH_NS, quietGuestOptions } from "../helpers/sim-migration.js";

function state(vcpus: number) {
  const memory = new Uint8Array(LAYOUT.memoryBytes);
  memory.set([1, 2, 3, 4], 0x1000);
  return {
    vcpus,
    memory,
    regs: Array.from({ length: vcpus }, (_, i) => new Uint8Array(KVM_REGS.size).fill(i + 1)),
    sregs: Array.from({ length: vcpus }, (_, i) => new Uint8Array(KVM_SREGS.size).fill(i + 7)),
    systemTimeMsr: Array.from({ length: vcpus }, (_, i) => BigInt(LAYOUT.pvclockGpa + i * 32) | 1n),
    tscOffset: Array.from({ length: vcpus }, () => 0n),
  };
}

function snapshotWith(payload: Uint8Array | undefined): Snapshot {
  const c = new SimClock(0n, EPOCH_NS);
  const host = new EmulatedHost({ name: "src", clock: c, epochNs: EPOCH_NS, maxerrorNs: 50_000n });
  const vm = new EmulatedBackend(host).createVm({ vcpus: 2 });
  const guest = new Guest(vm, new SimScheduler(c), quietGuestOptions());
  c.advanceTo(1_000_000_000n);
  vm.pause();
  const s = captureSnapshot(vm, guest, { migrationId: "m-1", vmId: "vm-1", generation: 1n, hostMaxerrorNs: 50_000n, probe: null });
  return payload !== undefined ? { ...s, backendPayload: payload } : s;
}

const fieldOf = (f: () => unknown): string | undefined => {
  try {
    f();
  } catch (e) {
    return isTscmigError(e) ? e.field : `untyped: ${String(e)}`;
  }
  return undefined;
};

describe("the snapshot's backend payload", () => {
  it("round-trips the kvm layout and crosses the wire in field 100 unchanged", () => {
    const p = encodeKvmPayload(state(2));
    expect(p.length).toBeLessThan(LAYOUT.memoryBytes / 10); // deflated: the guest uses a few pages
    const back = decodeKvmPayload(p);
    expect(back.memory.subarray(0x1000, 0x1004)).toEqual(Uint8Array.from([1, 2, 3, 4]));
    expect(back.regs[1]).toEqual(new Uint8Array(KVM_REGS.size).fill(2));
    expect(back.systemTimeMsr).toEqual(state(2).systemTimeMsr);
    const s = snapshotWith(p);
    validateSnapshot(s);
    const wire = toBinary(SnapshotSchema, create(SnapshotSchema, snapshotToPb(s)));
    const got = snapshotFromPb(fromBinary(SnapshotSchema, wire));
    expect(got.backendPayload).toEqual(p);
    // An emulated snapshot carries none, and none comes back.
    expect(snapshotFromPb(fromBinary(SnapshotSchema, toBinary(SnapshotSchema, create(SnapshotSchema, snapshotToPb(snapshotWith(undefined)))))).backendPayload).toBeUndefined();
  });

  it("refuses a damaged or oversized payload on receipt, naming the field", () => {
    const p = encodeKvmPayload(state(2));
    const truncated = p.slice(0, p.length - 1);
    const badMagic = Uint8Array.from(p);
    badMagic[0] = 0;
    const badVcpus = Uint8Array.from(p);
    new DataView(badVcpus.buffer).setUint32(8, 5000, true);
    const badMemory = Uint8Array.from(p);
    badMemory[25] = (badMemory[25] as number) ^ 0xff; // inside the deflated stream
    for (const bad of [truncated, badMagic, badVcpus]) expect(fieldOf(() => checkKvmPayloadShape(bad))).toBe("snapshot.backendPayload");
    expect(fieldOf(() => decodeKvmPayload(badMemory))).toMatch(/^snapshot\.backendPayload/);
    expect(fieldOf(() => validateSnapshot(snapshotWith(new Uint8Array(LIMITS.backendPayloadBytesMax + 1))))).toBe("snapshot.backendPayload");
    expect(fieldOf(() => validateSnapshot(snapshotWith(new Uint8Array(0))))).toBe("snapshot.backendPayload");
  });

  it("refuses a whole payload whose vCPU count is not the snapshot's", () => {
    expect(decodeKvmPayloadFor(encodeKvmPayload(state(2)), 2).vcpus).toBe(2);
    expect(fieldOf(() => decodeKvmPayloadFor(encodeKvmPayload(state(1)), 2))).toBe("snapshot.backendPayload");
  });

  it("an emulated daemon refuses a snapshot from a real VM (it cannot host its memory)", () => {
    const host = new EmulatedHost({ name: "dst", clock: new SimClock(0n, EPOCH_NS), epochNs: EPOCH_NS });
    const emulated = new EmulatedBackend(host);
    expect(fieldOf(() => checkBackendPayload(emulated, snapshotWith(encodeKvmPayload(state(2)))))).toBe("snapshot.backendPayload");
    expect(fieldOf(() => checkBackendPayload(emulated, snapshotWith(undefined)))).toBeUndefined();
  });
});

describe("chaos --backend", () => {
  const base = { seed: "1", policy: "advance", estimator: "one-sided", guestMigrationHandling: "on", skewMax: "262s", faults: "all", vcpusMax: "4", sampleInterval: "100ms", ntpSource: "reference", determinismCheck: "0" };
  it("is a live-mode flag that reaches the live daemons and the replay command", () => {
    const p = parseChaosFlags({ ...base, mode: "live", backend: "kvm" });
    expect(p.campaign.live?.backend).toBe("kvm");
    expect(replayCommand(p.flags, 3n)).toContain("--backend kvm");
    expect(parseChaosFlags({ ...base, mode: "live" }).campaign.live).toBeUndefined();
    expect(fieldOf(() => parseChaosFlags({ ...base, mode: "sim", backend: "kvm" }))).toBe("backend");
    expect(fieldOf(() => parseChaosFlags({ ...base, mode: "live", backend: "xen" }))).toBe("backend");
  });
});
