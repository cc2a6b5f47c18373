// A small guest kernel (docs/time-across-migration.md#the-time-model): a clocksource (`tsc` or `kvm-clock`), realtime =
// clocksource ns + wall offset disciplined by an NTP client, Linux's NTP error state, migration
// handling that acts exactly once per migration, and a ClockBound-style bounded clock.
//
// Exactly once: every signal — PVCLOCK_GUEST_STOPPED seen on any vCPU, a changed vmclock
// disruption_marker, the doorbell — leads to the same check: is the page's marker the one we last
// handled? Only a new marker acts (Gleixner's migration sequence counter; vmclock realised it).

import { invalid } from "../errors.js";
import { getTimeScale, scaleDelta } from "../kvm/time-scale.js";
import { PVCLOCK_GUEST_STOPPED, PVCLOCK_TSC_STABLE_BIT, pvclockReadCycles, pvclockTscKhz } from "../kvm/pvclock.js";
import { VMCLOCK_FLAG_TIME_MAXERROR_VALID } from "../kvm/vmclock.js";
import { u64 } from "../kvm/u64.js";
import type { Scheduler, Timer } from "../time/clock.js";
import type { HypervisorVm } from "../hypervisor/backend.js";
import { adjtimexSync, bootNtpState, ditchSync, type NtpState, secondOverflow, STA_UNSYNC, NTP_PHASE_LIMIT_US } from "./ntp.js";

export type Clocksource = "tsc" | "kvm-clock";
export type HandlingMode = "ditch" | "widen";
export type SignalSource = "flag" | "marker" | "doorbell";
export type BoundedStatus = "synchronized" | "freeRunning" | "unknown" | "disrupted";

export const CLOCKSOURCES: readonly Clocksource[] = ["tsc", "kvm-clock"];

export interface NtpReading {
  /** What the time source says the time is, in ns since the epoch. */
  realtimeNs: bigint;
  /** The error bound the time source claims. */
  maxerrorNs: bigint;
}

export interface GuestOptions {
  clocksource: Clocksource;
  /** Guest migration handling on (this project's extension: docs/time-across-migration.md#what-the-guest-is-told) or off (Linux today: watchdogs only). */
  migrationHandling: boolean;
  /** Ditch sync, or widen the bound by the destination's published error (falls back to ditch). */
  handlingMode: HandlingMode;
  /** The bounded-clock reader checks the vmclock disruption marker on every read (ClockBound). */
  watchVmclock: boolean;
  /** NTP poll period (true time) and the delay before re-disciplining after a ditch. */
  pollIntervalNs: bigint;
  resyncDelayNs: bigint;
  /** The guest NTP client's time source (its host's realtime, as ptp_kvm does, or a remote server). */
  ntpSource: () => NtpReading;
  /** Drift allowance of the bounded clock (ClockBound's max drift), ppm. */
  driftAllowancePpm: bigint;
}

export interface BoundedNow {
  earliestNs: bigint;
  latestNs: bigint;
  realtimeNs: bigint;
  status: BoundedStatus;
}

export interface HandledEvent {
  via: SignalSource;
  marker: bigint;
  mode: HandlingMode | "ditch-fallback";
  handledCount: bigint;
  widenedByNs: bigint;
}

/** Everything of the guest that a snapshot carries (wire: GuestState). */
export interface GuestState {
  clocksource: Clocksource;
  ntp: NtpState;
  wallOffsetNs: bigint;
  syncClocksourceNs: bigint;
  lastHandledMarker: bigint;
  handledCount: bigint;
  migrationHandling: boolean;
  handlingMode: HandlingMode;
  tscCs: { baseTsc: bigint; baseNs: bigint; mul: bigint; shift: number };
  everSynced: boolean;
  lastValueNs: bigint;
  awaitingResync: boolean;
}

export class Guest {
  readonly vm: HypervisorVm;
  private readonly opts: GuestOptions;
  private readonly scheduler: Scheduler;
  private state: GuestState;
  private pollTimer: Timer | null = null;
  private resyncTimer: Timer | null = null;
  onHandled: ((e: HandledEvent) => void) | null = null;
  onSync: ((r: NtpReading) => void) | null = null;

  /**
   * Boots a guest on `vm` (enables kvmclock on every vCPU, calibrates its TSC from pvclock as Linux
   * does, starts the VM), or, given `restored`, adopts a migrated guest without running the VM.
   */
  constructor(vm: HypervisorVm, scheduler: Scheduler, opts: GuestOptions, restored?: GuestState) {
    if (!CLOCKSOURCES.includes(opts.clocksource)) throw invalid("clocksource", `must be "tsc" or "kvm-clock"`);
    if (opts.handlingMode !== "ditch" && opts.handlingMode !== "widen") throw invalid("handlingMode", `must be "ditch" or "widen"`);
    // A zero period would re-arm the poll at the same instant forever.
    if (opts.pollIntervalNs <= 0n) throw invalid("pollIntervalNs", "must be positive");
    if (opts.resyncDelayNs < 0n) throw invalid("resyncDelayNs", "must not be negative");
    if (opts.driftAllowancePpm < 0n || opts.driftAllowancePpm >= 1_000_000n) throw invalid("driftAllowancePpm", "must be within 0..999999 ppm");
    this.vm = vm;
    this.opts = opts;
    this.scheduler = scheduler;
    if (restored) {
      this.state = cloneState(restored);
      return;
    }
    vm.guestEnableKvmclock();
    vm.resume();
    const rec = vm.pvclock.guestRead(0);
    const khz = pvclockTscKhz(rec.tscToSystemMul, rec.tscShift);
    const scale = getTimeScale(1_000_000_000n, khz * 1000n);
    const tsc = vm.readGuestTsc(0);
    const ns = pvclockReadCycles(rec, tsc);
    this.state = {
      clocksource: opts.clocksource,
      ntp: bootNtpState(ns),
      wallOffsetNs: 0n,
      syncClocksourceNs: ns,
      lastHandledMarker: vm.vmclock().disruptionMarker,
      handledCount: 0n,
      migrationHandling: opts.migrationHandling,
      handlingMode: opts.handlingMode,
      tscCs: { baseTsc: tsc, baseNs: ns, mul: scale.mul, shift: scale.shift },
      everSynced: false,
      lastValueNs: ns,
      awaitingResync: false,
    };
  }

  get clocksource(): Clocksource {
    return this.state.clocksource;
  }

  // ---- clock reads ---------------------------------------------------------------------------

  /** kvmclock as vCPU `cpu` reads it (seqlock, last_value clamp unless TSC_STABLE). */
  readKvmclock(cpu = 0): bigint {
    const rec = this.vm.pvclock.guestRead(cpu);
    if ((rec.flags & PVCLOCK_GUEST_STOPPED) !== 0) this.signal("flag", cpu);
    const ns = pvclockReadCycles(rec, this.vm.readGuestTsc(cpu));
    if ((rec.flags & PVCLOCK_TSC_STABLE_BIT) === 0 && ns < this.state.lastValueNs) return this.state.lastValueNs;
    if (ns > this.state.lastValueNs) this.state.lastValueNs = ns;
    return ns;
  }

  /** The clocksource in ns: kvm-clock reads pvclock; tsc never does (which is why doorbells exist). */
  clocksourceNs(cpu = 0): bigint {
    if (this.state.clocksource === "kvm-clock") return this.readKvmclock(cpu);
    const c = this.state.tscCs;
    return c.baseNs + scaleDelta(u64(this.vm.readGuestTsc(cpu) - c.baseTsc), c.mul, c.shift);
  }

  realtimeNs(): bigint {
    return this.clocksourceNs() + this.state.wallOffsetNs;
  }

  ntp(): NtpState {
    const cs = this.clocksourceNs();
    secondOverflow(this.state.ntp, cs);
    return { ...this.state.ntp };
  }

  /** ClockBound-style now(): bounds are ±(maxerror + drift since the last tick). */
  now(): BoundedNow {
    // Act on a disruption before reading the clock, so handling (and whatever it costs) never falls
    // between the clock read and the bound computed from it.
    if (this.opts.watchVmclock) this.checkMarker("marker");
    const cs = this.clocksourceNs();
    const s = this.state;
    secondOverflow(s.ntp, cs);
    const rt = cs + s.wallOffsetNs;
    const sinceTick = cs > s.ntp.tickClocksourceNs ? cs - s.ntp.tickClocksourceNs : 0n;
    const ppm = this.opts.driftAllowancePpm;
    // Linux grows maxerror 500 µs per *guest* second. A clock slow by the full allowance counts
    // only (1 − ppm·10⁻⁶) of the true seconds its error grew over, so maxerror falls behind by
    // ppm/(10⁶ − ppm) of the growth since the sync (0.25 ppm at 500 ppm: 8 ms by UNSYNC); and the
    // clocksource's own 32-bit mul/shift is off by up to ~0.5 ppb: 1 ns per second covers it.
    const sinceSync = cs > s.syncClocksourceNs ? cs - s.syncClocksourceNs : 0n;
    const den = 1_000_000n * (1_000_000n - ppm);
    const slowClock = (sinceSync * ppm * ppm + den - 1n) / den + (sinceSync + 999_999_999n) / 1_000_000_000n;
    const half = s.ntp.maxerrorUs * 1000n + (sinceTick * ppm + 999_999n) / 1_000_000n + slowClock;
    let status: BoundedStatus;
    if (s.awaitingResync) status = "disrupted";
    else if ((s.ntp.status & STA_UNSYNC) !== 0) status = s.everSynced ? "freeRunning" : "unknown";
    else status = "synchronized";
    return { earliestNs: rt - half, latestNs: rt + half, realtimeNs: rt, status };
  }

  // ---- NTP client ----------------------------------------------------------------------------

  /** One NTP poll: step the wall offset onto the source and take its error bound. */
  sync(): void {
    if (!this.vm.running) return;
    // The source is read between two reads of the guest's own clock, as an NTP exchange brackets
    // the server's stamp: the offset is taken at the midpoint, and half the bracket joins the error
    // (a process descheduled between the reads would otherwise step the clock by the pause while
    // claiming only the source's bound). In simulation no time passes: the bracket is empty.
    const cs1 = this.clocksourceNs();
    const r = this.opts.ntpSource();
    const cs2 = this.clocksourceNs();
    const cs = cs1 + (cs2 - cs1) / 2n;
    const halfBracketNs = (cs2 - cs1 + 1n) / 2n;
    const us = (r.maxerrorNs + halfBracketNs + 999n) / 1000n;
    if (us >= NTP_PHASE_LIMIT_US) {
      // A source that cannot bound its error below NTP_PHASE_LIMIT is no sync at all: the kernel
      // would clamp maxerror to 16 s and still say synchronised until the next second_overflow
      // (a bound short of the truth), and chrony's maxdistance refuses such a source anyway.
      ditchSync(this.state.ntp);
      this.state.awaitingResync = false;
      return;
    }
    this.state.wallOffsetNs = r.realtimeNs - cs;
    adjtimexSync(this.state.ntp, us, us / 2n, cs);
    this.state.syncClocksourceNs = cs;
    this.state.everSynced = true;
    this.state.awaitingResync = false;
    this.onSync?.(r);
  }

  /** Starts periodic NTP polls (the first one now, or after one poll period). */
  start(immediate = true): void {
    this.pollTimer?.cancel();
    if (immediate) this.sync();
    const loop = () => {
      this.sync();
      this.pollTimer = this.scheduler.after(this.opts.pollIntervalNs, loop);
    };
    this.pollTimer = this.scheduler.after(this.opts.pollIntervalNs, loop);
  }

  stop(): void {
    this.pollTimer?.cancel();
    this.pollTimer = null;
    this.resyncTimer?.cancel();
    this.resyncTimer = null;
  }

  // ---- migration handling --------------------------------------------------------------------

  /** Doorbell interrupt handler. */
  doorbell(): void {
    this.signal("doorbell");
  }

  /** Polls the vmclock marker (a reader that maps the page). */
  checkMarker(via: SignalSource = "marker"): void {
    if (this.vm.vmclock().disruptionMarker !== this.state.lastHandledMarker) this.signal(via);
  }

  private signal(via: SignalSource, cpu?: number): void {
    if (!this.state.migrationHandling) {
      // Linux today: kvm_check_and_clear_guest_paused() from the watchdogs clears the bit, nothing more.
      if (via === "flag" && cpu !== undefined) this.vm.pvclock.guestClearStopped(cpu);
      return;
    }
    const page = this.vm.vmclock();
    const marker = page.disruptionMarker;
    this.clearAllStopped();
    if (marker === this.state.lastHandledMarker) return; // already handled this migration
    // The published bound covers one disruption: the last one, measured from where the guest was on
    // that migration's source. If the marker moved by more than one, the guest never looked between
    // two migrations and the earlier ones' errors are unaccounted for: widening would under-state
    // them, so only ditching is honest.
    const single = marker === this.state.lastHandledMarker + 1n;
    this.state.lastHandledMarker = marker;
    this.state.handledCount += 1n;
    let mode: HandledEvent["mode"] = this.state.handlingMode;
    let widenedByNs = 0n;
    const published = (page.flags & VMCLOCK_FLAG_TIME_MAXERROR_VALID) !== 0n;
    if (this.state.handlingMode === "widen" && published && single && (this.state.ntp.status & STA_UNSYNC) === 0) {
      widenedByNs = page.timeMaxerrorNanosec;
      const s = this.state.ntp;
      s.maxerrorUs += (widenedByNs + 999n) / 1000n;
      s.esterrorUs += (page.timeEsterrorNanosec + 999n) / 1000n;
      if (s.maxerrorUs >= NTP_PHASE_LIMIT_US) ditchSync(s);
    } else {
      if (this.state.handlingMode === "widen") mode = "ditch-fallback";
      ditchSync(this.state.ntp);
      this.state.awaitingResync = true;
      this.resyncTimer?.cancel();
      this.resyncTimer = this.scheduler.after(this.opts.resyncDelayNs, () => this.sync());
    }
    this.onHandled?.({ via, marker, mode, handledCount: this.state.handledCount, widenedByNs });
  }

  private clearAllStopped(): void {
    for (let i = 0; i < this.vm.vcpuCount; i++) this.vm.pvclock.guestClearStopped(i);
  }

  // ---- state ---------------------------------------------------------------------------------

  exportState(): GuestState {
    return cloneState(this.state);
  }

  /** After a restore: re-arm the resync a ditch had scheduled on the source. */
  resumeTimers(): void {
    if (this.state.awaitingResync) {
      this.resyncTimer?.cancel();
      this.resyncTimer = this.scheduler.after(this.opts.resyncDelayNs, () => this.sync());
    }
  }

  get handledCount(): bigint {
    return this.state.handledCount;
  }

  get lastHandledMarker(): bigint {
    return this.state.lastHandledMarker;
  }

  setMigrationHandling(on: boolean): void {
    this.state.migrationHandling = on;
  }
}

function cloneState(s: GuestState): GuestState {
  return { ...s, ntp: { ...s.ntp }, tscCs: { ...s.tscCs } };
}
