// The one codec between domain values and tscmig.v1 wire messages (STYLE 9). Decoding validates
// every field and names its path in errors; sizes are checked before anything is decoded; the
// format version is checked first. Only this module and the rpc transports import generated code.

import { create, type DescMessage, fromBinary, type MessageInitShape, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { invalid, TscmigError } from "../errors.js";
import { LIMITS } from "../limits.js";
import {
  Clocksource as PbClocksource,
  Decision as PbDecision,
  Estimator as PbEstimator,
  GuestStateSchema,
  Policy as PbPolicy,
  Switchover as PbSwitchover,
  type TransferResponse,
  type CommitRequest,
  type CommitResponse,
  type PrepareRequest,
  type PrepareResponse,
  type ProbeResponse,
  type ResolveResponse,
  type RestoreReport as PbRestoreReport,
  type Snapshot as PbSnapshot,
  type GuestState as PbGuestState,
  SnapshotSchema,
  type AbortRequest,
  AbortRequestSchema,
  CommitRequestSchema,
  type HandoverOpen,
  type HandoverOpenSchema,
  type ProbeRequest,
  ProbeRequestSchema,
  type ResolveRequest,
  ResolveRequestSchema,
  RestoreReportSchema,
  VcpuStatesSchema,
  type TransferRequest,
  AbortResponseSchema,
  CommitResponseSchema,
  HandoverRequestSchema,
  HandoverResponseSchema,
  PingRequestSchema,
  PingResponseSchema,
  PrepareRequestSchema,
  PrepareResponseSchema,
  ProbeResponseSchema,
  ResolveResponseSchema,
  TransferRequestSchema,
  TransferResponseSchema,
} from "../../gen/tscmig/v1/migration_pb.js";

/** The peer protocol's gRPC service descriptor, for the transport that registers and dials it. */
export { MigrationService } from "../../gen/tscmig/v1/migration_pb.js";
import type { EstimatorName } from "../migration/blackout.js";
import type { GuestState } from "../guest/guest.js";
import type {
  AbortReq,
  CommitReq,
  CommitRes,
  PrepareReq,
  PrepareRes,
  ProbeReq,
  ProbeRes,
  ResolveReq,
  SourceRef,
  ResolveDecision,
  ResolveRes,
  RestoreReport,
  SwitchoverMode,
  TransferReq,
  TransferRes,
} from "../migration/messages.js";
import type { PolicyName } from "../migration/restore.js";
import { PVCLOCK_RECORD_BYTES, type Snapshot } from "../migration/snapshot.js";

const POLICY_TO_PB: Record<PolicyName, PbPolicy> = {
  advance: PbPolicy.ADVANCE,
  "kvm-realtime": PbPolicy.KVM_REALTIME,
  freeze: PbPolicy.FREEZE,
  "advance-capped": PbPolicy.ADVANCE_CAPPED,
};
const ESTIMATOR_TO_PB: Record<EstimatorName, PbEstimator> = {
  wallclock: PbEstimator.WALLCLOCK,
  "one-sided": PbEstimator.ONE_SIDED,
  probe: PbEstimator.PROBE,
};
const SWITCHOVER_TO_PB: Record<SwitchoverMode, PbSwitchover> = {
  "two-phase": PbSwitchover.TWO_PHASE,
  "on-receipt": PbSwitchover.ON_RECEIPT,
};
const DECISION_TO_PB: Record<ResolveDecision, PbDecision> = {
  unknown: PbDecision.UNKNOWN,
  pending: PbDecision.PENDING,
  committed: PbDecision.COMMITTED,
  aborted: PbDecision.ABORTED,
};

function reverse<K extends string, V>(m: Record<K, V>): Map<V, K> {
  return new Map(Object.entries(m).map(([k, v]) => [v as V, k as K]));
}
const POLICY_OF = reverse(POLICY_TO_PB);
const ESTIMATOR_OF = reverse(ESTIMATOR_TO_PB);
const DECISION_OF = reverse(DECISION_TO_PB);

function policyOf(p: PbPolicy, field: string): PolicyName {
  const v = POLICY_OF.get(p);
  if (!v) throw invalid(field, `unknown policy ${p}`);
  return v;
}
function estimatorOf(e: PbEstimator, field: string): EstimatorName {
  const v = ESTIMATOR_OF.get(e);
  if (!v) throw invalid(field, `unknown estimator ${e}`);
  return v;
}

/** A source that names no mode (an older one) gets today's protocol. */
function switchoverOf(v: PbSwitchover): SwitchoverMode {
  if (v === PbSwitchover.UNSPECIFIED || v === PbSwitchover.TWO_PHASE) return "two-phase";
  if (v === PbSwitchover.ON_RECEIPT) return "on-receipt";
  throw invalid("switchover", `unknown switchover mode ${v}`);
}

function u32Field(v: number, field: string, max = 0xffff_ffff): number {
  if (!Number.isInteger(v) || v < 0 || v > max) throw invalid(field, `must be an integer in 0..${max}`);
  return v;
}

function str(v: string, field: string, max: number = LIMITS.idLengthMax): string {
  if (v.length > max) throw invalid(field, `longer than ${max} characters`);
  if (v.includes("\uFFFD")) throw invalid(field, "is not valid UTF-8");
  return v;
}

// ---- Prepare / Probe / Commit / Abort / Resolve --------------------------------------------------

/** A source key: 16..64 bytes on the wire, lower-case hex in the domain. */
export const SOURCE_KEY_BYTES_MIN = 16;
export const SOURCE_KEY_BYTES_MAX = 64;

/** Each ASCII code's hex digit value, -1 for what is not one. */
const HEX_DIGIT = (() => {
  const t = new Int8Array(128).fill(-1);
  for (let i = 0; i < 10; i++) t[48 + i] = i;
  for (let i = 0; i < 6; i++) t[97 + i] = t[65 + i] = 10 + i;
  return t;
})();

/** Hex → bytes without Buffer's two copies (every message after Prepare carries the key); anything but pairs of hex digits is read as Buffer reads it. */
export function keyToPb(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length >> 1);
  for (let i = 0; i < out.length; i++) {
    const hi = HEX_DIGIT[hex.charCodeAt(2 * i)] ?? -1;
    const lo = HEX_DIGIT[hex.charCodeAt(2 * i + 1)] ?? -1;
    if (hi < 0 || lo < 0) return Uint8Array.from(Buffer.from(hex, "hex"));
    out[i] = (hi << 4) | lo;
  }
  return out;
}

export function keyFromPb(b: Uint8Array, field: string): string {
  if (b.length < SOURCE_KEY_BYTES_MIN || b.length > SOURCE_KEY_BYTES_MAX)
    throw new TscmigError("unauthenticated", `${field}: must be ${SOURCE_KEY_BYTES_MIN}..${SOURCE_KEY_BYTES_MAX} bytes, got ${b.length}`, { field, reason: "source_key_missing" });
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");
}

function sourceRefFromPb(m: { sourceName: string; sourceKey: Uint8Array }): SourceRef {
  return { sourceName: str(m.sourceName, "sourceName"), sourceKey: keyFromPb(m.sourceKey, "sourceKey") };
}

function sourceRefToPb(r: SourceRef): { sourceName: string; sourceKey: Uint8Array } {
  return { sourceName: r.sourceName, sourceKey: keyToPb(r.sourceKey) };
}

export function prepareReqToPb(r: PrepareReq): MessageInitShape<typeof PrepareRequestSchema> {
  return {
    migrationId: r.migrationId,
    vmId: r.vmId,
    generation: r.generation,
    vcpuCount: r.vcpuCount,
    guestTscKhz: r.guestTscKhz,
    sourceFracBits: r.sourceFracBits,
    policy: POLICY_TO_PB[r.policy],
    estimator: ESTIMATOR_TO_PB[r.estimator],
    doorbell: r.doorbell,
    advanceCapNs: r.advanceCapNs,
    sourceName: r.sourceName,
    sourceGrpc: r.sourceGrpc,
    sourceKey: keyToPb(r.sourceKey),
    switchover: SWITCHOVER_TO_PB[r.switchover ?? "two-phase"],
  };
}

export function prepareReqFromPb(m: PrepareRequest): PrepareReq {
  return {
    migrationId: str(m.migrationId, "migrationId"),
    vmId: str(m.vmId, "vmId"),
    generation: m.generation,
    vcpuCount: u32Field(m.vcpuCount, "vcpuCount"),
    guestTscKhz: m.guestTscKhz,
    sourceFracBits: u32Field(m.sourceFracBits, "sourceFracBits"),
    policy: policyOf(m.policy, "policy"),
    estimator: estimatorOf(m.estimator, "estimator"),
    doorbell: m.doorbell,
    advanceCapNs: m.advanceCapNs,
    sourceName: str(m.sourceName, "sourceName"),
    sourceGrpc: str(m.sourceGrpc, "sourceGrpc", 256),
    sourceKey: keyFromPb(m.sourceKey, "sourceKey"),
    // Absent means two-phase in the domain too: only the other mode is spelled out.
    ...(switchoverOf(m.switchover) === "on-receipt" ? { switchover: "on-receipt" as const } : {}),
  };
}

export function prepareResFromPb(m: PrepareResponse): PrepareRes {
  return { hostTscKhz: m.hostTscKhz, fracBits: m.fracBits, tscScaling: m.tscScaling, ratio: m.ratio, destinationName: m.destinationName };
}

export function probeReqToPb(r: ProbeReq): MessageInitShape<typeof ProbeRequestSchema> {
  return { migrationId: r.migrationId, t1RealtimeNs: r.t1RealtimeNs, ...sourceRefToPb(r) };
}

export function probeReqFromPb(m: ProbeRequest): ProbeReq {
  return { migrationId: str(m.migrationId, "migrationId"), t1RealtimeNs: m.t1RealtimeNs, ...sourceRefFromPb(m) };
}

export function probeResFromPb(m: ProbeResponse): ProbeRes {
  return { t1RealtimeNs: m.t1RealtimeNs, t2RealtimeNs: m.t2RealtimeNs, t3RealtimeNs: m.t3RealtimeNs, maxerrorNs: m.maxerrorNs };
}

export function commitReqFromPb(m: CommitRequest): CommitReq {
  return {
    migrationId: str(m.migrationId, "migrationId"),
    vmId: str(m.vmId, "vmId"),
    generation: m.generation,
    transferRttNs: m.transferRttNs,
    ...(m.answerToCommitNs !== undefined ? { answerToCommitNs: m.answerToCommitNs } : {}),
    ...sourceRefFromPb(m),
  };
}

export function abortReqToPb(r: AbortReq): MessageInitShape<typeof AbortRequestSchema> {
  return { migrationId: r.migrationId, vmId: r.vmId, generation: r.generation, reason: r.reason, ...sourceRefToPb(r) };
}

export function abortReqFromPb(m: AbortRequest): AbortReq {
  return { migrationId: str(m.migrationId, "migrationId"), vmId: str(m.vmId, "vmId"), generation: m.generation, reason: str(m.reason, "reason", 1024), ...sourceRefFromPb(m) };
}

export function resolveReqToPb(r: ResolveReq): MessageInitShape<typeof ResolveRequestSchema> {
  const fence = r.fence ? { fence: true, sourceName: r.fence.sourceName, generation: r.fence.generation } : {};
  return { migrationId: r.migrationId, vmId: r.vmId, sourceKey: keyToPb(r.sourceKey), ...fence };
}

export function resolveReqFromPb(m: ResolveRequest): ResolveReq {
  const req: ResolveReq = { migrationId: str(m.migrationId, "migrationId"), vmId: str(m.vmId, "vmId"), sourceKey: keyFromPb(m.sourceKey, "sourceKey") };
  if (m.fence) req.fence = { sourceName: str(m.sourceName, "sourceName"), generation: m.generation };
  else if (m.sourceName !== "" || m.generation !== 0n) throw invalid("fence", "sourceName and generation belong to a fencing Resolve");
  return req;
}

export function restoreReportToPb(r: RestoreReport): MessageInitShape<typeof RestoreReportSchema> {
  const { resumeTrueNs, ...rest } = r;
  return { ...rest, resumedTrueNs: resumeTrueNs };
}

export function restoreReportFromPb(m: PbRestoreReport | undefined): RestoreReport {
  if (!m) throw invalid("report", "missing");
  return {
    estimatedBlackoutNs: m.estimatedBlackoutNs,
    advancedNs: m.advancedNs,
    errorBoundNs: m.errorBoundNs,
    capped: m.capped,
    doorbellRung: m.doorbellRung,
    disruptionMarker: m.disruptionMarker,
    resumeTrueNs: m.resumedTrueNs,
    decodeNs: m.decodeNs,
    restoreNs: m.restoreNs,
    tscAtResume: m.tscAtResume,
    kvmclockAtResumeNs: m.kvmclockAtResumeNs,
    stoppedVcpus: m.stoppedVcpus,
    transferReceivedTrueNs: m.transferReceivedTrueNs,
  };
}

export function commitResFromPb(m: CommitResponse): CommitRes {
  return { report: restoreReportFromPb(m.report), replay: m.replay };
}

export function resolveResToPb(r: ResolveRes): { decision: PbDecision; generation: bigint; transferRttNs: bigint } {
  return { decision: DECISION_TO_PB[r.decision], generation: r.generation, transferRttNs: r.transferRttNs };
}

export function resolveResFromPb(m: ResolveResponse): ResolveRes {
  const d = DECISION_OF.get(m.decision);
  if (!d) throw invalid("decision", `unknown decision ${m.decision}`);
  return { decision: d, generation: m.generation, transferRttNs: m.transferRttNs };
}

// ---- Snapshot ----------------------------------------------------------------------------------

function guestToPb(g: GuestState): MessageInitShape<typeof GuestStateSchema> {
  return {
    clocksource: g.clocksource === "tsc" ? PbClocksource.TSC : PbClocksource.KVM_CLOCK,
    ntpStatus: g.ntp.status,
    maxerrorUs: g.ntp.maxerrorUs,
    esterrorUs: g.ntp.esterrorUs,
    wallOffsetNs: g.wallOffsetNs,
    tickClocksourceNs: g.ntp.tickClocksourceNs,
    syncClocksourceNs: g.syncClocksourceNs,
    lastHandledMarker: g.lastHandledMarker,
    handledCount: g.handledCount,
    migrationHandling: g.migrationHandling,
    tscCsBaseTsc: g.tscCs.baseTsc,
    tscCsBaseNs: g.tscCs.baseNs,
    tscCsMul: Number(g.tscCs.mul),
    tscCsShift: g.tscCs.shift,
    everSynced: g.everSynced,
    lastValueNs: g.lastValueNs,
    handlingMode: g.handlingMode,
    awaitingResync: g.awaitingResync,
  };
}

function guestFromPb(m: PbGuestState | undefined): GuestState {
  if (!m) throw invalid("snapshot.guest", "missing");
  const clocksource = m.clocksource === PbClocksource.TSC ? "tsc" : m.clocksource === PbClocksource.KVM_CLOCK ? "kvm-clock" : null;
  if (clocksource === null) throw invalid("snapshot.guest.clocksource", `unknown clocksource ${m.clocksource}`);
  if (m.handlingMode !== "ditch" && m.handlingMode !== "widen") throw invalid("snapshot.guest.handlingMode", `must be "ditch" or "widen"`);
  return {
    clocksource,
    ntp: { status: u32Field(m.ntpStatus, "snapshot.guest.ntpStatus", 0xffff), maxerrorUs: m.maxerrorUs, esterrorUs: m.esterrorUs, tickClocksourceNs: m.tickClocksourceNs },
    wallOffsetNs: m.wallOffsetNs,
    syncClocksourceNs: m.syncClocksourceNs,
    lastHandledMarker: m.lastHandledMarker,
    handledCount: m.handledCount,
    migrationHandling: m.migrationHandling,
    handlingMode: m.handlingMode,
    tscCs: { baseTsc: m.tscCsBaseTsc, baseNs: m.tscCsBaseNs, mul: BigInt(m.tscCsMul), shift: m.tscCsShift },
    everSynced: m.everSynced,
    lastValueNs: m.lastValueNs,
    awaitingResync: m.awaitingResync,
  };
}

export function snapshotToPb(s: Snapshot): MessageInitShape<typeof SnapshotSchema> {
  return {
    formatVersion: s.formatVersion,
    migrationId: s.migrationId,
    vmId: s.vmId,
    generation: s.generation,
    vcpuCount: s.vcpuCount,
    guestTscKhz: s.guestTscKhz,
    kvmNs: s.kvmNs,
    hostTsc: s.hostTsc,
    hostRealtimeNs: s.hostRealtimeNs,
    clockFlags: s.clockFlags,
    hostTscKhz: s.hostTscKhz,
    fracBits: s.fracBits,
    hostMaxerrorNs: s.hostMaxerrorNs,
    vcpus: create(VcpuStatesSchema, {
      tscOffset: Array.from(s.tscOffset),
      ratio: Array.from(s.ratio),
      tsc: Array.from(s.tsc),
      pvclockRecords: s.pvclock,
    }),
    vmclockPage: s.vmclock,
    guest: create(GuestStateSchema, guestToPb(s.guest)),
    sourceCaptureToSendNs: s.sourceCaptureToSendNs,
    probeValid: s.probe !== null,
    probeOffsetNs: s.probe?.offsetNs ?? 0n,
    probeBoundNs: s.probe?.boundNs ?? 0n,
    probeToPauseNs: s.probe?.probeToPauseNs ?? 0n,
    kvmclockEnabled: s.kvmclockEnabled,
    backendPayload: s.backendPayload ?? new Uint8Array(0),
  };
}

/** Wire → domain. Structural checks here; the domain rules (validateSnapshot) run after. */
export function transferReqToPb(r: TransferReq): MessageInitShape<typeof TransferRequestSchema> {
  return {
    snapshot: snapshotToPb(r.snapshot),
    sourceAnchorsToSendNs: r.sourceAnchorsToSendNs ?? [],
    sourceRequestsToSendNs: r.sourceRequestsToSendNs ?? [],
    ...sourceRefToPb(r),
  };
}

export function transferReqFromPb(m: TransferRequest): TransferReq {
  if (!m.snapshot) throw invalid("snapshot", "missing");
  const ref = sourceRefFromPb(m);
  return {
    snapshot: snapshotFromPb(m.snapshot),
    ...(m.sourceAnchorsToSendNs.length > 0 ? { sourceAnchorsToSendNs: m.sourceAnchorsToSendNs } : {}),
    ...(m.sourceRequestsToSendNs.length > 0 ? { sourceRequestsToSendNs: m.sourceRequestsToSendNs } : {}),
    ...ref,
  };
}

export function snapshotFromPb(m: PbSnapshot | undefined): Snapshot {
  if (!m) throw invalid("snapshot", "missing");
  if (m.formatVersion !== 1) throw invalid("snapshot.formatVersion", `unknown format version ${m.formatVersion} (this daemon reads 1)`);
  const n = u32Field(m.vcpuCount, "snapshot.vcpuCount", LIMITS.vcpuCountMax);
  if (n < 1) throw invalid("snapshot.vcpuCount", `must be in 1..${LIMITS.vcpuCountMax}`);
  const v = m.vcpus;
  if (!v) throw invalid("snapshot.vcpus", "missing");
  const col = (a: bigint[], name: string) => {
    if (a.length !== n) throw invalid(`snapshot.vcpus.${name}`, `has ${a.length} entries for ${n} vCPUs`);
    return BigUint64Array.from(a);
  };
  if (v.pvclockRecords.length !== n * PVCLOCK_RECORD_BYTES)
    throw invalid("snapshot.vcpus.pvclockRecords", `must be ${n} × 32 bytes, got ${v.pvclockRecords.length}`);
  return {
    formatVersion: m.formatVersion,
    migrationId: str(m.migrationId, "snapshot.migrationId"),
    vmId: str(m.vmId, "snapshot.vmId"),
    generation: m.generation,
    vcpuCount: n,
    guestTscKhz: m.guestTscKhz,
    kvmNs: m.kvmNs,
    hostTsc: m.hostTsc,
    hostRealtimeNs: m.hostRealtimeNs,
    clockFlags: u32Field(m.clockFlags, "snapshot.clockFlags"),
    hostTscKhz: m.hostTscKhz,
    fracBits: u32Field(m.fracBits, "snapshot.fracBits"),
    hostMaxerrorNs: m.hostMaxerrorNs,
    tscOffset: col(v.tscOffset, "tscOffset"),
    ratio: col(v.ratio, "ratio"),
    tsc: col(v.tsc, "tsc"),
    pvclock: v.pvclockRecords,
    vmclock: m.vmclockPage,
    guest: guestFromPb(m.guest),
    kvmclockEnabled: m.kvmclockEnabled,
    sourceCaptureToSendNs: m.sourceCaptureToSendNs,
    probe: m.probeValid ? { offsetNs: m.probeOffsetNs, boundNs: m.probeBoundNs, probeToPauseNs: m.probeToPauseNs } : null,
    ...(m.backendPayload.length > 0 ? { backendPayload: m.backendPayload } : {}),
  };
}

export function commitReqToPb(r: CommitReq): MessageInitShape<typeof CommitRequestSchema> {
  return {
    migrationId: r.migrationId,
    vmId: r.vmId,
    generation: r.generation,
    transferRttNs: r.transferRttNs,
    ...(r.answerToCommitNs !== undefined ? { answerToCommitNs: r.answerToCommitNs } : {}),
    ...sourceRefToPb(r),
  };
}

export function handoverOpenToPb(r: { migrationId: string } & SourceRef): MessageInitShape<typeof HandoverOpenSchema> {
  return { migrationId: r.migrationId, ...sourceRefToPb(r) };
}

export function handoverOpenFromPb(m: HandoverOpen): { migrationId: string } & SourceRef {
  return { migrationId: str(m.migrationId, "open.migrationId"), ...sourceRefFromPb(m) };
}

// ---- whole messages as bytes ---------------------------------------------------------------------
//
// The peer protocol (rpc/peer-protocol.ts) speaks only these: every request and answer of the
// migration service, and every step of a Handover exchange, from domain value to bytes and back.
// Bytes that do not decode are refused naming the message they should have been.

export const PEER_METHODS = ["Prepare", "Probe", "Transfer", "Commit", "Abort", "Resolve", "Ping"] as const;
export type PeerMethod = (typeof PEER_METHODS)[number];

export interface PeerRequests {
  Prepare: PrepareReq;
  Probe: ProbeReq;
  Transfer: TransferReq;
  Commit: CommitReq;
  Abort: AbortReq;
  Resolve: ResolveReq;
  Ping: Record<string, never>;
}

export interface PeerAnswers {
  Prepare: PrepareRes;
  Probe: ProbeRes;
  Transfer: TransferRes;
  Commit: CommitRes;
  Abort: Record<string, never>;
  Resolve: ResolveRes;
  Ping: Record<string, never>;
}

/** One Handover message each way (the unary calls' messages, plus `open` / `opened`). */
export type HandoverStep =
  | { case: "open"; value: { migrationId: string } & SourceRef }
  | { case: "probe"; value: ProbeReq }
  | { case: "transfer"; value: TransferReq }
  | { case: "commit"; value: CommitReq };

export type HandoverAnswer = { case: "opened" } | { case: "probe"; value: ProbeRes } | { case: "transfer"; value: TransferRes } | { case: "commit"; value: CommitRes };

function decodeBytes<S extends DescMessage>(schema: S, bytes: Uint8Array): MessageShape<S> {
  try {
    return fromBinary(schema, bytes);
  } catch (e) {
    throw new TscmigError("invalid_argument", `request is not a valid ${schema.typeName}: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/** Encodes, refusing what the schema cannot carry (an out-of-range value: a bug of the caller). */
function encodeBytes<S extends DescMessage>(schema: S, init: MessageInitShape<S>): Uint8Array {
  try {
    return toBinary(schema, create(schema, init));
  } catch (e) {
    throw new TscmigError("internal", `${schema.typeName} not encodable: ${e instanceof Error ? e.message : String(e)}`);
  }
}

const EMPTY = Object.freeze({}) as Record<string, never>;

function transferResToPb(r: TransferRes): MessageInitShape<typeof TransferResponseSchema> {
  return r.report ? { destinationHoldNs: r.destinationHoldNs, report: restoreReportToPb(r.report) } : { destinationHoldNs: r.destinationHoldNs };
}

function transferResFromPb(m: TransferResponse): TransferRes {
  return m.report ? { destinationHoldNs: m.destinationHoldNs, report: restoreReportFromPb(m.report) } : { destinationHoldNs: m.destinationHoldNs };
}

function commitResToPb(r: CommitRes): MessageInitShape<typeof CommitResponseSchema> {
  return { report: restoreReportToPb(r.report), replay: r.replay };
}

type Codec<T> = { encode(v: T): Uint8Array; decode(b: Uint8Array): T };

/** Request codecs by method. */
export const REQUESTS: { [M in PeerMethod]: Codec<PeerRequests[M]> } = {
  Prepare: { encode: (r) => encodeBytes(PrepareRequestSchema, prepareReqToPb(r)), decode: (b) => prepareReqFromPb(decodeBytes(PrepareRequestSchema, b)) },
  Probe: { encode: (r) => encodeBytes(ProbeRequestSchema, probeReqToPb(r)), decode: (b) => probeReqFromPb(decodeBytes(ProbeRequestSchema, b)) },
  Transfer: { encode: (r) => encodeBytes(TransferRequestSchema, transferReqToPb(r)), decode: (b) => transferReqFromPb(decodeBytes(TransferRequestSchema, b)) },
  Commit: { encode: (r) => encodeBytes(CommitRequestSchema, commitReqToPb(r)), decode: (b) => commitReqFromPb(decodeBytes(CommitRequestSchema, b)) },
  Abort: { encode: (r) => encodeBytes(AbortRequestSchema, abortReqToPb(r)), decode: (b) => abortReqFromPb(decodeBytes(AbortRequestSchema, b)) },
  Resolve: { encode: (r) => encodeBytes(ResolveRequestSchema, resolveReqToPb(r)), decode: (b) => resolveReqFromPb(decodeBytes(ResolveRequestSchema, b)) },
  Ping: { encode: () => encodeBytes(PingRequestSchema, {}), decode: (b) => (decodeBytes(PingRequestSchema, b), EMPTY) },
};

/** Answer codecs by method. */
export const ANSWERS: { [M in PeerMethod]: Codec<PeerAnswers[M]> } = {
  Prepare: { encode: (r) => encodeBytes(PrepareResponseSchema, { ...r }), decode: (b) => prepareResFromPb(decodeBytes(PrepareResponseSchema, b)) },
  Probe: { encode: (r) => encodeBytes(ProbeResponseSchema, { ...r }), decode: (b) => probeResFromPb(decodeBytes(ProbeResponseSchema, b)) },
  Transfer: { encode: (r) => encodeBytes(TransferResponseSchema, transferResToPb(r)), decode: (b) => transferResFromPb(decodeBytes(TransferResponseSchema, b)) },
  Commit: { encode: (r) => encodeBytes(CommitResponseSchema, commitResToPb(r)), decode: (b) => commitResFromPb(decodeBytes(CommitResponseSchema, b)) },
  Abort: { encode: () => encodeBytes(AbortResponseSchema, {}), decode: (b) => (decodeBytes(AbortResponseSchema, b), EMPTY) },
  Resolve: { encode: (r) => encodeBytes(ResolveResponseSchema, resolveResToPb(r)), decode: (b) => resolveResFromPb(decodeBytes(ResolveResponseSchema, b)) },
  Ping: { encode: () => encodeBytes(PingResponseSchema, {}), decode: (b) => (decodeBytes(PingResponseSchema, b), EMPTY) },
};

export function encodeHandoverStep(s: HandoverStep): Uint8Array {
  switch (s.case) {
    case "open":
      return encodeBytes(HandoverRequestSchema, { step: { case: "open", value: handoverOpenToPb(s.value) } });
    case "probe":
      return encodeBytes(HandoverRequestSchema, { step: { case: "probe", value: probeReqToPb(s.value) } });
    case "transfer":
      return encodeBytes(HandoverRequestSchema, { step: { case: "transfer", value: transferReqToPb(s.value) } });
    case "commit":
      return encodeBytes(HandoverRequestSchema, { step: { case: "commit", value: commitReqToPb(s.value) } });
  }
}

export function decodeHandoverStep(bytes: Uint8Array): HandoverStep {
  const step = decodeBytes(HandoverRequestSchema, bytes).step;
  switch (step.case) {
    case "open":
      return { case: "open", value: handoverOpenFromPb(step.value) };
    case "probe":
      return { case: "probe", value: probeReqFromPb(step.value) };
    case "transfer":
      return { case: "transfer", value: transferReqFromPb(step.value) };
    case "commit":
      return { case: "commit", value: commitReqFromPb(step.value) };
    default:
      throw invalid("step", "a Handover message needs one of open, probe, transfer, commit");
  }
}

export function encodeHandoverAnswer(a: HandoverAnswer): Uint8Array {
  switch (a.case) {
    case "opened":
      return encodeBytes(HandoverResponseSchema, { step: { case: "opened", value: {} } });
    case "probe":
      return encodeBytes(HandoverResponseSchema, { step: { case: "probe", value: { ...a.value } } });
    case "transfer":
      return encodeBytes(HandoverResponseSchema, { step: { case: "transfer", value: transferResToPb(a.value) } });
    case "commit":
      return encodeBytes(HandoverResponseSchema, { step: { case: "commit", value: commitResToPb(a.value) } });
  }
}

export function decodeHandoverAnswer(bytes: Uint8Array): HandoverAnswer {
  const step = decodeBytes(HandoverResponseSchema, bytes).step;
  switch (step.case) {
    case "opened":
      return { case: "opened" };
    case "probe":
      return { case: "probe", value: probeResFromPb(step.value) };
    case "transfer":
      return { case: "transfer", value: transferResFromPb(step.value) };
    case "commit":
      return { case: "commit", value: commitResFromPb(step.value) };
    default:
      throw new TscmigError("internal", "Handover: an answer with no step");
  }
}
