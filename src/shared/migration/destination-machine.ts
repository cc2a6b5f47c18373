// The destination side of a migration as a pure state machine (STYLE 6). The destination never
// runs a VM before the source's durable decision reaches it (Commit), and drops what it staged on
// Abort or when the source answers Resolve with "aborted"/"unknown". Replays are answered
// idempotently; out-of-order or stale messages are refused with a typed error, never thrown. The
// state is what the decisions stand on: the migration's ids and generation, and once it runs, the
// restore report that answers every replayed Commit. The driver (src/destination/migrate-in.ts)
// keeps what it received (the snapshot and its receipt instants) beside it and performs the
// effects: journal records, the durable stage, the restore, and the reply or refusal.
//
//   (none) ──prepare──▶ prepared ──transfer──▶ staged ──commit──▶ (restore) ──restored──▶ running
//                          │                     │ ▲   restoreFailed: stays staged,  │ commit (replay):
//              abort, leaseExpired             abort│transfer(replay)  retried       ▼ the same report
//                          ▼                     ▼ └─ same id: ok
//                       aborted ◀──resolved(aborted|unknown)── staged
//   staged ──resolved(committed)──▶ (restore) (the Commit was lost; the source decided)
//   (none) ──commit──▶ aborted, journaled as "fenced": the source may take its VM back, and a late
//                      Prepare or Transfer of that migration is refused for good
//
// On-receipt switchover (Prepare said so): the Transfer is the decision, journaled first.
//   prepared ──transfer──▶ staged, decided: the snapshot and "committed" land in one transaction
//                          (journaling first), then the restore at once ──restored──▶ running, the
//                          Transfer answered with the report. The driver builds the VM and restores
//                          its clocks (paused: nothing durable, nothing visible) before it performs
//                          this step, so a restore that fails refuses the Transfer undecided (the
//                          source's Resolve fences it). restoreFailed or a crash after the decision,
//                          before the VM was adopted: still staged and decided, the restore is retried
//                          (recovery) without asking the source; Abort and the source's answers no
//                          longer move it.
//   fence (the source's Resolve after it lost the Transfer's answer):
//     (none) ──▶ aborted, journaled "fenced", answered unknown   prepared ──▶ aborted, "fenced", answered aborted
//     running or staged on receipt ──▶ answered committed   aborted ──▶ answered aborted
//     staged (two-phase) ──▶ answered pending
//   Either fence is durable before the answer leaves: the Transfer it speaks of is refused for good,
//   so a source told aborted/unknown may resume its VM.

import type { ResolveDecision, RestoreReport } from "./messages.js";

export const DESTINATION_PHASES = ["prepared", "staged", "running", "aborted"] as const;
export type DestinationPhase = (typeof DESTINATION_PHASES)[number];

export interface DestinationState {
  phase: DestinationPhase;
  migrationId: string;
  vmId: string;
  generation: bigint;
  /** The restore's report once running (null until then): a replayed Commit is answered from it. */
  report: RestoreReport | null;
  /** Prepared for on-receipt switchover: the Transfer restores and resumes at once. */
  onReceipt?: boolean;
}

/** Which VM and generation a message speaks of: a mismatch with the migration's is refused. */
interface About {
  vmId: string;
  generation: bigint;
}

/** What the Commit (or Resolve) that triggers a restore says about the Transfer's legs (one-sided). */
export interface CommitLegs {
  /** Source raw clock: Transfer sent → answered; null on receipt (the answer has not left yet). */
  transferRttNs: bigint | null;
  /** Source raw clock: Transfer answer received → Commit sent; with `commitReceiveRawNs`, or neither. */
  answerToCommitNs?: bigint;
  /** This host's raw clock when the Commit arrived. */
  commitReceiveRawNs?: bigint;
}

export type DestinationEvent =
  | ({ kind: "prepare"; migrationId: string; onReceipt?: boolean } & About)
  | { kind: "transfer" }
  | ({ kind: "commit"; migrationId: string; legs: CommitLegs } & About)
  /** The restore ran and the VM is adopted; its report is journaled with the decision. */
  | { kind: "restored"; report: RestoreReport }
  /** The restore threw; `adopted`: the VM runs here anyway (it was adopted before the failure). */
  | { kind: "restoreFailed"; adopted: boolean }
  | ({ kind: "abort" } & About)
  /** A prepared reservation's lease ran out before its Transfer. */
  | { kind: "leaseExpired" }
  | { kind: "resolved"; decision: "pending" | "committed" | "aborted" | "unknown"; transferRttNs: bigint }
  /** An on-receipt source asks what became of its Transfer (Resolve with fence). */
  | ({ kind: "fence"; migrationId: string } & About);

export const DESTINATION_EVENT_KINDS = [
  "prepare",
  "transfer",
  "commit",
  "restored",
  "restoreFailed",
  "abort",
  "leaseExpired",
  "resolved",
  "fence",
] as const satisfies readonly DestinationEvent["kind"][];

export type RefusalCode = "failed_precondition" | "aborted" | "already_exists" | "unavailable";

/** A journal record as the machine decides it; the driver adds source, key, peer and time stamp. */
export interface DestinationRecord {
  migrationId: string;
  vmId: string;
  generation: bigint;
  /** A machine phase, or "fenced" (a Commit for a migration never seen here). */
  phase: DestinationPhase | "fenced";
  decision: "pending" | "committed" | "aborted";
  report: RestoreReport | null;
}

export type DestinationReply = { kind: "ok" } | { kind: "report"; report: RestoreReport; replay: boolean } | { kind: "resolved"; decision: ResolveDecision };

export type DestinationEffect =
  | { kind: "journal"; record: DestinationRecord }
  /** Make the received snapshot durable (in one transaction with the journal record after it). */
  | { kind: "stage" }
  | { kind: "restore"; legs: CommitLegs }
  | { kind: "dropStaged" }
  | { kind: "reply"; reply: DestinationReply }
  | { kind: "refuse"; code: RefusalCode; reason: string; message: string };

export interface DStep {
  /** null: the destination knows nothing of this migration. */
  state: DestinationState | null;
  effects: DestinationEffect[];
}

/** An event the phase does not take (Firecracker's `NotAllowed`): nothing changes. */
export interface DestinationNotAllowed {
  kind: "not_allowed";
  phase: DestinationPhase | "none";
  event: DestinationEvent["kind"];
}

export type DestinationStep = DStep | DestinationNotAllowed;

export function isDestinationNotAllowed(r: DestinationStep): r is DestinationNotAllowed {
  return (r as DestinationNotAllowed).kind === "not_allowed";
}

/** The state of a migration this destination holds, e.g. one read back from the journal. */
export function destinationState(phase: DestinationPhase, m: { migrationId: string; vmId: string; generation: bigint }, report: RestoreReport | null = null): DestinationState {
  return { phase, migrationId: m.migrationId, vmId: m.vmId, generation: m.generation, report };
}

// ---- effect builders ----------------------------------------------------------------------------

const OK: DestinationEffect = { kind: "reply", reply: { kind: "ok" } };

function journal(s: DestinationState, decision: DestinationRecord["decision"]): DestinationEffect {
  return { kind: "journal", record: { migrationId: s.migrationId, vmId: s.vmId, generation: s.generation, phase: s.phase, decision, report: s.report } };
}

function refuse(state: DestinationState | null, code: RefusalCode, reason: string, message: string): DStep {
  return { state, effects: [{ kind: "refuse", code, reason, message }] };
}

function mismatch(s: DestinationState, e: About, what: string): DStep | null {
  if (e.vmId === s.vmId && e.generation === s.generation) return null;
  return refuse(s, "failed_precondition", "stale_generation", `${what} for ${e.vmId}@${e.generation} does not match ${s.vmId}@${s.generation}`);
}

function aborted(s: DestinationState, reply: boolean): DStep {
  const next: DestinationState = { ...s, phase: "aborted" };
  return { state: next, effects: [journal(next, "aborted"), { kind: "dropStaged" }, ...(reply ? [OK] : [])] };
}

// ---- transitions --------------------------------------------------------------------------------

function prepare(s: DestinationState | null, e: Extract<DestinationEvent, { kind: "prepare" }>): DStep {
  if (s === null) {
    const next: DestinationState = { ...destinationState("prepared", e), ...(e.onReceipt ? { onReceipt: true } : {}) };
    return { state: next, effects: [journal(next, "pending"), OK] };
  }
  if (s.phase !== "prepared") return refuse(s, "already_exists", "migration_id_reused", `migration already ${s.phase}`);
  if (e.vmId !== s.vmId || e.generation !== s.generation)
    return refuse(s, "already_exists", "migration_id_reused", "migration is already prepared for another VM, generation or key");
  return { state: s, effects: [OK] }; // a replayed Prepare
}

function transfer(s: DestinationState | null): DStep {
  if (s === null) return refuse(s, "failed_precondition", "not_prepared", "Transfer before Prepare");
  if (s.phase === "prepared" && s.onReceipt) {
    const next: DestinationState = { ...s, phase: "staged" };
    return { state: next, effects: [{ kind: "stage" }, journal(next, "committed"), { kind: "restore", legs: { transferRttNs: null } }] };
  }
  if (s.phase === "prepared") {
    const next: DestinationState = { ...s, phase: "staged" };
    return { state: next, effects: [{ kind: "stage" }, journal(next, "pending"), OK] };
  }
  if (s.phase === "staged") return { state: s, effects: [OK] }; // a replayed Transfer
  return refuse(s, s.phase === "aborted" ? "aborted" : "already_exists", `migration_${s.phase}`, `migration already ${s.phase}`);
}

/**
 * A Commit. Never seen here: made durable before it is answered — journaled as aborted, a fence —
 * so that a late Prepare or Transfer of it is refused forever and the source may take its VM back.
 */
function commit(s: DestinationState | null, e: Extract<DestinationEvent, { kind: "commit" }>): DStep {
  if (s === null) {
    const fence: DestinationRecord = { migrationId: e.migrationId, vmId: e.vmId, generation: e.generation, phase: "fenced", decision: "aborted", report: null };
    return { state: destinationState("aborted", e), effects: [{ kind: "journal", record: fence }, { kind: "refuse", code: "aborted", reason: "migration_unknown", message: "migration not known here; it is now fenced (recorded as aborted), so its source may resume the VM" }] };
  }
  if (s.phase === "aborted") return refuse(s, "aborted", "migration_aborted", "Commit after Abort");
  const stale = mismatch(s, e, "Commit");
  if (stale) return stale;
  if (s.phase === "staged") return { state: s, effects: [{ kind: "restore", legs: e.legs }] };
  if (s.phase === "prepared") return refuse(s, "failed_precondition", "not_staged", "Commit in phase prepared");
  // Running: a replay. Never answered with a report we do not have: the source would take it for a restore.
  if (s.report === null) return refuse(s, "unavailable", "restore_incomplete", "the migration runs here but its restore report is not recorded yet");
  return { state: s, effects: [{ kind: "reply", reply: { kind: "report", report: s.report, replay: true } }] };
}

function restored(s: DestinationState, report: RestoreReport): DStep {
  const next: DestinationState = { ...s, phase: "running", report };
  return { state: next, effects: [journal(next, "committed"), { kind: "dropStaged" }, { kind: "reply", reply: { kind: "report", report, replay: false } }] };
}

/** The fence record: this migration is aborted here for good (a late Prepare or Transfer is refused). */
function fenceRecord(m: { migrationId: string; vmId: string; generation: bigint }): DestinationEffect {
  return { kind: "journal", record: { migrationId: m.migrationId, vmId: m.vmId, generation: m.generation, phase: "fenced", decision: "aborted", report: null } };
}

const answer = (decision: ResolveDecision): DestinationEffect => ({ kind: "reply", reply: { kind: "resolved", decision } });

function fence(s: DestinationState | null, e: Extract<DestinationEvent, { kind: "fence" }>): DStep {
  if (s === null) return { state: destinationState("aborted", e), effects: [fenceRecord(e), answer("unknown")] };
  const stale = s.phase === "aborted" ? null : mismatch(s, e, "Resolve");
  if (stale) return stale;
  switch (s.phase) {
    case "prepared":
      return { state: { ...s, phase: "aborted" }, effects: [fenceRecord(s), { kind: "dropStaged" }, answer("aborted")] };
    case "staged":
      // On receipt the decision is journaled here already; two-phase: the source's Commit or Abort decides.
      return { state: s, effects: [answer(s.onReceipt ? "committed" : "pending")] };
    case "running":
      return { state: s, effects: [answer("committed")] };
    case "aborted":
      return { state: s, effects: [answer("aborted")] };
  }
}

function abort(s: DestinationState | null, e: Extract<DestinationEvent, { kind: "abort" }>): DStep {
  if (s === null || s.phase === "aborted") return { state: s, effects: [OK] };
  if (s.phase === "running") return refuse(s, "failed_precondition", "already_running", "Abort after Commit: the destination owns the VM");
  if (s.onReceipt && s.phase === "staged") return refuse(s, "failed_precondition", "already_running", "Abort after an on-receipt Transfer: the destination decided to run the VM");
  return mismatch(s, e, "Abort") ?? aborted(s, true);
}

function resolved(s: DestinationState | null, e: Extract<DestinationEvent, { kind: "resolved" }>): DStep {
  // Late or repeated answers about a decided migration change nothing (on receipt, staged is decided).
  if (s === null || (s.phase !== "staged" && s.phase !== "prepared") || (s.onReceipt && s.phase === "staged")) return { state: s, effects: [] };
  if (e.decision === "committed" && s.phase === "staged") return { state: s, effects: [{ kind: "restore", legs: { transferRttNs: e.transferRttNs } }] };
  if (e.decision === "aborted" || e.decision === "unknown") return aborted(s, false);
  return { state: s, effects: [] };
}

/** `state` is null when the destination knows nothing of this migration. */
export function stepDestination(state: DestinationState | null, e: DestinationEvent): DestinationStep {
  const notAllowed = (): DestinationNotAllowed => ({ kind: "not_allowed", phase: state?.phase ?? "none", event: e.kind });
  switch (e.kind) {
    case "prepare":
      return prepare(state, e);
    case "transfer":
      return transfer(state);
    case "commit":
      return commit(state, e);
    case "restored":
      return restoring(state) ? restored(state, e.report) : notAllowed();
    case "restoreFailed":
      if (!restoring(state)) return notAllowed();
      return { state: e.adopted ? { ...state, phase: "running" } : state, effects: [] };
    case "abort":
      return abort(state, e);
    case "leaseExpired": {
      if (state?.phase !== "prepared") return notAllowed();
      const next: DestinationState = { ...state, phase: "aborted" };
      return { state: next, effects: [journal(next, "aborted")] };
    }
    case "resolved":
      return resolved(state, e);
    case "fence":
      return fence(state, e);
  }
}

/** Where a restore can run: a staged migration. */
function restoring(s: DestinationState | null): s is DestinationState {
  return s !== null && s.phase === "staged";
}
