// Goal: a daemon whose journal's disk is full stays up, says it cannot take changes and why, refuses
// them with resource_exhausted (disk_full), never reports or runs a VM that is not durable, keeps
// migrations in flight safe on both sides, and recovers by itself once space returns.
// Method: TscmigNodes on simulated time over a journal that throws SQLITE_FULL at the statement or
// at COMMIT (test/helpers/failing-journal.ts), chosen writes at chosen moments; timers keep running
// throughout, so an error escaping one would throw out of the scheduler and fail the test.
import { describe, expect, it } from "vitest";
import type { TscmigNode } from "../../src/daemon/node.js";
import { TscmigError } from "../../src/shared/errors.js";
import type { HistoryEvent, HistorySink } from "../../src/shared/history.js";
import { persistVm } from "../../src/shared/migration/hosted-vm.js";
import { FailingJournal } from "../helpers/failing-journal.js";
import { MS, World } from "../helpers/sim-world.js";

/** 200 µs each way, no workload sampling. */
const QUIET = { outNs: 200_000n, backNs: 200_000n, sampleIntervalNs: 0n };

function refusal(fn: () => unknown): TscmigError {
  try {
    fn();
  } catch (e) {
    if (e instanceof TscmigError) return e;
    throw e;
  }
  throw new Error("expected a refusal");
}

function running(n: TscmigNode, id: string): boolean {
  return n.listVms().some((h) => h.id === id && h.role === "owner" && h.vm.running);
}

describe("a full disk under one daemon", () => {
  it("keeps the daemon up, refuses a create with resource_exhausted, lists nothing it could not journal, and recovers when space returns", async () => {
    const w = new World(QUIET);
    const j = new FailingJournal();
    const a = w.node("a", j, { seed: 7n });
    a.start();
    a.createVm({ id: "before", vcpus: 2 });
    await w.advance(1_000n * MS);

    j.full = true;
    const e = refusal(() => a.createVm({ id: "during", vcpus: 2 }));
    expect(e).toMatchObject({ code: "resource_exhausted", reason: "disk_full" });
    expect(e.message).toMatch(/disk is full/);
    expect(a.listVms().map((h) => h.id)).toEqual(["before"]);
    expect(j.getVm("during")).toBeUndefined();
    expect(a.durable.health()).toMatchObject({ writable: false, reason: "disk_full" });
    // Guests keep syncing (journal writes that fail) for a minute: nothing escapes a timer.
    await w.advance(60_000n * MS);
    expect(running(a, "before")).toBe(true);
    expect(refusal(() => a.createVm({ id: "during", vcpus: 1 })).reason).toBe("disk_full");

    j.full = false;
    await w.advance(6_000n * MS); // the retry back-off tops out at 5 s
    expect(a.durable.health().writable).toBe(true);
    a.createVm({ id: "after", vcpus: 1 });
    expect(j.getVm("after")?.role).toBe("owner");
    // The syncs queued while full reached the journal with the retry.
    const rec = j.getVm("before");
    expect(rec && rec.updatedNs).toBeGreaterThan(60_000n * MS);
    a.stop();
  });

  it("a create whose write fails at COMMIT is rolled back the same way", () => {
    const w = new World(QUIET);
    const j = new FailingJournal();
    j.failAt = "commit";
    const a = w.node("a", j, { seed: 7n });
    a.start();
    j.full = true;
    // A lone write outside a transaction fails at its statement; inside one, at COMMIT: both refuse.
    expect(refusal(() => a.createVm({ id: "x", vcpus: 1 })).reason).toBe("disk_full");
    expect(a.listVms()).toEqual([]);
  });

  it("an I/O error is journal_io_error (unavailable), not disk_full", () => {
    const w = new World(QUIET);
    const j = new FailingJournal();
    const a = w.node("a", j, { seed: 7n });
    a.start();
    const io = Object.assign(new Error("disk I/O error"), { code: "SQLITE_IOERR_WRITE" });
    j.full = true;
    j.failIf = () => {
      throw io;
    };
    expect(refusal(() => a.createVm({ id: "x", vcpus: 1 }))).toMatchObject({ code: "unavailable", reason: "journal_io_error" });
    expect(a.durable.health()).toMatchObject({ writable: false, reason: "journal_io_error" });
  });
});

describe("migrations when one side cannot journal", () => {
  async function pair() {
    const w = new World(QUIET);
    const ja = new FailingJournal();
    const jb = new FailingJournal();
    const a = w.node("a", ja, { seed: 7n });
    const b = w.node("b", jb, { seed: 7n });
    a.start();
    b.start();
    a.createVm({ id: "vm", vcpus: 2 });
    await w.advance(500n * MS);
    return { w, ja, jb, a, b };
  }

  it("a source that cannot journal its decision does not hand off: it aborts, resumes the VM, and the destination drops its copy", async () => {
    const { w, ja, a, b } = await pair();
    ja.full = true;
    ja.failIf = (op) => op.kind === "putMigration" && op.rec.decision === "committed";
    const r = await w.settle(a.migrate("vm", { destination: "b" }));
    expect(r.outcome).toBe("aborted");
    expect(r.error).toMatchObject({ code: "resource_exhausted", reason: "disk_full" });
    expect(running(a, "vm")).toBe(true);
    await w.advance(2_000n * MS);
    expect(b.listVms()).toEqual([]);
    expect(b.destination.pending()).toEqual([]);
    // Space returns: the same VM migrates.
    ja.full = false;
    await w.advance(6_000n * MS);
    const again = await w.settle(a.migrate("vm", { destination: "b" }));
    expect(again.outcome).toBe("committed");
    expect(running(b, "vm")).toBe(true);
    expect(a.listVms()).toEqual([]);
  });

  it("a decision whose write may have landed (an I/O error) neither resumes nor hands off: in doubt and paused until a restart reads the journal", async () => {
    const { w, ja, a, b } = await pair();
    ja.full = true;
    ja.failIf = (op) => {
      if (op.kind === "putMigration" && op.rec.decision === "committed") throw Object.assign(new Error("disk I/O error"), { code: "SQLITE_IOERR_FSYNC" });
      return false;
    };
    const r = await w.settle(a.migrate("vm", { destination: "b" }));
    expect(r.outcome).toBe("in-doubt");
    expect(r.error).toMatchObject({ code: "unavailable", reason: "journal_io_error" });
    expect(a.listVms().map((h) => [h.id, h.role, h.vm.running])).toEqual([["vm", "migrating-out", false]]);
    expect(b.listVms()).toEqual([]);
    // The write did not land here: a restart finds the migration undecided, aborts it and resumes the VM.
    a.stop();
    ja.full = false;
    const again = w.node("a", ja, { seed: 7n });
    again.start();
    await w.advance(3_000n * MS);
    expect(running(again, "vm")).toBe(true);
    expect(b.listVms()).toEqual([]);
    expect(b.destination.pending()).toEqual([]);
  });

  it("a source that cannot journal the paused VM never pauses it", async () => {
    const { w, ja, a, b } = await pair();
    ja.full = true;
    ja.failIf = (op) => op.kind === "putVm" && op.rec.role === "migrating-out";
    const r = await w.settle(a.migrate("vm", { destination: "b" }));
    expect(r.outcome).toBe("aborted");
    expect(r.pauseTrueNs).toBe(0n);
    expect(running(a, "vm")).toBe(true);
    await w.advance(2_000n * MS);
    expect(b.destination.pending()).toEqual([]);
  });

  it("a destination that cannot journal refuses Prepare with resource_exhausted; the VM runs on at the source", async () => {
    const { w, jb, a, b } = await pair();
    jb.full = true;
    const r = await w.settle(a.migrate("vm", { destination: "b" }));
    expect(r.outcome).toBe("refused");
    expect(r.error).toMatchObject({ code: "resource_exhausted", reason: "disk_full" });
    expect(running(a, "vm")).toBe(true);
    expect(b.destination.held).toBe(0);
  });

  it("a destination that cannot journal the adopted VM does not run it; once space returns the decided migration completes there", async () => {
    const { w, jb, a, b } = await pair();
    jb.failAt = "commit";
    jb.failIf = (op) => op.kind === "putVm" && op.rec.role === "owner"; // the adoption, at COMMIT
    // Full only from the Commit on: Prepare and Transfer journal normally.
    const origCommit = b.peer.commit.bind(b.peer);
    b.peer.commit = (req, raw) => {
      jb.full = true;
      return origCommit(req, raw);
    };
    const r = await w.settle(a.migrate("vm", { destination: "b" }));
    expect(r.outcome).toBe("in-doubt"); // decided at the source; the destination refused to run it
    expect(b.listVms()).toEqual([]);
    expect(b.destination.pending().map((i) => i.state.phase)).toEqual(["staged"]);
    expect(a.listVms()).toEqual([]); // handed off: the decision was durable at the source
    b.peer.commit = origCommit;
    jb.full = false;
    await w.advance(10_000n * MS); // retry back-off, then the recovery loop re-delivers the Commit
    expect(running(b, "vm")).toBe(true);
    expect(jb.getVm("vm")?.role).toBe("owner");
  });
});

describe("a full disk at a restart, and under a guest's handling of a migration", () => {
  it("a daemon restarting on a full disk comes up (not ready) and journals the aborts it decided once it can", async () => {
    const w = new World(QUIET);
    const j = new FailingJournal();
    j.inner.putMigration({ migrationId: "m-undecided", vmId: "gone", role: "source", phase: "transferring", decision: "pending", generation: 1n, peer: "b", updatedNs: 0n });
    j.full = true;
    const a = w.node("a", j, { seed: 7n });
    a.start();
    expect(a.durable.health()).toMatchObject({ writable: false, reason: "disk_full" });
    expect(j.getMigration("m-undecided")?.decision).toBe("pending");
    j.full = false;
    await w.advance(6_000n * MS);
    expect(a.durable.health().writable).toBe(true);
    expect(j.getMigration("m-undecided")?.decision).toBe("aborted");
  });

  /** a → b with a doorbell b rings 50 ms after the resume; b's disk fills in between. */
  async function handledOnFullDisk() {
    const w = new World(QUIET);
    const events: HistoryEvent[] = [];
    const history: HistorySink = { sample: () => {}, event: (e) => events.push(e) };
    const ja = new FailingJournal();
    const jb = new FailingJournal();
    const a = w.node("a", ja, { seed: 7n });
    const b = w.node("b", jb, { seed: 7n, history, tune: (c) => void (c.doorbellDelayNs = 50n * MS) });
    a.start();
    b.start();
    a.createVm({ id: "vm", vcpus: 1 });
    await w.advance(500n * MS);
    const r = await w.settle(a.migrate("vm", { destination: "b", doorbell: true }));
    expect(r.outcome).toBe("committed");
    jb.full = true;
    await w.advance(100n * MS); // the doorbell: the guest acts on the migration, its write fails
    return { w, jb, b, events, history };
  }
  const handled = (events: HistoryEvent[]) => events.filter((e) => e.kind === "handled");

  it("a guest whose handling cannot be journaled stops until it is; the history records the handling once, when journaled", async () => {
    const { w, jb, b, events } = await handledOnFullDisk();
    expect(b.getVm("vm").vm.running).toBe(false);
    expect(handled(events)).toEqual([]);
    expect(events.at(-1)).toMatchObject({ kind: "stop", why: "journal_unwritable" });
    jb.full = false;
    await w.advance(6_000n * MS);
    expect(running(b, "vm")).toBe(true);
    expect(handled(events)).toHaveLength(1);
    expect(events.at(-1)).toMatchObject({ kind: "run" });
  });

  it("a daemon that dies before the handling is journaled: the restarted guest handles the migration again, once in what survives", async () => {
    const { w, jb, b, events, history } = await handledOnFullDisk();
    b.stop(); // dies with the disk still full: nothing more reaches the journal
    jb.full = false;
    const again = w.node("b", jb, { seed: 7n, history });
    again.start();
    await w.advance(1_000n * MS);
    again.readVm("vm"); // the guest reads its clock (vmclock watched): it sees the marker it has not handled
    expect(running(again, "vm")).toBe(true);
    expect(handled(events)).toHaveLength(1);
    expect(again.getVm("vm").guest.handledCount).toBe(1n);
  });
});

describe("persistence on change", () => {
  it("an idle daemon writes nothing between guest syncs, and syncs due together share one transaction", async () => {
    const w = new World(QUIET);
    const j = new FailingJournal();
    const a = w.node("a", j, { seed: 7n, tune: (c) => void (c.guest.pollIntervalNs = 16_000n * MS) });
    a.start();
    for (let i = 0; i < 50; i++) a.createVm({ id: `vm-${i}`, vcpus: 1 });
    await w.advance(1_000n * MS); // the creates' first syncs land in one batch
    const writes = j.writes;
    const transactions = j.transactions;
    await w.advance(14_000n * MS); // idle until just before the next poll
    expect(j.writes).toBe(writes);
    await w.advance(2_000n * MS); // every guest polls (all 50 within the batch window)
    expect(j.writes - writes).toBe(50);
    expect(j.transactions - transactions).toBe(1);
    // A sync's write reuses the hypervisor part of the last full write: the text is what a full
    // serialisation of the VM gives now (only guest memory changed).
    for (const h of a.listVms().slice(0, 5)) expect(j.getVm(h.id)?.state).toBe(persistVm(h));
  });
});
