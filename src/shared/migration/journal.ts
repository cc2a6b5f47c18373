// What a daemon journals durably (docs/protocol.md#ownership-fencing-and-recovery): every VM's role and generation, and every
// migration's decision. The daemon uses the SQLite store (daemon/journal.ts); the simulator uses
// the in-memory one below, which survives simulated crashes because the simulator keeps it.

import { TscmigError } from "../errors.js";
import { sourceNoteFromJournal } from "./report.js";
import { checkMigrationRecord, checkVmRecord, migrationChecksum, vmChecksum } from "./journal-integrity.js";

export type VmRole =
  /** Runs the VM. */
  | "owner"
  /** Source side of a migration in flight: the VM is paused here, not yet handed over. */
  | "migrating-out"
  /** Destination side: holds a restored snapshot, does not run it until the handover is decided. */
  | "staged"
  /** Source after a committed handover: a tombstone keeping the generation to refuse stale traffic. */
  | "handed-off";

export type MigrationRole = "source" | "destination";
export type Decision = "pending" | "committed" | "aborted";

export interface VmRecord {
  vmId: string;
  /** Fencing generation (u64); never decreases for a VM. */
  generation: bigint;
  role: VmRole;
  /** The domain's own serialisation of the VM; returned in the form it was given. */
  state: Uint8Array | string;
  /** True time of the write, ns. */
  updatedNs: bigint;
}

export interface MigrationRecord {
  /**
   * Chosen by the source; unique per source only. A migration's identity is (source, migrationId),
   * so two sources that pick one id never touch each other's migration.
   */
  migrationId: string;
  /** The source daemon's name for a migration this daemon receives; "" for its own outbound ones. */
  source?: string;
  /**
   * The source's per-migration secret (hex), sent in Prepare and in every later message: only the
   * source that prepared a migration can feed, commit or abort it. "" where none was recorded.
   */
  sourceKey?: string;
  vmId: string;
  role: MigrationRole;
  /** The protocol phase reached, as the migration state machine names it. */
  phase: string;
  /** Once `committed` or `aborted`, final. */
  decision: Decision;
  generation: bigint;
  /** The other daemon's address. */
  peer: string;
  /** The migration report, serialised by the domain (JSON). */
  report?: string;
  updatedNs: bigint;
}

export interface MigrationFilter {
  decision?: Decision;
  role?: MigrationRole;
  /** Only what is not settled yet (`isUnsettled`): a few records, however long the history. */
  unsettled?: boolean;
  /**
   * Only the `newest` most recently updated records that match, ordered by update (oldest first)
   * rather than by insertion: a listing of the latest costs the same after a million migrations.
   */
  newest?: number;
}

/**
 * A migration that still needs something done: undecided, or committed by this daemon as its
 * source and not yet delivered (its phase is not `committed` until the destination acknowledged).
 */
export function isUnsettled(m: Pick<MigrationRecord, "decision" | "role" | "phase">): boolean {
  return m.decision === "pending" || (m.role === "source" && m.decision === "committed" && m.phase !== "committed");
}

/** The decision of a migration (the name the simulator and the node use). */
export type MigrationDecision = Decision;

export interface JournalStore {
  putVm(rec: VmRecord): void;
  getVm(vmId: string): VmRecord | undefined;
  listVms(): VmRecord[];
  deleteVm(vmId: string): void;
  putMigration(rec: MigrationRecord): void;
  /** This daemon's own outbound migration `migrationId` (source ""). */
  getMigration(migrationId: string): MigrationRecord | undefined;
  /**
   * The migration `migrationId` this daemon received from `source` (its identity is both: two
   * sources may use one id). A separate method, not an optional argument, so that no wrapper of a
   * store can drop the source and find another source's migration (or none) by the id alone.
   */
  getInboundMigration(source: string, migrationId: string): MigrationRecord | undefined;
  /** Matching every given field, oldest first (by insertion; by update with `newest`). */
  listMigrations(filter?: MigrationFilter): MigrationRecord[];
  transaction<T>(fn: () => T): T;
  close(): void;
  /**
   * Makes one tiny durable write and throws what any write would throw now (optional). The
   * daemon's durability monitor calls it to learn when a full or failing disk takes writes again;
   * a store without it is probed with an empty transaction, so a store that can fail (a fault
   * injector) should have it.
   */
  probe?(): void;
}

/**
 * The journal as the migration roles write it: a store whose storage failures are typed, that can
 * refuse a change up front while it cannot write, and that undoes in-memory effects of a
 * transaction that did not commit (the daemon's DurableJournal).
 */
export interface DurableStore extends JournalStore {
  /** Throws `resource_exhausted`/`unavailable` (naming `what`) while the journal cannot take writes. */
  requireWritable(what: string): void;
  /** Runs `fn` if the outermost transaction running now does not commit (no-op outside one). */
  onRollback(fn: () => void): void;
}

/** Why a journal write failed when the storage under it did (not a refusal, not a bug). */
export type StorageReason = "disk_full" | "journal_io_error";

export const STORAGE_REASONS: readonly string[] = ["disk_full", "journal_io_error"] satisfies StorageReason[];

export function isStorageError(e: unknown): e is TscmigError {
  return e instanceof TscmigError && e.reason !== undefined && STORAGE_REASONS.includes(e.reason);
}

/**
 * An abort decided while recovering after a restart. On a full disk the start goes on (the daemon
 * comes up not ready): the journal writes the abort when it can, and until then a restart decides
 * it again.
 */
export function journalAbortOnRecovery(journal: JournalStore, m: MigrationRecord, trueNs: bigint): void {
  try {
    journal.putMigration({ ...m, decision: "aborted", phase: "aborted", updatedNs: trueNs });
  } catch (e) {
    if (!isStorageError(e)) throw e;
  }
}

/** The Transfer round trip a source journaled with its decision (0 when absent or unreadable). */
export function journaledRtt(report: string | undefined): bigint {
  return sourceNoteFromJournal(report).transferRttNs;
}

/** One string per (source, migration id): ids never contain NUL. */
function migrationKey(migrationId: string, source: string): string {
  return `${source}\u0000${migrationId}`;
}

/**
 * Durable across simulated crashes (the simulator holds it); a copy on every read and write. A
 * transaction keeps an undo log of the entries it overwrote, so its cost does not grow with the
 * number of records (copying both maps would make a long simulated run quadratic).
 *
 * Every read checks the record as the SQLite journal checks its rows (journal-integrity.ts), so a
 * damaged record reaches the node through the same path in simulation as on a disk.
 * `corruptVm` and `corruptMigration` damage a stored record the way an edit in place would: the
 * record changes and its checksum (taken just before) does not — the simulator's "damaged record
 * at restart" fault. A record nobody damaged is what was put, so its checksum is only computed
 * when it is damaged: every put stays off the hash, on the simulator's hot path.
 */
export class MemoryJournal implements JournalStore {
  private readonly vms = new Map<string, Stored<VmRecord>>();
  private readonly migrations = new Map<string, Stored<MigrationRecord>>();
  private undo: (() => void)[] | null = null;

  /** Inside a transaction, remembers how to put `key` of `map` back as it is now. */
  private remember<V>(map: Map<string, V>, key: string): void {
    if (this.undo === null) return;
    const had = map.has(key);
    const prior = map.get(key);
    this.undo.push(() => (had ? map.set(key, prior as V) : map.delete(key)));
  }

  putVm(rec: VmRecord): void {
    this.remember(this.vms, rec.vmId);
    this.vms.set(rec.vmId, { rec: { ...rec }, checksum: "unchanged" });
  }
  getVm(vmId: string): VmRecord | undefined {
    const s = this.vms.get(vmId);
    return s ? readVm(s) : undefined;
  }
  listVms(): VmRecord[] {
    return [...this.vms.values()].map(readVm);
  }
  deleteVm(vmId: string): void {
    this.remember(this.vms, vmId);
    this.vms.delete(vmId);
  }
  putMigration(rec: MigrationRecord): void {
    const key = migrationKey(rec.migrationId, rec.source ?? "");
    this.remember(this.migrations, key);
    this.migrations.set(key, { rec: { ...rec, source: rec.source ?? "", sourceKey: rec.sourceKey ?? "" }, checksum: "unchanged" });
  }
  getMigration(id: string): MigrationRecord | undefined {
    return this.getInboundMigration("", id);
  }
  getInboundMigration(source: string, id: string): MigrationRecord | undefined {
    const s = this.migrations.get(migrationKey(id, source));
    return s ? readMigration(s) : undefined;
  }
  listMigrations(filter: MigrationFilter = {}): MigrationRecord[] {
    let found: Stored<MigrationRecord>[] = [];
    for (const s of this.migrations.values()) if (matches(s.rec, filter)) found.push(s);
    if (filter.newest !== undefined) found = newestOf(found, filter.newest);
    return found.map(readMigration);
  }
  /**
   * Whether a stored migration matches `filter` and `pred`, without copying every match as
   * `listMigrations` does (the simulator asks this every 250 ms of a run's settling, while a Prepare
   * flood keeps hundreds pending). The match found is checked as a read would check it.
   */
  hasMigration(filter: MigrationFilter, pred: (r: Readonly<MigrationRecord>) => boolean = () => true): boolean {
    for (const s of this.migrations.values())
      if (matches(s.rec, filter) && pred(s.rec)) {
        checkMigrationRecord(s.rec, s.checksum);
        return true;
      }
    return false;
  }
  transaction<T>(fn: () => T): T {
    if (this.undo !== null) return fn();
    const undo: (() => void)[] = [];
    this.undo = undo;
    try {
      const out = fn();
      this.undo = null;
      return out;
    } catch (e) {
      this.undo = null;
      for (let i = undo.length - 1; i >= 0; i--) (undo[i] as () => void)();
      throw e;
    }
  }
  close(): void {}

  /**
   * Test hook (the simulator's damaged-record fault): changes the stored VM record in place with
   * `mutate` and keeps its old checksum, as an edit of the file would. The next read of it throws
   * `data_loss` (reason `journal_record_damaged`) naming the VM. False when there is no such record.
   */
  corruptVm(vmId: string, mutate: (rec: VmRecord) => void): boolean {
    const s = this.vms.get(vmId);
    if (!s) return false;
    if (s.checksum === "unchanged") s.checksum = vmChecksum(s.rec);
    mutate(s.rec);
    return true;
  }

  /** The same for a migration record (`source` "": this daemon's own outbound one). */
  corruptMigration(migrationId: string, mutate: (rec: MigrationRecord) => void, source = ""): boolean {
    const s = this.migrations.get(migrationKey(migrationId, source));
    if (!s) return false;
    if (s.checksum === "unchanged") s.checksum = migrationChecksum(s.rec);
    mutate(s.rec);
    return true;
  }
}

interface Stored<R> {
  rec: R;
  /** The checksum taken when the record was damaged; "unchanged" while it is what was put. */
  checksum: string | "unchanged";
}

function matches(r: MigrationRecord, f: MigrationFilter): boolean {
  return (f.decision === undefined || r.decision === f.decision) && (f.role === undefined || r.role === f.role) && (!f.unsettled || isUnsettled(r));
}

/** The `n` last updated of `found` (in insertion order), oldest first; ties keep insertion order. */
function newestOf<R extends { rec: MigrationRecord }>(found: R[], n: number): R[] {
  const byUpdate = found.map((s, i) => ({ s, i })).sort((a, b) => (a.s.rec.updatedNs < b.s.rec.updatedNs ? -1 : a.s.rec.updatedNs > b.s.rec.updatedNs ? 1 : a.i - b.i));
  return byUpdate.slice(Math.max(0, byUpdate.length - n)).map((x) => x.s);
}

function readVm(s: Stored<VmRecord>): VmRecord {
  checkVmRecord(s.rec, s.checksum);
  return { ...s.rec };
}

function readMigration(s: Stored<MigrationRecord>): MigrationRecord {
  checkMigrationRecord(s.rec, s.checksum);
  return { ...s.rec };
}
