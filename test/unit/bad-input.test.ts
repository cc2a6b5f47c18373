// Goal: every constructor and operation of the core rejects impossible values with a typed
// TscmigError naming the field, and nothing is half-applied (docs/operations.md#bad-input-and-limits). Method: one valid object per
// component (on a SimClock), then each field broken in turn; state is compared before and after.

import { describe, expect, it } from "vitest";
import { defaultNodeConfig, TscmigNode } from "../../src/daemon/node.js";
import { TscmigError } from "../../src/shared/errors.js";
import { Guest, type GuestOptions } from "../../src/shared/guest/guest.js";
import { EmulatedHost, type HostOptions } from "../../src/shared/hypervisor/host.js";
import { EmulatedVm } from "../../src/shared/hypervisor/vm.js";
import { encodePvclock, PVCLOCK_RECORD_BYTES } from "../../src/shared/kvm/pvclock.js";
import { KVM_CLOCK_REALTIME } from "../../src/shared/kvm/set-clock.js";
import { SVM, VMX } from "../../src/shared/kvm/tsc.js";
import { SILENT_LOGGER } from "../../src/shared/logger.js";
import { estimateBlackout, oneSidedEstimate, parseEstimator, probeEstimate, probeOffset, wallclockEstimate } from "../../src/shared/migration/blackout.js";
import { MemoryJournal } from "../../src/shared/migration/journal.js";
import { loadStagedPayload } from "../../src/shared/migration/hosted-vm.js";
import type { PeerDialer } from "../../src/shared/migration/messages.js";
import { parsePolicy, type PolicyName, restoreSnapshot } from "../../src/shared/migration/restore.js";
import { captureSnapshot, type Snapshot, snapshotRecord, validateSnapshot } from "../../src/shared/migration/snapshot.js";
import { type OffsetModel, offsetModelToJson, parseOffsetModel, validateOffsetModel } from "../../src/shared/time/offset-model.js";
import { SeededRandom } from "../../src/shared/time/random.js";
import { SimClock, SimScheduler } from "../../src/shared/time/sim.js";
import { SkewController, type SkewUpdate } from "../../src/shared/time/skew.js";
import { toJson } from "../../src/shared/serde.js";
import { EPOCH_NS, quietGuestOptions } from "../helpers/sim-migration.js";

/** Runs `fn`, expecting a TscmigError whose field is `field` (or starts with it, for indexed paths). */
function rejects(fn: () => unknown, field: string | RegExp): TscmigError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught, `expected a TscmigError naming ${String(field)}`).toBeInstanceOf(TscmigError);
  const err = caught as TscmigError;
  if (typeof field === "string") expect(err.field, err.message).toBe(field);
  else expect(err.field ?? "", err.message).toMatch(field);
  return err;
}

const clock = new SimClock(0n, EPOCH_NS);
const sched = new SimScheduler(clock);
const hostOpts = (over: Partial<HostOptions> = {}): HostOptions => ({ name: "h", clock, epochNs: EPOCH_NS, tscKhz: 2_000_000n, ...over });

describe("EmulatedHost", () => {
  const cases: [string, Partial<HostOptions>, string | RegExp][] = [
    ["zero frequency", { tscKhz: 0n }, "host.tscKhz"],
    ["negative frequency", { tscKhz: -2_000_000n }, "host.tscKhz"],
    ["frequency below 1 MHz", { tscKhz: 999n }, "host.tscKhz"],
    ["frequency above KVM's cap", { tscKhz: 0x8000_0000n }, "host.tscKhz"],
    ["unknown vendor", { vendor: "arm" as "vmx" }, "host.vendor"],
    ["empty name", { name: "" }, "host.name"],
    ["a crystal drifting past 500 ppm", { crystal: { kind: "drift", ppm: 501, fromNs: 0n } }, "host.crystal.ppm"],
    ["a crystal that steps", { crystal: { kind: "step", atNs: 0n, stepNs: 5n } }, "host.crystal"],
    ["an unknown crystal model", { crystal: { kind: "warp" } as unknown as OffsetModel }, "host.crystal.kind"],
    ["a skew beyond 1000 s", { skew: { kind: "constant", offsetNs: 1_000_000_000_001n } }, "skew.offsetNs"],
    ["a negative claimed maxerror", { maxerrorNs: -1n }, "maxerrorNs"],
    ["a negative TSC at boot", { tsc0: -1n }, "host.tsc0"],
    ["a TSC at boot beyond u64", { tsc0: 1n << 64n }, "host.tsc0"],
    ["a negative raw clock base", { rawBaseNs: -1n }, "host.rawBaseNs"],
    ["a negative epoch", { epochNs: -1n }, "host.epochNs"],
  ];
  for (const [what, over, field] of cases) it(`rejects ${what}, naming ${String(field)}`, () => rejects(() => new EmulatedHost(hostOpts(over)), field));
});

describe("EmulatedVm", () => {
  const host = new EmulatedHost(hostOpts());
  const svmHost = new EmulatedHost(hostOpts({ vendor: "svm", tscKhz: 1_000_000n }));
  const noScaling = new EmulatedHost(hostOpts({ tscScaling: false }));

  for (const vcpus of [0, -1, 1025, 1.5, Number.NaN])
    it(`rejects ${vcpus} vCPUs (1..1024 only)`, () => rejects(() => new EmulatedVm(host, { vcpus }), "vcpus"));

  it("accepts 1 and 1024 vCPUs", () => {
    expect(new EmulatedVm(host, { vcpus: 1 }).vcpuCount).toBe(1);
    expect(new EmulatedVm(host, { vcpus: 1024 }).vcpuCount).toBe(1024);
  });

  for (const khz of [0n, -1n, 999n, 0x8000_0000n])
    it(`rejects a guest TSC of ${khz} kHz`, () => rejects(() => new EmulatedVm(host, { vcpus: 1, guestTscKhz: khz }), "guestTscKhz"));

  it("rejects a guest rate whose ratio would reach the vendor maximum (SVM: 256× the host)", () => {
    const e = rejects(() => new EmulatedVm(svmHost, { vcpus: 1, guestTscKhz: 300_000_000n }), "guestTscKhz");
    expect(e.errno).toBe("EINVAL");
  });

  it("rejects a rate outside the 250 ppm tolerance on a host without TSC scaling", () => {
    const e = rejects(() => new EmulatedVm(noScaling, { vcpus: 1, guestTscKhz: 2_001_000n }), "guestTscKhz");
    expect(e.errno).toBe("EINVAL");
  });

  it("setTscKhz with a bad rate or vCPU changes nothing", () => {
    const vm = new EmulatedVm(host, { vcpus: 2, guestTscKhz: 3_000_000n });
    const before = vm.exportState();
    rejects(() => vm.setTscKhz(0, 0n), "guestTscKhz");
    rejects(() => vm.setTscKhz(1, 0x8000_0000n), "guestTscKhz");
    rejects(() => vm.setTscKhz(2, 3_000_000n), "vcpu");
    rejects(() => vm.setTscKhz(-1, 3_000_000n), "vcpu");
    expect(vm.exportState()).toEqual(before);
  });

  it("setTscOffset outside u64 or on a missing vCPU changes nothing", () => {
    const vm = new EmulatedVm(host, { vcpus: 2 });
    const before = vm.exportState();
    rejects(() => vm.setTscOffset(0, -1n), "tscOffset");
    rejects(() => vm.setTscOffset(0, 1n << 64n), "tscOffset");
    rejects(() => vm.setTscOffsetAll(-5n), "tscOffset");
    rejects(() => vm.setTscOffset(7, 0n), "vcpu");
    expect(vm.exportState()).toEqual(before);
  });

  it("KVMCLOCK_CTRL before the guest enabled kvmclock is EINVAL, as in KVM", () => {
    const vm = new EmulatedVm(host, { vcpus: 1 });
    let err: unknown;
    try {
      vm.kvmclockCtrl(0);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(TscmigError);
    expect((err as TscmigError).errno).toBe("EINVAL");
  });

  it("KVM_SET_CLOCK with unknown flags is EINVAL and leaves kvmclock untouched", () => {
    const vm = new EmulatedVm(host, { vcpus: 1 });
    clock.advanceTo(clock.monotonicNs() + 1_234_567_891n);
    const before = vm.getClock().clock;
    const state = vm.exportState();
    const e = rejects(() => vm.setClock({ clock: 5n, flags: KVM_CLOCK_REALTIME | 0x100, realtime: 0n }), "flags");
    expect(e.errno).toBe("EINVAL");
    expect(vm.getClock().clock).toBe(before);
    expect(vm.exportState()).toEqual(state);
  });

  it("importState with another vCPU count is refused before anything is copied", () => {
    const vm = new EmulatedVm(host, { vcpus: 2 });
    const other = new EmulatedVm(host, { vcpus: 3 });
    const before = vm.exportState();
    rejects(() => vm.importState(other.exportState()), "state.vcpus");
    expect(vm.exportState()).toEqual(before);
  });
});

describe("Guest", () => {
  const host = new EmulatedHost(hostOpts());
  const cases: [string, Partial<GuestOptions>, string][] = [
    ["an unknown clocksource", { clocksource: "hpet" as "tsc" }, "clocksource"],
    ["an unknown handling mode", { handlingMode: "panic" as "ditch" }, "handlingMode"],
    ["a zero NTP poll period (would loop at one instant)", { pollIntervalNs: 0n }, "pollIntervalNs"],
    ["a negative NTP poll period", { pollIntervalNs: -1n }, "pollIntervalNs"],
    ["a negative resync delay", { resyncDelayNs: -1n }, "resyncDelayNs"],
    ["a negative drift allowance", { driftAllowancePpm: -1n }, "driftAllowancePpm"],
  ];
  for (const [what, over, field] of cases)
    it(`rejects ${what} before touching the VM`, () => {
      const vm = new EmulatedVm(host, { vcpus: 1 });
      const before = vm.exportState();
      rejects(() => new Guest(vm, sched, quietGuestOptions(over)), field);
      expect(vm.exportState()).toEqual(before);
      expect(vm.running).toBe(false);
    });
});

describe("policy, estimator and offset-model names", () => {
  for (const v of ["teleport", "", "ADVANCE", 3, null])
    it(`rejects the policy ${JSON.stringify(v)}`, () => rejects(() => parsePolicy(v), "policy"));
  for (const v of ["sundial", "wall-clock", undefined])
    it(`rejects the estimator ${JSON.stringify(v)}`, () => rejects(() => parseEstimator(v), "estimator"));

  const bad: [string, unknown, string][] = [
    ["an unknown kind", { kind: "warp" }, "m.kind"],
    ["not an object", "constant", "m"],
    ["an unknown key", { kind: "constant", offsetNs: "0", extra: 1 }, "m.extra"],
    ["a non-integer offset", { kind: "constant", offsetNs: "1.5" }, "m.offsetNs"],
    ["an offset beyond 1000 s", { kind: "constant", offsetNs: "1000000000001" }, "m.offsetNs"],
    ["a drift of NaN", { kind: "drift", ppm: "NaN" }, "m.ppm"],
    ["a drift beyond 500 ppm", { kind: "drift", ppm: -501 }, "m.ppm"],
    ["a zero period", { kind: "periodic", amplitudeNs: "5", periodNs: "0" }, "m.periodNs"],
    ["a negative jitter amplitude", { kind: "jitter", amplitudeNs: "-5", intervalNs: "10" }, "m.amplitudeNs"],
    ["a zero jitter interval", { kind: "jitter", amplitudeNs: "5", intervalNs: "0" }, "m.intervalNs"],
    ["a strobe ending before it starts", { kind: "strobe", deltaNs: "1", periodNs: "1", fromNs: "10", untilNs: "5" }, "m.untilNs"],
    ["a bad part of a sum", { kind: "sum", parts: [{ kind: "constant", offsetNs: "1" }, { kind: "drift", ppm: 9000 }] }, "m.parts[1].ppm"],
    ["a sum without parts", { kind: "sum", parts: 3 }, "m.parts"],
  ];
  for (const [what, json, field] of bad) it(`parseOffsetModel rejects ${what}, naming ${field}`, () => rejects(() => parseOffsetModel(json, "m"), field));

  it("validateOffsetModel rejects more than 64 parts, and parse accepts what toJson writes", () => {
    const parts: OffsetModel[] = Array.from({ length: 65 }, () => ({ kind: "constant", offsetNs: 1n }));
    rejects(() => validateOffsetModel({ kind: "sum", parts }, "m"), "m.parts");
    const ok: OffsetModel = { kind: "sum", parts: [{ kind: "drift", ppm: 12.5, fromNs: 3n }, { kind: "periodic", amplitudeNs: 7n, periodNs: 100n, phaseNs: 1n }] };
    expect(parseOffsetModel(JSON.parse(JSON.stringify(offsetModelToJson(ok))), "m")).toEqual(ok);
  });
});

describe("SkewController.apply: one bad field and nothing changes", () => {
  const bad: [string, SkewUpdate, string][] = [
    ["offset beyond 1000 s", { offsetNs: 1_000_000_000_001n }, "offsetNs"],
    ["step beyond 1000 s", { stepNs: -1_000_000_000_001n }, "stepNs"],
    ["drift NaN", { driftPpm: Number.NaN }, "driftPpm"],
    ["drift infinite", { driftPpm: Number.POSITIVE_INFINITY }, "driftPpm"],
    ["drift beyond 500 ppm", { driftPpm: 500.5 }, "driftPpm"],
    ["wander without a period", { wanderAmplitudeNs: 1_000n }, "wanderPeriodNs"],
    ["wander with a negative period", { wanderAmplitudeNs: 1_000n, wanderPeriodNs: -1n }, "wanderPeriodNs"],
    ["a zero wander period on its own", { wanderPeriodNs: 0n }, "wanderPeriodNs"],
    ["wander amplitude beyond 1000 s", { wanderAmplitudeNs: 1_000_000_000_001n, wanderPeriodNs: 5n }, "wanderAmplitudeNs"],
    ["negative jitter", { jitterNs: -1n }, "jitterNs"],
    ["zero jitter interval", { jitterNs: 5n, jitterIntervalNs: 0n }, "jitterIntervalNs"],
    ["negative maxerror", { maxerrorNs: -1n }, "maxerrorNs"],
    ["maxerror beyond 1000 s", { maxerrorNs: 1_000_000_000_001n }, "maxerrorNs"],
  ];
  for (const [what, bad1, field] of bad)
    it(`rejects ${what} — alone or next to valid fields — and keeps the model`, () => {
      const s = new SkewController({ kind: "constant", offsetNs: 3_000n }, 10_000n, 9n);
      s.apply({ driftPpm: 20, wanderAmplitudeNs: 500n, wanderPeriodNs: 1_000_000n, jitterNs: 40n }, 1_000_000n);
      const before = JSON.stringify(offsetModelToJson(s.state.model)) + s.state.maxerrorNs;
      const samples = [0n, 1_000_000n, 5_000_000n, 9_000_000_000n].map((t) => s.offsetAt(t));
      rejects(() => s.apply(bad1, 2_000_000n), field);
      rejects(() => s.apply({ offsetNs: 7n, stepNs: 1n, reset: true, maxerrorNs: 5n, ...bad1 }, 2_000_000n), field);
      expect(JSON.stringify(offsetModelToJson(s.state.model)) + s.state.maxerrorNs).toBe(before);
      expect([0n, 1_000_000n, 5_000_000n, 9_000_000_000n].map((t) => s.offsetAt(t))).toEqual(samples);
    });

  it("the constructor rejects a bad initial model or claimed bound", () => {
    rejects(() => new SkewController({ kind: "drift", ppm: 600, fromNs: 0n }), "skew.ppm");
    rejects(() => new SkewController({ kind: "constant", offsetNs: 0n }, -1n), "maxerrorNs");
  });
});

// ---- snapshots -------------------------------------------------------------------------------

function validSnapshot(vcpus = 3, vendor: "vmx" | "svm" = "vmx"): Snapshot {
  const c = new SimClock(0n, EPOCH_NS);
  const host = new EmulatedHost({ name: "src", clock: c, epochNs: EPOCH_NS, tscKhz: 2_400_000n, vendor, maxerrorNs: 50_000n });
  const vm = new EmulatedVm(host, { vcpus, guestTscKhz: 3_000_000n });
  const guest = new Guest(vm, new SimScheduler(c), quietGuestOptions());
  c.advanceTo(5_000_000_000n);
  vm.pause();
  const s = captureSnapshot(vm, guest, { migrationId: "m-1", vmId: "vm-1", generation: 1n, hostMaxerrorNs: 50_000n, probe: null });
  validateSnapshot(s);
  return s;
}

function withRecord(s: Snapshot, i: number, mutate: (r: ReturnType<typeof snapshotRecord>) => void): Snapshot {
  const rec = snapshotRecord(s, i);
  mutate(rec);
  const pvclock = s.pvclock.slice();
  encodePvclock(rec, pvclock, i * PVCLOCK_RECORD_BYTES);
  return { ...s, pvclock };
}

describe("validateSnapshot rejects each inconsistent field of docs/operations.md#bad-input-and-limits", () => {
  const cases: [string, (s: Snapshot) => Snapshot, string | RegExp][] = [
    ["an unknown format version", (s) => ({ ...s, formatVersion: 2 }), "snapshot.formatVersion"],
    ["zero vCPUs", (s) => ({ ...s, vcpuCount: 0 }), "snapshot.vcpuCount"],
    ["1025 vCPUs", (s) => ({ ...s, vcpuCount: 1025 }), "snapshot.vcpuCount"],
    ["a vCPU count the offset column disagrees with", (s) => ({ ...s, tscOffset: s.tscOffset.slice(1) }), "snapshot.vcpus.tscOffset"],
    ["a vCPU count the ratio column disagrees with", (s) => ({ ...s, ratio: BigUint64Array.from([...s.ratio, 1n << 48n]) }), "snapshot.vcpus.ratio"],
    ["a vCPU count the TSC column disagrees with", (s) => ({ ...s, tsc: s.tsc.slice(0, 1) }), "snapshot.vcpus.tsc"],
    ["a vCPU count the pvclock column disagrees with", (s) => ({ ...s, pvclock: s.pvclock.slice(PVCLOCK_RECORD_BYTES) }), "snapshot.vcpus.pvclockRecords"],
    ["a zero guest frequency", (s) => ({ ...s, guestTscKhz: 0n }), "snapshot.guestTscKhz"],
    ["a guest frequency above KVM's cap", (s) => ({ ...s, guestTscKhz: 0x8000_0000n }), "snapshot.guestTscKhz"],
    ["a zero host frequency", (s) => ({ ...s, hostTscKhz: 0n }), "snapshot.hostTscKhz"],
    ["unknown fractional bits", (s) => ({ ...s, fracBits: 40 }), "snapshot.fracBits"],
    ["a zero ratio", (s) => ({ ...s, ratio: BigUint64Array.from([s.ratio[0] as bigint, 0n, s.ratio[2] as bigint]) }), "snapshot.vcpus.ratio[1]"],
    ["a ratio at the VMX maximum", (s) => ({ ...s, ratio: BigUint64Array.from([s.ratio[0] as bigint, s.ratio[1] as bigint, VMX.maxRatio]) }), "snapshot.vcpus.ratio[2]"],
    ["an odd pvclock version (captured mid-update)", (s) => withRecord(s, 1, (r) => (r.version = 7)), "snapshot.vcpus.pvclockRecords[1].version"],
    ["a zero pvclock multiplier", (s) => withRecord(s, 0, (r) => (r.tscToSystemMul = 0n)), "snapshot.vcpus.pvclockRecords[0].tscToSystemMul"],
    ["a TSC the offset, ratio and host TSC do not give", (s) => ({ ...s, tsc: BigUint64Array.from(s.tsc, (v, i) => (i === 2 ? v + 1n : v)) }), "snapshot.vcpus.tsc[2]"],
    ["a negative claimed host maxerror", (s) => ({ ...s, hostMaxerrorNs: -1n }), "snapshot.hostMaxerrorNs"],
    ["a host TSC beyond u64", (s) => ({ ...s, hostTsc: 1n << 64n }), "snapshot.hostTsc"],
    ["a negative kvmclock", (s) => ({ ...s, kvmNs: -1n }), "snapshot.kvmNs"],
    ["a negative host realtime", (s) => ({ ...s, hostRealtimeNs: -1n }), "snapshot.hostRealtimeNs"],
    ["a vmclock page with a bad magic", (s) => ({ ...s, vmclock: Uint8Array.from(s.vmclock, (b, i) => (i === 0 ? b ^ 0xff : b)) }), "snapshot.vmclock.magic"],
    ["a bad migration id", (s) => ({ ...s, migrationId: "../etc" }), "snapshot.migrationId"],
    ["generation 0", (s) => ({ ...s, generation: 0n }), "snapshot.generation"],
    ["a negative pause-to-send duration", (s) => ({ ...s, sourceCaptureToSendNs: -1n }), "snapshot.sourceCaptureToSendNs"],
    ["a guest maxerror beyond 16 s", (s) => ({ ...s, guest: { ...s.guest, ntp: { ...s.guest.ntp, maxerrorUs: 16_000_001n } } }), "snapshot.guest.maxerrorUs"],
  ];
  for (const [what, mutate, field] of cases) it(`rejects ${what}`, () => rejects(() => validateSnapshot(mutate(validSnapshot())), field));

  it("rejects a ratio at the SVM maximum on an AMD-like snapshot", () => {
    const s = validSnapshot(1, "svm");
    rejects(() => validateSnapshot({ ...s, ratio: BigUint64Array.from([SVM.maxRatio]) }), "snapshot.vcpus.ratio[0]");
  });
});

describe("a staged snapshot read back from the journal", () => {
  const ref = { table: "vms", key: "vm-1", vmId: "vm-1" } as const;
  const staged = (mutate: (snap: Record<string, unknown>) => void): string => {
    const snapshot = validSnapshot(1) as unknown as Record<string, unknown>;
    mutate(snapshot);
    return toJson({ req: { migrationId: "m-1", vmId: "vm-1", generation: 1n, sourceGrpc: "src:7001" }, snapshot, receiveRawNs: 1n, holdNs: 1n, decodeNs: 0n });
  };

  it("takes the capture → send duration under its 0.1.0 name too", () => {
    const text = staged((s) => {
      s.sourcePauseToSendNs = 42n;
      delete s.sourceCaptureToSendNs;
    });
    const p = loadStagedPayload(text, ref, 1n);
    expect(p.snapshot.sourceCaptureToSendNs).toBe(42n);
    expect("sourcePauseToSendNs" in p.snapshot).toBe(false);
  });

  it("is damaged, naming the field, without it", () => {
    rejects(() => loadStagedPayload(staged((s) => delete s.sourceCaptureToSendNs), ref, 1n), /state\.snapshot\.sourceCaptureToSendNs$/);
  });
});

describe("restoreSnapshot and captureSnapshot refuse before touching the VM", () => {
  const dstHost = () => new EmulatedHost({ name: "dst", clock: new SimClock(7_000_000_000n, EPOCH_NS), epochNs: EPOCH_NS, tscKhz: 2_000_000n });
  const estimate = () => wallclockEstimate({ sourceRealtimeNs: 0n, destinationRealtimeNs: 0n, sourceMaxerrorNs: 0n, destinationMaxerrorNs: 0n });

  it("an unknown policy is refused, not treated as freeze", () => {
    const s = validSnapshot();
    const vm = new EmulatedVm(dstHost(), { vcpus: 3, guestTscKhz: 3_000_000n });
    const before = vm.exportState();
    rejects(() => restoreSnapshot(vm, s, { policy: "teleport" as PolicyName, estimate }), "policy");
    expect(vm.exportState()).toEqual(before);
  });

  it("an odd pvclock version (a record captured mid-update) is refused by restore itself, before the VM is touched", () => {
    const s = withRecord(validSnapshot(), 2, (r) => (r.version = 9));
    const vm = new EmulatedVm(dstHost(), { vcpus: 3, guestTscKhz: 3_000_000n });
    const before = vm.exportState();
    rejects(() => restoreSnapshot(vm, s, { policy: "kvm-realtime", estimate }), "snapshot.vcpus.pvclockRecords[2].version");
    expect(vm.exportState()).toEqual(before);
  });

  it("a VM of another shape, a running VM and a cap out of range are refused", () => {
    const s = validSnapshot();
    const small = new EmulatedVm(dstHost(), { vcpus: 2, guestTscKhz: 3_000_000n });
    const before = small.exportState();
    rejects(() => restoreSnapshot(small, s, { policy: "advance", estimate }), "snapshot.vcpuCount");
    expect(small.exportState()).toEqual(before);
    const vm = new EmulatedVm(dstHost(), { vcpus: 3, guestTscKhz: 3_000_000n });
    rejects(() => restoreSnapshot(vm, s, { policy: "advance-capped", capNs: -1n, estimate }), "advanceCapNs");
    vm.resume();
    rejects(() => restoreSnapshot(vm, s, { policy: "advance", estimate }), "vm");
  });

  it("capture refuses a running VM", () => {
    const c = new SimClock(0n, EPOCH_NS);
    const host = new EmulatedHost({ name: "src", clock: c, epochNs: EPOCH_NS });
    const vm = new EmulatedVm(host, { vcpus: 1 });
    const guest = new Guest(vm, new SimScheduler(c), quietGuestOptions());
    rejects(() => captureSnapshot(vm, guest, { migrationId: "m", vmId: "v", generation: 1n, hostMaxerrorNs: 0n, probe: null }), "vm");
  });
});

describe("blackout estimators", () => {
  it("one-sided names the negative duration", () => {
    const ok = { sourceCaptureToSendNs: 1n, transferRttNs: 2n, destinationHoldNs: 1n, destinationReceiveToNowNs: 3n };
    for (const k of Object.keys(ok) as (keyof typeof ok)[]) rejects(() => oneSidedEstimate({ ...ok, [k]: -1n }), k);
    const anchor = { destinationAnswerToReceiveNs: 5n, sourceAnswerToSendNs: 4n };
    const request = { destinationRequestToReceiveNs: 5n, sourceRequestToSendNs: 4n };
    rejects(() => oneSidedEstimate({ ...ok, anchors: [anchor, { ...anchor, sourceAnswerToSendNs: -1n }] }), "anchors[1].sourceAnswerToSendNs");
    rejects(() => oneSidedEstimate({ ...ok, requests: [{ ...request, destinationRequestToReceiveNs: -1n }] }), "requests[0].destinationRequestToReceiveNs");
    rejects(() => oneSidedEstimate({ ...ok, commit: { destinationAnswerToCommitNs: 1n, sourceAnswerToCommitNs: -2n } }), "commit.sourceAnswerToCommitNs");
  });
  it("probe needs at least one usable exchange", () => {
    rejects(() => probeOffset([]), "probe");
    rejects(() => probeOffset([{ t1: 0n, t2: 50n, t3: 1_000_000n, t4: 10n }]), "probe"); // a 1 ms step inside a 10 ns exchange
  });
  it("wallclock refuses a negative claimed maxerror (it would shrink the bound)", () => {
    rejects(() => wallclockEstimate({ sourceRealtimeNs: 0n, destinationRealtimeNs: 5n, sourceMaxerrorNs: -10n, destinationMaxerrorNs: 0n }), "sourceMaxerrorNs");
  });
  it("estimateBlackout refuses the probe estimator for a snapshot without a probe, and assembles one-sided inputs only for one-sided", () => {
    let assembled = 0;
    const inputs = {
      sourceRealtimeNs: 0n, sourceMaxerrorNs: 1n, destinationRealtimeNs: 5n, destinationMaxerrorNs: 2n, probe: null,
      oneSided: () => (assembled++, { sourceCaptureToSendNs: 1n, transferRttNs: 2n, destinationHoldNs: 1n, destinationReceiveToNowNs: 3n }),
    };
    rejects(() => estimateBlackout("probe", inputs), "snapshot.probe");
    expect(estimateBlackout("wallclock", inputs)).toEqual(wallclockEstimate(inputs));
    expect(assembled).toBe(0);
    expect(estimateBlackout("one-sided", inputs)).toEqual(oneSidedEstimate(inputs.oneSided()));
    const probe = { offsetNs: 3n, boundNs: 4n, probeToPauseNs: 9n };
    expect(estimateBlackout("probe", { ...inputs, probe })).toEqual(probeEstimate({ sourceRealtimeNs: 0n, destinationRealtimeNs: 5n, probe, sinceProbeNs: 9n }));
  });
});

describe("a daemon core (TscmigNode) on bad requests", () => {
  const c = new SimClock(0n, EPOCH_NS);
  const dialer: PeerDialer = { dial: () => { throw new Error("no network in this test"); } };
  const node = new TscmigNode(defaultNodeConfig("n", "n"), {
    clock: c,
    scheduler: new SimScheduler(c),
    random: new SeededRandom(1n),
    log: SILENT_LOGGER,
    host: new EmulatedHost({ name: "n", clock: c, epochNs: EPOCH_NS, tscScaling: false }),
    journal: new MemoryJournal(),
    dialer,
  });
  const bad: [string, Parameters<TscmigNode["createVm"]>[0], string][] = [
    ["no vCPUs", { vcpus: 0 }, "vcpus"],
    ["2000 vCPUs", { vcpus: 2000 }, "vcpus"],
    ["an unknown clocksource", { vcpus: 1, clocksource: "hpet" as "tsc" }, "clocksource"],
    ["an unknown handling mode", { vcpus: 1, handlingMode: "panic" as "ditch" }, "handlingMode"],
    ["a rate this host cannot run without scaling", { vcpus: 1, guestTscKhz: 3_000_000n }, "guestTscKhz"],
    ["a bad id", { vcpus: 1, id: "" }, "id"],
  ];
  for (const [what, req, field] of bad)
    it(`createVm refuses ${what} and creates nothing`, () => {
      rejects(() => node.createVm(req), field);
      expect(node.listVms()).toEqual([]);
      expect(node.journal.listVms()).toEqual([]);
    });

  it("prepare refuses an unknown policy, estimator or vCPU count before recording anything", () => {
    const req = {
      migrationId: "m-1",
      vmId: "vm-1",
      generation: 1n,
      vcpuCount: 2,
      guestTscKhz: 2_000_000n,
      sourceFracBits: 48,
      policy: "advance" as PolicyName,
      estimator: "one-sided" as const,
      doorbell: false,
      advanceCapNs: 0n,
      sourceName: "s",
      sourceGrpc: "s:1",
      sourceKey: "00112233445566778899aabbccddeeff",
    };
    rejects(() => node.peer.prepare({ ...req, policy: "teleport" as PolicyName }), "policy");
    rejects(() => node.peer.prepare({ ...req, estimator: "sundial" as "wallclock" }), "estimator");
    rejects(() => node.peer.prepare({ ...req, vcpuCount: 0 }), "vcpuCount");
    rejects(() => node.peer.prepare({ ...req, sourceFracBits: 40 }), "sourceFracBits");
    expect(node.journal.listMigrations()).toEqual([]);
    expect(node.destination.pending()).toEqual([]);
  });

  it("migrate refuses a destination no transport could dial (a port past 65535) before spending a migration id", async () => {
    const h = node.createVm({ vcpus: 1, id: "vm-dest" });
    for (const destination of ["127.0.0.1:99999", "127.0.0.1:0", "no-port", "[::1]"]) {
      const e = await node.migrate(h.id, { destination, migrationId: "m-bad" }).then(
        () => null,
        (x: unknown) => x,
      );
      expect(e, destination).toMatchObject({ code: "invalid_argument", field: "destination" });
    }
    expect(node.journal.listMigrations()).toEqual([]);
    expect(node.getVm(h.id).lock).toBeNull();
    node.deleteVm(h.id);
  });
});
