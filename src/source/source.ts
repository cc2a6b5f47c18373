// The source role of one daemon: admits a migration of a hosted VM and runs it (migrate-out.ts),
// answers a destination's Resolve from the journal, and recovers its own migrations after a restart
// (undecided ones abort and their VM runs again; committed ones are handed off and their Commit
// re-delivered by the daemon's recovery loop).

import { invalid, isTscmigError, TscmigError } from "../shared/errors.js";
import { crashPoint, type Faults } from "../shared/faults.js";
import { type HistorySink, migrationEventOf } from "../shared/history.js";
import type { Logger } from "../shared/logger.js";
import { LIMITS } from "../shared/limits.js";
import type { EmulatedHost } from "../shared/hypervisor/host.js";
import type { TruthProbe } from "../shared/hypervisor/truth.js";
import { checkMigrationTarget } from "../shared/migration/admission.js";
import { type EstimatorName, parseEstimator } from "../shared/migration/blackout.js";
import type { HostedVm } from "../shared/migration/hosted-vm.js";
import { type DurableStore, journalAbortOnRecovery, journaledRtt, type MigrationRecord } from "../shared/migration/journal.js";
import { type PeerDialer, parseSwitchover, type ResolveReq, type ResolveRes, type SwitchoverMode } from "../shared/migration/messages.js";
import { type PolicyName, parsePolicy } from "../shared/migration/restore.js";
import { checkHostPort, checkId } from "../shared/migration/snapshot.js";
import { isDurableRefusal } from "../shared/migration/source-machine.js";
import type { RecoveryTask, VmRegistry } from "../shared/migration/vm-registry.js";
import type { Scheduler } from "../shared/time/clock.js";
import type { Random } from "../shared/time/random.js";
import { migrateOut, type MigrationReport, type SourceContext } from "./migrate-out.js";

export interface MigrateRequest {
  destination: string;
  policy?: PolicyName;
  estimator?: EstimatorName;
  doorbell?: boolean;
  advanceCapNs?: bigint;
  migrationId?: string;
  /** Default `two-phase`; `on-receipt` trades the source's own roll-back for a shorter blackout. */
  switchover?: SwitchoverMode;
}

export interface SourceConfig {
  name: string;
  /** Where peers reach this daemon's gRPC endpoint (for Resolve). */
  grpcAdvertise: string;
  probeExchanges: number;
  retriesMax: number;
}

export interface SourceDeps {
  host: EmulatedHost;
  scheduler: Scheduler;
  random: Random;
  journal: DurableStore;
  faults: Faults;
  history?: HistorySink;
  /** True time, for the report's diagnostics only. */
  truth: TruthProbe;
  log: Logger;
  dialer: PeerDialer;
  vms: VmRegistry;
}

/** How many migration reports a source keeps in memory (newest last). */
const REPORTS_KEPT = 1000;

export class Source {
  private readonly outbound = new Map<string, Promise<MigrationReport>>();
  /**
   * Migrations decided committed whose Commit is not known delivered: what recovery re-delivers.
   * Filled from the journal at start and after each migration (so recovery does not read every
   * migration ever journaled twice a second).
   */
  private readonly undelivered = new Set<string>();
  /** On-receipt migrations handed off whose outcome this source has not learned: what recovery asks the destination. */
  private readonly unresolved = new Set<string>();
  readonly reports: MigrationReport[] = [];

  constructor(
    private readonly cfg: SourceConfig,
    private readonly deps: SourceDeps,
  ) {}

  /** Migrations running now. */
  get inFlight(): number {
    return this.outbound.size;
  }

  isInFlight(migrationId: string): boolean {
    return this.outbound.has(migrationId);
  }

  /** Migrates a VM out; resolves with the report (refusals and aborts are outcomes, not throws). */
  async migrate(vmId: string, req: MigrateRequest): Promise<MigrationReport> {
    const h = this.admit(vmId, req);
    const policy = parsePolicy(req.policy ?? "advance");
    const estimator = parseEstimator(req.estimator ?? "one-sided");
    const advanceCapNs = req.advanceCapNs ?? LIMITS.advanceCapNsDefault;
    // 0 on the wire means "none given" (the destination then caps at the default 1 s), so a cap of 0
    // cannot be carried: refused rather than silently becoming 1 s. Not advancing at all is `freeze`.
    if (advanceCapNs < 1n || advanceCapNs > LIMITS.blackoutNsMax)
      throw invalid("advanceCapNs", `must be within 1..${LIMITS.blackoutNsMax} ns (to advance nothing, use the freeze policy)`);
    const switchover = parseSwitchover(req.switchover ?? "two-phase");
    const migrationId = req.migrationId ?? `mig-${this.cfg.name}-${this.hex(2)}`;
    checkId(migrationId, "migrationId");
    if (this.deps.journal.getMigration(migrationId))
      throw new TscmigError("already_exists", `migration id ${migrationId} already used by ${this.cfg.name}`, { field: "migrationId", reason: "migration_id_reused" });
    const opts = { migrationId, destination: req.destination, policy, estimator, doorbell: req.doorbell ?? false, advanceCapNs, sourceKey: this.hex(4), switchover };
    h.lock = opts.migrationId;
    const run = migrateOut(this.context(req.destination), h, this.deps.dialer.dial(req.destination), opts).finally(() => this.settled(h, opts.migrationId));
    this.outbound.set(opts.migrationId, run);
    const report = await run;
    this.reports.push(report);
    if (this.reports.length > REPORTS_KEPT) this.reports.shift();
    this.record(report);
    return report;
  }

  /** The checks before anything is journaled or sent; the VM to migrate. */
  private admit(vmId: string, req: MigrateRequest): HostedVm {
    const h = this.deps.vms.find(vmId);
    if (!h) throw new TscmigError("not_found", `no VM ${vmId} on ${this.cfg.name}`, { field: "id", reason: "unknown_vm" });
    if (h.role !== "owner") throw new TscmigError("failed_precondition", `VM ${vmId} is ${h.role} here`, { reason: "not_owner" });
    if (h.lock !== null) throw new TscmigError("aborted", `VM ${vmId} is already migrating (${h.lock})`, { reason: "migration_in_progress" });
    if (this.outbound.size >= LIMITS.migrationsInFlightMax) throw new TscmigError("resource_exhausted", "too many migrations in flight", { reason: "inflight_limit" });
    if (typeof req.destination !== "string" || req.destination.length === 0 || req.destination.length > 256) throw invalid("destination", "must be HOST:PORT");
    // An address the transport cannot dial is bad input, refused before a migration id is spent on it.
    const { dialer } = this.deps;
    if (dialer.checkAddress) dialer.checkAddress(req.destination, "destination");
    else checkHostPort(req.destination, "destination");
    checkMigrationTarget({ vmId, generation: h.generation, destination: req.destination, selfName: this.cfg.name, selfGrpc: this.cfg.grpcAdvertise });
    this.deps.journal.requireWritable("migrate a VM out");
    return h;
  }

  /** `n` random 32-bit words from the daemon's random source, as hex. */
  private hex(n: number): string {
    let out = "";
    for (let i = 0; i < n; i++) out += this.deps.random.u32().toString(16).padStart(8, "0");
    return out;
  }

  private context(destination: string): SourceContext {
    const { vms } = this.deps;
    return {
      name: this.cfg.name,
      grpcAdvertise: this.cfg.grpcAdvertise,
      host: this.deps.host,
      scheduler: this.deps.scheduler,
      journal: this.deps.journal,
      faults: this.deps.faults,
      history: this.deps.history ?? { sample: () => {}, event: () => {} },
      truth: this.deps.truth,
      log: this.deps.log,
      probeExchanges: this.cfg.probeExchanges,
      retriesMax: this.cfg.retriesMax,
      pauseVm: (h) => vms.pauseForMigration(h),
      resumeVm: (h) => vms.resume(h),
      handOff: (h, id) => vms.handOff(h, id, destination),
      reclaim: (_h, id) => vms.reclaim(id),
      release: (id) => vms.release(id),
    };
  }

  /** A migration's run ended (whatever the outcome): the VM's lock, the held state, the Commit still owed. */
  private settled(h: HostedVm, migrationId: string): void {
    this.outbound.delete(migrationId);
    if (h.lock === migrationId && h.role === "owner") h.lock = null;
    const m = this.deps.journal.getMigration(migrationId);
    if (m?.decision === "committed" && m.phase === "committed") this.deps.vms.release(migrationId);
    else if (m?.decision === "committed") this.undelivered.add(migrationId);
    else if (m?.decision === "pending" && m.phase === HANDING_OFF) this.unresolved.add(migrationId);
  }

  private record(r: MigrationReport): void {
    this.deps.history?.event(migrationEventOf(r, this.deps.host.trueNs()));
  }

  /** A destination asks what this source decided; only the one that holds the migration's key is told. */
  resolve(req: ResolveReq): ResolveRes {
    const m = this.deps.journal.getMigration(req.migrationId);
    if (!m || m.role !== "source" || m.vmId !== req.vmId || ((m.sourceKey ?? "") !== "" && m.sourceKey !== req.sourceKey)) return { decision: "unknown", generation: 0n, transferRttNs: 0n };
    return { decision: m.decision, generation: m.generation, transferRttNs: journaledRtt(m.report) };
  }

  // ---- after a restart ----------------------------------------------------------------------------

  /** Decides what the journal left open: an undecided migration aborts (its VM runs here again), a committed one hands off. */
  recover(migrations: readonly MigrationRecord[]): void {
    for (const m of migrations) {
      if (m.role !== "source") continue;
      // Handed off on receipt: the destination may run it; only its answer decides (recoveryTasks).
      if (m.decision === "pending" && m.phase === HANDING_OFF) this.unresolved.add(m.migrationId);
      else if (m.decision === "pending") this.abortUndecided(m);
      else if (m.decision === "committed") {
        if (m.phase !== "committed") this.undelivered.add(m.migrationId);
        const h = this.deps.vms.find(m.vmId);
        if (h && h.lock === m.migrationId) this.deps.vms.handOff(h, m.migrationId, m.peer);
      }
    }
  }

  /** Undecided when we died: abort (Commit was never sent), and the VM is ours again. */
  private abortUndecided(m: MigrationRecord): void {
    journalAbortOnRecovery(this.deps.journal, m, this.deps.host.trueNs());
    const h = this.deps.vms.find(m.vmId);
    if (h && h.lock === m.migrationId) this.deps.vms.resume(h);
    const sourceKey = m.sourceKey ?? "";
    if (sourceKey !== "")
      this.deps.dialer
        .dial(m.peer)
        .abort({ migrationId: m.migrationId, vmId: m.vmId, generation: m.generation, reason: "source restarted before deciding", sourceName: this.cfg.name, sourceKey })
        .catch(() => {});
    this.deps.log.warn({ event: "recovered_abort", migrationId: m.migrationId, vmId: m.vmId }, "aborted an undecided migration after restart");
  }

  /** Commits decided but not known delivered: one re-delivery task each. */
  recoveryTasks(): RecoveryTask[] {
    const tasks: RecoveryTask[] = [];
    for (const id of this.undelivered) {
      if (this.outbound.has(id)) continue;
      const m = this.deps.journal.getMigration(id);
      if (!m || m.role !== "source" || m.decision !== "committed" || m.phase === "committed") {
        this.undelivered.delete(id);
        continue;
      }
      tasks.push({ key: sourceRecoveryKey(id), step: "commit", migrationId: id, vmId: m.vmId, peer: m.peer, run: () => this.redeliverCommit(m) });
    }
    for (const id of this.unresolved) {
      if (this.outbound.has(id)) continue;
      const m = this.deps.journal.getMigration(id);
      if (!m || m.role !== "source" || m.decision !== "pending" || m.phase !== HANDING_OFF) {
        this.unresolved.delete(id);
        continue;
      }
      tasks.push({ key: sourceRecoveryKey(id), step: "resolve", migrationId: id, vmId: m.vmId, peer: m.peer, run: () => this.resolveHandedOff(m) });
    }
    return tasks;
  }

  /**
   * An on-receipt migration whose outcome this source never learned: the destination says. It fences
   * the Transfer durably before it answers anything but committed, so resuming on aborted/unknown
   * cannot run the VM twice; on committed the VM is the destination's.
   */
  private async resolveHandedOff(m: MigrationRecord): Promise<void> {
    const req = { migrationId: m.migrationId, vmId: m.vmId, sourceKey: m.sourceKey ?? "", fence: { sourceName: this.cfg.name, generation: m.generation } };
    const answer = await this.deps.dialer.dial(m.peer).resolve(req);
    crashPoint(this.deps.faults, "crash.source.afterResolve");
    if (answer.decision === "pending") throw new TscmigError("unavailable", `destination ${m.peer} holds migration ${m.migrationId} undecided`, { reason: "resolve_pending" });
    const committed = answer.decision === "committed";
    // The VM first, the record after: the destination's answer is durable (a fence, or the VM runs
    // there), so a write that fails — or lands and then reports failure — is redone on the next pass
    // from the same answer, and the VM is acted on once (its lock is gone after).
    const h = this.deps.vms.find(m.vmId);
    if (h && h.lock === m.migrationId) {
      if (committed) {
        this.deps.vms.handOff(h, m.migrationId, m.peer);
        this.deps.vms.release(m.migrationId);
      } else this.deps.vms.resume(h);
    }
    this.deps.journal.putMigration({ ...m, decision: committed ? "committed" : "aborted", phase: committed ? "committed" : "aborted", updatedNs: this.deps.host.trueNs() });
    this.unresolved.delete(m.migrationId);
    this.deps.log.warn({ event: "handoff_resolved", migrationId: m.migrationId, vmId: m.vmId, decision: answer.decision }, "handed-off migration resolved with its destination");
  }

  private async redeliverCommit(m: MigrationRecord): Promise<void> {
    const ref = { sourceName: this.cfg.name, sourceKey: m.sourceKey ?? "" };
    try {
      await this.deps.dialer.dial(m.peer).commit({ migrationId: m.migrationId, vmId: m.vmId, generation: m.generation, transferRttNs: journaledRtt(m.report), ...ref });
    } catch (e) {
      if (!(isTscmigError(e) && isDurableRefusal(e))) throw e;
      // The destination aborted or fenced it for good: it will never run the VM, so it comes back here.
      this.deps.journal.putMigration({ ...m, decision: "aborted", phase: "reclaimed", updatedNs: this.deps.host.trueNs() });
      this.undelivered.delete(m.migrationId);
      this.deps.vms.reclaim(m.migrationId);
      return;
    }
    this.deps.journal.putMigration({ ...m, phase: "committed", updatedNs: this.deps.host.trueNs() });
    this.undelivered.delete(m.migrationId);
    this.deps.vms.release(m.migrationId);
    this.deps.log.info({ event: "commit_redelivered", migrationId: m.migrationId, vmId: m.vmId }, "commit delivered after recovery");
  }
}

/** The journal phase of an on-receipt migration between "handing off" and learning the outcome. */
export const HANDING_OFF = "handing-off";

/** The recovery loop's key for this daemon's outbound migration `migrationId`. */
export function sourceRecoveryKey(migrationId: string): string {
  return `out\u0000${migrationId}`;
}
