// The migration protocol's messages as domain values (the codec maps them to tscmig.v1 on the wire).

import { invalid } from "../errors.js";
import type { EstimatorName } from "./blackout.js";
import type { Clocksource } from "../guest/guest.js";
import type { PolicyName } from "./restore.js";
import type { RestoreReport } from "./report.js";
import type { Snapshot } from "./snapshot.js";

export type { RestoreReport } from "./report.js";

/**
 * Who a message after Prepare speaks for: the migration's source and the secret it chose for this
 * migration (hex). A migration's identity is (sourceName, migrationId); the destination answers a
 * message about it only when the key matches the one its Prepare carried.
 */
export interface SourceRef {
  sourceName: string;
  sourceKey: string;
}

/**
 * When the destination may run the VM (docs/protocol.md#switchover-modes). `two-phase`: after the
 * source's durable decision (Commit). `on-receipt`: as soon as the Transfer arrives; the source,
 * journaled "handing off" before it sent, cannot roll back on its own from then on.
 */
export type SwitchoverMode = "two-phase" | "on-receipt";
export const SWITCHOVER_MODES: readonly SwitchoverMode[] = ["two-phase", "on-receipt"];

export function parseSwitchover(v: unknown, field = "switchover"): SwitchoverMode {
  if (typeof v === "string" && (SWITCHOVER_MODES as readonly string[]).includes(v)) return v as SwitchoverMode;
  throw invalid(field, `unknown switchover mode ${JSON.stringify(v)} (one of ${SWITCHOVER_MODES.join(", ")})`);
}

export interface PrepareReq {
  migrationId: string;
  vmId: string;
  generation: bigint;
  vcpuCount: number;
  guestTscKhz: bigint;
  sourceFracBits: number;
  policy: PolicyName;
  estimator: EstimatorName;
  doorbell: boolean;
  advanceCapNs: bigint;
  sourceName: string;
  sourceGrpc: string;
  /** The source's secret for this migration (hex, 16..64 bytes). */
  sourceKey: string;
  /** Absent: `two-phase` (what a Prepare from before the modes, or a staged record, meant). */
  switchover?: SwitchoverMode;
}

export interface PrepareRes {
  hostTscKhz: bigint;
  fracBits: number;
  tscScaling: boolean;
  ratio: bigint;
  destinationName: string;
}

export interface ProbeReq extends SourceRef {
  migrationId: string;
  t1RealtimeNs: bigint;
}

export interface ProbeRes {
  t1RealtimeNs: bigint;
  t2RealtimeNs: bigint;
  t3RealtimeNs: bigint;
  maxerrorNs: bigint;
}

export interface TransferReq extends SourceRef {
  snapshot: Snapshot;
  /**
   * Source raw clock, per answer received on the Handover call before the pause (`opened`, then
   * each probe, in order): that answer received → Transfer sent (see blackout.ts, one-sided).
   */
  sourceAnchorsToSendNs?: bigint[];
  /** Source raw clock, per request of those exchanges: that request sent → Transfer sent (same order). */
  sourceRequestsToSendNs?: bigint[];
}

export interface TransferRes {
  destinationHoldNs: bigint;
  /** On-receipt switchover: the VM already runs on the destination, restored as this reports. */
  report?: RestoreReport;
}

export interface CommitReq extends SourceRef {
  migrationId: string;
  vmId: string;
  generation: bigint;
  transferRttNs: bigint;
  /** Source raw clock: Transfer answer received → this Commit sent (see blackout.ts, one-sided). */
  answerToCommitNs?: bigint;
}

export interface CommitRes {
  report: RestoreReport;
  replay: boolean;
}

export interface AbortReq extends SourceRef {
  migrationId: string;
  vmId: string;
  generation: bigint;
  reason: string;
}

export interface ResolveReq {
  migrationId: string;
  vmId: string;
  /** The key of the migration asked about: a source answers only the destination it prepared. */
  sourceKey: string;
  /**
   * Set when an on-receipt source asks its destination what became of the Transfer: unless the VM
   * runs there, the destination durably fences that Transfer before it answers (aborted, unknown).
   */
  fence?: { sourceName: string; generation: bigint };
}

export type ResolveDecision = "unknown" | "pending" | "committed" | "aborted";

export interface ResolveRes {
  decision: ResolveDecision;
  generation: bigint;
  /** Source only: the Transfer round trip it measured (a destination that missed Commit needs it). */
  transferRttNs: bigint;
}

/**
 * What a daemon serves to its peers, in domain values: the destination role's calls, and Resolve
 * (either side answers it). The peer protocol (rpc/peer-protocol.ts) decodes bytes into these.
 * `arrivedAt`: this host's raw clock when the request's bytes arrived (one-sided's durations).
 */
export interface PeerHandler {
  prepare(req: PrepareReq): PrepareRes;
  probe(req: ProbeReq): ProbeRes;
  transfer(req: TransferReq, arrivedAt: bigint, decodeNs: bigint): TransferRes;
  commit(req: CommitReq, arrivedAt: bigint): CommitRes;
  abort(req: AbortReq): void;
  resolve(req: ResolveReq): ResolveRes;
  /** A Handover call opens for a migration this source prepared (refused otherwise). */
  handoverOpen(ref: SourceRef, migrationId: string): void;
  /** An answer on this migration's Handover call (`opened`, a probe) leaves right after this. */
  handoverAnswering(ref: SourceRef, migrationId: string, requestArrivedAt: bigint): void;
}

/** The calls one daemon makes on another (gRPC in production, a simulated network in chaos runs). */
export interface PeerClient {
  prepare(req: PrepareReq): Promise<PrepareRes>;
  probe(req: ProbeReq): Promise<ProbeRes>;
  /** `encodeNs` is the time the transport spent encoding, measured on the caller's clock. */
  transfer(req: TransferReq): Promise<TransferRes & { encodeNs?: bigint }>;
  commit(req: CommitReq): Promise<CommitRes>;
  abort(req: AbortReq): Promise<void>;
  resolve(req: ResolveReq): Promise<ResolveRes>;
  ping(): Promise<void>;
  /**
   * Optional: a link carrying this migration's probes, Transfer and Commit as messages of one call opened
   * now, before the pause, so the blackout pays no call setup (gRPC Handover). Same semantics as
   * the calls; once the link failed (`live` false) the caller goes on with the calls.
   */
  handover?(open: { migrationId: string } & SourceRef): Promise<HandoverLink>;
}

export interface HandoverLink {
  probe(req: ProbeReq): Promise<ProbeRes>;
  transfer(req: TransferReq): Promise<TransferRes & { encodeNs?: bigint }>;
  commit(req: CommitReq): Promise<CommitRes>;
  readonly live: boolean;
  close(): void;
}

export interface PeerDialer {
  dial(address: string): PeerClient;
  /**
   * Throws `invalid_argument` naming `field` unless `address` is one this transport can dial (a
   * peer names its own address in Prepare; the destination dials it to Resolve). Default: HOST:PORT.
   */
  checkAddress?(address: string, field: string): void;
}

export type { Clocksource };
