// Goal: the destination machine answers every event in every phase (and for a migration it does
// not know) deliberately: the next state and the effects in order, a typed refusal for a message
// out of turn, or a typed NotAllowed for an event of its own driver out of phase — as Firecracker
// tests its vCPU state machine. A phase or event added to the machine fails this test until the
// table below classifies it.
// Method: one state per phase (plus "none"), one sample of every event kind (about the same VM and
// generation), and the full cross product checked against a table; then the checks that stand on
// the state's data: a Commit or Abort about another generation, a replay with and without a report.
import { describe, expect, it } from "vitest";
import {
  DESTINATION_EVENT_KINDS,
  DESTINATION_PHASES,
  type DestinationEffect,
  type DestinationEvent,
  type DestinationPhase,
  type DestinationState,
  type DestinationStep,
  destinationState,
  isDestinationNotAllowed,
  stepDestination,
} from "../../src/shared/migration/destination-machine.js";
import type { RestoreReport } from "../../src/shared/migration/messages.js";

const IDS = { migrationId: "m1", vmId: "vm1", generation: 4n };
const REPORT = { resumedTrueNs: 9n, estimatedBlackoutNs: 1n } as unknown as RestoreReport;
const LEGS = { transferRttNs: 500n };

const SAMPLES: { [K in DestinationEvent["kind"]]: Extract<DestinationEvent, { kind: K }> } = {
  prepare: { kind: "prepare", ...IDS },
  transfer: { kind: "transfer" },
  commit: { kind: "commit", ...IDS, legs: LEGS },
  restored: { kind: "restored", report: REPORT },
  restoreFailed: { kind: "restoreFailed", adopted: false },
  abort: { kind: "abort", vmId: IDS.vmId, generation: IDS.generation },
  leaseExpired: { kind: "leaseExpired" },
  resolved: { kind: "resolved", decision: "aborted", transferRttNs: 500n },
  fence: { kind: "fence", ...IDS },
};

type Row = DestinationPhase | "none" | "prepared (on receipt)" | "staged (on receipt)";
const STATES: Record<Row, DestinationState | null> = {
  none: null,
  prepared: destinationState("prepared", IDS),
  "prepared (on receipt)": { ...destinationState("prepared", IDS), onReceipt: true },
  "staged (on receipt)": { ...destinationState("staged", IDS), onReceipt: true },
  staged: destinationState("staged", IDS),
  running: destinationState("running", IDS, REPORT),
  aborted: destinationState("aborted", IDS),
};

/** "no": NotAllowed; otherwise the next phase ("none": still unknown) and the effects' signatures. */
type Expected = "no" | [DestinationPhase | "none", ...string[]];

const TABLE: Record<Row, Record<DestinationEvent["kind"], Expected>> = {
  none: {
    prepare: ["prepared", "journal:prepared:pending", "reply:ok"],
    transfer: ["none", "refuse:failed_precondition:not_prepared"],
    commit: ["aborted", "journal:fenced:aborted", "refuse:aborted:migration_unknown"],
    restored: "no",
    restoreFailed: "no",
    abort: ["none", "reply:ok"],
    leaseExpired: "no",
    resolved: ["none"],
    fence: ["aborted", "journal:fenced:aborted", "resolved:unknown"],
  },
  prepared: {
    prepare: ["prepared", "reply:ok"],
    transfer: ["staged", "stage", "journal:staged:pending", "reply:ok"],
    commit: ["prepared", "refuse:failed_precondition:not_staged"],
    restored: "no",
    restoreFailed: "no",
    abort: ["aborted", "journal:aborted:aborted", "dropStaged", "reply:ok"],
    leaseExpired: ["aborted", "journal:aborted:aborted"],
    resolved: ["aborted", "journal:aborted:aborted", "dropStaged"],
    fence: ["aborted", "journal:fenced:aborted", "dropStaged", "resolved:aborted"],
  },
  "prepared (on receipt)": {
    prepare: ["prepared", "reply:ok"],
    // The Transfer is the decision: staged and journaled committed first, then restored at once.
    transfer: ["staged", "stage", "journal:staged:committed", "restore"],
    commit: ["prepared", "refuse:failed_precondition:not_staged"],
    restored: "no",
    restoreFailed: "no",
    abort: ["aborted", "journal:aborted:aborted", "dropStaged", "reply:ok"],
    leaseExpired: ["aborted", "journal:aborted:aborted"],
    resolved: ["aborted", "journal:aborted:aborted", "dropStaged"],
    fence: ["aborted", "journal:fenced:aborted", "dropStaged", "resolved:aborted"],
  },
  "staged (on receipt)": {
    prepare: ["staged", "refuse:already_exists:migration_id_reused"],
    transfer: ["staged", "reply:ok"],
    commit: ["staged", "restore"],
    restored: ["running", "journal:running:committed", "dropStaged", "reply:report"],
    restoreFailed: ["staged"],
    // Decided here: neither the source's Abort nor its answers move it.
    abort: ["staged", "refuse:failed_precondition:already_running"],
    leaseExpired: "no",
    resolved: ["staged"],
    fence: ["staged", "resolved:committed"],
  },
  staged: {
    prepare: ["staged", "refuse:already_exists:migration_id_reused"],
    transfer: ["staged", "reply:ok"],
    commit: ["staged", "restore"],
    restored: ["running", "journal:running:committed", "dropStaged", "reply:report"],
    restoreFailed: ["staged"],
    abort: ["aborted", "journal:aborted:aborted", "dropStaged", "reply:ok"],
    leaseExpired: "no",
    resolved: ["aborted", "journal:aborted:aborted", "dropStaged"],
    fence: ["staged", "resolved:pending"],
  },
  running: {
    prepare: ["running", "refuse:already_exists:migration_id_reused"],
    transfer: ["running", "refuse:already_exists:migration_running"],
    commit: ["running", "reply:report:replay"],
    restored: "no",
    restoreFailed: "no",
    abort: ["running", "refuse:failed_precondition:already_running"],
    leaseExpired: "no",
    resolved: ["running"],
    fence: ["running", "resolved:committed"],
  },
  aborted: {
    prepare: ["aborted", "refuse:already_exists:migration_id_reused"],
    transfer: ["aborted", "refuse:aborted:migration_aborted"],
    commit: ["aborted", "refuse:aborted:migration_aborted"],
    restored: "no",
    restoreFailed: "no",
    abort: ["aborted", "reply:ok"],
    leaseExpired: "no",
    resolved: ["aborted"],
    fence: ["aborted", "resolved:aborted"],
  },
};

function signature(e: DestinationEffect): string {
  switch (e.kind) {
    case "journal":
      return `journal:${e.record.phase}:${e.record.decision}`;
    case "refuse":
      return `refuse:${e.code}:${e.reason}`;
    case "reply":
      if (e.reply.kind === "resolved") return `resolved:${e.reply.decision}`;
      return e.reply.kind === "ok" ? "reply:ok" : `reply:report${e.reply.replay ? ":replay" : ""}`;
    default:
      return e.kind;
  }
}

function answer(r: DestinationStep): Expected {
  return isDestinationNotAllowed(r) ? "no" : [r.state?.phase ?? "none", ...r.effects.map(signature)];
}

describe("destination machine: every phase × every event", () => {
  it("has a row for every phase and a sample for every event kind", () => {
    expect([...new Set(Object.values(STATES).map((x) => x?.phase ?? "none"))].sort()).toEqual(["none", ...DESTINATION_PHASES].sort());
    expect(Object.keys(SAMPLES).sort()).toEqual([...DESTINATION_EVENT_KINDS].sort());
    // An event no phase takes is dead code, or a row the table has not classified yet.
    const taken = new Set(Object.values(TABLE).flatMap((row) => DESTINATION_EVENT_KINDS.filter((k) => row[k] !== "no")));
    expect(DESTINATION_EVENT_KINDS.filter((k) => !taken.has(k)), "events no phase takes").toEqual([]);
  });

  for (const [row, state] of Object.entries(STATES) as [Row, DestinationState | null][])
    for (const kind of DESTINATION_EVENT_KINDS)
      it(`${row} × ${kind}`, () => {
        const expected = TABLE[row]?.[kind];
        expect(expected, `classify ${kind} in ${row} in the table`).toBeDefined();
        const r = stepDestination(state, SAMPLES[kind]);
        expect(answer(r)).toEqual(expected);
        if (isDestinationNotAllowed(r)) expect(r).toEqual({ kind: "not_allowed", phase: state?.phase ?? "none", event: kind });
      });
});

describe("destination machine: decisions that stand on the state's data", () => {
  const other = { vmId: IDS.vmId, generation: IDS.generation + 1n };

  it("refuses a Commit or an Abort about another generation, before anything changes", () => {
    for (const row of ["prepared", "staged", "running"] as const) {
      expect(answer(stepDestination(STATES[row], { kind: "commit", migrationId: "m1", ...other, legs: LEGS }))).toEqual([row, "refuse:failed_precondition:stale_generation"]);
    }
    for (const row of ["prepared", "staged"] as const)
      expect(answer(stepDestination(STATES[row], { kind: "abort", ...other }))).toEqual([row, "refuse:failed_precondition:stale_generation"]);
  });

  it("refuses a replayed Prepare for another VM or generation", () => {
    expect(answer(stepDestination(STATES.prepared, { kind: "prepare", migrationId: "m1", ...other }))).toEqual(["prepared", "refuse:already_exists:migration_id_reused"]);
  });

  it("answers a replayed Commit from the report it journaled, and never without one", () => {
    const r = stepDestination(STATES.running, SAMPLES.commit);
    expect(!isDestinationNotAllowed(r) && r.effects[0]).toEqual({ kind: "reply", reply: { kind: "report", report: REPORT, replay: true } });
    const bare = destinationState("running", IDS);
    expect(answer(stepDestination(bare, SAMPLES.commit))).toEqual(["running", "refuse:unavailable:restore_incomplete"]);
  });

  it("journals the decision with the restore report, and fences an unknown Commit with its ids", () => {
    const r = stepDestination(STATES.staged, SAMPLES.restored);
    expect(!isDestinationNotAllowed(r) && r.effects[0]).toEqual({ kind: "journal", record: { ...IDS, phase: "running", decision: "committed", report: REPORT } });
    const f = stepDestination(null, SAMPLES.commit);
    expect(!isDestinationNotAllowed(f) && f.effects[0]).toEqual({ kind: "journal", record: { ...IDS, phase: "fenced", decision: "aborted", report: null } });
  });

  it("restores on a lost Commit when the source answers committed, with the round trip it measured", () => {
    const r = stepDestination(STATES.staged, { kind: "resolved", decision: "committed", transferRttNs: 700n });
    expect(!isDestinationNotAllowed(r) && r.effects).toEqual([{ kind: "restore", legs: { transferRttNs: 700n } }]);
    expect(answer(stepDestination(STATES.staged, { kind: "resolved", decision: "pending", transferRttNs: 0n }))).toEqual(["staged"]);
    expect(answer(stepDestination(STATES.prepared, { kind: "resolved", decision: "committed", transferRttNs: 0n }))).toEqual(["prepared"]);
    expect(answer(stepDestination(STATES.staged, { kind: "resolved", decision: "unknown", transferRttNs: 0n }))).toEqual(["aborted", "journal:aborted:aborted", "dropStaged"]);
  });

  it("fences on a source's Resolve durably before answering, and refuses a Transfer for good after", () => {
    const f = stepDestination(null, SAMPLES.fence);
    if (isDestinationNotAllowed(f)) throw new Error("not allowed");
    expect(f.effects[0]).toEqual({ kind: "journal", record: { ...IDS, phase: "fenced", decision: "aborted", report: null } });
    expect(answer(stepDestination(f.state, SAMPLES.transfer))).toEqual(["aborted", "refuse:aborted:migration_aborted"]);
    expect(answer(stepDestination(f.state, SAMPLES.prepare))).toEqual(["aborted", "refuse:already_exists:migration_id_reused"]);
    const p = stepDestination(STATES["prepared (on receipt)"], SAMPLES.fence);
    if (isDestinationNotAllowed(p)) throw new Error("not allowed");
    expect(answer(stepDestination(p.state, SAMPLES.transfer))).toEqual(["aborted", "refuse:aborted:migration_aborted"]);
    // About another generation: refused, nothing fenced.
    expect(answer(stepDestination(STATES["prepared (on receipt)"], { ...SAMPLES.fence, generation: 9n }))).toEqual(["prepared", "refuse:failed_precondition:stale_generation"]);
  });

  it("journals an on-receipt Transfer as decided with its snapshot, then restores without a round trip", () => {
    const r = stepDestination(STATES["prepared (on receipt)"], SAMPLES.transfer);
    expect(!isDestinationNotAllowed(r) && r.effects).toEqual([
      { kind: "stage" },
      { kind: "journal", record: { ...IDS, phase: "staged", decision: "committed", report: null } },
      { kind: "restore", legs: { transferRttNs: null } },
    ]);
    const p = stepDestination(null, { ...SAMPLES.prepare, onReceipt: true });
    expect(!isDestinationNotAllowed(p) && p.state).toMatchObject({ phase: "prepared", onReceipt: true });
  });

  it("a restore that failed after the VM was adopted leaves it running, without a report to replay", () => {
    const r = stepDestination(STATES.staged, { kind: "restoreFailed", adopted: true });
    expect(!isDestinationNotAllowed(r) && r.state).toEqual(destinationState("running", IDS));
  });
});
