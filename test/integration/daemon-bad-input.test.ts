// Goal: bad input never crashes a daemon and never changes its state (docs/operations.md#bad-input-and-limits): garbage, truncated
// and oversized protobuf; snapshots with each inconsistent field; replayed migration ids; stale
// generations; unknown VMs and migrations; two migrations of one VM at once; a destination that
// cannot run the guest's TSC frequency; malformed, mistyped, unknown-field and huge HTTP bodies; a
// missing bearer token. Each gets a typed error with the fitting gRPC or HTTP status; afterwards the
// daemon answers /healthz, its VMs still run, and the migration it had prepared still takes a
// valid snapshot. Method: real daemon processes; a test-side gRPC client (the project's own, with
// `raw()` for undecodable bytes) plays a source; snapshots are captured from an emulated VM in
// this process and corrupted one field at a time.

import { create, toBinary } from "@bufbuild/protobuf";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { Decision, MigrationService, TransferRequestSchema } from "../../src/gen/tscmig/v1/migration_pb.js";
import { grpcStatusOf, type ErrorCode, TscmigError } from "../../src/shared/errors.js";
import { Guest } from "../../src/shared/guest/guest.js";
import { EmulatedHost } from "../../src/shared/hypervisor/host.js";
import { EmulatedVm } from "../../src/shared/hypervisor/vm.js";
import { LIMITS } from "../../src/shared/limits.js";
import type { PrepareReq } from "../../src/shared/migration/messages.js";
import { captureSnapshot, type Snapshot } from "../../src/shared/migration/snapshot.js";
import { RealClock, RealScheduler } from "../../src/shared/platform/index.js";
import { createRpcClient, type RpcClient } from "../../src/shared/rpc/client.js";
import { keyToPb, prepareReqToPb, snapshotToPb } from "../../src/shared/rpc/codec.js";
import { Api, expectNoUntypedErrors, startDaemons, stopAllDaemons, type TestDaemon, type VmJson, waitFor } from "../helpers/daemons.js";
import { migrateAndCheck } from "../helpers/migration-checks.js";
import { prepareReq as basePrepareReq } from "../helpers/prepare-req.js";

const TOKEN = "bad-input-test-token";
let src: TestDaemon;
let dst: TestDaemon;
/** Host at 2.5 GHz without TSC scaling; its control API requires TOKEN. */
let fixed: TestDaemon;
let rpc: RpcClient<typeof MigrationService.method>;
/** A VM on the source that must keep running through everything below. */
const SENTINEL = "bi-sentinel";

beforeAll(async () => {
  [src, dst, fixed] = await startDaemons(
    { name: "bi-src" },
    { name: "bi-dst" },
    { name: "bi-fixed", args: ["--tsc-scaling", "false", "--tsc-khz", "2500000"], token: TOKEN },
  );
  // Allow more than the daemon accepts, so the oversized message is refused by the daemon, not by us.
  rpc = createRpcClient(MigrationService, dst.grpc, { maxMessageBytes: 64 * 1024 * 1024 });
  await src.api.createVm({ id: SENTINEL, vcpus: 4 });
});
afterAll(async () => {
  rpc?.close();
  await stopAllDaemons();
});

/** After every test: nobody crashed, nobody hid a bug behind INTERNAL, the sentinel still runs. */
afterEach(async () => {
  for (const d of [src, dst, fixed]) {
    expect(d.running, `${d.name} still running\n${d.tail()}`).toBe(true);
    expect(await d.api.healthy(), `${d.name} answers /healthz`).toBe(true);
    expectNoUntypedErrors(d);
  }
  const s = await src.api.vm(SENTINEL, 0);
  expect(s.running && s.role === "owner" && s.migrating === null).toBe(true);
});

async function rpcError(p: Promise<unknown>): Promise<TscmigError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof TscmigError) return e;
    throw e;
  }
  throw new Error("the call succeeded; a typed refusal was expected");
}

async function expectRefused(p: Promise<unknown>, code: ErrorCode, match: { field?: RegExp | string; reason?: string; message?: RegExp } = {}): Promise<TscmigError> {
  const e = await rpcError(p);
  expect(e.code, e.message).toBe(code);
  if (match.field !== undefined) expect(e.field, e.message).toMatch(match.field);
  if (match.reason !== undefined) expect(e.reason, e.message).toBe(match.reason);
  if (match.message !== undefined) expect(e.message).toMatch(match.message);
  return e;
}

/** Nothing runs on the destination that a test did not migrate there on purpose. */
async function vmIds(d: TestDaemon): Promise<string[]> {
  return (await d.api.ok<{ vms: VmJson[] }>("GET", "/v1/vms")).vms.map((v) => v.id);
}

async function inbound(d: TestDaemon, migrationId: string): Promise<string | undefined> {
  const r = await d.api.ok<{ inbound: { migrationId: string; phase: string }[] }>("GET", "/v1/migrations");
  return r.inbound.find((i) => i.migrationId === migrationId)?.phase;
}

// ---- a fake source: Prepare, and snapshots captured from a real emulated VM -------------------

/** Where the destination would Resolve: nothing listens, so a prepared migration stays prepared. */
const NOWHERE = "127.0.0.1:1";
/** The fake source's name and its key for every migration it prepares (every later message carries both). */
const FAKE = { sourceName: "fake-source", sourceKey: "00112233445566778899aabbccddeeff" };
/** The same, as wire fields. */
const REF = { sourceName: FAKE.sourceName, sourceKey: keyToPb(FAKE.sourceKey) };

/** The fake source's Prepare of a 4-vCPU VM (test/helpers/prepare-req.ts for the rest). */
function prepareReq(migrationId: string, vmId: string, o: Partial<PrepareReq> = {}): PrepareReq {
  return basePrepareReq({ migrationId, vmId, vcpuCount: 4, sourceGrpc: NOWHERE, ...FAKE, ...o });
}

const clock = new RealClock();
const fakeHost = new EmulatedHost({ name: "fake-source", clock, epochNs: 1_767_225_600_000_000_000n, maxerrorNs: 100_000n });

function capture(migrationId: string, vmId: string, vcpus = 4, generation = 1n): Snapshot {
  const vm = new EmulatedVm(fakeHost, { vcpus });
  const guest = new Guest(vm, new RealScheduler(), {
    clocksource: "kvm-clock",
    migrationHandling: true,
    handlingMode: "ditch",
    watchVmclock: true,
    pollIntervalNs: 16_000_000_000n,
    resyncDelayNs: 1_000_000_000n,
    driftAllowancePpm: 500n,
    ntpSource: () => ({ realtimeNs: fakeHost.realtimeNs(), maxerrorNs: fakeHost.maxerrorNs() }),
  });
  guest.sync();
  vm.pause();
  return captureSnapshot(vm, guest, { migrationId, vmId, generation, hostMaxerrorNs: 100_000n, probe: null });
}

type PbSnapshot = ReturnType<typeof snapshotToPb>;

function transferBytes(s: Snapshot, corrupt: (pb: PbSnapshot) => void = () => {}): Uint8Array {
  const pb = snapshotToPb(s);
  corrupt(pb);
  return toBinary(TransferRequestSchema, create(TransferRequestSchema, { snapshot: pb, sourceName: FAKE.sourceName, sourceKey: keyToPb(FAKE.sourceKey) }));
}

function setVersion(s: Snapshot, vcpu: number, version: number): void {
  new DataView(s.pvclock.buffer, s.pvclock.byteOffset + vcpu * 32, 32).setUint32(0, version, true);
}

// ---- gRPC ------------------------------------------------------------------------------------

describe("gRPC: undecodable requests", () => {
  it("garbage, truncated and oversized Transfer bytes get INVALID_ARGUMENT / RESOURCE_EXHAUSTED; nothing is created", async () => {
    const garbage = new Uint8Array(4096).map((_, i) => (i * 151 + 7) & 0xff);
    await expectRefused(rpc.raw("Transfer", garbage), "invalid_argument", { message: /not a valid tscmig\.v1\.TransferRequest/ });
    expect(grpcStatusOf("invalid_argument")).toBe(3);

    const valid = transferBytes(capture("bi-trunc", "bi-trunc-vm"));
    await expectRefused(rpc.raw("Transfer", valid.subarray(0, Math.floor(valid.length / 2))), "invalid_argument", { message: /not a valid/ });
    await expectRefused(rpc.raw("Prepare", new Uint8Array([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f])), "invalid_argument");

    const huge = new Uint8Array(LIMITS.messageBytesMax + 1024);
    await expectRefused(rpc.raw("Transfer", huge), "resource_exhausted");
    expect(grpcStatusOf("resource_exhausted")).toBe(8);

    // Well-formed but empty: a Transfer without a snapshot, a Prepare with nothing set.
    await expectRefused(rpc.raw("Transfer", new Uint8Array(0)), "invalid_argument", { field: "snapshot" });
    await expectRefused(rpc.raw("Prepare", new Uint8Array(0)), "invalid_argument");
    expect(await vmIds(dst)).toEqual([]);
  });
});

describe("gRPC: snapshots with inconsistent fields (docs/operations.md#bad-input-and-limits)", () => {
  const MIG = "bi-snap";
  const VM = "bi-snap-vm";

  it("each corruption is refused naming its field; the prepared migration still accepts the valid snapshot afterwards", async () => {
    await rpc.prepare(prepareReqToPb(prepareReq(MIG, VM)));
    expect(await inbound(dst, MIG)).toBe("prepared");
    const good = () => capture(MIG, VM);
    const cases: [string, Uint8Array, RegExp][] = [
      ["vCPU count ≠ Prepare", transferBytes(capture(MIG, VM, 8)), /^snapshot\.vcpuCount$/],
      ["column shorter than the vCPU count", transferBytes(good(), (pb) => void (pb.vcpus as { tscOffset: bigint[] }).tscOffset.pop()), /^snapshot\.vcpus\.tscOffset$/],
      ["pvclock records of the wrong size", transferBytes(good(), (pb) => void ((pb.vcpus as { pvclockRecords: Uint8Array }).pvclockRecords = new Uint8Array(3 * 32))), /^snapshot\.vcpus\.pvclockRecords$/],
      ["vCPU count 0", transferBytes(good(), (pb) => void (pb.vcpuCount = 0)), /^snapshot\.vcpuCount$/],
      ["vCPU count above the limit", transferBytes(good(), (pb) => void (pb.vcpuCount = LIMITS.vcpuCountMax + 1)), /^snapshot\.vcpuCount$/],
      ["guest TSC frequency 0", transferBytes(good(), (pb) => void (pb.guestTscKhz = 0n)), /^snapshot\.guestTscKhz$/],
      ["guest TSC frequency out of range", transferBytes(good(), (pb) => void (pb.guestTscKhz = LIMITS.tscKhzMax + 1n)), /^snapshot\.guestTscKhz$/],
      ["host TSC frequency 0", transferBytes(good(), (pb) => void (pb.hostTscKhz = 0n)), /^snapshot\.hostTscKhz$/],
      ["ratio 0", transferBytes(good(), (pb) => void ((pb.vcpus as { ratio: bigint[] }).ratio[1] = 0n)), /^snapshot\.vcpus\.ratio\[1\]$/],
      ["ratio ≥ the vendor maximum", transferBytes(good(), (pb) => void ((pb.vcpus as { ratio: bigint[] }).ratio[2] = 0xffff_ffff_ffff_ffffn)), /^snapshot\.vcpus\.ratio\[2\]$/],
      [
        "odd pvclock version",
        (() => {
          const s = good();
          setVersion(s, 3, 7);
          return transferBytes(s);
        })(),
        /pvclock.*version/i,
      ],
      ["unknown format version", transferBytes(good(), (pb) => void (pb.formatVersion = 2)), /^snapshot\.formatVersion$/],
      ["frac bits neither 48 nor 32", transferBytes(good(), (pb) => void (pb.fracBits = 40)), /^snapshot\.fracBits$/],
      ["generation ≠ Prepare", transferBytes(capture(MIG, VM, 4, 2n)), /^snapshot\.generation$/],
      ["another VM's snapshot", transferBytes(capture(MIG, "bi-other-vm")), /^snapshot\.vmId$/],
      ["truncated vmclock page", transferBytes(good(), (pb) => void (pb.vmclockPage = new Uint8Array(16))), /vmclock/i],
      ["NTP maxerror beyond 16 s", transferBytes(good(), (pb) => void ((pb.guest as { maxerrorUs: bigint }).maxerrorUs = 16_000_001n)), /^snapshot\.guest\.maxerrorUs$/],
    ];
    for (const [what, bytes, field] of cases) {
      const e = await rpcError(rpc.raw("Transfer", bytes));
      expect(e.code, `${what}: ${e.message}`).toBe("invalid_argument");
      expect(e.field ?? "", `${what}: ${e.message}`).toMatch(field);
      expect(await inbound(dst, MIG), `${what}: no state change`).toBe("prepared");
    }
    expect(await vmIds(dst)).toEqual([]);

    // The same migration takes the valid snapshot (staged, nothing runs before Commit), then Abort.
    await rpc.raw("Transfer", transferBytes(good()));
    expect(await inbound(dst, MIG)).toBe("staged");
    expect(await vmIds(dst)).toEqual([]);
    await rpc.abort({ migrationId: MIG, vmId: VM, generation: 1n, reason: "test done", ...REF });
    expect(await inbound(dst, MIG)).toBe("aborted");
  });
});

describe("gRPC: protocol misuse", () => {
  it("replayed migration ids: an identical Prepare is idempotent, the same id for another VM or after it ended is refused", async () => {
    const req = prepareReqToPb(prepareReq("bi-replay", "bi-replay-vm"));
    await rpc.prepare(req);
    await rpc.prepare(req); // a retried Prepare
    await expectRefused(rpc.prepare(prepareReqToPb(prepareReq("bi-replay", "bi-replay-vm2"))), "already_exists", { reason: "migration_id_reused" });
    await rpc.abort({ migrationId: "bi-replay", vmId: "bi-replay-vm", generation: 1n, reason: "test", ...REF });
    await expectRefused(rpc.prepare(req), "already_exists", { reason: "migration_id_reused" });
    await expectRefused(rpc.raw("Transfer", transferBytes(capture("bi-replay", "bi-replay-vm"))), "aborted");
    await expectRefused(rpc.commit({ migrationId: "bi-replay", vmId: "bi-replay-vm", generation: 1n, transferRttNs: 0n, ...REF }), "aborted", { reason: "migration_aborted" });
    expect(await vmIds(dst)).toEqual([]);
  });

  it("unknown migrations and VMs: Transfer before Prepare, Commit of nothing, Resolve of nothing", async () => {
    await expectRefused(rpc.raw("Transfer", transferBytes(capture("bi-never", "bi-never-vm"))), "failed_precondition", { reason: "not_prepared" });
    // A Commit of a migration never seen is fenced before it is answered: refused for good (so its
    // source may take its VM back), and a late Prepare of that migration is refused too.
    await expectRefused(rpc.commit({ migrationId: "bi-never", vmId: "bi-never-vm", generation: 1n, transferRttNs: 0n, ...REF }), "aborted", { reason: "migration_unknown" });
    await expectRefused(rpc.prepare(prepareReqToPb(prepareReq("bi-never", "bi-never-vm"))), "already_exists", { reason: "migration_id_reused" });
    const r = await rpc.resolve({ migrationId: "bi-never", vmId: "bi-never-vm", sourceKey: REF.sourceKey });
    expect(r.decision).toBe(Decision.UNKNOWN); // an answer, not an error
    await rpc.abort({ migrationId: "bi-never", vmId: "bi-never-vm", generation: 1n, reason: "nothing to abort", ...REF });
    await expectRefused(rpc.prepare(prepareReqToPb(prepareReq("bad id!", "bi-x"))), "invalid_argument", { field: "migrationId" });
    await expectRefused(rpc.prepare(prepareReqToPb(prepareReq("bi-zero-vcpus", "bi-x", { vcpuCount: 0 }))), "invalid_argument", { field: "vcpuCount" });
    await expectRefused(rpc.prepare(prepareReqToPb(prepareReq("bi-gen0", "bi-x", { generation: 0n }))), "invalid_argument", { field: "generation" });
    expect(await inbound(dst, "bi-zero-vcpus")).toBeUndefined();
    expect(await vmIds(dst)).toEqual([]);
  });

  it("stale generations: a VM that left at generation 2 is refused at ≤ 2; a Commit with another generation is refused", async () => {
    const id = "bi-fenced";
    await src.api.createVm({ id, vcpus: 2 });
    await migrateAndCheck(src, dst, id, { doorbell: false }); // generation 1 on dst
    await migrateAndCheck(dst, src, id, { doorbell: false }); // generation 2 back on src; dst keeps a tombstone
    for (const generation of [1n, 2n])
      await expectRefused(rpc.prepare(prepareReqToPb(prepareReq(`bi-stale-${generation}`, id, { generation }))), "failed_precondition", { reason: "stale_generation" });
    // The source still owns it: a Prepare there for the same VM is refused too.
    const srcRpc = createRpcClient(MigrationService, src.grpc);
    try {
      await expectRefused(srcRpc.prepare(prepareReqToPb(prepareReq("bi-owned", id, { generation: 3n }))), "already_exists", { reason: "vm_exists" });
    } finally {
      srcRpc.close();
    }
    // Commit must name the generation it prepared.
    await rpc.prepare(prepareReqToPb(prepareReq("bi-gen-commit", "bi-gen-vm")));
    await rpc.raw("Transfer", transferBytes(capture("bi-gen-commit", "bi-gen-vm")));
    await expectRefused(rpc.commit({ migrationId: "bi-gen-commit", vmId: "bi-gen-vm", generation: 5n, transferRttNs: 0n, ...REF }), "failed_precondition", { reason: "stale_generation" });
    expect(await inbound(dst, "bi-gen-commit")).toBe("staged");
    await rpc.abort({ migrationId: "bi-gen-commit", vmId: "bi-gen-vm", generation: 1n, reason: "test", ...REF });
    expect(await vmIds(dst)).toEqual([]);
    expect((await src.api.vm(id, 0)).generation).toBe("2");
  });

  it("two migrations of one VM into a destination at once: the second Prepare is refused while the first is undecided", async () => {
    await rpc.prepare(prepareReqToPb(prepareReq("bi-twin-a", "bi-twin")));
    await expectRefused(rpc.prepare(prepareReqToPb(prepareReq("bi-twin-b", "bi-twin"))), "aborted", { reason: "migration_in_progress" });
    expect(await inbound(dst, "bi-twin-b")).toBeUndefined();
    await rpc.abort({ migrationId: "bi-twin-a", vmId: "bi-twin", generation: 1n, reason: "test", ...REF });
    // Once the first is decided, the VM may come in under a new id.
    await rpc.prepare(prepareReqToPb(prepareReq("bi-twin-c", "bi-twin")));
    await rpc.abort({ migrationId: "bi-twin-c", vmId: "bi-twin", generation: 1n, reason: "test", ...REF });
  });
});

// ---- migrations the control API starts --------------------------------------------------------

describe("gRPC: Handover (Transfer and Commit on one call) misuse", () => {
  it("refuses garbage, a step before open, a second open, another migration's messages and a bad snapshot, each ending only its own call", async () => {
    const garbage = rpc.handover();
    await expectRefused(garbage.sendRaw(Uint8Array.of(0x12, 0xff, 0xff, 0xff, 0xff, 0x0f)), "invalid_argument", { message: /not a valid tscmig\.v1\.HandoverRequest/ });
    await expectRefused(rpc.handover().send({}), "invalid_argument", { field: "step" });
    const early = rpc.handover();
    await expectRefused(early.send({ step: { case: "transfer", value: { snapshot: snapshotToPb(capture("bh-early", "bh-vm")), ...REF } } }), "invalid_argument", { field: "step" });
    await expectRefused(rpc.handover().send({ step: { case: "open", value: { migrationId: "bad id!", ...REF } } }), "invalid_argument", { field: "open.migrationId" });
    // Open only for a migration this source prepared, with its key.
    await expectRefused(rpc.handover().send({ step: { case: "open", value: { migrationId: "bh-1", ...REF } } }), "failed_precondition", { reason: "not_prepared" });
    await rpc.prepare(prepareReqToPb(prepareReq("bh-1", "bh-vm")));
    await expectRefused(rpc.handover().send({ step: { case: "open", value: { migrationId: "bh-1", sourceName: FAKE.sourceName, sourceKey: keyToPb("ff".repeat(16)) } } }), "permission_denied", { reason: "foreign_source" });
    const twice = rpc.handover();
    await twice.send({ step: { case: "open", value: { migrationId: "bh-1", ...REF } } });
    await expectRefused(twice.send({ step: { case: "open", value: { migrationId: "bh-1", ...REF } } }), "invalid_argument", { field: "open" });

    const other = rpc.handover();
    await other.send({ step: { case: "open", value: { migrationId: "bh-1", ...REF } } });
    await expectRefused(other.send({ step: { case: "commit", value: { migrationId: "bh-2", vmId: "bh-vm", generation: 1n, ...REF } } }), "invalid_argument", { field: "commit.migrationId" });
    const corrupt = rpc.handover();
    await corrupt.send({ step: { case: "open", value: { migrationId: "bh-1", ...REF } } });
    const pb = snapshotToPb(capture("bh-1", "bh-vm"));
    pb.generation = 9n;
    await expectRefused(corrupt.send({ step: { case: "transfer", value: { snapshot: pb, ...REF } } }), "invalid_argument", { field: "snapshot.generation" });
    // Nothing was staged or run by any of it: the migration is still only prepared, and a valid
    // Transfer on a fresh call is taken.
    expect(await inbound(dst, "bh-1")).toBe("prepared");
    expect(await vmIds(dst)).not.toContain("bh-vm");
    const good = rpc.handover();
    await good.send({ step: { case: "open", value: { migrationId: "bh-1", ...REF } } });
    const r = await good.send({ step: { case: "transfer", value: { snapshot: snapshotToPb(capture("bh-1", "bh-vm")), ...REF } } });
    expect(r.step.case).toBe("transfer");
    expect(await inbound(dst, "bh-1")).toBe("staged");
    good.close();
    await rpc.abort({ migrationId: "bh-1", vmId: "bh-vm", generation: 1n, reason: "test done", ...REF });
    expect(await vmIds(dst)).not.toContain("bh-vm");
  });
});

describe("control API: migrations that must be refused", () => {
  it("two concurrent migrations of one VM: exactly one commits, the other is refused, the VM runs on exactly one daemon", async () => {
    const id = "bi-concurrent";
    await src.api.createVm({ id, vcpus: 2 });
    const [a, b] = await Promise.all([src.api.migrate(id, { destination: dst.grpc }), src.api.migrate(id, { destination: dst.grpc })]);
    const answers = [a, b];
    const committed = answers.filter((r) => r.status === 200 && r.body.outcome === "committed");
    const refused = answers.filter((r) => r !== committed[0]);
    expect(committed.length, answers.map((r) => r.text).join("\n")).toBe(1);
    expect(refused.length).toBe(1);
    const err = (refused[0]!.body as unknown as { error: { code: string; reason?: string } }).error;
    // Refused while the first holds the VM (409 migration_in_progress), or after it left (404).
    expect([409, 404]).toContain(refused[0]!.status);
    if (refused[0]!.status === 409) expect(err.reason).toBe("migration_in_progress");
    else expect(err.code).toBe("not_found");
    expect(await src.api.vmOrNull(id)).toBeNull();
    expect((await dst.api.vm(id, 0)).running).toBe(true);
  });

  it("a replayed migration id is refused by the source (409) and the VM keeps running", async () => {
    await src.api.createVm({ id: "bi-mid-1", vcpus: 1 });
    await src.api.createVm({ id: "bi-mid-2", vcpus: 1 });
    await migrateAndCheck(src, dst, "bi-mid-1", { doorbell: false, migrationId: "bi-mid" });
    const r = await src.api.migrate("bi-mid-2", { destination: dst.grpc, migrationId: "bi-mid" });
    expect(r.status, r.text).toBe(409);
    expect((r.body as unknown as { error: { code: string; reason: string } }).error).toMatchObject({ code: "already_exists", reason: "migration_id_reused" });
    const v = await src.api.vm("bi-mid-2", 0);
    expect(v.running && v.migrating === null).toBe(true);
  });

  it("a destination without TSC scaling refuses a foreign guest frequency (failed_precondition), and takes its own", async () => {
    const id = "bi-foreign-khz";
    const before = await src.api.createVm({ id, vcpus: 4 });
    const r = await src.api.migrate(id, { destination: fixed.grpc });
    expect(r.status, r.text).toBe(200);
    expect(r.body.outcome).toBe("refused");
    expect(r.body.error).toMatchObject({ code: "failed_precondition", field: "guestTscKhz", reason: "tsc_scaling_unavailable" });
    const after = await src.api.vm(id, 0);
    expect(after.running && after.role === "owner" && after.migrating === null).toBe(true);
    expect(after.generation).toBe(before.generation);
    expect(await fixed.api.vmOrNull(id)).toBeNull();
    expect(await inbound(fixed, r.body.migrationId)).toBeUndefined();
    // A guest already at the destination host's rate needs no scaling there.
    await src.api.createVm({ id: "bi-native-khz", vcpus: 4, guestTscKhz: "2500000" });
    await migrateAndCheck(src, fixed, "bi-native-khz", { doorbell: true });
  });

  it("unknown VMs: 404 for read and migrate; an unreachable destination is an outcome, not an error", async () => {
    for (const [method, path, body] of [
      ["GET", "/v1/vms/no-such-vm", undefined],
      ["POST", "/v1/vms/no-such-vm/migrate", { destination: dst.grpc }],
      ["GET", "/v1/nothing-here", undefined],
    ] as const) {
      const r = await src.api.send(method, path, body);
      expect(r.status, `${method} ${path}: ${r.text}`).toBe(404);
      expect((r.body as { error: { code: string } }).error.code).toBe("not_found");
    }
    await src.api.createVm({ id: "bi-unreachable", vcpus: 1 });
    const r = await src.api.migrate("bi-unreachable", { destination: NOWHERE });
    expect(r.body.outcome).toBe("refused");
    expect(r.body.error?.code).toBe("unavailable");
    expect((await src.api.vm("bi-unreachable", 0)).running).toBe(true);
  });
});

// ---- HTTP bodies and auth ---------------------------------------------------------------------

describe("control API: bad HTTP input", () => {
  const expect400 = async (method: "POST" | "PUT" | "GET", path: string, body: unknown, field?: RegExp, headers: Record<string, string> = {}) => {
    const r = await src.api.send(method, path, body, headers);
    expect(r.status, `${method} ${path} ${typeof body === "string" ? body.slice(0, 80) : JSON.stringify(body)}: ${r.text.slice(0, 300)}`).toBe(400);
    const err = (r.body as { error: { code: string; field?: string } }).error;
    expect(err.code).toBe("invalid_argument");
    if (field) expect(err.field ?? "", r.text).toMatch(field);
  };

  it("malformed JSON, unknown fields, wrong types and out-of-range values are 400 invalid_argument, a huge body 413; nothing is created", async () => {
    const before = await vmIds(src);
    await expect400("POST", "/v1/vms", '{"vcpus": 1');
    await expect400("POST", "/v1/vms", "not json at all");
    await expect400("POST", "/v1/vms", { vcpus: 1, bogus: true }, /^body\.bogus$/);
    await expect400("POST", "/v1/vms", {}, /^body\.vcpus$/);
    await expect400("POST", "/v1/vms", { vcpus: "4" }, /^body\.vcpus$/);
    await expect400("POST", "/v1/vms", { vcpus: 4.5 }, /^body\.vcpus$/);
    await expect400("POST", "/v1/vms", { vcpus: true }, /^body\.vcpus$/);
    await expect400("POST", "/v1/vms", { vcpus: [4] }, /^body\.vcpus$/);
    await expect400("POST", "/v1/vms", { vcpus: 0 }, /^body\.vcpus$/);
    await expect400("POST", "/v1/vms", { vcpus: LIMITS.vcpuCountMax + 1 }, /^body\.vcpus$/);
    await expect400("POST", "/v1/vms", { vcpus: 1, id: 12345 }, /^body\.id$/);
    await expect400("POST", "/v1/vms", { vcpus: 1, id: "../etc" }, /^body\.id$/);
    await expect400("POST", "/v1/vms", { vcpus: 1, guestTscKhz: 2000000 }, /^body\.guestTscKhz$/);
    await expect400("POST", "/v1/vms", { vcpus: 1, guestTscKhz: "-1" }, /guestTscKhz/);
    await expect400("POST", "/v1/vms", { vcpus: 1, guestTscKhz: "99999999999999999999999" }, /guestTscKhz/);
    await expect400("POST", "/v1/vms", { vcpus: 1, clocksource: "hpet" }, /^body\.clocksource$/);
    const huge = await src.api.send("POST", "/v1/vms", JSON.stringify({ vcpus: 1, pad: "x".repeat(200 * 1024) }));
    expect(huge.status).toBe(413); // too large is its own status (resource_exhausted, body_too_large)
    await expect400("POST", `/v1/vms/${SENTINEL}/migrate`, { destination: "x" }, /^body\.destination$/);
    await expect400("POST", `/v1/vms/${SENTINEL}/migrate`, { destination: dst.grpc, policy: "teleport" }, /^body\.policy$/);
    await expect400("POST", `/v1/vms/${SENTINEL}/migrate`, { destination: dst.grpc, advanceCapNs: "-5" }, /advanceCapNs/);
    await expect400("POST", `/v1/vms/${SENTINEL}/migrate`, { destination: dst.grpc, doorbell: "yes" }, /^body\.doorbell$/);
    await expect400("PUT", "/v1/host/clock", {});
    await expect400("PUT", "/v1/host/clock", { offsetNs: "5ms" }, /offsetNs/);
    await expect400("PUT", "/v1/host/clock", { driftPpm: 1e9 }, /^body\.driftPpm$/);
    await expect400("GET", `/v1/vms/${SENTINEL}?vcpus=-1`, undefined, /vcpus/);
    await expect400("GET", `/v1/vms/${SENTINEL}?color=blue`, undefined);
    expect(await vmIds(src)).toEqual(before);
    expect(BigInt(((await src.api.ok("GET", "/v1/host")) as { skewNs: string }).skewNs)).toBe(0n);
  });

  it("a daemon with --token answers 401 without the right bearer token, and still serves health without one", async () => {
    const anonymous = new Api(fixed.http);
    const wrong = new Api(fixed.http, "not-the-token");
    for (const api of [anonymous, wrong]) {
      for (const [method, path, body] of [
        ["GET", "/v1/vms", undefined],
        ["POST", "/v1/vms", { vcpus: 1 }],
        ["PUT", "/v1/host/clock", { offsetNs: "1" }],
        ["GET", "/v1/no-such-route", undefined],
      ] as const) {
        const r = await api.send(method, path, body);
        expect(r.status, `${method} ${path}`).toBe(401);
        expect((r.body as { error: { code: string } }).error.code).toBe("unauthenticated");
      }
    }
    expect((await anonymous.send("GET", "/healthz")).status).toBe(200);
    expect((await anonymous.send("GET", "/metrics")).status).toBe(200);
    expect((await fixed.api.send("GET", "/v1/vms")).status).toBe(200);
    expect(((await fixed.api.ok("GET", "/v1/host")) as { skewNs: string }).skewNs).toBe("0");
  });
});

describe("after all of it", () => {
  it("every daemon still serves and migrates: the sentinel VM moves with every check", async () => {
    await waitFor("all daemons healthy", async () => (await Promise.all([src, dst, fixed].map((d) => d.api.healthy()))).every(Boolean));
    await migrateAndCheck(src, dst, SENTINEL, { doorbell: true });
    await migrateAndCheck(dst, src, SENTINEL, { doorbell: false });
  });
});
