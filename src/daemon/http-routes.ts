// The control API of SPEC §4 over a TscmigNode: one fastify plugin, a JSON schema on every route,
// 64-bit values as decimal strings both ways. Handlers only translate; the node decides.

import type { FastifyInstance } from "fastify";
import { invalid } from "../shared/errors.js";
import { errorResponses, i64Of, i64String, u64Of, u64String } from "../shared/http/json-schemas.js";
import { observeMigration, type Metrics } from "../shared/http/metrics.js";
import { toJsonSafe } from "../shared/json-safe.js";
import { LIMITS } from "../shared/limits.js";
import type { RingHistory } from "../shared/history.js";
import { offsetModelToJson } from "../shared/time/offset-model.js";
import type { SkewUpdate } from "../shared/time/skew.js";
import type { MigrationReport } from "../source/migrate-out.js";
import type { TscmigNode } from "./node.js";

const anyObject = { type: "object", additionalProperties: true } as const;
// Query values are text (bodies are not coerced, see shared/http/app.ts): a count is a decimal string.
const countString = { type: "string", pattern: "^[0-9]{1,7}$" } as const;
const HISTORY_LIMIT_MAX = 100_000;

function countOf(text: string, field: string, min: number, max: number): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < min || n > max) throw invalid(field, `must be an integer in ${min}..${max}`);
  return n;
}
const idPattern = "^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$";

/** `config.fields` (shared/http/error-handler.ts): the node's field names as paths in the request. */
const inBody = (...names: string[]): Record<string, string> => Object.fromEntries(names.map((n) => [n, `body.${n}`]));

const vmSummary = {
  type: "object",
  additionalProperties: true,
  properties: {
    id: { type: "string" },
    generation: u64String,
    role: { type: "string" },
    running: { type: "boolean" },
    vcpus: { type: "integer" },
    guestTscKhz: u64String,
    clocksource: { type: "string" },
    trueNs: u64String,
  },
} as const;

export interface RoutesOptions {
  node: TscmigNode;
  metrics: Metrics;
  history: RingHistory;
}

export function reportJson(r: MigrationReport): unknown {
  return toJsonSafe(r);
}

export function observeReport(metrics: Metrics, r: MigrationReport): void {
  observeMigration(metrics, {
    outcome: r.outcome,
    ...(r.outcome === "committed" && r.trueBlackoutNs > 0n ? { blackoutNs: r.trueBlackoutNs, introducedErrorNs: r.tscErrorNs } : {}),
  });
}

export function controlRoutes(app: FastifyInstance, opts: RoutesOptions): void {
  const { node, metrics, history } = opts;
  const gauges = () => {
    metrics.vms.set(node.listVms().length);
    metrics.vcpus.set(node.vcpuTotal());
  };

  app.post(
    "/v1/vms",
    {
      config: { fields: inBody("id", "vcpus", "guestTscKhz", "clocksource", "migrationHandling", "handlingMode") },
      schema: {
        summary: "Create a VM (its guest boots, enables kvmclock and synchronises NTP)",
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
        },
        response: { 201: vmSummary, ...errorResponses },
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
    { schema: { summary: "List VMs", response: { 200: { type: "object", properties: { vms: { type: "array", items: vmSummary } } }, ...errorResponses } } },
    async () => ({ vms: node.listVms().map((h) => toJsonSafe(node.readVm(h.id, 0))) }),
  );

  app.get(
    "/v1/vms/:id",
    {
      config: { fields: { id: "params.id", vcpus: "query.vcpus" } },
      schema: {
        summary: "A VM's clocks now: per-vCPU TSC, kvmclock and pvclock record, NTP state, bounded clock, vmclock page, true time",
        params: { type: "object", properties: { id: { type: "string", pattern: idPattern } }, required: ["id"] },
        querystring: { type: "object", additionalProperties: false, properties: { vcpus: { ...countString, description: `vCPUs to include, 0..${LIMITS.vcpuCountMax}` } } },
        response: { 200: { ...vmSummary, properties: { ...vmSummary.properties, vcpu: { type: "array", items: anyObject } } }, ...errorResponses },
      },
    },
    async (req) => {
      const { id } = req.params as { id: string };
      const q = req.query as { vcpus?: string };
      return toJsonSafe(node.readVm(id, q.vcpus !== undefined ? countOf(q.vcpus, "query.vcpus", 0, LIMITS.vcpuCountMax) : LIMITS.vcpuCountMax));
    },
  );

  app.post(
    "/v1/vms/:id/migrate",
    {
      config: { fields: { id: "params.id", ...inBody("destination", "policy", "estimator", "doorbell", "advanceCapNs", "migrationId") } },
      schema: {
        summary: "Migrate a VM to another daemon; answers with the migration report",
        params: { type: "object", properties: { id: { type: "string", pattern: idPattern } }, required: ["id"] },
        body: {
          type: "object",
          additionalProperties: false,
          required: ["destination"],
          properties: {
            destination: { type: "string", minLength: 3, maxLength: 256, description: "the destination daemon's gRPC HOST:PORT" },
            policy: { type: "string", enum: ["advance", "kvm-realtime", "freeze", "advance-capped"] },
            estimator: { type: "string", enum: ["wallclock", "one-sided", "probe"] },
            doorbell: { type: "boolean" },
            advanceCapNs: u64String,
            migrationId: { type: "string", pattern: idPattern },
          },
        },
        response: { 200: anyObject, ...errorResponses },
      },
    },
    async (req) => {
      const { id } = req.params as { id: string };
      const b = req.body as { destination: string; policy?: string; estimator?: string; doorbell?: boolean; advanceCapNs?: string; migrationId?: string };
      const report = await node.migrate(id, {
        destination: b.destination,
        ...(b.policy !== undefined ? { policy: b.policy as never } : {}),
        ...(b.estimator !== undefined ? { estimator: b.estimator as never } : {}),
        ...(b.doorbell !== undefined ? { doorbell: b.doorbell } : {}),
        ...(b.advanceCapNs !== undefined ? { advanceCapNs: u64Of(b.advanceCapNs, "body.advanceCapNs") } : {}),
        ...(b.migrationId !== undefined ? { migrationId: b.migrationId } : {}),
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
        summary: "Recent migrations this daemon sourced (reports), and those it received since it started (phase per migration id)",
        response: { 200: { type: "object", properties: { migrations: { type: "array", items: anyObject }, inbound: { type: "array", items: anyObject } } }, ...errorResponses },
      },
    },
    async () => ({ migrations: node.reports.map(reportJson), inbound: node.inboundSummary().map((i) => toJsonSafe(i)) }),
  );

  const hostJson = () => {
    const h = node.host;
    const s = h.skew.state;
    return toJsonSafe({
      name: h.info.name,
      tscKhz: h.info.tscKhz,
      vendor: h.info.vendor.name,
      fracBits: h.info.vendor.fracBits,
      tscScaling: h.info.tscScaling,
      trueNs: h.trueNs(),
      realtimeNs: h.realtimeNs(),
      rawNs: h.rawNs(),
      skewNs: h.skew.offsetAt(h.trueNs()),
      maxerrorNs: s.maxerrorNs,
      skewModel: offsetModelToJson(s.model),
    });
  };

  app.get("/v1/host", { schema: { summary: "This host's clocks and skew", response: { 200: anyObject, ...errorResponses } } }, async () => hostJson());

  app.put(
    "/v1/host/clock",
    {
      config: { fields: { "*": "body" } },
      schema: {
        summary: "Inject realtime skew now (offset, drift, step, wander, jitter, claimed bound)",
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
        },
        response: { 200: anyObject, ...errorResponses },
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
        querystring: { type: "object", additionalProperties: false, properties: { sinceNs: u64String, limit: { ...countString, description: "1..100000" } } },
        response: { 200: { type: "object", properties: { samples: { type: "array", items: anyObject }, events: { type: "array", items: anyObject } } }, ...errorResponses },
      },
    },
    async (req) => {
      const q = req.query as { sinceNs?: string; limit?: string };
      const since = q.sinceNs !== undefined ? u64Of(q.sinceNs, "query.sinceNs") : 0n;
      const limit = q.limit !== undefined ? countOf(q.limit, "query.limit", 1, HISTORY_LIMIT_MAX) : 10000;
      return {
        samples: history.samples.filter((s) => s.trueNs > since).slice(-limit).map((s) => toJsonSafe(s)),
        events: history.events.filter((e) => e.trueNs > since).slice(-limit).map((e) => toJsonSafe(e)),
      };
    },
  );
}

