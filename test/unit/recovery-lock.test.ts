// Goal: after a restart, a VM paused for a migration is held by the migration that paused it — the
// newest undecided one of its generation — not by an older one left undecided (an on-receipt
// hand-off that crashed before its pause: the VM ran on, and migrated again). Resolving the older
// one must not resume a VM the newer one handed off (found by sim seed 20269758: the older one's
// destination answered "aborted", the source resumed the VM, and it ran on two daemons).
// Method: a node on simulated time whose journal holds both records, restarted; its VM's lock read back.

import { describe, expect, it } from "vitest";
import { MemoryJournal, type MigrationRecord } from "../../src/shared/migration/journal.js";
import { MS, World } from "../helpers/sim-world.js";

const QUIET = { outNs: 200_000n, backNs: 200_000n, sampleIntervalNs: 0n };

const handingOff = (migrationId: string, peer: string): MigrationRecord => ({
  migrationId,
  source: "",
  sourceKey: "",
  vmId: "vm0",
  role: "source",
  phase: "handing-off",
  decision: "pending",
  generation: 1n,
  peer,
  report: JSON.stringify({ transferRttNs: "0" }),
  updatedNs: 1n,
});

describe("a restarted source's VM lock", () => {
  it("is the newest undecided migration of the VM's next generation, not an older one left undecided", async () => {
    const w = new World(QUIET);
    const journal = new MemoryJournal();
    const first = w.node("a", journal, { seed: 7n });
    first.start();
    first.createVm({ id: "vm0", vcpus: 1 });
    await w.advance(100n * MS);
    first.stop();
    // The older hand-off crashed before its pause (the VM ran on); the newer one paused the VM.
    journal.putMigration(handingOff("m-old", "b:7071"));
    journal.putMigration(handingOff("m-new", "c:7071"));
    const vm = journal.getVm("vm0");
    if (!vm) throw new Error("vm0 was not journaled");
    journal.putVm({ ...vm, role: "migrating-out" });

    const second = w.node("a", journal, { seed: 7n });
    second.start();
    expect(second.readVm("vm0", 0).migrating).toBe("m-new");
    expect(second.readVm("vm0", 0).running).toBe(false);
  });
});
