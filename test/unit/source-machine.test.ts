// Goal: the source machine answers every event in every phase deliberately: the next state (phase,
// data) and the effects in order, or a typed NotAllowed that changes nothing — as Firecracker tests
// its vCPU state machine. A phase or event added to the machine fails this test until the table
// below classifies it.
// Method: fixtures reached by walking the machine from idle (so each is a state the driver can
// really hold), one sample of every event kind, and the full cross product checked against a
// table keyed by fixture and event kind; a few data checks follow the table.
import { describe, expect, it } from "vitest";
import { TscmigError } from "../../src/shared/errors.js";
import { LIMITS } from "../../src/shared/limits.js";
import type { PrepareReq, RestoreReport } from "../../src/shared/migration/messages.js";
import type { Snapshot } from "../../src/shared/migration/snapshot.js";
import {
  commitBackoffNs,
  initialSourceState,
  isNotAllowed,
  SOURCE_EVENT_KINDS,
  SOURCE_PHASES,
  type SourceEffect,
  type SourceEvent,
  type SourcePhase,
  type SourceState,
  type SourceStep,
  stepSource,
} from "../../src/shared/migration/source-machine.js";

const REQ: PrepareReq = {
  migrationId: "m1",
  vmId: "vm1",
  generation: 3n,
  vcpuCount: 2,
  guestTscKhz: 2_000_000n,
  sourceFracBits: 48,
  policy: "advance",
  estimator: "probe",
  doorbell: true,
  advanceCapNs: 0n,
  sourceName: "a",
  sourceGrpc: "a:1",
  sourceKey: "ab".repeat(16),
};
const ERR = new TscmigError("unavailable", "peer gone");
const REFUSED = new TscmigError("aborted", "aborted there", { reason: "migration_aborted" });
const SNAPSHOT = { migrationId: "m1", vmId: "vm1", generation: 3n } as unknown as Snapshot;
const REPORT = { resumedTrueNs: 9n } as unknown as RestoreReport;
const TIMING = { rttNs: 500n, answerRawNs: 1_000n, sendTrueNs: 10n, answerTrueNs: 20n, holdNs: 5n };

/** One sample of every event kind; typed so a new kind is a compile error until it has one. */
const SAMPLES: { [K in SourceEvent["kind"]]: Extract<SourceEvent, { kind: K }> } = {
  start: { kind: "start", probes: 2, retriesMax: 2 },
  prepareOk: { kind: "prepareOk", link: { requestRawNs: 1n, answerRawNs: 2n } },
  prepareFailed: { kind: "prepareFailed", error: ERR },
  probeOk: { kind: "probeOk", exchange: { t1: 1n, t2: 2n, t3: 3n, t4: 4n }, sentRawNs: 3n, answerRawNs: 4n, viaLink: true },
  probeFailed: { kind: "probeFailed", error: ERR },
  paused: { kind: "paused", pauseTrueNs: 100n, tscAtPause: 200n, kvmclockAtPauseNs: 300n },
  captured: { kind: "captured", snapshot: SNAPSHOT, captureNs: 7n },
  captureFailed: { kind: "captureFailed", error: ERR, captureNs: 7n },
  transferOk: { kind: "transferOk", timing: TIMING, encodeNs: 8n, viaLink: true },
  transferFailed: { kind: "transferFailed", error: ERR, viaLink: true },
  commitOk: { kind: "commitOk", report: REPORT, commitNs: 9n, viaLink: true },
  commitFailed: { kind: "commitFailed", error: ERR, viaLink: true },
  commitRefused: { kind: "commitRefused", error: REFUSED, viaLink: true },
  resolveOk: { kind: "resolveOk", decision: "unknown" },
  resolveFailed: { kind: "resolveFailed", error: ERR },
  journalFailed: { kind: "journalFailed", error: ERR, mayHaveLanded: false },
  recover: { kind: "recover", decision: "committed" },
};

function walk(s: SourceState, ...events: SourceEvent["kind"][]): SourceState {
  for (const k of events) {
    const r = stepSource(s, SAMPLES[k]);
    if (isNotAllowed(r)) throw new Error(`fixture walk: ${k} not allowed in ${r.phase}`);
    s = r.state;
  }
  return s;
}

const idle = initialSourceState(REQ);
const preparing = walk(idle, "start");
const probing = walk(preparing, "prepareOk");
const pausing = walk(probing, "probeOk", "probeOk");
const paused = walk(pausing, "paused");
const captured = walk(paused, "captured");
const committing = walk(captured, "transferOk");
const retrying = walk(committing, "commitFailed");

// On-receipt switchover: the same walk up to the capture, then "handing off" (one retry allowed).
const rIdle = initialSourceState({ ...REQ, switchover: "on-receipt" });
const rCaptured = walk(rIdle, "start", "prepareOk", "probeOk", "probeOk", "paused");
const handingOff = walk(rCaptured, "captured");
const resolving = walk(handingOff, "transferFailed");
const resolvingAgain = walk(resolving, "resolveFailed");
const ADOPTED: SourceEvent = { ...SAMPLES.transferOk, report: REPORT };
function after(s: SourceState, e: SourceEvent): SourceState {
  const r = stepSource(s, e);
  if (isNotAllowed(r)) throw new Error(`fixture walk: ${e.kind} not allowed in ${r.phase}`);
  return r.state;
}

/** Each fixture: a state the driver can hold, and the phase it is in. */
const FIXTURES: Record<string, SourceState> = {
  idle,
  preparing,
  probing,
  "transferring (before the pause)": pausing,
  "transferring (paused)": paused,
  "transferring (captured)": captured,
  "committing (first attempt)": committing,
  "committing (retrying)": retrying,
  committed: walk(committing, "commitOk"),
  "aborted (after the pause)": walk(captured, "transferFailed"),
  "aborted (reclaimed)": walk(committing, "commitRefused"),
  refused: walk(preparing, "prepareFailed"),
  "handing-off": handingOff,
  "resolving (first attempt)": resolving,
  "resolving (last attempt)": resolvingAgain,
  "committed (on receipt)": after(handingOff, ADOPTED),
  "aborted (fenced there)": walk(resolving, "resolveOk"),
};

/** The answer expected: "no" for NotAllowed, else the next phase and the effects' signatures in order. */
type Expected = "no" | [SourcePhase, ...string[]];
const ABORT_PAUSED: Expected = ["aborted", "journal:aborted:aborted", "resumeVm", "send:abort", "finish:aborted"];
const ABORT_UNPAUSED: Expected = ["aborted", "journal:aborted:aborted", "send:abort", "finish:aborted"];
const NONE: Record<SourceEvent["kind"], Expected> = Object.fromEntries(SOURCE_EVENT_KINDS.map((k) => [k, "no"])) as Record<SourceEvent["kind"], Expected>;

const TABLE: Record<keyof typeof FIXTURES, Record<SourceEvent["kind"], Expected>> = {
  idle: {
    ...NONE,
    start: ["preparing", "journal:pending:preparing", "send:prepare"],
    recover: ["committing", "send:commit"],
  },
  preparing: {
    ...NONE,
    prepareOk: ["probing", "send:probe"],
    prepareFailed: ["refused", "journal:aborted:refused", "send:abort", "finish:refused"],
    journalFailed: ["refused", "finish:refused"],
  },
  probing: {
    ...NONE,
    probeOk: ["probing", "send:probe"],
    probeFailed: ABORT_UNPAUSED,
  },
  "transferring (before the pause)": {
    ...NONE,
    paused: ["transferring", "capture"],
    journalFailed: ABORT_UNPAUSED,
  },
  "transferring (paused)": {
    ...NONE,
    captured: ["transferring", "send:transfer"],
    captureFailed: ABORT_PAUSED,
  },
  "transferring (captured)": {
    ...NONE,
    transferOk: ["committing", "journal:committed:committing", "send:commit"],
    transferFailed: ABORT_PAUSED,
  },
  "committing (first attempt)": {
    ...NONE,
    commitOk: ["committed", "journal:committed:committed", "finish:committed"],
    commitFailed: ["committing", "send:commit"],
    commitRefused: ["aborted", "journal:aborted:reclaimed", "reclaimVm", "finish:aborted"],
    journalFailed: ABORT_PAUSED,
  },
  "committing (retrying)": {
    ...NONE,
    commitOk: ["committed", "journal:committed:committed", "finish:committed"],
    commitFailed: ["committing", "finish:in-doubt"],
    commitRefused: ["aborted", "journal:aborted:reclaimed", "reclaimVm", "finish:aborted"],
  },
  "handing-off": {
    ...NONE,
    // The destination staged it (no report): two-phase from here.
    transferOk: ["committing", "journal:committed:committing", "send:commit"],
    transferFailed: ["resolving", "send:resolve"],
  },
  "resolving (first attempt)": {
    ...NONE,
    resolveOk: ["aborted", "journal:aborted:aborted", "resumeVm", "finish:aborted"],
    resolveFailed: ["resolving", "send:resolve"],
  },
  "resolving (last attempt)": {
    ...NONE,
    resolveOk: ["aborted", "journal:aborted:aborted", "resumeVm", "finish:aborted"],
    resolveFailed: ["resolving", "finish:in-doubt"],
  },
  "committed (on receipt)": NONE,
  "aborted (fenced there)": NONE,
  committed: NONE,
  "aborted (after the pause)": NONE,
  "aborted (reclaimed)": NONE,
  refused: NONE,
};

function signature(e: SourceEffect): string {
  switch (e.kind) {
    case "journal":
      return `journal:${e.record.decision}:${e.record.phase}`;
    case "send":
      return `send:${e.message.kind}`;
    case "finish":
      return `finish:${e.outcome}`;
    default:
      return e.kind;
  }
}

function answer(r: SourceStep): Expected {
  return isNotAllowed(r) ? "no" : [r.state.phase, ...r.effects.map(signature)];
}

describe("source machine: every phase × every event", () => {
  it("has a fixture for every phase and a sample for every event kind", () => {
    const covered = new Set(Object.values(FIXTURES).map((s) => s.phase));
    expect(SOURCE_PHASES.filter((p) => !covered.has(p)), "phases without a fixture").toEqual([]);
    expect(Object.keys(SAMPLES).sort()).toEqual([...SOURCE_EVENT_KINDS].sort());
    // An event no phase takes is dead code, or a row the table has not classified yet.
    const taken = new Set(Object.values(TABLE).flatMap((row) => SOURCE_EVENT_KINDS.filter((k) => row[k] !== "no")));
    expect(SOURCE_EVENT_KINDS.filter((k) => !taken.has(k)), "events no fixture takes").toEqual([]);
  });

  for (const [name, state] of Object.entries(FIXTURES))
    for (const kind of SOURCE_EVENT_KINDS)
      it(`${name} × ${kind}`, () => {
        const expected = TABLE[name]?.[kind];
        expect(expected, `classify ${kind} in ${name} in the table`).toBeDefined();
        const r = stepSource(state, SAMPLES[kind]);
        expect(answer(r)).toEqual(expected);
        if (isNotAllowed(r)) expect(r).toEqual({ kind: "not_allowed", phase: state.phase, event: kind });
      });
});

describe("source machine: on-receipt switchover", () => {
  it("journals handing-off before the pause (no write inside the blackout), and sends the Transfer on capture", () => {
    const probing = walk(rIdle, "start", "prepareOk", "probeOk");
    expect(answer(stepSource(probing, SAMPLES.probeOk))).toEqual(["transferring", "journal:pending:handing-off", "pauseVm"]);
    expect(answer(stepSource(rCaptured, SAMPLES.captured))).toEqual(["handing-off", "send:transfer"]);
    // A failed write of that record stops before the pause, as any: aborted, nothing to resume.
    expect(answer(stepSource(walk(probing, "probeOk"), SAMPLES.journalFailed))).toEqual(["aborted", "journal:aborted:aborted", "send:abort", "finish:aborted"]);
  });

  it("takes the destination's report as the outcome: journaled committed, handed off, never resumed", () => {
    const r = stepSource(handingOff, ADOPTED);
    expect(answer(r)).toEqual(["committed", "journal:committed:committed", "handOffVm", "finish:committed"]);
    if (isNotAllowed(r)) throw new Error("not allowed");
    expect(r.state).toMatchObject({ restore: REPORT, outcome: "committed", decision: "committed", timings: { transferNs: 500n } });
  });

  it("never resumes on a lost Transfer: it asks the destination to fence it", () => {
    const r = stepSource(handingOff, SAMPLES.transferFailed);
    if (isNotAllowed(r)) throw new Error("not allowed");
    expect(r.effects.some((e) => e.kind === "resumeVm")).toBe(false);
    const send = r.effects[0];
    expect(send?.kind === "send" && send.message.kind === "resolve" && send.message).toMatchObject({
      attempt: 1,
      delayNs: 0n,
      req: { migrationId: "m1", vmId: "vm1", sourceKey: REQ.sourceKey, fence: { sourceName: "a", generation: 3n } },
    });
  });

  it("resumes only on the destination's fenced answer; committed hands off; pending asks again", () => {
    expect(answer(stepSource(resolving, { kind: "resolveOk", decision: "aborted" }))).toEqual(["aborted", "journal:aborted:aborted", "resumeVm", "finish:aborted"]);
    expect(answer(stepSource(resolving, { kind: "resolveOk", decision: "committed" }))).toEqual(["committed", "journal:committed:committed", "handOffVm", "finish:committed"]);
    expect(answer(stepSource(resolving, { kind: "resolveOk", decision: "pending" }))).toEqual(["resolving", "send:resolve"]);
    const again = stepSource(resolving, SAMPLES.resolveFailed);
    if (isNotAllowed(again)) throw new Error("not allowed");
    const send = again.effects[0];
    expect(send?.kind === "send" && send.message.kind === "resolve" && send.message).toMatchObject({ attempt: 2, delayNs: commitBackoffNs(2) });
  });

  it("counts the Prepare's answer as the first anchor, before the link's", () => {
    const s = after(walk(rIdle, "start"), { kind: "prepareOk", link: { requestRawNs: 1n, answerRawNs: 2n }, exchange: { requestRawNs: 0n, answerRawNs: 1n } });
    expect(s.anchorsRawNs).toEqual([1n, 2n]);
    expect(s.requestsRawNs).toEqual([0n, 1n]);
    // Two-phase leaves the Prepare out (its destination does not count it).
    const t = after(preparing, { kind: "prepareOk", link: { requestRawNs: 1n, answerRawNs: 2n }, exchange: { requestRawNs: 0n, answerRawNs: 1n } });
    expect(t.anchorsRawNs).toEqual([2n]);
  });
});

describe("source machine: the state carries the migration", () => {
  it("records the link, the probes' anchors and the probe exchanges", () => {
    expect(pausing.anchorsRawNs).toEqual([2n, 4n, 4n]);
    expect(pausing.requestsRawNs).toEqual([1n, 3n, 3n]);
    expect(pausing.exchanges).toHaveLength(2);
    expect(pausing.lastProbeRawNs).toBe(4n);
  });

  it("keeps only the anchors the limit allows", () => {
    let s = walk(preparing);
    s = { ...s, probesWanted: LIMITS.anchorsMax + 5 };
    s = walk(s, "prepareOk");
    for (let i = 0; i < LIMITS.anchorsMax + 3; i++) s = walk(s, "probeOk");
    expect(s.anchorsRawNs).toHaveLength(LIMITS.anchorsMax);
  });

  it("journals the decision with the Transfer's round trip and commits with its answer instant", () => {
    const r = stepSource(captured, SAMPLES.transferOk);
    if (isNotAllowed(r)) throw new Error("not allowed");
    expect(r.state.decision).toBe("committed");
    expect(r.effects[0]).toEqual({ kind: "journal", record: { decision: "committed", phase: "committing", transferRttNs: 500n } });
    const send = r.effects[1];
    expect(send?.kind === "send" && send.message.kind === "commit" && send.message).toMatchObject({ answerRawNs: 1_000n, attempt: 1, delayNs: 0n, handOff: true, req: { transferRttNs: 500n, generation: 3n } });
  });

  it("retries the Commit with backoff and without a second hand-off", () => {
    const r = stepSource(committing, SAMPLES.commitFailed);
    if (isNotAllowed(r)) throw new Error("not allowed");
    const send = r.effects[0];
    expect(send?.kind === "send" && send.message.kind === "commit" && send.message).toMatchObject({ attempt: 2, delayNs: commitBackoffNs(2), handOff: false });
  });

  it("keeps the outcome, the restore and the timings for the report", () => {
    const done = FIXTURES.committed as SourceState;
    expect(done).toMatchObject({ outcome: "committed", error: null, restore: REPORT, handover: true, pause: { pauseTrueNs: 100n } });
    expect(done.timings).toMatchObject({ captureNs: 7n, transferNs: 500n, encodeNs: 8n, commitNs: 9n });
    const aborted = FIXTURES["aborted (after the pause)"] as SourceState;
    expect(aborted).toMatchObject({ outcome: "aborted", decision: "aborted", error: ERR });
  });

  it("stays paused and in doubt when the decision's write may have landed", () => {
    const r = stepSource(committing, { kind: "journalFailed", error: ERR, mayHaveLanded: true });
    expect(answer(r)).toEqual(["committing", "finish:in-doubt"]);
  });

  it("recovers an undecided migration by aborting and resuming, an aborted one by resuming", () => {
    expect(answer(stepSource(idle, { kind: "recover", decision: "pending" }))).toEqual(["aborted", "journal:aborted:aborted", "resumeVm", "send:abort"]);
    expect(answer(stepSource(idle, { kind: "recover", decision: "aborted" }))).toEqual(["aborted", "resumeVm", "send:abort"]);
  });
});
