// A VM as a daemon hosts it: the hypervisor's VM (any backend), its guest, and its ownership; and the
// journal forms of a VM (running or migrating out, staged) with the structural checks a restarted
// daemon runs on them before anything runs from them.

import type { Guest, GuestState } from "../guest/guest.js";
import type { HostInfo, HypervisorVm, VmState } from "../hypervisor/backend.js";
import type { VmRole } from "./journal.js";
import type { PrepareReq } from "./messages.js";
import type { Timer } from "../time/clock.js";
import { isTscmigError, TscmigError } from "../errors.js";
import { LIMITS } from "../limits.js";
import { fromJson, toFlatJson, toJson } from "../serde.js";
import { decodePvclock, PVCLOCK_RECORD_BYTES } from "../kvm/pvclock.js";
import { checkVmclockPage } from "../kvm/vmclock.js";
import { NTP_PHASE_LIMIT_US } from "../guest/ntp.js";
import { damagedRecord, type RecordRef } from "./journal-integrity.js";
import { type Snapshot, validateSnapshot } from "./snapshot.js";

export interface HostedVm {
  id: string;
  vm: HypervisorVm;
  guest: Guest;
  /** Fencing generation: bumped by every migration; a daemon refuses traffic for older ones. */
  generation: bigint;
  role: VmRole;
  /** Id of the migration holding this VM, if any (one at a time). */
  lock: string | null;
  sampler: Timer | null;
}

/** Journal form of a VM: hypervisor state and guest state, 64-bit values as decimal strings. */
export interface PersistedVm {
  vm: VmState;
  guest: GuestState;
}

/** Journal form of a snapshot a destination holds between Transfer and the decision. */
export interface StagedPayload {
  req: PrepareReq;
  snapshot: Snapshot;
  receiveRawNs: bigint;
  holdNs: bigint;
  decodeNs: bigint;
  /**
   * On-receipt switchover with one-sided: the anchors' instants (this host's raw clock) and the
   * source's durations, so a restore after a restart can still cap the Transfer's transit.
   */
  legs?: { anchorsRawNs: bigint[]; anchorsToSendNs: bigint[]; requestsRawNs: bigint[]; requestsToSendNs: bigint[] };
}

export function persistVm(h: HostedVm): string {
  return toJson({ vm: h.vm.exportState(), guest: h.guest.exportState() } satisfies PersistedVm);
}

/**
 * The hypervisor part of `persistVm`, alone (the part that changes only at KVM operations): kept per
 * VM between its writes, so flat.
 */
export function persistVmPart(h: HostedVm): string {
  return toFlatJson(h.vm.exportState());
}

/** `persistVm` from a hypervisor part made earlier and the guest's state now: the same text when the VM has not changed since. */
export function persistWithVmPart(vmPart: string, h: HostedVm): string {
  return `{"vm":${vmPart},"guest":${toJson(h.guest.exportState())}}`;
}

const U64_MAX = (1n << 64n) - 1n;
const I64_MIN = -(1n << 63n);
const I64_MAX = (1n << 63n) - 1n;

/**
 * A VM's journaled state, checked as a whole before anything is built from it: every per-vCPU
 * column has exactly `vcpus` entries, ratios are ones this host's KVM would program, every value
 * fits its C type, enums are known. Throws `data_loss` (journal_record_damaged) naming the VM, the
 * record and the field.
 */
export function loadPersistedVm(text: string, ref: RecordRef, host: HostInfo): PersistedVm {
  const o = parseState<Partial<PersistedVm>>(text, ref);
  if (typeof o !== "object" || o === null || typeof o.vm !== "object" || o.vm === null || typeof o.guest !== "object" || o.guest === null)
    throw damagedRecord(ref, "state has no vm or guest part", "state");
  checkVmState(o.vm, ref, host);
  checkGuestState(o.guest, ref);
  return o as PersistedVm;
}

/** A staged snapshot's journal form: its Prepare, then every rule of docs/operations.md#bad-input-and-limits on the snapshot. */
export function loadStagedPayload(text: string, ref: RecordRef, generation: bigint): StagedPayload {
  const p = parseState<Partial<StagedPayload>>(text, ref);
  if (typeof p !== "object" || p === null || typeof p.req !== "object" || p.req === null || typeof p.snapshot !== "object" || p.snapshot === null)
    throw damagedRecord(ref, "staged state has no Prepare or snapshot", "state");
  const req = p.req;
  if (req.vmId !== ref.vmId || req.generation !== generation || typeof req.migrationId !== "string" || typeof req.sourceGrpc !== "string")
    throw damagedRecord(ref, "staged Prepare does not match the record (VM, generation, migration or source)", "state.req");
  if (p.snapshot.migrationId !== req.migrationId || p.snapshot.vmId !== ref.vmId || p.snapshot.generation !== generation)
    throw damagedRecord(ref, "staged snapshot is not the one its Prepare announced", "state.snapshot");
  renameEarlierFields(p.snapshot as Snapshot & { sourcePauseToSendNs?: bigint });
  for (const k of ["receiveRawNs", "holdNs", "decodeNs"] as const)
    if (typeof p[k] !== "bigint" || (p[k] as bigint) < 0n || (p[k] as bigint) > U64_MAX) throw damagedRecord(ref, `${k} is not a u64`, `state.${k}`);
  asDamage(ref, "state", () => validateSnapshot(p.snapshot as Snapshot));
  if (p.legs !== undefined) checkStagedLegs(p.legs, ref);
  return p as StagedPayload;
}

function checkStagedLegs(legs: unknown, ref: RecordRef): void {
  const l = legs as Record<string, unknown>;
  for (const k of ["anchorsRawNs", "anchorsToSendNs", "requestsRawNs", "requestsToSendNs"] as const) {
    const a = typeof l === "object" && l !== null ? l[k] : undefined;
    if (!Array.isArray(a) || a.length > LIMITS.anchorsMax || a.some((x) => typeof x !== "bigint" || x < 0n || x > U64_MAX))
      throw damagedRecord(ref, `legs.${k} is not a list of at most ${LIMITS.anchorsMax} u64`, `state.legs.${k}`);
  }
}

/** A snapshot staged by 0.1.0 names the capture → send duration `sourcePauseToSendNs`. */
function renameEarlierFields(s: Snapshot & { sourcePauseToSendNs?: bigint }): void {
  if (s.sourceCaptureToSendNs === undefined && s.sourcePauseToSendNs !== undefined) s.sourceCaptureToSendNs = s.sourcePauseToSendNs;
  delete s.sourcePauseToSendNs;
}

function parseState<T>(text: string, ref: RecordRef): T {
  try {
    return fromJson<T>(text);
  } catch {
    throw damagedRecord(ref, "state is not valid JSON", "state");
  }
}

/** Runs a validator that throws `invalid_argument`, turning its refusal into damage of `ref`. */
function asDamage(ref: RecordRef, prefix: string, check: () => void): void {
  try {
    check();
  } catch (e) {
    if (!isTscmigError(e)) throw e;
    throw damagedRecord(ref, e.message, e.field !== undefined ? `${prefix}.${e.field}` : prefix);
  }
}

function checkVmState(v: Partial<VmState>, ref: RecordRef, host: HostInfo): void {
  const bad = (field: string, problem: string): TscmigError => damagedRecord(ref, `${field} ${problem}`, `state.vm.${field}`);
  const n = v.vcpus;
  if (typeof n !== "number" || !Number.isInteger(n) || n < 1 || n > LIMITS.vcpuCountMax) throw bad("vcpus", `must be an integer in 1..${LIMITS.vcpuCountMax}`);
  for (const name of ["tscOffset", "ratio", "virtualKhz"] as const) {
    const col = v[name];
    if (!(col instanceof BigUint64Array)) throw bad(name, "is not a column of u64");
    if (col.length !== n) throw bad(name, `has ${col.length} entries for ${n} vCPUs`);
  }
  if (!(v.flags instanceof Uint8Array) || v.flags.length !== n) throw bad("flags", `must be ${n} bytes`);
  if (!(v.pvclock instanceof Uint8Array) || v.pvclock.length !== n * PVCLOCK_RECORD_BYTES) throw bad("pvclock", `must be ${n} × ${PVCLOCK_RECORD_BYTES} bytes`);
  const vendor = host.vendor;
  for (let i = 0; i < n; i++) {
    const r = (v.ratio as BigUint64Array)[i] as bigint;
    if (r === 0n || r >= vendor.maxRatio) throw bad(`ratio[${i}]`, `${r} is 0 or ≥ the ${vendor.name} maximum ${vendor.maxRatio}`);
    const khz = (v.virtualKhz as BigUint64Array)[i] as bigint;
    if (khz < LIMITS.tscKhzMin || khz > LIMITS.tscKhzMax) throw bad(`virtualKhz[${i}]`, `${khz} is outside ${LIMITS.tscKhzMin}..${LIMITS.tscKhzMax} kHz`);
    asDamage(ref, "state.vm", () => decodePvclock(v.pvclock as Uint8Array, i * PVCLOCK_RECORD_BYTES, `pvclock[${i}]`));
  }
  if (typeof v.kvmclockOffset !== "bigint" || v.kvmclockOffset < I64_MIN || v.kvmclockOffset > U64_MAX) throw bad("kvmclockOffset", "is not a 64-bit integer");
  if (typeof v.running !== "boolean") throw bad("running", "is not a boolean");
  if (typeof v.vmclock !== "object" || v.vmclock === null) throw bad("vmclock", "is missing");
  asDamage(ref, "state.vm", () => checkVmclockPage(v.vmclock as VmState["vmclock"]));
}

function checkGuestState(g: Partial<GuestState>, ref: RecordRef): void {
  const bad = (field: string, problem: string): TscmigError => damagedRecord(ref, `guest ${field} ${problem}`, `state.guest.${field}`);
  const int = (value: unknown, min: bigint, max: bigint, field: string) => {
    if (typeof value !== "bigint" || value < min || value > max) throw bad(field, `must be within ${min}..${max}`);
  };
  if (g.clocksource !== "tsc" && g.clocksource !== "kvm-clock") throw bad("clocksource", "is unknown");
  if (g.handlingMode !== "ditch" && g.handlingMode !== "widen") throw bad("handlingMode", "is unknown");
  for (const k of ["migrationHandling", "everSynced", "awaitingResync"] as const) if (typeof g[k] !== "boolean") throw bad(k, "is not a boolean");
  const ntp = g.ntp;
  if (typeof ntp !== "object" || ntp === null) throw bad("ntp", "is missing");
  if (!Number.isInteger(ntp.status) || ntp.status < 0 || ntp.status > 0xffff) throw bad("ntp.status", "is not a status word");
  int(ntp.maxerrorUs, 0n, NTP_PHASE_LIMIT_US, "ntp.maxerrorUs");
  int(ntp.esterrorUs, 0n, NTP_PHASE_LIMIT_US, "ntp.esterrorUs");
  int(ntp.tickClocksourceNs, I64_MIN, U64_MAX, "ntp.tickClocksourceNs");
  int(g.wallOffsetNs, I64_MIN, I64_MAX, "wallOffsetNs");
  int(g.syncClocksourceNs, I64_MIN, U64_MAX, "syncClocksourceNs");
  int(g.lastValueNs, I64_MIN, U64_MAX, "lastValueNs");
  int(g.lastHandledMarker, 0n, U64_MAX, "lastHandledMarker");
  int(g.handledCount, 0n, U64_MAX, "handledCount");
  const cs = g.tscCs;
  if (typeof cs !== "object" || cs === null) throw bad("tscCs", "is missing");
  int(cs.baseTsc, 0n, U64_MAX, "tscCs.baseTsc");
  int(cs.baseNs, I64_MIN, U64_MAX, "tscCs.baseNs");
  int(cs.mul, 1n, 0xffff_ffffn, "tscCs.mul");
  if (!Number.isInteger(cs.shift) || cs.shift < -32 || cs.shift > 32) throw bad("tscCs.shift", "must be within -32..32");
}
