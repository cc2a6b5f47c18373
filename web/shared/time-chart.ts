// One time-series chart on uPlot: lines, a band between two series, shaded spans (a blackout, a
// fault) and labelled vertical marks (a doorbell, a vmclock marker). Values come in ns; the chart
// picks one unit per axis from the data and plots in it, so uPlot's 1-2-5 ticks land on round
// numbers of that unit, and the axis says which unit it is.

import uPlot from "uplot";
import { fmtClock, fmtNs, tickLabel, type Unit, unitFor } from "./units.js";

export interface SeriesSpec {
  label: string;
  color: string;
  dash?: number[];
  width?: number;
  /** Draw dots only (events, violations). */
  pointsOnly?: boolean;
  /** Hidden from the legend (e.g. the band's lower edge). */
  legend?: boolean;
  /** A value that holds until the next point (a clock's skew set by steps), not a ramp between points. */
  stepped?: boolean;
}

export interface Span {
  /** x in the chart's x units: unix seconds (clock) or ns since the start (duration). */
  from: number;
  to: number;
  color: string;
  label?: string;
}

export interface Mark {
  at: number;
  color: string;
  label: string;
}

export interface ChartSpec {
  yLabel: string;
  xMode: "clock" | "duration";
  xLabel?: string;
  series: SeriesSpec[];
  /** Pairs of series indices (upper, lower; 0-based in `series`) to fill between. */
  bands?: { upper: number; lower: number; fill: string }[];
  /** Series whose values set the y range (others may run off the chart, e.g. a 16 s bound). */
  rangeFrom?: number[];
  height?: number;
}

export type Column = (number | null)[];

const stepped = uPlot.paths.stepped?.({ align: 1 });

/** Text with a light backdrop so it stays legible over lines and shading. */
function label(ctx: CanvasRenderingContext2D, text: string, x: number, y: number, color: string, right: number): void {
  const w = ctx.measureText(text).width;
  const pad = 2 * devicePixelRatio;
  const tx = x + pad + w > right ? x - pad - w : x + pad;
  ctx.fillStyle = "rgba(255,255,255,0.8)";
  ctx.fillRect(tx - pad, y - 10 * devicePixelRatio, w + 2 * pad, 13 * devicePixelRatio);
  ctx.fillStyle = color;
  ctx.fillText(text, tx, y);
}

export class TimeChart {
  private plot: uPlot | null = null;
  private yUnit: Unit = { name: "ns", ns: 1 };
  private xUnit: Unit = { name: "s", ns: 1e9 };
  private spans: Span[] = [];
  private marks: Mark[] = [];
  private yRange: [number, number] = [-1, 1];
  private xRange: [number, number] = [0, 1];
  /** The user dragged a range to zoom in: keep it across updates until a double click. */
  private zoomed = false;
  private readonly resize: ResizeObserver | null;

  constructor(
    private readonly el: HTMLElement,
    private readonly spec: ChartSpec,
  ) {
    this.resize =
      typeof ResizeObserver === "undefined"
        ? null
        : new ResizeObserver(() => {
            if (this.plot && this.el.clientWidth > 0 && Math.abs(this.plot.width - this.el.clientWidth) > 2) this.plot.setSize({ width: this.el.clientWidth, height: this.spec.height ?? 220 });
          });
    this.resize?.observe(el);
  }

  destroy(): void {
    this.resize?.disconnect();
    this.plot?.destroy();
    this.plot = null;
  }

  /** Replaces the data: `x` ascending, one column per series (ns), spans and marks in x units. */
  setData(x: number[], columns: Column[], spans: Span[] = [], marks: Mark[] = []): void {
    this.spans = spans;
    this.marks = marks;
    const yUnit = unitFor(this.absMax(columns));
    const xs = this.spec.xMode === "duration" ? this.scaleX(x) : x;
    const ys = columns.map((c) => c.map((v) => (v === null ? null : v / yUnit.ns)));
    this.yRange = this.rangeOf(ys);
    const unitChanged = yUnit.ns !== this.yUnit.ns;
    this.yUnit = yUnit;
    this.el.dataset.points = String(x.length);
    this.el.dataset.spans = String(spans.length);
    this.el.dataset.marks = String(marks.length);
    this.el.dataset.unit = yUnit.name;
    this.xRange = this.xRangeOf(xs, spans, marks);
    const data = [xs, ...ys] as uPlot.AlignedData;
    if (this.plot === null || unitChanged) {
      this.plot?.destroy();
      this.zoomed = false;
      this.plot = new uPlot(this.options(), data, this.el);
      this.plot.over.addEventListener("dblclick", () => {
        this.zoomed = false;
        this.plot?.setScale("x", { min: this.xRange[0], max: this.xRange[1] });
      });
    } else this.plot.setData(data, !this.zoomed);
  }

  /** The x range: the samples', widened to show every span and mark (a blackout after the last sample). */
  private xRangeOf(xs: number[], spans: Span[], marks: Mark[]): [number, number] {
    const conv = (v: number) => (this.spec.xMode === "duration" ? v / this.xUnit.ns : v);
    let lo = xs.length > 0 ? (xs[0] as number) : Infinity;
    let hi = xs.length > 0 ? (xs[xs.length - 1] as number) : -Infinity;
    for (const sp of spans) {
      lo = Math.min(lo, conv(sp.from));
      hi = Math.max(hi, conv(sp.to));
    }
    for (const m of marks) {
      lo = Math.min(lo, conv(m.at));
      hi = Math.max(hi, conv(m.at));
    }
    if (!Number.isFinite(lo)) return [0, 1];
    const pad = (hi - lo) * 0.02 || 1;
    return [lo - pad, hi + pad];
  }

  /** The y range over the `rangeFrom` series only, zero (true time) always in view, padded a tenth. */
  private rangeOf(ys: Column[]): [number, number] {
    let lo = 0;
    let hi = 0;
    const from = this.spec.rangeFrom ?? ys.map((_, i) => i);
    for (const i of from)
      for (const v of ys[i] ?? []) {
        if (v === null) continue;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
    if (hi - lo === 0) return [-1, 1];
    const pad = (hi - lo) * 0.1;
    return [lo - pad, hi + pad];
  }

  private absMax(columns: Column[]): number {
    let m = 0;
    const from = this.spec.rangeFrom ?? columns.map((_, i) => i);
    for (const i of from) for (const v of columns[i] ?? []) if (v !== null && Math.abs(v) > m) m = Math.abs(v);
    return m;
  }

  private scaleX(x: number[]): number[] {
    const last = x.length > 0 ? Math.abs(x[x.length - 1] as number) : 0;
    this.xUnit = unitFor(last);
    return x.map((v) => v / this.xUnit.ns);
  }

  private xPos(u: uPlot, v: number): number {
    return u.valToPos(this.spec.xMode === "duration" ? v / this.xUnit.ns : v, "x", true);
  }

  private options(): uPlot.Options {
    const s = this.spec;
    const yUnit = this.yUnit;
    const fmtY = (_u: uPlot, v: number | null) => (v === null ? "–" : fmtNs(v * yUnit.ns));
    const series: uPlot.Series[] = [
      s.xMode === "clock" ? { label: "time", value: (_u, v) => (v === null ? "–" : fmtClock(v)) } : { label: "t", value: (_u, v) => (v === null ? "–" : fmtNs(v * this.xUnit.ns)) },
      ...s.series.map(
        (x): uPlot.Series => ({
          label: x.label,
          stroke: x.color,
          width: x.width ?? 1.5,
          ...(x.dash ? { dash: x.dash } : {}),
          value: fmtY,
          spanGaps: false,
          ...(x.pointsOnly ? { paths: () => null, points: { show: true, size: 6, fill: x.color } } : { points: { show: false } }),
          ...(x.stepped ? { paths: stepped } : {}),
        }),
      ),
    ];
    const ticks = (_u: uPlot, splits: number[]) => {
      const step = splits.length > 1 ? Math.abs((splits[1] as number) - (splits[0] as number)) : 1;
      return splits.map((v) => tickLabel(v * yUnit.ns, yUnit, step));
    };
    return {
      width: this.el.clientWidth > 0 ? this.el.clientWidth : 600,
      height: s.height ?? 220,
      series,
      bands: (s.bands ?? []).map((b) => ({ series: [b.upper + 1, b.lower + 1] as [number, number], fill: b.fill })),
      scales: {
        x: { time: s.xMode === "clock", range: (_u, min, max) => (this.zoomed ? [min, max] : this.xRange) },
        y: { range: () => this.yRange },
      },
      axes: [
        s.xMode === "clock"
          ? { label: s.xLabel ?? "true time (local clock)", stroke: "#444", grid: { stroke: "#eee" }, space: 90 }
          : {
              label: `${s.xLabel ?? "time since start"} (${this.xUnit.name})`,
              stroke: "#444",
              grid: { stroke: "#eee" },
              values: (_u: uPlot, splits: number[]) => {
                const step = splits.length > 1 ? Math.abs((splits[1] as number) - (splits[0] as number)) : 1;
                return splits.map((v) => tickLabel(v * this.xUnit.ns, this.xUnit, step));
              },
            },
        { label: `${s.yLabel} (${yUnit.name})`, stroke: "#444", grid: { stroke: "#eee" }, values: ticks, size: 60, space: 24 },
      ],
      legend: { show: true, live: true },
      cursor: { drag: { x: true, y: false } },
      hooks: {
        drawClear: [(u) => this.drawSpans(u)],
        draw: [(u) => this.drawMarks(u)],
        setSelect: [
          (u) => {
            if (u.select.width > 0) this.zoomed = true;
          },
        ],
      },
    };
  }

  private drawSpans(u: uPlot): void {
    const ctx = u.ctx;
    const { left, top, width, height } = u.bbox;
    ctx.save();
    for (const sp of this.spans) {
      const a = Math.max(left, this.xPos(u, sp.from));
      const b = Math.min(left + width, this.xPos(u, sp.to));
      if (!(b >= a)) continue;
      ctx.fillStyle = sp.color;
      ctx.fillRect(a, top, Math.max(b - a, 2 * devicePixelRatio), height);
      if (sp.label) {
        ctx.font = `${11 * devicePixelRatio}px sans-serif`;
        ctx.textAlign = "left";
        ctx.textBaseline = "alphabetic";
        label(ctx, sp.label, a, top + height - 6 * devicePixelRatio, "#82071e", left + width);
      }
    }
    // True time: the zero line every error is measured from.
    const zero = u.valToPos(0, "y", true);
    if (zero >= top && zero <= top + height) {
      ctx.strokeStyle = "#999";
      ctx.setLineDash([2 * devicePixelRatio, 3 * devicePixelRatio]);
      ctx.beginPath();
      ctx.moveTo(left, zero);
      ctx.lineTo(left + width, zero);
      ctx.stroke();
    }
    ctx.restore();
  }

  private drawMarks(u: uPlot): void {
    const ctx = u.ctx;
    const { left, top, width, height } = u.bbox;
    ctx.save();
    ctx.font = `${11 * devicePixelRatio}px sans-serif`;
    ctx.textAlign = "left";
    ctx.textBaseline = "alphabetic";
    let row = 0;
    for (const m of this.marks) {
      const x = this.xPos(u, m.at);
      if (x < left || x > left + width) continue;
      ctx.strokeStyle = m.color;
      ctx.setLineDash([4 * devicePixelRatio, 3 * devicePixelRatio]);
      ctx.lineWidth = 1.5 * devicePixelRatio;
      ctx.beginPath();
      ctx.moveTo(x, top);
      ctx.lineTo(x, top + height);
      ctx.stroke();
      ctx.setLineDash([]);
      label(ctx, m.label, x, top + (12 + 14 * (row % 4)) * devicePixelRatio, m.color, left + width);
      row++;
    }
    ctx.restore();
  }
}
