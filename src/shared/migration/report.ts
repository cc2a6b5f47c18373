// What a migration did to the guest's time, in one vocabulary from end to end: the destination's
// account of its restore (RestoreReport: journaled with the decision, answered to Commit), the
// source's report of the whole migration (MigrationReport: the control API, metrics, the dashboard)
// and the history and chaos records built from them (shared/history.ts, chaos/history.ts) name a
// fact the same way everywhere. Each type has its codec (shared/codec.ts), the only way it is
// written to or read from JSON.

import { arrayOf, bool, BOUNDARY, type Codec, fromJsonText, i64, int, obj, oneOf, optional, str, toJsonText, u64 } from "../codec.js";
import { ESTIMATORS, type EstimatorName } from "./blackout.js";
import { POLICIES, type PolicyName } from "./restore.js";
import { SWITCHOVER_MODES, type SwitchoverMode } from "./messages.js";

/** What carried a migration's Transfer and Commit: one Handover call, or the unary calls. */
export type MigrationPath = "handover" | "unary";
export const MIGRATION_PATHS: readonly MigrationPath[] = ["handover", "unary"];

/** The destination's account of a restore. */
export interface RestoreReport {
  estimatedBlackoutNs: bigint;
  advancedNs: bigint;
  errorBoundNs: bigint;
  capped: boolean;
  doorbellRung: boolean;
  disruptionMarker: bigint;
  /** True time at resume (0 where there is no shared truth). */
  resumeTrueNs: bigint;
  decodeNs: bigint;
  restoreNs: bigint;
  /** vCPU 0's guest TSC and kvmclock at resume. */
  tscAtResume: bigint;
  kvmclockAtResumeNs: bigint;
  /** vCPUs whose pvclock showed PVCLOCK_GUEST_STOPPED at resume. */
  stoppedVcpus: number;
  /** True time the Transfer arrived (0 where there is no shared truth); diagnostics only. */
  transferReceivedTrueNs: bigint;
}

export const restoreReportCodec = obj<RestoreReport>({
  estimatedBlackoutNs: i64,
  advancedNs: i64,
  errorBoundNs: u64,
  capped: bool,
  doorbellRung: bool,
  disruptionMarker: u64,
  resumeTrueNs: u64,
  decodeNs: u64,
  restoreNs: u64,
  tscAtResume: u64,
  kvmclockAtResumeNs: u64,
  stoppedVcpus: int(0),
  transferReceivedTrueNs: u64,
});

/** The destination's journal column: a replayed Commit answers from it after a restart. */
export function restoreReportToJournal(r: RestoreReport): string {
  return toJsonText(restoreReportCodec, r, BOUNDARY.journal);
}

export function restoreReportFromJournal(text: string): RestoreReport {
  return fromJsonText(restoreReportCodec, text, BOUNDARY.journal, "journal.report");
}

/** The source's journal column: what it must tell a destination that missed the Commit (Resolve, redelivery). */
export interface SourceJournalNote {
  transferRttNs: bigint;
}

const sourceJournalNoteCodec = obj<SourceJournalNote>({ transferRttNs: u64 });

export function sourceNoteToJournal(n: SourceJournalNote): string {
  return toJsonText(sourceJournalNoteCodec, n, BOUNDARY.journal);
}

/** The Transfer round trip a source journaled; 0 where it journaled none (it never got an answer). */
export function sourceNoteFromJournal(text: string | undefined): SourceJournalNote {
  return text === undefined ? { transferRttNs: 0n } : fromJsonText(sourceJournalNoteCodec, text, BOUNDARY.journal, "journal.report");
}

export interface PhaseTimings {
  captureNs: bigint;
  encodeNs: bigint;
  transferNs: bigint;
  decodeNs: bigint;
  restoreNs: bigint;
  commitNs: bigint;
}

export const MIGRATION_OUTCOMES = ["committed", "aborted", "refused", "in-doubt"] as const;
export type MigrationOutcome = (typeof MIGRATION_OUTCOMES)[number];

export type MigrationError = {
  code: string;
  message: string;
  field?: string;
  errno?: number;
  reason?: string;
};

/** The source's report of one migration, whatever its outcome. */
export interface MigrationReport {
  migrationId: string;
  vmId: string;
  source: string;
  destination: string;
  policy: PolicyName;
  estimator: EstimatorName;
  /** When the destination could run the VM: after the source's decision, or on receipt of the snapshot. */
  switchover: SwitchoverMode;
  outcome: MigrationOutcome;
  error?: MigrationError;
  generation: bigint;
  vcpus: number;
  guestTscKhz: bigint;
  /** True time from the source's pause to the destination's resume (shared truth). */
  trueBlackoutNs: bigint;
  estimatedBlackoutNs: bigint;
  advancedNs: bigint;
  errorBoundNs: bigint;
  capped: boolean;
  doorbellRung: boolean;
  disruptionMarker: bigint;
  /** vCPU 0's guest TSC at the pause, at the resume, and what it would read at the resume had the source never paused. */
  tscAtPause: bigint;
  tscAtResume: bigint;
  tscIdealAtResume: bigint;
  /** vCPU 0's kvmclock, the same three instants. */
  kvmclockAtPauseNs: bigint;
  kvmclockAtResumeNs: bigint;
  kvmclockIdealAtResumeNs: bigint;
  /** (tscAtResume − tscIdealAtResume) in ns of guest time; the introduced error the bound must cover. */
  tscErrorNs: bigint;
  kvmclockErrorNs: bigint;
  /** vCPUs that showed PVCLOCK_GUEST_STOPPED at resume. */
  stoppedVcpus: number;
  pauseTrueNs: bigint;
  resumeTrueNs: bigint;
  /** What carried Transfer and Commit (`unary` until a Handover call carried both). */
  path: MigrationPath;
  /**
   * The Transfer round trip's two legs on the shared true clock (0 where there is none): source send
   * → destination receipt, and destination answer → source receipt. From the round trip alone
   * one-sided could only take half their sum and err by half their difference; the Commit and the
   * Handover answers narrow that (blackout.ts). Diagnostics: no estimator reads them.
   */
  transferForwardNs: bigint;
  transferBackNs: bigint;
  phases: PhaseTimings;
}

export const migrationErrorCodec = obj<MigrationError>({ code: str, message: str, field: optional(str), errno: optional(int()), reason: optional(str) });

export const phaseTimingsCodec = obj<PhaseTimings>({ captureNs: u64, encodeNs: u64, transferNs: u64, decodeNs: u64, restoreNs: u64, commitNs: u64 });

export const policyCodec: Codec<PolicyName> = oneOf(POLICIES);
export const estimatorCodec: Codec<EstimatorName> = oneOf(ESTIMATORS);
export const pathCodec: Codec<MigrationPath> = oneOf(MIGRATION_PATHS);

export const migrationReportCodec = obj<MigrationReport>({
  migrationId: str,
  vmId: str,
  source: str,
  destination: str,
  policy: policyCodec,
  estimator: estimatorCodec,
  switchover: oneOf(SWITCHOVER_MODES),
  outcome: oneOf(MIGRATION_OUTCOMES),
  error: optional(migrationErrorCodec),
  generation: u64,
  vcpus: int(0),
  guestTscKhz: u64,
  trueBlackoutNs: i64,
  estimatedBlackoutNs: i64,
  advancedNs: i64,
  errorBoundNs: u64,
  capped: bool,
  doorbellRung: bool,
  disruptionMarker: u64,
  tscAtPause: u64,
  tscAtResume: u64,
  tscIdealAtResume: u64,
  kvmclockAtPauseNs: u64,
  kvmclockAtResumeNs: u64,
  kvmclockIdealAtResumeNs: u64,
  tscErrorNs: i64,
  kvmclockErrorNs: i64,
  stoppedVcpus: int(0),
  pauseTrueNs: u64,
  resumeTrueNs: u64,
  path: pathCodec,
  transferForwardNs: i64,
  transferBackNs: i64,
  phases: phaseTimingsCodec,
});

export const migrationReportsCodec = arrayOf(migrationReportCodec);
