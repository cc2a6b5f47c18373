// What one chaos run recorded, as the checker reads it: the product's own history (every guest
// sample and every run/stop/handled/migration event the nodes emitted, stamped with true time) plus
// what only the harness knows — each host's real realtime error and the bound it claimed, which VMs
// were created with what guest configuration, every fault it injected, and the final ownership.
//
// Same seed ⇒ same history, byte for byte: `canonicalLines` writes a run as JSON lines with sorted
// keys and bigints as decimal strings, and `historyHash` is the SHA-256 of those lines
// (FoundationDB's "unseed" check compares exactly this).

import { createHash } from "node:crypto";
import { invalid } from "../shared/errors.js";
import type { GuestSample, HistoryEvent } from "../shared/history.js";
import type { OffsetModel } from "../shared/time/offset-model.js";
import { arrayOf, bool, BOUNDARY, type Codec, custom, float, i64, int, obj, oneOf, pick, recordOf, type Shape, str, u64, union } from "../shared/codec.js";
import { type MigrationReport, migrationReportCodec } from "../shared/migration/report.js";
import { guestSampleCodec, historyEventCodec } from "../shared/history.js";
import { offsetModelToJson, parseOffsetModel } from "../shared/time/offset-model.js";

/** The fields of a source's report the harness can tell of a restore without the source. */
export const RESTORED_FIELDS = [
  "migrationId",
  "vmId",
  "source",
  "destination",
  "capped",
  "pauseTrueNs",
  "resumeTrueNs",
  "estimatedBlackoutNs",
  "errorBoundNs",
  "tscAtResume",
  "tscIdealAtResume",
  "kvmclockAtResumeNs",
  "kvmclockIdealAtResumeNs",
  "guestTscKhz",
] as const satisfies readonly (keyof MigrationReport)[];

/**
 * A committed restore as the destination journaled it, with what the source's VM would have read
 * at that instant had it never paused (sim: the harness keeps the source VM's TSC function from the
 * pause). Covers I3 for migrations whose source never lived to receive the report. Named as the
 * report names them; the policy and estimator are "unknown" where the harness did not start it.
 */
export type RestoredEvent = { kind: "restored"; trueNs: bigint; policy: string; estimator: string } & Pick<MigrationReport, (typeof RESTORED_FIELDS)[number]>;

/** Harness-side facts, interleaved with the nodes' events in true-time order. */
export type HarnessEvent =
  /** From `trueNs` on, `daemon`'s realtime error is `model` (a pure function of true time) and it claims `maxerrorNs`. */
  | { kind: "hostClock"; trueNs: bigint; daemon: string; model: OffsetModel; maxerrorNs: bigint }
  /** A VM was created (its guest configuration travels with it). */
  | {
      kind: "vm";
      trueNs: bigint;
      daemon: string;
      vmId: string;
      vcpus: number;
      guestTscKhz: bigint;
      clocksource: string;
      migrationHandling: boolean;
      handlingMode: string;
    }
  /** The harness asked `source` to migrate `vmId` (the probe window opens here). */
  | { kind: "migrateStart"; trueNs: bigint; vmId: string; source: string; destination: string; policy: string; estimator: string; doorbell: boolean }
  | { kind: "restart"; trueNs: bigint; daemon: string; incarnation: number }
  /**
   * A committed restore as the destination journaled it, with what the source's VM would have read
   * at that instant had it never paused (sim: the harness keeps the source VM's TSC function from the
   * pause). Covers I3 for migrations whose source never lived to receive the report.
   */
  | RestoredEvent
  /**
   * What one restore did to a VM's clocks (I9's input), observed by the harness at the hypervisor
   * seam rather than taken from the restore's own account: where the clocks stopped (the snapshot
   * the restore was handed), what the VM's clocks read once the restore returned (before any vCPU
   * ran), every KVM_SET_CLOCK it issued with the destination's realtime at that ioctl, and, at the
   * VM's first resume, the kvmclock each vCPU's guest computes from its pvclock record and TSC beside
   * KVM's own. Per-vCPU arrays cover the first `RESTORE_VCPUS_RECORDED` vCPUs. `trueNs` is the resume.
   */
  | {
      kind: "restoreClocks";
      trueNs: bigint;
      daemon: string;
      migrationId: string;
      vmId: string;
      generation: bigint;
      policy: string;
      estimator: string;
      capNs: bigint;
      /** The restore's own report: what it estimated and says it advanced. */
      estimatedBlackoutNs: bigint;
      advancedNs: bigint;
      capped: boolean;
      /** The source's TSC rate per recorded vCPU: hostTscKhz · ratio / 2^fracBits kHz. */
      sourceHostTscKhz: bigint;
      sourceFracBits: number;
      sourceRatio: bigint[];
      /** The snapshot: guest TSC per vCPU, the kvmclock the guest read (largest over vCPUs; KVM's without kvmclock), source realtime. */
      stoppedTsc: bigint[];
      stoppedKvmclockNs: bigint;
      stoppedKvmclockSpreadNs: bigint;
      sourceRealtimeNs: bigint;
      /** True instants the restore began and returned, and the destination realtime as it began. */
      restoreStartNs: bigint;
      restoreEndNs: bigint;
      destinationRealtimeNs: bigint;
      /** At restoreEndNs: guest TSC per vCPU, KVM_GET_CLOCK. */
      restoredTsc: bigint[];
      restoredKvmclockNs: bigint;
      setClock: { trueNs: bigint; clockNs: bigint; flags: number; realtimeNs: bigint; destinationRealtimeNs: bigint }[];
      /** At the resume: guest TSC per vCPU; vCPUs with kvmclock on, the guest's pvclock reading of each, and KVM_GET_CLOCK. */
      tscAtResume: bigint[];
      pvclockVcpus: number[];
      pvclockKvmclockNs: bigint[];
      kvmclockAtResumeNs: bigint;
    }
  /**
   * A check that the deployment works again once faults stopped (after a Prepare flood: a real
   * migration to the flooded daemon commits within the recovery bound). Not ok is a violation.
   */
  | { kind: "liveness"; trueNs: bigint; what: string; ok: boolean; attempts: number; detail: string }
  /** Faults stop here; the network heals; I7's bound starts. */
  | { kind: "heal"; trueNs: bigint; recoveryBoundNs: bigint }
  /** End of the recovery bound: where each VM runs, and what was still undecided. */
  | { kind: "final"; trueNs: bigint; owners: { vmId: string; daemons: string[]; generation: string }[]; unresolved: string[] }
  /** Something threw that no daemon should ever throw (a daemon would have died of it). */
  | { kind: "error"; trueNs: bigint; daemon: string; message: string };

export type ChaosEvent = HistoryEvent | HarnessEvent;

export interface DaemonMeta {
  name: string;
  tscKhz: bigint;
  /** Largest |rate error| of this host's TSC crystal (drift + wander), ppm: I8's drift term. */
  crystalSlopePpm: number;
}

export interface ChaosMeta {
  mode: "sim" | "live";
  seed: bigint;
  /** Wall-clock instant of true time 0: true realtime = epochNs + trueNs. */
  epochNs: bigint;
  daemons: DaemonMeta[];
  /** Where guests take NTP from: a reference server (true time ± a bounded error) or their host. */
  ntpSource: "reference" | "host";
  sampleIntervalNs: bigint;
  /** Free-form scenario facts for the report (policies, faults, skew ranges). */
  scenario: Record<string, string | number | boolean>;
}

export interface ChaosHistory {
  meta: ChaosMeta;
  samples: GuestSample[];
  events: ChaosEvent[];
  /** Samples recorded before each event (sim: the exact interleaving); absent in live runs. */
  order?: number[];
}

export function emptyHistory(meta: ChaosMeta): ChaosHistory {
  return { meta, samples: [], events: [] };
}

// ---- canonical form ------------------------------------------------------------------------------

function canon(v: unknown): string {
  switch (typeof v) {
    case "bigint":
      return `"${v.toString()}"`;
    case "string":
      return JSON.stringify(v);
    case "number":
      return Number.isFinite(v) ? JSON.stringify(v) : `"${String(v)}"`;
    case "boolean":
      return v ? "true" : "false";
    case "undefined":
      return "null";
    case "object": {
      if (v === null) return "null";
      if (Array.isArray(v)) return `[${v.map(canon).join(",")}]`;
      const o = v as Record<string, unknown>;
      const keys = Object.keys(o)
        .filter((k) => o[k] !== undefined)
        .sort();
      return `{${keys.map((k) => `${JSON.stringify(k)}:${canon(o[k])}`).join(",")}}`;
    }
    default:
      return `"${String(v)}"`;
  }
}

/** A sample in a fixed field order (the hot path: runs record thousands). */
function canonSample(s: GuestSample): string {
  const b = s.bounded;
  return (
    `{"bounded":{"earliestNs":"${b.earliestNs}","latestNs":"${b.latestNs}","realtimeNs":"${b.realtimeNs}","status":"${b.status}"},` +
    `"daemon":${JSON.stringify(s.daemon)},"generation":"${s.generation}","guestTscKhz":"${s.guestTscKhz}",` +
    `"kvmclockNs":[${s.kvmclockNs.map((x) => `"${x}"`).join(",")}],"trueNs":"${s.trueNs}",` +
    `"tsc":[${s.tsc.map((x) => `"${x}"`).join(",")}],"vcpus":[${s.vcpus.join(",")}],"vmId":${JSON.stringify(s.vmId)}}`
  );
}

/** The run as JSON lines: meta, then every sample, then every event, each with sorted keys. */
export function* canonicalLines(h: ChaosHistory): Generator<string> {
  yield `{"meta":${canon(h.meta)}}`;
  for (const s of h.samples) yield `{"sample":${canonSample(s)}}`;
  for (const e of h.events) yield `{"event":${canon(e)}}`;
  if (h.order) yield `{"order":[${h.order.join(",")}]}`;
}

export function canonicalText(h: ChaosHistory): string {
  let out = "";
  for (const line of canonicalLines(h)) out += `${line}\n`;
  return out;
}

/** SHA-256 (hex) of the canonical form: equal hashes ⇔ byte-identical histories. */
export function historyHash(h: ChaosHistory): string {
  const hash = createHash("sha256");
  for (const line of canonicalLines(h)) {
    hash.update(line);
    hash.update("\n");
  }
  return hash.digest("hex");
}

// ---- codecs (history files) ------------------------------------------------------------------------

type Harness<K extends HarnessEvent["kind"]> = Extract<HarnessEvent, { kind: K }>;

const kind = <const K extends string>(k: K): Codec<K> => oneOf([k]);

const offsetModelCodec = custom<OffsetModel>("offsetModel", (m) => offsetModelToJson(m) as never, (j, at) => parseOffsetModel(j, at));

const restoreClocksCodec = obj<Harness<"restoreClocks">>({
  kind: kind("restoreClocks"),
  trueNs: u64,
  daemon: str,
  migrationId: str,
  vmId: str,
  generation: u64,
  policy: str,
  estimator: str,
  capNs: u64,
  estimatedBlackoutNs: i64,
  advancedNs: i64,
  capped: bool,
  sourceHostTscKhz: u64,
  sourceFracBits: int(0, 64),
  sourceRatio: arrayOf(u64),
  stoppedTsc: arrayOf(u64),
  stoppedKvmclockNs: u64,
  stoppedKvmclockSpreadNs: u64,
  sourceRealtimeNs: i64,
  restoreStartNs: u64,
  restoreEndNs: u64,
  destinationRealtimeNs: i64,
  restoredTsc: arrayOf(u64),
  restoredKvmclockNs: u64,
  setClock: arrayOf(obj<Harness<"restoreClocks">["setClock"][number]>({ trueNs: u64, clockNs: u64, flags: int(0), realtimeNs: i64, destinationRealtimeNs: i64 })),
  tscAtResume: arrayOf(u64),
  pvclockVcpus: arrayOf(int(0)),
  pvclockKvmclockNs: arrayOf(u64),
  kvmclockAtResumeNs: u64,
});

const harnessEventCodec = union<"kind", HarnessEvent>("kind", {
  hostClock: obj<Harness<"hostClock">>({ kind: kind("hostClock"), trueNs: u64, daemon: str, model: offsetModelCodec, maxerrorNs: u64 }),
  vm: obj<Harness<"vm">>({ kind: kind("vm"), trueNs: u64, daemon: str, vmId: str, vcpus: int(0), guestTscKhz: u64, clocksource: str, migrationHandling: bool, handlingMode: str }),
  migrateStart: obj<Harness<"migrateStart">>({ kind: kind("migrateStart"), trueNs: u64, vmId: str, source: str, destination: str, policy: str, estimator: str, doorbell: bool }),
  restart: obj<Harness<"restart">>({ kind: kind("restart"), trueNs: u64, daemon: str, incarnation: int(0) }),
  restored: obj<RestoredEvent>({ kind: kind("restored"), trueNs: u64, policy: str, estimator: str, ...pick(migrationReportCodec.fields, RESTORED_FIELDS) }),
  restoreClocks: restoreClocksCodec,
  liveness: obj<Harness<"liveness">>({ kind: kind("liveness"), trueNs: u64, what: str, ok: bool, attempts: int(0), detail: str }),
  heal: obj<Harness<"heal">>({ kind: kind("heal"), trueNs: u64, recoveryBoundNs: u64 }),
  final: obj<Harness<"final">>({ kind: kind("final"), trueNs: u64, owners: arrayOf(obj<Harness<"final">["owners"][number]>({ vmId: str, daemons: arrayOf(str), generation: str })), unresolved: arrayOf(str) }),
  error: obj<Harness<"error">>({ kind: kind("error"), trueNs: u64, daemon: str, message: str }),
});

const variantsOf = (c: Codec<unknown>): Readonly<Record<string, Shape>> => (c.shape.kind === "union" ? c.shape.variants : {});
const HISTORY_KINDS = Object.keys(variantsOf(historyEventCodec as Codec<unknown>));

/** A node's event or a harness event: told apart by `kind`, each with its own codec. */
export const chaosEventCodec: Codec<ChaosEvent> = {
  shape: { kind: "union", tag: "kind", variants: { ...variantsOf(historyEventCodec as Codec<unknown>), ...variantsOf(harnessEventCodec as Codec<unknown>) } },
  encode: (e, style) => (HISTORY_KINDS.includes(e.kind) ? historyEventCodec.encode(e as HistoryEvent, style) : harnessEventCodec.encode(e as HarnessEvent, style)),
  decode(j, style, at) {
    const k = j !== null && typeof j === "object" ? (j as { kind?: unknown }).kind : undefined;
    return typeof k === "string" && HISTORY_KINDS.includes(k) ? historyEventCodec.decode(j, style, at) : harnessEventCodec.decode(j, style, at);
  },
};

const scenarioValueCodec = custom<string | number | boolean>(
  "scalar",
  (v) => v,
  (j, at) => {
    if (typeof j === "string" || typeof j === "number" || typeof j === "boolean") return j;
    throw invalid(at, "expected a string, number or boolean");
  },
);

export const chaosMetaCodec = obj<ChaosMeta>({
  mode: oneOf(["sim", "live"] as const),
  seed: u64,
  epochNs: i64,
  daemons: arrayOf(obj<DaemonMeta>({ name: str, tscKhz: u64, crystalSlopePpm: float })),
  ntpSource: oneOf(["reference", "host"] as const),
  sampleIntervalNs: u64,
  scenario: recordOf(scenarioValueCodec),
});

/** One line of a history file, read back (`at` names the file and line in errors). */
export function historyLineOf(line: string, h: ChaosHistory, at: string): void {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(line) as Record<string, unknown>;
  } catch {
    throw invalid("history", `${at} is not JSON`);
  }
  const style = BOUNDARY.historyFile;
  if (o === null || typeof o !== "object") throw invalid("history", `${at} is not an object`);
  if ("meta" in o) h.meta = chaosMetaCodec.decode(o.meta, style, `${at}: meta`);
  else if ("sample" in o) h.samples.push(guestSampleCodec.decode(o.sample, style, `${at}: sample`));
  else if ("event" in o) h.events.push(chaosEventCodec.decode(o.event, style, `${at}: event`));
  else if ("order" in o) h.order = arrayOf(int(0)).decode(o.order, style, `${at}: order`);
  else throw invalid("history", `${at} is neither meta, sample, event nor order`);
}

/** JSON-safe copy (bigints as decimal strings) for reports and `--history` dumps. */
export function jsonSafe(v: unknown): unknown {
  return JSON.parse(canon(v)) as unknown;
}
