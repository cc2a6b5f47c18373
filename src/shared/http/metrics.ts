// Prometheus metrics of one daemon, in a registry of its own (never prom-client's global one), so two
// daemons in one process, or many apps in one test run, never share a counter.

import type { FastifyInstance } from "fastify";
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { errorResponses } from "./json-schemas.js";

export type MigrationOutcome = "committed" | "aborted" | "refused" | "in-doubt";

export interface Metrics {
  registry: Registry;
  /** Migrations this daemon took part in, by outcome. */
  migrationsTotal: Counter<"outcome">;
  /** True blackout (source pause to destination resume), seconds. */
  blackoutSeconds: Histogram;
  /** |error| a migration introduced into guest time (I3), seconds. */
  introducedErrorSeconds: Histogram;
  vms: Gauge;
  vcpus: Gauge;
}

/** 1, 2.5, 5 per decade from 10^fromExp to 10^toExp, written as decimals so each bound is exact. */
function decades(fromExp: number, toExp: number): number[] {
  const bounds: number[] = [];
  for (let exp = fromExp; exp < toExp; exp++) for (const m of ["1", "2.5", "5"]) bounds.push(Number(`${m}e${exp}`));
  bounds.push(Number(`1e${toExp}`));
  return bounds;
}

export function createMetrics(): Metrics {
  const registry = new Registry();
  const registers = [registry];
  return {
    registry,
    migrationsTotal: new Counter({ name: "migrations_total", help: "Migrations by outcome.", labelNames: ["outcome"] as const, registers }),
    blackoutSeconds: new Histogram({
      name: "migration_blackout_seconds",
      help: "True blackout of a migration: source pause to destination resume.",
      buckets: decades(-4, 2), // 100 µs .. 100 s
      registers,
    }),
    introducedErrorSeconds: new Histogram({
      name: "migration_introduced_error_seconds",
      help: "Absolute error a migration introduced into guest time at resume.",
      buckets: decades(-6, 1), // 1 µs .. 10 s
      registers,
    }),
    vms: new Gauge({ name: "vms", help: "VMs this daemon runs.", registers }),
    vcpus: new Gauge({ name: "vcpus", help: "vCPUs of the VMs this daemon runs.", registers }),
  };
}

/** Records one finished migration; durations in ns as the model measures them. */
export function observeMigration(metrics: Metrics, m: { outcome: MigrationOutcome; blackoutNs?: bigint; introducedErrorNs?: bigint }): void {
  metrics.migrationsTotal.inc({ outcome: m.outcome });
  if (m.blackoutNs !== undefined) metrics.blackoutSeconds.observe(secondsOf(m.blackoutNs));
  if (m.introducedErrorNs !== undefined) metrics.introducedErrorSeconds.observe(secondsOf(m.introducedErrorNs < 0n ? -m.introducedErrorNs : m.introducedErrorNs));
}

function secondsOf(ns: bigint): number {
  return Number(ns) / 1e9;
}

/** `GET /metrics`, Prometheus text, open without the token. */
export function metricsRoutes(app: FastifyInstance, metrics: Metrics): void {
  app.get(
    "/metrics",
    {
      config: { public: true },
      schema: {
        summary: "Prometheus metrics",
        produces: [metrics.registry.contentType],
        security: [],
        response: { 200: { type: "string", description: "Prometheus text exposition format" }, ...errorResponses },
      },
    },
    async (_request, reply) => {
      void reply.type(metrics.registry.contentType);
      return metrics.registry.metrics();
    },
  );
}
