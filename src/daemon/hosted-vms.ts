// The VMs one daemon hosts: each VM with its guest, its journal record kept current
// (vm-persistence.ts), its workload sampler and its doorbell; the tombstones of ids it gave up; the
// handed-off VMs held until their destination acknowledged the Commit. The migration roles reach it
// through the VmRegistry interface; the control API through the methods below.

import { invalid, TscmigError } from "../shared/errors.js";
import type { Faults } from "../shared/faults.js";
import type { HistorySink } from "../shared/history.js";
import type { Logger } from "../shared/logger.js";
import { LIMITS } from "../shared/limits.js";
import type { EmulatedHost } from "../shared/hypervisor/host.js";
import type { HypervisorBackend, HypervisorVm, RealGuestCounters, RealGuestReports } from "../shared/hypervisor/backend.js";
import type { TruthProbe } from "../shared/hypervisor/truth.js";
import { Guest, type BoundedNow, type Clocksource, type GuestOptions, type HandlingMode, type NtpReading } from "../shared/guest/guest.js";
import { PVCLOCK_GUEST_STOPPED, pvclockReadCycles, type PvclockRecord } from "../shared/kvm/pvclock.js";
import type { VmclockPage } from "../shared/kvm/vmclock.js";
import type { HostedVm, PersistedVm } from "../shared/migration/hosted-vm.js";
import type { MigrationRecord, VmRole } from "../shared/migration/journal.js";
import { checkId } from "../shared/migration/snapshot.js";
import type { Adoption, Tombstone, VmRegistry } from "../shared/migration/vm-registry.js";
import type { Scheduler } from "../shared/time/clock.js";
import type { Random } from "../shared/time/random.js";
import type { DurableJournal } from "./durable-journal.js";
import type { RecoveredVm } from "./recovery-plan.js";
import { VmPersistence } from "./vm-persistence.js";

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

export const DEFAULT_GUEST: GuestDefaults = {
  clocksource: "kvm-clock",
  migrationHandling: true,
  handlingMode: "ditch",
  watchVmclock: true,
  pollIntervalNs: 16_000_000_000n,
  resyncDelayNs: 1_000_000_000n,
  driftAllowancePpm: 500n,
};

export interface HostedVmsConfig {
  /** The daemon's name, in logs, errors and the history. */
  name: string;
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
  /** How long a VM's NTP-sync change waits to share a journal transaction with others (vm-persistence.ts). */
  persistBatchNs: bigint;
}

export interface HostedVmsDeps {
  scheduler: Scheduler;
  random: Random;
  log: Logger;
  host: EmulatedHost;
  journal: DurableJournal;
  faults: Faults;
  history?: HistorySink;
  /** The hypervisor the VMs run on. */
  backend: HypervisorBackend;
  /** True time, for the sampler and readings only. */
  truth: TruthProbe;
}

export interface CreateVmRequest {
  id?: string;
  vcpus: number;
  guestTscKhz?: bigint;
  clocksource?: Clocksource;
  migrationHandling?: boolean;
  handlingMode?: HandlingMode;
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
  /** A real guest's own counts (kvm backend): stops seen per vCPU, stops acted on, doorbell interrupts; cumulative over the VM's life. */
  realGuest?: RealGuestCounters;
}

export class HostedVms implements VmRegistry {
  private readonly vms = new Map<string, HostedVm>();
  /** VMs this daemon handed off (or deleted): the generation they left with and where to (refused as new ids). */
  private readonly tombstones = new Map<string, Tombstone>();
  /**
   * Handed-off VMs whose Commit is not acknowledged yet, by migration id: paused here, never run here
   * again unless the destination durably refuses the Commit (then the VM is reclaimed, not lost).
   */
  private readonly handedOff = new Map<string, HostedVm>();
  private readonly doorbells = new Map<string, number>();
  /** VMs stopped because their handling of a migration is not journaled yet. */
  private readonly stalled = new Set<string>();
  /** When each VM last started running here (its `run` event): a real guest's older samples are not this run's. */
  private readonly runSince = new Map<string, bigint>();
  /** The disruption marker of the last migration a real guest was seen acting on, per VM. */
  private readonly realHandled = new Map<string, bigint>();
  private readonly persistence: VmPersistence;
  private readonly host: EmulatedHost;
  private stopped = false;

  constructor(
    private readonly cfg: HostedVmsConfig,
    private readonly deps: HostedVmsDeps,
  ) {
    this.host = deps.host;
    this.persistence = new VmPersistence({ journal: deps.journal, scheduler: deps.scheduler, log: deps.log, trueNs: () => deps.host.trueNs(), batchDelayNs: cfg.persistBatchNs });
  }

  stop(): void {
    this.stopped = true;
    for (const h of this.vms.values()) {
      h.guest.stop();
      this.stopSampler(h);
    }
    this.persistence.stop();
  }

  // ---- what the journal says was here --------------------------------------------------------------

  /** Rebuilds the VMs, tombstones and held hand-offs a restart found (staged snapshots are the destination's). */
  recover(items: readonly RecoveredVm[], migrations: readonly MigrationRecord[]): void {
    for (const item of items) {
      if (item.kind === "tombstone") this.recoverTombstone(item, migrations);
      else if (item.kind === "hosted") this.recoverHosted(item, migrations);
    }
  }

  private recoverTombstone(item: Extract<RecoveredVm, { kind: "tombstone" }>, migrations: readonly MigrationRecord[]): void {
    const rec = item.rec;
    const mig = migrations.find((m) => m.role === "source" && m.decision === "committed" && m.vmId === rec.vmId && m.generation === rec.generation);
    this.tombstones.set(rec.vmId, { generation: rec.generation, peer: mig?.peer ?? "" });
    // Its Commit not acknowledged yet: keep the paused VM, in case the destination refuses it for good.
    if (mig && mig.phase !== "committed" && item.held) this.handedOff.set(mig.migrationId, this.load(rec.vmId, rec.generation - 1n, "handed-off", item.held));
  }

  private recoverHosted(item: Extract<RecoveredVm, { kind: "hosted" }>, migrations: readonly MigrationRecord[]): void {
    const rec = item.rec;
    const h = this.load(rec.vmId, rec.generation, rec.role, item.state);
    this.vms.set(rec.vmId, h);
    if (rec.role === "owner") {
      this.resumeOwned(h, false);
      return;
    }
    // migrating-out: the journaled migration decides (the source role's recovery looks at it). Only
    // an undecided or committed one holds the VM: an earlier attempt at the same generation that was
    // refused (phase "refused") or aborted is history, and locking on it would leave the VM paused forever.
    // The newest such one (journal order) paused it: an older on-receipt hand-off may still be
    // undecided (it crashed before its pause, and the VM ran on), and its answer must not resume this VM.
    let mig: MigrationRecord | undefined;
    for (const m of migrations) if (m.role === "source" && m.vmId === rec.vmId && m.generation === rec.generation + 1n && m.decision !== "aborted") mig = m;
    h.lock = mig?.migrationId ?? null;
    if (!mig) this.resumeOwned(h, true);
  }

  /** A journaled VM, rebuilt paused. */
  private load(id: string, generation: bigint, role: VmRole, st: PersistedVm): HostedVm {
    const vm = this.deps.backend.restoreVm({ ...st.vm, running: false });
    const guest = new Guest(vm, this.deps.scheduler, this.guestOptions(st.guest.clocksource, st.guest.migrationHandling, st.guest.handlingMode), st.guest);
    const h: HostedVm = { id, vm, guest, generation, role, lock: null, sampler: null };
    // A real guest comes back rebooted and acts on its restart's stop: news only if the journaled
    // guest had not yet handled the VM's latest migration.
    this.realHandled.set(id, st.guest.lastHandledMarker);
    this.wireGuest(h);
    return h;
  }

  // ---- the control API's VMs ------------------------------------------------------------------------

  /** A fresh VM id from the daemon's random source. */
  newId(): string {
    return `vm-${this.deps.random.u32().toString(16).padStart(8, "0")}${this.deps.random.u32().toString(16).padStart(8, "0")}`;
  }

  /** Creates and starts a VM under `id`, journaled before it exists here. */
  create(id: string, req: CreateVmRequest): HostedVm {
    checkId(id, "id");
    if (this.vms.has(id)) throw new TscmigError("already_exists", `VM ${id} already exists on ${this.cfg.name}`, { field: "id", reason: "vm_exists" });
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
    this.deps.journal.requireWritable("create a VM");
    const clocksource = req.clocksource ?? this.cfg.guest.clocksource;
    if (clocksource !== "tsc" && clocksource !== "kvm-clock") throw invalid("clocksource", `must be "tsc" or "kvm-clock"`);
    const mode = req.handlingMode ?? this.cfg.guest.handlingMode;
    if (mode !== "ditch" && mode !== "widen") throw invalid("handlingMode", `must be "ditch" or "widen"`);
    const vm = this.deps.backend.createVm({ vcpus: req.vcpus, ...(req.guestTscKhz !== undefined ? { guestTscKhz: req.guestTscKhz } : {}) });
    const guest = new Guest(vm, this.deps.scheduler, this.guestOptions(clocksource, req.migrationHandling ?? this.cfg.guest.migrationHandling, mode));
    const h: HostedVm = { id, vm, guest, generation: 0n, role: "owner", lock: null, sampler: null };
    // Journaled before it exists here: a VM this daemon reports is one a restart brings back.
    this.persistence.write(h, true);
    this.doorbells.set(id, 0);
    this.wireGuest(h);
    this.vms.set(id, h);
    guest.start();
    this.startSampler(h);
    this.realHandled.set(id, vm.vmclock().disruptionMarker);
    this.ran(h, this.host.trueNs());
    this.deps.log.info({ event: "vm_created", vmId: id, vcpus: req.vcpus, guestTscKhz: vm.guestTscKhz }, "VM created");
    return h;
  }

  /**
   * Deletes a VM this daemon owns: its guest stops and it is gone. Refused while a migration holds
   * it. What stays is a tombstone (journaled, as after a hand-off) one generation past the VM's: a
   * restart does not bring the VM back, and stale traffic for any copy of it is refused.
   */
  delete(id: string): { id: string; generation: bigint } {
    const h = this.get(id);
    if (h.lock !== null || h.role !== "owner")
      throw new TscmigError("failed_precondition", `VM ${id} is migrating (${h.lock ?? h.role}); delete it once the migration is decided`, { field: "id", reason: "vm_migrating" });
    this.deps.journal.requireWritable("delete a VM");
    const generation = h.generation + 1n;
    // The tombstone first: a delete that cannot be journaled changes nothing (a restart would bring
    // the VM back, and this daemon would have said it was gone).
    this.deps.journal.putVm({ vmId: id, generation, role: "handed-off", state: "", updatedNs: this.host.trueNs() });
    h.guest.stop();
    h.vm.pause();
    this.stopSampler(h);
    this.persistence.forget(id);
    this.vms.delete(id);
    this.doorbells.delete(id);
    this.tombstones.set(id, { generation, peer: "" });
    this.destroyVm(h);
    this.deps.history?.event({ kind: "stop", trueNs: this.host.trueNs(), daemon: this.cfg.name, vmId: id, generation: h.generation, why: "deleted" });
    this.deps.log.info({ event: "vm_deleted", vmId: id, generation }, "VM deleted");
    return { id, generation };
  }

  find(id: string): HostedVm | undefined {
    return this.vms.get(id);
  }

  get(id: string): HostedVm {
    const h = this.vms.get(id);
    if (!h) throw new TscmigError("not_found", `no VM ${id} on ${this.cfg.name}`, { field: "id", reason: "unknown_vm" });
    return h;
  }

  tombstone(id: string): Tombstone | undefined {
    return this.tombstones.get(id);
  }

  get size(): number {
    return this.vms.size;
  }

  list(): HostedVm[] {
    return [...this.vms.values()];
  }

  vcpuTotal(): number {
    let n = 0;
    for (const h of this.vms.values()) n += h.vm.vcpuCount;
    return n;
  }

  read(id: string, vcpuLimit: number = LIMITS.vcpuCountMax): VmReading {
    const h = this.get(id);
    const vm = h.vm;
    const trueNs = this.deps.truth.nowNs();
    const vcpu: VcpuReading[] = [];
    for (let i = 0; i < Math.min(vm.vcpuCount, vcpuLimit); i++) {
      const tsc = this.deps.truth.guestTscAt(vm, i, trueNs);
      const rec = vm.pvclock.guestRead(i);
      vcpu.push({ index: i, tsc, tscOffset: vm.getTscOffset(i), ratio: vm.getTscRatio(i), kvmclockNs: pvclockReadCycles(rec, tsc), pvclock: rec });
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
      ...(vm.guestCounters ? { realGuest: limitCounters(vm.guestCounters(), vcpuLimit) } : {}),
    };
  }

  // ---- the migration roles' hooks (VmRegistry) ------------------------------------------------------

  pauseForMigration(h: HostedVm): void {
    // Journaled just before the vCPUs stop, so the write is not part of the blackout. A crash
    // between the two finds a VM marked migrating-out with its migration undecided, which the
    // source's recovery aborts and resumes, exactly as after a crash just past the pause.
    h.role = "migrating-out";
    try {
      this.persistence.write(h, false); // no pause that a restart would not know of
    } catch (e) {
      h.role = "owner";
      throw e;
    }
    this.halt(h, "pause");
  }

  resume(h: HostedVm): void {
    this.resumeOwned(h, true);
  }

  /**
   * The VM is the destination's now. Its state stays in the tombstone until the Commit is
   * acknowledged (`release`): a destination that refuses the Commit for good (it aborted or never
   * knew the migration) will never run the VM, and then it comes back here (`reclaim`).
   */
  handOff(h: HostedVm, migrationId: string, peer: string): void {
    h.role = "handed-off";
    h.vm.pause();
    h.guest.stop();
    this.stopSampler(h);
    const gen = h.generation + 1n;
    this.vms.delete(h.id);
    this.doorbells.delete(h.id);
    this.tombstones.set(h.id, { generation: gen, peer });
    this.handedOff.set(migrationId, h);
    // The decision is durable already (a restart hands off again): a failed write waits for the retry loop.
    this.persistence.handedOff(h, gen);
    this.deps.log.info({ event: "vm_handed_off", vmId: h.id, migrationId, generation: gen }, "VM handed off");
  }

  release(migrationId: string): void {
    const h = this.handedOff.get(migrationId);
    if (!h) return;
    this.handedOff.delete(migrationId);
    const t = this.tombstones.get(h.id);
    if (t) this.persistence.released(h.id, t.generation);
    this.destroyVm(h); // the destination runs it for good: a real VM's threads, memory and fds go now
  }

  /** It runs here again at the generation it was handed off with (fencing anything sent about the older one). */
  reclaim(migrationId: string): void {
    const h = this.handedOff.get(migrationId);
    if (!h) return;
    const gen = this.tombstones.get(h.id)?.generation ?? h.generation + 1n;
    this.handedOff.delete(migrationId);
    this.tombstones.delete(h.id);
    h.generation = gen;
    this.vms.set(h.id, h);
    this.doorbells.set(h.id, 0);
    this.resumeOwned(h, true);
    this.deps.log.warn({ event: "vm_reclaimed", vmId: h.id, migrationId, generation: gen }, "destination refused the Commit for good: the VM runs here again");
  }

  adopt(vm: HypervisorVm, a: Adoption): { doorbellRung: boolean; resumedTrueNs: bigint; resumedRawNs: bigint } {
    const g = a.guest;
    const guest = new Guest(vm, this.deps.scheduler, this.guestOptions(g.clocksource, g.migrationHandling, g.handlingMode), g);
    const h: HostedVm = { id: a.vmId, vm, guest, generation: a.generation, role: "owner", lock: null, sampler: null };
    // Adopted inside the transaction that journals it (migrate-in.ts): one that does not commit (a
    // full disk) undoes this, and the VM never ran here.
    const tomb = this.tombstones.get(h.id);
    this.deps.journal.onRollback(() => this.unadopt(h, tomb));
    this.wireGuest(h);
    this.vms.set(h.id, h);
    this.tombstones.delete(h.id);
    this.doorbells.set(h.id, 0);
    const rung = a.doorbell;
    if (rung) this.ringDoorbell(h);
    vm.resume();
    const resumedTrueNs = this.host.trueNs();
    const resumedRawNs = this.host.rawNs();
    guest.start(false);
    guest.resumeTimers();
    // Journaled once the vCPUs run, off the blackout. A crash before this write leaves the staged
    // snapshot and its pending migration in the journal: recovery asks the source (Resolve), which
    // answers committed, and the VM is restored and resumed here again, on this daemon only.
    // The run is recorded before the write that may fail: a failed one undoes the adoption and
    // records the stop (unadopt), so the history shows the VM's era starting here, from its source.
    this.realHandled.set(h.id, vm.vmclock().disruptionMarker - 1n); // this migration's marker is the guest's to act on
    this.ran(h, resumedTrueNs);
    this.persistence.write(h, true);
    this.startSampler(h);
    this.deps.log.info({ event: "vm_resumed", migrationId: a.migrationId, vmId: h.id, advancedNs: a.advancedNs, errorBoundNs: a.errorBoundNs }, "VM resumed");
    return { doorbellRung: rung, resumedTrueNs, resumedRawNs };
  }

  private ringDoorbell(h: HostedVm): void {
    const lost = this.deps.faults.fire("doorbell.lose");
    const delay = this.cfg.doorbellDelayNs + this.deps.faults.delayNs("doorbell.delay");
    if (lost) return;
    this.deps.scheduler.after(delay, () => {
      if (this.vms.get(h.id) !== h || !h.vm.running) return;
      this.doorbells.set(h.id, (this.doorbells.get(h.id) ?? 0) + 1);
      h.vm.injectDoorbell?.(); // a real guest's interrupt handler counts it
      h.guest.doorbell();
    });
  }

  /** Undoes `adopt` when the transaction journaling it did not commit: the VM stays staged, not run. */
  private unadopt(h: HostedVm, tomb: Tombstone | undefined): void {
    if (this.vms.get(h.id) !== h) return;
    h.vm.pause();
    h.guest.stop();
    this.stopSampler(h);
    this.vms.delete(h.id);
    this.doorbells.delete(h.id);
    this.persistence.forget(h.id);
    if (tomb !== undefined) this.tombstones.set(h.id, tomb);
    this.destroyVm(h);
    this.deps.history?.event({ kind: "stop", trueNs: this.host.trueNs(), daemon: this.cfg.name, vmId: h.id, generation: h.generation, why: "journal_unwritable" });
    this.deps.log.warn({ event: "adopt_rolled_back", vmId: h.id, generation: h.generation }, "adopted VM stopped: its journal write did not commit; it stays staged");
  }

  // ---- running, stopping, journaling ----------------------------------------------------------------

  private resumeOwned(h: HostedVm, journal: boolean): void {
    h.role = "owner";
    h.lock = null;
    h.vm.resume();
    h.guest.start(false);
    h.guest.resumeTimers();
    if (journal) this.persistence.writeOrQueue(h, false); // a storage failure leaves it queued for the retry loop
    this.startSampler(h);
    this.ran(h, this.host.trueNs());
  }

  /** Records that `h` runs here from `trueNs` on. */
  private ran(h: HostedVm, trueNs: bigint): void {
    this.runSince.set(h.id, trueNs);
    this.deps.history?.event({ kind: "run", trueNs, daemon: this.cfg.name, vmId: h.id, generation: h.generation });
  }

  /** A VM that left this daemon for good: a real one's resources are released (the emulated one has none). */
  private destroyVm(h: HostedVm): void {
    this.runSince.delete(h.id);
    this.realHandled.delete(h.id);
    h.vm.destroy?.().catch((e: unknown) => this.deps.log.warn({ event: "vm_destroy_failed", vmId: h.id, err: String(e) }, "releasing a VM's resources failed"));
  }

  /** Stops `h`'s vCPUs, guest and sampler, and records why. */
  private halt(h: HostedVm, why: "pause" | "journal_unwritable"): void {
    h.vm.pause();
    h.guest.stop();
    this.stopSampler(h);
    this.deps.history?.event({ kind: "stop", trueNs: this.host.trueNs(), daemon: this.cfg.name, vmId: h.id, generation: h.generation, why });
  }

  private wireGuest(h: HostedVm): void {
    h.guest.onHandled = (e) => {
      const trueNs = this.host.trueNs();
      this.deps.log.info({ event: "guest_handled_migration", vmId: h.id, via: e.via, marker: e.marker, mode: e.mode }, "guest acted on a migration");
      // Exactly once must survive a restart. When the handling cannot be journaled (a full disk) the
      // guest stops, as QEMU stops a guest whose writes hit ENOSPC, and the history records the
      // handling only once it is journaled: a daemon that dies before that restarts the guest from
      // before it, and the guest handles the migration again — once, in everything that survives.
      let journaled = false;
      this.persistence.writeOrQueue(h, true, () => {
        journaled = true;
        // With a real guest, what it did is the history's (sampleRealGuest); the model's handling is its NTP state's.
        if (!h.vm.drainGuestReports) this.deps.history?.event({ kind: "handled", trueNs, daemon: this.cfg.name, vmId: h.id, ...e });
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

  /** Stops a guest whose handling of a migration is not journaled yet (see wireGuest). */
  private stall(h: HostedVm): void {
    if (this.stopped || this.vms.get(h.id) !== h || h.role !== "owner" || !h.vm.running) return;
    this.stalled.add(h.id);
    this.halt(h, "journal_unwritable");
    this.deps.log.warn({ event: "vm_stalled", vmId: h.id }, "VM stopped until its state can be journaled");
  }

  private unstall(h: HostedVm): void {
    if (!this.stalled.delete(h.id) || this.stopped || this.vms.get(h.id) !== h || h.role !== "owner" || h.lock !== null) return;
    this.resumeOwned(h, false);
    this.deps.log.info({ event: "vm_unstalled", vmId: h.id }, "VM runs again: its state is journaled");
  }

  private guestOptions(clocksource: Clocksource, handling: boolean, mode: HandlingMode): GuestOptions {
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

  // ---- workload sampling ------------------------------------------------------------------------------

  /** Sampling period of each VM now: the configured one, stretched to keep within the rate cap. */
  private samplePeriodNs(): bigint {
    const base = this.cfg.sampleIntervalNs;
    const cap = this.cfg.samplesPerSecondMax ?? 0;
    if (cap <= 0) return base;
    const spread = (BigInt(this.vms.size) * 1_000_000_000n) / BigInt(Math.ceil(cap));
    return spread > base ? spread : base;
  }

  private stopSampler(h: HostedVm): void {
    h.sampler?.cancel();
    h.sampler = null;
  }

  private startSampler(h: HostedVm): void {
    if (this.cfg.sampleIntervalNs <= 0n || !this.deps.history) return;
    const tick = () => {
      h.sampler = null;
      if (this.stopped || h.role !== "owner" || !h.vm.running || this.vms.get(h.id) !== h) return;
      this.sample(h);
      if (h.vm.running) h.sampler = this.deps.scheduler.after(this.samplePeriodNs(), tick);
    };
    this.stopSampler(h);
    h.sampler = this.deps.scheduler.after(this.samplePeriodNs(), tick);
  }

  /** One workload sample of `h`: its guest's bounded clock read, bracketed by true time, and each vCPU's clocks. */
  private sample(h: HostedVm): void {
    // A read that makes the guest act on a migration journals that, which takes time: let that
    // happen first, then bracket the guest's read of its clock with two reads of true time.
    h.guest.now();
    if (!h.vm.running) return; // stopped by that read (a handling it could not journal)
    const t = this.deps.truth.nowNs();
    const bounded = h.guest.now();
    const spanNs = this.deps.truth.nowNs() - t;
    if (h.vm.drainGuestReports) {
      this.sampleRealGuest(h, bounded, t + spanNs);
      return;
    }
    const n = Math.min(h.vm.vcpuCount, this.cfg.sampleVcpusMax);
    const vcpus: number[] = [];
    const tsc: bigint[] = [];
    const kvm: bigint[] = [];
    for (let i = 0; i < n; i++) {
      const v = this.deps.truth.guestTscAt(h.vm, i, t);
      vcpus.push(i);
      tsc.push(v);
      kvm.push(pvclockReadCycles(h.vm.pvclock.guestRead(i), v));
    }
    this.deps.history?.sample({ trueNs: t, ...(spanNs > 0n ? { trueSpanNs: spanNs } : {}), daemon: this.cfg.name, vmId: h.id, generation: h.generation, vcpus, tsc, kvmclockNs: kvm, bounded, guestTscKhz: h.vm.guestTscKhz });
  }

  /**
   * A real guest's samples since the last tick, one history sample per vCPU at the true instant of its
   * own RDTSC (vCPUs sample at different instants), each with the model's bounded read, which came
   * after it (the span reaches that read). And the stops the real guest acted on: a `handled` event
   * when it acted on a migration's stop (a new disruption marker), none for a pause that was no
   * migration (a rolled-back one, whose stop the guest sees too).
   */
  private sampleRealGuest(h: HostedVm, bounded: BoundedNow, readEndNs: bigint): void {
    const r = (h.vm.drainGuestReports as () => RealGuestReports)();
    const since = this.runSince.get(h.id) ?? 0n;
    const instant = this.deps.truth.instantOfGuestTsc;
    if (instant === undefined) return;
    const timed = r.samples.map((s) => ({ s, trueNs: instant(h.vm, s.vcpu, s.tsc) }));
    if (r.actedDelta > 0) {
      // When it acted: its first sample that read the stopped flag (not before this run began).
      const saw = timed.filter((x) => (x.s.flags & PVCLOCK_GUEST_STOPPED) !== 0).map((x) => (x.trueNs < since ? since : x.trueNs));
      this.realGuestActed(h, saw.length > 0 ? saw.reduce((a, b) => (a < b ? a : b)) : readEndNs);
    }
    for (const { s, trueNs } of timed) {
      if (s.vcpu >= this.cfg.sampleVcpusMax || trueNs < since) continue; // before this run began here (a resume's first entry)
      const span = readEndNs > trueNs ? readEndNs - trueNs : 0n;
      this.deps.history?.sample({ trueNs, ...(span > 0n ? { trueSpanNs: span } : {}), daemon: this.cfg.name, vmId: h.id, generation: h.generation, vcpus: [s.vcpu], tsc: [s.tsc], kvmclockNs: [s.kvmclockNs], bounded, guestTscKhz: h.vm.guestTscKhz });
    }
  }

  private realGuestActed(h: HostedVm, trueNs: bigint): void {
    const marker = h.vm.vmclock().disruptionMarker;
    if (this.realHandled.get(h.id) === marker) {
      this.deps.log.info({ event: "guest_saw_pause", vmId: h.id, marker }, "the real guest acted on a pause that was no migration");
      return;
    }
    this.realHandled.set(h.id, marker);
    const g = h.guest.exportState();
    if (!g.migrationHandling) return; // it did what Linux does (cleared the flag); acting on a migration is handling's
    this.deps.history?.event({ kind: "handled", trueNs, daemon: this.cfg.name, vmId: h.id, via: "flag", marker, mode: g.handlingMode, handledCount: g.handledCount, widenedByNs: 0n });
  }
}

function limitCounters(c: RealGuestCounters, vcpus: number): RealGuestCounters {
  return { acted: c.acted, stopped: c.stopped.slice(0, vcpus), doorbells: c.doorbells.slice(0, vcpus), samples: c.samples.slice(0, vcpus) };
}
