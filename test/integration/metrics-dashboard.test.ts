// Goal: the Grafana dashboard in deploy/grafana/tscmig.json charts what a daemon really exposes:
// every metric its queries name is on a daemon's /metrics after a migration, every tscmig_ metric a
// daemon exposes is charted, and the metrics carry the labels the dashboard filters on. Method: two
// daemons on loopback, one committed migration under skew, a scrape of the source's /metrics, and
// the metric names read out of every panel's PromQL.

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ROOT, startDaemons, stopAllDaemons } from "../helpers/daemons.js";

interface Panel {
  type: string;
  title: string;
  targets?: { expr: string }[];
}

const dashboard = JSON.parse(readFileSync(join(ROOT, "deploy/grafana/tscmig.json"), "utf8")) as { uid: string; panels: Panel[]; templating: { list: { name: string; query: unknown }[] } };

/** Metric names a PromQL expression reads: identifiers of the exposed families (not functions, labels or keywords). */
function metricNames(expr: string): string[] {
  const withoutLabels = expr.replace(/\{[^}]*\}/g, "{}").replace(/\bby \([^)]*\)/g, "");
  return [...withoutLabels.matchAll(/\b(tscmig_[a-z0-9_]+|process_[a-z0-9_]+|nodejs_[a-z0-9_]+)\b/g)].map((m) => m[1] as string);
}

/** Series names on a /metrics page (histograms appear as _bucket, _sum and _count). */
function exposed(text: string): Set<string> {
  const names = new Set<string>();
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{| )/.exec(line);
    if (m) names.add(m[1] as string);
  }
  return names;
}

afterAll(stopAllDaemons);

describe("the Grafana dashboard", () => {
  const queries = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr })));
  const variableQueries = dashboard.templating.list.flatMap((v) => (typeof v.query === "object" && v.query !== null ? [String((v.query as { query: string }).query)] : []));

  it("is a dashboard with panels that all query something", () => {
    expect(dashboard.uid).toBe("tscmig");
    const charts = dashboard.panels.filter((p) => p.type !== "row");
    expect(charts.length).toBeGreaterThan(8);
    for (const p of charts) expect(p.targets?.length ?? 0, p.title).toBeGreaterThan(0);
  });

  it("queries only metrics a daemon exposes, and charts every tscmig_ metric it exposes", async () => {
    const [src, dst] = await startDaemons({ name: "metrics-src" }, { name: "metrics-dst", env: { TSCMIG_SKEW_OFFSET_NS: "5000000" } });
    await src.api.createVm({ id: "vm-metrics", vcpus: 2 });
    const r = await src.api.migrate("vm-metrics", { destination: dst.grpc, policy: "kvm-realtime", estimator: "wallclock" });
    expect(r.body.outcome, JSON.stringify(r.body)).toBe("committed");
    const res = await fetch(`${src.http}/metrics`);
    const text = await res.text();
    const names = exposed(text);

    const wanted = [...queries.map((q) => q.expr), ...variableQueries];
    const missing = wanted.flatMap((expr) => metricNames(expr).filter((n) => !names.has(n)).map((n) => `${n} (in ${expr})`));
    expect(missing).toEqual([]);
    expect(wanted.flatMap(metricNames).length).toBeGreaterThan(15);

    const charted = new Set(wanted.flatMap(metricNames).map((n) => n.replace(/_(bucket|sum|count)$/, "")));
    const families = [...text.matchAll(/^# TYPE (tscmig_[a-z0-9_]+) /gm)].map((m) => m[1] as string);
    expect(families.filter((f) => !charted.has(f))).toEqual([]);

    // The labels the dashboard filters and groups on, from a real migration.
    expect(text).toMatch(/^tscmig_migrations_total\{outcome="committed",policy="kvm-realtime",estimator="wallclock"\} 1$/m);
    expect(text).toMatch(/^tscmig_migration_bound_exceeded_total\{policy="kvm-realtime",estimator="wallclock"\} 1$/m); // 5 ms of skew, a µs bound
    for (const phase of ["capture", "encode", "transfer", "decode", "restore", "commit"]) expect(text).toContain(`tscmig_migration_phase_seconds_count{phase="${phase}"} 1`);
    expect(text).toMatch(/^tscmig_vms 0$/m); // the VM left
    const dstText = await (await fetch(`${dst.http}/metrics`)).text();
    expect(dstText).toMatch(/^tscmig_host_skew_seconds 0\.005$/m);
    expect(dstText).toMatch(/^tscmig_vms 1$/m);
    expect(dstText).toMatch(/^tscmig_host_maxerror_seconds [0-9.e-]+$/m);
    expect(dstText).toMatch(/^process_cpu_seconds_total [0-9.e-]+$/m);
  });
});
