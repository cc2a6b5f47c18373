// The source role: drives the source state machine (shared/migration/source-machine.ts) for one
// migration. The machine holds the migration and decides; this driver performs each effect —
// journal writes, calls through a PeerClient or the Handover link, pausing, capturing and resuming
// the VM — and feeds what it measured back as the next event.

import { isTscmigError, TscmigError } from "../shared/errors.js";
import { CrashSignal, crashPoint, type Faults } from "../shared/faults.js";
import type { HistorySink } from "../shared/history.js";
import type { Logger } from "../shared/logger.js";
import type { EmulatedHost } from "../shared/hypervisor/host.js";
import type { TruthProbe } from "../shared/hypervisor/truth.js";
import { type EstimatorName, type ProbeExchange, probeOffset } from "../shared/migration/blackout.js";
import type { HostedVm } from "../shared/migration/hosted-vm.js";
import type { JournalStore } from "../shared/migration/journal.js";
import type { HandoverLink, PeerClient, PrepareReq, SwitchoverMode } from "../shared/migration/messages.js";
import type { PolicyName } from "../shared/migration/restore.js";
import { captureSnapshot } from "../shared/migration/snapshot.js";
import {
  initialSourceState,
  isDurableRefusal,
  isNotAllowed,
  type PhaseTimings,
  type SourceEffect,
  type SourceEvent,
  type SourceMessage,
  type SourceRecord,
  type SourceState,
  stepSource,
} from "../shared/migration/source-machine.js";
import { pvclockReadCycles } from "../shared/kvm/pvclock.js";
import type { MigrationReport } from "../shared/migration/report.js";
import { sleep, type Scheduler } from "../shared/time/clock.js";

export type { MigrationReport, PhaseTimings };

export interface MigrateOptions {
  migrationId: string;
  destination: string;
  policy: PolicyName;
  estimator: EstimatorName;
  doorbell: boolean;
  advanceCapNs: bigint;
  /** This migration's secret (hex): every message after Prepare carries it (SourceRef). */
  sourceKey: string;
  switchover?: SwitchoverMode;
}


export interface SourceContext {
  name: string;
  grpcAdvertise: string;
  host: EmulatedHost;
  scheduler: Scheduler;
  journal: JournalStore;
  faults: Faults;
  history: HistorySink;
  /** True time, for the report's diagnostics only. */
  truth: TruthProbe;
  log: Logger;
  probeExchanges: number;
  retriesMax: number;
  /** Ownership hooks owned by the node. */
  pauseVm(h: HostedVm): void;
  resumeVm(h: HostedVm): void;
  handOff(h: HostedVm, migrationId: string): void;
  /** The destination durably refused the Commit: the handed-off VM runs here again. */
  reclaim(h: HostedVm, migrationId: string): void;
  /** The destination acknowledged the VM: the state held since the hand-off is dropped. */
  release(migrationId: string): void;
}

function errorOf(e: unknown): TscmigError {
  if (isTscmigError(e)) return e;
  if (e instanceof CrashSignal) throw e;
  return new TscmigError("internal", e instanceof Error ? e.message : String(e));
}

/** Runs one migration of `h` to `peer`; resolves with the report whatever the outcome. */
export async function migrateOut(ctx: SourceContext, h: HostedVm, peer: PeerClient, opts: MigrateOptions): Promise<MigrationReport> {
  const driver = new SourceDriver(ctx, h, peer, opts);
  try {
    await driver.run(probesFor(ctx, peer, opts));
  } finally {
    driver.close();
  }
  return reportOf(driver.state, h, ctx, opts.destination);
}

/**
 * Probes before the pause. One-sided sends a few too when the peer offers a Handover link: each
 * answer is an anchor that caps the Transfer's forward leg (blackout.ts), for one link round trip.
 */
function probesFor(ctx: SourceContext, peer: PeerClient, opts: MigrateOptions): number {
  if (opts.estimator === "probe") return Math.max(1, ctx.probeExchanges);
  return opts.estimator === "one-sided" && peer.handover ? ONE_SIDED_ANCHOR_PROBES : 0;
}

function prepareReq(ctx: SourceContext, h: HostedVm, opts: MigrateOptions): PrepareReq {
  return {
    migrationId: opts.migrationId,
    vmId: h.id,
    generation: h.generation + 1n,
    vcpuCount: h.vm.vcpuCount,
    guestTscKhz: h.vm.guestTscKhz,
    sourceFracBits: h.vm.hostInfo.vendor.fracBits,
    policy: opts.policy,
    estimator: opts.estimator,
    doorbell: opts.doorbell,
    advanceCapNs: opts.advanceCapNs,
    sourceName: ctx.name,
    sourceGrpc: ctx.grpcAdvertise,
    sourceKey: opts.sourceKey,
    ...(opts.switchover === "on-receipt" ? { switchover: "on-receipt" as const } : {}),
  };
}

type Carrier = Pick<HandoverLink, "probe" | "transfer" | "commit">;

/** Carries out the machine's effects for one migration; holds only transport resources of its own. */
class SourceDriver {
  state: SourceState;
  private readonly log: Logger;
  /** Probes, Transfer and Commit ride this when the peer offers one (opened after Prepare, before the pause). */
  private link: HandoverLink | null = null;
  private finished = false;

  constructor(
    private readonly ctx: SourceContext,
    private readonly h: HostedVm,
    private readonly peer: PeerClient,
    private readonly opts: MigrateOptions,
  ) {
    this.log = ctx.log.child({ migrationId: opts.migrationId, vmId: h.id });
    this.state = initialSourceState(prepareReq(ctx, h, opts));
  }

  /** One event in, effects out in order; an effect's result is the next event. */
  async run(probes: number): Promise<void> {
    const queue: SourceEvent[] = [{ kind: "start", probes, retriesMax: this.ctx.retriesMax }];
    while (queue.length > 0 && !this.finished) {
      const ev = queue.shift() as SourceEvent;
      const step = stepSource(this.state, ev);
      if (isNotAllowed(step)) {
        this.log.error({ event: "illegal_event", evt: step.event, phase: step.phase }, "source machine rejected an event");
        continue;
      }
      this.state = step.state;
      for (const eff of step.effects) {
        const next = await this.perform(eff);
        if (next) queue.push(next);
        if (this.finished || next?.kind === "journalFailed") break; // the rest of the step stood on that write
      }
    }
  }

  close(): void {
    this.link?.close();
  }

  private carrier(): Carrier {
    return this.link?.live ? this.link : this.peer;
  }

  private async perform(eff: SourceEffect): Promise<SourceEvent | null> {
    switch (eff.kind) {
      case "journal":
        return this.journal(eff.record);
      case "send":
        return this.send(eff.message);
      case "pauseVm":
        return this.pauseVm();
      case "capture":
        return this.capture(eff.exchanges, eff.lastProbeRawNs);
      case "resumeVm":
        this.ctx.resumeVm(this.h);
        return null;
      case "reclaimVm":
        this.ctx.reclaim(this.h, this.opts.migrationId);
        return null;
      case "handOffVm":
        this.ctx.handOff(this.h, this.opts.migrationId);
        this.ctx.release(this.opts.migrationId);
        return null;
      case "finish":
        this.finished = true;
        this.logFinished();
        return null;
    }
  }

  private journal(record: SourceRecord): SourceEvent | null {
    const s = this.state.req;
    try {
      this.ctx.journal.putMigration({
        migrationId: s.migrationId,
        source: "",
        sourceKey: s.sourceKey,
        vmId: s.vmId,
        role: "source",
        phase: record.phase,
        decision: record.decision,
        generation: s.generation,
        peer: this.opts.destination,
        updatedNs: this.ctx.host.trueNs(),
        report: JSON.stringify({ transferRttNs: record.transferRttNs.toString() }),
      });
    } catch (e) {
      const error = errorOf(e);
      // What comes next stands on a pending record or on the decision: stop. An abort's record
      // (retried by the node's journal, and a restart aborts what stayed pending) or the phase
      // after a delivered Commit (re-delivered by recovery) need not hold the migration up.
      if (record.decision === "pending" || record.phase === "committing") return { kind: "journalFailed", error, mayHaveLanded: error.reason === "journal_io_error" };
      // On-receipt, "committed" only records what the destination said: the VM runs there whatever
      // this write did, and a restart that reads "handing-off" asks it again (Resolve).
      this.log.warn({ event: "journal_write_failed", decision: record.decision, phase: record.phase, err: error.toJSON() }, "migration record not journaled; going on");
      return null;
    }
    if (record.decision === "committed" && record.phase === "committing") crashPoint(this.ctx.faults, "crash.source.afterCommitJournal");
    if (record.phase === "handing-off") crashPoint(this.ctx.faults, "crash.source.afterHandingOffJournal");
    return null;
  }

  private async send(m: SourceMessage): Promise<SourceEvent | null> {
    switch (m.kind) {
      case "prepare":
        return this.sendPrepare(m.req);
      case "probe":
        return this.sendProbe(m);
      case "transfer":
        return this.sendTransfer(m);
      case "commit":
        return this.sendCommit(m);
      case "abort":
        this.peer.abort(m.req).catch(() => {
          /* best effort: the destination also asks Resolve */
        });
        return null;
      case "resolve":
        return this.sendResolve(m);
    }
  }

  private async sendPrepare(req: PrepareReq): Promise<SourceEvent> {
    try {
      const requestRawNs = this.ctx.host.rawNs();
      await this.peer.prepare(req);
      const exchange = { requestRawNs, answerRawNs: this.ctx.host.rawNs() };
      crashPoint(this.ctx.faults, "crash.source.afterPrepare");
      return { kind: "prepareOk", link: await this.openLink(), exchange };
    } catch (e) {
      return { kind: "prepareFailed", error: errorOf(e) };
    }
  }

  /** Opens the Handover link if the peer offers one; its opening exchange is the first anchor. */
  private async openLink(): Promise<{ requestRawNs: bigint; answerRawNs: bigint } | null> {
    if (!this.peer.handover) return null;
    const requestRawNs = this.ctx.host.rawNs();
    const s = this.state.req;
    this.link = await this.peer.handover({ migrationId: s.migrationId, sourceName: s.sourceName, sourceKey: s.sourceKey }).catch((e: unknown) => {
      // E.g. a peer without Handover: the unary calls carry the migration, only slower.
      this.log.debug({ event: "handover_unavailable", err: errorOf(e).message }, "no handover link; using unary calls");
      return null;
    });
    return this.link ? { requestRawNs, answerRawNs: this.ctx.host.rawNs() } : null;
  }

  private async sendProbe(m: Extract<SourceMessage, { kind: "probe" }>): Promise<SourceEvent> {
    const host = this.ctx.host;
    try {
      const t1 = host.realtimeNs();
      const carrier = this.carrier();
      const sentRawNs = host.rawNs();
      const r = await carrier.probe({ migrationId: m.migrationId, t1RealtimeNs: t1, ...m.ref });
      const t4 = host.realtimeNs();
      const exchange: ProbeExchange = { t1, t2: r.t2RealtimeNs, t3: r.t3RealtimeNs, t4 };
      return { kind: "probeOk", exchange, sentRawNs, answerRawNs: host.rawNs(), viaLink: carrier === this.link };
    } catch (e) {
      return { kind: "probeFailed", error: errorOf(e) };
    }
  }

  private pauseVm(): SourceEvent {
    try {
      this.ctx.pauseVm(this.h); // journals the paused role first; a failed write leaves the VM running
    } catch (e) {
      return { kind: "journalFailed", error: errorOf(e), mayHaveLanded: false };
    }
    const vm = this.h.vm;
    const pauseTrueNs = this.ctx.host.trueNs();
    const tscAtPause = vm.readGuestTsc(0);
    const kvmclockAtPauseNs = pvclockReadCycles(vm.pvclock.guestRead(0), tscAtPause);
    crashPoint(this.ctx.faults, "crash.source.afterPause");
    return { kind: "paused", pauseTrueNs, tscAtPause, kvmclockAtPauseNs };
  }

  private capture(exchanges: ProbeExchange[], lastProbeRawNs: bigint): SourceEvent {
    const host = this.ctx.host;
    const t0 = host.rawNs();
    const s = this.state.req;
    try {
      // The probe's drift window runs to the snapshot's clock read, not to the (earlier) pause.
      const probe = exchanges.length > 0 ? { ...probeOffset(exchanges), probeToPauseNs: t0 - lastProbeRawNs } : null;
      const snapshot = captureSnapshot(this.h.vm, this.h.guest, { migrationId: s.migrationId, vmId: s.vmId, generation: s.generation, hostMaxerrorNs: host.maxerrorNs(), probe });
      return { kind: "captured", snapshot, captureNs: host.rawNs() - t0 };
    } catch (e) {
      return { kind: "captureFailed", error: errorOf(e), captureNs: host.rawNs() - t0 };
    }
  }

  private async sendTransfer(m: Extract<SourceMessage, { kind: "transfer" }>): Promise<SourceEvent> {
    const host = this.ctx.host;
    const sendRaw = host.rawNs();
    // Source clock only (see blackout.ts). Measured from the snapshot's clock read, not from the
    // pause: the guest TSC keeps running while paused (as on KVM) and the snapshot holds its
    // value at that read, so the destination must add the time since the read. From the pause
    // it would also add pause → read (capture, a GC pause, a busy host), an error the bound
    // does not cover.
    // Through the VM's hypervisor: the TSC is its host's (a real machine's under the kvm backend).
    const readRaw = this.h.vm.hostRawNsOfTsc(m.snapshot.hostTsc);
    const snapshot = { ...m.snapshot, sourceCaptureToSendNs: sendRaw > readRaw ? sendRaw - readRaw : 0n };
    const carrier = this.carrier();
    const viaLink = carrier === this.link;
    try {
      const sendTrueNs = host.trueNs();
      const r = await carrier.transfer({
        snapshot,
        sourceAnchorsToSendNs: m.anchorsRawNs.map((a) => sendRaw - a),
        sourceRequestsToSendNs: m.requestsRawNs.map((q) => sendRaw - q),
        ...m.ref,
      });
      const answerRawNs = host.rawNs();
      const timing = { rttNs: answerRawNs - sendRaw, answerRawNs, sendTrueNs, answerTrueNs: host.trueNs(), holdNs: r.destinationHoldNs };
      crashPoint(this.ctx.faults, "crash.source.afterTransfer");
      return { kind: "transferOk", timing, encodeNs: r.encodeNs ?? 0n, viaLink, ...(r.report ? { report: r.report } : {}) };
    } catch (e) {
      return { kind: "transferFailed", error: errorOf(e), viaLink };
    }
  }

  /**
   * The first Commit also hands the VM off: the decision is journaled, so the VM is paused and never
   * runs here again, and a restart re-does the hand-off from the journal. The hand-off (a journal
   * write, a log line) therefore waits until the Commit's frames left, on a later turn of the event
   * loop, instead of delaying it.
   */
  private async sendCommit(m: Extract<SourceMessage, { kind: "commit" }>): Promise<SourceEvent> {
    if (m.delayNs > 0n) await sleep(this.ctx.scheduler, m.delayNs);
    const host = this.ctx.host;
    const t0 = host.rawNs();
    const carrier = this.carrier();
    const viaLink = carrier === this.link;
    const call = carrier.commit({ ...m.req, answerToCommitNs: t0 - m.answerRawNs });
    let handOffError: { e: unknown } | null = null;
    const handedOff = m.handOff
      ? sleep(this.ctx.scheduler, 0n)
          .then(() => this.ctx.handOff(this.h, this.opts.migrationId))
          .catch((e: unknown) => {
            handOffError = { e };
          })
      : null;
    let next: SourceEvent;
    try {
      const r = await call;
      const commitNs = host.rawNs() - t0;
      crashPoint(this.ctx.faults, "crash.source.afterCommit");
      next = { kind: "commitOk", report: r.report, commitNs, viaLink };
    } catch (e) {
      const error = errorOf(e);
      // A destination that refuses Commit definitively (aborted/unknown) cannot be made to run
      // the VM; it comes back here. Any other failure leaves the decision standing: retried.
      this.log.warn({ event: "commit_failed", attempt: m.attempt, code: error.code, err: error.message }, "commit failed");
      next = isDurableRefusal(error) ? { kind: "commitRefused", error, viaLink } : { kind: "commitFailed", error, viaLink };
    }
    if (handedOff) await handedOff;
    if (handOffError !== null) throw (handOffError as { e: unknown }).e;
    return next;
  }

  /** On-receipt: what became of the Transfer, asked of the destination (which fences it unless it runs the VM). */
  private async sendResolve(m: Extract<SourceMessage, { kind: "resolve" }>): Promise<SourceEvent> {
    if (m.delayNs > 0n) await sleep(this.ctx.scheduler, m.delayNs);
    try {
      const r = await this.peer.resolve(m.req);
      crashPoint(this.ctx.faults, "crash.source.afterResolve");
      return { kind: "resolveOk", decision: r.decision };
    } catch (e) {
      const error = errorOf(e);
      this.log.warn({ event: "resolve_failed", attempt: m.attempt, code: error.code, err: error.message }, "resolve of a handed-off migration failed");
      return { kind: "resolveFailed", error };
    }
  }

  private logFinished(): void {
    const report = reportOf(this.state, this.h, this.ctx, this.opts.destination);
    // A migration that did not commit (refused, aborted, in doubt) needs an operator's eye.
    this.log[report.outcome === "committed" ? "info" : "warn"](
      {
        event: "migration_finished",
        outcome: report.outcome,
        trueBlackoutNs: report.trueBlackoutNs,
        estimatedBlackoutNs: report.estimatedBlackoutNs,
        errorBoundNs: report.errorBoundNs,
        ...(report.error ? { error: report.error } : {}),
      },
      "migration finished",
    );
  }
}

/** The report of a migration, from the machine's state (and the untouched source VM as truth). */
function reportOf(s: SourceState, h: HostedVm, ctx: Pick<SourceContext, "name" | "truth">, destination: string): MigrationReport {
  const r = s.req;
  const report: MigrationReport = {
    migrationId: r.migrationId,
    vmId: r.vmId,
    source: ctx.name,
    destination,
    policy: r.policy,
    estimator: r.estimator,
    switchover: r.switchover ?? "two-phase",
    outcome: s.outcome ?? "aborted",
    generation: r.generation,
    vcpus: r.vcpuCount,
    guestTscKhz: r.guestTscKhz,
    ...EMPTY_RESTORE_FIGURES,
    tscAtPause: s.pause?.tscAtPause ?? 0n,
    kvmclockAtPauseNs: s.pause?.kvmclockAtPauseNs ?? 0n,
    pauseTrueNs: s.pause?.pauseTrueNs ?? 0n,
    path: s.handover ? "handover" : "unary",
    transferForwardNs: 0n,
    transferBackNs: 0n,
    phases: { ...s.timings },
  };
  if (s.error) report.error = s.error.toJSON() as MigrationReport["error"];
  if (s.restore) fillFromRestore(report, s, h, ctx.truth);
  return report;
}

const EMPTY_RESTORE_FIGURES = {
  trueBlackoutNs: 0n,
  estimatedBlackoutNs: 0n,
  advancedNs: 0n,
  errorBoundNs: 0n,
  capped: false,
  doorbellRung: false,
  disruptionMarker: 0n,
  tscAtResume: 0n,
  tscIdealAtResume: 0n,
  kvmclockAtResumeNs: 0n,
  kvmclockIdealAtResumeNs: 0n,
  tscErrorNs: 0n,
  kvmclockErrorNs: 0n,
  stoppedVcpus: 0,
  resumeTrueNs: 0n,
} as const;

function fillFromRestore(report: MigrationReport, s: SourceState, h: HostedVm, truth: TruthProbe): void {
  const r = s.restore as NonNullable<SourceState["restore"]>;
  report.estimatedBlackoutNs = r.estimatedBlackoutNs;
  report.advancedNs = r.advancedNs;
  report.errorBoundNs = r.errorBoundNs;
  report.capped = r.capped;
  report.doorbellRung = r.doorbellRung;
  report.disruptionMarker = r.disruptionMarker;
  report.phases.decodeNs = r.decodeNs;
  report.phases.restoreNs = r.restoreNs;
  report.resumeTrueNs = r.resumeTrueNs;
  report.tscAtResume = r.tscAtResume;
  report.kvmclockAtResumeNs = r.kvmclockAtResumeNs;
  report.stoppedVcpus = r.stoppedVcpus;
  const t = s.transfer;
  if (t && r.transferReceivedTrueNs > 0n && t.answerTrueNs > 0n) {
    report.transferForwardNs = r.transferReceivedTrueNs - t.sendTrueNs;
    report.transferBackNs = t.answerTrueNs - r.transferReceivedTrueNs - t.holdNs;
  }
  if (r.resumeTrueNs > 0n) {
    report.trueBlackoutNs = r.resumeTrueNs - report.pauseTrueNs;
    // The source VM was never touched after the pause: its TSC and kvmclock at the destination's
    // resume instant are exactly what "had it never paused" means (shared truth only).
    const vm = h.vm;
    report.tscIdealAtResume = truth.guestTscAt(vm, 0, r.resumeTrueNs);
    report.kvmclockIdealAtResumeNs = pvclockReadCycles(vm.pvclock.guestRead(0), report.tscIdealAtResume);
    report.tscErrorNs = ((r.tscAtResume - report.tscIdealAtResume) * 1_000_000n) / vm.guestTscKhz;
    report.kvmclockErrorNs = r.kvmclockAtResumeNs - report.kvmclockIdealAtResumeNs;
  }
}

/**
 * Probes a one-sided migration sends on its Handover link as anchors (plus the `opened` answer). Each
 * is one more chance of a quick leg each way, which is what bounds the error (blackout.ts); they run
 * before the pause, outside the blackout.
 */
export const ONE_SIDED_ANCHOR_PROBES = 8;

