// The spread of several `tscmig bench --json` results (BENCHMARKS.md reports it over five runs):
// one row per run with the figures the targets are judged on, then the range of each
// column. Run it as `node dist/scripts/bench-spread.js run1.json run2.json …`. Reads only the JSON
// the bench wrote (64-bit values as decimal strings); a missing section shows as "-".

import { fmtNs, table } from "./stats.js";

type Json = Record<string, unknown>;

/** One column: its title and how to read it from a result (undefined: absent in that run). */
interface Column {
  title: string;
  read: (r: Json) => number | undefined;
  format: (x: number) => string;
}

const at = (r: unknown, ...path: string[]): unknown => path.reduce<unknown>((o, k) => (o !== null && typeof o === "object" ? (o as Json)[k] : undefined), r);
const num = (v: unknown): number | undefined => (typeof v === "number" ? v : typeof v === "string" && /^-?\d+(\.\d+)?$/.test(v) ? Number(v) : undefined);
const ns = (x: number) => fmtNs(BigInt(Math.round(x)));
const times = (x: number) => `${x.toFixed(2)}×`;

/** A target's measured ratio, as `targets` printed it ("2.15×"). */
function targetRatio(r: Json, prefix: string): number | undefined {
  const t = (at(r, "targets") as { name: string; value: string }[] | undefined)?.find((x) => x.name.startsWith(prefix));
  return t ? num(t.value.replace(/×$/, "")) : undefined;
}

export const SPREAD_COLUMNS: readonly Column[] = [
  { title: "bare gRPC p50", read: (r) => num(at(r, "baseline", "grpcBare", "p50Ns")), format: ns },
  { title: "Ping p50", read: (r) => num(at(r, "baseline", "grpcUnary", "p50Ns")), format: ns },
  { title: "1 vCPU p50", read: (r) => num(at(r, "blackout", "1", "p50Ns")), format: ns },
  { title: "p50/bare", read: (r) => targetRatio(r, "1 vCPU blackout p50"), format: times },
  { title: "p50/Ping", read: (r) => num(at(r, "blackout", "1", "ratios", "p50ToPing")), format: times },
  { title: "1024 p50", read: (r) => num(at(r, "blackout", "1024", "p50Ns")), format: ns },
  { title: "one-sided p99 +1s", read: (r) => num(at(r, "error", "one-sided", "+1s", "p99Ns")), format: ns },
  { title: "one-sided p99 −1s", read: (r) => num(at(r, "error", "one-sided", "-1s", "p99Ns")), format: ns },
  { title: "probe p99 +1s", read: (r) => num(at(r, "error", "probe", "+1s", "p99Ns")), format: ns },
  { title: "probe p99 −1s", read: (r) => num(at(r, "error", "probe", "-1s", "p99Ns")), format: ns },
  { title: "outside bound", read: outsideBound, format: (x) => String(x) },
  { title: "sim /s", read: (r) => num(at(r, "sim", "migrationsPerSec")), format: (x) => x.toFixed(0) },
];

/** one-sided and probe migrations outside their bound, every skew. */
function outsideBound(r: Json): number | undefined {
  const cells = ["one-sided", "probe"].flatMap((e) => Object.values((at(r, "error", e) ?? {}) as Record<string, Json>));
  return cells.length === 0 ? undefined : cells.reduce((n, c) => n + (num(c.outsideBound) ?? 0), 0);
}

/** The table: one row per run, then min–max of each column over the runs that have it. */
export function renderSpread(runs: readonly { name: string; result: Json }[]): string {
  const rows: string[][] = [["run", ...SPREAD_COLUMNS.map((c) => c.title)]];
  for (const { name, result } of runs) rows.push([name, ...SPREAD_COLUMNS.map((c) => cell(c, c.read(result)))]);
  rows.push([
    `range (${runs.length} runs)`,
    ...SPREAD_COLUMNS.map((c) => {
      const xs = runs.map((r) => c.read(r.result)).filter((x): x is number => x !== undefined && Number.isFinite(x));
      return xs.length === 0 ? "-" : `${c.format(Math.min(...xs))} – ${c.format(Math.max(...xs))}`;
    }),
  ]);
  return table(rows);
}

function cell(c: Column, x: number | undefined): string {
  return x === undefined || !Number.isFinite(x) ? "-" : c.format(x);
}
