// The destination role: answers the source's calls through the destination state machine
// (shared/migration/destination-machine.ts). Capability checks at Prepare, full validation at
// Transfer (nothing is created before it passes), restore and resume only at Commit.

import { timingSafeEqual } from "node:crypto";
import { invalid, isTscmigError, TscmigError } from "../shared/errors.js";
import { crashPoint, type Faults } from "../shared/faults.js";
import type { Logger } from "../shared/logger.js";
import { LIMITS } from "../shared/limits.js";
import type { EmulatedHost } from "../shared/hypervisor/host.js";
import { EmulatedVm } from "../shared/hypervisor/vm.js";
import { setTscKhzDecision } from "../shared/kvm/tsc.js";
import { PVCLOCK_GUEST_STOPPED, pvclockReadCycles } from "../shared/kvm/pvclock.js";
import { VMCLOCK_FLAG_TIME_MAXERROR_VALID } from "../shared/kvm/vmclock.js";
import { type BlackoutEstimate, estimateBlackout } from "../shared/migration/blackout.js";
import { type DestinationEffect, type DestinationEvent, type DestinationState, stepDestination } from "../shared/migration/destination-machine.js";
import type { JournalStore } from "../shared/migration/journal.js";
import type {
  AbortReq,
  CommitReq,
  CommitRes,
  PrepareReq,
  PrepareRes,
  ProbeReq,
  ProbeRes,
  RestoreReport,
  SourceRef,
  TransferReq,
  TransferRes,
} from "../shared/migration/messages.js";
import { restoreReportFromJournal, restoreReportToJournal } from "../shared/migration/report.js";
import { parsePolicy, restoreSnapshot, type RestoreResult } from "../shared/migration/restore.js";
import { checkId, type Snapshot, validateSnapshot } from "../shared/migration/snapshot.js";
import { DRIFT_ALLOWANCE_PPM, parseEstimator } from "../shared/migration/blackout.js";

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
  report: RestoreReport | null;
}

/** The restore step (restoreSnapshot); a seam only the chaos tests fill with a broken one. */
export type RestoreFn = typeof restoreSnapshot;

export interface DestinationContext {
  name: string;
  host: EmulatedHost;
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
  /** Adopt a restored VM: builds the guest, rings the doorbell if asked, resumes, journals; returns the true time of the resume. */
  adopt(inb: Inbound, vm: EmulatedVm, result: RestoreResult): { doorbellRung: boolean; resumedTrueNs: bigint };
  /** Durable copy of a staged snapshot (for restarts between Transfer and Commit). */
  stageDurably(inb: Inbound): void;
  dropStaged(inb: Inbound): void;
  inflight(): number;
  /** Test seam: replaces restoreSnapshot (the checker's sensitivity tests); production leaves it unset. */
  restore?: RestoreFn;
}

/** What the Commit (or Resolve) that triggers a restore says about the Transfer's legs (one-sided). */
export interface CommitLegs {
  /** Source raw clock: Transfer sent → answered. */
  transferRttNs: bigint;
  /** Source raw clock: Transfer answer received → Commit sent; with `commitReceiveRawNs`, or neither. */
  answerToCommitNs?: bigint;
  /** This host's raw clock when the Commit arrived. */
  commitReceiveRawNs?: bigint;
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

export class Destination {
  /**
   * Migrations still undecided here (prepared or staged), keyed by `inboundKey`. A decided one is
   * dropped from memory once its last write is journaled, and later calls about it are answered from
   * the journal (pastState, commit replays), so neither memory nor the scans over this map grow with
   * every migration.
   */
  readonly inbound = new Map<string, Inbound>();

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
    if (past.decision === "committed") return { phase: "running" };
    if (past.decision === "aborted") return { phase: "aborted" };
    return null;
  }

  /**
   * Steps the machine and journals what the step decided before memory follows: a journal write that
   * fails (disk full) leaves the migration as it was, so nothing is answered that is not durable.
   */
  private fire(ref: SourceRef, id: string, inb: Inbound | null, e: DestinationEvent, journalEffects = true): DestinationEffect[] {
    const step = stepDestination(inb ? inb.state : this.pastState(ref, id), e);
    const refusal = step.effects.find((x) => x.kind === "refuse");
    if (refusal && refusal.kind === "refuse") throw new TscmigError(refusal.code, `${refusal.message} (migration ${id})`, { reason: refusal.reason });
    if (inb && journalEffects) for (const x of step.effects) if (x.kind === "journal") this.journal(inb, x.phase, x.decision);
    if (inb && step.state) inb.state = step.state;
    return step.effects;
  }

  private journal(inb: Inbound, phase: string, decision: "pending" | "committed" | "aborted"): void {
    this.ctx.journal.putMigration({
      migrationId: inb.req.migrationId,
      source: inb.req.sourceName,
      sourceKey: inb.req.sourceKey,
      vmId: inb.req.vmId,
      role: "destination",
      phase,
      decision,
      generation: inb.req.generation,
      peer: inb.req.sourceGrpc,
      ...(inb.report ? { report: restoreReportToJournal(inb.report) } : {}),
      updatedNs: this.ctx.host.trueNs(),
    });
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
    const key = inboundKey(req.sourceName, req.migrationId);
    const existing = this.inbound.get(key);
    if (existing) {
      if (!sameKey(existing.req.sourceKey, req.sourceKey) || existing.req.vmId !== req.vmId || existing.req.generation !== req.generation)
        throw new TscmigError("already_exists", `migration ${req.migrationId} of ${req.sourceName} is already prepared for another VM, generation or key`, { reason: "migration_id_reused" });
      this.fire(req, req.migrationId, existing, { kind: "prepare" }); // a replayed Prepare
      if (existing.state.phase === "prepared") existing.leaseFromRawNs = this.ctx.host.rawNs();
      return this.capabilities(req);
    }
    const past = this.ctx.journal.getInboundMigration(req.sourceName, req.migrationId);
    if (past) throw new TscmigError("already_exists", `migration ${req.migrationId} of ${req.sourceName} already used (${past.decision})`, { reason: "migration_id_reused" });
    const local = this.ctx.localVm(req.vmId);
    if (local) throw new TscmigError("already_exists", `VM ${req.vmId} already runs here (generation ${local.generation})`, { reason: "vm_exists", field: "vmId" });
    const tomb = this.ctx.tombstone(req.vmId);
    if (tomb !== null && req.generation <= tomb)
      throw new TscmigError("failed_precondition", `stale generation ${req.generation}: VM ${req.vmId} left here at generation ${tomb}`, { reason: "stale_generation", field: "generation" });
    this.expireLeases();
    for (const other of this.inbound.values())
      if (other.req.vmId === req.vmId && (other.state.phase === "prepared" || other.state.phase === "staged"))
        throw new TscmigError("aborted", `VM ${req.vmId} is already migrating in (${other.req.migrationId} of ${other.req.sourceName})`, { reason: "migration_in_progress" });
    if (this.ctx.vmCount() >= LIMITS.vmCountMax) throw new TscmigError("resource_exhausted", "this daemon hosts its maximum of VMs", { reason: "vm_limit" });
    if (this.ctx.inflight() >= LIMITS.migrationsInFlightMax)
      throw new TscmigError("resource_exhausted", "too many migrations in flight", { reason: "inflight_limit" });
    const caps = this.capabilities(req); // throws a refusal before anything is recorded
    const inb: Inbound = {
      req,
      state: { phase: "prepared" },
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
      report: null,
    };
    for (const e of stepDestination(null, { kind: "prepare" }).effects) if (e.kind === "journal") this.journal(inb, e.phase, e.decision);
    this.inbound.set(key, inb); // only once durable: a refused or failed Prepare reserves nothing
    return caps;
  }

  /**
   * A prepared reservation is a lease: a source that goes quiet before its Transfer (it died, or it
   * only meant to hold a slot) loses it after `LIMITS.prepareLeaseNs`. The abort is journaled, so a
   * late Transfer is refused and that source resumes its VM. Staged migrations never expire: their
   * source may already have decided to commit, and only its answer (Commit or Resolve) settles them.
   */
  expireLeases(): number {
    const now = this.ctx.host.rawNs();
    let expired = 0;
    for (const [key, inb] of this.inbound) {
      if (inb.state.phase !== "prepared" || now - inb.leaseFromRawNs < LIMITS.prepareLeaseNs) continue;
      this.fire(inb.req, inb.req.migrationId, inb, { kind: "abort" });
      this.inbound.delete(key);
      expired++;
      this.ctx.log.warn({ event: "prepare_lease_expired", migrationId: inb.req.migrationId, vmId: inb.req.vmId, source: inb.req.sourceName }, "prepared migration expired before its Transfer");
    }
    return expired;
  }

  private capabilities(req: PrepareReq): PrepareRes {
    const info = this.ctx.host.info;
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
    if (inb && inb.state.phase === "staged" && inb.snapshot) {
      // A replayed Transfer of the same migration: idempotent.
      this.fire(req, s.migrationId, inb, { kind: "transfer" });
      return { destinationHoldNs: inb.holdNs };
    }
    if (!inb) {
      this.fire(req, s.migrationId, null, { kind: "transfer" }); // refuses: not prepared, or decided
      throw new TscmigError("internal", "unreachable");
    }
    validateSnapshot(s);
    const r = inb.req;
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
    const prev = inb.state;
    const effects = this.fire(req, s.migrationId, inb, { kind: "transfer" }, false);
    inb.snapshot = s;
    inb.receiveRawNs = receiveRawNs;
    const sinceReceiveNs = this.ctx.host.rawNs() - receiveRawNs; // first: a stall in between dates it later, not earlier
    inb.receiveTrueNs = this.ctx.host.trueNs() - sinceReceiveNs;
    inb.anchorsToSendNs = anchors;
    inb.requestsToSendNs = requests;
    inb.decodeNs = decodeNs;
    // The staged snapshot and the migration's phase land together (one transaction, one sync).
    try {
      this.ctx.journal.transaction(() => {
        for (const e of effects) {
          if (e.kind === "stage") this.ctx.stageDurably(inb);
          if (e.kind === "journal") this.journal(inb, e.phase, e.decision);
        }
      });
    } catch (e) {
      // Not staged durably (a full disk): not staged at all, or a Commit would run what a restart cannot know of.
      if (!(e instanceof Error && e.name === "CrashSignal")) {
        inb.state = prev;
        inb.snapshot = null;
      }
      throw e;
    }
    crashPoint(this.ctx.faults, "crash.destination.afterStage");
    inb.holdNs = this.ctx.host.rawNs() - receiveRawNs;
    return { destinationHoldNs: inb.holdNs };
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
    if (req.vmId !== inb.req.vmId || req.generation !== inb.req.generation)
      throw new TscmigError("failed_precondition", `Commit for ${req.vmId}@${req.generation} does not match ${inb.req.vmId}@${inb.req.generation}`, {
        reason: "stale_generation",
        field: "generation",
      });
    if (req.transferRttNs < 0n || req.transferRttNs > LIMITS.blackoutNsMax) throw invalid("transferRttNs", "out of range");
    if (req.answerToCommitNs !== undefined && (req.answerToCommitNs < 0n || req.answerToCommitNs > LIMITS.blackoutNsMax))
      throw invalid("answerToCommitNs", "out of range");
    const prev = inb.state;
    const effects = this.fire(req, req.migrationId, inb, { kind: "commit" }, false);
    if (effects.some((e) => e.kind === "replyStored")) {
      // Never answer a replay with a report we do not have: the source would take it for a restore.
      if (inb.report === null) throw new TscmigError("unavailable", `migration ${req.migrationId} is running here but its restore report is not recorded yet`, { reason: "restore_incomplete" });
      return { report: inb.report, replay: true };
    }
    const legs: CommitLegs = {
      transferRttNs: req.transferRttNs,
      ...(req.answerToCommitNs !== undefined ? { answerToCommitNs: req.answerToCommitNs, commitReceiveRawNs: receiveRawNs } : {}),
    };
    return { report: this.restoreOrStayStaged(inb, prev, legs, effects), replay: false };
  }

  /**
   * A Commit for a migration not held in memory: a replay of one committed here (answered from the
   * journal), one aborted here (refused: durable, so its source may resume the VM), or one never seen.
   * Never seen is made durable before it is answered — journaled as aborted, a fence — so that a late
   * Prepare or Transfer of it is refused forever and the source may safely take its VM back.
   */
  private commitUnheld(req: CommitReq): CommitRes {
    const past = this.ctx.journal.getInboundMigration(req.sourceName, req.migrationId);
    if (past && past.role === "destination") {
      if (past.sourceKey && !sameKey(past.sourceKey, req.sourceKey)) throw foreign(req.sourceName, req.migrationId);
      if (past.decision === "committed" && past.report) {
        if (req.vmId !== past.vmId || req.generation !== past.generation)
          throw new TscmigError("failed_precondition", `Commit for ${req.vmId}@${req.generation} does not match ${past.vmId}@${past.generation}`, {
            reason: "stale_generation",
            field: "generation",
          });
        return { report: restoreReportFromJournal(past.report), replay: true };
      }
    }
    if (!past) {
      checkId(req.vmId, "vmId");
      this.ctx.journal.putMigration({
        migrationId: req.migrationId,
        source: req.sourceName,
        sourceKey: req.sourceKey,
        vmId: req.vmId,
        role: "destination",
        phase: "fenced",
        decision: "aborted",
        generation: req.generation,
        peer: "",
        updatedNs: this.ctx.host.trueNs(),
      });
      this.ctx.log.warn({ event: "commit_fenced", migrationId: req.migrationId, vmId: req.vmId, source: req.sourceName }, "Commit for a migration never seen here: fenced");
      throw new TscmigError("aborted", `migration ${req.migrationId} of ${req.sourceName} is not known here; it is now fenced (recorded as aborted), so its source may resume the VM`, {
        reason: "migration_unknown",
      });
    }
    this.fire(req, req.migrationId, null, { kind: "commit" }); // refuses: Commit after Abort, or undecided
    throw new TscmigError("internal", "unreachable");
  }

  /**
   * Restores after the machine moved to `running`. A restore that throws before the VM was adopted
   * has started nothing: the migration goes back to its previous phase (the snapshot is still
   * journaled) so the next Commit or Resolve retries it, and the caller gets the typed error —
   * never a success that hides a VM that runs nowhere.
   */
  private restoreOrStayStaged(inb: Inbound, prev: DestinationState, legs: CommitLegs, effects: DestinationEffect[]): RestoreReport {
    try {
      return this.restoreAndResume(inb, legs, effects);
    } catch (e) {
      if (e instanceof Error && e.name === "CrashSignal") throw e;
      const adopted = this.ctx.localVm(inb.req.vmId) !== null;
      if (!adopted) inb.state = prev;
      const err = isTscmigError(e) ? e : new TscmigError("internal", `restore of migration ${inb.req.migrationId} failed: ${e instanceof Error ? e.message : String(e)}`);
      this.ctx.log.error(
        { event: "restore_failed", migrationId: inb.req.migrationId, vmId: inb.req.vmId, adopted, err: err.toJSON() },
        adopted ? "restore failed after the VM was adopted" : "restore failed; the migration stays staged and will be retried",
      );
      throw err;
    }
  }

  /** The source's decision arrived (Commit or Resolve): restore, resume, journal. */
  restoreAndResume(inb: Inbound, legs: CommitLegs, effects: DestinationEffect[]): RestoreReport {
    // The decision is journaled with the adopted VM, in one transaction (below), not before: the
    // source holds it durably already, so a restart in between finds the snapshot still staged and
    // learns the decision by Resolve, as after any crash before the Commit (never runs it twice).
    // One journal write less inside the blackout.
    crashPoint(this.ctx.faults, "crash.destination.beforeRestore");
    const s = inb.snapshot as Snapshot;
    const r = inb.req;
    const t0 = this.ctx.host.rawNs();
    const vm = new EmulatedVm(this.ctx.host, { vcpus: s.vcpuCount, guestTscKhz: s.guestTscKhz });
    const host = this.ctx.host;
    const result = (this.ctx.restore ?? restoreSnapshot)(vm, s, {
      policy: r.policy,
      capNs: r.advanceCapNs === 0n ? LIMITS.advanceCapNsDefault : r.advanceCapNs,
      destinationMaxerrorNs: host.maxerrorNs(),
      estimate: (at): BlackoutEstimate =>
        estimateBlackout(r.estimator, {
          sourceRealtimeNs: s.hostRealtimeNs,
          sourceMaxerrorNs: s.hostMaxerrorNs,
          destinationRealtimeNs: at.destinationRealtimeNs,
          destinationMaxerrorNs: host.maxerrorNs(),
          probe: s.probe,
          oneSided: () => ({
            sourcePauseToSendNs: s.sourcePauseToSendNs,
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
        }),
    });
    // Adopting the VM (journaled as owner, running) and journaling the decision land in one journal
    // transaction: a crash between the two must not leave a running VM whose migration the journal
    // still calls undecided (a restart would abort the migration while running the VM, and refuse
    // the source's Commit for good). All of it runs in one synchronous turn: nothing can observe the
    // VM running before the transaction commits, and a crash inside rolls back to "staged".
    const report = this.ctx.journal.transaction((): RestoreReport => {
      const restoredRawNs = host.rawNs();
      const { doorbellRung, resumedTrueNs } = this.ctx.adopt(inb, vm, result);
      crashPoint(this.ctx.faults, "crash.destination.duringRestore");
      // From the restore to the resume (journal writes, a stalled process) guest time ran on at this
      // host's rate while the ideal ran at the source's: the two crystals may drift apart meanwhile, so
      // the bound grows by it — in the report and on the published page, before the guest can read it.
      let errorBoundNs = result.errorBoundNs;
      const lateNs = host.rawNsAt(resumedTrueNs) - restoredRawNs; // restore → resume, not what follows
      if (lateNs > 0n) {
        errorBoundNs += 2n * ((lateNs * DRIFT_ALLOWANCE_PPM + 999_999n) / 1_000_000n);
        if ((vm.vmclock().flags & VMCLOCK_FLAG_TIME_MAXERROR_VALID) !== 0n)
          vm.updateVmclock((p) => {
            p.timeMaxerrorNanosec = errorBoundNs;
          });
      }
      // One instant for both (the resume): the source compares tscAtResume with its own TSC at
      // resumedTrueNs, so a TSC read a moment later would count that moment as migration error.
      const tsc = vm.guestTscAt(0, resumedTrueNs);
      const rep: RestoreReport = {
        estimatedBlackoutNs: result.estimate.estimatedNs,
        advancedNs: result.advancedNs,
        errorBoundNs,
        capped: result.capped,
        doorbellRung,
        disruptionMarker: result.marker,
        resumeTrueNs: resumedTrueNs,
        decodeNs: inb.decodeNs,
        restoreNs: host.rawNs() - t0,
        tscAtResume: tsc,
        kvmclockAtResumeNs: pvclockReadCycles(vm.pvclock.guestRead(0), tsc),
        stoppedVcpus: countStopped(vm),
        transferReceivedTrueNs: inb.receiveTrueNs,
      };
      inb.report = rep; // journal() writes it with the decision: a replayed Commit answers from it
      for (const e of effects) if (e.kind === "journal") this.journal(inb, e.phase, e.decision);
      this.ctx.dropStaged(inb);
      return rep;
    });
    inb.snapshot = null; // the VM holds the state now
    crashPoint(this.ctx.faults, "crash.destination.afterRestore");
    this.inbound.delete(inboundKey(r.sourceName, r.migrationId)); // decided and journaled with its report (replays read it back)
    return report;
  }

  /** The source decided to keep its VM. Only that source (its key) may say so, for that VM and generation. */
  abort(req: AbortReq): void {
    const inb = this.held(req, req.migrationId);
    if (inb && (req.vmId !== inb.req.vmId || req.generation !== inb.req.generation))
      throw new TscmigError("failed_precondition", `Abort for ${req.vmId}@${req.generation} does not match ${inb.req.vmId}@${inb.req.generation}`, {
        reason: "stale_generation",
        field: "generation",
      });
    const effects = this.fire(req, req.migrationId, inb, { kind: "abort" });
    if (!inb) return;
    for (const e of effects)
      if (e.kind === "drop") {
        inb.snapshot = null;
        this.ctx.dropStaged(inb);
      }
    if (inb.state.phase === "aborted") this.inbound.delete(inboundKey(inb.req.sourceName, inb.req.migrationId));
    this.ctx.log.info({ event: "migration_aborted", migrationId: req.migrationId, vmId: req.vmId, source: req.sourceName, reason: req.reason }, "source aborted");
  }

  /** The source answered Resolve for a migration we hold. */
  resolved(inb: Inbound, decision: "unknown" | "pending" | "committed" | "aborted", transferRttNs: bigint): void {
    const prev = inb.state;
    const step = stepDestination(inb.state, { kind: "resolved", decision });
    if (step.effects.some((e) => e.kind === "restoreAndResume")) {
      // The Commit was lost; the source decided and tells us the transfer round trip it measured.
      if (step.state) inb.state = step.state;
      this.restoreOrStayStaged(inb, prev, { transferRttNs }, step.effects);
      return;
    }
    for (const e of step.effects) if (e.kind === "journal") this.journal(inb, e.phase, e.decision); // durable before memory follows
    if (step.state) inb.state = step.state;
    for (const e of step.effects)
      if (e.kind === "drop") {
        inb.snapshot = null;
        this.ctx.dropStaged(inb);
      }
    if (inb.state.phase === "aborted") this.inbound.delete(inboundKey(inb.req.sourceName, inb.req.migrationId));
  }

  pending(): Inbound[] {
    return [...this.inbound.values()].filter((i) => i.state.phase === "prepared" || i.state.phase === "staged");
  }
}

function countStopped(vm: EmulatedVm): number {
  let n = 0;
  for (let i = 0; i < vm.vcpuCount; i++) if ((vm.pvclock.flags(i) & PVCLOCK_GUEST_STOPPED) !== 0) n++;
  return n;
}
