// The destination role: answers the source's calls through the destination state machine
// (shared/migration/destination-machine.ts). Capability checks at Prepare, full validation at
// Transfer (nothing is created before it passes), restore and resume only at Commit. The machine
// decides; this driver validates input, keeps what was received, and performs the step's effects
// before memory follows: a step whose effects fail (a full disk) leaves the migration as it was.

import { timingSafeEqual } from "node:crypto";
import { invalid, isTscmigError, TscmigError } from "../shared/errors.js";
import { CrashSignal, crashPoint, type Faults } from "../shared/faults.js";
import type { Logger } from "../shared/logger.js";
import { LIMITS } from "../shared/limits.js";
import type { EmulatedHost } from "../shared/hypervisor/host.js";
import type { HypervisorBackend, HypervisorVm } from "../shared/hypervisor/backend.js";
import type { TruthProbe } from "../shared/hypervisor/truth.js";
import { setTscKhzDecision } from "../shared/kvm/tsc.js";
import { PVCLOCK_GUEST_STOPPED, pvclockReadCycles } from "../shared/kvm/pvclock.js";
import { VMCLOCK_FLAG_TIME_MAXERROR_VALID } from "../shared/kvm/vmclock.js";
import { type BlackoutEstimate, estimateBlackout } from "../shared/migration/blackout.js";
import {
  type CommitLegs,
  type DestinationEffect,
  type DestinationEvent,
  type DestinationRecord,
  type DestinationReply,
  type DestinationState,
  type DStep,
  destinationState,
  isDestinationNotAllowed,
  stepDestination,
} from "../shared/migration/destination-machine.js";
import type { JournalStore } from "../shared/migration/journal.js";
import type { StagedPayload } from "../shared/migration/hosted-vm.js";
import { restoreReportFromJournal, restoreReportToJournal } from "../shared/migration/report.js";
import type {
  AbortReq,
  CommitReq,
  CommitRes,
  PrepareReq,
  PrepareRes,
  ProbeReq,
  ProbeRes,
  ResolveReq,
  ResolveRes,
  RestoreReport,
  SourceRef,
  TransferReq,
  TransferRes,
} from "../shared/migration/messages.js";
import { parsePolicy, restoreSnapshot, type RestoreResult } from "../shared/migration/restore.js";
import { checkBackendPayload, checkId, type Snapshot, validateSnapshot } from "../shared/migration/snapshot.js";
import { DRIFT_ALLOWANCE_PPM, parseEstimator } from "../shared/migration/blackout.js";

export type { CommitLegs };

/** A migration held here: its machine state, and what the driver received for it. */
export interface Inbound {
  req: PrepareReq;
  state: DestinationState;
  /** This host's raw clock at the last message of the source while prepared: the lease runs from it. */
  leaseFromRawNs: bigint;
  snapshot: Snapshot | null;
  receiveRawNs: bigint;
  /** The same instant on the shared true clock (diagnostics: splits the round trip into legs). */
  receiveTrueNs: bigint;
  /** This host's raw clock as each Handover answer before the Transfer left (`opened`, probes): one-sided's anchors. */
  anchorsRawNs: bigint[];
  /** The source's side of those anchors, from the Transfer (a prefix of them, in the same order). */
  anchorsToSendNs: bigint[];
  /** This host's raw clock as each of those answers' requests arrived (same order), and the source's side of them. */
  requestsRawNs: bigint[];
  requestsToSendNs: bigint[];
  holdNs: bigint;
  decodeNs: bigint;
}

/** A VM built and restored from a snapshot, paused; this host's raw clock as the restore began and ended. */
interface Restored {
  vm: HypervisorVm;
  result: RestoreResult;
  t0: bigint;
  /** From here to the resume (a journal write on receipt, a stall) the bound widens by the crystals' drift. */
  restoredRawNs: bigint;
}

function restoreError(migrationId: string, e: unknown): TscmigError {
  return isTscmigError(e) ? e : new TscmigError("internal", `restore of migration ${migrationId} failed: ${e instanceof Error ? e.message : String(e)}`);
}

/** Releases a VM that will never run (a restore or a decision that failed before it was adopted). */
function discard(vm: HypervisorVm): void {
  vm.destroy?.().catch(() => {
    /* nothing of it ran: what it held goes with the process at worst */
  });
}

/** The restore step (restoreSnapshot); a seam only the chaos tests fill with a broken one. */
export type RestoreFn = typeof restoreSnapshot;

export interface DestinationContext {
  name: string;
  host: EmulatedHost;
  /** Makes the VM a snapshot is restored into. */
  backend: HypervisorBackend;
  /** True time, for the report's diagnostics only. */
  truth: TruthProbe;
  journal: JournalStore;
  faults: Faults;
  log: Logger;
  /** Is this VM id owned (running or migrating out) here, and with what generation? */
  localVm(vmId: string): { generation: bigint; role: string } | null;
  /** Generation this daemon last handed the VM off at (tombstone), if any. */
  tombstone(vmId: string): bigint | null;
  vmCount(): number;
  /** Throws unless a peer-given address is one the transport can dial (`PeerDialer.checkAddress`). */
  checkPeerAddress(address: string, field: string): void;
  /** Adopt a restored VM: builds the guest, rings the doorbell if asked, resumes, journals; returns the resume instant (true time, and this host's raw clock). */
  adopt(inb: Inbound, vm: HypervisorVm, result: RestoreResult): { doorbellRung: boolean; resumedTrueNs: bigint; resumedRawNs: bigint };
  /** Durable copy of a staged snapshot (for restarts between Transfer and Commit). */
  stageDurably(inb: Inbound): void;
  dropStaged(inb: Inbound): void;
  inflight(): number;
  /** Test seam: replaces restoreSnapshot (the checker's sensitivity tests); production leaves it unset. */
  restore?: RestoreFn;
  /** Test seam: a fencing Resolve answers without fencing (the checker's sensitivity); production leaves it unset. */
  brokenFence?: boolean;
}

/** The inbound map's key: a migration is (source, id), ids are unique per source only. */
export function inboundKey(sourceName: string, migrationId: string): string {
  return `${sourceName}\u0000${migrationId}`;
}

/** Constant-time comparison of two hex keys (a mismatch must not say where it starts). */
function sameKey(a: string, b: string): boolean {
  const x = Buffer.from(a, "utf8");
  const y = Buffer.from(b, "utf8");
  return x.length === y.length && timingSafeEqual(x, y);
}

function foreign(sourceName: string, migrationId: string): TscmigError {
  return new TscmigError("permission_denied", `migration ${migrationId} of ${sourceName} was prepared with another source key: only the source that prepared it may continue it`, {
    field: "sourceKey",
    reason: "foreign_source",
  });
}

/** The step's refusal as the typed error the caller gets, if it refuses. */
function refusalOf(step: DStep, ref: SourceRef, id: string): TscmigError | null {
  const r = step.effects.find((x): x is Extract<DestinationEffect, { kind: "refuse" }> => x.kind === "refuse");
  return r ? new TscmigError(r.code, `${r.message} (migration ${id} of ${ref.sourceName})`, { reason: r.reason }) : null;
}

/** Who a journal record is about besides what the machine decides: the source, its key, its address. */
interface Counterpart {
  sourceName: string;
  sourceKey: string;
  peer: string;
}

function counterpartOf(inb: Inbound): Counterpart {
  return { sourceName: inb.req.sourceName, sourceKey: inb.req.sourceKey, peer: inb.req.sourceGrpc };
}

/**
 * The held migrations by `inboundKey`, indexed by VM as well: admission asks "is this VM already
 * migrating in?" on every Prepare, and a Prepare flood holds hundreds (a scan made it quadratic).
 */
export class InboundTable extends Map<string, Inbound> {
  private readonly byVm = new Map<string, Set<Inbound>>();

  override set(key: string, inb: Inbound): this {
    const old = super.get(key);
    if (old) this.unindex(old);
    super.set(key, inb);
    const held = this.byVm.get(inb.req.vmId);
    if (held) held.add(inb);
    else this.byVm.set(inb.req.vmId, new Set([inb]));
    return this;
  }

  override delete(key: string): boolean {
    const old = super.get(key);
    if (old) this.unindex(old);
    return super.delete(key);
  }

  override clear(): void {
    this.byVm.clear();
    super.clear();
  }

  /** The held migrations of `vmId` (any phase). */
  ofVm(vmId: string): ReadonlySet<Inbound> | undefined {
    return this.byVm.get(vmId);
  }

  private unindex(inb: Inbound): void {
    const held = this.byVm.get(inb.req.vmId);
    if (!held) return;
    held.delete(inb);
    if (held.size === 0) this.byVm.delete(inb.req.vmId);
  }
}

const undecided = (i: Inbound): boolean => i.state.phase === "prepared" || i.state.phase === "staged";

export class Destination {
  /**
   * Migrations still undecided here (prepared or staged), keyed by `inboundKey`. A decided one is
   * dropped from memory once its last write is journaled, and later calls about it are answered from
   * the journal (pastState, commit replays), so neither memory nor the scans over this map grow with
   * every migration.
   */
  readonly inbound = new InboundTable();
  /**
   * At most the lease start of every prepared migration held (leases only move later, new ones
   * start now): while the lease cutoff is below it, nothing can expire and the pass is skipped.
   */
  private leaseFloorRawNs: bigint | null = null;

  constructor(private readonly ctx: DestinationContext) {}

  /**
   * The migration a message after Prepare is about, if it is held here and the message speaks for
   * its source: a key that differs from the one Prepare carried is refused before anything changes.
   */
  private held(ref: SourceRef, migrationId: string): Inbound | null {
    const inb = this.inbound.get(inboundKey(ref.sourceName, migrationId)) ?? null;
    if (inb && !sameKey(inb.req.sourceKey, ref.sourceKey)) throw foreign(ref.sourceName, migrationId);
    return inb;
  }

  /** The machine state of a migration decided here and no longer held in memory (key checked). */
  private pastState(ref: SourceRef, id: string): DestinationState | null {
    const past = this.ctx.journal.getInboundMigration(ref.sourceName, id);
    if (!past || past.role !== "destination") return null;
    if (past.sourceKey && !sameKey(past.sourceKey, ref.sourceKey)) throw foreign(ref.sourceName, id);
    if (past.decision === "committed") return destinationState("running", past, past.report ? restoreReportFromJournal(past.report) : null);
    if (past.decision === "aborted") return destinationState("aborted", past);
    return null;
  }

  /** Steps the machine of a held migration, or of what the journal says of one not held. */
  private step(ref: SourceRef, id: string, inb: Inbound | null, e: DestinationEvent): DStep {
    const r = stepDestination(inb ? inb.state : this.pastState(ref, id), e);
    // Only the driver's own events (restored, leaseExpired…) can be out of phase: a bug here.
    if (isDestinationNotAllowed(r)) throw new TscmigError("internal", `${r.event} is not allowed in phase ${r.phase} (migration ${id})`, { reason: "not_allowed" });
    return r;
  }

  /**
   * Performs a step's effects in order (the restore excepted: its callers run it) and returns its
   * reply; a refusal is thrown once the effects before it (a fence's record) are durable. `inb`
   * takes the step's state as soon as its journal record is written: memory follows the disk, so
   * a write that fails (a full disk) leaves the migration as it was.
   */
  private perform(step: DStep, who: Counterpart, inb: Inbound | null, id: string): DestinationReply | null {
    let reply: DestinationReply | null = null;
    for (const x of step.effects) {
      if (x.kind === "journal") {
        this.journal(x.record, who);
        if (inb && step.state) inb.state = step.state;
      } else if (x.kind === "stage" && inb) this.ctx.stageDurably(inb);
      else if (x.kind === "dropStaged" && inb) this.ctx.dropStaged(inb);
      else if (x.kind === "reply") reply = x.reply;
      else if (x.kind === "refuse") throw refusalOf(step, who, id) as TscmigError;
    }
    if (inb && step.state) inb.state = step.state;
    return reply;
  }

  /** Performs the step on a held migration; an aborted one leaves memory (its journal answers for it). */
  private apply(inb: Inbound, step: DStep): DestinationReply | null {
    const reply = this.perform(step, counterpartOf(inb), inb, inb.req.migrationId);
    if (inb.state.phase === "aborted") {
      inb.snapshot = null;
      this.inbound.delete(inboundKey(inb.req.sourceName, inb.req.migrationId));
    }
    return reply;
  }

  private journal(rec: DestinationRecord, who: Counterpart): void {
    this.ctx.journal.putMigration({
      migrationId: rec.migrationId,
      source: who.sourceName,
      sourceKey: who.sourceKey,
      vmId: rec.vmId,
      role: "destination",
      phase: rec.phase,
      decision: rec.decision,
      generation: rec.generation,
      peer: who.peer,
      ...(rec.report ? { report: restoreReportToJournal(rec.report) } : {}),
      updatedNs: this.ctx.host.trueNs(),
    });
    if (rec.phase === "fenced")
      this.ctx.log.warn({ event: "commit_fenced", migrationId: rec.migrationId, vmId: rec.vmId, source: who.sourceName }, "Commit for a migration never seen here: fenced");
  }

  prepare(req: PrepareReq): PrepareRes {
    checkId(req.migrationId, "migrationId");
    checkId(req.vmId, "vmId");
    checkId(req.sourceName, "sourceName");
    this.ctx.checkPeerAddress(req.sourceGrpc, "sourceGrpc");
    parsePolicy(req.policy);
    parseEstimator(req.estimator);
    if (req.generation < 1n) throw invalid("generation", "must be ≥ 1");
    if (!Number.isInteger(req.vcpuCount) || req.vcpuCount < 1 || req.vcpuCount > LIMITS.vcpuCountMax)
      throw invalid("vcpuCount", `must be in 1..${LIMITS.vcpuCountMax}`);
    if (req.sourceFracBits !== 48 && req.sourceFracBits !== 32) throw invalid("sourceFracBits", "must be 48 or 32");
    if (req.advanceCapNs < 0n || req.advanceCapNs > LIMITS.blackoutNsMax) throw invalid("advanceCapNs", "out of range");
    const existing = this.inbound.get(inboundKey(req.sourceName, req.migrationId));
    if (existing) return this.prepareAgain(existing, req);
    this.admit(req);
    const caps = this.capabilities(req); // throws a refusal before anything is recorded
    const arrivedRawNs = this.ctx.host.rawNs(); // after the real arrival: a weaker lower limit, still a limit
    const onReceipt = req.switchover === "on-receipt";
    const step = this.step(req, req.migrationId, null, { kind: "prepare", migrationId: req.migrationId, vmId: req.vmId, generation: req.generation, ...(onReceipt ? { onReceipt } : {}) });
    const inb: Inbound = {
      req,
      state: step.state as DestinationState,
      leaseFromRawNs: this.ctx.host.rawNs(),
      snapshot: null,
      receiveRawNs: 0n,
      receiveTrueNs: 0n,
      anchorsRawNs: [],
      anchorsToSendNs: [],
      requestsRawNs: [],
      requestsToSendNs: [],
      holdNs: 0n,
      decodeNs: 0n,
    };
    this.perform(step, counterpartOf(inb), inb, req.migrationId);
    this.inbound.set(inboundKey(req.sourceName, req.migrationId), inb); // only once durable: a refused or failed Prepare reserves nothing
    if (this.leaseFloorRawNs === null || inb.leaseFromRawNs < this.leaseFloorRawNs) this.leaseFloorRawNs = inb.leaseFromRawNs;
    if (onReceipt) {
      // On receipt one-sided has no Transfer round trip: the Prepare's answer is its first anchor
      // (the source counts it first too). Taken before the answer leaves: a looser cap, still a cap.
      inb.requestsRawNs.push(arrivedRawNs);
      inb.anchorsRawNs.push(this.ctx.host.rawNs());
    }
    return caps;
  }

  /** A Prepare for a migration held here: a replay (the lease renewed), or a reuse of its id. */
  private prepareAgain(existing: Inbound, req: PrepareReq): PrepareRes {
    if (!sameKey(existing.req.sourceKey, req.sourceKey))
      throw new TscmigError("already_exists", `migration ${req.migrationId} of ${req.sourceName} is already prepared for another VM, generation or key`, { reason: "migration_id_reused" });
    this.apply(existing, this.step(req, req.migrationId, existing, { kind: "prepare", migrationId: req.migrationId, vmId: req.vmId, generation: req.generation }));
    existing.leaseFromRawNs = this.ctx.host.rawNs();
    return this.capabilities(req);
  }

  /** Whether this daemon may take a new inbound migration of `req.vmId` at all (refusals are typed). */
  private admit(req: PrepareReq): void {
    const past = this.ctx.journal.getInboundMigration(req.sourceName, req.migrationId);
    if (past) throw new TscmigError("already_exists", `migration ${req.migrationId} of ${req.sourceName} already used (${past.decision})`, { reason: "migration_id_reused" });
    const local = this.ctx.localVm(req.vmId);
    if (local) throw new TscmigError("already_exists", `VM ${req.vmId} already runs here (generation ${local.generation})`, { reason: "vm_exists", field: "vmId" });
    const tomb = this.ctx.tombstone(req.vmId);
    if (tomb !== null && req.generation <= tomb)
      throw new TscmigError("failed_precondition", `stale generation ${req.generation}: VM ${req.vmId} left here at generation ${tomb}`, { reason: "stale_generation", field: "generation" });
    this.expireLeases();
    for (const other of this.inbound.ofVm(req.vmId) ?? [])
      if (undecided(other))
        throw new TscmigError("aborted", `VM ${req.vmId} is already migrating in (${other.req.migrationId} of ${other.req.sourceName})`, { reason: "migration_in_progress" });
    if (this.ctx.vmCount() >= LIMITS.vmCountMax) throw new TscmigError("resource_exhausted", "this daemon hosts its maximum of VMs", { reason: "vm_limit" });
    if (this.ctx.inflight() >= LIMITS.migrationsInFlightMax)
      throw new TscmigError("resource_exhausted", "too many migrations in flight", { reason: "inflight_limit" });
  }

  /**
   * A prepared reservation is a lease: a source that goes quiet before its Transfer (it died, or it
   * only meant to hold a slot) loses it after `LIMITS.prepareLeaseNs`. The abort is journaled, so a
   * late Transfer is refused and that source resumes its VM. Staged migrations never expire: their
   * source may already have decided to commit, and only its answer (Commit or Resolve) settles them.
   */
  expireLeases(): number {
    // Leases from after `cutoff` still run. One bigint for the pass, not one per migration held
    // (this runs on every Prepare, and a flood holds hundreds).
    const cutoff = this.ctx.host.rawNs() - LIMITS.prepareLeaseNs;
    if (this.leaseFloorRawNs === null || this.leaseFloorRawNs > cutoff) return 0;
    let expired = 0;
    let floor: bigint | null = null;
    for (const inb of this.inbound.values()) {
      if (inb.state.phase !== "prepared") continue;
      if (inb.leaseFromRawNs > cutoff) {
        if (floor === null || inb.leaseFromRawNs < floor) floor = inb.leaseFromRawNs;
        continue;
      }
      this.apply(inb, this.step(inb.req, inb.req.migrationId, inb, { kind: "leaseExpired" }));
      expired++;
      this.ctx.log.warn({ event: "prepare_lease_expired", migrationId: inb.req.migrationId, vmId: inb.req.vmId, source: inb.req.sourceName }, "prepared migration expired before its Transfer");
    }
    this.leaseFloorRawNs = floor;
    return expired;
  }

  private capabilities(req: PrepareReq): PrepareRes {
    const info = this.ctx.backend.hostInfo;
    let ratio: bigint;
    try {
      ratio = setTscKhzDecision({ userKhzArg: req.guestTscKhz, hostKhz: info.tscKhz, vendor: info.vendor, hostHasScaling: info.tscScaling }).ratio;
    } catch (e) {
      if (isTscmigError(e))
        throw new TscmigError(
          "failed_precondition",
          `cannot run a ${req.guestTscKhz} kHz guest TSC on this ${info.tscKhz} kHz host${info.tscScaling ? "" : " without TSC scaling"}: ${e.message}`,
          { field: "guestTscKhz", reason: info.tscScaling ? "tsc_khz_unsupported" : "tsc_scaling_unavailable", errno: "EINVAL" },
        );
      throw e;
    }
    return { hostTscKhz: info.tscKhz, fracBits: info.vendor.fracBits, tscScaling: info.tscScaling, ratio, destinationName: this.ctx.name };
  }

  /** The held, prepared migration a message before the Transfer is about (key checked; the lease renewed). */
  private prepared(ref: SourceRef, migrationId: string): Inbound {
    const inb = this.held(ref, migrationId);
    if (!inb || inb.state.phase !== "prepared")
      throw new TscmigError("failed_precondition", `no prepared migration ${migrationId} of ${ref.sourceName}`, { reason: "not_prepared" });
    inb.leaseFromRawNs = this.ctx.host.rawNs();
    return inb;
  }

  probe(req: ProbeReq): ProbeRes {
    const t2 = this.ctx.host.realtimeNs();
    this.prepared(req, req.migrationId);
    return { t1RealtimeNs: req.t1RealtimeNs, t2RealtimeNs: t2, t3RealtimeNs: this.ctx.host.realtimeNs(), maxerrorNs: this.ctx.host.maxerrorNs() };
  }

  /** A Handover call opens for a prepared migration of this source (refused otherwise). */
  handoverOpen(ref: SourceRef, migrationId: string): void {
    this.prepared(ref, migrationId);
  }

  /**
   * An answer on `migrationId`'s Handover call (`opened`, a probe) leaves right after this: one-sided
   * pairs it with the source's receipt of it. The call is ordered and dies at its first failure, so
   * the answers the source received are a prefix of those recorded here.
   */
  handoverAnswering(ref: SourceRef, migrationId: string, requestReceivedRawNs: bigint): void {
    const inb = this.inbound.get(inboundKey(ref.sourceName, migrationId));
    if (inb && inb.state.phase === "prepared" && inb.anchorsRawNs.length < LIMITS.anchorsMax) {
      inb.anchorsRawNs.push(this.ctx.host.rawNs());
      inb.requestsRawNs.push(requestReceivedRawNs);
    }
  }

  /** `receiveRawNs`: destination clock when the call arrived; `decodeNs`: time spent decoding. */
  transfer(req: TransferReq, receiveRawNs: bigint, decodeNs: bigint): TransferRes {
    const s = req.snapshot;
    const inb = this.held(req, s.migrationId);
    if (!inb || inb.state.phase !== "prepared") {
      // A replayed Transfer (idempotent), or one refused: not prepared here, or already decided.
      this.perform(this.step(req, s.migrationId, inb, { kind: "transfer" }), inb ? counterpartOf(inb) : { sourceName: req.sourceName, sourceKey: req.sourceKey, peer: "" }, inb, s.migrationId);
      return { destinationHoldNs: inb?.holdNs ?? 0n };
    }
    this.validateTransfer(req, inb.req);
    this.refuseUncappedOnReceipt(req, inb);
    const step = this.step(req, s.migrationId, inb, { kind: "transfer" });

    const sinceReceiveNs = this.ctx.host.rawNs() - receiveRawNs; // first: a stall in between dates it later, not earlier
    const staged: Inbound = {
      ...inb,
      snapshot: s,
      receiveRawNs,
      receiveTrueNs: this.ctx.host.trueNs() - sinceReceiveNs,
      anchorsToSendNs: req.sourceAnchorsToSendNs ?? [],
      requestsToSendNs: req.sourceRequestsToSendNs ?? [],
      decodeNs,
    };
    const onReceipt = step.effects.find((x) => x.kind === "restore");
    if (onReceipt) return this.adoptOnReceipt(inb, staged, step, onReceipt.legs);
    this.stage(inb, staged, step);
    inb.holdNs = this.ctx.host.rawNs() - receiveRawNs;
    return { destinationHoldNs: inb.holdNs };
  }

  /**
   * The staged snapshot and the migration's phase land together (one transaction, one sync); not
   * staged durably (a full disk) is not staged at all, or a Commit (or, on receipt, a restart) would
   * run what a restart cannot know of.
   */
  private stage(inb: Inbound, staged: Inbound, step: DStep): void {
    this.ctx.journal.transaction(() => this.perform(step, counterpartOf(inb), staged, staged.req.migrationId));
    Object.assign(inb, staged);
    crashPoint(this.ctx.faults, "crash.destination.afterStage");
  }

  /**
   * On-receipt switchover: the Transfer is the decision. The VM is built and its clocks restored
   * first, paused; only a restore that worked is decided — journaled staged and decided (journaling
   * first: a crash from there on restores it again after the restart, never aborts it) — and then
   * adopted and resumed, and the Transfer answered with the report. A restore that fails decides
   * nothing and keeps nothing: the Transfer is refused, the migration stays prepared, and the
   * source's Resolve fences it and resumes its VM (deciding first lost the VM to a restore that
   * failed every time: the source told committed, retries for ever here).
   */
  private adoptOnReceipt(inb: Inbound, staged: Inbound, step: DStep, legs: CommitLegs): TransferRes {
    crashPoint(this.ctx.faults, "crash.destination.beforeRestore");
    let built: Restored;
    try {
      built = this.restoreInto(staged, legs);
    } catch (e) {
      if (e instanceof CrashSignal) throw e;
      const err = restoreError(inb.req.migrationId, e);
      this.ctx.log.error({ event: "restore_failed", migrationId: inb.req.migrationId, vmId: inb.req.vmId, adopted: false, err: err.toJSON() }, "restore on receipt failed before the decision: the Transfer is refused, and its source keeps the VM");
      throw err;
    }
    try {
      this.stage(inb, staged, step);
    } catch (e) {
      if (!(e instanceof CrashSignal)) discard(built.vm);
      throw e;
    }
    const report = this.guarded(inb, () => this.resumeRestored(inb, built));
    inb.holdNs = this.ctx.host.rawNs() - inb.receiveRawNs;
    return { destinationHoldNs: inb.holdNs, report };
  }

  /**
   * An on-receipt source asks what became of its Transfer. Unless the VM runs here, the answer is
   * made durable first — a fence: that Transfer (and any Prepare of the migration) is refused for
   * good — so a source told aborted or unknown may resume its VM without it ever running twice.
   */
  resolveForSource(req: ResolveReq & { fence: NonNullable<ResolveReq["fence"]> }): ResolveRes {
    const ref: SourceRef = { sourceName: req.fence.sourceName, sourceKey: req.sourceKey };
    checkId(req.migrationId, "migrationId");
    checkId(req.vmId, "vmId");
    checkId(ref.sourceName, "sourceName");
    if (req.fence.generation < 1n) throw invalid("generation", "must be ≥ 1 (a fence speaks of a VM generation a Prepare could carry)");
    const inb = this.held(ref, req.migrationId);
    const state = inb ? inb.state : this.pastState(ref, req.migrationId);
    if (!inb && state === null && this.ctx.journal.getInboundMigration(ref.sourceName, req.migrationId))
      return { decision: "pending", generation: 0n, transferRttNs: 0n }; // seen but undecided, not held: a restart settles it
    const step = stepDestination(state, { kind: "fence", migrationId: req.migrationId, vmId: req.vmId, generation: req.fence.generation });
    if (isDestinationNotAllowed(step)) throw new TscmigError("internal", `fence not allowed in phase ${step.phase}`);
    if (this.ctx.brokenFence && step.effects.some((x) => x.kind === "journal")) return this.brokenFenceAnswer(step);
    const who = inb ? counterpartOf(inb) : { sourceName: ref.sourceName, sourceKey: ref.sourceKey, peer: "" };
    const reply = inb ? this.apply(inb, step) : this.perform(step, who, null, req.migrationId);
    if (step.effects.some((x) => x.kind === "journal")) {
      crashPoint(this.ctx.faults, "crash.destination.afterFence");
      this.ctx.log.warn({ event: "transfer_fenced", migrationId: req.migrationId, vmId: req.vmId, source: ref.sourceName }, "on-receipt source resolved: its Transfer is fenced here for good");
    }
    if (reply?.kind !== "resolved") throw new TscmigError("internal", `Resolve of migration ${req.migrationId} got no answer`);
    return { decision: reply.decision, generation: state?.generation ?? req.fence.generation, transferRttNs: 0n };
  }

  /** Test seam only (the checker's sensitivity): answers as a fence would, without fencing anything. */
  private brokenFenceAnswer(step: DStep): ResolveRes {
    const reply = step.effects.find((x): x is Extract<DestinationEffect, { kind: "reply" }> => x.kind === "reply");
    return { decision: reply?.reply.kind === "resolved" ? reply.reply.decision : "unknown", generation: 0n, transferRttNs: 0n };
  }

  /**
   * On receipt, one-sided caps the Transfer's transit only by an earlier answer of this destination
   * (there is no round trip yet): refused here, before the decision, when none pairs up, or the
   * restore could never run and a decided migration would hold the VM nowhere.
   */
  private refuseUncappedOnReceipt(req: TransferReq, inb: Inbound): void {
    if (inb.req.switchover !== "on-receipt" || inb.req.estimator !== "one-sided") return;
    if ((req.sourceAnchorsToSendNs ?? []).length > 0 && inb.anchorsRawNs.length > 0) return;
    throw new TscmigError("failed_precondition", "one-sided on receipt needs the source's Prepare answer as an anchor (sourceAnchorsToSendNs is empty)", { field: "sourceAnchorsToSendNs", reason: "anchor_missing" });
  }

  /** The Transfer must carry the snapshot its Prepare announced, with one-sided's legs in range. */
  private validateTransfer(req: TransferReq, r: PrepareReq): void {
    const s = req.snapshot;
    validateSnapshot(s);
    checkBackendPayload(this.ctx.backend, s);
    if (s.vmId !== r.vmId) throw invalid("snapshot.vmId", `prepared for ${r.vmId}, got ${s.vmId}`);
    if (s.generation !== r.generation) throw invalid("snapshot.generation", `prepared generation ${r.generation}, got ${s.generation}`);
    if (s.vcpuCount !== r.vcpuCount) throw invalid("snapshot.vcpuCount", `prepared ${r.vcpuCount} vCPUs, got ${s.vcpuCount}`);
    if (s.guestTscKhz !== r.guestTscKhz) throw invalid("snapshot.guestTscKhz", `prepared ${r.guestTscKhz} kHz, got ${s.guestTscKhz}`);
    if (s.fracBits !== r.sourceFracBits) throw invalid("snapshot.fracBits", `prepared ${r.sourceFracBits}, got ${s.fracBits}`);
    if (r.estimator === "probe" && s.probe === null) throw invalid("snapshot.probe", "the probe estimator needs probe results");
    const anchors = req.sourceAnchorsToSendNs ?? [];
    if (anchors.length > LIMITS.anchorsMax) throw invalid("sourceAnchorsToSendNs", `at most ${LIMITS.anchorsMax}`);
    if (anchors.some((a) => a < 0n || a > LIMITS.blackoutNsMax)) throw invalid("sourceAnchorsToSendNs", "out of range");
    const requests = req.sourceRequestsToSendNs ?? [];
    if (requests.length > LIMITS.anchorsMax) throw invalid("sourceRequestsToSendNs", `at most ${LIMITS.anchorsMax}`);
    if (requests.some((a) => a < 0n || a > LIMITS.blackoutNsMax)) throw invalid("sourceRequestsToSendNs", "out of range");
    this.refuseBeyondBlackoutLimit(r, s);
  }

  /**
   * The clock-based estimators already know at the Transfer how long the blackout has been, as far as
   * the hosts' realtime clocks can tell. Past the blackout limit the migration is refused here, before
   * the source hands the VM off (it resumes it), never answered later by advancing the guest by hours:
   * such a figure means the hosts' clocks disagree wildly, not that the VM was paused that long.
   */
  private refuseBeyondBlackoutLimit(r: PrepareReq, s: Snapshot): void {
    if (r.estimator === "one-sided") return; // durations on one clock each, validated above
    const host = this.ctx.host;
    const dstRealtimeNs = host.realtimeNs();
    const theta = r.estimator === "probe" && s.probe ? s.probe.offsetNs : 0n;
    const sinceNs = dstRealtimeNs - s.hostRealtimeNs - theta; // cross-host: blackout plus whatever the clocks disagree by
    if (sinceNs <= LIMITS.blackoutNsMax) return;
    throw new TscmigError(
      "failed_precondition",
      `the ${r.estimator} estimate of this blackout is already ${sinceNs / 1_000_000n} ms at the Transfer, beyond the ${LIMITS.blackoutNsMax / 1_000_000_000n} s limit: the hosts' realtime clocks disagree by about that much (check their skew) — the one-sided estimator does not depend on them`,
      { reason: "blackout_estimate_exceeded", field: "snapshot.hostRealtimeNs" },
    );
  }

  commit(req: CommitReq, receiveRawNs: bigint): CommitRes {
    const inb = this.held(req, req.migrationId);
    if (!inb) return this.commitUnheld(req);
    const legs: CommitLegs = {
      transferRttNs: req.transferRttNs,
      ...(req.answerToCommitNs !== undefined ? { answerToCommitNs: req.answerToCommitNs, commitReceiveRawNs: receiveRawNs } : {}),
    };
    const step = this.step(req, req.migrationId, inb, { kind: "commit", migrationId: req.migrationId, vmId: req.vmId, generation: req.generation, legs });
    const refusal = refusalOf(step, req, req.migrationId);
    if (refusal) throw refusal;
    if (req.transferRttNs < 0n || req.transferRttNs > LIMITS.blackoutNsMax) throw invalid("transferRttNs", "out of range");
    if (req.answerToCommitNs !== undefined && (req.answerToCommitNs < 0n || req.answerToCommitNs > LIMITS.blackoutNsMax))
      throw invalid("answerToCommitNs", "out of range");
    return this.answerCommit(inb, step);
  }

  /** A Commit's step: a replay answered from the state's report, or the restore it asks for. */
  private answerCommit(inb: Inbound, step: DStep): CommitRes {
    const restore = step.effects.find((x) => x.kind === "restore");
    if (restore) return { report: this.restoreStaged(inb, restore.legs), replay: false };
    const reply = this.perform(step, counterpartOf(inb), inb, inb.req.migrationId);
    if (reply?.kind !== "report") throw new TscmigError("internal", `Commit of migration ${inb.req.migrationId} got no report (phase ${inb.state.phase})`);
    return { report: reply.report, replay: reply.replay };
  }

  /**
   * A Commit for a migration not held in memory: a replay of one committed here (answered from the
   * journal), one aborted here (refused: durable, so its source may resume the VM), or one never
   * seen (fenced by the machine). One seen here but undecided, or not as a destination, is refused
   * without a fence: its record stays what it is.
   */
  private commitUnheld(req: CommitReq): CommitRes {
    const past = this.ctx.journal.getInboundMigration(req.sourceName, req.migrationId);
    const state = this.pastState(req, req.migrationId);
    if (past && state === null)
      throw new TscmigError("failed_precondition", `Commit in phase none (migration ${req.migrationId} of ${req.sourceName})`, { reason: "unknown_migration" });
    if (!past) checkId(req.vmId, "vmId");
    const legs: CommitLegs = { transferRttNs: req.transferRttNs };
    const r = stepDestination(state, { kind: "commit", migrationId: req.migrationId, vmId: req.vmId, generation: req.generation, legs });
    if (isDestinationNotAllowed(r) || r.effects.some((x) => x.kind === "restore"))
      throw new TscmigError("internal", `Commit of migration ${req.migrationId} not held here cannot restore`);
    const reply = this.perform(r, { sourceName: req.sourceName, sourceKey: req.sourceKey, peer: "" }, null, req.migrationId);
    if (reply?.kind !== "report") throw new TscmigError("internal", `Commit of migration ${req.migrationId} got no report`);
    return { report: reply.report, replay: reply.replay };
  }

  /**
   * Restores a staged migration. A restore that throws before the VM was adopted has started
   * nothing: the machine keeps it staged (the snapshot is still journaled) so the next Commit or
   * Resolve retries it, and the caller gets the typed error — never a success that hides a VM that
   * runs nowhere.
   */
  private restoreStaged(inb: Inbound, legs: CommitLegs): RestoreReport {
    return this.guarded(inb, () => this.restoreAndResume(inb, legs));
  }

  /** Runs a staged migration's restore (`fn`); one that throws is handled as restoreStaged says. */
  private guarded(inb: Inbound, fn: () => RestoreReport): RestoreReport {
    try {
      return fn();
    } catch (e) {
      if (e instanceof CrashSignal) throw e;
      const adopted = this.ctx.localVm(inb.req.vmId) !== null;
      this.apply(inb, this.step(inb.req, inb.req.migrationId, inb, { kind: "restoreFailed", adopted }));
      const err = restoreError(inb.req.migrationId, e);
      this.ctx.log.error(
        { event: "restore_failed", migrationId: inb.req.migrationId, vmId: inb.req.vmId, adopted, err: err.toJSON() },
        adopted ? "restore failed after the VM was adopted" : "restore failed; the migration stays staged and will be retried",
      );
      throw err;
    }
  }

  /** The source's decision arrived (Commit or Resolve), or a staged on-receipt one is retried: restore, resume, journal. */
  private restoreAndResume(inb: Inbound, legs: CommitLegs): RestoreReport {
    // The decision is journaled with the adopted VM, in one transaction (adoptAndJournal), not
    // before: the source holds it durably already, so a restart in between finds the snapshot still
    // staged and learns the decision by Resolve, as after any crash before the Commit (never runs
    // it twice). One journal write less inside the blackout.
    crashPoint(this.ctx.faults, "crash.destination.beforeRestore");
    return this.resumeRestored(inb, this.restoreInto(inb, legs));
  }

  /** A new VM with `inb`'s snapshot restored into it, paused. A restore that throws leaves no VM behind. */
  private restoreInto(inb: Inbound, legs: CommitLegs): Restored {
    const s = inb.snapshot as Snapshot;
    const r = inb.req;
    const t0 = this.ctx.host.rawNs();
    const vm = this.ctx.backend.createVm({ vcpus: s.vcpuCount, guestTscKhz: s.guestTscKhz, ...(s.backendPayload !== undefined ? { payload: s.backendPayload } : {}) });
    try {
      const result = (this.ctx.restore ?? restoreSnapshot)(vm, s, {
        policy: r.policy,
        capNs: r.advanceCapNs === 0n ? LIMITS.advanceCapNsDefault : r.advanceCapNs,
        estimate: (at) => this.estimate(inb, legs, at),
      });
      return { vm, result, t0, restoredRawNs: this.ctx.host.rawNs() };
    } catch (e) {
      if (!(e instanceof CrashSignal)) discard(vm);
      throw e;
    }
  }

  /** Adopts and resumes a restored VM (its decision journaled with it), and lets the migration go from memory. */
  private resumeRestored(inb: Inbound, built: Restored): RestoreReport {
    const r = inb.req;
    const report = this.adoptAndJournal(inb, built);
    inb.snapshot = null; // the VM holds the state now
    crashPoint(this.ctx.faults, "crash.destination.afterRestore");
    this.inbound.delete(inboundKey(r.sourceName, r.migrationId)); // decided and journaled with its report (replays read it back)
    return report;
  }

  /** The blackout estimate at the restore instant `at`, from the staged snapshot and the legs. */
  private estimate(inb: Inbound, legs: CommitLegs, at: { destinationRealtimeNs: bigint; destinationRawNs: bigint }): BlackoutEstimate {
    const s = inb.snapshot as Snapshot;
    const host = this.ctx.host;
    return estimateBlackout(inb.req.estimator, {
      sourceRealtimeNs: s.hostRealtimeNs,
      sourceMaxerrorNs: s.hostMaxerrorNs,
      destinationRealtimeNs: at.destinationRealtimeNs,
      destinationMaxerrorNs: host.maxerrorNs(),
      probe: s.probe,
      oneSided: () => ({
        sourceCaptureToSendNs: s.sourceCaptureToSendNs,
        transferRttNs: legs.transferRttNs,
        destinationHoldNs: inb.holdNs,
        // to the restore instant the offsets are computed at, not to whenever this runs
        destinationReceiveToNowNs: at.destinationRawNs > inb.receiveRawNs ? at.destinationRawNs - inb.receiveRawNs : 0n,
        // Durations on this host's clock from instants of this process only (a restart loses them).
        ...(legs.answerToCommitNs !== undefined && legs.commitReceiveRawNs !== undefined && legs.commitReceiveRawNs >= inb.receiveRawNs + inb.holdNs
          ? { commit: { destinationAnswerToCommitNs: legs.commitReceiveRawNs - (inb.receiveRawNs + inb.holdNs), sourceAnswerToCommitNs: legs.answerToCommitNs } }
          : {}),
        requests: inb.requestsToSendNs.flatMap((sourceRequestToSendNs, i) => {
          const got = inb.requestsRawNs[i];
          return got !== undefined && inb.receiveRawNs >= got ? [{ destinationRequestToReceiveNs: inb.receiveRawNs - got, sourceRequestToSendNs }] : [];
        }),
        anchors: inb.anchorsToSendNs.flatMap((sourceAnswerToSendNs, i) => {
          const sent = inb.anchorsRawNs[i];
          return sent !== undefined && inb.receiveRawNs >= sent ? [{ destinationAnswerToReceiveNs: inb.receiveRawNs - sent, sourceAnswerToSendNs }] : [];
        }),
      }),
    });
  }

  /**
   * Adopting the VM (journaled as owner, running) and journaling the decision land in one journal
   * transaction: a crash between the two must not leave a running VM whose migration the journal
   * still calls undecided (a restart would abort the migration while running the VM, and refuse
   * the source's Commit for good). All of it runs in one synchronous turn: nothing can observe the
   * VM running before the transaction commits, and a crash inside rolls back to "staged".
   */
  private adoptAndJournal(inb: Inbound, built: Restored): RestoreReport {
    const { vm, result, t0, restoredRawNs } = built;
    const done: Inbound = { ...inb };
    const report = this.ctx.journal.transaction((): RestoreReport => {
      const { doorbellRung, resumedTrueNs, resumedRawNs } = this.ctx.adopt(inb, vm, result);
      crashPoint(this.ctx.faults, "crash.destination.duringRestore");
      const errorBoundNs = this.widenForLateResume(vm, result.errorBoundNs, resumedRawNs - restoredRawNs);
      // One instant for both (the resume): the source compares tscAtResume with its own TSC at
      // resumedTrueNs, so a TSC read a moment later would count that moment as migration error.
      const tsc = this.ctx.truth.guestTscAt(vm, 0, resumedTrueNs);
      const rep: RestoreReport = {
        estimatedBlackoutNs: result.estimate.estimatedNs,
        advancedNs: result.advancedNs,
        errorBoundNs,
        capped: result.capped,
        doorbellRung,
        disruptionMarker: result.marker,
        resumeTrueNs: resumedTrueNs,
        decodeNs: inb.decodeNs,
        restoreNs: resumedRawNs - t0, // to the resume: the journal writes after it are off the blackout
        tscAtResume: tsc,
        kvmclockAtResumeNs: pvclockReadCycles(vm.pvclock.guestRead(0), tsc),
        stoppedVcpus: countStopped(vm),
        transferReceivedTrueNs: inb.receiveTrueNs,
      };
      // The decision is journaled with the report: a replayed Commit answers from it.
      this.perform(this.step(inb.req, inb.req.migrationId, inb, { kind: "restored", report: rep }), counterpartOf(inb), done, inb.req.migrationId);
      return rep;
    });
    inb.state = done.state; // memory follows once the transaction committed
    return report;
  }

  /**
   * From the restore to the resume (journal writes, a stalled process) guest time ran on at this
   * host's rate while the ideal ran at the source's: the two crystals may drift apart meanwhile, so
   * the bound grows by it — in the report and on the published page, before the guest can read it.
   */
  private widenForLateResume(vm: HypervisorVm, errorBoundNs: bigint, lateNs: bigint): bigint {
    if (lateNs <= 0n) return errorBoundNs;
    const widened = errorBoundNs + 2n * ((lateNs * DRIFT_ALLOWANCE_PPM + 999_999n) / 1_000_000n);
    if ((vm.vmclock().flags & VMCLOCK_FLAG_TIME_MAXERROR_VALID) !== 0n)
      vm.updateVmclock((p) => {
        p.timeMaxerrorNanosec = widened;
      });
    return widened;
  }

  /** The source decided to keep its VM. Only that source (its key) may say so, for that VM and generation. */
  abort(req: AbortReq): void {
    const inb = this.held(req, req.migrationId);
    const step = this.step(req, req.migrationId, inb, { kind: "abort", vmId: req.vmId, generation: req.generation });
    if (!inb) {
      this.perform(step, { sourceName: req.sourceName, sourceKey: req.sourceKey, peer: "" }, null, req.migrationId);
      return;
    }
    this.apply(inb, step);
    this.ctx.log.info({ event: "migration_aborted", migrationId: req.migrationId, vmId: req.vmId, source: req.sourceName, reason: req.reason }, "source aborted");
  }

  /** The source answered Resolve for a migration we hold. */
  resolved(inb: Inbound, decision: "unknown" | "pending" | "committed" | "aborted", transferRttNs: bigint): void {
    const step = this.step(inb.req, inb.req.migrationId, inb, { kind: "resolved", decision, transferRttNs });
    // The Commit was lost; the source decided and tells us the Transfer round trip it measured.
    const restore = step.effects.find((x) => x.kind === "restore");
    if (restore) this.restoreStaged(inb, restore.legs);
    else this.apply(inb, step);
  }

  pending(): Inbound[] {
    return [...this.inbound.values()].filter(undecided);
  }

  /** How many `pending()` would list, without the list (every Prepare asks, for the in-flight limit). */
  pendingCount(): number {
    let n = 0;
    for (const i of this.inbound.values()) if (undecided(i)) n++;
    return n;
  }

  /** The undecided migration of `vmId` held here, if any. */
  pendingFor(vmId: string): Inbound | undefined {
    for (const i of this.inbound.ofVm(vmId) ?? []) if (undecided(i)) return i;
    return undefined;
  }

  /**
   * A snapshot staged before a restart, held again: it waits for its source's decision (Commit or
   * Resolve), or on receipt (decided here already) for the recovery loop to restore it.
   */
  restage(p: StagedPayload): void {
    const onReceipt = p.req.switchover === "on-receipt";
    this.inbound.set(inboundKey(p.req.sourceName, p.req.migrationId), {
      req: p.req,
      state: { ...destinationState("staged", p.req), ...(onReceipt ? { onReceipt } : {}) },
      leaseFromRawNs: this.ctx.host.rawNs(),
      snapshot: p.snapshot,
      receiveRawNs: p.receiveRawNs,
      receiveTrueNs: 0n, // diagnostics only, not kept across a restart
      // One-sided's legs on this host's raw clock, which a daemon restart does not reset (as receiveRawNs).
      anchorsRawNs: p.legs?.anchorsRawNs ?? [],
      anchorsToSendNs: p.legs?.anchorsToSendNs ?? [],
      requestsRawNs: p.legs?.requestsRawNs ?? [],
      requestsToSendNs: p.legs?.requestsToSendNs ?? [],
      holdNs: p.holdNs,
      decodeNs: p.decodeNs,
    });
  }

  /** A staged migration decided here (on receipt) but not running yet: restored without asking its source. */
  restoreDecided(inb: Inbound): void {
    if (inb.state.phase === "staged" && inb.state.onReceipt) this.restoreStaged(inb, { transferRttNs: null });
  }
}

function countStopped(vm: HypervisorVm): number {
  let n = 0;
  for (let i = 0; i < vm.vcpuCount; i++) if ((vm.pvclock.flags(i) & PVCLOCK_GUEST_STOPPED) !== 0) n++;
  return n;
}
