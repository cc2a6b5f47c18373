// The destination role: answers the source's calls through the destination state machine
// (shared/migration/destination-machine.ts). Capability checks at Prepare, full validation at
// Transfer (nothing is created before it passes), restore and resume only at Commit.

import { invalid, isTscmigError, TscmigError } from "../shared/errors.js";
import { crashPoint, type Faults } from "../shared/faults.js";
import type { Logger } from "../shared/logger.js";
import { LIMITS } from "../shared/limits.js";
import type { EmulatedHost } from "../shared/hypervisor/host.js";
import { EmulatedVm } from "../shared/hypervisor/vm.js";
import { setTscKhzDecision } from "../shared/kvm/tsc.js";
import { PVCLOCK_GUEST_STOPPED, pvclockReadCycles } from "../shared/kvm/pvclock.js";
import { VMCLOCK_FLAG_TIME_MAXERROR_VALID } from "../shared/kvm/vmclock.js";
import {
  type BlackoutEstimate,
  oneSidedEstimate,
  probeEstimate,
  wallclockEstimate,
} from "../shared/migration/blackout.js";
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
  TransferReq,
  TransferRes,
} from "../shared/migration/messages.js";
import { parsePolicy, restoreSnapshot, type RestoreResult } from "../shared/migration/restore.js";
import { checkId, type Snapshot, validateSnapshot } from "../shared/migration/snapshot.js";
import { DRIFT_ALLOWANCE_PPM, parseEstimator } from "../shared/migration/blackout.js";

export interface Inbound {
  req: PrepareReq;
  state: DestinationState;
  snapshot: Snapshot | null;
  receiveRawNs: bigint;
  /** The same instant on the shared true clock (diagnostics: splits the round trip into legs). */
  receiveTrueNs: bigint;
  /** This host's raw clock as each Handover answer before the Transfer left (`opened`, probes): one-sided's anchors. */
  anchorsRawNs: bigint[];
  /** The source's side of those anchors, from the Transfer (a prefix of them, in the same order). */
  anchorsToSendNs: bigint[];
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

export class Destination {
  /**
   * Migrations still undecided here (prepared or staged). A decided one is dropped from memory once
   * its last write is journaled, and later calls about it are answered from the journal (pastState,
   * commit replays), so neither memory nor the scans over this map grow with every migration.
   */
  readonly inbound = new Map<string, Inbound>();

  constructor(private readonly ctx: DestinationContext) {}

  /** The machine state of a migration decided here and no longer held in memory. */
  private pastState(id: string): DestinationState | null {
    const past = this.ctx.journal.getMigration(id);
    if (!past || past.role !== "destination") return null;
    if (past.decision === "committed") return { phase: "running" };
    if (past.decision === "aborted") return { phase: "aborted" };
    return null;
  }

  private fire(id: string, inb: Inbound | null, e: DestinationEvent): DestinationEffect[] {
    const step = stepDestination(inb ? inb.state : this.pastState(id), e);
    if (inb && step.state) inb.state = step.state;
    const refusal = step.effects.find((x) => x.kind === "refuse");
    if (refusal && refusal.kind === "refuse") throw new TscmigError(refusal.code, `${refusal.message} (migration ${id})`, { reason: refusal.reason });
    return step.effects;
  }

  private journal(inb: Inbound, phase: string, decision: "pending" | "committed" | "aborted"): void {
    this.ctx.journal.putMigration({
      migrationId: inb.req.migrationId,
      vmId: inb.req.vmId,
      role: "destination",
      phase,
      decision,
      generation: inb.req.generation,
      peer: inb.req.sourceGrpc,
      ...(inb.report ? { report: reportToJson(inb.report) } : {}),
      updatedNs: this.ctx.host.trueNs(),
    });
  }

  prepare(req: PrepareReq): PrepareRes {
    checkId(req.migrationId, "migrationId");
    checkId(req.vmId, "vmId");
    parsePolicy(req.policy);
    parseEstimator(req.estimator);
    if (req.generation < 1n) throw invalid("generation", "must be ≥ 1");
    if (!Number.isInteger(req.vcpuCount) || req.vcpuCount < 1 || req.vcpuCount > LIMITS.vcpuCountMax)
      throw invalid("vcpuCount", `must be in 1..${LIMITS.vcpuCountMax}`);
    if (req.sourceFracBits !== 48 && req.sourceFracBits !== 32) throw invalid("sourceFracBits", "must be 48 or 32");
    if (req.advanceCapNs < 0n || req.advanceCapNs > LIMITS.blackoutNsMax) throw invalid("advanceCapNs", "out of range");
    const existing = this.inbound.get(req.migrationId);
    if (existing) {
      if (existing.req.vmId !== req.vmId || existing.req.generation !== req.generation)
        throw new TscmigError("already_exists", `migration id ${req.migrationId} was used for another VM or generation`, { reason: "migration_id_reused" });
      this.fire(req.migrationId, existing, { kind: "prepare" });
      return this.capabilities(req);
    }
    const past = this.ctx.journal.getMigration(req.migrationId);
    if (past) throw new TscmigError("already_exists", `migration id ${req.migrationId} already used (${past.decision})`, { reason: "migration_id_reused" });
    const local = this.ctx.localVm(req.vmId);
    if (local) throw new TscmigError("already_exists", `VM ${req.vmId} already runs here (generation ${local.generation})`, { reason: "vm_exists", field: "vmId" });
    const tomb = this.ctx.tombstone(req.vmId);
    if (tomb !== null && req.generation <= tomb)
      throw new TscmigError("failed_precondition", `stale generation ${req.generation}: VM ${req.vmId} left here at generation ${tomb}`, { reason: "stale_generation", field: "generation" });
    for (const other of this.inbound.values())
      if (other.req.vmId === req.vmId && (other.state.phase === "prepared" || other.state.phase === "staged"))
        throw new TscmigError("aborted", `VM ${req.vmId} is already migrating in (${other.req.migrationId})`, { reason: "migration_in_progress" });
    if (this.ctx.vmCount() >= LIMITS.vmCountMax) throw new TscmigError("resource_exhausted", "this daemon hosts its maximum of VMs", { reason: "vm_limit" });
    if (this.ctx.inflight() >= LIMITS.migrationsInFlightMax)
      throw new TscmigError("resource_exhausted", "too many migrations in flight", { reason: "inflight_limit" });
    const caps = this.capabilities(req); // throws a refusal before anything is recorded
    const inb: Inbound = { req, state: { phase: "prepared" }, snapshot: null, receiveRawNs: 0n, receiveTrueNs: 0n, anchorsRawNs: [], anchorsToSendNs: [], holdNs: 0n, decodeNs: 0n, report: null };
    const effects = stepDestination(null, { kind: "prepare" }).effects;
    for (const e of effects) if (e.kind === "journal") this.journal(inb, e.phase, e.decision); // a failed write reserves nothing
    this.inbound.set(req.migrationId, inb);
    return caps;
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

  probe(req: ProbeReq): ProbeRes {
    const t2 = this.ctx.host.realtimeNs();
    const inb = this.inbound.get(req.migrationId);
    if (!inb || inb.state.phase !== "prepared")
      throw new TscmigError("failed_precondition", `no prepared migration ${req.migrationId}`, { reason: "not_prepared" });
    return { t1RealtimeNs: req.t1RealtimeNs, t2RealtimeNs: t2, t3RealtimeNs: this.ctx.host.realtimeNs(), maxerrorNs: this.ctx.host.maxerrorNs() };
  }

  /**
   * An answer on `migrationId`'s Handover call (`opened`, a probe) leaves right after this: one-sided
   * pairs it with the source's receipt of it. The call is ordered and dies at its first failure, so
   * the answers the source received are a prefix of those recorded here.
   */
  handoverAnswering(migrationId: string): void {
    const inb = this.inbound.get(migrationId);
    if (inb && inb.state.phase === "prepared" && inb.anchorsRawNs.length < LIMITS.anchorsMax) inb.anchorsRawNs.push(this.ctx.host.rawNs());
  }

  /** `receiveRawNs`: destination clock when the call arrived; `decodeNs`: time spent decoding. */
  transfer(req: TransferReq, receiveRawNs: bigint, decodeNs: bigint): TransferRes {
    const s = req.snapshot;
    const inb = this.inbound.get(s.migrationId);
    if (inb && inb.state.phase === "staged" && inb.snapshot) {
      // A replayed Transfer of the same migration: idempotent.
      this.fire(s.migrationId, inb, { kind: "transfer" });
      return { destinationHoldNs: inb.holdNs };
    }
    if (!inb) {
      this.fire(s.migrationId, null, { kind: "transfer" }); // refuses: not prepared
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
    const prev = inb.state;
    const effects = this.fire(s.migrationId, inb, { kind: "transfer" });
    inb.snapshot = s;
    inb.receiveRawNs = receiveRawNs;
    const sinceReceiveNs = this.ctx.host.rawNs() - receiveRawNs; // first: a stall in between dates it later, not earlier
    inb.receiveTrueNs = this.ctx.host.trueNs() - sinceReceiveNs;
    inb.anchorsToSendNs = anchors;
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

  commit(req: CommitReq, receiveRawNs: bigint): CommitRes {
    const inb = this.inbound.get(req.migrationId);
    if (!inb) {
      const past = this.ctx.journal.getMigration(req.migrationId);
      if (past?.role === "destination" && past.decision === "committed" && past.report) {
        if (req.vmId !== past.vmId || req.generation !== past.generation)
          throw new TscmigError("failed_precondition", `Commit for ${req.vmId}@${req.generation} does not match ${past.vmId}@${past.generation}`, {
            reason: "stale_generation",
            field: "generation",
          });
        return { report: reportFromJson(past.report), replay: true };
      }
      this.fire(req.migrationId, null, { kind: "commit" });
      throw new TscmigError("internal", "unreachable");
    }
    if (req.vmId !== inb.req.vmId || req.generation !== inb.req.generation)
      throw new TscmigError("failed_precondition", `Commit for ${req.vmId}@${req.generation} does not match ${inb.req.vmId}@${inb.req.generation}`, {
        reason: "stale_generation",
        field: "generation",
      });
    if (req.transferRttNs < 0n || req.transferRttNs > LIMITS.blackoutNsMax) throw invalid("transferRttNs", "out of range");
    if (req.answerToCommitNs !== undefined && (req.answerToCommitNs < 0n || req.answerToCommitNs > LIMITS.blackoutNsMax))
      throw invalid("answerToCommitNs", "out of range");
    const prev = inb.state;
    const effects = this.fire(req.migrationId, inb, { kind: "commit" });
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
      estimate: (at): BlackoutEstimate => {
        switch (r.estimator) {
          case "wallclock":
            return wallclockEstimate({
              sourceRealtimeNs: s.hostRealtimeNs,
              destinationRealtimeNs: at.destinationRealtimeNs,
              sourceMaxerrorNs: s.hostMaxerrorNs,
              destinationMaxerrorNs: host.maxerrorNs(),
            });
          case "one-sided":
            return oneSidedEstimate({
              sourcePauseToSendNs: s.sourcePauseToSendNs,
              transferRttNs: legs.transferRttNs,
              destinationHoldNs: inb.holdNs,
              // to the restore instant the offsets are computed at, not to whenever this runs
              destinationReceiveToNowNs: at.destinationRawNs > inb.receiveRawNs ? at.destinationRawNs - inb.receiveRawNs : 0n,
              // Durations on this host's clock from instants of this process only (a restart loses them).
              ...(legs.answerToCommitNs !== undefined && legs.commitReceiveRawNs !== undefined && legs.commitReceiveRawNs >= inb.receiveRawNs + inb.holdNs
                ? { commit: { destinationAnswerToCommitNs: legs.commitReceiveRawNs - (inb.receiveRawNs + inb.holdNs), sourceAnswerToCommitNs: legs.answerToCommitNs } }
                : {}),
              anchors: inb.anchorsToSendNs.flatMap((sourceAnswerToSendNs, i) => {
                const sent = inb.anchorsRawNs[i];
                return sent !== undefined && inb.receiveRawNs >= sent ? [{ destinationAnswerToReceiveNs: inb.receiveRawNs - sent, sourceAnswerToSendNs }] : [];
              }),
            });
          case "probe": {
            const p = s.probe;
            if (!p) throw invalid("snapshot.probe", "missing");
            return probeEstimate({ sourceRealtimeNs: s.hostRealtimeNs, destinationRealtimeNs: at.destinationRealtimeNs, probe: p, sinceProbeNs: p.probeToPauseNs });
          }
        }
      },
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
        resumedTrueNs,
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
    this.inbound.delete(r.migrationId); // decided and journaled with its report (replays read it back)
    return report;
  }

  abort(req: AbortReq): void {
    const inb = this.inbound.get(req.migrationId) ?? null;
    const effects = this.fire(req.migrationId, inb, { kind: "abort" });
    if (!inb) return;
    for (const e of effects) {
      if (e.kind === "journal") this.journal(inb, e.phase, e.decision);
      if (e.kind === "drop") {
        inb.snapshot = null;
        this.ctx.dropStaged(inb);
      }
    }
    if (inb.state.phase === "aborted") this.inbound.delete(req.migrationId);
    this.ctx.log.info({ event: "migration_aborted", migrationId: req.migrationId, vmId: req.vmId, reason: req.reason }, "source aborted");
  }

  /** The source answered Resolve for a migration we hold. */
  resolved(inb: Inbound, decision: "unknown" | "pending" | "committed" | "aborted", transferRttNs: bigint): void {
    const prev = inb.state;
    const step = stepDestination(inb.state, { kind: "resolved", decision });
    if (step.state) inb.state = step.state;
    if (step.effects.some((e) => e.kind === "restoreAndResume")) {
      // The Commit was lost; the source decided and tells us the transfer round trip it measured.
      this.restoreOrStayStaged(inb, prev, { transferRttNs }, step.effects);
      return;
    }
    for (const e of step.effects) {
      if (e.kind === "journal") this.journal(inb, e.phase, e.decision);
      if (e.kind === "drop") {
        inb.snapshot = null;
        this.ctx.dropStaged(inb);
      }
    }
    if (inb.state.phase === "aborted") this.inbound.delete(inb.req.migrationId);
  }

  pending(): Inbound[] {
    return [...this.inbound.values()].filter((i) => i.state.phase === "prepared" || i.state.phase === "staged");
  }
}

export function reportToJson(r: RestoreReport): string {
  return JSON.stringify(r, (_k, v) => (typeof v === "bigint" ? v.toString() : v));
}

export function reportFromJson(text: string): RestoreReport {
  const o = JSON.parse(text) as Record<string, string | boolean>;
  const b = (k: string) => BigInt((o[k] as string) ?? "0");
  return {
    estimatedBlackoutNs: b("estimatedBlackoutNs"),
    advancedNs: b("advancedNs"),
    errorBoundNs: b("errorBoundNs"),
    capped: o.capped === true,
    doorbellRung: o.doorbellRung === true,
    disruptionMarker: b("disruptionMarker"),
    resumedTrueNs: b("resumedTrueNs"),
    decodeNs: b("decodeNs"),
    restoreNs: b("restoreNs"),
    tscAtResume: b("tscAtResume"),
    kvmclockAtResumeNs: b("kvmclockAtResumeNs"),
    stoppedVcpus: Number(o.stoppedVcpus ?? 0),
    transferReceivedTrueNs: b("transferReceivedTrueNs"),
  };
}

function countStopped(vm: EmulatedVm): number {
  let n = 0;
  for (let i = 0; i < vm.vcpuCount; i++) if ((vm.pvclock.flags(i) & PVCLOCK_GUEST_STOPPED) !== 0) n++;
  return n;
}
