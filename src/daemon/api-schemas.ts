// The named schemas of the control API: what each route answers, as components of the OpenAPI
// document (GET /openapi.json) and as the response serializers. 64-bit values are decimal strings.
// Objects stay open (additionalProperties) so a field added to the model is served, not dropped;
// the fields named here are the documented contract, checked against real answers by
// test/integration/openapi.test.ts.

import { LIMITS } from "../shared/limits.js";
import { type MigrationReport, migrationReportCodec, type PhaseTimings } from "../shared/migration/report.js";
import { type FieldDoc, i64String, schemaOf, u64String } from "../shared/http/json-schemas.js";
import { PATH_PARAM_CHARS_MAX } from "../shared/http/app.js";

const u64 = (description: string, example?: string) => ({ ...u64String, description, ...(example !== undefined ? { examples: [example] } : {}) });
const i64 = (description: string, example?: string) => ({ ...i64String, description, ...(example !== undefined ? { examples: [example] } : {}) });

/** A VM or migration id; a VM's id is a path parameter, so the longest one the router takes is the longest allowed. */
export const ID_PATTERN = `^[A-Za-z0-9][A-Za-z0-9._:-]{0,${PATH_PARAM_CHARS_MAX - 1}}$`;
export const POLICIES = ["advance", "kvm-realtime", "freeze", "advance-capped"] as const;
export const ESTIMATORS = ["wallclock", "one-sided", "probe"] as const;

const vcpuClocks = {
  $id: "VcpuClocks",
  type: "object",
  additionalProperties: true,
  required: ["index", "tsc", "kvmclockNs"],
  properties: {
    index: { type: "integer", minimum: 0 },
    tsc: u64("the guest TSC now"),
    tscOffset: i64("TSC offset (KVM_SET_TSC_OFFSET)"),
    ratio: u64("TSC scaling ratio, fixed point with the vendor's fractional bits"),
    kvmclockNs: u64("kvmclock as the guest reads it now, ns"),
    pvclock: { type: "object", additionalProperties: true, description: "the vCPU's pvclock record (version, tscTimestamp, systemTime, tscToSystemMul, tscShift, flags)" },
  },
} as const;

const vm = {
  $id: "Vm",
  type: "object",
  additionalProperties: true,
  description: "A VM and its guest's clocks at the moment of the answer.",
  required: ["id", "generation", "role", "running", "vcpus", "guestTscKhz", "clocksource", "trueNs"],
  properties: {
    id: { type: "string", pattern: ID_PATTERN, examples: ["web-1"] },
    generation: u64("fencing generation, bumped by every migration", "0"),
    role: { type: "string", enum: ["owner", "migrating-out", "staged", "handed-off"] },
    running: { type: "boolean" },
    vcpus: { type: "integer", minimum: 1, maximum: LIMITS.vcpuCountMax, examples: [4] },
    guestTscKhz: u64("guest TSC frequency, kHz", "2500000"),
    clocksource: { type: "string", enum: ["tsc", "kvm-clock"] },
    trueNs: u64("true time of the reading (shared by every daemon of the deployment), ns"),
    kvmNs: u64("the VM's kvmclock (KVM_GET_CLOCK), ns"),
    guestRealtimeNs: u64("the guest's CLOCK_REALTIME, ns since the epoch"),
    ntp: {
      type: "object",
      additionalProperties: true,
      description: "the guest's NTP state (adjtimex)",
      properties: { status: { type: "integer" }, maxerrorUs: u64("maxerror, µs"), esterrorUs: u64("esterror, µs"), synchronized: { type: "boolean" } },
    },
    bounded: {
      type: "object",
      additionalProperties: true,
      description: "the guest's bounded clock: an interval that must contain true time",
      properties: { earliestNs: u64("earliest"), latestNs: u64("latest"), realtimeNs: u64("point estimate"), status: { type: "string" } },
    },
    handledMigrations: u64("migrations the guest noticed and acted on"),
    doorbellsDelivered: { type: "integer", minimum: 0 },
    vmclock: { type: "object", additionalProperties: true, description: "the vmclock page (disruptionMarker, counter period, time...)" },
    migrating: { type: "object", nullable: true, additionalProperties: true, description: "the migration holding the VM, or null" },
    vcpu: { type: "array", items: { $ref: "VcpuClocks#" }, description: "per-vCPU clocks (as many as ?vcpus= asked for; none in lists)" },
  },
} as const;

const vmList = { $id: "VmList", type: "object", additionalProperties: true, required: ["vms"], properties: { vms: { type: "array", items: { $ref: "Vm#" } } } } as const;

const deletedVm = {
  $id: "DeletedVm",
  type: "object",
  required: ["id", "deleted", "generation"],
  properties: {
    id: { type: "string" },
    deleted: { type: "boolean", enum: [true] },
    generation: u64("the tombstone's generation: an id deleted here is never recreated at or below it", "1"),
  },
  examples: [{ id: "web-1", deleted: true, generation: "1" }],
} as const;

/** What the OpenAPI document says of each report field beside its type (the codec's): every field, or it does not compile. */
const REPORT_DOCS: { [K in keyof MigrationReport | keyof PhaseTimings]-?: FieldDoc } = {
  migrationId: { example: "mig-a-a79dda5ce7de4ebc" },
  vmId: { example: "web-1" },
  source: { description: "the source daemon's name" },
  destination: { description: "the destination's gRPC address", example: "destination:7071" },
  policy: {},
  estimator: {},
  switchover: { description: "two-phase: the destination ran the VM after the source's durable decision; on-receipt: as soon as the snapshot arrived (the source could not roll back on its own once it sent it)" },
  outcome: {},
  error: { description: "why it did not commit (code, message, field, reason)" },
  generation: { description: "the VM's generation on the destination" },
  vcpus: {},
  guestTscKhz: { description: "guest TSC frequency, kHz" },
  trueBlackoutNs: { description: "true time from the source's pause to the destination's resume", example: "16729000" },
  estimatedBlackoutNs: { description: "the blackout as the estimator measured it", example: "20292000" },
  advancedNs: { description: "how far the restore advanced guest time" },
  errorBoundNs: { description: "the error bound the restore reported", example: "231067" },
  capped: { description: "advance-capped froze beyond its cap" },
  doorbellRung: {},
  disruptionMarker: { description: "the vmclock disruption marker after the restore" },
  tscAtPause: { description: "vCPU 0's TSC at the pause" },
  tscAtResume: { description: "vCPU 0's TSC at the resume" },
  tscIdealAtResume: { description: "what vCPU 0's TSC would read at the resume had the VM never paused" },
  kvmclockAtPauseNs: { description: "vCPU 0's kvmclock at the pause" },
  kvmclockAtResumeNs: { description: "vCPU 0's kvmclock at the resume" },
  kvmclockIdealAtResumeNs: { description: "vCPU 0's kvmclock at the resume had the VM never paused" },
  tscErrorNs: { description: "introduced error: (tscAtResume − tscIdealAtResume) in ns of guest time", example: "-171363" },
  kvmclockErrorNs: { description: "introduced kvmclock error, ns" },
  stoppedVcpus: { description: "vCPUs that showed PVCLOCK_GUEST_STOPPED at resume" },
  pauseTrueNs: { description: "true time of the pause" },
  resumeTrueNs: { description: "true time of the resume" },
  path: { description: "what carried Transfer and Commit: one Handover call, or the unary calls" },
  transferForwardNs: { description: "the Transfer's forward leg on the shared true clock (diagnostics)" },
  transferBackNs: { description: "the Transfer's return leg (diagnostics)" },
  phases: { description: "each timed phase of the migration, ns (transfer: the source's round trip)" },
  captureNs: { description: "capture" },
  encodeNs: { description: "encode" },
  transferNs: { description: "transfer" },
  decodeNs: { description: "decode" },
  restoreNs: { description: "restore, on the destination's clock: VM created → resumed" },
  commitNs: { description: "commit" },
};

const migrationReport = {
  $id: "MigrationReport",
  ...schemaOf(migrationReportCodec.shape, REPORT_DOCS),
  description: "What a migration did to the guest's time, measured against true time.",
  required: ["migrationId", "vmId", "source", "destination", "policy", "estimator", "outcome"],
} as const;

const inboundMigration = {
  $id: "InboundMigration",
  type: "object",
  additionalProperties: true,
  required: ["migrationId", "vmId", "phase"],
  properties: { migrationId: { type: "string" }, vmId: { type: "string" }, generation: u64("generation the VM arrives at"), phase: { type: "string", examples: ["running"] }, source: { type: "string" } },
} as const;

const migrations = {
  $id: "Migrations",
  type: "object",
  required: ["migrations", "inbound"],
  properties: {
    migrations: { type: "array", items: { $ref: "MigrationReport#" }, description: "recent migrations this daemon sourced" },
    inbound: { type: "array", items: { $ref: "InboundMigration#" }, description: "migrations it received" },
    inDoubt: { type: "array", items: { type: "object", additionalProperties: true }, description: "migrations not settled yet, with what recovery is doing about them" },
  },
  additionalProperties: true,
} as const;

const host = {
  $id: "Host",
  type: "object",
  additionalProperties: true,
  description: "This emulated host's clocks and the skew injected into its realtime.",
  required: ["name", "tscKhz", "trueNs", "realtimeNs", "skewNs", "maxerrorNs"],
  properties: {
    name: { type: "string", examples: ["source"] },
    tscKhz: u64("host TSC frequency, kHz", "2500000"),
    vendor: { type: "string", enum: ["vmx", "svm"] },
    fracBits: { type: "integer", description: "fractional bits of the TSC scaling ratio" },
    tscScaling: { type: "boolean" },
    trueNs: u64("true time now"),
    realtimeNs: u64("this host's CLOCK_REALTIME now, ns since the epoch"),
    rawNs: u64("this host's CLOCK_MONOTONIC_RAW now"),
    skewNs: i64("realtime − true time now", "5000000"),
    maxerrorNs: u64("the error bound this host claims for its realtime", "1000000"),
    skewModel: { type: "object", additionalProperties: true, description: "the skew model: constant, drift, step, wander, jitter, or a sum of them" },
    backend: {
      type: "object",
      additionalProperties: true,
      required: ["name"],
      description: "the hypervisor backend the VMs run on; with kvm, the machine's TSC and whether TSC offsets take effect",
      properties: {
        name: { type: "string", enum: ["emulated", "kvm"] },
        flavour: { type: "string", examples: ["kvm_intel", "kvm_pvm"] },
        tscKhz: u64("the machine's TSC frequency (KVM_GET_TSC_KHZ), kHz", "2294608"),
        tscOffsetRestores: { type: "string", enum: ["in effect", "not in effect"] },
        vms: { type: "integer", description: "real VMs open now" },
      },
    },
  },
} as const;

const history = {
  $id: "History",
  type: "object",
  additionalProperties: true,
  required: ["samples", "events"],
  properties: {
    samples: { type: "array", items: { type: "object", additionalProperties: true }, description: "guest clock samples with true time" },
    events: { type: "array", items: { type: "object", additionalProperties: true, required: ["kind", "trueNs"], properties: { kind: { type: "string" }, trueNs: u64("when") } } },
  },
} as const;

/** The `error` member of an error answer; a failed migration's report carries one too. */
const errorDetail = {
  $id: "ErrorDetail",
  type: "object",
  required: ["code", "message"],
  additionalProperties: true,
  properties: { code: { type: "string" }, message: { type: "string" }, field: { type: "string" }, reason: { type: "string" } },
} as const;

/** Added to the app before the routes that refer to them (`{ $ref: "Vm#" }`). */
export const API_SCHEMAS = [errorDetail, vcpuClocks, vm, vmList, deletedVm, migrationReport, inboundMigration, migrations, host, history] as const;

export const ref = (id: (typeof API_SCHEMAS)[number]["$id"]) => ({ $ref: `${id}#` }) as const;
