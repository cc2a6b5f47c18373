// Goal: a journal record damaged or edited in place never runs: every read checks the record's
// checksum and structure, a restarting node checks every record before it acts on any, and the
// refusal is `data_loss` (journal_record_damaged) naming the VM and the record. Method: real
// SQLite journals edited with sqlite3 statements behind the daemon's back (the damage the issue
// found: a TSC offset, a vCPU count against its columns, a ratio, a negative generation, an unknown
// role), the same edits with the checksum recomputed (structure alone must catch them), the schema
// upgrade of a version-1 journal, and the in-memory journal's damage hook under a simulated node.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Journal, JOURNAL_SCHEMA_VERSION } from "../../src/daemon/journal.js";
import { readRecoveryPlan } from "../../src/daemon/recovery-plan.js";
import { TscmigError } from "../../src/shared/errors.js";
import { EmulatedHost } from "../../src/shared/hypervisor/host.js";
import { EmulatedVm } from "../../src/shared/hypervisor/vm.js";
import { Guest } from "../../src/shared/guest/guest.js";
import { persistVm } from "../../src/shared/migration/hosted-vm.js";
import { vmChecksum } from "../../src/shared/migration/journal-integrity.js";
import { MemoryJournal, type VmRecord } from "../../src/shared/migration/journal.js";
import { fromJson, toJson } from "../../src/shared/serde.js";
import { SimClock, SimScheduler } from "../../src/shared/time/sim.js";
import { EPOCH_NS } from "../helpers/sim-migration.js";
import { MS, World } from "../helpers/sim-world.js";

/** 200 µs each way, no workload sampling. */
const QUIET = { outNs: 200_000n, backNs: 200_000n, sampleIntervalNs: 0n };

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "tscmig-damage-"));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function errorOf(fn: () => unknown): TscmigError {
  try {
    fn();
  } catch (e) {
    if (e instanceof TscmigError) return e;
    throw e;
  }
  throw new Error("expected a TscmigError");
}

/** The journaled state of a real 8-vCPU VM, as a node writes it. */
function vmState(host: EmulatedHost, sched: SimScheduler): string {
  const vm = new EmulatedVm(host, { vcpus: 8, guestTscKhz: 2_000_000n });
  const guest = new Guest(vm, sched, {
    clocksource: "kvm-clock",
    migrationHandling: true,
    handlingMode: "ditch",
    watchVmclock: true,
    pollIntervalNs: 16_000n * MS,
    resyncDelayNs: 1_000n * MS,
    driftAllowancePpm: 500n,
    ntpSource: () => ({ realtimeNs: host.realtimeNs(), maxerrorNs: host.maxerrorNs() }),
  });
  return persistVm({ id: "vm-1", vm, guest, generation: 3n, role: "owner", lock: null, sampler: null });
}

/** `structural`: the damage is visible without the checksum (a changed offset is a valid u64: only the checksum sees it). */
type Edit = { what: string; sql?: string; state?: (o: Record<string, Record<string, unknown>>) => void; field: RegExp; structural: boolean };

/** The damage the hostile test found, as sqlite3 would make it. */
const EDITS: Edit[] = [
  {
    what: "a changed TSC offset",
    state: (o) => {
      (o.vm?.tscOffset as BigUint64Array)[0] = 360_000_000_000_000_000n;
    },
    field: /checksum/,
    structural: false,
  },
  { what: "vcpus 9 against 8-entry columns", state: (o) => void ((o.vm as Record<string, unknown>).vcpus = 9), field: /state\.vm\.tscOffset|checksum/, structural: true },
  {
    what: "a changed ratio",
    state: (o) => {
      (o.vm?.ratio as BigUint64Array)[2] = 0n;
    },
    field: /ratio\[2\]|checksum/,
    structural: true,
  },
  { what: "a generation of -5", sql: "UPDATE vms SET generation = '-5' WHERE vm_id = 'vm-1'", field: /generation/, structural: true },
  { what: "an unknown role", sql: "UPDATE vms SET role = 'bogus' WHERE vm_id = 'vm-1'", field: /role/, structural: true },
  { what: "state that is not JSON", sql: "UPDATE vms SET state = '{\"vm\":' WHERE vm_id = 'vm-1'", field: /state|checksum/, structural: true },
];

function seed(): { data: string; host: EmulatedHost } {
  const clock = new SimClock(0n, EPOCH_NS);
  const sched = new SimScheduler(clock);
  const host = new EmulatedHost({ name: "a", clock, epochNs: EPOCH_NS, tscKhz: 2_500_000n });
  const data = join(dir, "data");
  const j = Journal.open(data);
  j.putVm({ vmId: "vm-1", generation: 3n, role: "owner", state: vmState(host, sched), updatedNs: 1n });
  j.putVm({ vmId: "vm-2", generation: 1n, role: "handed-off", state: "", updatedNs: 1n });
  j.putMigration({ migrationId: "m-1", vmId: "vm-2", role: "source", phase: "committed", decision: "committed", generation: 1n, peer: "b:1", updatedNs: 1n });
  j.close();
  return { data, host };
}

/** Edits vm-1's row behind the journal's back; with `rehash` the checksum is recomputed to match. */
function edit(data: string, e: Edit, rehash: boolean): void {
  const db = new Database(join(data, "tscmig.db"));
  db.pragma("ignore_check_constraints = ON"); // as a hand edit could
  if (e.sql) db.exec(e.sql);
  if (e.state) {
    const row = db.prepare<[], { state: string }>("SELECT state FROM vms WHERE vm_id = 'vm-1'").get() as { state: string };
    const o = fromJson<Record<string, Record<string, unknown>>>(row.state);
    e.state(o);
    db.prepare("UPDATE vms SET state = ? WHERE vm_id = 'vm-1'").run(toJson(o));
  }
  if (rehash) {
    const r = db.prepare<[], { vm_id: string; generation: string; role: string; state: string; updated_ns: string }>("SELECT * FROM vms WHERE vm_id = 'vm-1'").get();
    if (r && /^-?\d+$/.test(r.generation)) {
      const rec = { vmId: r.vm_id, generation: BigInt(r.generation), role: r.role, state: r.state, updatedNs: BigInt(r.updated_ns) } as VmRecord;
      db.prepare("UPDATE vms SET checksum = ? WHERE vm_id = 'vm-1'").run(vmChecksum(rec));
    }
  }
  db.close();
}

describe("a SQLite journal edited in place", () => {
  for (const e of EDITS)
    for (const rehash of e.structural ? [false, true] : [false])
      it(`refuses ${e.what}${rehash ? " (checksum recomputed: the structure catches it)" : ""}, naming the VM and the record`, () => {
        const { data, host } = seed();
        edit(data, e, rehash);
        const j = Journal.open(data);
        try {
          const err = errorOf(() => readRecoveryPlan(j, host.info));
          expect(err.code).toBe("data_loss");
          expect(err.reason).toBe("journal_record_damaged");
          expect(err.message).toContain("VM record of vm-1");
          expect(err.field).toMatch(/^journal\.vms\[vm-1\]/);
          expect(err.field).toMatch(e.field);
          // The sound records still read; the damaged one never does.
          expect(j.getVm("vm-2")?.role).toBe("handed-off");
          expect(j.getMigration("m-1")?.decision).toBe("committed");
        } finally {
          j.close();
        }
      });

  it("refuses a migration record whose decision was flipped", () => {
    const { data } = seed();
    const db = new Database(join(data, "tscmig.db"));
    db.exec("UPDATE migrations SET decision = 'aborted'");
    db.close();
    const j = Journal.open(data);
    const err = errorOf(() => j.listMigrations());
    j.close();
    expect(err).toMatchObject({ code: "data_loss", reason: "journal_record_damaged", field: "journal.migrations[m-1].checksum" });
    expect(err.message).toContain("migration record m-1 (VM vm-2)");
  });

  it("a put over a migration record whose decision is no decision at all names the damage, and writes nothing", () => {
    // A put reads only the prior decision (cheap, inside the blackout); a value no tscmig writes is read in full.
    const { data } = seed();
    const db = new Database(join(data, "tscmig.db"));
    db.pragma("ignore_check_constraints = ON");
    db.exec("UPDATE migrations SET decision = 'maybe'");
    db.close();
    const j = Journal.open(data);
    const err = errorOf(() => j.putMigration({ migrationId: "m-1", vmId: "vm-2", role: "source", phase: "committed", decision: "committed", generation: 1n, peer: "b:1", updatedNs: 2n }));
    j.close();
    expect(err).toMatchObject({ code: "data_loss", reason: "journal_record_damaged" });
    const after = new Database(join(data, "tscmig.db"));
    expect(after.prepare("SELECT decision, updated_ns FROM migrations").get()).toEqual({ decision: "maybe", updated_ns: "1" });
    after.close();
  });

  it("reads every record unchanged when nothing was edited", () => {
    const { data, host } = seed();
    const j = Journal.open(data);
    const plan = readRecoveryPlan(j, host.info);
    j.close();
    expect(plan.vms.map((v) => [v.rec.vmId, v.kind])).toEqual([
      ["vm-1", "hosted"],
      ["vm-2", "tombstone"],
    ]);
  });
});

describe("schema upgrade", () => {
  it("adds a checksum to every row of a version-1 journal, and the rows read as before", () => {
    const data = join(dir, "v1");
    const j = Journal.open(data);
    j.putVm({ vmId: "old", generation: 18_446_744_073_709_551_615n, role: "handed-off", state: "", updatedNs: 5n });
    j.putMigration({ migrationId: "m-old", vmId: "old", role: "source", phase: "committed", decision: "committed", generation: 4n, peer: "x:1", report: "{}", updatedNs: 6n });
    j.close();
    // Back to what version 1 wrote: no checksum columns, no probe row, no owner.
    const db = new Database(join(data, "tscmig.db"));
    db.exec("ALTER TABLE vms DROP COLUMN checksum; ALTER TABLE migrations DROP COLUMN checksum; DROP TABLE meta; DROP TABLE owner; UPDATE schema_version SET version = 1");
    db.close();
    const up = Journal.open(data);
    expect(up.getVm("old")).toMatchObject({ generation: 18_446_744_073_709_551_615n, role: "handed-off" });
    expect(up.getMigration("m-old")).toMatchObject({ decision: "committed", report: "{}" });
    up.probe();
    up.close();
    const check = new Database(join(data, "tscmig.db"), { readonly: true });
    expect(check.prepare("SELECT version FROM schema_version").get()).toEqual({ version: JOURNAL_SCHEMA_VERSION });
    expect(check.prepare("SELECT count(*) AS n FROM vms WHERE checksum IS NULL").get()).toEqual({ n: 0 });
    check.close();
  });
});

describe("the in-memory journal's damage hook, under a restarting node", () => {
  it("a damaged VM record stops the start with data_loss naming it, and no VM of the journal runs", async () => {
    const w = new World(QUIET);
    const journal = new MemoryJournal();
    const first = w.node("a", journal, { seed: 7n });
    first.start();
    for (const id of ["vm-a", "vm-b", "vm-c"]) first.createVm({ id, vcpus: 2 });
    await w.advance(100n * MS);
    first.stop();

    expect(journal.corruptVm("vm-b", (r) => void (r.generation = 99n))).toBe(true);
    expect(journal.corruptVm("nope", () => {})).toBe(false);
    const second = w.node("a", journal, { seed: 7n });
    const err = errorOf(() => second.start());
    expect(err).toMatchObject({ code: "data_loss", reason: "journal_record_damaged", field: "journal.vms[vm-b].checksum" });
    expect(err.message).toContain("vm-b");
    // Checked before anything acted: not even the sound VMs were brought back.
    expect(second.listVms()).toEqual([]);
  });

  it("a damaged migration record stops the start the same way", async () => {
    const w = new World(QUIET);
    const journal = new MemoryJournal();
    const node = w.node("a", journal, { seed: 7n });
    node.start();
    node.createVm({ id: "vm-a", vcpus: 1 });
    node.stop();
    journal.putMigration({ migrationId: "m-x", vmId: "vm-a", role: "source", phase: "refused", decision: "aborted", generation: 1n, peer: "b", updatedNs: 0n });
    expect(journal.corruptMigration("m-x", (m) => void (m.decision = "committed"))).toBe(true);
    const err = errorOf(() => w.node("a", journal, { seed: 7n }).start());
    expect(err).toMatchObject({ code: "data_loss", reason: "journal_record_damaged", field: "journal.migrations[m-x].checksum" });
  });
});
