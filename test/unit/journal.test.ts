// Goal: the journal keeps every decision exactly, atomically and durably, and refuses what would
// give a VM two owners. Method: real SQLite files in a temporary directory; durability is checked by
// killing a forked writer with SIGKILL in the middle of its work and reading what it left.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Journal, JOURNAL_SCHEMA_VERSION, type MigrationRecord, type VmRecord } from "../../src/daemon/journal.js";
import { TscmigError } from "../../src/shared/errors.js";
import { forkTs } from "../helpers/fork-ts.js";
import { checkListings } from "../helpers/journal-listings.js";

const U64_MAX = (1n << 64n) - 1n;

let dir: string;
let journal: Journal;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "tscmig-journal-"));
  journal = Journal.open(join(dir, "data"));
});

afterEach(() => {
  journal.close();
  rmSync(dir, { recursive: true, force: true });
});

const vm = (over: Partial<VmRecord> = {}): VmRecord => ({ vmId: "vm-1", generation: 1n, role: "owner", state: "{}", updatedNs: 10n, ...over });
const migration = (over: Partial<MigrationRecord> = {}): MigrationRecord => ({
  migrationId: "m-1",
  source: "",
  sourceKey: "",
  vmId: "vm-1",
  role: "source",
  phase: "prepare",
  decision: "pending",
  generation: 2n,
  peer: "10.0.0.2:7071",
  updatedNs: 20n,
  ...over,
});

function errorOf(fn: () => unknown): TscmigError {
  try {
    fn();
  } catch (e) {
    if (e instanceof TscmigError) return e;
    throw e;
  }
  throw new Error("expected a TscmigError");
}

describe("journal records", () => {
  it("round-trips VMs with text and byte state", () => {
    const bytes = new Uint8Array([0, 1, 2, 255]);
    journal.putVm(vm({ vmId: "a", state: '{"x":1}' }));
    journal.putVm(vm({ vmId: "b", state: bytes.subarray(1), role: "staged" }));
    expect(journal.getVm("a")).toEqual(vm({ vmId: "a", state: '{"x":1}' }));
    const b = journal.getVm("b");
    expect(b?.state).toBeInstanceOf(Uint8Array);
    expect(Array.from(b?.state as Uint8Array)).toEqual([1, 2, 255]);
    expect(journal.listVms().map((r) => r.vmId)).toEqual(["a", "b"]);
    expect(journal.deleteVm("a")).toBe(true);
    expect(journal.deleteVm("a")).toBe(false);
    expect(journal.getVm("a")).toBeUndefined();
  });

  it("upserts a VM and keeps its generation from going back", () => {
    journal.putVm(vm({ generation: 5n }));
    journal.putVm(vm({ generation: 5n, role: "migrating-out" }));
    journal.putVm(vm({ generation: 6n, role: "handed-off" }));
    expect(journal.getVm("vm-1")).toMatchObject({ generation: 6n, role: "handed-off" });
    const e = errorOf(() => journal.putVm(vm({ generation: 4n })));
    expect(e.code).toBe("failed_precondition");
    expect(e.reason).toBe("stale_generation");
    expect(journal.getVm("vm-1")?.generation).toBe(6n);
  });

  it("round-trips migrations and filters them", () => {
    journal.putMigration(migration({ migrationId: "m-1" }));
    journal.putMigration(migration({ migrationId: "m-2", role: "destination", report: '{"outcome":"committed"}', decision: "committed" }));
    journal.putMigration(migration({ migrationId: "m-3", decision: "aborted" }));
    expect(journal.getMigration("m-1")).toEqual(migration({ migrationId: "m-1" }));
    expect(journal.getMigration("m-2")?.report).toBe('{"outcome":"committed"}');
    expect(journal.getMigration("nope")).toBeUndefined();
    expect(journal.pendingMigrations().map((m) => m.migrationId)).toEqual(["m-1"]);
    expect(journal.listMigrations().map((m) => m.migrationId)).toEqual(["m-1", "m-2", "m-3"]);
    expect(journal.listMigrations({ role: "source" }).map((m) => m.migrationId)).toEqual(["m-1", "m-3"]);
    expect(journal.listMigrations({ role: "source", decision: "aborted" }).map((m) => m.migrationId)).toEqual(["m-3"]);
  });

  it("lists the newest of a role by update and the unsettled, through indexes (as the in-memory journal does)", () => {
    checkListings(journal);
    expect(errorOf(() => journal.listMigrations({ newest: -1 }))).toMatchObject({ code: "invalid_argument", field: "newest" });
    journal.close();
    // What the listings after every migration read is found through an index, not by a scan of every record.
    const db = new Database(join(dir, "data", "tscmig.db"), { readonly: true });
    const indexes = db.prepare<[], { name: string }>("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'migrations'").all().map((r) => r.name);
    expect(indexes).toEqual(expect.arrayContaining(["migrations_by_role_updated", "migrations_undelivered"]));
    db.close();
    journal = Journal.open(join(dir, "data"));
  });

  it("a migration is (source, id): two sources may use one id, and this daemon's own id is apart from both", () => {
    journal.putMigration(migration({ migrationId: "x" }));
    journal.putMigration(migration({ migrationId: "x", source: "a", sourceKey: "aa".repeat(16), role: "destination" }));
    journal.putMigration(migration({ migrationId: "x", source: "b", sourceKey: "bb".repeat(16), role: "destination", decision: "aborted" }));
    expect(journal.getMigration("x")?.role).toBe("source");
    expect(journal.getInboundMigration("a", "x")).toMatchObject({ role: "destination", decision: "pending", sourceKey: "aa".repeat(16) });
    expect(journal.getInboundMigration("b", "x")).toMatchObject({ decision: "aborted", sourceKey: "bb".repeat(16) });
    expect(journal.getInboundMigration("c", "x")).toBeUndefined();
    expect(journal.listMigrations()).toHaveLength(3);
  });

  it("keeps a decision final once made", () => {
    journal.putMigration(migration({ phase: "blackout" }));
    journal.putMigration(migration({ phase: "commit", decision: "committed" }));
    journal.putMigration(migration({ phase: "commit", decision: "committed", report: "{}" })); // a replay is fine
    const e = errorOf(() => journal.putMigration(migration({ decision: "aborted" })));
    expect(e.reason).toBe("decision_final");
    expect(errorOf(() => journal.putMigration(migration({ decision: "pending" }))).reason).toBe("decision_final");
    expect(journal.getMigration("m-1")).toMatchObject({ decision: "committed", report: "{}" });
  });

  it("rejects out-of-range values with the field named", () => {
    expect(errorOf(() => journal.putVm(vm({ generation: U64_MAX + 1n }))).field).toBe("generation");
    expect(errorOf(() => journal.putVm(vm({ generation: -1n }))).field).toBe("generation");
    expect(errorOf(() => journal.putVm(vm({ vmId: "" }))).field).toBe("vmId");
    expect(errorOf(() => journal.putVm(vm({ role: "boss" as never }))).field).toBe("role");
    expect(errorOf(() => journal.putMigration(migration({ decision: "maybe" as never }))).field).toBe("decision");
    expect(errorOf(() => journal.putMigration(migration({ updatedNs: 1n << 63n }))).field).toBe("updatedNs");
    expect(journal.listVms()).toEqual([]);
  });

  it("round-trips 64-bit values near 2^64 exactly", () => {
    for (const generation of [U64_MAX, U64_MAX - 1n, (1n << 63n) + 1n, (1n << 53n) + 1n]) {
      journal.putVm(vm({ vmId: `g${generation}`, generation, updatedNs: -(1n << 63n) }));
      journal.putMigration(migration({ migrationId: `m${generation}`, generation, updatedNs: (1n << 63n) - 1n }));
      expect(journal.getVm(`g${generation}`)).toMatchObject({ generation, updatedNs: -(1n << 63n) });
      expect(journal.getMigration(`m${generation}`)).toMatchObject({ generation, updatedNs: (1n << 63n) - 1n });
    }
  });
});

describe("journal transactions", () => {
  it("commits a decision and a role change together", () => {
    journal.putVm(vm({ role: "migrating-out" }));
    journal.transaction(() => {
      journal.putMigration(migration({ decision: "committed" }));
      journal.putVm(vm({ generation: 2n, role: "handed-off" }));
    });
    expect(journal.getMigration("m-1")?.decision).toBe("committed");
    expect(journal.getVm("vm-1")?.role).toBe("handed-off");
  });

  it("rolls back everything when the function throws", () => {
    journal.putVm(vm({ role: "migrating-out" }));
    expect(() =>
      journal.transaction(() => {
        journal.putMigration(migration({ decision: "committed" }));
        journal.putVm(vm({ generation: 2n, role: "handed-off" }));
        journal.putVm(vm({ vmId: "vm-2" }));
        throw new Error("crash before the decision is complete");
      }),
    ).toThrow("crash before");
    expect(journal.getMigration("m-1")).toBeUndefined();
    expect(journal.getVm("vm-1")).toMatchObject({ generation: 1n, role: "migrating-out" });
    expect(journal.getVm("vm-2")).toBeUndefined();
  });

  it("rolls back when a refused put inside throws, and nests", () => {
    journal.putVm(vm({ generation: 3n }));
    expect(() =>
      journal.transaction(() => {
        journal.putMigration(migration());
        journal.transaction(() => journal.putVm(vm({ vmId: "vm-2" })));
        journal.putVm(vm({ generation: 1n })); // stale: throws
      }),
    ).toThrow(TscmigError);
    expect(journal.getMigration("m-1")).toBeUndefined();
    expect(journal.getVm("vm-2")).toBeUndefined();
  });
});

describe("journal file", () => {
  it("keeps its data across close and reopen", () => {
    journal.putVm(vm({ generation: U64_MAX }));
    journal.putMigration(migration({ decision: "committed" }));
    journal.close();
    journal = Journal.open(join(dir, "data"));
    expect(journal.getVm("vm-1")?.generation).toBe(U64_MAX);
    expect(journal.getMigration("m-1")?.decision).toBe("committed");
  });

  it("refuses a second opener while the first holds it", () => {
    const e = errorOf(() => Journal.open(join(dir, "data")));
    expect(e.code).toBe("failed_precondition");
    expect(e.reason).toBe("journal_locked");
    journal.putVm(vm()); // the holder is unaffected
    expect(journal.getVm("vm-1")).toBeDefined();
  });

  it("refuses a journal written by a newer schema version", () => {
    journal.close();
    const db = new Database(join(dir, "data", "tscmig.db"));
    db.prepare("UPDATE schema_version SET version = ?").run(JOURNAL_SCHEMA_VERSION + 1);
    db.close();
    const e = errorOf(() => Journal.open(join(dir, "data")));
    expect(e.reason).toBe("journal_schema_newer");
    expect(e.message).toContain(`schema version ${JOURNAL_SCHEMA_VERSION + 1}`);
    journal = Journal.open(join(dir, "other")); // for afterEach
  });

  it("belongs to the daemon that first opened it under a name, and refuses a daemon of another name", () => {
    journal.putMigration(migration({ decision: "committed" }));
    journal.close();
    journal = Journal.open(join(dir, "data"), { owner: "d0" }); // an owner-less journal takes its first name
    journal.close();
    journal = Journal.open(join(dir, "data"), { owner: "d0" });
    journal.close();
    const e = errorOf(() => Journal.open(join(dir, "data"), { owner: "d1" }));
    expect(e.code).toBe("failed_precondition");
    expect(e.reason).toBe("journal_owner_mismatch");
    expect(e.message).toMatch(/belongs to the daemon named "d0", not "d1": start it with --name d0/);
    journal = Journal.open(join(dir, "data"), { owner: "d0" }); // the refusal changed nothing and released the lock
    expect(journal.getMigration("m-1")?.decision).toBe("committed");
  });

  it("refuses a file that is not a journal", () => {
    const other = join(dir, "garbage");
    mkdirSync(other);
    writeFileSync(join(other, "tscmig.db"), "not a database: ".repeat(100));
    expect(errorOf(() => Journal.open(other)).reason).toBe("journal_unreadable");
  });

  it("keeps every decision a writer reported when the writer is killed with SIGKILL", async () => {
    journal.close(); // the child takes the lock
    const child = forkTs(new URL("../helpers/journal-writer.ts", import.meta.url), [join(dir, "data")]);
    const reported: string[] = [];
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on("exit", (_code, signal) => resolve(signal)));
    child.on("message", (m: { committed: string }) => {
      reported.push(m.committed);
      if (reported.length === 200) child.kill("SIGKILL");
    });
    expect(await exited).toBe("SIGKILL");
    expect(reported.length).toBeGreaterThanOrEqual(200);

    journal = Journal.open(join(dir, "data"));
    const migrations = journal.listMigrations();
    for (const id of reported) expect(journal.getMigration(id)?.decision).toBe("committed");
    // Each decision and its VM role change were one transaction: never one without the other.
    for (const m of migrations) expect(journal.getVm(m.vmId)).toMatchObject({ role: "handed-off", generation: m.generation });
    expect(journal.listVms().length).toBe(migrations.length);
    expect(journal.getMigration("m-0")?.generation).toBe(U64_MAX);
  });
});
