// How a node keeps its VMs' journal records current: written when they change, never on a timer.
//
// What changes a VM's journaled state, and how each is written:
// - Ownership and migration steps (create, pause, resume, adopt, hand-off) and a guest acting on a
//   migration: written at once (`write`), because what happens next depends on them being durable
//   (a create reports success, a migration decides, "handled exactly once" must survive a restart).
// - A guest's NTP sync (wall offset, error bound, status): queued (`changed`) and written with every
//   other VM queued within `batchDelayNs`, in one transaction, with the VM's hypervisor part as the
//   last full write serialised it (a sync changes only guest memory: serialising the hypervisor
//   state again was most of the cost of a sync's write). A restart that loses the last batch
//   restores the sync before, whose bound has grown since by the kernel's 500 ppm per second, so
//   the guest's bounded clock stays honest; it is never a state from before a migration, because a
//   migration's steps are written at once and flush the VM's queued change with them.
// - Nothing else changes while a VM idles: the hypervisor state moves only at KVM operations (all
//   above), the NTP error growth is recomputed from the sync on every read (second_overflow catch-up),
//   and the guest's last kvmclock reading is a clamp a restart re-establishes from the clock itself.
//   So an idle daemon writes nothing between syncs: no periodic re-persist, no stall.
//
// A write that fails on storage (disk full) keeps the VM queued; the durable journal's retry loop
// writes the queue again before it declares the journal writable.

import type { Logger } from "../shared/logger.js";
import type { HostedVm } from "../shared/migration/hosted-vm.js";
import { persistVmPart, persistWithVmPart } from "../shared/migration/hosted-vm.js";
import type { Scheduler, Timer } from "../shared/time/clock.js";
import { type DurableJournal, isStorageError } from "./durable-journal.js";

/** Queued VMs written per transaction: a bounded stall however many came due at once. */
export const PERSIST_BATCH_MAX = 256;

export interface VmPersistenceDeps {
  journal: DurableJournal;
  scheduler: Scheduler;
  log: Logger;
  /** Host true time (the records' `updatedNs`). */
  trueNs: () => bigint;
  /** How long a queued change waits for others to share its transaction. */
  batchDelayNs: bigint;
}

export class VmPersistence {
  /** Each VM's hypervisor part as its last full write serialised it (a sync or a role change reuses it). */
  private readonly vmPart = new Map<string, string>();
  private readonly queued = new Map<string, HostedVm>();
  /** Queued VMs whose failed write was a full one: their hypervisor part is serialised again. */
  private readonly queuedFull = new Set<string>();
  /** What waits for a VM's next successful write (`writeOrQueue`'s `then`), by VM. */
  private readonly afterWrite = new Map<string, (() => void)[]>();
  /** Tombstones whose write failed on storage, by VM (with the state they hold): written by the retry loop. */
  private readonly tombstones = new Map<string, { generation: bigint; state: string }>();
  private flushTimer: Timer | null = null;
  private stopped = false;

  constructor(private readonly deps: VmPersistenceDeps) {
    deps.journal.onRetry(() => this.writeQueued(Number.MAX_SAFE_INTEGER));
  }

  /**
   * Writes `h` now, with its queued change if any. `full`: serialise the hypervisor state again
   * (a KVM operation changed it); else the last full write's, with the guest's state as it is now.
   * Throws a storage failure, typed.
   */
  write(h: HostedVm, full: boolean): void {
    let part = this.vmPart.get(h.id);
    if (full || part === undefined || this.queuedFull.has(h.id)) part = persistVmPart(h);
    this.deps.journal.putVm({ vmId: h.id, generation: h.generation, role: h.role, state: persistWithVmPart(part, h), updatedNs: this.deps.trueNs() });
    this.vmPart.set(h.id, part);
    this.queued.delete(h.id);
    this.queuedFull.delete(h.id);
    this.tombstones.delete(h.id);
    this.written(h.id);
  }

  /**
   * `write`, except that a storage failure leaves the VM queued for the retry loop instead of
   * throwing; `then` runs once the write landed (now, or when the queue is written).
   */
  writeOrQueue(h: HostedVm, full: boolean, then?: () => void): void {
    if (then) this.afterWrite.set(h.id, [...(this.afterWrite.get(h.id) ?? []), then]);
    try {
      this.write(h, full);
    } catch (e) {
      if (!isStorageError(e)) throw e;
      this.queued.set(h.id, h);
      if (full) this.queuedFull.add(h.id);
      this.deps.log.warn({ event: "vm_write_deferred", vmId: h.id, err: e.toJSON() }, "VM state not journaled; retried when the journal takes writes");
    }
  }

  /** The VM changed in a way a restart should keep and nothing waits on: written with others soon. */
  changed(h: HostedVm): void {
    this.queued.set(h.id, h);
    if (this.flushTimer !== null || this.stopped) return;
    this.flushTimer = this.deps.scheduler.after(this.deps.batchDelayNs, () => {
      this.flushTimer = null;
      this.flush();
    });
  }

  /**
   * The VM left this daemon: its tombstone is written (or kept for the retry loop), holding the
   * paused VM's state until the destination acknowledges the Commit (`released`): a destination that
   * refuses it for good never runs the VM, and then this daemon takes it back, from this state after
   * a restart too.
   */
  handedOff(h: HostedVm, generation: bigint): void {
    let part = this.vmPart.get(h.id);
    if (part === undefined || this.queuedFull.has(h.id)) part = persistVmPart(h);
    const state = persistWithVmPart(part, h);
    this.forget(h.id);
    this.tombstone(h.id, generation, state);
  }

  /** The VM's tombstone holds no state any more: the destination has it for good (or it was deleted). */
  released(vmId: string, generation: bigint): void {
    this.tombstone(vmId, generation, "");
  }

  private tombstone(vmId: string, generation: bigint, state: string): void {
    try {
      this.writeTombstone(vmId, generation, state);
    } catch (e) {
      if (!isStorageError(e)) throw e;
      this.tombstones.set(vmId, { generation, state });
      this.deps.log.warn({ event: "tombstone_write_deferred", vmId, err: e.toJSON() }, "tombstone not journaled; retried when the journal takes writes");
    }
  }

  /** Forget the VM (it left memory without a record of its own to write). */
  forget(vmId: string): void {
    this.vmPart.delete(vmId);
    this.queued.delete(vmId);
    this.queuedFull.delete(vmId);
    this.afterWrite.delete(vmId);
    this.tombstones.delete(vmId);
  }

  /** Writes every queued change now (graceful stop); storage failures are left for the retry loop. */
  stop(): void {
    this.flushTimer?.cancel();
    this.flushTimer = null;
    this.flush(Number.MAX_SAFE_INTEGER);
    this.stopped = true;
  }

  get queuedCount(): number {
    return this.queued.size + this.tombstones.size;
  }

  /** One batch; what is left is taken up on a later turn, so no turn stalls on thousands of VMs. */
  private flush(max = PERSIST_BATCH_MAX): void {
    try {
      this.writeQueued(max);
    } catch (e) {
      if (!isStorageError(e)) throw e;
      return; // still queued; the journal's retry loop writes them
    }
    if (this.queued.size > 0 && !this.stopped && this.flushTimer === null)
      this.flushTimer = this.deps.scheduler.after(0n, () => {
        this.flushTimer = null;
        this.flush();
      });
  }

  /**
   * Up to `max` queued VMs (and every pending tombstone) in one transaction; throws on failure.
   * The queue changes only once the transaction committed: a failed one leaves everything queued.
   */
  private writeQueued(max: number): void {
    if (this.queued.size === 0 && this.tombstones.size === 0) return;
    const batch: { h: HostedVm; part: string; state: string }[] = [];
    for (const h of this.queued.values()) {
      if (batch.length >= max) break;
      const cached = this.queuedFull.has(h.id) ? undefined : this.vmPart.get(h.id);
      const part = cached ?? persistVmPart(h);
      batch.push({ h, part, state: persistWithVmPart(part, h) });
    }
    const graves = [...this.tombstones];
    const updatedNs = this.deps.trueNs();
    this.deps.journal.transaction(() => {
      for (const [vmId, t] of graves) this.writeTombstone(vmId, t.generation, t.state);
      for (const { h, state } of batch) this.deps.journal.putVm({ vmId: h.id, generation: h.generation, role: h.role, state, updatedNs });
    });
    for (const [vmId, t] of graves) if (this.tombstones.get(vmId) === t) this.tombstones.delete(vmId);
    for (const { h, part } of batch) {
      if (this.queued.get(h.id) !== h) continue;
      this.queued.delete(h.id);
      this.queuedFull.delete(h.id);
      this.vmPart.set(h.id, part);
      this.written(h.id);
    }
  }

  private written(vmId: string): void {
    const fns = this.afterWrite.get(vmId);
    if (fns === undefined) return;
    this.afterWrite.delete(vmId);
    for (const fn of fns) fn();
  }

  private writeTombstone(vmId: string, generation: bigint, state: string): void {
    this.deps.journal.putVm({ vmId, generation, role: "handed-off", state, updatedNs: this.deps.trueNs() });
  }
}
