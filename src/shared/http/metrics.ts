// Prometheus metrics of one daemon, in a registry of its own (never prom-client's global one), so two
// daemons in one process, or many apps in one test run, never share a counter.
//
// The project's own metrics are named tscmig_*. prom-client's default process and Node.js metrics
// (process_cpu_seconds_total, nodejs_eventloop_lag_seconds, ...) keep their standard names, so
// the usual Node.js dashboards and alerts work on them unchanged. deploy/grafana/tscmig.json charts
// both; test/unit/metrics.test.ts checks that it queries only what a daemon exposes.

import type { FastifyInstance } from "fastify";
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import { buildInfo } from "../build-info.js";
import { errorResponses } from "./json-schemas.js";

export type MigrationOutcome = "committed" | "aborted" | "refused" | "in-doubt";

/** The phases of a migration the source times (MigrationReport.phases), as the `phase` label. */
export const PHASES = ["capture", "encode", "transfer", "decode", "restore", "commit"] as const;
export type Phase = (typeof PHASES)[number];

type MigrationLabels = "policy" | "estimator";

export interface Metrics {
  registry: Registry;
  /** Migrations this daemon sourced, by outcome, policy and estimator. */
  migrationsTotal: Counter<"outcome" | MigrationLabels>;
  /** True blackout (source pause to destination resume), seconds. */
  blackoutSeconds: Histogram<MigrationLabels>;
  /** |error| a migration introduced into guest time (I3), seconds. */
  introducedErrorSeconds: Histogram<MigrationLabels>;
  /** The error bound the restore reported, seconds. */
  errorBoundSeconds: Histogram<MigrationLabels>;
  /** |introduced error| / reported bound: above 1 the bound did not hold. */
  errorToBoundRatio: Histogram<MigrationLabels>;
  /** Committed migrations whose introduced error exceeded the reported bound. */
  boundExceededTotal: Counter<MigrationLabels>;
  /** Each timed phase of a migration, seconds. */
  phaseSeconds: Histogram<"phase">;
  vms: Gauge;
  vcpus: Gauge;
  /** This host's realtime offset from true time, seconds (injected skew). */
  hostSkewSeconds: Gauge;
  /** The error bound this host claims for its realtime (maxerror), seconds. */
  hostMaxerrorSeconds: Gauge;
  buildInfo: Gauge<"version" | "node">;
  /** What the scrape-time gauges read (bindScrapeGauges); they keep their last value while unset. */
  scrape: { read?: () => ScrapeReading };
}

export interface ScrapeReading {
  vms: number;
  vcpus: number;
  skewNs: bigint;
  maxerrorNs: bigint;
}

/** 1, 2.5, 5 per decade from 10^fromExp to 10^toExp, written as decimals so each bound is exact. */
function decades(fromExp: number, toExp: number): number[] {
  const bounds: number[] = [];
  for (let exp = fromExp; exp < toExp; exp++) for (const m of ["1", "2.5", "5"]) bounds.push(Number(`${m}e${exp}`));
  bounds.push(Number(`1e${toExp}`));
  return bounds;
}

export interface MetricsOptions {
  /** prom-client's process and Node.js metrics (default true; tests that build many apps turn them off). */
  defaultMetrics?: boolean;
}

export function createMetrics(opts: MetricsOptions = {}): Metrics {
  const registry = new Registry();
  const registers = [registry];
  if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: registry });
  const labelNames = ["policy", "estimator"] as const;
  const info = new Gauge({ name: "tscmig_build_info", help: "Always 1: the version of tscmig and of Node.js this daemon runs.", labelNames: ["version", "node"] as const, registers });
  info.set({ version: buildInfo().version, node: buildInfo().node }, 1);
  const scrape: Metrics["scrape"] = {};
  const atScrape = (name: string, help: string, value: (r: ScrapeReading) => number) =>
    new Gauge({
      name,
      help,
      registers,
      collect() {
        const r = scrape.read?.();
        if (r !== undefined) this.set(value(r));
      },
    });
  return {
    scrape,
    registry,
    migrationsTotal: new Counter({ name: "tscmig_migrations_total", help: "Migrations this daemon sourced, by outcome, policy and estimator.", labelNames: ["outcome", ...labelNames] as const, registers }),
    blackoutSeconds: new Histogram({
      name: "tscmig_migration_blackout_seconds",
      help: "True blackout of a committed migration: source pause to destination resume.",
      labelNames,
      buckets: decades(-4, 2), // 100 µs .. 100 s
      registers,
    }),
    introducedErrorSeconds: new Histogram({
      name: "tscmig_migration_introduced_error_seconds",
      help: "Absolute error a committed migration introduced into guest time at resume.",
      labelNames,
      buckets: decades(-6, 1), // 1 µs .. 10 s
      registers,
    }),
    errorBoundSeconds: new Histogram({
      name: "tscmig_migration_error_bound_seconds",
      help: "Error bound a committed migration's restore reported.",
      labelNames,
      buckets: decades(-6, 1),
      registers,
    }),
    errorToBoundRatio: new Histogram({
      name: "tscmig_migration_error_to_bound_ratio",
      help: "Introduced error divided by the reported bound; above 1 the bound did not hold.",
      labelNames,
      buckets: [0.01, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 5, 10, 100],
      registers,
    }),
    boundExceededTotal: new Counter({ name: "tscmig_migration_bound_exceeded_total", help: "Committed migrations whose introduced error exceeded the reported bound.", labelNames, registers }),
    phaseSeconds: new Histogram({
      name: "tscmig_migration_phase_seconds",
      help: `Duration of each timed phase of a migration (${PHASES.join(", ")}); transfer is the source's round trip.`,
      labelNames: ["phase"] as const,
      buckets: decades(-6, 1),
      registers,
    }),
    vms: atScrape("tscmig_vms", "VMs this daemon runs.", (r) => r.vms),
    vcpus: atScrape("tscmig_vcpus", "vCPUs of the VMs this daemon runs.", (r) => r.vcpus),
    hostSkewSeconds: atScrape("tscmig_host_skew_seconds", "This host's realtime offset from true time (injected skew).", (r) => secondsOf(r.skewNs)),
    hostMaxerrorSeconds: atScrape("tscmig_host_maxerror_seconds", "Error bound this host claims for its realtime (maxerror).", (r) => secondsOf(r.maxerrorNs)),
    buildInfo: info,
  };
}

export interface ObservedMigration {
  outcome: MigrationOutcome;
  policy: string;
  estimator: string;
  /** Committed migrations only: what the restore did and what it cost. */
  blackoutNs?: bigint;
  tscErrorNs?: bigint;
  errorBoundNs?: bigint;
  phasesNs?: Partial<Record<Phase, bigint>>;
}

/** Records one finished migration; durations in ns as the model measures them. */
export function observeMigration(metrics: Metrics, m: ObservedMigration): void {
  const labels = { policy: m.policy, estimator: m.estimator };
  metrics.migrationsTotal.inc({ outcome: m.outcome, ...labels });
  if (m.blackoutNs !== undefined) metrics.blackoutSeconds.observe(labels, secondsOf(m.blackoutNs));
  const error = m.tscErrorNs === undefined ? undefined : m.tscErrorNs < 0n ? -m.tscErrorNs : m.tscErrorNs;
  if (error !== undefined) metrics.introducedErrorSeconds.observe(labels, secondsOf(error));
  if (m.errorBoundNs !== undefined) metrics.errorBoundSeconds.observe(labels, secondsOf(m.errorBoundNs));
  if (error !== undefined && m.errorBoundNs !== undefined) {
    metrics.errorToBoundRatio.observe(labels, m.errorBoundNs === 0n ? (error === 0n ? 0 : Number.POSITIVE_INFINITY) : Number(error) / Number(m.errorBoundNs));
    if (error > m.errorBoundNs) metrics.boundExceededTotal.inc(labels);
  }
  for (const phase of PHASES) {
    const ns = m.phasesNs?.[phase];
    if (ns !== undefined && ns > 0n) metrics.phaseSeconds.observe({ phase }, secondsOf(ns));
  }
}

/** Host and VM gauges read at scrape time from `read` (VMs arrive by migration too, not only by API). */
export function bindScrapeGauges(metrics: Metrics, read: () => ScrapeReading): void {
  metrics.scrape.read = read;
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
        operationId: "getMetrics",
        tags: ["operations"],
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
