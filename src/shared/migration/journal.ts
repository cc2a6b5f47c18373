// What a daemon journals durably (SPEC §2 phase 5): every VM's role and generation, and every
// migration's decision. The daemon uses the SQLite store (daemon/journal.ts); the simulator uses
// the in-memory one below, which survives simulated crashes because the simulator keeps it.

export type VmRole = "owner" | "migrating-out" | "staged" | "handed-off";
export type MigrationDecision = "pending" | "committed" | "aborted";

export interface VmRecord {
  vmId: string;
  generation: bigint;
  role: VmRole;
  state: Uint8Array | string;
  updatedNs: bigint;
}

export interface MigrationRecord {
  migrationId: string;
  vmId: string;
  role: "source" | "destination";
  phase: string;
  decision: MigrationDecision;
  generation: bigint;
  peer: string;
  report?: string;
  updatedNs: bigint;
}

export interface JournalStore {
  putVm(rec: VmRecord): void;
  getVm(vmId: string): VmRecord | undefined;
  listVms(): VmRecord[];
  deleteVm(vmId: string): void;
  putMigration(rec: MigrationRecord): void;
  getMigration(migrationId: string): MigrationRecord | undefined;
  listMigrations(filter?: { decision?: MigrationDecision; role?: "source" | "destination" }): MigrationRecord[];
  transaction<T>(fn: () => T): T;
  close(): void;
}

/** Durable across simulated crashes (the simulator holds it); a deep copy on every read and write. */
export class MemoryJournal implements JournalStore {
  private vms = new Map<string, VmRecord>();
  private migrations = new Map<string, MigrationRecord>();
  private tx: { vms: Map<string, VmRecord>; migrations: Map<string, MigrationRecord> } | null = null;

  putVm(rec: VmRecord): void {
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
    this.vms.delete(vmId);
  }
  putMigration(rec: MigrationRecord): void {
    this.migrations.set(rec.migrationId, { ...rec });
  }
  getMigration(id: string): MigrationRecord | undefined {
    const r = this.migrations.get(id);
    return r ? { ...r } : undefined;
  }
  listMigrations(filter: { decision?: MigrationDecision; role?: "source" | "destination" } = {}): MigrationRecord[] {
    return [...this.migrations.values()]
      .filter((m) => (filter.decision === undefined || m.decision === filter.decision) && (filter.role === undefined || m.role === filter.role))
      .map((m) => ({ ...m }));
  }
  transaction<T>(fn: () => T): T {
    if (this.tx) return fn();
    const saved = { vms: new Map(this.vms), migrations: new Map(this.migrations) };
    this.tx = saved;
    try {
      const out = fn();
      this.tx = null;
      return out;
    } catch (e) {
      this.vms = saved.vms;
      this.migrations = saved.migrations;
      this.tx = null;
      throw e;
    }
  }
  close(): void {}
}
