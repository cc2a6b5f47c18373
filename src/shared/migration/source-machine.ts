// The source side of a migration as a pure state machine (STYLE 6): step(state, event) returns the
// next state and the effects the driver must carry out, in order. No I/O here; illegal events are
// answered with a `reject` effect, never thrown.
//
//   idle ──start──▶ preparing ──prepareOk──▶ probing ──probeOk×N──▶ transferring
//                      │                        │ probeFailed            │  (pause, capture, send)
//                 prepareFailed                 ▼                        ├─transferOk──▶ committing
//                      ▼                     aborted                     │   (journal COMMIT first,
//                   refused                                              │    hand off, send Commit)
//                                                                        └─transferFailed──▶ aborted
//   committing ──commitOk──▶ committed          (journal ABORT first, resume: TSC as if never paused)
//   committing ──commitFailed──▶ committing (retry with backoff; the decision is already durable)
//   committing ──commitRefused──▶ aborted    (the destination durably aborted or fenced the migration:
//                                             it will never run the VM, so the source takes it back)
//   recover(journal) ──▶ committing (decision was COMMIT) | aborted (anything undecided)
//   journalFailed: a write the next step stands on did not become durable (a full disk):
//     preparing ──▶ refused (nothing sent yet)      transferring ──▶ aborted (the VM never paused)
//     committing ──▶ aborted and resumed, as after a failed Transfer (the decision is not on disk)
//                 └─ in doubt, still paused, when it may be on disk (an I/O error at commit)
//
// The decision point is the journal write before Commit is sent: until then the destination holds
// the snapshot but may not run it, so aborting is always safe; after it, only commit is possible.

import type { TscmigError } from "../errors.js";

export type SourcePhase = "idle" | "preparing" | "probing" | "transferring" | "committing" | "committed" | "aborted" | "refused" | "reclaimed";
export type Decision = "pending" | "committed" | "aborted";

export interface SourceState {
  phase: SourcePhase;
  probesWanted: number;
  probesDone: number;
  commitAttempts: number;
  retriesMax: number;
}

export type SourceEvent =
  | { kind: "start"; probes: number; retriesMax: number }
  | { kind: "prepareOk" }
  | { kind: "prepareFailed"; error: TscmigError }
  | { kind: "probeOk" }
  | { kind: "probeFailed"; error: TscmigError }
  | { kind: "transferOk" }
  | { kind: "transferFailed"; error: TscmigError }
  | { kind: "commitOk" }
  | { kind: "commitFailed"; error: TscmigError }
  /** The destination answered the Commit with a durable refusal: it aborted (or never knew) the migration. */
  | { kind: "commitRefused"; error: TscmigError }
  | { kind: "journalFailed"; error: TscmigError; mayHaveLanded: boolean }
  | { kind: "recover"; decision: Decision };

export type SourceEffect =
  | { kind: "journal"; decision: Decision; phase: SourcePhase }
  | { kind: "sendPrepare" }
  | { kind: "sendProbe" }
  | { kind: "pause" }
  | { kind: "capture" }
  | { kind: "sendTransfer" }
  | { kind: "handOff" }
  | { kind: "sendCommit"; attempt: number }
  | { kind: "retryCommit"; attempt: number; delayNs: bigint }
  | { kind: "resume" }
  /** The handed-off VM comes back: it runs here again, at the generation it was handed off with. */
  | { kind: "reclaim" }
  | { kind: "sendAbort"; reason: string }
  | { kind: "finish"; outcome: "committed" | "aborted" | "refused" | "in-doubt"; error?: TscmigError }
  | { kind: "reject"; event: SourceEvent["kind"]; phase: SourcePhase };

export interface Step<S, E> {
  state: S;
  effects: E[];
}

export function initialSourceState(): SourceState {
  return { phase: "idle", probesWanted: 0, probesDone: 0, commitAttempts: 0, retriesMax: 0 };
}

/** Backoff between Commit attempts: 10 ms doubling, at most 2 s. */
export function commitBackoffNs(attempt: number): bigint {
  const ms = Math.min(2000, 10 * 2 ** Math.min(attempt, 8));
  return BigInt(ms) * 1_000_000n;
}

function pauseAndSend(s: SourceState): Step<SourceState, SourceEffect> {
  return {
    state: { ...s, phase: "transferring" },
    effects: [{ kind: "journal", decision: "pending", phase: "transferring" }, { kind: "pause" }, { kind: "capture" }, { kind: "sendTransfer" }],
  };
}

function abortAfterPause(s: SourceState, error: TscmigError): Step<SourceState, SourceEffect> {
  return {
    state: { ...s, phase: "aborted" },
    effects: [
      { kind: "journal", decision: "aborted", phase: "aborted" },
      { kind: "resume" },
      { kind: "sendAbort", reason: error.message },
      { kind: "finish", outcome: "aborted", error },
    ],
  };
}

/**
 * A Commit refusal the destination made durable before answering: it aborted the migration (its
 * journal says so, for good) or fenced an id it never saw. Either way it will never run the VM.
 */
export function isDurableRefusal(e: TscmigError): boolean {
  return e.code === "aborted" && (e.reason === "migration_aborted" || e.reason === "migration_unknown");
}

export function stepSource(s: SourceState, e: SourceEvent): Step<SourceState, SourceEffect> {
  const reject = (): Step<SourceState, SourceEffect> => ({ state: s, effects: [{ kind: "reject", event: e.kind, phase: s.phase }] });
  switch (e.kind) {
    case "start":
      if (s.phase !== "idle") return reject();
      return {
        state: { ...s, phase: "preparing", probesWanted: e.probes, retriesMax: e.retriesMax },
        effects: [{ kind: "journal", decision: "pending", phase: "preparing" }, { kind: "sendPrepare" }],
      };
    case "prepareOk":
      if (s.phase !== "preparing") return reject();
      if (s.probesWanted > 0) return { state: { ...s, phase: "probing" }, effects: [{ kind: "sendProbe" }] };
      return pauseAndSend(s);
    case "prepareFailed":
      if (s.phase !== "preparing") return reject();
      return {
        state: { ...s, phase: "refused" },
        effects: [{ kind: "journal", decision: "aborted", phase: "refused" }, { kind: "sendAbort", reason: e.error.message }, { kind: "finish", outcome: "refused", error: e.error }],
      };
    case "probeOk": {
      if (s.phase !== "probing") return reject();
      const done = s.probesDone + 1;
      if (done < s.probesWanted) return { state: { ...s, probesDone: done }, effects: [{ kind: "sendProbe" }] };
      return pauseAndSend({ ...s, probesDone: done });
    }
    case "probeFailed":
      if (s.phase !== "probing") return reject();
      // The VM never paused: nothing to roll back.
      return {
        state: { ...s, phase: "aborted" },
        effects: [{ kind: "journal", decision: "aborted", phase: "aborted" }, { kind: "sendAbort", reason: e.error.message }, { kind: "finish", outcome: "aborted", error: e.error }],
      };
    case "transferOk":
      if (s.phase !== "transferring") return reject();
      return {
        state: { ...s, phase: "committing", commitAttempts: 1 },
        effects: [{ kind: "journal", decision: "committed", phase: "committing" }, { kind: "handOff" }, { kind: "sendCommit", attempt: 1 }],
      };
    case "transferFailed":
      if (s.phase !== "transferring") return reject();
      return abortAfterPause(s, e.error);
    case "commitOk":
      if (s.phase !== "committing") return reject();
      return { state: { ...s, phase: "committed" }, effects: [{ kind: "journal", decision: "committed", phase: "committed" }, { kind: "finish", outcome: "committed" }] };
    case "commitFailed": {
      if (s.phase !== "committing") return reject();
      const attempt = s.commitAttempts + 1;
      if (attempt > s.retriesMax)
        // Decision stands; the recovery loop keeps delivering it. The caller learns it is in doubt.
        return { state: s, effects: [{ kind: "finish", outcome: "in-doubt", error: e.error }] };
      return { state: { ...s, commitAttempts: attempt }, effects: [{ kind: "retryCommit", attempt, delayNs: commitBackoffNs(attempt) }] };
    }
    case "commitRefused":
      if (s.phase !== "committing") return reject();
      return {
        state: { ...s, phase: "aborted" },
        effects: [{ kind: "journal", decision: "aborted", phase: "reclaimed" }, { kind: "reclaim" }, { kind: "finish", outcome: "aborted", error: e.error }],
      };
    case "journalFailed":
      return journalFailed(s, e.error, e.mayHaveLanded) ?? reject();
    case "recover":
      if (s.phase !== "idle") return reject();
      if (e.decision === "committed")
        return { state: { ...s, phase: "committing", commitAttempts: 1, retriesMax: Number.MAX_SAFE_INTEGER }, effects: [{ kind: "sendCommit", attempt: 1 }] };
      if (e.decision === "aborted") return { state: { ...s, phase: "aborted" }, effects: [{ kind: "resume" }, { kind: "sendAbort", reason: "source recovered an aborted migration" }] };
      // Undecided when the source died: decide abort now (safe, Commit was never sent).
      return {
        state: { ...s, phase: "aborted" },
        effects: [{ kind: "journal", decision: "aborted", phase: "aborted" }, { kind: "resume" }, { kind: "sendAbort", reason: "source restarted before deciding" }],
      };
  }
}

/**
 * A journal write the next effects stand on failed (the driver stops the step there): the pending
 * record before Prepare or before the pause, the paused VM's role, or the decision. Only a decision
 * that may have landed (its outcome unknown) keeps the VM paused: resuming it could run it twice if
 * the disk says committed, handing it off could lose it if the disk says pending. A restart reads
 * the journal and settles it.
 */
function journalFailed(s: SourceState, error: TscmigError, mayHaveLanded: boolean): Step<SourceState, SourceEffect> | null {
  switch (s.phase) {
    case "preparing":
      return { state: { ...s, phase: "refused" }, effects: [{ kind: "finish", outcome: "refused", error }] };
    case "transferring":
      return {
        state: { ...s, phase: "aborted" },
        effects: [{ kind: "journal", decision: "aborted", phase: "aborted" }, { kind: "sendAbort", reason: error.message }, { kind: "finish", outcome: "aborted", error }],
      };
    case "committing":
      if (s.commitAttempts !== 1) return null;
      return mayHaveLanded ? { state: s, effects: [{ kind: "finish", outcome: "in-doubt", error }] } : abortAfterPause(s, error);
    default:
      return null;
  }
}
