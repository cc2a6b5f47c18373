// The destination role of one daemon: the peer protocol's inbound calls (migrate-in.ts runs each
// migration's machine), refused up front while the journal cannot take writes; the staged
// snapshots it keeps durable between Transfer and the decision; and its own recovery after a
// restart (staged snapshots held again, prepared-but-never-staged ones aborted, the sources asked
// what they decided).

import type { Faults } from "../shared/faults.js";
import type { Logger } from "../shared/logger.js";
import type { EmulatedHost } from "../shared/hypervisor/host.js";
import type { HypervisorBackend } from "../shared/hypervisor/backend.js";
import type { TruthProbe } from "../shared/hypervisor/truth.js";
import { checkInboundSource } from "../shared/migration/admission.js";
import type { StagedPayload } from "../shared/migration/hosted-vm.js";
import { type DurableStore, isStorageError, journalAbortOnRecovery, type MigrationRecord } from "../shared/migration/journal.js";
import type {
  AbortReq,
  CommitReq,
  CommitRes,
  PeerDialer,
  PrepareReq,
  PrepareRes,
  ProbeReq,
  ProbeRes,
  ResolveReq,
  ResolveRes,
  SourceRef,
  TransferReq,
  TransferRes,
} from "../shared/migration/messages.js";
import { checkHostPort, type Snapshot } from "../shared/migration/snapshot.js";
import type { RecoveryTask, VmRegistry } from "../shared/migration/vm-registry.js";
import { toJson } from "../shared/serde.js";
import { Destination, type Inbound, inboundKey, type RestoreFn } from "./migrate-in.js";

export interface DestinationDeps {
  name: string;
  host: EmulatedHost;
  /** Makes the VM a snapshot is restored into. */
  backend: HypervisorBackend;
  /** True time, for the report's diagnostics only. */
  truth: TruthProbe;
  journal: DurableStore;
  faults: Faults;
  log: Logger;
  dialer: PeerDialer;
  vms: VmRegistry;
  /** Migrations this daemon runs as a source now (they count against the same in-flight limit). */
  outboundInFlight: () => number;
  /** Test seam (chaos sensitivity tests): replaces the restore. Never set in production. */
  restore?: RestoreFn;
  /** Test seam (chaos sensitivity tests): a fencing Resolve answers without fencing. Never set in production. */
  brokenFence?: boolean;
}

export class DestinationRole {
  private readonly core: Destination;
  /** Each held migration's recovery task, made once: a flood holds hundreds, asked for every pass. */
  private readonly tasks = new WeakMap<Inbound, RecoveryTask>();

  constructor(private readonly deps: DestinationDeps) {
    const { vms, dialer } = deps;
    this.core = new Destination({
      name: deps.name,
      host: deps.host,
      backend: deps.backend,
      truth: deps.truth,
      journal: deps.journal,
      faults: deps.faults,
      log: deps.log,
      localVm: (id) => {
        const h = vms.find(id);
        return h ? { generation: h.generation, role: h.role } : null;
      },
      tombstone: (id) => vms.tombstone(id)?.generation ?? null,
      vmCount: () => vms.size,
      checkPeerAddress: (address, field) => (dialer.checkAddress ? dialer.checkAddress(address, field) : checkHostPort(address, field)),
      adopt: (inb, vm, result) => {
        const s = inb.snapshot as Snapshot;
        return vms.adopt(vm, {
          vmId: inb.req.vmId,
          generation: inb.req.generation,
          migrationId: inb.req.migrationId,
          guest: s.guest,
          doorbell: inb.req.doorbell,
          advancedNs: result.advancedNs,
          errorBoundNs: result.errorBoundNs,
        });
      },
      stageDurably: (inb) => this.stageDurably(inb),
      dropStaged: (inb) => this.dropStaged(inb),
      inflight: () => deps.outboundInFlight() + this.core.pendingCount(),
      ...(deps.restore ? { restore: deps.restore } : {}),
      ...(deps.brokenFence ? { brokenFence: true } : {}),
    });
  }

  // ---- the peer protocol's inbound calls ------------------------------------------------------------

  prepare(req: PrepareReq): PrepareRes {
    checkInboundSource(req, this.deps.name);
    this.deps.journal.requireWritable("accept a migration");
    return this.core.prepare(req);
  }

  probe(req: ProbeReq): ProbeRes {
    return this.core.probe(req);
  }

  transfer(req: TransferReq, receiveRawNs: bigint, decodeNs: bigint): TransferRes {
    this.deps.journal.requireWritable("stage a migration");
    return this.core.transfer(req, receiveRawNs, decodeNs);
  }

  /** `receiveRawNs`: this host's raw clock when the Commit arrived. */
  commit(req: CommitReq, receiveRawNs: bigint): CommitRes {
    this.deps.journal.requireWritable("run a migrated VM");
    return this.core.commit(req, receiveRawNs);
  }

  /** A Handover call opens for this prepared migration (its source's key checked). */
  handoverOpen(ref: SourceRef, migrationId: string): void {
    this.core.handoverOpen(ref, migrationId);
  }

  /** An answer on this migration's Handover call (`opened`, a probe) is about to leave. */
  handoverAnswering(ref: SourceRef, migrationId: string, requestReceivedRawNs: bigint): void {
    this.core.handoverAnswering(ref, migrationId, requestReceivedRawNs);
  }

  abort(req: AbortReq): void {
    this.core.abort(req);
  }

  /** An on-receipt source asks what became of its Transfer; anything but "committed" is fenced first. */
  resolveForSource(req: ResolveReq & { fence: NonNullable<ResolveReq["fence"]> }): ResolveRes {
    return this.core.resolveForSource(req);
  }

  // ---- what it holds ----------------------------------------------------------------------------------

  /** Migrations still undecided here (prepared or staged). */
  pending(): Inbound[] {
    return this.core.pending();
  }

  /** How many migrations are held in memory here (undecided, or deciding now). */
  get held(): number {
    return this.core.inbound.size;
  }

  /** The undecided migration of this VM, if one is held here. */
  pendingFor(vmId: string): Inbound | undefined {
    return this.core.pendingFor(vmId);
  }

  /** The migration of this VM at this generation held in memory here (undecided, or deciding now). */
  heldFor(vmId: string, generation: bigint): Inbound | undefined {
    for (const inb of this.core.inbound.values()) if (inb.req.vmId === vmId && inb.req.generation === generation) return inb;
    return undefined;
  }

  /** Migrations this daemon received (from the journal: decided ones leave memory), newest last. */
  summary(limit = 1000): { migrationId: string; vmId: string; generation: bigint; phase: string; source: string; sourceGrpc: string }[] {
    return this.deps.journal
      .listMigrations({ role: "destination", newest: limit })
      .map((m) => ({ migrationId: m.migrationId, vmId: m.vmId, generation: m.generation, phase: m.phase, source: m.source ?? "", sourceGrpc: m.peer }));
  }

  private stageDurably(inb: Inbound): void {
    const payload: StagedPayload = {
      req: inb.req,
      snapshot: inb.snapshot as Snapshot,
      receiveRawNs: inb.receiveRawNs,
      holdNs: inb.holdNs,
      decodeNs: inb.decodeNs,
      ...(inb.req.switchover === "on-receipt"
        ? { legs: { anchorsRawNs: inb.anchorsRawNs, anchorsToSendNs: inb.anchorsToSendNs, requestsRawNs: inb.requestsRawNs, requestsToSendNs: inb.requestsToSendNs } }
        : {}),
    };
    this.deps.journal.putVm({ vmId: inb.req.vmId, generation: inb.req.generation, role: "staged", state: toJson(payload), updatedNs: this.deps.host.trueNs() });
  }

  private dropStaged(inb: Inbound): void {
    const rec = this.deps.journal.getVm(inb.req.vmId);
    if (rec && rec.role === "staged") this.deps.journal.deleteVm(inb.req.vmId);
  }

  // ---- after a restart and while running ------------------------------------------------------------

  /**
   * Takes up what the journal left: a staged snapshot whose migration is pending (wait for the
   * source's decision) or committed (died before the VM was adopted: the Resolve finishes the
   * restore) is held again, one whose migration aborted is dropped; a migration prepared but never
   * staged before the crash has nothing to keep and aborts.
   */
  recover(staged: readonly StagedPayload[], migrations: readonly MigrationRecord[]): void {
    for (const p of staged) {
      const mig = migrations.find((m) => m.role === "destination" && m.migrationId === p.req.migrationId && m.source === p.req.sourceName);
      if (mig && mig.decision !== "aborted") this.core.restage(p);
      else this.dropStagedAtRestart(p.req.vmId);
    }
    for (const m of migrations) {
      if (m.role === "destination" && m.decision === "pending" && !this.core.inbound.has(inboundKey(m.source ?? "", m.migrationId)))
        journalAbortOnRecovery(this.deps.journal, m, this.deps.host.trueNs());
    }
  }

  private dropStagedAtRestart(vmId: string): void {
    try {
      this.deps.journal.deleteVm(vmId);
    } catch (e) {
      if (!isStorageError(e)) throw e; // a restart drops it again
    }
  }

  /** Expires prepared reservations whose lease ran out (before each recovery pass). */
  expireLeases(): number {
    return this.core.expireLeases();
  }

  /** One task per undecided migration: ask its source what it decided (Resolve). */
  recoveryTasks(): RecoveryTask[] {
    return this.core.pending().map((inb) => {
      const r = inb.req;
      // On receipt, staged means decided here: restoring it asks nobody, so no source's back-off holds it up.
      if (inb.state.phase === "staged" && inb.state.onReceipt)
        return { key: destinationRecoveryKey(r.sourceName, r.migrationId), step: "resolve", migrationId: r.migrationId, vmId: r.vmId, run: async () => this.core.restoreDecided(inb) };
      let t = this.tasks.get(inb);
      if (!t) {
        t = { key: destinationRecoveryKey(r.sourceName, r.migrationId), step: "resolve", migrationId: r.migrationId, vmId: r.vmId, peer: r.sourceGrpc, run: () => this.askSource(inb) };
        this.tasks.set(inb, t);
      }
      return t;
    });
  }

  private async askSource(inb: Inbound): Promise<void> {
    const r = inb.req;
    const answer = await this.deps.dialer.dial(r.sourceGrpc).resolve({ migrationId: r.migrationId, vmId: r.vmId, sourceKey: r.sourceKey });
    if (answer.decision === "pending") return;
    if (answer.decision === "committed" && inb.state.phase !== "staged") return;
    this.core.resolved(inb, answer.decision, answer.transferRttNs);
  }
}

/** The recovery loop's key for the migration `migrationId` received from `sourceName`. */
export function destinationRecoveryKey(sourceName: string, migrationId: string): string {
  return `in\u0000${inboundKey(sourceName, migrationId)}`;
}
