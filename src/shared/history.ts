// What the checker reads (docs/invariants.md): every guest sample and every ownership change,
// stamped with true time. Daemons keep a bounded ring; the simulator records everything.

import type { BoundedNow, HandledEvent } from "./guest/guest.js";
import { arrayOf, bool, type Codec, int, obj, oneOf, optional, pick, str, u64, union } from "./codec.js";
import { type MigrationReport, migrationReportCodec } from "./migration/report.js";

export { MIGRATION_PATHS, type MigrationPath } from "./migration/report.js";

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

/** The fields of a source's report its `migration` event carries, named as the report names them. */
export const MIGRATION_EVENT_FIELDS = [
  "migrationId",
  "vmId",
  "source",
  "destination",
  "outcome",
  "policy",
  "estimator",
  "pauseTrueNs",
  "resumeTrueNs",
  "estimatedBlackoutNs",
  "advancedNs",
  "errorBoundNs",
  "capped",
  "disruptionMarker",
  "tscAtPause",
  "tscAtResume",
  "tscIdealAtResume",
  "kvmclockAtResumeNs",
  "kvmclockIdealAtResumeNs",
  "guestTscKhz",
  "path",
] as const satisfies readonly (keyof MigrationReport)[];

/** A migration as its source reported it (MigrationReport's own fields). */
export type MigrationEvent = { kind: "migration"; trueNs: bigint; hostsHonest: boolean } & Pick<MigrationReport, (typeof MIGRATION_EVENT_FIELDS)[number]>;

export type HistoryEvent =
  | { kind: "run"; trueNs: bigint; daemon: string; vmId: string; generation: bigint }
  | { kind: "stop"; trueNs: bigint; daemon: string; vmId: string; generation: bigint; why: string }
  | ({ kind: "handled"; trueNs: bigint; daemon: string; vmId: string } & HandledEvent)
  | MigrationEvent
  | { kind: "fault"; trueNs: bigint; site: string; detail: string };

/** The `migration` event of a report, recorded at `trueNs`. */
export function migrationEventOf(r: MigrationReport, trueNs: bigint): MigrationEvent {
  const e = { kind: "migration", trueNs, hostsHonest: true } as MigrationEvent;
  for (const k of MIGRATION_EVENT_FIELDS) (e as Record<string, unknown>)[k] = r[k];
  return e;
}

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

// ---- codecs (the control API's GET /v1/history and the chaos history files) -------------------------

const boundedNowCodec = obj<BoundedNow>({
  earliestNs: u64,
  latestNs: u64,
  realtimeNs: u64,
  status: oneOf(["synchronized", "freeRunning", "unknown", "disrupted"] as const),
});

export const guestSampleCodec = obj<GuestSample>({
  trueNs: u64,
  trueSpanNs: optional(u64),
  daemon: str,
  vmId: str,
  generation: u64,
  vcpus: arrayOf(int(0)),
  tsc: arrayOf(u64),
  kvmclockNs: arrayOf(u64),
  bounded: boundedNowCodec,
  guestTscKhz: u64,
});

type Of<K extends HistoryEvent["kind"]> = Extract<HistoryEvent, { kind: K }>;

const kind = <const K extends string>(k: K): Codec<K> => oneOf([k]);

export const historyEventCodec: Codec<HistoryEvent> = union<"kind", HistoryEvent>("kind", {
  run: obj<Of<"run">>({ kind: kind("run"), trueNs: u64, daemon: str, vmId: str, generation: u64 }),
  stop: obj<Of<"stop">>({ kind: kind("stop"), trueNs: u64, daemon: str, vmId: str, generation: u64, why: str }),
  handled: obj<Of<"handled">>({
    kind: kind("handled"),
    trueNs: u64,
    daemon: str,
    vmId: str,
    via: oneOf(["flag", "marker", "doorbell"] as const),
    marker: u64,
    mode: oneOf(["ditch", "widen", "ditch-fallback"] as const),
    handledCount: u64,
    widenedByNs: u64,
  }),
  migration: obj<MigrationEvent>({ kind: kind("migration"), trueNs: u64, hostsHonest: bool, ...pick(migrationReportCodec.fields, MIGRATION_EVENT_FIELDS) }),
  fault: obj<Of<"fault">>({ kind: kind("fault"), trueNs: u64, site: str, detail: str }),
});

/** GET /v1/history's body. */
export interface HistoryPage {
  samples: GuestSample[];
  events: HistoryEvent[];
}

export const historyPageCodec = obj<HistoryPage>({ samples: arrayOf(guestSampleCodec), events: arrayOf(historyEventCodec) });
