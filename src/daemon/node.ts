// One tscmig daemon's core, transport-agnostic: the VMs it hosts, both migration roles, the journal,
// recovery after a restart, and the guest workload. gRPC and HTTP (live) or the simulated network
// (chaos) sit outside and call in; this class never touches a socket, a port or `process`.

import { invalid, isTscmigError, TscmigError } from "../shared/errors.js";
import { type Faults, NO_FAULTS } from "../shared/faults.js";
import { type HistorySink, migrationEventOf } from "../shared/history.js";
import { sourceNoteFromJournal } from "../shared/migration/report.js";
import type { Logger } from "../shared/logger.js";
import { LIMITS } from "../shared/limits.js";
import type { EmulatedHost } from "../shared/hypervisor/host.js";
import { EmulatedVm } from "../shared/hypervisor/vm.js";
import { Guest, type Clocksource, type GuestOptions, type HandlingMode, type NtpReading } from "../shared/guest/guest.js";
import { pvclockReadCycles, type PvclockRecord } from "../shared/kvm/pvclock.js";
import type { VmclockPage } from "../shared/kvm/vmclock.js";
import { type EstimatorName, parseEstimator } from "../shared/migration/blackout.js";
import type { HostedVm, StagedPayload } from "../shared/migration/hosted-vm.js";
import type { JournalStore, MigrationRecord, VmRole } from "../shared/migration/journal.js";
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
import { type PolicyName, parsePolicy, type RestoreResult } from "../shared/migration/restore.js";
import { checkHostPort, checkId, type Snapshot } from "../shared/migration/snapshot.js";
import { isDurableRefusal } from "../shared/migration/source-machine.js";
import { toJson } from "../shared/serde.js";
import type { Clock, Scheduler, Timer } from "../shared/time/clock.js";
import type { Random } from "../shared/time/random.js";
import type { SkewState, SkewUpdate } from "../shared/time/skew.js";
import { Destination, type Inbound, inboundKey, type RestoreFn } from "../destination/migrate-in.js";
import { migrateOut, type MigrationReport, type SourceContext } from "../source/migrate-out.js";
import { readRecoveryPlan, type RecoveredVm } from "./recovery-plan.js";
import type { PersistedVm } from "../shared/migration/hosted-vm.js";
import { DurableJournal, isStorageError } from "./durable-journal.js";
import { VmPersistence } from "./vm-persistence.js";
import { checkInboundSource, checkMigrationTarget } from "./migration-admission.js";

export interface GuestDefaults {
  clocksource: Clocksource;
  migrationHandling: boolean;
  handlingMode: HandlingMode;
  watchVmclock: boolean;
  pollIntervalNs: bigint;
  resyncDelayNs: bigint;
  driftAllowancePpm: bigint;
  /** The guest NTP client's source; default: this host's realtime and its claimed bound (ptp_kvm). */
  ntpSource?: (host: EmulatedHost) => NtpReading;
}

export interface NodeConfig {
  name: string;
  /** Where peers reach this daemon's gRPC endpoint (for Resolve). */
  grpcAdvertise: string;
  guest: GuestDefaults;
  /** Workload sampling period (0: no sampling). */
  sampleIntervalNs: bigint;
  /**
   * Most workload samples per second over all VMs (absent or 0: no cap). With many VMs each is
   * sampled less often than `sampleIntervalNs`, so sampling takes a bounded share of the daemon's
   * core and the bounded history ring still spans seconds.
   */
  samplesPerSecondMax?: number;
  sampleVcpusMax: number;
  doorbellDelayNs: bigint;
  probeExchanges: number;
  retriesMax: number;
  recoveryIntervalNs: bigint;
  /** How long a VM's NTP-sync change waits to share a journal transaction with others (vm-persistence.ts). */
  persistBatchNs: bigint;
}

export const DEFAULT_GUEST: GuestDefaults = {
  clocksource: "kvm-clock",
  migrationHandling: true,
  handlingMode: "ditch",
  watchVmclock: true,
  pollIntervalNs: 16_000_000_000n,
  resyncDelayNs: 1_000_000_000n,
  driftAllowancePpm: 500n,
};

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
  /** Test seam (chaos sensitivity tests): replaces the destination's restore. Never set in production. */
  restore?: RestoreFn;
}

export interface CreateVmRequest {
  id?: string;
  vcpus: number;
  guestTscKhz?: bigint;
  clocksource?: Clocksource;
  migrationHandling?: boolean;
  handlingMode?: HandlingMode;
}

export interface MigrateRequest {
  destination: string;
  policy?: PolicyName;
  estimator?: EstimatorName;
  doorbell?: boolean;
  advanceCapNs?: bigint;
  migrationId?: string;
}

export interface VcpuReading {
  index: number;
  tsc: bigint;
  tscOffset: bigint;
  ratio: bigint;
  kvmclockNs: bigint;
  pvclock: PvclockRecord;
}

export interface VmReading {
  id: string;
  generation: bigint;
  role: string;
  running: boolean;
  vcpus: number;
  guestTscKhz: bigint;
  clocksource: Clocksource;
  trueNs: bigint;
  kvmNs: bigint;
  vcpu: VcpuReading[];
  ntp: { status: number; maxerrorUs: bigint; esterrorUs: bigint; synchronized: boolean };
  bounded: { earliestNs: bigint; latestNs: bigint; realtimeNs: bigint; status: string };
  guestRealtimeNs: bigint;
  handledMigrations: bigint;
  /** Doorbell interrupts this daemon delivered to the guest since it created or adopted the VM (not journaled). */
  doorbellsDelivered: number;
  vmclock: VmclockPage;
  migrating: string | null;
}

interface Tombstone {
  generation: bigint;
  /** The destination's address, when known (journaled migrations say; a deleted VM has none). */
  peer: string;
}

interface RetryState {
  attempts: number;
  nextNs: bigint;
  lastError: string;
}

/** An undecided or undelivered migration, as `GET /v1/migrations` lists it (`inDoubt`). */
export interface InDoubtMigration {
  migrationId: string;
  role: "source" | "destination";
  /** The source's name (inbound) or this daemon's (outbound). */
  source: string;
  vmId: string;
  generation: bigint;
  phase: string;
  decision: string;
  peer: string;
  /** What recovery is doing about it. */
  state: string;
  attempts: number;
  lastError: string;
}

/** Recovery back-off: 0.5 s doubling per failed attempt, at most 30 s. */
export function recoveryBackoffNs(attempts: number): bigint {
  const ms = Math.min(30_000, 500 * 2 ** Math.min(attempts, 6));
  return BigInt(ms) * 1_000_000n;
}

export class TscmigNode {
  readonly cfg: NodeConfig;
  readonly host: EmulatedHost;
  readonly journal: JournalStore;
  /** The journal as every write reaches it: storage failures typed, health, retry (durable-journal.ts). */
  readonly durable: DurableJournal;
  private readonly persistence: VmPersistence;
  readonly log: Logger;
  private readonly deps: NodeDeps;
  private readonly faults: Faults;
  private readonly vms = new Map<string, HostedVm>();
  /** VMs this daemon handed off (or deleted): the generation they left with and where to (refused as new ids). */
  private readonly tombstones = new Map<string, Tombstone>();
  /**
   * Handed-off VMs whose Commit is not acknowledged yet, by migration id: paused here, never run here
   * again unless the destination durably refuses the Commit (then the VM is reclaimed, not lost).
   */
  private readonly handedOff = new Map<string, HostedVm>();
  /** Recovery back-off per in-doubt migration (by journal identity): attempts, next try, last error. */
  private readonly retries = new Map<string, RetryState>();
  private readonly doorbells = new Map<string, number>();
  /** VMs stopped because their handling of a migration is not journaled yet. */
  private readonly stalled = new Set<string>();
  readonly destination: Destination;
  private readonly outbound = new Map<string, Promise<MigrationReport>>();
  /**
   * Source migrations decided committed whose Commit is not known delivered: what the recovery loop
   * re-delivers. Filled from the journal at start and after each migration (so the loop does not
   * read every migration ever journaled twice a second).
   */
  private readonly undelivered = new Set<string>();
  private recoveryTimer: Timer | null = null;
  private stopped = false;
  readonly reports: MigrationReport[] = [];

  constructor(cfg: NodeConfig, deps: NodeDeps) {
    this.cfg = cfg;
    this.deps = deps;
    this.host = deps.host;
    this.durable = new DurableJournal(deps.journal, { scheduler: deps.scheduler, log: deps.log, trueNs: () => deps.host.trueNs() });
    this.journal = this.durable;
    this.persistence = new VmPersistence({ journal: this.durable, scheduler: deps.scheduler, log: deps.log, trueNs: () => deps.host.trueNs(), batchDelayNs: cfg.persistBatchNs });
    this.log = deps.log;
    this.faults = deps.faults ?? NO_FAULTS;
    this.destination = new Destination({
      name: cfg.name,
      host: deps.host,
      journal: this.durable,
      faults: this.faults,
      log: deps.log,
      localVm: (id) => {
        const h = this.vms.get(id);
        return h ? { generation: h.generation, role: h.role } : null;
      },
      tombstone: (id) => this.tombstones.get(id)?.generation ?? null,
      vmCount: () => this.vms.size,
      checkPeerAddress: (address, field) => (deps.dialer.checkAddress ? deps.dialer.checkAddress(address, field) : checkHostPort(address, field)),
      adopt: (inb, vm, result) => this.adopt(inb, vm, result),
      stageDurably: (inb) => this.stageDurably(inb),
      dropStaged: (inb) => this.dropStaged(inb),
      inflight: () => this.outbound.size + this.destination.pending().length,
      ...(deps.restore ? { restore: deps.restore } : {}),
    });
  }

  // ---- lifecycle ---------------------------------------------------------------------------------

  /** Rebuilds every VM and migration from the journal, then starts the recovery loop. */
  start(): void {
    // Everything read and checked first: a damaged record throws here, before anything runs.
    const plan = readRecoveryPlan(this.journal, this.host.info);
    for (const item of plan.vms) this.recoverVm(item, plan.migrations);
    for (const m of plan.migrations.filter((x) => x.role === "source")) {
      if (m.decision === "pending") {
        // Undecided when we died: abort (Commit was never sent), and the VM is ours again.
        this.journalAbortOnStart(m);
        const h = this.vms.get(m.vmId);
        if (h && h.lock === m.migrationId) this.resumeOwned(h);
        const ref = { sourceName: this.cfg.name, sourceKey: m.sourceKey ?? "" };
        if (ref.sourceKey !== "")
          this.deps.dialer.dial(m.peer).abort({ migrationId: m.migrationId, vmId: m.vmId, generation: m.generation, reason: "source restarted before deciding", ...ref }).catch(() => {});
        this.log.warn({ event: "recovered_abort", migrationId: m.migrationId, vmId: m.vmId }, "aborted an undecided migration after restart");
      } else if (m.decision === "committed") {
        if (m.phase !== "committed") this.undelivered.add(m.migrationId);
        const h = this.vms.get(m.vmId);
        if (h && h.lock === m.migrationId) this.handOff(h, m.migrationId);
      }
    }
    for (const m of plan.migrations.filter((x) => x.role === "destination" && x.decision === "pending")) {
      if (!this.destination.inbound.has(inboundKey(m.source ?? "", m.migrationId))) {
        // Prepared but never staged before the crash: nothing to keep.
        this.journalAbortOnStart(m);
      }
    }
    this.scheduleRecovery();
  }

  /**
   * An abort decided while recovering. On a full disk the start goes on (the daemon comes up not
   * ready): the journal writes the abort when it can, and until then a restart decides it again.
   */
  private journalAbortOnStart(m: MigrationRecord): void {
    try {
      this.journal.putMigration({ ...m, decision: "aborted", phase: "aborted", updatedNs: this.host.trueNs() });
    } catch (e) {
      if (!isStorageError(e)) throw e;
    }
  }

  stop(): void {
    this.stopped = true;
    this.recoveryTimer?.cancel();
    for (const h of this.vms.values()) {
      h.guest.stop();
      h.sampler?.cancel();
      h.sampler = null;
    }
    this.persistence.stop();
    this.durable.stop();
  }

  private recoverVm(item: RecoveredVm, migrations: readonly MigrationRecord[]): void {
    const rec = item.rec;
    if (item.kind === "tombstone") {
      const mig = migrations.find((m) => m.role === "source" && m.decision === "committed" && m.vmId === rec.vmId && m.generation === rec.generation);
      this.tombstones.set(rec.vmId, { generation: rec.generation, peer: mig?.peer ?? "" });
      // Its Commit not acknowledged yet: keep the paused VM, in case the destination refuses it for good.
      if (mig && mig.phase !== "committed" && item.held) this.handedOff.set(mig.migrationId, this.loadVm(rec.vmId, rec.generation - 1n, "handed-off", item.held));
      return;
    }
    if (item.kind === "staged") {
      const p = item.payload;
      const mig = migrations.find((m) => m.role === "destination" && m.migrationId === p.req.migrationId && m.source === p.req.sourceName);
      // Pending: wait for the source's decision. Committed: we decided to run it but died before the
      // VM was adopted; the recovery loop's Resolve finishes the restore. Aborted: drop it.
      if (!mig || mig.decision === "aborted") {
        try {
          this.journal.deleteVm(rec.vmId);
        } catch (e) {
          if (!isStorageError(e)) throw e; // a restart drops it again
        }
        return;
      }
      this.destination.inbound.set(inboundKey(p.req.sourceName, p.req.migrationId), {
        req: p.req,
        state: { phase: "staged" },
        leaseFromRawNs: this.host.rawNs(),
        snapshot: p.snapshot,
        receiveRawNs: p.receiveRawNs,
        receiveTrueNs: 0n, // diagnostics only, not kept across a restart
        anchorsRawNs: [],
        anchorsToSendNs: [],
        requestsRawNs: [],
        requestsToSendNs: [],
        holdNs: p.holdNs,
        decodeNs: p.decodeNs,
        report: null,
      });
      return;
    }
    const h = this.loadVm(rec.vmId, rec.generation, rec.role, item.state);
    this.vms.set(rec.vmId, h);
    if (rec.role === "owner") {
      this.resumeOwned(h, false);
    } else {
      // migrating-out: the journaled migration decides (start() looks at it). Only an undecided or
      // committed one holds the VM: an earlier attempt at the same generation that was refused
      // (phase "refused") or aborted is history, and locking on it would leave the VM paused forever.
      const mig = migrations.find((m) => m.role === "source" && m.vmId === rec.vmId && m.generation === rec.generation + 1n && m.decision !== "aborted");
      h.lock = mig?.migrationId ?? null;
      if (!mig) this.resumeOwned(h);
    }
  }

  /** A journaled VM, rebuilt paused. */
  private loadVm(id: string, generation: bigint, role: VmRole, st: PersistedVm): HostedVm {
    const vm = new EmulatedVm(this.host, { vcpus: st.vm.vcpus });
    vm.importState({ ...st.vm, running: false });
    const guest = new Guest(vm, this.deps.scheduler, this.guestOptions(st.guest.clocksource, st.guest.migrationHandling, st.guest.handlingMode), st.guest);
    const h: HostedVm = { id, vm, guest, generation, role, lock: null, sampler: null };
    this.wireGuest(h);
    return h;
  }

  // ---- VMs ---------------------------------------------------------------------------------------

  guestOptions(clocksource: Clocksource, handling: boolean, mode: HandlingMode): GuestOptions {
    const g = this.cfg.guest;
    const host = this.host;
    const src = g.ntpSource ?? ((hst: EmulatedHost) => ({ realtimeNs: hst.realtimeNs(), maxerrorNs: hst.maxerrorNs() }));
    return {
      clocksource,
      migrationHandling: handling,
      handlingMode: mode,
      watchVmclock: g.watchVmclock,
      pollIntervalNs: g.pollIntervalNs,
      resyncDelayNs: g.resyncDelayNs,
      driftAllowancePpm: g.driftAllowancePpm,
      ntpSource: () => src(host),
    };
  }

  createVm(req: CreateVmRequest): HostedVm {
    const id = req.id ?? `vm-${this.deps.random.u32().toString(16).padStart(8, "0")}${this.deps.random.u32().toString(16).padStart(8, "0")}`;
    checkId(id, "id");
    if (this.vms.has(id)) throw new TscmigError("already_exists", `VM ${id} already exists on ${this.cfg.name}`, { field: "id", reason: "vm_exists" });
    const incoming = this.destination.pending().find((i) => i.req.vmId === id);
    if (incoming)
      throw new TscmigError("already_exists", `VM ${id} is being migrated in from ${incoming.req.sourceName} (migration ${incoming.req.migrationId})`, { field: "id", reason: "vm_migrating_in" });
    const gone = this.tombstones.get(id);
    if (gone)
      throw new TscmigError(
        "already_exists",
        gone.peer
          ? `VM ${id} was handed off from ${this.cfg.name} to ${gone.peer} at generation ${gone.generation} and runs there: one id is one VM (pick another id)`
          : `VM ${id} left ${this.cfg.name} at generation ${gone.generation} (deleted, or handed off): one id is one VM (pick another id)`,
        { field: "id", reason: "vm_handed_off" },
      );
    if (this.vms.size >= LIMITS.vmCountMax) throw new TscmigError("resource_exhausted", `at most ${LIMITS.vmCountMax} VMs per daemon`, { reason: "vm_limit" });
    this.durable.requireWritable("create a VM");
    const clocksource = req.clocksource ?? this.cfg.guest.clocksource;
    if (clocksource !== "tsc" && clocksource !== "kvm-clock") throw invalid("clocksource", `must be "tsc" or "kvm-clock"`);
    const mode = req.handlingMode ?? this.cfg.guest.handlingMode;
    if (mode !== "ditch" && mode !== "widen") throw invalid("handlingMode", `must be "ditch" or "widen"`);
    const vm = new EmulatedVm(this.host, { vcpus: req.vcpus, ...(req.guestTscKhz !== undefined ? { guestTscKhz: req.guestTscKhz } : {}) });
    const guest = new Guest(vm, this.deps.scheduler, this.guestOptions(clocksource, req.migrationHandling ?? this.cfg.guest.migrationHandling, mode));
    const h: HostedVm = { id, vm, guest, generation: 0n, role: "owner", lock: null, sampler: null };
    // Journaled before it exists here: a VM this daemon reports is one a restart brings back.
    this.persistence.write(h, true);
    this.doorbells.set(id, 0);
    this.wireGuest(h);
    this.vms.set(id, h);
    guest.start();
    this.startSampler(h);
    this.deps.history?.event({ kind: "run", trueNs: this.host.trueNs(), daemon: this.cfg.name, vmId: id, generation: h.generation });
    this.log.info({ event: "vm_created", vmId: id, vcpus: req.vcpus, guestTscKhz: vm.guestTscKhz }, "VM created");
    return h;
  }

  private wireGuest(h: HostedVm): void {
    h.guest.onHandled = (e) => {
      const trueNs = this.host.trueNs();
      this.log.info({ event: "guest_handled_migration", vmId: h.id, via: e.via, marker: e.marker, mode: e.mode }, "guest acted on a migration");
      // Exactly once must survive a restart. When the handling cannot be journaled (a full disk) the
      // guest stops, as QEMU stops a guest whose writes hit ENOSPC, and the history records the
      // handling only once it is journaled: a daemon that dies before that restarts the guest from
      // before it, and the guest handles the migration again — once, in everything that survives.
      let journaled = false;
      this.persistence.writeOrQueue(h, true, () => {
        journaled = true;
        this.deps.history?.event({ kind: "handled", trueNs, daemon: this.cfg.name, vmId: h.id, ...e });
        this.unstall(h);
      });
      if (!journaled) this.stall(h);
    };
    // The guest's NTP state is guest memory: journaled with the next batch (vm-persistence.ts says
    // why a lost batch is still honest), and with the VM at once by any migration step after it.
    h.guest.onSync = () => {
      if (this.vms.get(h.id) === h && h.role === "owner") this.persistence.changed(h);
    };
  }

  getVm(id: string): HostedVm {
    const h = this.vms.get(id);
    if (!h) throw new TscmigError("not_found", `no VM ${id} on ${this.cfg.name}`, { field: "id", reason: "unknown_vm" });
    return h;
  }

  /**
   * Deletes a VM this daemon owns: its guest stops and it is gone. Refused while a migration holds
   * it, in or out. What stays is a tombstone (journaled, as after a hand-off) one generation past
   * the VM's: a restart does not bring the VM back, and stale traffic for any copy of it is refused.
   */
  deleteVm(id: string): { id: string; generation: bigint } {
    checkId(id, "id");
    if (this.destination.pending().some((i) => i.req.vmId === id))
      throw new TscmigError("failed_precondition", `VM ${id} is migrating in to ${this.cfg.name}`, { field: "id", reason: "vm_migrating" });
    const h = this.getVm(id);
    if (h.lock !== null || h.role !== "owner")
      throw new TscmigError("failed_precondition", `VM ${id} is migrating (${h.lock ?? h.role}); delete it once the migration is decided`, { field: "id", reason: "vm_migrating" });
    this.durable.requireWritable("delete a VM");
    const generation = h.generation + 1n;
    // The tombstone first: a delete that cannot be journaled changes nothing (a restart would bring
    // the VM back, and this daemon would have said it was gone).
    this.journal.putVm({ vmId: id, generation, role: "handed-off", state: "", updatedNs: this.host.trueNs() });
    h.guest.stop();
    h.vm.pause();
    h.sampler?.cancel();
    h.sampler = null;
    this.persistence.forget(id);
    this.vms.delete(id);
    this.doorbells.delete(id);
    this.tombstones.set(id, { generation, peer: "" });
    this.deps.history?.event({ kind: "stop", trueNs: this.host.trueNs(), daemon: this.cfg.name, vmId: id, generation: h.generation, why: "deleted" });
    this.log.info({ event: "vm_deleted", vmId: id, generation }, "VM deleted");
    return { id, generation };
  }

  listVms(): HostedVm[] {
    return [...this.vms.values()];
  }

  vcpuTotal(): number {
    let n = 0;
    for (const h of this.vms.values()) n += h.vm.vcpuCount;
    return n;
  }

  readVm(id: string, vcpuLimit: number = LIMITS.vcpuCountMax): VmReading {
    const h = this.getVm(id);
    const vm = h.vm;
    const trueNs = this.host.trueNs();
    const vcpu: VcpuReading[] = [];
    for (let i = 0; i < Math.min(vm.vcpuCount, vcpuLimit); i++) {
      const tsc = vm.guestTscAt(i, trueNs);
      const rec = vm.pvclock.guestRead(i);
      vcpu.push({ index: i, tsc, tscOffset: vm.getTscOffset(i), ratio: vm.ratioOf(i), kvmclockNs: pvclockReadCycles(rec, tsc), pvclock: rec });
    }
    const running = vm.running;
    const ntp = running ? h.guest.ntp() : h.guest.exportState().ntp;
    const bounded = running ? h.guest.now() : { earliestNs: 0n, latestNs: 0n, realtimeNs: 0n, status: "unknown" as const };
    return {
      id,
      generation: h.generation,
      role: h.role,
      running,
      vcpus: vm.vcpuCount,
      guestTscKhz: vm.guestTscKhz,
      clocksource: h.guest.clocksource,
      trueNs,
      kvmNs: vm.getClock().clock,
      vcpu,
      ntp: { status: ntp.status, maxerrorUs: ntp.maxerrorUs, esterrorUs: ntp.esterrorUs, synchronized: (ntp.status & 0x40) === 0 },
      bounded,
      guestRealtimeNs: bounded.realtimeNs,
      handledMigrations: h.guest.handledCount,
      doorbellsDelivered: this.doorbells.get(id) ?? 0,
      vmclock: { ...vm.vmclock() },
      migrating: h.lock,
    };
  }

  setSkew(update: SkewUpdate): SkewState {
    const s = this.host.skew.apply(update, this.host.trueNs());
    this.log.info({ event: "skew_changed", maxerrorNs: s.maxerrorNs }, "host realtime skew changed");
    return s;
  }

  /** Stops a guest whose handling of a migration is not journaled yet (see wireGuest). */
  private stall(h: HostedVm): void {
    if (this.stopped || this.vms.get(h.id) !== h || h.role !== "owner" || !h.vm.running) return;
    this.stalled.add(h.id);
    h.vm.pause();
    h.guest.stop();
    h.sampler?.cancel();
    h.sampler = null;
    this.deps.history?.event({ kind: "stop", trueNs: this.host.trueNs(), daemon: this.cfg.name, vmId: h.id, generation: h.generation, why: "journal_unwritable" });
    this.log.warn({ event: "vm_stalled", vmId: h.id }, "VM stopped until its state can be journaled");
  }

  private unstall(h: HostedVm): void {
    if (!this.stalled.delete(h.id) || this.stopped || this.vms.get(h.id) !== h || h.role !== "owner" || h.lock !== null) return;
    this.resumeOwned(h, false);
    this.log.info({ event: "vm_unstalled", vmId: h.id }, "VM runs again: its state is journaled");
  }

  /** Journals `h` now; a storage failure leaves it queued for the journal's retry loop. */
  private persist(h: HostedVm, full: boolean): void {
    this.persistence.writeOrQueue(h, full);
  }

  /** Sampling period of each VM now: the configured one, stretched to keep within the rate cap. */
  private samplePeriodNs(): bigint {
    const base = this.cfg.sampleIntervalNs;
    const cap = this.cfg.samplesPerSecondMax ?? 0;
    if (cap <= 0) return base;
    const spread = (BigInt(this.vms.size) * 1_000_000_000n) / BigInt(Math.ceil(cap));
    return spread > base ? spread : base;
  }

  private startSampler(h: HostedVm): void {
    const history = this.deps.history;
    if (this.cfg.sampleIntervalNs <= 0n || !history) return;
    const tick = () => {
      h.sampler = null;
      if (this.stopped || h.role !== "owner" || !h.vm.running || this.vms.get(h.id) !== h) return;
      // A read that makes the guest act on a migration journals that, which takes time: let that
      // happen first, then bracket the guest's read of its clock with two reads of true time.
      h.guest.now();
      if (!h.vm.running) return; // stopped by that read (a handling it could not journal)
      const t = this.host.trueNs();
      const bounded = h.guest.now();
      const spanNs = this.host.trueNs() - t;
      const n = Math.min(h.vm.vcpuCount, this.cfg.sampleVcpusMax);
      const vcpus: number[] = [];
      const tsc: bigint[] = [];
      const kvm: bigint[] = [];
      for (let i = 0; i < n; i++) {
        const v = h.vm.guestTscAt(i, t);
        vcpus.push(i);
        tsc.push(v);
        kvm.push(pvclockReadCycles(h.vm.pvclock.guestRead(i), v));
      }
      history.sample({ trueNs: t, ...(spanNs > 0n ? { trueSpanNs: spanNs } : {}), daemon: this.cfg.name, vmId: h.id, generation: h.generation, vcpus, tsc, kvmclockNs: kvm, bounded, guestTscKhz: h.vm.guestTscKhz });
      h.sampler = this.deps.scheduler.after(this.samplePeriodNs(), tick);
    };
    h.sampler?.cancel();
    h.sampler = this.deps.scheduler.after(this.samplePeriodNs(), tick);
  }

  // ---- ownership hooks (source role) -------------------------------------------------------------

  private pauseOwned(h: HostedVm): void {
    // Journaled just before the vCPUs stop, so the write is not part of the blackout. A crash
    // between the two finds a VM marked migrating-out with its migration undecided, which start()
    // aborts and resumes, exactly as after a crash just past the pause.
    h.role = "migrating-out";
    try {
      this.persistence.write(h, false); // no pause that a restart would not know of
    } catch (e) {
      h.role = "owner";
      throw e;
    }
    h.vm.pause();
    h.guest.stop();
    h.sampler?.cancel();
    h.sampler = null;
    this.deps.history?.event({ kind: "stop", trueNs: this.host.trueNs(), daemon: this.cfg.name, vmId: h.id, generation: h.generation, why: "pause" });
  }

  private resumeOwned(h: HostedVm, journal = true): void {
    h.role = "owner";
    h.lock = null;
    h.vm.resume();
    h.guest.start(false);
    h.guest.resumeTimers();
    if (journal) this.persist(h, false);
    this.startSampler(h);
    this.deps.history?.event({ kind: "run", trueNs: this.host.trueNs(), daemon: this.cfg.name, vmId: h.id, generation: h.generation });
  }

  /**
   * The VM is the destination's now. Its state stays in the tombstone until the Commit is
   * acknowledged (`releaseHandedOff`): a destination that refuses the Commit for good (it aborted or
   * never knew the migration) will never run the VM, and then it comes back here (`reclaim`).
   */
  private handOff(h: HostedVm, migrationId: string): void {
    h.role = "handed-off";
    h.vm.pause();
    h.guest.stop();
    h.sampler?.cancel();
    h.sampler = null;
    const gen = h.generation + 1n;
    const peer = this.journal.getMigration(migrationId)?.peer ?? "";
    this.vms.delete(h.id);
    this.doorbells.delete(h.id);
    this.tombstones.set(h.id, { generation: gen, peer });
    this.handedOff.set(migrationId, h);
    // The decision is durable already (a restart hands off again): a failed write waits for the retry loop.
    this.persistence.handedOff(h, gen);
    this.log.info({ event: "vm_handed_off", vmId: h.id, migrationId, generation: gen }, "VM handed off");
  }

  /** The destination acknowledged the Commit: the VM's state leaves this daemon for good. */
  private releaseHandedOff(migrationId: string): void {
    const h = this.handedOff.get(migrationId);
    if (!h) return;
    this.handedOff.delete(migrationId);
    const t = this.tombstones.get(h.id);
    if (t) this.persistence.released(h.id, t.generation);
  }

  /**
   * The destination durably refused the Commit, so it will never run the VM: it runs here again, at
   * the generation it was handed off with (fencing anything sent about the older one).
   */
  private reclaim(migrationId: string): void {
    const h = this.handedOff.get(migrationId);
    if (!h) return;
    const gen = this.tombstones.get(h.id)?.generation ?? h.generation + 1n;
    this.handedOff.delete(migrationId);
    this.tombstones.delete(h.id);
    h.generation = gen;
    this.vms.set(h.id, h);
    this.doorbells.set(h.id, 0);
    this.resumeOwned(h);
    this.log.warn({ event: "vm_reclaimed", vmId: h.id, migrationId, generation: gen }, "destination refused the Commit for good: the VM runs here again");
  }

  // ---- source role ------------------------------------------------------------------------------

  private sourceContext(): SourceContext {
    return {
      name: this.cfg.name,
      grpcAdvertise: this.cfg.grpcAdvertise,
      host: this.host,
      scheduler: this.deps.scheduler,
      journal: this.journal,
      faults: this.faults,
      history: this.deps.history ?? { sample: () => {}, event: () => {} },
      log: this.log,
      probeExchanges: this.cfg.probeExchanges,
      retriesMax: this.cfg.retriesMax,
      pauseVm: (h) => this.pauseOwned(h),
      resumeVm: (h) => this.resumeOwned(h),
      handOff: (h, id) => this.handOff(h, id),
      reclaim: (_h, id) => this.reclaim(id),
    };
  }

  /** Migrates a VM out; resolves with the report (refusals and aborts are outcomes, not throws). */
  async migrate(vmId: string, req: MigrateRequest): Promise<MigrationReport> {
    const h = this.getVm(vmId);
    if (h.role !== "owner") throw new TscmigError("failed_precondition", `VM ${vmId} is ${h.role} here`, { reason: "not_owner" });
    if (h.lock !== null) throw new TscmigError("aborted", `VM ${vmId} is already migrating (${h.lock})`, { reason: "migration_in_progress" });
    if (this.outbound.size >= LIMITS.migrationsInFlightMax) throw new TscmigError("resource_exhausted", "too many migrations in flight", { reason: "inflight_limit" });
    if (typeof req.destination !== "string" || req.destination.length === 0 || req.destination.length > 256) throw invalid("destination", "must be HOST:PORT");
    checkMigrationTarget({ vmId, generation: h.generation, destination: req.destination, selfName: this.cfg.name, selfGrpc: this.cfg.grpcAdvertise });
    this.durable.requireWritable("migrate a VM out");
    const policy = parsePolicy(req.policy ?? "advance");
    const estimator = parseEstimator(req.estimator ?? "one-sided");
    const cap = req.advanceCapNs ?? LIMITS.advanceCapNsDefault;
    if (cap < 0n || cap > LIMITS.blackoutNsMax) throw invalid("advanceCapNs", "out of range");
    const migrationId = req.migrationId ?? `mig-${this.cfg.name}-${this.deps.random.u32().toString(16).padStart(8, "0")}${this.deps.random.u32().toString(16).padStart(8, "0")}`;
    checkId(migrationId, "migrationId");
    if (this.journal.getMigration(migrationId)) throw new TscmigError("already_exists", `migration id ${migrationId} already used by ${this.cfg.name}`, { field: "migrationId", reason: "migration_id_reused" });
    const sourceKey = this.newSourceKey();
    h.lock = migrationId;
    const peer = this.deps.dialer.dial(req.destination);
    const run = migrateOut(this.sourceContext(), h, peer, {
      migrationId,
      destination: req.destination,
      policy,
      estimator,
      doorbell: req.doorbell ?? false,
      advanceCapNs: cap,
      sourceKey,
    }).finally(() => {
      this.outbound.delete(migrationId);
      if (h.lock === migrationId && h.role === "owner") h.lock = null;
      const m = this.journal.getMigration(migrationId);
      if (m?.decision === "committed" && m.phase === "committed") this.releaseHandedOff(migrationId);
      else if (m?.decision === "committed") this.undelivered.add(migrationId);
    });
    this.outbound.set(migrationId, run);
    const report = await run;
    this.reports.push(report);
    if (this.reports.length > 1000) this.reports.shift();
    this.recordMigration(report);
    return report;
  }

  /** A fresh per-migration secret: 16 bytes from the daemon's random source, hex. */
  private newSourceKey(): string {
    let hex = "";
    for (let i = 0; i < 4; i++) hex += this.deps.random.u32().toString(16).padStart(8, "0");
    return hex;
  }

  private recordMigration(r: MigrationReport): void {
    this.deps.history?.event(migrationEventOf(r, this.host.trueNs()));
  }

  // ---- destination role (inbound RPCs) ------------------------------------------------------------

  prepare(req: PrepareReq): PrepareRes {
    checkInboundSource(req, this.cfg.name);
    this.durable.requireWritable("accept a migration");
    return this.destination.prepare(req);
  }

  probe(req: ProbeReq): ProbeRes {
    return this.destination.probe(req);
  }

  transfer(req: TransferReq, receiveRawNs: bigint, decodeNs: bigint): TransferRes {
    this.durable.requireWritable("stage a migration");
    return this.destination.transfer(req, receiveRawNs, decodeNs);
  }

  /** `receiveRawNs`: this host's raw clock when the Commit arrived (now, when unknown). */
  commit(req: CommitReq, receiveRawNs?: bigint): CommitRes {
    this.durable.requireWritable("run a migrated VM");
    return this.destination.commit(req, receiveRawNs ?? this.host.rawNs());
  }

  /** A Handover call opens for this prepared migration (its source's key checked). */
  handoverOpen(ref: SourceRef, migrationId: string): void {
    this.destination.handoverOpen(ref, migrationId);
  }

  /** An answer on this migration's Handover call (`opened`, a probe) is about to leave. */
  handoverAnswering(ref: SourceRef, migrationId: string, requestReceivedRawNs: bigint): void {
    this.destination.handoverAnswering(ref, migrationId, requestReceivedRawNs);
  }

  abort(req: AbortReq): void {
    this.destination.abort(req);
  }

  /** Migrations this daemon received as destination (from the journal: decided ones leave memory), newest last. */
  inboundSummary(limit = 1000): { migrationId: string; vmId: string; generation: bigint; phase: string; source: string }[] {
    return this.journal
      .listMigrations({ role: "destination" })
      .sort((a, b) => (a.updatedNs < b.updatedNs ? -1 : a.updatedNs > b.updatedNs ? 1 : 0))
      .slice(-limit)
      .map((m) => ({ migrationId: m.migrationId, vmId: m.vmId, generation: m.generation, phase: m.phase, source: m.source ?? "", sourceGrpc: m.peer }));
  }

  /** A destination asks what this source decided; only the one that holds the migration's key is told. */
  resolve(req: ResolveReq): ResolveRes {
    const m = this.journal.getMigration(req.migrationId);
    if (!m || m.role !== "source" || m.vmId !== req.vmId || ((m.sourceKey ?? "") !== "" && m.sourceKey !== req.sourceKey)) return { decision: "unknown", generation: 0n, transferRttNs: 0n };
    return { decision: m.decision, generation: m.generation, transferRttNs: m.role === "source" ? journaledRtt(m.report) : 0n };
  }

  private stageDurably(inb: Inbound): void {
    const payload: StagedPayload = {
      req: inb.req,
      snapshot: inb.snapshot as Snapshot,
      receiveRawNs: inb.receiveRawNs,
      holdNs: inb.holdNs,
      decodeNs: inb.decodeNs,
    };
    this.journal.putVm({ vmId: inb.req.vmId, generation: inb.req.generation, role: "staged", state: toJson(payload), updatedNs: this.host.trueNs() });
  }

  private dropStaged(inb: Inbound): void {
    const rec = this.journal.getVm(inb.req.vmId);
    if (rec && rec.role === "staged") this.journal.deleteVm(inb.req.vmId);
  }

  /** Destination: the restored VM becomes ours and runs. */
  private adopt(inb: Inbound, vm: EmulatedVm, result: RestoreResult): { doorbellRung: boolean; resumedTrueNs: bigint } {
    const s = inb.snapshot as Snapshot;
    const g = s.guest;
    const guest = new Guest(vm, this.deps.scheduler, this.guestOptions(g.clocksource, g.migrationHandling, g.handlingMode), g);
    const h: HostedVm = { id: inb.req.vmId, vm, guest, generation: inb.req.generation, role: "owner", lock: null, sampler: null };
    // Adopted inside the transaction that journals it (migrate-in.ts): one that does not commit (a
    // full disk) undoes this, and the VM never ran here.
    const tomb = this.tombstones.get(h.id);
    this.durable.onRollback(() => this.unadopt(h, tomb));
    this.wireGuest(h);
    this.vms.set(h.id, h);
    this.tombstones.delete(h.id);
    this.doorbells.set(h.id, 0);
    let rung = false;
    if (inb.req.doorbell) {
      rung = true;
      const lost = this.faults.fire("doorbell.lose");
      const delay = this.cfg.doorbellDelayNs + this.faults.delayNs("doorbell.delay");
      if (!lost)
        this.deps.scheduler.after(delay, () => {
          if (this.vms.get(h.id) !== h || !h.vm.running) return;
          this.doorbells.set(h.id, (this.doorbells.get(h.id) ?? 0) + 1);
          h.guest.doorbell();
        });
    }
    vm.resume();
    const resumedTrueNs = this.host.trueNs();
    guest.start(false);
    guest.resumeTimers();
    // Journaled once the vCPUs run, off the blackout. A crash before this write leaves the staged
    // snapshot and its pending migration in the journal: recovery asks the source (Resolve), which
    // answers committed, and the VM is restored and resumed here again, on this daemon only.
    // The run is recorded before the write that may fail: a failed one undoes the adoption and
    // records the stop (unadopt), so the history shows the VM's era starting here, from its source.
    this.deps.history?.event({ kind: "run", trueNs: resumedTrueNs, daemon: this.cfg.name, vmId: h.id, generation: h.generation });
    this.persistence.write(h, true);
    this.startSampler(h);
    this.log.info({ event: "vm_resumed", migrationId: inb.req.migrationId, vmId: h.id, advancedNs: result.advancedNs, errorBoundNs: result.errorBoundNs }, "VM resumed");
    return { doorbellRung: rung, resumedTrueNs };
  }

  /** Undoes `adopt` when the transaction journaling it did not commit: the VM stays staged, not run. */
  private unadopt(h: HostedVm, tomb: Tombstone | undefined): void {
    if (this.vms.get(h.id) !== h) return;
    h.vm.pause();
    h.guest.stop();
    h.sampler?.cancel();
    h.sampler = null;
    this.vms.delete(h.id);
    this.doorbells.delete(h.id);
    this.persistence.forget(h.id);
    if (tomb !== undefined) this.tombstones.set(h.id, tomb);
    this.deps.history?.event({ kind: "stop", trueNs: this.host.trueNs(), daemon: this.cfg.name, vmId: h.id, generation: h.generation, why: "journal_unwritable" });
    this.log.warn({ event: "adopt_rolled_back", vmId: h.id, generation: h.generation }, "adopted VM stopped: its journal write did not commit; it stays staged");
  }

  // ---- recovery -----------------------------------------------------------------------------------

  private scheduleRecovery(): void {
    if (this.stopped) return;
    this.recoveryTimer = this.deps.scheduler.after(this.cfg.recoveryIntervalNs, () => {
      void this.recoverOnce().finally(() => this.scheduleRecovery());
    });
  }

  /**
   * One pass: expire prepared leases, re-deliver committed decisions (taking a VM back when its
   * destination refused it for good), ask sources about what we hold staged. Each in-doubt migration
   * is retried on its own back-off (`recoveryBackoffNs`), so a peer that is gone costs a call every
   * 30 s, not two a second.
   */
  async recoverOnce(): Promise<void> {
    this.destination.expireLeases();
    const work: Promise<void>[] = [];
    for (const id of this.undelivered) {
      if (this.outbound.has(id)) continue;
      const m = this.journal.getMigration(id);
      if (!m || m.role !== "source" || m.decision !== "committed" || m.phase === "committed") {
        this.undelivered.delete(id);
        this.retries.delete(`out\u0000${id}`);
        continue;
      }
      work.push(this.retry(`out\u0000${id}`, "commit", m.migrationId, m.vmId, () => this.redeliverCommit(m)));
    }
    for (const inb of this.destination.pending()) {
      const r = inb.req;
      work.push(this.retry(`in\u0000${inboundKey(r.sourceName, r.migrationId)}`, "resolve", r.migrationId, r.vmId, () => this.askSource(inb)));
    }
    await Promise.all(work);
  }

  /** Runs `step` when its back-off allows; a failure pushes the next try further out. */
  private async retry(key: string, step: "commit" | "resolve", migrationId: string, vmId: string, run: () => Promise<void>): Promise<void> {
    const now = this.deps.clock.monotonicNs();
    const st = this.retries.get(key);
    if (st && now < st.nextNs) return;
    try {
      await run();
      this.retries.delete(key);
    } catch (e) {
      const attempts = (st?.attempts ?? 0) + 1;
      const err = isTscmigError(e) ? e : new TscmigError("internal", e instanceof Error ? e.message : String(e));
      this.retries.set(key, { attempts, nextNs: this.deps.clock.monotonicNs() + recoveryBackoffNs(attempts), lastError: `${err.code}: ${err.message}` });
      this.recoveryFailed(step, migrationId, vmId, err, attempts);
    }
  }

  private async redeliverCommit(m: MigrationRecord): Promise<void> {
    const ref = { sourceName: this.cfg.name, sourceKey: m.sourceKey ?? "" };
    try {
      await this.deps.dialer.dial(m.peer).commit({ migrationId: m.migrationId, vmId: m.vmId, generation: m.generation, transferRttNs: journaledRtt(m.report), ...ref });
    } catch (e) {
      if (!(isTscmigError(e) && isDurableRefusal(e))) throw e;
      // The destination aborted or fenced it for good: it will never run the VM, so it comes back here.
      this.journal.putMigration({ ...m, decision: "aborted", phase: "reclaimed", updatedNs: this.host.trueNs() });
      this.undelivered.delete(m.migrationId);
      this.reclaim(m.migrationId);
      return;
    }
    this.journal.putMigration({ ...m, phase: "committed", updatedNs: this.host.trueNs() });
    this.undelivered.delete(m.migrationId);
    this.releaseHandedOff(m.migrationId);
    this.log.info({ event: "commit_redelivered", migrationId: m.migrationId, vmId: m.vmId }, "commit delivered after recovery");
  }

  private async askSource(inb: Inbound): Promise<void> {
    const r = inb.req;
    const answer = await this.deps.dialer.dial(r.sourceGrpc).resolve({ migrationId: r.migrationId, vmId: r.vmId, sourceKey: r.sourceKey });
    if (answer.decision === "pending") return;
    if (answer.decision === "committed" && inb.state.phase !== "staged") return;
    this.destination.resolved(inb, answer.decision, answer.transferRttNs);
  }

  /** Migrations not settled yet, from the journal (so they show after a restart), newest last. */
  inDoubt(limit = 1000): InDoubtMigration[] {
    const out: InDoubtMigration[] = [];
    for (const m of this.journal.listMigrations()) {
      const undelivered = m.role === "source" && m.decision === "committed" && m.phase !== "committed";
      if (m.decision !== "pending" && !undelivered) continue;
      const key = m.role === "source" ? `out\u0000${m.migrationId}` : `in\u0000${inboundKey(m.source ?? "", m.migrationId)}`;
      const retry = this.retries.get(key);
      const state =
        m.role === "source"
          ? undelivered
            ? "decided to commit; delivering the Commit"
            : this.outbound.has(m.migrationId)
              ? "in flight"
              : "undecided"
          : m.phase === "staged"
            ? "staged; waiting for the source's decision (Commit or Resolve)"
            : "prepared; waiting for the Transfer (lease)";
      out.push({
        migrationId: m.migrationId,
        role: m.role,
        source: m.role === "source" ? this.cfg.name : (m.source ?? ""),
        vmId: m.vmId,
        generation: m.generation,
        phase: m.phase,
        decision: m.decision,
        peer: m.peer,
        state,
        attempts: retry?.attempts ?? 0,
        lastError: retry?.lastError ?? "",
      });
    }
    return out.slice(-limit);
  }

  /** A recovery step failed; it is retried after its back-off. A peer that is down is expected (debug at first). */
  private recoveryFailed(step: "commit" | "resolve", migrationId: string, vmId: string, err: TscmigError, attempts: number): void {
    const expected = err.code === "unavailable" || err.code === "deadline_exceeded";
    const level = expected && attempts < 5 ? "debug" : "warn";
    this.log[level]({ event: "recovery_step_failed", step, migrationId, vmId, attempts, err: err.toJSON() }, "recovery step failed; retrying after a back-off");
  }
}

/** The Transfer round trip a source journaled with its decision (0 when absent or unreadable). */
function journaledRtt(report: string | undefined): bigint {
  return sourceNoteFromJournal(report).transferRttNs;
}
