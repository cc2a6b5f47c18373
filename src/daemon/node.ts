// One tscmig daemon's core, transport-agnostic: it composes the VMs it hosts (hosted-vms.ts), the
// source and destination roles, the durable journal and the recovery loop, and rebuilds all of them
// from the journal at start. gRPC and HTTP (live) or the simulated network (chaos) sit outside and
// call in through `peer` and the methods below; this class never touches a socket, a port or `process`.

import { TscmigError } from "../shared/errors.js";
import { type Faults, NO_FAULTS } from "../shared/faults.js";
import type { HistorySink } from "../shared/history.js";
import type { Logger } from "../shared/logger.js";
import { LIMITS } from "../shared/limits.js";
import type { EmulatedHost } from "../shared/hypervisor/host.js";
import type { HypervisorBackend } from "../shared/hypervisor/backend.js";
import { EmulatedBackend } from "../shared/hypervisor/emulated-backend.js";
import { emulatedTruth, type TruthProbe } from "../shared/hypervisor/truth.js";
import type { HostedVm } from "../shared/migration/hosted-vm.js";
import type { JournalStore } from "../shared/migration/journal.js";
import type { PeerDialer, PeerHandler } from "../shared/migration/messages.js";
import { checkId } from "../shared/migration/snapshot.js";
import type { Clock, Scheduler } from "../shared/time/clock.js";
import type { Random } from "../shared/time/random.js";
import type { SkewState, SkewUpdate } from "../shared/time/skew.js";
import { DestinationRole } from "../destination/destination.js";
import type { RestoreFn } from "../destination/migrate-in.js";
import type { MigrationReport } from "../source/migrate-out.js";
import { type MigrateRequest, Source, type SourceConfig } from "../source/source.js";
import { DurableJournal } from "./durable-journal.js";
import { type CreateVmRequest, DEFAULT_GUEST, HostedVms, type HostedVmsConfig, type VmReading } from "./hosted-vms.js";
import { readRecoveryPlan } from "./recovery-plan.js";
import { type InDoubtMigration, inDoubtMigrations, RecoveryLoop } from "./recovery-loop.js";

/** A daemon core's configuration: its VMs', its source role's, and the recovery loop's period. */
export type NodeConfig = HostedVmsConfig & SourceConfig & { recoveryIntervalNs: bigint };

export function defaultNodeConfig(name: string, grpcAdvertise: string): NodeConfig {
  return {
    name,
    grpcAdvertise,
    guest: { ...DEFAULT_GUEST },
    sampleIntervalNs: 0n,
    sampleVcpusMax: 1024,
    doorbellDelayNs: 0n,
    probeExchanges: 4,
    retriesMax: LIMITS.retriesMax,
    recoveryIntervalNs: 500_000_000n,
    persistBatchNs: 200_000_000n,
  };
}

export interface NodeDeps {
  clock: Clock;
  scheduler: Scheduler;
  random: Random;
  log: Logger;
  host: EmulatedHost;
  journal: JournalStore;
  dialer: PeerDialer;
  faults?: Faults;
  history?: HistorySink;
  /** The hypervisor the node's VMs run on (default: emulated VMs on `host`). */
  backend?: HypervisorBackend;
  /** Reads of true time for the sampler and reports (default: `host`'s, which is emulated). */
  truth?: TruthProbe;
  /** Test seam (chaos sensitivity tests): replaces the destination's restore. Never set in production. */
  restore?: RestoreFn;
  /** Test seam (chaos sensitivity tests): a fencing Resolve answers without fencing. Never set in production. */
  brokenFence?: boolean;
}

export class TscmigNode {
  readonly cfg: NodeConfig;
  readonly host: EmulatedHost;
  /** The journal as every write reaches it: storage failures typed, health, retry (durable-journal.ts). */
  readonly durable: DurableJournal;
  readonly journal: JournalStore;
  readonly log: Logger;
  readonly backend: HypervisorBackend;
  readonly truth: TruthProbe;
  readonly vms: HostedVms;
  readonly source: Source;
  readonly destination: DestinationRole;
  /** The peer protocol as this daemon serves it: the destination's calls and the source's Resolve. */
  readonly peer: PeerHandler;
  private readonly recovery: RecoveryLoop;

  constructor(cfg: NodeConfig, deps: NodeDeps) {
    this.cfg = cfg;
    this.host = deps.host;
    this.log = deps.log;
    this.backend = deps.backend ?? new EmulatedBackend(deps.host);
    this.truth = deps.truth ?? emulatedTruth(deps.host);
    const faults: Faults = deps.faults ?? NO_FAULTS;
    const history = deps.history ? { history: deps.history } : {};
    this.durable = new DurableJournal(deps.journal, { scheduler: deps.scheduler, log: deps.log, trueNs: () => deps.host.trueNs() });
    this.journal = this.durable;
    const common = { host: deps.host, journal: this.durable, faults, log: deps.log };
    this.vms = new HostedVms(cfg, { ...common, scheduler: deps.scheduler, random: deps.random, backend: this.backend, truth: this.truth, ...history });
    this.source = new Source(cfg, { ...common, scheduler: deps.scheduler, random: deps.random, truth: this.truth, dialer: deps.dialer, vms: this.vms, ...history });
    this.destination = new DestinationRole({
      ...common,
      name: cfg.name,
      backend: this.backend,
      truth: this.truth,
      dialer: deps.dialer,
      vms: this.vms,
      outboundInFlight: () => this.source.inFlight,
      ...(deps.restore ? { restore: deps.restore } : {}),
      ...(deps.brokenFence ? { brokenFence: true } : {}),
    });
    this.peer = peerHandler(this.destination, this.source);
    this.recovery = new RecoveryLoop({
      clock: deps.clock,
      scheduler: deps.scheduler,
      log: deps.log,
      intervalNs: cfg.recoveryIntervalNs,
      beforePass: () => this.destination.expireLeases(),
      tasks: () => [...this.source.recoveryTasks(), ...this.destination.recoveryTasks()],
    });
  }

  /** Rebuilds every VM and migration from the journal, then starts the recovery loop. */
  start(): void {
    // Everything read and checked first: a damaged record throws here, before anything runs.
    const plan = readRecoveryPlan(this.journal, this.host.info);
    this.vms.recover(plan.vms, plan.migrations);
    this.destination.recover(
      plan.vms.flatMap((v) => (v.kind === "staged" ? [v.payload] : [])),
      plan.migrations,
    );
    this.source.recover(plan.migrations);
    this.recovery.start();
  }

  stop(): void {
    this.recovery.stop();
    this.vms.stop();
    this.durable.stop();
  }

  /** One recovery pass now (tests; the loop runs them on its own). */
  recoverOnce(): Promise<void> {
    return this.recovery.runOnce();
  }

  // ---- the control API ------------------------------------------------------------------------------

  createVm(req: CreateVmRequest): HostedVm {
    const id = req.id ?? this.vms.newId();
    checkId(id, "id");
    const incoming = this.destination.pendingFor(id);
    if (incoming)
      throw new TscmigError("already_exists", `VM ${id} is being migrated in from ${incoming.req.sourceName} (migration ${incoming.req.migrationId})`, { field: "id", reason: "vm_migrating_in" });
    return this.vms.create(id, req);
  }

  /** Deletes a VM this daemon owns (refused while a migration holds it, in or out). */
  deleteVm(id: string): { id: string; generation: bigint } {
    checkId(id, "id");
    if (this.destination.pendingFor(id)) throw new TscmigError("failed_precondition", `VM ${id} is migrating in to ${this.cfg.name}`, { field: "id", reason: "vm_migrating" });
    return this.vms.delete(id);
  }

  getVm(id: string): HostedVm {
    return this.vms.get(id);
  }

  listVms(): HostedVm[] {
    return this.vms.list();
  }

  vcpuTotal(): number {
    return this.vms.vcpuTotal();
  }

  readVm(id: string, vcpuLimit: number = LIMITS.vcpuCountMax): VmReading {
    return this.vms.read(id, vcpuLimit);
  }

  /** Migrates a VM out; resolves with the report (refusals and aborts are outcomes, not throws). */
  migrate(vmId: string, req: MigrateRequest): Promise<MigrationReport> {
    return this.source.migrate(vmId, req);
  }

  get reports(): readonly MigrationReport[] {
    return this.source.reports;
  }

  setSkew(update: SkewUpdate): SkewState {
    const s = this.host.skew.apply(update, this.host.trueNs());
    this.log.info({ event: "skew_changed", maxerrorNs: s.maxerrorNs }, "host realtime skew changed");
    return s;
  }

  /** Migrations this daemon received as destination, newest last. */
  inboundSummary(limit = 1000): ReturnType<DestinationRole["summary"]> {
    return this.destination.summary(limit);
  }

  /** Migrations not settled yet, from the journal (so they show after a restart), newest last. */
  inDoubt(limit = 1000): InDoubtMigration[] {
    return inDoubtMigrations({ journal: this.journal, selfName: this.cfg.name, loop: this.recovery, inFlight: (id) => this.source.isInFlight(id) }, limit);
  }
}

/** The peer protocol served by a daemon: every inbound call is the destination's but Resolve, the source's (unless it fences). */
function peerHandler(destination: DestinationRole, source: Source): PeerHandler {
  return {
    prepare: (req) => destination.prepare(req),
    probe: (req) => destination.probe(req),
    transfer: (req, arrivedAt, decodeNs) => destination.transfer(req, arrivedAt, decodeNs),
    commit: (req, arrivedAt) => destination.commit(req, arrivedAt),
    abort: (req) => destination.abort(req),
    // A fencing Resolve is an on-receipt source asking this daemon as its destination.
    resolve: (req) => (req.fence ? destination.resolveForSource({ ...req, fence: req.fence }) : source.resolve(req)),
    handoverOpen: (ref, id) => destination.handoverOpen(ref, id),
    handoverAnswering: (ref, id, at) => destination.handoverAnswering(ref, id, at),
  };
}
