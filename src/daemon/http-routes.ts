// The control API (docs/operations.md#interfaces) over a TscmigNode: one fastify plugin, a JSON schema on every route,
// 64-bit values as decimal strings both ways. Handlers only translate; the node decides.

import type { FastifyInstance } from "fastify";
import { invalid } from "../shared/errors.js";
import { errorResponses, i64Of, i64String, u64Of, u64String } from "../shared/http/json-schemas.js";
import { bindScrapeGauges, observeMigration, type Metrics } from "../shared/http/metrics.js";
import { toJsonSafe } from "../shared/json-safe.js";
import { LIMITS } from "../shared/limits.js";
import { BOUNDARY, encodeJson } from "../shared/codec.js";
import { historyPageCodec, type RingHistory } from "../shared/history.js";
import { migrationReportCodec } from "../shared/migration/report.js";
import { parseSwitchover, SWITCHOVER_MODES } from "../shared/migration/messages.js";
import { offsetModelToJson } from "../shared/time/offset-model.js";
import type { SkewUpdate } from "../shared/time/skew.js";
import type { MigrationReport } from "../shared/migration/report.js";
import type { TscmigNode } from "./node.js";
import { API_SCHEMAS, ESTIMATORS, ID_PATTERN, POLICIES, ref } from "./api-schemas.js";

// Query values are text (bodies are not coerced, see shared/http/app.ts): a count is a decimal string.
const countString = { type: "string", pattern: "^[0-9]{1,7}$" } as const;
const HISTORY_LIMIT_MAX = 100_000;

function countOf(text: string, field: string, min: number, max: number): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < min || n > max) throw invalid(field, `must be an integer in ${min}..${max}`);
  return n;
}
/** For routes that take no query: a parameter is refused (query.x), not ignored (`?limit=5` on a list pages nothing). */
function refuseQuery(query: unknown): void {
  const name = Object.keys(query as object)[0];
  if (name !== undefined) throw invalid(`query.${name}`, "this route takes no query parameters");
}
const idPattern = ID_PATTERN;
const idParams = { type: "object", properties: { id: { type: "string", pattern: idPattern, description: "VM id" } }, required: ["id"] } as const;

/** `config.fields` (shared/http/error-handler.ts): the node's field names as paths in the request. */
const inBody = (...names: string[]): Record<string, string> => Object.fromEntries(names.map((n) => [n, `body.${n}`]));

export interface RoutesOptions {
  node: TscmigNode;
  metrics: Metrics;
  history: RingHistory;
}

export function reportJson(r: MigrationReport): unknown {
  return encodeJson(migrationReportCodec, r, BOUNDARY.api);
}

export function observeReport(metrics: Metrics, r: MigrationReport): void {
  const committed = r.outcome === "committed" && r.trueBlackoutNs > 0n;
  observeMigration(metrics, {
    outcome: r.outcome,
    policy: r.policy,
    estimator: r.estimator,
    ...(committed ? { blackoutNs: r.trueBlackoutNs, tscErrorNs: r.tscErrorNs, errorBoundNs: r.errorBoundNs } : {}),
    phasesNs: { capture: r.phases.captureNs, encode: r.phases.encodeNs, transfer: r.phases.transferNs, decode: r.phases.decodeNs, restore: r.phases.restoreNs, commit: r.phases.commitNs },
  });
}

export function controlRoutes(app: FastifyInstance, opts: RoutesOptions): void {
  const { node, metrics, history } = opts;
  for (const schema of API_SCHEMAS) app.addSchema(schema);
  const gauges = () => {
    metrics.vms.set(node.listVms().length);
    metrics.vcpus.set(node.vcpuTotal());
  };
  bindScrapeGauges(metrics, () => ({ vms: node.listVms().length, vcpus: node.vcpuTotal(), skewNs: node.host.skew.offsetAt(node.host.trueNs()), maxerrorNs: node.host.skew.state.maxerrorNs }));

  app.post(
    "/v1/vms",
    {
      config: { fields: inBody("id", "vcpus", "guestTscKhz", "clocksource", "migrationHandling", "handlingMode") },
      schema: {
        summary: "Create a VM (its guest boots, enables kvmclock and synchronises NTP)",
        operationId: "createVm",
        tags: ["vms"],
        body: {
          type: "object",
          additionalProperties: false,
          required: ["vcpus"],
          properties: {
            id: { type: "string", pattern: idPattern },
            vcpus: { type: "integer", minimum: 1, maximum: LIMITS.vcpuCountMax },
            guestTscKhz: {
              ...u64String,
              description:
                "Guest TSC rate, kHz. With TSC scaling: 1000 up to one below this host's max_guest_tsc_khz (KVM caps it at 0x7fffffff, so at most 2147483646); without: within ±250 ppm of the host's rate.",
            },
            clocksource: { type: "string", enum: ["tsc", "kvm-clock"] },
            migrationHandling: { type: "boolean" },
            handlingMode: { type: "string", enum: ["ditch", "widen"] },
          },
          examples: [{ id: "web-1", vcpus: 4, clocksource: "kvm-clock" }],
        },
        response: { 201: { ...ref("Vm"), description: "the VM, created and running" }, ...errorResponses },
      },
    },
    async (req, reply) => {
      const b = req.body as { id?: string; vcpus: number; guestTscKhz?: string; clocksource?: "tsc" | "kvm-clock"; migrationHandling?: boolean; handlingMode?: "ditch" | "widen" };
      const h = node.createVm({
        vcpus: b.vcpus,
        ...(b.id !== undefined ? { id: b.id } : {}),
        ...(b.guestTscKhz !== undefined ? { guestTscKhz: u64Of(b.guestTscKhz, "body.guestTscKhz") } : {}),
        ...(b.clocksource !== undefined ? { clocksource: b.clocksource } : {}),
        ...(b.migrationHandling !== undefined ? { migrationHandling: b.migrationHandling } : {}),
        ...(b.handlingMode !== undefined ? { handlingMode: b.handlingMode } : {}),
      });
      gauges();
      return reply.code(201).send(toJsonSafe(node.readVm(h.id, 0)));
    },
  );

  app.get(
    "/v1/vms",
    { schema: { summary: "List VMs", operationId: "listVms", tags: ["vms"], response: { 200: { ...ref("VmList"), description: "every VM this daemon runs" }, ...errorResponses } } },
    async (req) => {
      refuseQuery(req.query);
      return { vms: node.listVms().map((h) => toJsonSafe(node.readVm(h.id, 0))) };
    },
  );

  app.get(
    "/v1/vms/:id",
    {
      config: { fields: { id: "params.id", vcpus: "query.vcpus" } },
      schema: {
        summary: "A VM's clocks now: per-vCPU TSC, kvmclock and pvclock record, NTP state, bounded clock, vmclock page, true time",
        operationId: "getVm",
        tags: ["vms"],
        params: idParams,
        querystring: { type: "object", additionalProperties: false, properties: { vcpus: { ...countString, description: `vCPUs to include, 0..${LIMITS.vcpuCountMax}` } } },
        response: { 200: { ...ref("Vm"), description: "the VM's clocks" }, ...errorResponses },
      },
    },
    async (req) => {
      const { id } = req.params as { id: string };
      const q = req.query as { vcpus?: string };
      return toJsonSafe(node.readVm(id, q.vcpus !== undefined ? countOf(q.vcpus, "query.vcpus", 0, LIMITS.vcpuCountMax) : LIMITS.vcpuCountMax));
    },
  );

  app.delete(
    "/v1/vms/:id",
    {
      config: { fields: { id: "params.id" } },
      schema: {
        summary: "Delete a VM: its guest stops, a tombstone keeps its generation (refused with 409 while it migrates)",
        operationId: "deleteVm",
        tags: ["vms"],
        params: idParams,
        response: { 200: { ...ref("DeletedVm"), description: "the VM is gone" }, ...errorResponses },
      },
    },
    async (req) => {
      const { id } = req.params as { id: string };
      const gone = node.deleteVm(id);
      gauges();
      return { id: gone.id, deleted: true, generation: gone.generation.toString() };
    },
  );

  app.post(
    "/v1/vms/:id/migrate",
    {
      config: { fields: { id: "params.id", ...inBody("destination", "policy", "estimator", "doorbell", "advanceCapNs", "migrationId", "switchover") } },
      schema: {
        summary: "Migrate a VM to another daemon; answers with the migration report (outcome committed, aborted, refused or in-doubt)",
        operationId: "migrateVm",
        tags: ["migrations"],
        params: idParams,
        body: {
          type: "object",
          additionalProperties: false,
          required: ["destination"],
          properties: {
            destination: { type: "string", minLength: 3, maxLength: 256, description: "the destination daemon's gRPC HOST:PORT" },
            policy: { type: "string", enum: POLICIES, description: "how guest time crosses the blackout (default advance)" },
            estimator: { type: "string", enum: ESTIMATORS, description: "how the destination measures the blackout (default one-sided)" },
            doorbell: { type: "boolean", description: "ring the guest's doorbell after the restore" },
            advanceCapNs: { ...u64String, description: "cap of advance-capped, ns (default 1 s)" },
            switchover: {
              type: "string",
              enum: SWITCHOVER_MODES,
              description:
                "when the destination runs the VM (default two-phase: after the source's durable decision). on-receipt: as soon as the snapshot arrives, a shorter blackout; the price is that once the source sent it, it cannot roll back on its own and waits for the destination's word",
            },
            migrationId: { type: "string", pattern: idPattern, description: "default: generated. An id this source already used is refused (409 migration_id_reused): the outcome of an earlier migration is in GET /v1/migrations" },
          },
          examples: [{ destination: "destination:7071", policy: "kvm-realtime", estimator: "probe", doorbell: true }],
        },
        response: { 200: { ...ref("MigrationReport"), description: "the migration report, whatever the outcome" }, ...errorResponses },
      },
    },
    async (req) => {
      const { id } = req.params as { id: string };
      const b = req.body as { destination: string; policy?: string; estimator?: string; doorbell?: boolean; advanceCapNs?: string; migrationId?: string; switchover?: string };
      const report = await node.migrate(id, {
        destination: b.destination,
        ...(b.policy !== undefined ? { policy: b.policy as never } : {}),
        ...(b.estimator !== undefined ? { estimator: b.estimator as never } : {}),
        ...(b.doorbell !== undefined ? { doorbell: b.doorbell } : {}),
        ...(b.advanceCapNs !== undefined ? { advanceCapNs: u64Of(b.advanceCapNs, "body.advanceCapNs") } : {}),
        ...(b.migrationId !== undefined ? { migrationId: b.migrationId } : {}),
        ...(b.switchover !== undefined ? { switchover: parseSwitchover(b.switchover, "body.switchover") } : {}),
      });
      observeReport(metrics, report);
      gauges();
      return reportJson(report);
    },
  );

  app.get(
    "/v1/migrations",
    {
      schema: {
        summary:
          "Recent migrations this daemon sourced (reports, since it started), those it received (from the journal: phase per migration), and every migration not settled yet — undecided, or decided and not yet delivered — with what recovery is doing about it (from the journal, so they show after a restart)",
        operationId: "listMigrations",
        tags: ["migrations"],
        response: { 200: { ...ref("Migrations"), description: "sourced, received and in-doubt migrations" }, ...errorResponses },
      },
    },
    async (req) => {
      refuseQuery(req.query);
      return { migrations: node.reports.map(reportJson), inbound: node.inboundSummary().map((i) => toJsonSafe(i)), inDoubt: node.inDoubt().map((m) => toJsonSafe(m)) };
    },
  );

  const hostJson = () => {
    const h = node.host;
    const s = h.skew.state;
    // One instant for every clock, so realtime − true − skew is the host's epoch exactly (the live harness checks it).
    const t = h.trueNs();
    const info = node.backend.hostInfo; // the VMs' host: the emulated one's, or the machine's under kvm
    return toJsonSafe({
      name: h.info.name,
      tscKhz: info.tscKhz,
      vendor: info.vendor.name,
      fracBits: info.vendor.fracBits,
      tscScaling: info.tscScaling,
      trueNs: t,
      realtimeNs: h.realtimeNsAt(t),
      rawNs: h.rawNsAt(t),
      skewNs: h.skew.offsetAt(t),
      maxerrorNs: s.maxerrorNs,
      skewModel: offsetModelToJson(s.model),
      backend: { name: node.backend.name, ...(node.backend.describe?.() ?? {}) },
    });
  };

  app.get("/v1/host", { schema: { summary: "This host's clocks and skew", operationId: "getHost", tags: ["host"], response: { 200: { ...ref("Host"), description: "the host's clocks" }, ...errorResponses } } }, async () => hostJson());

  app.get(
    "/v1/host/clock",
    { schema: { summary: "The realtime skew injected now (what PUT /v1/host/clock set), with the host's clocks", operationId: "getHostClock", tags: ["host"], response: { 200: { ...ref("Host"), description: "the host's clocks and skew model" }, ...errorResponses } } },
    async () => hostJson(),
  );

  app.put(
    "/v1/host/clock",
    {
      config: { fields: { "*": "body" } },
      schema: {
        summary: "Inject realtime skew now (offset, drift, step, wander, jitter, claimed bound)",
        operationId: "setHostClock",
        tags: ["host"],
        body: {
          type: "object",
          additionalProperties: false,
          minProperties: 1,
          properties: {
            offsetNs: i64String,
            driftPpm: { type: "number", minimum: -LIMITS.driftPpmMax, maximum: LIMITS.driftPpmMax },
            stepNs: i64String,
            wanderAmplitudeNs: u64String,
            wanderPeriodNs: u64String,
            jitterNs: u64String,
            jitterIntervalNs: u64String,
            maxerrorNs: u64String,
            reset: { type: "boolean" },
          },
          examples: [{ offsetNs: "5000000", driftPpm: 20, maxerrorNs: "1000000" }],
        },
        response: { 200: { ...ref("Host"), description: "the host's clocks after the change" }, ...errorResponses },
      },
    },
    async (req) => {
      const b = req.body as Record<string, string | number | boolean | undefined>;
      const u: SkewUpdate = {};
      if (b.offsetNs !== undefined) u.offsetNs = i64Of(b.offsetNs as string, "body.offsetNs");
      if (b.driftPpm !== undefined) u.driftPpm = b.driftPpm as number;
      if (b.stepNs !== undefined) u.stepNs = i64Of(b.stepNs as string, "body.stepNs");
      if (b.wanderAmplitudeNs !== undefined) u.wanderAmplitudeNs = u64Of(b.wanderAmplitudeNs as string, "body.wanderAmplitudeNs");
      if (b.wanderPeriodNs !== undefined) u.wanderPeriodNs = u64Of(b.wanderPeriodNs as string, "body.wanderPeriodNs");
      if (b.jitterNs !== undefined) u.jitterNs = u64Of(b.jitterNs as string, "body.jitterNs");
      if (b.jitterIntervalNs !== undefined) u.jitterIntervalNs = u64Of(b.jitterIntervalNs as string, "body.jitterIntervalNs");
      if (b.maxerrorNs !== undefined) u.maxerrorNs = u64Of(b.maxerrorNs as string, "body.maxerrorNs");
      if (b.reset !== undefined) u.reset = b.reset as boolean;
      if (Object.keys(u).length === 0) throw invalid("body", "no change given");
      node.setSkew(u);
      return hostJson();
    },
  );

  app.get(
    "/v1/history",
    {
      schema: {
        summary: "Recorded guest samples and events (the live checker's input), newest last",
        operationId: "getHistory",
        tags: ["history"],
        querystring: { type: "object", additionalProperties: false, properties: { sinceNs: u64String, limit: { ...countString, description: "1..100000" } } },
        response: { 200: { ...ref("History"), description: "samples and events after sinceNs" }, ...errorResponses },
      },
    },
    async (req) => {
      const q = req.query as { sinceNs?: string; limit?: string };
      const since = q.sinceNs !== undefined ? u64Of(q.sinceNs, "query.sinceNs") : 0n;
      const limit = q.limit !== undefined ? countOf(q.limit, "query.limit", 1, HISTORY_LIMIT_MAX) : 10000;
      const page = { samples: history.samples.filter((s) => s.trueNs > since).slice(-limit), events: history.events.filter((e) => e.trueNs > since).slice(-limit) };
      return encodeJson(historyPageCodec, page, BOUNDARY.api);
    },
  );
}

