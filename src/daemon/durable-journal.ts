// The node's view of its journal when the disk under it fails: a full filesystem (SQLITE_FULL,
// ENOSPC, EDQUOT) or an I/O error. Every write goes through here, and a storage failure
//  - becomes a typed error the caller can act on: `resource_exhausted` (reason `disk_full`) or
//    `unavailable` (reason `journal_io_error`), never a raw SqliteError out of a timer;
//  - marks the journal unwritable: the daemon stays up, reads keep working, readiness says why, and
//    mutating calls are refused up front (`requireWritable`);
//  - starts a retry loop with a bounded back-off (100 ms doubling to LIMITS.journalRetryNsMax) that
//    redoes the writes left pending (the node's dirty VMs) and a probe write, and declares the
//    journal writable again once both succeed: the daemon recovers by itself when space returns.
//
// Whether a failed write may have landed anyway matters to a decision (migrate-out.ts): SQLite
// rolls a full-disk failure back completely (`landed: "no"`), but after an I/O error at commit the
// record may or may not be on disk (`landed: "unknown"`).
//
// An abort's migration record that fails on storage is kept and written again by the retry loop
// (it still throws to its caller): an abort is final and idempotent, so writing it late is always
// right, and until then a restart aborts what it finds undecided anyway.
//
// A transaction can carry rollback hooks (`onRollback`): in-memory changes made inside it that must
// be undone when it does not commit (a destination that adopted a VM inside the transaction that
// journals it must not keep it running when that transaction fails).

import { TscmigError } from "../shared/errors.js";
import { CrashSignal } from "../shared/faults.js";
import { LIMITS } from "../shared/limits.js";
import type { Logger } from "../shared/logger.js";
import { type DurableStore, isStorageError, type JournalStore, type MigrationRecord, type StorageReason, type VmRecord } from "../shared/migration/journal.js";

export { isStorageError, STORAGE_REASONS, type StorageReason } from "../shared/migration/journal.js";
import type { Scheduler, Timer } from "../shared/time/clock.js";

export const JOURNAL_RETRY_NS_MIN = 100_000_000n;

export interface JournalHealth {
  writable: boolean;
  /** Why not, while not writable. */
  reason?: StorageReason;
  /** The storage error as the store reported it. */
  detail?: string;
  /** Host true time of the first failure of this episode. */
  sinceNs?: bigint;
  /** Failed writes and probes in this episode. */
  failures: number;
}

/** The storage failure an error stands for, or null when it is something else (a refusal, a bug). */
export function storageFailureOf(e: unknown): { reason: StorageReason; detail: string } | null {
  if (typeof e !== "object" || e === null) return null;
  const code = (e as { code?: unknown }).code;
  if (typeof code !== "string") return null;
  const detail = `${code}: ${(e as { message?: unknown }).message ?? ""}`;
  if (code === "SQLITE_FULL" || code === "ENOSPC" || code === "EDQUOT") return { reason: "disk_full", detail };
  if (/^SQLITE_(IOERR|READONLY|CANTOPEN)/.test(code) || code === "EIO" || code === "EROFS") return { reason: "journal_io_error", detail };
  return null;
}

/** Did a write that failed with `e` possibly reach the disk? */
export function mayHaveLanded(e: unknown): boolean {
  return !(e instanceof TscmigError && e.reason === "disk_full");
}

function storageError(reason: StorageReason, detail: string): TscmigError {
  return reason === "disk_full"
    ? new TscmigError("resource_exhausted", `the journal's disk is full (${detail}); this daemon refuses changes until space is freed`, { reason })
    : new TscmigError("unavailable", `the journal cannot be written (${detail}); this daemon refuses changes until writes succeed again`, { reason });
}

export interface DurableJournalDeps {
  scheduler: Scheduler;
  log: Logger;
  /** Host true time (for `sinceNs` only). */
  trueNs: () => bigint;
}

export class DurableJournal implements DurableStore {
  private state: JournalHealth = { writable: true, failures: 0 };
  private retryTimer: Timer | null = null;
  private retryDelayNs = JOURNAL_RETRY_NS_MIN;
  private lastRetryNs = -1n;
  private rollbacks: (() => void)[] | null = null;
  private readonly pending: (() => void)[] = [];
  /** Abort records whose write failed on storage, by migration id. */
  private readonly deferredAborts = new Map<string, MigrationRecord>();
  private stopped = false;

  constructor(
    readonly inner: JournalStore,
    private readonly deps: DurableJournalDeps,
  ) {}

  health(): JournalHealth {
    return { ...this.state };
  }

  /** Refuses a change up front while the journal is unwritable (after one retry, at most every 100 ms). */
  requireWritable(what: string): void {
    if (this.state.writable) return;
    const now = this.deps.trueNs();
    if (this.lastRetryNs < 0n || now - this.lastRetryNs >= JOURNAL_RETRY_NS_MIN) this.retryNow();
    if (this.state.writable) return;
    const e = storageError(this.state.reason ?? "journal_io_error", this.state.detail ?? "unknown");
    throw new TscmigError(e.code, `cannot ${what}: ${e.message}`, { reason: e.reason as string });
  }

  /**
   * Work the retry loop redoes before its probe: writes the node keeps pending while the journal
   * fails (its dirty VMs). It throws what the write throws; it runs in registration order.
   */
  onRetry(fn: () => void): void {
    this.pending.push(fn);
  }

  /** Undoes `fn` if the outermost transaction running now does not commit (no-op outside one). */
  onRollback(fn: () => void): void {
    this.rollbacks?.push(fn);
  }

  stop(): void {
    this.stopped = true;
    this.retryTimer?.cancel();
    this.retryTimer = null;
  }

  // ---- JournalStore ------------------------------------------------------------------------------

  putVm(rec: VmRecord): void {
    this.write(() => this.inner.putVm(rec));
  }
  getVm(vmId: string): VmRecord | undefined {
    return this.inner.getVm(vmId);
  }
  listVms(): VmRecord[] {
    return this.inner.listVms();
  }
  deleteVm(vmId: string): void {
    this.write(() => this.inner.deleteVm(vmId));
  }
  putMigration(rec: MigrationRecord): void {
    try {
      this.write(() => this.inner.putMigration(rec));
    } catch (e) {
      if (rec.decision === "aborted" && isStorageError(e)) this.deferredAborts.set(abortKey(rec), { ...rec });
      throw e;
    }
    this.deferredAborts.delete(abortKey(rec));
  }
  getMigration(migrationId: string): MigrationRecord | undefined {
    return this.inner.getMigration(migrationId);
  }
  getInboundMigration(source: string, migrationId: string): MigrationRecord | undefined {
    return this.inner.getInboundMigration(source, migrationId);
  }
  listMigrations(filter?: Parameters<JournalStore["listMigrations"]>[0]): MigrationRecord[] {
    return this.inner.listMigrations(filter);
  }
  transaction<T>(fn: () => T): T {
    if (this.rollbacks !== null) return this.write(() => this.inner.transaction(fn));
    const hooks: (() => void)[] = [];
    this.rollbacks = hooks;
    try {
      return this.write(() => this.inner.transaction(fn));
    } catch (e) {
      this.rollbacks = null;
      // A simulated crash kills the process: nothing of it acts any more, undo included.
      if (!(e instanceof CrashSignal)) for (let i = hooks.length - 1; i >= 0; i--) (hooks[i] as () => void)();
      throw e;
    } finally {
      this.rollbacks = null;
    }
  }
  close(): void {
    this.stop();
    this.inner.close();
  }
  probe(): void {
    this.write(() => (this.inner.probe ? this.inner.probe() : this.inner.transaction(() => undefined)));
  }

  // ---- failure and recovery ----------------------------------------------------------------------

  private write<T>(fn: () => T): T {
    try {
      return fn();
    } catch (e) {
      const f = storageFailureOf(e);
      if (f === null) throw e;
      this.failed(f.reason, f.detail);
      throw storageError(f.reason, f.detail);
    }
  }

  private failed(reason: StorageReason, detail: string): void {
    const s = this.state;
    if (s.writable) {
      this.state = { writable: false, reason, detail, sinceNs: this.deps.trueNs(), failures: 1 };
      this.retryDelayNs = JOURNAL_RETRY_NS_MIN;
      this.deps.log.error({ event: "journal_unwritable", reason, detail }, "journal write failed: refusing changes until it can be written again");
    } else {
      this.state = { ...s, reason, detail, failures: s.failures + 1 };
    }
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    if (this.stopped || this.retryTimer !== null) return;
    this.retryTimer = this.deps.scheduler.after(this.retryDelayNs, () => {
      this.retryTimer = null;
      const doubled = this.retryDelayNs * 2n;
      this.retryDelayNs = doubled < LIMITS.journalRetryNsMax ? doubled : LIMITS.journalRetryNsMax;
      this.retryNow(); // a failure re-arms this timer, with the doubled delay
    });
  }

  private writeDeferredAborts(): void {
    for (const [id, rec] of [...this.deferredAborts]) {
      try {
        this.write(() => this.inner.putMigration(rec));
      } catch (e) {
        if (isStorageError(e)) throw e;
        // Decided otherwise meanwhile (the journal refuses to change a decision): nothing to write.
        this.deps.log.warn({ event: "deferred_abort_dropped", migrationId: id, err: e instanceof TscmigError ? e.toJSON() : String(e) }, "deferred abort record dropped");
      }
      this.deferredAborts.delete(id);
    }
  }

  /** Redoes the pending writes, then probes; writable again when every one of them succeeds. */
  private retryNow(): void {
    this.lastRetryNs = this.deps.trueNs();
    try {
      this.writeDeferredAborts();
      for (const fn of this.pending) fn();
      this.probe();
    } catch (e) {
      if (!isStorageError(e)) throw e;
      return; // still failing: write() recorded it and keeps the loop going
    }
    if (this.state.writable) return;
    const was = this.state;
    this.state = { writable: true, failures: 0 };
    this.retryTimer?.cancel();
    this.retryTimer = null;
    this.deps.log.info({ event: "journal_writable", reason: was.reason, failures: was.failures, sinceNs: was.sinceNs }, "journal writable again");
  }
}

/** A migration's identity (source, id) as one map key: ids never contain NUL. */
function abortKey(rec: MigrationRecord): string {
  return `${rec.source ?? ""}\u0000${rec.migrationId}`;
}
