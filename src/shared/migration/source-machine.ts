// The source side of a migration as a pure state machine (STYLE 6): step(state, event) returns the
// next state and the effects the driver must carry out, in order. The state is the migration: its
// request, what the probes and the Handover link measured, the snapshot, the Transfer's timings,
// the decision and the outcome. Effects carry everything the driver needs (the record to journal,
// the message to send); the driver (src/source/migrate-out.ts) performs them and feeds each
// result back as an event. No I/O here; an event a phase does not take is answered with a typed
// `NotAllowed` value, never thrown.
//
//   idle ──start──▶ preparing ──prepareOk──▶ probing ──probeOk×N──▶ transferring
//                      │                        │ probeFailed           │ paused, captured
//                 prepareFailed                 ▼                       │ (pause, capture, send)
//                      ▼                     aborted                    ├─transferOk──▶ committing
//                   refused                                             │   (journal COMMIT first,
//                                                                       │    send Commit, hand off)
//                                                                       └─transferFailed──▶ aborted
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
//
// On-receipt switchover (req.switchover): the destination runs the VM as soon as the Transfer
// arrives, so the send itself is the point of no return and the source cannot decide alone:
//   the record before the pause says "handing-off" (not "transferring"): from it, a restart asks the
//   destination instead of aborting — safe whether or not the Transfer left, and no write in the blackout
//   transferring ──captured──▶ handing-off (send the Transfer)
//   handing-off ──transferOk(report)──▶ committed (journal COMMITTED, hand the VM off; it runs there)
//   handing-off ──transferOk(no report)──▶ committing (a destination that staged it: two-phase from here)
//   handing-off ──transferFailed──▶ resolving: ask the destination (Resolve with fence), never resume
//   resolving ──resolveOk(committed)──▶ committed      resolving ──resolveOk(aborted|unknown)──▶ aborted
//       (the destination durably refuses that Transfer forever before it answers so: resume is safe)
//   resolving ──resolveOk(pending) | resolveFailed──▶ resolving (backoff) … in doubt past retriesMax,
//       VM still paused; the node's recovery loop keeps asking

import { TscmigError } from "../errors.js";
import { LIMITS } from "../limits.js";
import type { ProbeExchange } from "./blackout.js";
import type { AbortReq, CommitReq, PrepareReq, ResolveDecision, ResolveReq, SourceRef } from "./messages.js";
import type { PhaseTimings, RestoreReport } from "./report.js";

export type { PhaseTimings } from "./report.js";
import type { Snapshot } from "./snapshot.js";

export const SOURCE_PHASES = ["idle", "preparing", "probing", "transferring", "handing-off", "resolving", "committing", "committed", "aborted", "refused"] as const;
export type SourcePhase = (typeof SOURCE_PHASES)[number];
export type Decision = "pending" | "committed" | "aborted";
export type SourceOutcome = "committed" | "aborted" | "refused" | "in-doubt";

/** The source's view of the pause: true time (diagnostics) and vCPU 0's clocks at that instant. */
export interface PauseReading {
  pauseTrueNs: bigint;
  tscAtPause: bigint;
  kvmclockAtPauseNs: bigint;
}

/** The Transfer round trip as the source measured it. */
export interface TransferTiming {
  /** Source raw clock: sent → answered (one-sided's round trip; journaled with the decision). */
  rttNs: bigint;
  /** Source raw clock when the answer arrived (the Commit's `answerToCommitNs` starts here). */
  answerRawNs: bigint;
  /** Shared true clock at send and answer, and the destination's hold: diagnostics only. */
  sendTrueNs: bigint;
  answerTrueNs: bigint;
  holdNs: bigint;
}

export interface SourceState {
  phase: SourcePhase;
  /** The Prepare this migration opens with: ids, the VM's clock facts, policy, estimator, key. */
  req: PrepareReq;
  probesWanted: number;
  probesDone: number;
  retriesMax: number;
  commitAttempts: number;
  /** On-receipt: Resolve attempts after a Transfer whose answer did not come. */
  resolveAttempts: number;
  decision: Decision;
  /** Probe-estimator exchanges, and the source raw clock at the last probe's answer. */
  exchanges: ProbeExchange[];
  lastProbeRawNs: bigint;
  /** Raw clock as each answer on the Handover link arrived before the pause (one-sided's anchors)… */
  anchorsRawNs: bigint[];
  /** …and as the request of each of those answers left (same order): one-sided's lower limits. */
  requestsRawNs: bigint[];
  pause: PauseReading | null;
  snapshot: Snapshot | null;
  transfer: TransferTiming | null;
  timings: PhaseTimings;
  /** Transfer and every Commit rode the Handover link. */
  handover: boolean;
  restore: RestoreReport | null;
  outcome: SourceOutcome | null;
  error: TscmigError | null;
}

/** A call's answer arrived on the Handover link (true) or on a unary call (false). */
interface Carried {
  viaLink: boolean;
}

export type SourceEvent =
  | { kind: "start"; probes: number; retriesMax: number }
  /**
   * Prepare answered; `link` is the Handover link's opening exchange when one opened; `exchange` the
   * Prepare's own (on receipt it is one-sided's first anchor, on either path).
   */
  | { kind: "prepareOk"; link: { requestRawNs: bigint; answerRawNs: bigint } | null; exchange?: { requestRawNs: bigint; answerRawNs: bigint } }
  | { kind: "prepareFailed"; error: TscmigError }
  | ({ kind: "probeOk"; exchange: ProbeExchange; sentRawNs: bigint; answerRawNs: bigint } & Carried)
  | { kind: "probeFailed"; error: TscmigError }
  | ({ kind: "paused" } & PauseReading)
  | { kind: "captured"; snapshot: Snapshot; captureNs: bigint }
  | { kind: "captureFailed"; error: TscmigError; captureNs: bigint }
  /** `report`: on-receipt, the destination adopted the VM and restored it as this says. */
  | ({ kind: "transferOk"; timing: TransferTiming; encodeNs: bigint; report?: RestoreReport } & Carried)
  | ({ kind: "transferFailed"; error: TscmigError } & Carried)
  | ({ kind: "commitOk"; report: RestoreReport; commitNs: bigint } & Carried)
  | ({ kind: "commitFailed"; error: TscmigError } & Carried)
  /** The destination answered the Commit with a durable refusal: it aborted (or never knew) the migration. */
  | ({ kind: "commitRefused"; error: TscmigError } & Carried)
  /** On-receipt: the destination's answer to Resolve (it fenced the Transfer unless committed). */
  | { kind: "resolveOk"; decision: ResolveDecision }
  | { kind: "resolveFailed"; error: TscmigError }
  | { kind: "journalFailed"; error: TscmigError; mayHaveLanded: boolean }
  | { kind: "recover"; decision: Decision };

export const SOURCE_EVENT_KINDS = [
  "start",
  "prepareOk",
  "prepareFailed",
  "probeOk",
  "probeFailed",
  "paused",
  "captured",
  "captureFailed",
  "transferOk",
  "transferFailed",
  "commitOk",
  "commitFailed",
  "commitRefused",
  "resolveOk",
  "resolveFailed",
  "journalFailed",
  "recover",
] as const satisfies readonly SourceEvent["kind"][];

/** The migration's journal record as the machine decides it; the driver adds the write's time stamp. */
export interface SourceRecord {
  decision: Decision;
  phase: string;
  transferRttNs: bigint;
}

/** A message to the destination; instants (`…RawNs`) become durations as the message leaves. */
export type SourceMessage =
  | { kind: "prepare"; req: PrepareReq }
  | { kind: "probe"; migrationId: string; ref: SourceRef }
  | { kind: "transfer"; snapshot: Snapshot; anchorsRawNs: bigint[]; requestsRawNs: bigint[]; ref: SourceRef }
  /** `handOff`: the VM is handed off once this Commit is on its way (the decision is durable). */
  | { kind: "commit"; req: Omit<CommitReq, "answerToCommitNs">; answerRawNs: bigint; attempt: number; delayNs: bigint; handOff: boolean }
  /** Best effort, not awaited: a destination that misses it asks Resolve. */
  | { kind: "abort"; req: AbortReq }
  /** On-receipt: ask the destination what became of the Transfer, fencing it unless it arrived. */
  | { kind: "resolve"; req: ResolveReq; attempt: number; delayNs: bigint };

export type SourceEffect =
  | { kind: "journal"; record: SourceRecord }
  | { kind: "send"; message: SourceMessage }
  /** Pause the VM (the node journals its paused role first; a failed write leaves it running). */
  | { kind: "pauseVm" }
  | { kind: "capture"; exchanges: ProbeExchange[]; lastProbeRawNs: bigint }
  | { kind: "resumeVm" }
  /** The handed-off VM comes back: it runs here again, at the generation it was handed off with. */
  | { kind: "reclaimVm" }
  /** On-receipt: the destination runs the VM (it said so): hand it off here, nothing left to deliver. */
  | { kind: "handOffVm" }
  | { kind: "finish"; outcome: SourceOutcome; error: TscmigError | null };

export interface Step<S, E> {
  state: S;
  effects: E[];
}

/** The answer to an event the phase does not take (Firecracker's `NotAllowed`): nothing changes. */
export interface NotAllowed<P, K> {
  kind: "not_allowed";
  phase: P;
  event: K;
}

export type SourceStep = Step<SourceState, SourceEffect> | NotAllowed<SourcePhase, SourceEvent["kind"]>;

export function isNotAllowed<S, E, P, K>(r: Step<S, E> | NotAllowed<P, K>): r is NotAllowed<P, K> {
  return (r as NotAllowed<P, K>).kind === "not_allowed";
}

export function initialSourceState(req: PrepareReq): SourceState {
  return {
    phase: "idle",
    req,
    probesWanted: 0,
    probesDone: 0,
    retriesMax: 0,
    commitAttempts: 0,
    resolveAttempts: 0,
    decision: "pending",
    exchanges: [],
    lastProbeRawNs: 0n,
    anchorsRawNs: [],
    requestsRawNs: [],
    pause: null,
    snapshot: null,
    transfer: null,
    timings: { captureNs: 0n, encodeNs: 0n, transferNs: 0n, decodeNs: 0n, restoreNs: 0n, commitNs: 0n },
    handover: false,
    restore: null,
    outcome: null,
    error: null,
  };
}

/** Backoff between Commit attempts: 10 ms doubling, at most 2 s. */
export function commitBackoffNs(attempt: number): bigint {
  const ms = Math.min(2000, 10 * 2 ** Math.min(attempt, 8));
  return BigInt(ms) * 1_000_000n;
}

/**
 * A Commit refusal the destination made durable before answering: it aborted the migration (its
 * journal says so, for good) or fenced an id it never saw. Either way it will never run the VM.
 */
export function isDurableRefusal(e: TscmigError): boolean {
  return e.code === "aborted" && (e.reason === "migration_aborted" || e.reason === "migration_unknown");
}

// ---- effect builders ----------------------------------------------------------------------------

function ref(s: SourceState): SourceRef {
  return { sourceName: s.req.sourceName, sourceKey: s.req.sourceKey };
}

function journal(s: SourceState, decision: Decision, phase: string): SourceEffect {
  return { kind: "journal", record: { decision, phase, transferRttNs: s.transfer?.rttNs ?? 0n } };
}

function sendAbort(s: SourceState, reason: string): SourceEffect {
  const r = s.req;
  return { kind: "send", message: { kind: "abort", req: { migrationId: r.migrationId, vmId: r.vmId, generation: r.generation, reason: reason.slice(0, 512), ...ref(s) } } };
}

function sendCommit(s: SourceState, attempt: number, delayNs: bigint, handOff: boolean): SourceEffect {
  const r = s.req;
  const req = { migrationId: r.migrationId, vmId: r.vmId, generation: r.generation, transferRttNs: s.transfer?.rttNs ?? 0n, ...ref(s) };
  return { kind: "send", message: { kind: "commit", req, answerRawNs: s.transfer?.answerRawNs ?? 0n, attempt, delayNs, handOff } };
}

function sendResolve(s: SourceState, attempt: number, delayNs: bigint): SourceEffect {
  const r = s.req;
  const req: ResolveReq = { migrationId: r.migrationId, vmId: r.vmId, sourceKey: r.sourceKey, fence: { sourceName: r.sourceName, generation: r.generation } };
  return { kind: "send", message: { kind: "resolve", req, attempt, delayNs } };
}

function sendProbe(s: SourceState): SourceEffect {
  return { kind: "send", message: { kind: "probe", migrationId: s.req.migrationId, ref: ref(s) } };
}

function finish(s: SourceState, outcome: SourceOutcome, error: TscmigError | null, phase: SourcePhase = s.phase): Step<SourceState, SourceEffect> {
  return { state: { ...s, phase, outcome, error }, effects: [{ kind: "finish", outcome, error }] };
}

// ---- transitions --------------------------------------------------------------------------------

function pauseAndSend(s: SourceState): Step<SourceState, SourceEffect> {
  // On receipt the record says "handing off" before the pause: a restart then asks the destination
  // (which fences a Transfer it did not get) instead of aborting on its own.
  const phase = s.req.switchover === "on-receipt" ? "handing-off" : "transferring";
  return { state: { ...s, phase: "transferring" }, effects: [journal(s, "pending", phase), { kind: "pauseVm" }] };
}

function abortAfterPause(s: SourceState, error: TscmigError): Step<SourceState, SourceEffect> {
  const next: SourceState = { ...s, phase: "aborted", decision: "aborted", outcome: "aborted", error };
  return { state: next, effects: [journal(s, "aborted", "aborted"), { kind: "resumeVm" }, sendAbort(s, error.message), { kind: "finish", outcome: "aborted", error }] };
}

/** Aborted before the pause: nothing to roll back, the destination is told. */
function abortUnpaused(s: SourceState, error: TscmigError, phase: "aborted" | "refused"): Step<SourceState, SourceEffect> {
  const outcome = phase === "refused" ? "refused" : "aborted";
  const next: SourceState = { ...s, phase, decision: "aborted", outcome, error };
  return { state: next, effects: [journal(s, "aborted", phase), sendAbort(s, error.message), { kind: "finish", outcome, error }] };
}

function linked(s: SourceState, link: { requestRawNs: bigint; answerRawNs: bigint } | null): SourceState {
  if (!link) return s;
  return { ...s, anchorsRawNs: [...s.anchorsRawNs, link.answerRawNs], requestsRawNs: [...s.requestsRawNs, link.requestRawNs] };
}

function probed(s: SourceState, e: Extract<SourceEvent, { kind: "probeOk" }>): SourceState {
  const anchor = e.viaLink && s.anchorsRawNs.length < LIMITS.anchorsMax;
  return {
    ...s,
    probesDone: s.probesDone + 1,
    lastProbeRawNs: e.answerRawNs,
    anchorsRawNs: anchor ? [...s.anchorsRawNs, e.answerRawNs] : s.anchorsRawNs,
    requestsRawNs: anchor ? [...s.requestsRawNs, e.sentRawNs] : s.requestsRawNs,
    // One-sided's anchor probes only time the link; their realtime stamps are not used.
    exchanges: s.req.estimator === "probe" ? [...s.exchanges, e.exchange] : s.exchanges,
  };
}

function transferred(s: SourceState, e: Extract<SourceEvent, { kind: "transferOk" }>): Step<SourceState, SourceEffect> {
  const timings = { ...s.timings, transferNs: e.timing.rttNs, encodeNs: e.encodeNs };
  const next: SourceState = { ...s, phase: "committing", decision: "committed", commitAttempts: 1, transfer: e.timing, timings, handover: e.viaLink };
  return { state: next, effects: [journal(next, "committed", "committing"), sendCommit(next, 1, 0n, true)] };
}

/** On-receipt: "handing off" was durable before the pause; from the send on only the destination's word decides. */
function handOffAndSend(s: SourceState, snapshot: Snapshot, captureNs: bigint): Step<SourceState, SourceEffect> {
  const next: SourceState = { ...s, phase: "handing-off", snapshot, timings: { ...s.timings, captureNs } };
  const message: SourceMessage = { kind: "transfer", snapshot, anchorsRawNs: s.anchorsRawNs, requestsRawNs: s.requestsRawNs, ref: ref(s) };
  return { state: next, effects: [{ kind: "send", message }] };
}

/** The VM runs on the destination (its answer or its Resolve says so): the source only records it. */
function adoptedThere(s: SourceState, restore: RestoreReport | null): Step<SourceState, SourceEffect> {
  const next: SourceState = { ...s, phase: "committed", decision: "committed", restore, outcome: "committed", error: null };
  return { state: next, effects: [journal(next, "committed", "committed"), { kind: "handOffVm" }, { kind: "finish", outcome: "committed", error: null }] };
}

function receivedThere(s: SourceState, e: Extract<SourceEvent, { kind: "transferOk" }>): Step<SourceState, SourceEffect> {
  if (!e.report) return transferred(s, e); // staged, not adopted: it waits for a Commit, as under two-phase
  const timings = { ...s.timings, transferNs: e.timing.rttNs, encodeNs: e.encodeNs };
  return adoptedThere({ ...s, transfer: e.timing, timings, handover: e.viaLink }, e.report);
}

function resolveAgain(s: SourceState, error: TscmigError): Step<SourceState, SourceEffect> {
  const attempt = s.resolveAttempts + 1;
  // Still paused, still undecided here: the recovery loop keeps asking. The caller learns it is in doubt.
  if (attempt > s.retriesMax) return finish({ ...s, resolveAttempts: attempt }, "in-doubt", error);
  return { state: { ...s, resolveAttempts: attempt }, effects: [sendResolve(s, attempt, commitBackoffNs(attempt))] };
}

function resolvedThere(s: SourceState, decision: ResolveDecision): Step<SourceState, SourceEffect> {
  if (decision === "committed") return adoptedThere(s, null);
  if (decision === "pending") return resolveAgain(s, new TscmigError("unavailable", "the destination holds the migration undecided", { reason: "resolve_pending" }));
  // Fenced there for good before it answered: the Transfer can never run, so the VM resumes here.
  const why = s.error ? ` (the Transfer failed: ${s.error.message})` : "";
  const error = new TscmigError("aborted", `the destination ${decision === "unknown" ? "never saw" : "did not run"} the Transfer and fenced it for good${why}`, { reason: "transfer_fenced" });
  const next: SourceState = { ...s, phase: "aborted", decision: "aborted", outcome: "aborted", error };
  return { state: next, effects: [journal(s, "aborted", "aborted"), { kind: "resumeVm" }, { kind: "finish", outcome: "aborted", error }] };
}

function commitFailed(s: SourceState, error: TscmigError): Step<SourceState, SourceEffect> {
  const attempt = s.commitAttempts + 1;
  // Decision stands; the recovery loop keeps delivering it. The caller learns it is in doubt.
  if (attempt > s.retriesMax) return finish(s, "in-doubt", error);
  return { state: { ...s, commitAttempts: attempt }, effects: [sendCommit(s, attempt, commitBackoffNs(attempt), false)] };
}

function reclaimed(s: SourceState, error: TscmigError): Step<SourceState, SourceEffect> {
  const next: SourceState = { ...s, phase: "aborted", decision: "aborted", outcome: "aborted", error };
  return { state: next, effects: [journal(s, "aborted", "reclaimed"), { kind: "reclaimVm" }, { kind: "finish", outcome: "aborted", error }] };
}

function recovered(s: SourceState, decision: Decision): Step<SourceState, SourceEffect> {
  if (decision === "committed") {
    const next: SourceState = { ...s, phase: "committing", decision, commitAttempts: 1, retriesMax: Number.MAX_SAFE_INTEGER };
    return { state: next, effects: [sendCommit(next, 1, 0n, false)] };
  }
  const next: SourceState = { ...s, phase: "aborted", decision: "aborted" };
  if (decision === "aborted") return { state: next, effects: [{ kind: "resumeVm" }, sendAbort(s, "source recovered an aborted migration")] };
  // Undecided when the source died: decide abort now (safe, Commit was never sent).
  return { state: next, effects: [journal(s, "aborted", "aborted"), { kind: "resumeVm" }, sendAbort(s, "source restarted before deciding")] };
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
      return finish(s, "refused", error, "refused");
    case "transferring":
      // The pending record before the pause, or the paused role: the VM never paused.
      return s.pause ? null : abortUnpaused(s, error, "aborted");
    case "committing":
      if (s.commitAttempts !== 1 || s.outcome !== null) return null;
      return mayHaveLanded ? finish(s, "in-doubt", error) : abortAfterPause(s, error);
    default:
      return null;
  }
}

type Handler = (s: SourceState, e: SourceEvent) => Step<SourceState, SourceEffect> | null;

/** Per event: its transition, or null where the phase does not take it. */
const HANDLERS: { [K in SourceEvent["kind"]]: (s: SourceState, e: Extract<SourceEvent, { kind: K }>) => Step<SourceState, SourceEffect> | null } = {
  start: (s, e) => {
    if (s.phase !== "idle") return null;
    const next: SourceState = { ...s, phase: "preparing", probesWanted: e.probes, retriesMax: e.retriesMax };
    return { state: next, effects: [journal(s, "pending", "preparing"), { kind: "send", message: { kind: "prepare", req: s.req } }] };
  },
  prepareOk: (s, e) => {
    if (s.phase !== "preparing") return null;
    // On receipt the destination counts its Prepare answer as the first anchor (migrate-in.ts): so does the source.
    const next = linked(s.req.switchover === "on-receipt" ? linked(s, e.exchange ?? null) : s, e.link);
    return next.probesWanted > 0 ? { state: { ...next, phase: "probing" }, effects: [sendProbe(next)] } : pauseAndSend(next);
  },
  prepareFailed: (s, e) => (s.phase === "preparing" ? abortUnpaused(s, e.error, "refused") : null),
  probeOk: (s, e) => {
    if (s.phase !== "probing") return null;
    const next = probed(s, e);
    return next.probesDone < next.probesWanted ? { state: next, effects: [sendProbe(next)] } : pauseAndSend(next);
  },
  probeFailed: (s, e) => (s.phase === "probing" ? abortUnpaused(s, e.error, "aborted") : null),
  paused: (s, e) => {
    if (s.phase !== "transferring" || s.pause) return null;
    const next: SourceState = { ...s, pause: { pauseTrueNs: e.pauseTrueNs, tscAtPause: e.tscAtPause, kvmclockAtPauseNs: e.kvmclockAtPauseNs } };
    return { state: next, effects: [{ kind: "capture", exchanges: s.exchanges, lastProbeRawNs: s.lastProbeRawNs }] };
  },
  captured: (s, e) => {
    if (s.phase !== "transferring" || !s.pause || s.snapshot) return null;
    if (s.req.switchover === "on-receipt") return handOffAndSend(s, e.snapshot, e.captureNs);
    const next: SourceState = { ...s, snapshot: e.snapshot, timings: { ...s.timings, captureNs: e.captureNs } };
    const message: SourceMessage = { kind: "transfer", snapshot: e.snapshot, anchorsRawNs: s.anchorsRawNs, requestsRawNs: s.requestsRawNs, ref: ref(s) };
    return { state: next, effects: [{ kind: "send", message }] };
  },
  // E.g. every probe exchange unusable (a clock stepped mid-probe): the VM is paused, so the
  // failure takes the abort path (resume) rather than leave it paused.
  captureFailed: (s, e) => (s.phase === "transferring" && s.pause && !s.snapshot ? abortAfterPause({ ...s, timings: { ...s.timings, captureNs: e.captureNs } }, e.error) : null),
  transferOk: (s, e) => {
    if (s.phase === "handing-off") return receivedThere(s, e);
    return s.phase === "transferring" && s.snapshot ? transferred(s, e) : null;
  },
  transferFailed: (s, e) => {
    // On-receipt: the destination may run it already; only its answer to Resolve says it will not.
    if (s.phase === "handing-off") return { state: { ...s, phase: "resolving", resolveAttempts: 1, handover: e.viaLink, error: e.error }, effects: [sendResolve(s, 1, 0n)] };
    return s.phase === "transferring" && s.snapshot ? abortAfterPause({ ...s, handover: e.viaLink }, e.error) : null;
  },
  commitOk: (s, e) => {
    if (s.phase !== "committing") return null;
    const next: SourceState = { ...s, phase: "committed", restore: e.report, handover: s.handover && e.viaLink, timings: { ...s.timings, commitNs: e.commitNs } };
    return { state: { ...next, outcome: "committed" }, effects: [journal(next, "committed", "committed"), { kind: "finish", outcome: "committed", error: null }] };
  },
  commitFailed: (s, e) => (s.phase === "committing" ? commitFailed({ ...s, handover: s.handover && e.viaLink }, e.error) : null),
  commitRefused: (s, e) => (s.phase === "committing" ? reclaimed({ ...s, handover: s.handover && e.viaLink }, e.error) : null),
  resolveOk: (s, e) => (s.phase === "resolving" && s.outcome === null ? resolvedThere(s, e.decision) : null),
  resolveFailed: (s, e) => (s.phase === "resolving" && s.outcome === null ? resolveAgain(s, e.error) : null),
  journalFailed: (s, e) => journalFailed(s, e.error, e.mayHaveLanded),
  recover: (s, e) => (s.phase === "idle" ? recovered(s, e.decision) : null),
};

export function stepSource(s: SourceState, e: SourceEvent): SourceStep {
  const step = (HANDLERS[e.kind] as Handler)(s, e);
  return step ?? { kind: "not_allowed", phase: s.phase, event: e.kind };
}
