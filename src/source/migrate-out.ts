// The source role: drives the source state machine (shared/migration/source-machine.ts) for one
// migration, carrying out its effects — journal writes, gRPC calls through a PeerClient, pausing,
// capturing and resuming the VM. The machine decides; this file only performs.

import { isTscmigError, TscmigError } from "../shared/errors.js";
import { crashPoint, type Faults } from "../shared/faults.js";
import type { HistorySink } from "../shared/history.js";
import type { Logger } from "../shared/logger.js";
import { LIMITS } from "../shared/limits.js";
import type { EmulatedHost } from "../shared/hypervisor/host.js";
import { type EstimatorName, type ProbeExchange, probeOffset } from "../shared/migration/blackout.js";
import type { HostedVm } from "../shared/migration/hosted-vm.js";
import type { JournalStore, MigrationDecision } from "../shared/migration/journal.js";
import type { HandoverLink, PeerClient } from "../shared/migration/messages.js";
import { type MigrationReport, type RestoreReport, sourceNoteToJournal } from "../shared/migration/report.js";
import type { PolicyName } from "../shared/migration/restore.js";
import { captureSnapshot, type Snapshot } from "../shared/migration/snapshot.js";
import { initialSourceState, isDurableRefusal, type SourceEffect, type SourceEvent, type SourceState, stepSource } from "../shared/migration/source-machine.js";
import { pvclockReadCycles } from "../shared/kvm/pvclock.js";
import { sleep, type Scheduler } from "../shared/time/clock.js";

export interface MigrateOptions {
  migrationId: string;
  destination: string;
  policy: PolicyName;
  estimator: EstimatorName;
  doorbell: boolean;
  advanceCapNs: bigint;
  /** This migration's secret (hex): every message after Prepare carries it (SourceRef). */
  sourceKey: string;
}

export type { MigrationReport, PhaseTimings } from "../shared/migration/report.js";

export interface SourceContext {
  name: string;
  grpcAdvertise: string;
  host: EmulatedHost;
  scheduler: Scheduler;
  journal: JournalStore;
  faults: Faults;
  history: HistorySink;
  log: Logger;
  probeExchanges: number;
  retriesMax: number;
  /** Ownership hooks owned by the node. */
  pauseVm(h: HostedVm): void;
  resumeVm(h: HostedVm): void;
  handOff(h: HostedVm, migrationId: string): void;
  /** The destination durably refused the Commit: the handed-off VM runs here again. */
  reclaim(h: HostedVm, migrationId: string): void;
}

function errorOf(e: unknown): TscmigError {
  if (isTscmigError(e)) return e;
  if (e instanceof Error && e.name === "CrashSignal") throw e;
  return new TscmigError("internal", e instanceof Error ? e.message : String(e));
}

/** Runs one migration of `h` to `peer`; resolves with the report whatever the outcome. */
export async function migrateOut(ctx: SourceContext, h: HostedVm, peer: PeerClient, opts: MigrateOptions): Promise<MigrationReport> {
  const log = ctx.log.child({ migrationId: opts.migrationId, vmId: h.id });
  const generation = h.generation + 1n;
  const vm = h.vm;
  const report: MigrationReport = {
    migrationId: opts.migrationId,
    vmId: h.id,
    source: ctx.name,
    destination: opts.destination,
    policy: opts.policy,
    estimator: opts.estimator,
    outcome: "aborted",
    generation,
    vcpus: vm.vcpuCount,
    guestTscKhz: vm.guestTscKhz,
    trueBlackoutNs: 0n,
    estimatedBlackoutNs: 0n,
    advancedNs: 0n,
    errorBoundNs: 0n,
    capped: false,
    doorbellRung: false,
    disruptionMarker: 0n,
    tscAtPause: 0n,
    tscAtResume: 0n,
    tscIdealAtResume: 0n,
    kvmclockAtPauseNs: 0n,
    kvmclockAtResumeNs: 0n,
    kvmclockIdealAtResumeNs: 0n,
    tscErrorNs: 0n,
    kvmclockErrorNs: 0n,
    stoppedVcpus: 0,
    pauseTrueNs: 0n,
    resumeTrueNs: 0n,
    path: "unary",
    transferForwardNs: 0n,
    transferBackNs: 0n,
    phases: { captureNs: 0n, encodeNs: 0n, transferNs: 0n, decodeNs: 0n, restoreNs: 0n, commitNs: 0n },
  };
  let state: SourceState = initialSourceState();
  const exchanges: ProbeExchange[] = [];
  let lastProbeRawNs = 0n;
  let snapshot: Snapshot | null = null;
  let captureError: TscmigError | null = null;
  let transferRttNs = 0n;
  /** Raw clock as each answer on the Handover link arrived before the pause, and the Transfer's answer (one-sided's legs). */
  const anchorsRawNs: bigint[] = [];
  /** Raw clock as the request of each of those answers left (same order): one-sided's lower limits. */
  const requestsRawNs: bigint[] = [];
  let answerRawNs = 0n;
  /** True instants of the Transfer's send and answer, and the destination's hold (diagnostics). */
  let transferSendTrueNs = 0n;
  let transferAnswerTrueNs = 0n;
  let destinationHoldNs = 0n;
  let restore: RestoreReport | null = null;
  let finished = false;
  /** Probes, Transfer and Commit ride this when the peer offers one (opened after Prepare, before the pause). */
  let link: HandoverLink | null = null;
  const via = (): Pick<HandoverLink, "probe" | "transfer" | "commit"> => (link?.live ? link : peer);
  /** Set by the handOff effect, carried out once the Commit is on its way (see "handOff"). */
  let handOffPending = false;
  const handOffNow = () => {
    if (!handOffPending) return;
    handOffPending = false;
    ctx.handOff(h, opts.migrationId);
  };

  const ref = { sourceName: ctx.name, sourceKey: opts.sourceKey };
  const journal = (decision: MigrationDecision, phase: string) =>
    ctx.journal.putMigration({
      migrationId: opts.migrationId,
      source: "",
      sourceKey: opts.sourceKey,
      vmId: h.id,
      role: "source",
      phase,
      decision,
      generation,
      peer: opts.destination,
      updatedNs: ctx.host.trueNs(),
      report: sourceNoteToJournal({ transferRttNs }),
    });

  // One event in, effects out, in order; async effects feed the next event.
  // One-sided sends a few probes too when the peer offers a Handover link: each answer is an anchor
  // that caps the Transfer's forward leg (blackout.ts), for one link round trip before the pause.
  const probes = opts.estimator === "probe" ? Math.max(1, ctx.probeExchanges) : opts.estimator === "one-sided" && peer.handover ? ONE_SIDED_ANCHOR_PROBES : 0;
  const queue: SourceEvent[] = [{ kind: "start", probes, retriesMax: ctx.retriesMax }];
  try {
    while (queue.length > 0 && !finished) {
      const ev = queue.shift() as SourceEvent;
      const step = stepSource(state, ev);
      state = step.state;
      for (const eff of step.effects) {
        const next = await perform(eff);
        if (next) queue.push(next);
        if (finished || next?.kind === "journalFailed") break; // the rest of the step stood on that write
      }
    }
  } finally {
    (link as HandoverLink | null)?.close();
  }
  return report;

  async function perform(eff: SourceEffect): Promise<SourceEvent | null> {
    switch (eff.kind) {
      case "journal":
        try {
          journal(eff.decision, eff.phase);
        } catch (e) {
          const error = errorOf(e);
          // What comes next stands on a pending record or on the decision: stop. An abort's record
          // (retried by the node's journal, and a restart aborts what stayed pending) or the phase
          // after a delivered Commit (re-delivered by recovery) need not hold the migration up.
          if (eff.decision === "pending" || eff.phase === "committing") return { kind: "journalFailed", error, mayHaveLanded: error.reason === "journal_io_error" };
          log.warn({ event: "journal_write_failed", decision: eff.decision, phase: eff.phase, err: error.toJSON() }, "migration record not journaled; going on");
          return null;
        }
        if (eff.decision === "committed" && eff.phase === "committing") crashPoint(ctx.faults, "crash.source.afterCommitJournal");
        return null;
      case "sendPrepare":
        try {
          await peer.prepare({
            migrationId: opts.migrationId,
            vmId: h.id,
            generation,
            vcpuCount: vm.vcpuCount,
            guestTscKhz: vm.guestTscKhz,
            sourceFracBits: vm.host.info.vendor.fracBits,
            policy: opts.policy,
            estimator: opts.estimator,
            doorbell: opts.doorbell,
            advanceCapNs: opts.advanceCapNs,
            sourceName: ctx.name,
            sourceGrpc: ctx.grpcAdvertise,
            sourceKey: opts.sourceKey,
          });
          crashPoint(ctx.faults, "crash.source.afterPrepare");
          if (peer.handover) {
            const openRaw = ctx.host.rawNs();
            link = await peer.handover({ migrationId: opts.migrationId, ...ref }).catch((e: unknown) => {
              // E.g. a peer without Handover: the unary calls carry the migration, only slower.
              log.debug({ event: "handover_unavailable", err: errorOf(e).message }, "no handover link; using unary calls");
              return null;
            });
            if (link) {
              anchorsRawNs.push(ctx.host.rawNs());
              requestsRawNs.push(openRaw);
            }
          }
          return { kind: "prepareOk" };
        } catch (e) {
          return { kind: "prepareFailed", error: errorOf(e) };
        }
      case "sendProbe":
        try {
          const t1 = ctx.host.realtimeNs();
          const carrier = via();
          const sentRaw = ctx.host.rawNs();
          const r = await carrier.probe({ migrationId: opts.migrationId, t1RealtimeNs: t1, ...ref });
          const t4 = ctx.host.realtimeNs();
          lastProbeRawNs = ctx.host.rawNs();
          if (carrier === link && anchorsRawNs.length < LIMITS.anchorsMax) {
            anchorsRawNs.push(lastProbeRawNs);
            requestsRawNs.push(sentRaw);
          }
          // One-sided's anchor probes only time the link; their realtime stamps are not used.
          if (opts.estimator === "probe") exchanges.push({ t1, t2: r.t2RealtimeNs, t3: r.t3RealtimeNs, t4 });
          return { kind: "probeOk" };
        } catch (e) {
          return { kind: "probeFailed", error: errorOf(e) };
        }
      case "pause":
        try {
          ctx.pauseVm(h); // journals the paused role first; a failed write leaves the VM running
        } catch (e) {
          return { kind: "journalFailed", error: errorOf(e), mayHaveLanded: false };
        }
        report.pauseTrueNs = ctx.host.trueNs();
        report.tscAtPause = vm.readGuestTsc(0);
        report.kvmclockAtPauseNs = pvclockReadCycles(vm.pvclock.guestRead(0), report.tscAtPause);
        crashPoint(ctx.faults, "crash.source.afterPause");
        return null;
      case "capture": {
        const t0 = ctx.host.rawNs();
        // The probe's drift window runs to the snapshot's clock read, not to the (earlier) pause.
        try {
          const probe = exchanges.length > 0 ? { ...probeOffset(exchanges), probeToPauseNs: t0 - lastProbeRawNs } : null;
          snapshot = captureSnapshot(vm, h.guest, { migrationId: opts.migrationId, vmId: h.id, generation, hostMaxerrorNs: ctx.host.maxerrorNs(), probe });
        } catch (e) {
          // E.g. every probe exchange unusable (a clock stepped mid-probe): the VM is paused, so the
          // failure must take the abort path (resume) rather than escape and leave it paused.
          captureError = errorOf(e);
        }
        // The snapshot's TSC and kvmclock are those of its KVM_GET_CLOCK instant, later than the
        // pause (the paused VM is journaled in between): one-sided durations must start there, or
        // the destination advances the guest by the pause → capture gap too much.
        report.phases.captureNs = ctx.host.rawNs() - t0;
        return null;
      }
      case "sendTransfer": {
        if (captureError) return { kind: "transferFailed", error: captureError };
        const snap = snapshot as Snapshot;
        const sendRaw = ctx.host.rawNs();
        // Source clock only (see blackout.ts). Measured from the snapshot's clock read, not from the
        // pause: the guest TSC keeps running while paused (as on KVM) and the snapshot holds its
        // value at that read, so the destination must add the time since the read. From the pause
        // it would also add pause → read (capture, a GC pause, a busy host), an error the bound
        // does not cover (10.9 ms against an 8.2 ms bound, 1024 vCPUs on a loaded 2-core host).
        const readRaw = ctx.host.rawNsOfTsc(snap.hostTsc);
        snap.sourcePauseToSendNs = sendRaw > readRaw ? sendRaw - readRaw : 0n;
        try {
          const carrier = via();
          report.path = carrier === link ? "handover" : "unary";
          transferSendTrueNs = ctx.host.trueNs();
          const r = await carrier.transfer({
            snapshot: snap,
            sourceAnchorsToSendNs: anchorsRawNs.map((a) => sendRaw - a),
            sourceRequestsToSendNs: requestsRawNs.map((q) => sendRaw - q),
            ...ref,
          });
          answerRawNs = ctx.host.rawNs();
          transferRttNs = answerRawNs - sendRaw;
          transferAnswerTrueNs = ctx.host.trueNs();
          destinationHoldNs = r.destinationHoldNs;
          report.phases.transferNs = transferRttNs;
          report.phases.encodeNs = r.encodeNs ?? 0n;
          crashPoint(ctx.faults, "crash.source.afterTransfer");
          return { kind: "transferOk" };
        } catch (e) {
          return { kind: "transferFailed", error: errorOf(e) };
        }
      }
      case "handOff":
        // The decision is journaled (the effect before this one): the VM is paused and never runs
        // here again, and a restart re-does the hand-off from the journal. So the hand-off (a
        // journal write, a log line) waits until the Commit is on its way instead of delaying it.
        handOffPending = true;
        return null;
      case "sendCommit":
      case "retryCommit": {
        if (eff.kind === "retryCommit") await sleep(ctx.scheduler, eff.delayNs);
        const t0 = ctx.host.rawNs();
        const carrier = via();
        if (carrier !== link) report.path = "unary";
        const call = carrier.commit({ migrationId: opts.migrationId, vmId: h.id, generation, transferRttNs, answerToCommitNs: t0 - answerRawNs, ...ref });
        // The call's frames leave when this turn of the event loop ends: hand off on a later one.
        let handOffError: { e: unknown } | null = null;
        const handedOff = handOffPending
          ? sleep(ctx.scheduler, 0n)
              .then(handOffNow)
              .catch((e: unknown) => {
                handOffError = { e };
              })
          : null;
        let next: SourceEvent;
        try {
          const r = await call;
          report.phases.commitNs = ctx.host.rawNs() - t0;
          restore = r.report;
          crashPoint(ctx.faults, "crash.source.afterCommit");
          next = { kind: "commitOk" };
        } catch (e) {
          const err = errorOf(e);
          // A destination that refuses Commit definitively (aborted/unknown) cannot be made to run
          // the VM; the decision stands and the recovery loop reports it as in doubt.
          log.warn({ event: "commit_failed", attempt: eff.attempt, code: err.code, err: err.message }, "commit failed");
          next = isDurableRefusal(err) ? { kind: "commitRefused", error: err } : { kind: "commitFailed", error: err };
        }
        if (handedOff) await handedOff;
        if (handOffError !== null) throw (handOffError as { e: unknown }).e;
        return next;
      }
      case "resume":
        ctx.resumeVm(h);
        return null;
      case "reclaim":
        ctx.reclaim(h, opts.migrationId);
        return null;
      case "sendAbort":
        peer.abort({ migrationId: opts.migrationId, vmId: h.id, generation, reason: eff.reason.slice(0, 512), ...ref }).catch(() => {
          /* best effort: the destination also asks Resolve */
        });
        return null;
      case "finish":
        finished = true;
        report.outcome = eff.outcome;
        if (eff.error) report.error = eff.error.toJSON() as MigrationReport["error"];
        if (restore) fillFromRestore(restore);
        // A migration that did not commit (refused, aborted, in doubt) needs an operator's eye.
        log[report.outcome === "committed" ? "info" : "warn"](
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
        return null;
      case "reject":
        log.error({ event: "illegal_event", evt: eff.event, phase: eff.phase }, "source machine rejected an event");
        return null;
    }
  }

  function fillFromRestore(r: RestoreReport): void {
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
    if (r.transferReceivedTrueNs > 0n && transferAnswerTrueNs > 0n) {
      report.transferForwardNs = r.transferReceivedTrueNs - transferSendTrueNs;
      report.transferBackNs = transferAnswerTrueNs - r.transferReceivedTrueNs - destinationHoldNs;
    }
    if (r.resumeTrueNs > 0n) {
      report.trueBlackoutNs = r.resumeTrueNs - report.pauseTrueNs;
      // The source VM was never touched after the pause: its TSC and kvmclock at the destination's
      // resume instant are exactly what "had it never paused" means (shared truth only).
      report.tscIdealAtResume = vm.guestTscAt(0, r.resumeTrueNs);
      report.kvmclockIdealAtResumeNs = pvclockReadCycles(snapshotRecord0(), report.tscIdealAtResume);
      const khz = vm.guestTscKhz;
      report.tscErrorNs = ((r.tscAtResume - report.tscIdealAtResume) * 1_000_000n) / khz;
      report.kvmclockErrorNs = r.kvmclockAtResumeNs - report.kvmclockIdealAtResumeNs;
    }
  }

  function snapshotRecord0() {
    return vm.pvclock.guestRead(0);
  }
}

/**
 * Probes a one-sided migration sends on its Handover link as anchors (plus the `opened` answer). Each
 * is one more chance of a quick leg each way, which is what bounds the error (blackout.ts); they run
 * before the pause, outside the blackout.
 */
export const ONE_SIDED_ANCHOR_PROBES = 8;

