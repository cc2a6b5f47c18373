// What the dashboard and `tscmig watch` see of a daemon, and how it reaches them: this module reads
// the node through a small read-only interface (DashboardSource), turns the recorder's samples and
// events into the stream's typed events, and builds the `state` event that opens a fresh stream.
// It never changes the node: controls go through the ordinary control API.
//
// Errors are against true time, the deployment's shared reference (docs/time-across-migration.md#the-time-model): for a guest,
// `guest realtime − (epoch + true ns)`, and its bounded clock's [earliest, latest] the same way,
// so the band contains zero exactly when the guest's claim is honest (I4). Where daemons share no
// truth these figures mean nothing, and the dashboard says what they are measured against.

import type { GuestSample, HistoryEvent, HistorySink, RingHistory } from "../shared/history.js";
import { BOUNDARY, encodeJson } from "../shared/codec.js";
import { type MigrationReport, migrationReportCodec, type RestoreReport } from "../shared/migration/report.js";
import type { Scheduler, Timer } from "../shared/time/clock.js";
import type { EventHub } from "./events.js";

/** A daemon this one knows: configured, or met through a migration. */
export interface PeerInfo {
  name: string;
  grpc: string;
  /** Its control API / dashboard base URL, when configured. */
  http?: string;
  /** How this daemon knows it. */
  via: "configured" | "migrated-to" | "migrated-from";
}

/** A migration this daemon received, as far as the destination knows it. */
export interface InboundMigration {
  migrationId: string;
  vmId: string;
  generation: bigint;
  sourceGrpc: string;
  sourceName?: string;
  policy?: string;
  estimator?: string;
  doorbell?: boolean;
  phase: string;
  decision: string;
  report?: RestoreReport;
  updatedNs: bigint;
}

export interface HostView {
  name: string;
  grpc: string;
  trueNs: bigint;
  epochNs: bigint;
  realtimeNs: bigint;
  skewNs: bigint;
  maxerrorNs: bigint;
  skewModel: unknown;
  tscKhz: bigint;
  vendor: string;
  fracBits: number;
  tscScaling: boolean;
}

/**
 * A VM as the dashboard sees it without touching it. Observing must not change what is observed: a
 * read of the guest's bounded clock (what GET /v1/vms does) makes the guest act on a pending
 * migration signal and clear PVCLOCK_GUEST_STOPPED, so a dashboard reading at the resume would hide
 * the flag from the restore's own report. The bounded clock shown is the guest's own last sample.
 */
export interface VmPeek {
  id: string;
  generation: bigint;
  role: string;
  running: boolean;
  vcpus: number;
  guestTscKhz: bigint;
  clocksource: string;
  /** The guest's NTP state as of its last clock tick. */
  ntp: { status: number; maxerrorUs: bigint; esterrorUs: bigint };
  handledMigrations: bigint;
  /** vCPUs (of the first `vcpusRead`) whose pvclock record carries PVCLOCK_GUEST_STOPPED. */
  stoppedVcpus: number;
  vcpusRead: number;
  vmclock: { disruptionMarker: bigint; clockStatus: number; seqCount: number };
  migrating: string | null;
}

/** The node, as the dashboard may see it: reads only, and reads that change nothing. */
export interface DashboardSource {
  host(): HostView;
  /** This host's realtime skew at a true instant (cheaper than host()). */
  skewNsAt(trueNs: bigint): bigint;
  epochNs: bigint;
  vmIds(): string[];
  /** Null when the VM is not (or no longer) here. */
  peekVm(id: string): VmPeek | null;
  /** Migrations this daemon sourced, newest last. */
  outbound(): readonly MigrationReport[];
  /** Migrations this daemon received, newest last (the journal's; policy and estimator unknown there). */
  inbound(limit: number): InboundMigration[];
  /** The undecided inbound migration bringing generation `generation` of `vmId`, while it is still held. */
  inboundPending(vmId: string, generation: bigint): Omit<InboundMigration, "report" | "phase" | "decision" | "updatedNs"> | null;
  /** The journaled record of a received migration (its id is the source's), with its restore report once decided. */
  inboundRecord(migrationId: string, sourceName: string): InboundMigration | null;
  configuredPeers(): PeerInfo[];
}

export interface FeedOptions {
  source: DashboardSource;
  history: RingHistory;
  hub: EventHub;
  scheduler: Scheduler;
  /** How often host clocks and VM summaries are re-sent. */
  tickIntervalNs: bigint;
  /** VMs summarised per tick and in the state event (the rest are counted). */
  vmsShownMax: number;
  /** Samples per VM in the state event. */
  samplesPerVmMax: number;
  /** Migrations of each direction in the state event. */
  migrationsMax: number;
}

const toStr = (v: bigint) => v.toString();

/** One guest sample as the stream carries it: errors against true realtime, vCPU 0's clocks. */
export function sampleEvent(s: GuestSample, epochNs: bigint, hostSkewNs: bigint): Record<string, unknown> {
  const trueRealtimeNs = epochNs + s.trueNs;
  return {
    hostSkewNs: toStr(hostSkewNs),
    vmId: s.vmId,
    daemon: s.daemon,
    generation: toStr(s.generation),
    trueNs: toStr(s.trueNs),
    status: s.bounded.status,
    errorNs: toStr(s.bounded.realtimeNs - trueRealtimeNs),
    earliestErrorNs: toStr(s.bounded.earliestNs - trueRealtimeNs),
    latestErrorNs: toStr(s.bounded.latestNs - trueRealtimeNs),
    tsc0: s.tsc[0] !== undefined ? toStr(s.tsc[0]) : null,
    kvmclock0Ns: s.kvmclockNs[0] !== undefined ? toStr(s.kvmclockNs[0]) : null,
  };
}

/** A VM's summary: what a card shows besides its plot; `last` is its latest sample event, if any. */
export function vmEvent(v: VmPeek, last: Record<string, unknown> | undefined): Record<string, unknown> {
  return {
    id: v.id,
    generation: toStr(v.generation),
    role: v.role,
    running: v.running,
    vcpus: v.vcpus,
    guestTscKhz: toStr(v.guestTscKhz),
    clocksource: v.clocksource,
    ntp: { status: v.ntp.status, maxerrorUs: toStr(v.ntp.maxerrorUs), esterrorUs: toStr(v.ntp.esterrorUs), synchronized: (v.ntp.status & 0x40) === 0 },
    bounded:
      v.running && last !== undefined && last.generation === toStr(v.generation)
        ? { status: last.status, errorNs: last.errorNs, earliestErrorNs: last.earliestErrorNs, latestErrorNs: last.latestErrorNs, trueNs: last.trueNs }
        : { status: v.running ? "unknown" : "stopped" },
    handledMigrations: toStr(v.handledMigrations),
    stoppedVcpus: v.stoppedVcpus,
    vcpusRead: v.vcpusRead,
    vmclock: { disruptionMarker: toStr(v.vmclock.disruptionMarker), clockStatus: v.vmclock.clockStatus, seqCount: v.vmclock.seqCount },
    migrating: v.migrating,
  };
}

/** A sourced migration: its report as the control API serves it. */
export function outboundEvent(r: MigrationReport): Record<string, unknown> {
  return { direction: "out", ...(encodeJson(migrationReportCodec, r, BOUNDARY.api) as Record<string, unknown>) };
}

/**
 * A received migration. The destination does not see the source's pause: it shows the blackout as
 * it estimated it (ending at its resume), and the phases it measured itself.
 */
export function inboundEvent(m: InboundMigration): Record<string, unknown> {
  const r = m.report;
  return {
    direction: "in",
    migrationId: m.migrationId,
    vmId: m.vmId,
    source: m.sourceName ?? m.sourceGrpc,
    sourceGrpc: m.sourceGrpc,
    policy: m.policy ?? null,
    estimator: m.estimator ?? null,
    doorbell: m.doorbell ?? null,
    phase: m.phase,
    outcome: m.decision === "committed" ? "committed" : m.decision === "aborted" ? "aborted" : "pending",
    generation: toStr(m.generation),
    updatedNs: toStr(m.updatedNs),
    ...(r
      ? {
          resumeTrueNs: toStr(r.resumeTrueNs),
          transferReceivedTrueNs: toStr(r.transferReceivedTrueNs),
          estimatedBlackoutNs: toStr(r.estimatedBlackoutNs),
          advancedNs: toStr(r.advancedNs),
          errorBoundNs: toStr(r.errorBoundNs),
          capped: r.capped,
          doorbellRung: r.doorbellRung,
          disruptionMarker: toStr(r.disruptionMarker),
          stoppedVcpus: r.stoppedVcpus,
          phases: { decodeNs: toStr(r.decodeNs), restoreNs: toStr(r.restoreNs) },
        }
      : {}),
  };
}

function hostEvent(h: HostView): Record<string, unknown> {
  return {
    name: h.name,
    grpc: h.grpc,
    trueNs: toStr(h.trueNs),
    epochNs: toStr(h.epochNs),
    realtimeNs: toStr(h.realtimeNs),
    skewNs: toStr(h.skewNs),
    maxerrorNs: toStr(h.maxerrorNs),
    skewModel: h.skewModel,
    tscKhz: toStr(h.tscKhz),
    vendor: h.vendor,
    fracBits: h.fracBits,
    tscScaling: h.tscScaling,
  };
}

/**
 * Feeds the hub from the recorder and a slow tick, and answers the state event. Received migrations
 * are remembered here with what only the undecided Prepare carried (policy, estimator, source name),
 * since the journal keeps none of it.
 */
export class DashboardFeed implements HistorySink {
  private readonly inboundSeen: InboundMigration[] = [];
  /** Recent samples of each VM as sent, for the state event (bounded: `vmsShownMax` VMs). */
  private readonly recent = new Map<string, Record<string, unknown>[]>();
  /** This host's skew over time, as the ticks and changes saw it. */
  private readonly hostSeries: Record<string, string>[] = [];
  private readonly pendingIn = new Map<string, Omit<InboundMigration, "report" | "phase" | "decision" | "updatedNs">>();
  private peersKey = "";
  /**
   * The sources of the last `migrationsMax` migrations received (oldest first): read from the
   * journal once, then kept as migrations arrive. Asking the journal after every migration read its
   * last hundred records each time (~0.7 ms on SQLite, twice a migration at hundreds a second).
   */
  private fromSources: Map<string, PeerInfo> | null = null;
  private timer: Timer | null = null;
  private unsubscribe: (() => void) | null = null;
  private stopped = false;

  constructor(private readonly o: FeedOptions) {}

  start(): void {
    this.unsubscribe = this.o.history.subscribe(this);
    this.tick();
  }

  stop(): void {
    this.stopped = true;
    this.unsubscribe?.();
    this.timer?.cancel();
  }

  sample(s: GuestSample): void {
    const ev = sampleEvent(s, this.o.source.epochNs, this.o.source.skewNsAt(s.trueNs));
    this.remember(s.vmId, ev);
    this.o.hub.publish("sample", ev);
  }

  private remember(vmId: string, ev: Record<string, unknown>): void {
    let ring = this.recent.get(vmId);
    if (!ring) {
      if (this.recent.size >= this.o.vmsShownMax) {
        // Make room by forgetting a VM that left; with none, this one is not kept.
        const present = new Set(this.o.source.vmIds());
        const gone = [...this.recent.keys()].find((id) => !present.has(id));
        if (gone === undefined) return;
        this.recent.delete(gone);
      }
      this.recent.set(vmId, (ring = []));
    }
    ring.push(ev);
    if (ring.length > this.o.samplesPerVmMax) ring.splice(0, ring.length - this.o.samplesPerVmMax);
  }

  private noteHost(h: HostView): Record<string, unknown> {
    this.hostSeries.push({ trueNs: toStr(h.trueNs), skewNs: toStr(h.skewNs), maxerrorNs: toStr(h.maxerrorNs) });
    if (this.hostSeries.length > this.o.samplesPerVmMax) this.hostSeries.shift();
    return hostEvent(h);
  }

  event(e: HistoryEvent): void {
    switch (e.kind) {
      case "run":
        this.noteAdoption(e.vmId, e.generation);
        this.publishVm(e.vmId);
        return;
      case "stop":
        this.publishVm(e.vmId);
        return;
      case "handled":
        this.o.hub.publish("guest", { vmId: e.vmId, trueNs: toStr(e.trueNs), via: e.via, marker: toStr(e.marker), mode: e.mode, handledCount: toStr(e.handledCount), widenedByNs: toStr(e.widenedByNs) });
        this.publishVm(e.vmId);
        return;
      case "migration": {
        const reports = this.o.source.outbound();
        let r: MigrationReport | undefined;
        for (let i = reports.length - 1; i >= 0 && r === undefined; i--) if (reports[i]?.migrationId === e.migrationId) r = reports[i];
        if (r) this.o.hub.publish("migration", outboundEvent(r));
        if (this.o.source.peekVm(e.vmId) === null) this.o.hub.publish("vm-gone", { id: e.vmId, migrationId: e.migrationId, destination: e.destination });
        else this.publishVm(e.vmId);
        this.publishPeersIfChanged();
        return;
      }
      case "fault":
        return;
    }
  }

  /**
   * A VM started running: if a migration brought it, remember what its Prepare said now (it leaves
   * memory when decided), and publish the decided record once the journal holds it — it is written
   * in the same synchronous turn, after this event, so a microtask later.
   */
  private noteAdoption(vmId: string, generation: bigint): void {
    const pending = this.o.source.inboundPending(vmId, generation);
    if (!pending) return;
    this.pendingIn.set(pending.migrationId, pending);
    queueMicrotask(() => {
      if (this.stopped) return;
      const rec = this.o.source.inboundRecord(pending.migrationId, pending.sourceName ?? "");
      this.pendingIn.delete(pending.migrationId);
      if (!rec) return;
      const full: InboundMigration = { ...rec, ...pending, report: rec.report, phase: rec.phase, decision: rec.decision, updatedNs: rec.updatedNs } as InboundMigration;
      this.inboundSeen.push(full);
      if (this.inboundSeen.length > this.o.migrationsMax) this.inboundSeen.shift();
      if (this.fromSources !== null) this.noteSource(this.fromSources, full);
      this.o.hub.publish("migration", inboundEvent(full));
      this.publishPeersIfChanged();
    });
  }

  private publishVm(id: string): void {
    const v = this.o.source.peekVm(id);
    if (v) this.o.hub.publish("vm", vmEvent(v, this.recent.get(id)?.at(-1)));
  }

  private tick(): void {
    if (this.stopped) return;
    const host = this.noteHost(this.o.source.host());
    if (this.o.hub.streamCount > 0) {
      this.o.hub.publish("host", host);
      for (const id of this.o.source.vmIds().slice(0, this.o.vmsShownMax)) this.publishVm(id);
    }
    this.timer = this.o.scheduler.after(this.o.tickIntervalNs, () => this.tick());
  }

  /** Skew just changed through the API: show it now rather than at the next tick. */
  hostChanged(): void {
    this.o.hub.publish("host", this.noteHost(this.o.source.host()));
  }

  peers(): PeerInfo[] {
    const out = new Map<string, PeerInfo>();
    for (const p of this.o.source.configuredPeers()) out.set(p.grpc, p);
    for (const r of this.o.source.outbound()) if (!out.has(r.destination)) out.set(r.destination, { name: r.destination, grpc: r.destination, via: "migrated-to" });
    for (const p of this.sources().values()) if (!out.has(p.grpc)) out.set(p.grpc, p);
    return [...out.values()];
  }

  private sources(): Map<string, PeerInfo> {
    if (this.fromSources === null) {
      const from = new Map<string, PeerInfo>();
      for (const m of this.inbound()) if (m.decision === "committed") this.noteSource(from, m);
      this.fromSources = from;
    }
    return this.fromSources;
  }

  /** `m`'s source, now the newest of `from` (the oldest leaves past `migrationsMax`). */
  private noteSource(from: Map<string, PeerInfo>, m: InboundMigration): void {
    if (m.sourceGrpc === "") return; // a fence of a migration never seen here names no address
    from.delete(m.sourceGrpc);
    from.set(m.sourceGrpc, { name: m.sourceName ?? m.sourceGrpc, grpc: m.sourceGrpc, via: "migrated-from" });
    if (from.size > this.o.migrationsMax) from.delete(from.keys().next().value as string);
  }

  private publishPeersIfChanged(): void {
    const peers = this.peers();
    const key = JSON.stringify(peers);
    if (key === this.peersKey) return;
    this.peersKey = key;
    this.o.hub.publish("peers", { peers });
  }

  /** Received migrations: the journal's, with what this feed saw of their Prepare laid over them. */
  private inbound(): InboundMigration[] {
    const seen = new Map(this.inboundSeen.map((m) => [m.migrationId, m]));
    return this.o.source.inbound(this.o.migrationsMax).map((m) => seen.get(m.migrationId) ?? m);
  }

  /** The `state` event: everything a fresh viewer needs before the deltas. */
  state(): Record<string, unknown> {
    const host = this.o.source.host();
    const ids = this.o.source.vmIds();
    const samples = [...this.recent.values()].flat();
    const guestEvents = this.o.history.events.filter((e) => e.kind === "handled").slice(-200);
    return {
      host: hostEvent(host),
      vms: ids.slice(0, this.o.vmsShownMax).flatMap((id) => {
        const v = this.o.source.peekVm(id);
        return v ? [vmEvent(v, this.recent.get(id)?.at(-1))] : [];
      }),
      vmCount: ids.length,
      samples,
      hostSeries: this.hostSeries,
      guest: guestEvents.map((e) => (e.kind === "handled" ? { vmId: e.vmId, trueNs: toStr(e.trueNs), via: e.via, marker: toStr(e.marker), mode: e.mode } : {})),
      migrations: [...this.o.source.outbound().slice(-this.o.migrationsMax).map(outboundEvent), ...this.inbound().map(inboundEvent)],
      peers: this.peers(),
    };
  }
}
