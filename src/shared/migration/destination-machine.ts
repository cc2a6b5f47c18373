// The destination side of a migration as a pure state machine (STYLE 6). The destination never
// runs a VM before the source's durable decision reaches it (Commit), and drops what it staged on
// Abort or when the source answers Resolve with "aborted"/"unknown". Replays are answered
// idempotently; out-of-order or stale events are refused with a typed error, never thrown.
//
//   (none) ──prepare──▶ prepared ──transfer──▶ staged ──commit──▶ running
//                          │                     │ ▲                 │ commit (replay): same report
//                        abort                 abort│transfer(replay) │
//                          ▼                     ▼ └─ same id: ok     ▼
//                       aborted ◀──resolved(aborted|unknown)── staged
//   staged ──resolved(committed)──▶ running (the Commit was lost; the source decided)

export type DestinationPhase = "prepared" | "staged" | "running" | "aborted";

export interface DestinationState {
  phase: DestinationPhase;
}

export type DestinationEvent =
  | { kind: "prepare" }
  | { kind: "transfer" }
  | { kind: "commit" }
  | { kind: "abort" }
  | { kind: "resolved"; decision: "pending" | "committed" | "aborted" | "unknown" };

export type DestinationEffect =
  | { kind: "journal"; phase: DestinationPhase; decision: "pending" | "committed" | "aborted" }
  | { kind: "stage" }
  | { kind: "restoreAndResume" }
  | { kind: "replyStored" }
  | { kind: "drop" }
  | { kind: "ok" }
  | { kind: "refuse"; code: "failed_precondition" | "aborted" | "already_exists"; reason: string; message: string };

export interface DStep {
  state: DestinationState | null;
  effects: DestinationEffect[];
}

function refuse(state: DestinationState | null, code: "failed_precondition" | "aborted" | "already_exists", reason: string, message: string): DStep {
  return { state, effects: [{ kind: "refuse", code, reason, message }] };
}

/** `state` is null when the destination knows nothing of this migration. */
export function stepDestination(state: DestinationState | null, e: DestinationEvent): DStep {
  const phase = state?.phase ?? null;
  switch (e.kind) {
    case "prepare":
      if (phase === null) return { state: { phase: "prepared" }, effects: [{ kind: "journal", phase: "prepared", decision: "pending" }, { kind: "ok" }] };
      if (phase === "prepared") return { state, effects: [{ kind: "ok" }] }; // replayed Prepare
      return refuse(state, "already_exists", "migration_id_reused", `migration already ${phase}`);
    case "transfer":
      if (phase === "prepared") return { state: { phase: "staged" }, effects: [{ kind: "stage" }, { kind: "journal", phase: "staged", decision: "pending" }, { kind: "ok" }] };
      if (phase === "staged") return { state, effects: [{ kind: "ok" }] };
      if (phase === null) return refuse(state, "failed_precondition", "not_prepared", "Transfer before Prepare");
      return refuse(state, phase === "aborted" ? "aborted" : "already_exists", `migration_${phase}`, `migration already ${phase}`);
    case "commit":
      if (phase === "staged")
        return { state: { phase: "running" }, effects: [{ kind: "journal", phase: "running", decision: "committed" }, { kind: "restoreAndResume" }] };
      if (phase === "running") return { state, effects: [{ kind: "replyStored" }] };
      if (phase === "aborted") return refuse(state, "aborted", "migration_aborted", "Commit after Abort");
      return refuse(state, "failed_precondition", phase === null ? "unknown_migration" : "not_staged", `Commit in phase ${phase ?? "none"}`);
    case "abort":
      if (phase === "prepared" || phase === "staged")
        return { state: { phase: "aborted" }, effects: [{ kind: "journal", phase: "aborted", decision: "aborted" }, { kind: "drop" }, { kind: "ok" }] };
      if (phase === "aborted" || phase === null) return { state, effects: [{ kind: "ok" }] };
      return refuse(state, "failed_precondition", "already_running", "Abort after Commit: the destination owns the VM");
    case "resolved":
      if (phase !== "staged" && phase !== "prepared") return { state, effects: [] };
      if (e.decision === "committed" && phase === "staged")
        return { state: { phase: "running" }, effects: [{ kind: "journal", phase: "running", decision: "committed" }, { kind: "restoreAndResume" }] };
      if (e.decision === "aborted" || e.decision === "unknown")
        return { state: { phase: "aborted" }, effects: [{ kind: "journal", phase: "aborted", decision: "aborted" }, { kind: "drop" }] };
      return { state, effects: [] };
  }
}
