// The durable journal of one daemon: every decision about a VM's ownership and every migration's
// outcome, so that a daemon killed at any instant (kill -9 included) and restarted resolves each VM
// to exactly one owner (docs/protocol.md#ownership-fencing-and-recovery; invariants I6 and I7).
//
// Why it is shaped this way:
// - SQLite in WAL mode with `synchronous = FULL` (default): a transaction that returned is on disk,
//   and a process killed mid-transaction leaves none of it behind. `synchronous = NORMAL` (opt-in,
//   `--journal-sync normal`) keeps the second promise and weakens the first: a returned transaction
//   is in the WAL in the kernel's page cache, so it survives the process being killed (the fault
//   model of the chaos runs) but not a power cut; it saves an fsync on every decision.
// - `locking_mode = EXCLUSIVE`: the daemon holds the database lock for as long as it runs, so a second
//   daemon started on the same `--data` fails at open instead of deciding for the same VMs.
// - Payloads are opaque (the domain serialises its own state); the journal enforces only what
//   ownership needs: a VM's fencing generation never goes back, and a decided migration stays decided.
// - 64-bit values are stored as decimal TEXT: exact over the whole u64 range, readable with sqlite3.
// - Every row carries a checksum of its content and every read checks it and the row's structure
//   (shared/migration/journal-integrity.ts): a row damaged or edited in place is refused as
//   `data_loss`, naming the VM and the record, never handed to the node as if it were sound.

import { mkdirSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { invalid, TscmigError } from "../shared/errors.js";
import { LIMITS } from "../shared/limits.js";
import type { Decision, MigrationFilter, MigrationRecord, MigrationRole, VmRecord, VmRole } from "../shared/migration/journal.js";
import {
  checkMigrationRecord,
  checkVmRecord,
  DECISIONS,
  intColumn,
  MIGRATION_ROLES,
  migrationChecksum,
  type RecordRef,
  VM_ROLES,
  vmChecksum,
} from "../shared/migration/journal-integrity.js";

export { DECISIONS, MIGRATION_ROLES, VM_ROLES } from "../shared/migration/journal-integrity.js";
export type { Decision, MigrationFilter, MigrationRecord, MigrationRole, VmRecord, VmRole } from "../shared/migration/journal.js";
/** SQLite `synchronous` in WAL mode: see the module comment. */
export type JournalSync = "full" | "normal";

const FILE_NAME = "tscmig.db";
const U64_MAX = (1n << 64n) - 1n;
const I64_MIN = -(1n << 63n);
const I64_MAX = (1n << 63n) - 1n;

const sqlIn = (values: readonly string[]) => values.map((v) => `'${v}'`).join(", ");

/** `isUnsettled` (shared/migration/journal.ts) in SQL: the partial index's condition and the filter's. */
const UNDELIVERED_SQL = "role = 'source' AND decision = 'committed' AND phase <> 'committed'";
const UNSETTLED_SQL = `(decision = 'pending' OR (${UNDELIVERED_SQL}))`;

/**
 * MIGRATIONS[i] takes the schema from version i to i + 1 (SQL, or a function for what SQL cannot
 * compute); the current version is their count. All of them run in one transaction.
 */
const MIGRATIONS: readonly (string | ((db: Database.Database) => void))[] = [
  `CREATE TABLE vms (
     vm_id TEXT PRIMARY KEY NOT NULL,
     generation TEXT NOT NULL,
     role TEXT NOT NULL CHECK (role IN (${sqlIn(VM_ROLES)})),
     state ANY NOT NULL,
     updated_ns TEXT NOT NULL
   ) STRICT;
   CREATE TABLE migrations (
     migration_id TEXT PRIMARY KEY NOT NULL,
     vm_id TEXT NOT NULL,
     role TEXT NOT NULL CHECK (role IN (${sqlIn(MIGRATION_ROLES)})),
     phase TEXT NOT NULL,
     decision TEXT NOT NULL CHECK (decision IN (${sqlIn(DECISIONS)})),
     generation TEXT NOT NULL,
     peer TEXT NOT NULL,
     report TEXT,
     updated_ns TEXT NOT NULL
   ) STRICT;
   CREATE INDEX migrations_by_decision ON migrations (decision);`,
  // v2: a migration's identity becomes (source, migration_id): ids are unique per source only, and
  // each migration keeps the source's per-migration key. Rows this daemon received name their source
  // by the address they recorded (the name was not kept); its own outbound rows have source ''.
  `CREATE TABLE migrations_v2 (
     migration_id TEXT NOT NULL,
     source TEXT NOT NULL,
     source_key TEXT NOT NULL,
     vm_id TEXT NOT NULL,
     role TEXT NOT NULL CHECK (role IN (${sqlIn(MIGRATION_ROLES)})),
     phase TEXT NOT NULL,
     decision TEXT NOT NULL CHECK (decision IN (${sqlIn(DECISIONS)})),
     generation TEXT NOT NULL,
     peer TEXT NOT NULL,
     report TEXT,
     updated_ns TEXT NOT NULL,
     PRIMARY KEY (source, migration_id)
   ) STRICT;
   INSERT INTO migrations_v2 (migration_id, source, source_key, vm_id, role, phase, decision, generation, peer, report, updated_ns)
     SELECT migration_id, CASE role WHEN 'destination' THEN peer ELSE '' END, '', vm_id, role, phase, decision, generation, peer, report, updated_ns
     FROM migrations ORDER BY rowid;
   DROP TABLE migrations;
   ALTER TABLE migrations_v2 RENAME TO migrations;
   CREATE INDEX migrations_by_decision ON migrations (decision);`,
  // v3: a checksum per row, computed for the rows already there (they are trusted as they are: the
  // upgrade cannot tell an earlier edit from the truth), and a row for the durability probe.
  (db) => {
    db.exec(`ALTER TABLE vms ADD COLUMN checksum TEXT;
             ALTER TABLE migrations ADD COLUMN checksum TEXT;
             CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) STRICT;
             INSERT INTO meta (key, value) VALUES ('probe', 0);`);
    const setVm = db.prepare("UPDATE vms SET checksum = ? WHERE vm_id = ?");
    for (const row of db.prepare<[], VmRow>("SELECT * FROM vms").all()) setVm.run(vmChecksum(vmOf(row, false)), row.vm_id);
    const setMigration = db.prepare("UPDATE migrations SET checksum = ? WHERE source = ? AND migration_id = ?");
    for (const row of db.prepare<[], MigrationRow>("SELECT * FROM migrations").all())
      setMigration.run(migrationChecksum(migrationOf(row, false)), row.source, row.migration_id);
  },
  // v4: the name of the daemon the journal belongs to (its decisions were taken under that name).
  `CREATE TABLE owner (name TEXT NOT NULL) STRICT;`,
  // v5: what is listed after every migration (the newest of a role, the unsettled) is found through
  // an index: a scan read and checked every record ever written, 7 µs each, so a daemon that had run
  // 30,000 migrations stalled 200 ms after each one.
  `CREATE INDEX migrations_by_role_updated ON migrations (role, CAST(updated_ns AS INTEGER));
   CREATE INDEX migrations_undelivered ON migrations (role) WHERE ${UNDELIVERED_SQL};`,
];
export const JOURNAL_SCHEMA_VERSION = MIGRATIONS.length;

interface VmRow {
  vm_id: string;
  generation: string;
  role: VmRole;
  state: Uint8Array | string;
  updated_ns: string;
  checksum: string | null;
}

interface ListParams {
  decision: string | null;
  role: string | null;
  newest?: number;
}

interface MigrationRow {
  migration_id: string;
  source: string;
  source_key: string;
  vm_id: string;
  role: MigrationRole;
  phase: string;
  decision: Decision;
  generation: string;
  peer: string;
  report: string | null;
  updated_ns: string;
  checksum: string | null;
}

export class Journal {
  private readonly stmt: Statements;
  /**
   * One better-sqlite3 transaction function for every call, running whatever it is given: building
   * a new one per call (`db.transaction(fn)`) cost more than the writes inside on the blackout path.
   */
  private readonly run: Database.Transaction<(fn: () => unknown) => unknown>;
  private readonly lists = new Map<string, Database.Statement<ListParams, MigrationRow>>();

  private constructor(private readonly db: Database.Database) {
    this.stmt = prepare(db);
    this.run = db.transaction((fn: () => unknown) => fn());
  }

  /**
   * Opens (creating `dir` and `tscmig.db` if needed) and takes the journal for this process.
   * Throws `failed_precondition` when another process holds it (reason `journal_locked`), when it
   * was written by a newer tscmig (reason `journal_schema_newer`), when `dir` cannot be a data
   * directory (reason `data_dir_unusable`: a file, no permission, a full disk) or the file in it is
   * not a journal (reason `journal_unreadable`), and when `opts.owner` is given and the journal
   * belongs to a daemon of another name (reason `journal_owner_mismatch`; a journal without an owner
   * takes `opts.owner` as its own).
   */
  static open(dir: string, opts: { synchronous?: JournalSync; owner?: string } = {}): Journal {
    const path = join(dir, FILE_NAME);
    let db: Database.Database;
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      // timeout 0: a held lock belongs to a live process (the kernel frees a dead one's at once).
      db = new Database(path, { timeout: 0 });
    } catch (e) {
      throw dataDirError(dir, e);
    }
    try {
      db.pragma("locking_mode = EXCLUSIVE"); // before WAL: the WAL index then lives in process memory
      db.pragma("journal_mode = WAL");
      db.pragma(`synchronous = ${opts.synchronous === "normal" ? "NORMAL" : "FULL"}`);
      migrate(db, path);
      if (opts.owner !== undefined) claimOwner(db, path, opts.owner);
    } catch (e) {
      db.close();
      if (!(e instanceof Database.SqliteError)) throw e;
      if (e.code === "SQLITE_BUSY")
        throw new TscmigError("failed_precondition", `journal ${path} is in use by another process (another daemon on this --data)`, { reason: "journal_locked" });
      if (/^SQLITE_(FULL|READONLY|CANTOPEN|IOERR)/.test(e.code)) throw dataDirError(dir, e);
      throw new TscmigError("failed_precondition", `journal ${path}: ${e.message}`, { reason: "journal_unreadable" });
    }
    return new Journal(db);
  }

  close(): void {
    if (this.db.open) this.db.close();
  }

  /**
   * Runs `fn` (synchronous) in one transaction: every put inside lands together or not at all, and
   * a throw rolls all of it back. Nests (an inner call becomes a savepoint).
   */
  transaction<T>(fn: () => T): T {
    return this.run.immediate(fn) as T;
  }

  /**
   * One put's read-check-write: its own transaction, or part of the caller's without a savepoint
   * (the check throws before the single write, so there is nothing of it to roll back).
   */
  private atomically(fn: () => void): void {
    if (this.db.inTransaction) fn();
    else this.run.immediate(fn);
  }

  /** Inserts or replaces the VM. Refuses (`failed_precondition`, `stale_generation`) a lower generation. */
  putVm(rec: VmRecord): void {
    checkId(rec.vmId, "vmId");
    checkRange(rec.generation, 0n, U64_MAX, "generation");
    checkRange(rec.updatedNs, I64_MIN, I64_MAX, "updatedNs");
    if (!VM_ROLES.includes(rec.role)) throw invalid("role", `must be one of ${VM_ROLES.join(", ")}`);
    const state = typeof rec.state === "string" ? rec.state : Buffer.from(rec.state.buffer, rec.state.byteOffset, rec.state.byteLength);
    this.atomically(() => {
      // The generation alone (no state, no checksum): this runs for every VM of every batch.
      const row = this.stmt.getVmGeneration.get(rec.vmId);
      const prior = row && { generation: intColumn({ table: "vms", key: rec.vmId, vmId: rec.vmId }, row.generation, "generation") };
      if (prior && rec.generation < prior.generation)
        throw new TscmigError("failed_precondition", `vm ${rec.vmId}: generation ${rec.generation} is older than the journal's ${prior.generation}`, {
          field: "generation",
          reason: "stale_generation",
        });
      this.stmt.putVm.run({
        vm_id: rec.vmId,
        generation: String(rec.generation),
        role: rec.role,
        state,
        updated_ns: String(rec.updatedNs),
        checksum: vmChecksum(rec),
      });
    });
  }

  getVm(vmId: string): VmRecord | undefined {
    const row = this.stmt.getVm.get(vmId);
    return row && vmOf(row);
  }

  listVms(): VmRecord[] {
    return this.stmt.listVms.all().map((row) => vmOf(row));
  }

  /** Forgets the VM entirely, tombstone included. True when there was one. */
  deleteVm(vmId: string): boolean {
    return this.stmt.deleteVm.run(vmId).changes > 0;
  }

  /** Inserts or updates the migration. Refuses (`failed_precondition`, `decision_final`) to change a decision once made. */
  putMigration(rec: MigrationRecord): void {
    checkId(rec.migrationId, "migrationId");
    if ((rec.source ?? "") !== "") checkId(rec.source as string, "source");
    if ((rec.sourceKey ?? "").length > 256) throw invalid("sourceKey", "at most 256 characters");
    checkId(rec.vmId, "vmId");
    checkRange(rec.generation, 0n, U64_MAX, "generation");
    checkRange(rec.updatedNs, I64_MIN, I64_MAX, "updatedNs");
    if (!MIGRATION_ROLES.includes(rec.role)) throw invalid("role", `must be one of ${MIGRATION_ROLES.join(", ")}`);
    if (!DECISIONS.includes(rec.decision)) throw invalid("decision", `must be one of ${DECISIONS.join(", ")}`);
    const full: MigrationRecord = { ...rec, source: rec.source ?? "", sourceKey: rec.sourceKey ?? "" };
    this.atomically(() => {
      const prior = this.priorDecision(full.source ?? "", rec.migrationId);
      // Decided stays decided; one exception: a source whose Commit its destination refused for good
      // (aborted, or fenced as never seen) takes the VM back: committed becomes aborted, "reclaimed".
      const reclaimed = prior?.decision === "committed" && rec.decision === "aborted" && rec.phase === "reclaimed" && rec.role === "source";
      if (prior && prior.decision !== "pending" && rec.decision !== prior.decision && !reclaimed)
        throw new TscmigError("failed_precondition", `migration ${rec.migrationId} is already ${prior.decision}`, {
          field: "decision",
          reason: "decision_final",
        });
      this.stmt.putMigration.run({
        migration_id: rec.migrationId,
        source: full.source,
        source_key: full.sourceKey,
        vm_id: rec.vmId,
        role: rec.role,
        phase: rec.phase,
        decision: rec.decision,
        generation: String(rec.generation),
        peer: rec.peer,
        report: rec.report ?? null,
        updated_ns: String(rec.updatedNs),
        checksum: migrationChecksum(full),
      });
    });
  }

  /**
   * The decision a put must not change, read alone (no report, no checksum: every phase of every
   * migration writes, the destination's inside the blackout). A value no tscmig writes is read in
   * full, which names the damage.
   */
  private priorDecision(source: string, migrationId: string): Pick<MigrationRecord, "decision"> | undefined {
    const row = this.stmt.getMigrationDecision.get(source, migrationId);
    if (!row) return undefined;
    return (DECISIONS as readonly string[]).includes(row.decision) ? { decision: row.decision as Decision } : this.getInboundMigration(source, migrationId);
  }

  /** This daemon's own outbound migration. */
  getMigration(migrationId: string): MigrationRecord | undefined {
    return this.getInboundMigration("", migrationId);
  }

  /** The migration `migrationId` of `source` (its own outbound ones have source ""). */
  getInboundMigration(source: string, migrationId: string): MigrationRecord | undefined {
    const row = this.stmt.getMigration.get(source, migrationId);
    return row && migrationOf(row);
  }

  /** Migrations matching every given field, oldest first (by insertion; by update with `newest`). */
  listMigrations(filter: MigrationFilter = {}): MigrationRecord[] {
    const newest = filter.newest;
    if (newest !== undefined && (!Number.isSafeInteger(newest) || newest < 0)) throw invalid("newest", "must be a non-negative integer");
    const params = { decision: filter.decision ?? null, role: filter.role ?? null, ...(newest !== undefined ? { newest } : {}) };
    const rows = this.listStatement(filter).all(params);
    if (newest !== undefined) rows.reverse(); // read newest first, to stop at the limit
    return rows.map((row) => migrationOf(row));
  }

  /**
   * One statement per shape of filter, with only its own conditions: SQLite picks an index only for
   * a condition it sees (an `@role IS NULL OR role = @role` would scan every row).
   */
  private listStatement(f: MigrationFilter): Database.Statement<ListParams, MigrationRow> {
    const key = `${f.decision !== undefined}${f.role !== undefined}${f.unsettled === true}${f.newest !== undefined}`;
    let stmt = this.lists.get(key);
    if (!stmt) {
      const where = [f.decision !== undefined ? "decision = @decision" : "", f.role !== undefined ? "role = @role" : "", f.unsettled ? UNSETTLED_SQL : ""].filter((c) => c !== "");
      const order = f.newest !== undefined ? "ORDER BY CAST(updated_ns AS INTEGER) DESC, rowid DESC LIMIT @newest" : "ORDER BY rowid";
      stmt = this.db.prepare<ListParams, MigrationRow>(`SELECT * FROM migrations ${where.length > 0 ? `WHERE ${where.join(" AND ")}` : ""} ${order}`);
      this.lists.set(key, stmt);
    }
    return stmt;
  }

  /** Migrations without a decision: what a restarted daemon must resolve first. */
  pendingMigrations(): MigrationRecord[] {
    return this.listMigrations({ decision: "pending" });
  }

  /** One tiny durable write (JournalStore.probe): throws SQLITE_FULL, SQLITE_IOERR... as any write would now. */
  probe(): void {
    this.transaction(() => this.stmt.probe.run());
  }
}

type Statements = ReturnType<typeof prepare>;

function prepare(db: Database.Database) {
  return {
    getVm: db.prepare<[string], VmRow>("SELECT * FROM vms WHERE vm_id = ?"),
    getVmGeneration: db.prepare<[string], { generation: string }>("SELECT generation FROM vms WHERE vm_id = ?"),
    listVms: db.prepare<[], VmRow>("SELECT * FROM vms ORDER BY vm_id"),
    putVm: db.prepare(
      `INSERT INTO vms (vm_id, generation, role, state, updated_ns, checksum) VALUES (@vm_id, @generation, @role, @state, @updated_ns, @checksum)
       ON CONFLICT (vm_id) DO UPDATE SET generation = excluded.generation, role = excluded.role,
         state = excluded.state, updated_ns = excluded.updated_ns, checksum = excluded.checksum`,
    ),
    deleteVm: db.prepare<[string]>("DELETE FROM vms WHERE vm_id = ?"),
    getMigration: db.prepare<[string, string], MigrationRow>("SELECT * FROM migrations WHERE source = ? AND migration_id = ?"),
    getMigrationDecision: db.prepare<[string, string], { decision: string }>("SELECT decision FROM migrations WHERE source = ? AND migration_id = ?"),
    putMigration: db.prepare(
      `INSERT INTO migrations (migration_id, source, source_key, vm_id, role, phase, decision, generation, peer, report, updated_ns, checksum)
       VALUES (@migration_id, @source, @source_key, @vm_id, @role, @phase, @decision, @generation, @peer, @report, @updated_ns, @checksum)
       ON CONFLICT (source, migration_id) DO UPDATE SET source_key = excluded.source_key, vm_id = excluded.vm_id, role = excluded.role, phase = excluded.phase,
         decision = excluded.decision, generation = excluded.generation, peer = excluded.peer,
         report = excluded.report, updated_ns = excluded.updated_ns, checksum = excluded.checksum`,
    ),
    probe: db.prepare("UPDATE meta SET value = value + 1 WHERE key = 'probe'"),
  };
}

function migrate(db: Database.Database, path: string): void {
  db.transaction(() => {
    db.exec("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL) STRICT");
    const row = db.prepare<[], { version: number }>("SELECT version FROM schema_version").get();
    const version = row?.version ?? 0;
    if (version > JOURNAL_SCHEMA_VERSION)
      throw new TscmigError(
        "failed_precondition",
        `journal ${path} has schema version ${version}; this tscmig reads up to ${JOURNAL_SCHEMA_VERSION}`,
        { reason: "journal_schema_newer" },
      );
    for (const step of MIGRATIONS.slice(version)) {
      if (typeof step === "string") db.exec(step);
      else step(db);
    }
    if (row === undefined) db.prepare("INSERT INTO schema_version (version) VALUES (?)").run(JOURNAL_SCHEMA_VERSION);
    else db.prepare("UPDATE schema_version SET version = ?").run(JOURNAL_SCHEMA_VERSION);
  }).immediate();
}

/**
 * A daemon's decisions are recorded under its name (peers know it by that name, and its recovery
 * tells its own migrations from others' by it): the same journal under another name would override
 * them. The first daemon to open a journal owns it.
 */
function claimOwner(db: Database.Database, path: string, name: string): void {
  const row = db.prepare<[], { name: string }>("SELECT name FROM owner").get();
  if (row === undefined) {
    db.prepare("INSERT INTO owner (name) VALUES (?)").run(name);
    return;
  }
  if (row.name !== name)
    throw new TscmigError(
      "failed_precondition",
      `journal ${path} belongs to the daemon named ${JSON.stringify(row.name)}, not ${JSON.stringify(name)}: start it with --name ${row.name}, or give this daemon its own --data`,
      { field: "name", reason: "journal_owner_mismatch" },
    );
}

function dataDirError(dir: string, e: unknown): TscmigError {
  const code = (e as { code?: unknown }).code;
  const why =
    code === "EEXIST" || code === "ENOTDIR"
      ? "a file is in the way (it must be a directory, or a path where one can be created)"
      : code === "EACCES" || code === "EPERM"
        ? "permission denied"
        : code === "ENOSPC" || code === "SQLITE_FULL"
          ? "the disk is full"
          : code === "EROFS" || code === "SQLITE_READONLY"
            ? "the filesystem is read-only"
            : `${String(code ?? "error")}: ${e instanceof Error ? e.message : String(e)}`;
  return new TscmigError("failed_precondition", `data directory ${dir}: ${why}`, { field: "data", reason: "data_dir_unusable" });
}

function checkId(id: string, field: string): void {
  if (id.length === 0 || id.length > LIMITS.idLengthMax) throw invalid(field, `length must be 1..${LIMITS.idLengthMax}`);
}

function checkRange(value: bigint, min: bigint, max: bigint, field: string): void {
  if (value < min || value > max) throw invalid(field, `must be within ${min}..${max}`);
}

/**
 * The record a row holds. `check` (every read but the upgrade's): the row's structure and checksum
 * are verified, and a damaged row throws `data_loss` naming the VM and the record.
 */
function vmOf(row: VmRow, check = true): VmRecord {
  const ref: RecordRef = { table: "vms", key: row.vm_id, vmId: row.vm_id };
  const rec: VmRecord = {
    vmId: row.vm_id,
    generation: intColumn(ref, row.generation, "generation"),
    role: row.role,
    // better-sqlite3 hands a BLOB back as a Buffer; callers get a plain Uint8Array, as they gave.
    state: typeof row.state === "string" ? row.state : new Uint8Array(row.state),
    updatedNs: intColumn(ref, row.updated_ns, "updatedNs"),
  };
  if (check) checkVmRecord(rec, row.checksum);
  return rec;
}

function migrationOf(row: MigrationRow, check = true): MigrationRecord {
  const ref: RecordRef = { table: "migrations", key: row.source ? `${row.source}/${row.migration_id}` : row.migration_id, vmId: row.vm_id };
  const rec: MigrationRecord = {
    migrationId: row.migration_id,
    source: row.source,
    sourceKey: row.source_key,
    vmId: row.vm_id,
    role: row.role,
    phase: row.phase,
    decision: row.decision,
    generation: intColumn(ref, row.generation, "generation"),
    peer: row.peer,
    ...(row.report !== null ? { report: row.report } : {}),
    updatedNs: intColumn(ref, row.updated_ns, "updatedNs"),
  };
  if (check) checkMigrationRecord(rec, row.checksum);
  return rec;
}
