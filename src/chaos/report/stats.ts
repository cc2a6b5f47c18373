// Distribution summaries for the reports: percentiles of |error|, error/bound and blackout.

export interface Summary {
  count: number;
  p50: number;
  p99: number;
  max: number;
}

/** Nearest-rank percentile of an ascending array. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank] as number;
}

export function summarize(values: readonly number[]): Summary {
  const s = [...values].sort((a, b) => a - b);
  return { count: s.length, p50: percentile(s, 50), p99: percentile(s, 99), max: s.length ? (s[s.length - 1] as number) : 0 };
}

export interface Histogram {
  /** Bin edges (length = counts + 1), log-spaced when `log`. */
  edges: number[];
  counts: number[];
  log: boolean;
}

/**
 * Log-spaced histogram of positive values (zeros go to the first bin), `perDecade` bins per decade
 * from one whole decade to another, so whole decades are bin edges an axis can label (1 ms, 10 ms).
 */
export function logHistogram(values: readonly number[], perDecade = 5): Histogram {
  const pos = values.filter((v) => v > 0);
  if (pos.length === 0) return { edges: [0, 1], counts: [values.length], log: false };
  // A loop, not Math.min(...pos): a million-run campaign has millions of values, past the call stack's argument limit.
  let lo = pos.reduce((m, v) => (v < m ? v : m), Number.POSITIVE_INFINITY);
  let hi = pos.reduce((m, v) => (v > m ? v : m), 0);
  if (hi <= lo) hi = lo * 10;
  lo = 10 ** Math.floor(Math.log10(lo));
  hi = 10 ** Math.ceil(Math.log10(hi));
  const bins = Math.max(1, Math.round(Math.log10(hi / lo)) * perDecade);
  const edges: number[] = [];
  for (let i = 0; i <= bins; i++) edges.push(lo * (hi / lo) ** (i / bins));
  const counts = new Array<number>(bins).fill(0);
  for (const v of values) {
    const x = v <= lo ? 0 : Math.min(bins - 1, Math.floor((Math.log(v / lo) / Math.log(hi / lo)) * bins));
    counts[x] = (counts[x] as number) + 1;
  }
  return { edges, counts, log: true };
}

/** ns as a short human string (µs, ms, s). */
export function fmtNs(ns: number): string {
  // Round to three significant digits before picking the unit: 999 999 ns is "1.00 ms", never "1.00e+3 µs".
  const a = Math.abs(Number(ns.toPrecision(3)));
  if (a >= 1e9) return `${(ns / 1e9).toPrecision(3)} s`;
  if (a >= 1e6) return `${(ns / 1e6).toPrecision(3)} ms`;
  if (a >= 1e3) return `${(ns / 1e3).toPrecision(3)} µs`;
  return `${Math.round(ns)} ns`;
}

/** An axis tick: a round value with its unit and no padding zeros ("1 µs", "10 ms", "2.5 s"). */
export function fmtTick(ns: number): string {
  const a = Math.abs(ns);
  const [div, unit] = a >= 1e9 ? [1e9, "s"] : a >= 1e6 ? [1e6, "ms"] : a >= 1e3 ? [1e3, "µs"] : [1, "ns"];
  return `${Number((ns / div).toPrecision(6))} ${unit}`;
}
