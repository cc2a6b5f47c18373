// The listings every journal store must give alike (the SQLite journal and the simulator's
// in-memory one): the newest records of a role by update time, and what is not settled yet.
import { expect } from "vitest";
import type { JournalStore, MigrationRecord } from "../../src/shared/migration/journal.js";

const rec = (id: string, over: Partial<MigrationRecord>): MigrationRecord => ({
  migrationId: id,
  source: "",
  sourceKey: "",
  vmId: `vm-${id}`,
  role: "destination",
  phase: "running",
  decision: "committed",
  generation: 1n,
  peer: "10.0.0.2:7071",
  updatedNs: 0n,
  ...over,
});

/** Fills `store` with 40 migrations whose update times are not in insertion order, then lists them. */
export function checkListings(store: JournalStore): void {
  for (let i = 0; i < 40; i++) {
    const id = `m${String(i).padStart(2, "0")}`;
    // Update times i·37 mod 40 + 1 s: a shuffle (37 is prime to 40); m27 is the newest (40 s), m14 next.
    const updatedNs = BigInt(((i * 37) % 40) + 1) * 1_000_000_000n;
    if (i % 4 === 0) store.putMigration(rec(id, { role: "source", source: "", phase: i % 8 === 0 ? "committing" : "committed", updatedNs }));
    else store.putMigration(rec(id, { source: "src", sourceKey: "ab".repeat(32), decision: i % 10 === 1 ? "pending" : "committed", phase: i % 10 === 1 ? "prepared" : "running", updatedNs }));
  }
  // Shares m38's update time, to see ties keep insertion order.
  store.putMigration(rec("tie", { source: "src", sourceKey: "ab".repeat(32), updatedNs: 7_000_000_000n }));
  // Deciding m01 (it was pending) moves it to the newest end: the order is the last update's.
  store.putMigration(rec("m01", { source: "src", sourceKey: "ab".repeat(32), updatedNs: 99_000_000_000n }));

  const all = store.listMigrations({ role: "destination" });
  const byUpdate = [...all].sort((a, b) => (a.updatedNs < b.updatedNs ? -1 : a.updatedNs > b.updatedNs ? 1 : all.indexOf(a) - all.indexOf(b)));
  for (const n of [0, 1, 5, 31, 100]) expect(store.listMigrations({ role: "destination", newest: n }).map((m) => m.migrationId)).toEqual(byUpdate.slice(Math.max(0, byUpdate.length - n)).map((m) => m.migrationId));
  expect(store.listMigrations({ role: "destination", newest: 3 }).map((m) => m.migrationId)).toEqual(["m14", "m27", "m01"]);
  const tied = store.listMigrations({ role: "destination" }).filter((m) => m.updatedNs === 7_000_000_000n).map((m) => m.migrationId);
  expect(tied).toEqual(["m38", "tie"]);
  expect(store.listMigrations({ newest: 2 }).map((m) => m.migrationId)).toEqual(["m27", "m01"]);

  // Unsettled: undecided ones, and this daemon's own commits not yet delivered (phase not committed).
  const unsettled = store.listMigrations({ unsettled: true }).map((m) => m.migrationId);
  expect(unsettled).toEqual(store.listMigrations().filter((m) => m.decision === "pending" || (m.role === "source" && m.phase !== "committed")).map((m) => m.migrationId));
  expect(unsettled).toEqual(["m00", "m08", "m11", "m16", "m21", "m24", "m31", "m32"]);
  expect(store.listMigrations({ unsettled: true, role: "source" }).map((m) => m.migrationId)).toEqual(["m00", "m08", "m16", "m24", "m32"]);
}
