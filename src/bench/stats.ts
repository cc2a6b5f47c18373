// Order statistics and formatting for the benchmark. Percentiles are nearest-rank on the sorted
// sample (p99 of 50 samples is the 50th value, i.e. the max): no interpolation invents a value
// that was never measured.

export interface Summary {
  count: number;
  minNs: bigint;
  p50Ns: bigint;
  p99Ns: bigint;
  maxNs: bigint;
  meanNs: bigint;
}

export const EMPTY_SUMMARY: Summary = { count: 0, minNs: 0n, p50Ns: 0n, p99Ns: 0n, maxNs: 0n, meanNs: 0n };

function cmp(a: bigint, b: bigint): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Nearest-rank percentile of an ascending sample (`p` in 0..100). */
export function percentile(sorted: readonly bigint[], p: number): bigint {
  if (sorted.length === 0) return 0n;
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1] as bigint;
}

export function summarize(xs: readonly bigint[]): Summary {
  if (xs.length === 0) return EMPTY_SUMMARY;
  const s = [...xs].sort(cmp);
  let total = 0n;
  for (const x of s) total += x;
  return {
    count: s.length,
    minNs: s[0] as bigint,
    p50Ns: percentile(s, 50),
    p99Ns: percentile(s, 99),
    maxNs: s[s.length - 1] as bigint,
    meanNs: total / BigInt(s.length),
  };
}

/** Median of plain numbers (ratios). */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

/** Nearest-rank percentile of plain numbers. */
export function percentileOf(xs: readonly number[], p: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const rank = Math.min(s.length, Math.max(1, Math.ceil((p / 100) * s.length)));
  return s[rank - 1] as number;
}

export function ratio(a: bigint, b: bigint): number {
  return b === 0n ? Number.POSITIVE_INFINITY : Number(a) / Number(b);
}

export function abs(x: bigint): bigint {
  return x < 0n ? -x : x;
}

/** 1.234 ms, 56.7 µs, 890 ns, 1.000 s (sign kept). */
export function fmtNs(ns: bigint): string {
  const a = abs(ns);
  const sign = ns < 0n ? "-" : "";
  if (a >= 1_000_000_000n) return `${sign}${(Number(a) / 1e9).toFixed(3)} s`;
  if (a >= 1_000_000n) return `${sign}${(Number(a) / 1e6).toFixed(2)} ms`;
  if (a >= 1_000n) return `${sign}${(Number(a) / 1e3).toFixed(1)} µs`;
  return `${sign}${a} ns`;
}

export function fmtBytes(n: number): string {
  if (n >= 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(2)} KiB`;
  return `${Math.round(n)} B`;
}

/** A plain-text table: first row is the header; columns padded to their widest cell. */
export function table(rows: readonly (readonly string[])[]): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  const line = (r: readonly string[]) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join("  ");
  const out = rows.map(line);
  if (out.length > 1) out.splice(1, 0, widths.map((w) => "-".repeat(w)).join("  "));
  return `${out.join("\n")}\n`;
}
