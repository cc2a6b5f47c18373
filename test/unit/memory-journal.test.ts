// Goal: the simulator's in-memory journal keeps SQLite's transaction semantics: all or nothing; its
// `hasMigration` answers what `listMigrations` would. Method: puts and deletes inside a transaction
// that throws must leave every record as it was; hasMigration against listMigrations on one journal.
import { describe, expect, it } from "vitest";
import { MemoryJournal, type MigrationRecord, type VmRecord } from "../../src/shared/migration/journal.js";
import { checkListings } from "../helpers/journal-listings.js";

const vm = (vmId: string, generation: bigint): VmRecord => ({ vmId, generation, role: "owner", state: "s", updatedNs: 0n });
const mig = (migrationId: string, decision: MigrationRecord["decision"]): MigrationRecord => ({
  migrationId,
  vmId: "a",
  role: "source",
  phase: "p",
  decision,
  generation: 1n,
  peer: "x",
  updatedNs: 0n,
});

describe("MemoryJournal", () => {
  it("lists the newest of a role by update and the unsettled as the SQLite journal does", () => {
    checkListings(new MemoryJournal());
  });

  it("rolls back every put and delete of a transaction that throws, nested ones included", () => {
    const j = new MemoryJournal();
    j.putVm(vm("a", 1n));
    j.putVm(vm("b", 1n));
    j.putMigration(mig("m1", "pending"));
    expect(() =>
      j.transaction(() => {
        j.putVm(vm("a", 2n));
        j.deleteVm("b");
        j.transaction(() => {
          j.putVm(vm("c", 1n));
          j.putMigration(mig("m1", "committed"));
          j.putMigration(mig("m2", "pending"));
        });
        throw new Error("boom");
      }),
    ).toThrow("boom");
    expect(j.getVm("a")?.generation).toBe(1n);
    expect(j.getVm("b")?.generation).toBe(1n);
    expect(j.getVm("c")).toBeUndefined();
    expect(j.getMigration("m1")?.decision).toBe("pending");
    expect(j.getMigration("m2")).toBeUndefined();
  });

  it("keeps what a transaction wrote when it returns", () => {
    const j = new MemoryJournal();
    expect(j.transaction(() => (j.putVm(vm("a", 3n)), 7))).toBe(7);
    expect(j.getVm("a")?.generation).toBe(3n);
    j.transaction(() => j.deleteVm("a"));
    expect(j.listVms()).toEqual([]);
  });

  it("hasMigration answers whether listMigrations would list a match", () => {
    const j = new MemoryJournal();
    j.putMigration(mig("m1", "committed"));
    j.putMigration({ ...mig("m2", "pending"), role: "destination", source: "s" });
    const filters = [{}, { decision: "pending" }, { decision: "aborted" }, { role: "source" }, { role: "destination", decision: "committed" }] as const;
    for (const f of filters) expect(j.hasMigration(f)).toBe(j.listMigrations(f).length > 0);
    expect(j.hasMigration({ role: "source", decision: "committed" }, (m) => m.phase !== "p")).toBe(false);
    expect(j.hasMigration({ role: "source", decision: "committed" }, (m) => m.phase === "p")).toBe(true);
    expect(j.hasMigration({ decision: "pending" }, (m) => m.source === "s")).toBe(true);
  });
});
