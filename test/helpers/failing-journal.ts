// A journal whose disk can fill up: wraps a MemoryJournal and, while `full`, makes chosen writes
// throw exactly what better-sqlite3 throws on a full disk (`code: "SQLITE_FULL"`, "database or disk
// is full"), either at the statement or at COMMIT (when the transaction around it ends), as SQLite
// does depending on where the pages run out. Every write of a failed transaction is rolled back.

import { type JournalStore, MemoryJournal, type MigrationRecord, type VmRecord } from "../../src/shared/migration/journal.js";

export class DiskFullError extends Error {
  readonly code: string;
  constructor(code = "SQLITE_FULL") {
    super(code === "SQLITE_FULL" ? "database or disk is full" : "no space left on device");
    this.name = "SqliteError";
    this.code = code;
  }
}

export type WriteOp = { kind: "putVm"; rec: VmRecord } | { kind: "putMigration"; rec: MigrationRecord } | { kind: "deleteVm"; vmId: string } | { kind: "probe" };

export class FailingJournal implements JournalStore {
  readonly inner = new MemoryJournal();
  /** While true, writes `failIf` picks throw; the transaction around them rolls back. */
  full = false;
  /** Which writes fail while full (default: all). */
  failIf: (op: WriteOp) => boolean = () => true;
  /** Throw at the statement (default) or when the outermost transaction commits. */
  failAt: "statement" | "commit" = "statement";
  writes = 0;
  transactions = 0;
  failures = 0;
  private depth = 0;
  private doomed = false;

  private check(op: WriteOp): void {
    if (!this.full || !this.failIf(op)) return;
    if (this.failAt === "commit" && this.depth > 0) {
      this.doomed = true;
      return;
    }
    this.failures++;
    throw new DiskFullError();
  }

  putVm(rec: VmRecord): void {
    this.check({ kind: "putVm", rec });
    this.writes++;
    this.inner.putVm(rec);
  }
  getVm(vmId: string): VmRecord | undefined {
    return this.inner.getVm(vmId);
  }
  listVms(): VmRecord[] {
    return this.inner.listVms();
  }
  deleteVm(vmId: string): void {
    this.check({ kind: "deleteVm", vmId });
    this.writes++;
    this.inner.deleteVm(vmId);
  }
  putMigration(rec: MigrationRecord): void {
    this.check({ kind: "putMigration", rec });
    this.writes++;
    this.inner.putMigration(rec);
  }
  getMigration(id: string): MigrationRecord | undefined {
    return this.inner.getMigration(id);
  }
  getInboundMigration(source: string, id: string): MigrationRecord | undefined {
    return this.inner.getInboundMigration(source, id);
  }
  listMigrations(filter?: Parameters<JournalStore["listMigrations"]>[0]): MigrationRecord[] {
    return this.inner.listMigrations(filter);
  }
  transaction<T>(fn: () => T): T {
    if (this.depth > 0) return fn();
    this.transactions++;
    this.depth = 1;
    this.doomed = false;
    try {
      return this.inner.transaction(() => {
        const out = fn();
        if (this.doomed) {
          this.failures++;
          throw new DiskFullError();
        }
        return out;
      });
    } finally {
      this.depth = 0;
      this.doomed = false;
    }
  }
  close(): void {}
  probe(): void {
    this.check({ kind: "probe" });
  }
}
