// What the checker reads (SPEC §1 workload, §3): every guest sample and every ownership change,
// stamped with true time. Daemons keep a bounded ring; the simulator records everything.

import type { BoundedNow, HandledEvent } from "./guest/guest.js";

export interface GuestSample {
  /**
   * The guest read its clock at a true instant in [trueNs, trueNs + trueSpanNs]: a live daemon reads
   * true time before and after the guest's read, and a process can be descheduled in between. The
   * simulator's reads take no time (no span).
   */
  trueNs: bigint;
  trueSpanNs?: bigint;
  daemon: string;
  vmId: string;
  generation: bigint;
  /** Per vCPU (all of them, or the sampled subset in `vcpus`). */
  vcpus: number[];
  tsc: bigint[];
  kvmclockNs: bigint[];
  bounded: BoundedNow;
  guestTscKhz: bigint;
}

/** What carried a migration's Transfer and Commit: one Handover call, or the unary calls. */
export type MigrationPath = "handover" | "unary";
export const MIGRATION_PATHS: readonly MigrationPath[] = ["handover", "unary"];

export type HistoryEvent =
  | { kind: "run"; trueNs: bigint; daemon: string; vmId: string; generation: bigint }
  | { kind: "stop"; trueNs: bigint; daemon: string; vmId: string; generation: bigint; why: string }
  | ({ kind: "handled"; trueNs: bigint; daemon: string; vmId: string } & HandledEvent)
  | {
      kind: "migration";
      trueNs: bigint;
      migrationId: string;
      vmId: string;
      source: string;
      destination: string;
      outcome: string;
      policy: string;
      estimator: string;
      pauseTrueNs: bigint;
      resumeTrueNs: bigint;
      estimatedBlackoutNs: bigint;
      advancedNs: bigint;
      errorBoundNs: bigint;
      capped: boolean;
      marker: bigint;
      /** Guest TSC of vCPU 0 at pause and at resume, and what the source would read at resume. */
      tscAtPause: bigint;
      tscAtResume: bigint;
      tscIdealAtResume: bigint;
      kvmclockAtResume: bigint;
      kvmclockIdealAtResume: bigint;
      guestTscKhz: bigint;
      hostsHonest: boolean;
      path: MigrationPath;
    }
  | { kind: "fault"; trueNs: bigint; site: string; detail: string };

export interface HistorySink {
  sample(s: GuestSample): void;
  event(e: HistoryEvent): void;
}

export const NO_HISTORY: HistorySink = { sample: () => {}, event: () => {} };

/** A bounded in-memory sink (daemons): the latest `max` samples and events. */
export class RingHistory implements HistorySink {
  readonly samples: GuestSample[] = [];
  readonly events: HistoryEvent[] = [];
  private readonly listeners = new Set<HistorySink>();
  constructor(private readonly max: number) {}
  sample(s: GuestSample): void {
    this.samples.push(s);
    if (this.samples.length > this.max) this.samples.splice(0, this.samples.length - this.max);
    for (const l of this.listeners) l.sample(s);
  }
  event(e: HistoryEvent): void {
    this.events.push(e);
    if (this.events.length > this.max) this.events.splice(0, this.events.length - this.max);
    for (const l of this.listeners) l.event(e);
  }
  /**
   * Also hands every later record to `listener` (the live event stream), synchronously, as it is
   * recorded; returns the unsubscribe. A listener must not throw: it runs inside the recorder.
   */
  subscribe(listener: HistorySink): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}
