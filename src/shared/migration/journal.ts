// What a daemon journals durably (SPEC §2 phase 5): every VM's role and generation, and every
// migration's decision. The daemon uses the SQLite store (daemon/journal.ts); the simulator uses
// the in-memory one below, which survives simulated crashes because the simulator keeps it.

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
}

/** The decision of a migration (the name the simulator and the node use). */
export type MigrationDecision = Decision;

export interface JournalStore {
  putVm(rec: VmRecord): void;
  getVm(vmId: string): VmRecord | undefined;
  listVms(): VmRecord[];
  deleteVm(vmId: string): void;
  putMigration(rec: MigrationRecord): void;
  /** The migration (source, migrationId); `source` "" (default): this daemon's own outbound one. */
  getMigration(migrationId: string, source?: string): MigrationRecord | undefined;
  listMigrations(filter?: { decision?: MigrationDecision; role?: "source" | "destination" }): MigrationRecord[];
  transaction<T>(fn: () => T): T;
  close(): void;
}

/** One string per (source, migration id): ids never contain NUL. */
function migrationKey(migrationId: string, source: string): string {
  return `${source}\u0000${migrationId}`;
}

/**
 * Durable across simulated crashes (the simulator holds it); a copy on every read and write. A
 * transaction keeps an undo log of the entries it overwrote, so its cost does not grow with the
 * number of records (it used to copy both maps: quadratic over a long simulated run).
 */
export class MemoryJournal implements JournalStore {
  private readonly vms = new Map<string, VmRecord>();
  private readonly migrations = new Map<string, MigrationRecord>();
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
    this.vms.set(rec.vmId, { ...rec });
  }
  getVm(vmId: string): VmRecord | undefined {
    const r = this.vms.get(vmId);
    return r ? { ...r } : undefined;
  }
  listVms(): VmRecord[] {
    return [...this.vms.values()].map((r) => ({ ...r }));
  }
  deleteVm(vmId: string): void {
    this.remember(this.vms, vmId);
    this.vms.delete(vmId);
  }
  putMigration(rec: MigrationRecord): void {
    const key = migrationKey(rec.migrationId, rec.source ?? "");
    this.remember(this.migrations, key);
    this.migrations.set(key, { ...rec, source: rec.source ?? "", sourceKey: rec.sourceKey ?? "" });
  }
  getMigration(id: string, source = ""): MigrationRecord | undefined {
    const r = this.migrations.get(migrationKey(id, source));
    return r ? { ...r } : undefined;
  }
  listMigrations(filter: { decision?: MigrationDecision; role?: "source" | "destination" } = {}): MigrationRecord[] {
    return [...this.migrations.values()]
      .filter((m) => (filter.decision === undefined || m.decision === filter.decision) && (filter.role === undefined || m.role === filter.role))
      .map((m) => ({ ...m }));
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
}
