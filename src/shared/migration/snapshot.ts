// The snapshot: everything the destination needs to continue a VM's time (docs/time-across-migration.md#the-snapshot), taken
// while the vCPUs are paused from one KVM_GET_CLOCK instant: kvm ns, host TSC, host realtime, and
// per vCPU the TSC offset and ratio, from which each vCPU's guest TSC at that instant follows.
// A domain value, not a wire message: the codec (rpc/codec.ts) converts and validates.

import { invalid } from "../errors.js";
import { LIMITS } from "../limits.js";
import { KVM_CLOCK_REALTIME } from "../kvm/set-clock.js";
import { decodePvclock, PVCLOCK_GUEST_STOPPED, type PvclockRecord } from "../kvm/pvclock.js";
import { decodeVmclock, encodeVmclock } from "../kvm/vmclock.js";
import { scaleTsc, SVM, VMX } from "../kvm/tsc.js";
import { u64, U64_MAX } from "../kvm/u64.js";
import type { Guest, GuestState } from "../guest/guest.js";
import type { HypervisorBackend, HypervisorVm } from "../hypervisor/backend.js";
import type { ProbeResult } from "./blackout.js";

export const SNAPSHOT_FORMAT_VERSION = 1;
export const PVCLOCK_RECORD_BYTES = 32;

export interface Snapshot {
  formatVersion: number;
  migrationId: string;
  vmId: string;
  generation: bigint;
  vcpuCount: number;
  guestTscKhz: bigint;
  /** One KVM_GET_CLOCK on the source at the pause. */
  kvmNs: bigint;
  hostTsc: bigint;
  hostRealtimeNs: bigint;
  clockFlags: number;
  hostTscKhz: bigint;
  fracBits: number;
  hostMaxerrorNs: bigint;
  tscOffset: BigUint64Array;
  ratio: BigUint64Array;
  /** Guest TSC of each vCPU at the snapshot instant. */
  tsc: BigUint64Array;
  /** vcpuCount × 32-byte pvclock records. */
  pvclock: Uint8Array;
  /** The vmclock page, 112 bytes. */
  vmclock: Uint8Array;
  guest: GuestState;
  kvmclockEnabled: boolean;
  /**
   * Source clock: this snapshot's clock read (its KVM_GET_CLOCK, after the pause) → the start of the
   * Transfer round trip. Filled just before sending. Not from the pause: that would add the
   * pause → capture gap to the advance.
   */
  sourceCaptureToSendNs: bigint;
  probe: (ProbeResult & { probeToPauseNs: bigint }) | null;
  /**
   * The source backend's own VM state (HypervisorVm.capturePayload: a real VM's memory and
   * registers), opaque here; absent from the emulated backend. Checked by the destination's backend.
   */
  backendPayload?: Uint8Array;
}

export interface CaptureMeta {
  migrationId: string;
  vmId: string;
  generation: bigint;
  hostMaxerrorNs: bigint;
  probe: (ProbeResult & { probeToPauseNs: bigint }) | null;
}

/**
 * Source side of the blackout: the VM must be paused. Requests KVMCLOCK_CTRL on every vCPU (the bit
 * shows at the next entry: on the source only if it rolls back), reads the clock once, and every
 * vCPU's TSC state at that instant.
 */
export function captureSnapshot(vm: HypervisorVm, guest: Guest, meta: CaptureMeta): Snapshot {
  if (vm.running) throw invalid("vm", "capture needs the vCPUs paused");
  const n = vm.vcpuCount;
  for (let i = 0; i < n; i++) if (vm.kvmclockEnabled(i)) vm.kvmclockCtrl(i);
  const clock = vm.getClock();
  let hostTsc = clock.hostTsc;
  let realtime = clock.realtime;
  if ((clock.flags & KVM_CLOCK_REALTIME) === 0) {
    // Not in master-clock mode: KVM gives no (realtime, TSC) pair; a VMM reads its own clocks.
    const own = vm.hostClocks();
    hostTsc = own.hostTsc;
    realtime = own.realtimeNs;
  }
  const fracBits = vm.hostInfo.vendor.fracBits;
  const tscOffset = new BigUint64Array(n);
  const ratio = new BigUint64Array(n);
  const tsc = new BigUint64Array(n);
  for (let i = 0; i < n; i++) {
    tscOffset[i] = vm.getTscOffset(i);
    ratio[i] = vm.getTscRatio(i);
    // Same ratio and offset as the previous vCPU: same guest TSC (the common, uniform VM).
    tsc[i] =
      i > 0 && ratio[i] === ratio[i - 1] && tscOffset[i] === tscOffset[i - 1]
        ? (tsc[i - 1] as bigint)
        : u64(scaleTsc(hostTsc, ratio[i] as bigint, fracBits) + (tscOffset[i] as bigint)); // the guest TSC at the clock read
  }
  return {
    formatVersion: SNAPSHOT_FORMAT_VERSION,
    migrationId: meta.migrationId,
    vmId: meta.vmId,
    generation: meta.generation,
    vcpuCount: n,
    guestTscKhz: vm.guestTscKhz,
    kvmNs: clock.clock,
    hostTsc,
    hostRealtimeNs: realtime,
    clockFlags: clock.flags,
    hostTscKhz: vm.hostInfo.tscKhz,
    fracBits,
    hostMaxerrorNs: meta.hostMaxerrorNs,
    tscOffset,
    ratio,
    tsc,
    pvclock: vm.pvclock.copyBytes(),
    vmclock: encodeVmclock(vm.vmclock()),
    guest: guest.exportState(),
    kvmclockEnabled: vm.kvmclockEnabled(0),
    sourceCaptureToSendNs: 0n,
    probe: meta.probe,
    ...(vm.capturePayload ? { backendPayload: vm.capturePayload() } : {}),
  };
}

/**
 * Whether `backend` can host `s` (a payload from a real VM needs a backend that reads it; a backend
 * that needs one refuses a snapshot without): a typed `invalid_argument`, before anything is staged.
 */
export function checkBackendPayload(backend: HypervisorBackend, s: Snapshot): void {
  if (backend.checkPayload) backend.checkPayload(s.backendPayload, s.vcpuCount);
  else if (s.backendPayload !== undefined)
    throw invalid("snapshot.backendPayload", `carries a real VM's state; this daemon runs the ${backend.name} backend, which cannot host it (start it with --backend kvm)`);
}

/** vCPU i's pvclock record in the snapshot. */
export function snapshotRecord(s: Snapshot, i: number): PvclockRecord {
  return decodePvclock(s.pvclock, i * PVCLOCK_RECORD_BYTES, `snapshot.vcpus.pvclockRecords[${i}]`);
}

/**
 * Every consistency rule of docs/operations.md#bad-input-and-limits on a decoded snapshot; throws naming the first bad field.
 * Nothing is applied before this passes.
 */
export function validateSnapshot(s: Snapshot): void {
  if (s.formatVersion !== SNAPSHOT_FORMAT_VERSION)
    throw invalid("snapshot.formatVersion", `unknown format version ${s.formatVersion} (this daemon reads ${SNAPSHOT_FORMAT_VERSION})`);
  checkId(s.migrationId, "snapshot.migrationId");
  checkId(s.vmId, "snapshot.vmId");
  if (s.generation < 1n) throw invalid("snapshot.generation", "must be ≥ 1");
  if (!Number.isInteger(s.vcpuCount) || s.vcpuCount < 1 || s.vcpuCount > LIMITS.vcpuCountMax)
    throw invalid("snapshot.vcpuCount", `must be in 1..${LIMITS.vcpuCountMax}`);
  if (s.guestTscKhz < LIMITS.tscKhzMin || s.guestTscKhz > LIMITS.tscKhzMax)
    throw invalid("snapshot.guestTscKhz", `must be within ${LIMITS.tscKhzMin}..${LIMITS.tscKhzMax} kHz`);
  if (s.hostTscKhz < LIMITS.tscKhzMin || s.hostTscKhz > LIMITS.tscKhzMax)
    throw invalid("snapshot.hostTscKhz", `must be within ${LIMITS.tscKhzMin}..${LIMITS.tscKhzMax} kHz`);
  const vendor = s.fracBits === 48 ? VMX : s.fracBits === 32 ? SVM : null;
  if (vendor === null) throw invalid("snapshot.fracBits", "must be 48 or 32");
  for (const [name, v] of [["kvmNs", s.kvmNs], ["hostTsc", s.hostTsc], ["hostRealtimeNs", s.hostRealtimeNs]] as const)
    if (v < 0n || v > U64_MAX) throw invalid(`snapshot.${name}`, "must be a u64");
  if (s.hostMaxerrorNs < 0n || s.hostMaxerrorNs > LIMITS.offsetNsMax) throw invalid("snapshot.hostMaxerrorNs", `must be within 0..${LIMITS.offsetNsMax} ns`);
  for (const [name, col] of [["tscOffset", s.tscOffset], ["ratio", s.ratio], ["tsc", s.tsc]] as const)
    if (col.length !== s.vcpuCount) throw invalid(`snapshot.vcpus.${name}`, `has ${col.length} entries for ${s.vcpuCount} vCPUs`);
  if (s.pvclock.length !== s.vcpuCount * PVCLOCK_RECORD_BYTES)
    throw invalid("snapshot.vcpus.pvclockRecords", `must be ${s.vcpuCount} × 32 bytes, got ${s.pvclock.length}`);
  for (let i = 0; i < s.vcpuCount; i++) {
    const r = s.ratio[i] as bigint;
    if (r === 0n || r >= vendor.maxRatio) throw invalid(`snapshot.vcpus.ratio[${i}]`, `ratio ${r} is 0 or ≥ the ${vendor.name} maximum`);
    // The TSC column is derived, not free: advance restores from it, kvm-realtime from offset and
    // host TSC, so a snapshot where they disagree would restore differently per policy.
    if (s.tsc[i] !== u64(scaleTsc(s.hostTsc, r, vendor.fracBits) + (s.tscOffset[i] as bigint)))
      throw invalid(`snapshot.vcpus.tsc[${i}]`, "is not scale(hostTsc, ratio) + tscOffset");
    // A record byte-identical to the previous one (which passed) passes too: skip decoding it.
    if (i > 0 && sameRecordBytes(s.pvclock, i - 1, i)) continue;
    const rec = snapshotRecord(s, i); // an odd version throws here, naming the record
    if (s.kvmclockEnabled && rec.tscToSystemMul === 0n) throw invalid(`snapshot.vcpus.pvclockRecords[${i}].tscToSystemMul`, "zero multiplier");
    if ((rec.flags & ~(PVCLOCK_GUEST_STOPPED | 1)) !== 0) throw invalid(`snapshot.vcpus.pvclockRecords[${i}].flags`, `unknown flags ${rec.flags}`);
  }
  decodeVmclock(s.vmclock, "snapshot.vmclock"); // throws naming the field
  if (typeof s.sourceCaptureToSendNs !== "bigint" || s.sourceCaptureToSendNs < 0n || s.sourceCaptureToSendNs > LIMITS.blackoutNsMax)
    throw invalid("snapshot.sourceCaptureToSendNs", "missing, or out of range");
  if (s.probe !== null && (s.probe.boundNs < 0n || s.probe.probeToPauseNs < 0n)) throw invalid("snapshot.probe", "negative bound or duration");
  const p = s.backendPayload;
  if (p !== undefined && (!(p instanceof Uint8Array) || p.length === 0 || p.length > LIMITS.backendPayloadBytesMax))
    throw invalid("snapshot.backendPayload", `must be 1..${LIMITS.backendPayloadBytesMax} bytes`);
  const g = s.guest;
  if (g.ntp.maxerrorUs < 0n || g.ntp.maxerrorUs > LIMITS.ntpPhaseLimitUs) throw invalid("snapshot.guest.maxerrorUs", "must be within 0..16 s");
  if (g.ntp.esterrorUs < 0n || g.ntp.esterrorUs > LIMITS.ntpPhaseLimitUs) throw invalid("snapshot.guest.esterrorUs", "must be within 0..16 s");
  if (g.tscCs.mul <= 0n || g.tscCs.mul > 0xffff_ffffn) throw invalid("snapshot.guest.tscCsMul", "must be a non-zero u32");
  if (g.tscCs.shift < -32 || g.tscCs.shift > 32) throw invalid("snapshot.guest.tscCsShift", "must be within -32..32");
}

function sameRecordBytes(bytes: Uint8Array, a: number, b: number): boolean {
  const oa = a * PVCLOCK_RECORD_BYTES;
  const ob = b * PVCLOCK_RECORD_BYTES;
  for (let k = 0; k < PVCLOCK_RECORD_BYTES; k++) if (bytes[oa + k] !== bytes[ob + k]) return false;
  return true;
}

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9._:-]*$/;
/** HOST:PORT with a DNS name, an IPv4 address or a bracketed IPv6 address, and a port 1..65535. */
const HOST_PORT_RE = /^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\]):([0-9]{1,5})$/;

/** A peer address another daemon handed us (it is dialed): HOST:PORT, nothing else. */
export function checkHostPort(address: string, field: string): void {
  const m = typeof address === "string" ? HOST_PORT_RE.exec(address) : null;
  const port = m ? Number(m[1]) : 0;
  if (!m || port < 1 || port > 65535) throw invalid(field, `must be HOST:PORT (a host name, an IPv4 address or a [bracketed] IPv6 address, and a port 1..65535), got ${JSON.stringify(String(address).slice(0, 64))}`);
}

export function checkId(id: string, field: string): void {
  if (typeof id !== "string" || id.length === 0 || id.length > LIMITS.idLengthMax || !ID_RE.test(id))
    throw invalid(field, `must be 1..${LIMITS.idLengthMax} characters of [A-Za-z0-9._:-], starting alphanumeric`);
}
