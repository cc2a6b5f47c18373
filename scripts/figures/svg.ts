// A small SVG writer for the documentation's figures: panels with linear or log axes, lines, points,
// shaded spans and bands, a legend. Output is a pure function of its input (fixed number formatting,
// no fonts measured, no dates), so a figure regenerated from the same seed is byte-identical and CI
// can compare it with the checked-in file.

export type Scale = "linear" | "log";

export interface Axis {
  label: string;
  min: number;
  max: number;
  scale?: Scale;
}

export type Mark =
  | { kind: "line"; points: [number, number][]; color: string; width?: number; dash?: string }
  | { kind: "points"; points: [number, number][]; color: string; radius?: number }
  /** A vertical span over the whole panel height (e.g. the blackout). */
  | { kind: "xspan"; from: number; to: number; color: string; opacity?: number; label?: string }
  /** A band between two lines sharing x (e.g. the guest's [earliest, latest]). */
  | { kind: "band"; xs: number[]; lo: number[]; hi: number[]; color: string; opacity?: number }
  | { kind: "text"; x: number; y: number; text: string; color?: string; anchor?: "start" | "middle" | "end" };

export interface Panel {
  title: string;
  x: Axis;
  y: Axis;
  marks: Mark[];
  legend?: { label: string; color: string }[];
  /** Where the legend sits inside the plot area (default top). */
  legendAt?: "top" | "bottom";
}

export interface Figure {
  title: string;
  /** Panels laid out left to right, then top to bottom. */
  columns: number;
  panelWidth: number;
  panelHeight: number;
  panels: Panel[];
  caption?: string;
}

const MARGIN = { left: 64, right: 16, top: 34, bottom: 46 };
const TITLE_H = 30;
const CAPTION_H = 22;

/** Fixed formatting: two decimals, no "-0", trailing zeros trimmed. */
export function num(v: number): string {
  const s = (Math.round(v * 100) / 100).toFixed(2).replace(/\.?0+$/, "");
  return s === "-0" ? "0" : s;
}

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

/** Tick values for an axis: 1-2-5 steps on linear axes, powers of ten on log axes. */
export function ticks(a: Axis): number[] {
  if (a.scale === "log") {
    const out: number[] = [];
    for (let e = Math.ceil(Math.log10(a.min)); e <= Math.floor(Math.log10(a.max)); e++) out.push(10 ** e);
    return out;
  }
  const span = a.max - a.min;
  const raw = span / 6;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(a.min / step) * step; v <= a.max + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  return out;
}

function tickLabel(v: number, a: Axis): string {
  if (a.scale === "log") {
    const e = Math.round(Math.log10(v));
    return e >= -2 && e <= 3 ? num(v) : `1e${e}`;
  }
  return num(v);
}

function mapper(a: Axis, lo: number, hi: number): (v: number) => number {
  if (a.scale === "log") {
    const l0 = Math.log10(a.min);
    const l1 = Math.log10(a.max);
    return (v) => lo + ((Math.log10(Math.max(v, a.min)) - l0) / (l1 - l0)) * (hi - lo);
  }
  return (v) => lo + ((v - a.min) / (a.max - a.min)) * (hi - lo);
}

function clamp(v: number, a: number, b: number): number {
  return v < Math.min(a, b) ? Math.min(a, b) : v > Math.max(a, b) ? Math.max(a, b) : v;
}

function renderPanel(p: Panel, ox: number, oy: number, w: number, h: number, clipId: string): string[] {
  const x0 = ox + MARGIN.left;
  const x1 = ox + w - MARGIN.right;
  const y0 = oy + h - MARGIN.bottom;
  const y1 = oy + MARGIN.top;
  const X = mapper(p.x, x0, x1);
  const Y = mapper(p.y, y0, y1);
  const cx = (v: number) => clamp(X(v), x0, x1);
  const cy = (v: number) => clamp(Y(v), y0, y1);
  const out: string[] = [];
  out.push(`<clipPath id="${clipId}"><rect x="${num(x0)}" y="${num(y1)}" width="${num(x1 - x0)}" height="${num(y0 - y1)}"/></clipPath>`);
  out.push(`<text x="${num((x0 + x1) / 2)}" y="${num(oy + 20)}" text-anchor="middle" font-weight="bold">${esc(p.title)}</text>`);
  for (const t of ticks(p.x)) {
    const x = X(t);
    out.push(`<line x1="${num(x)}" y1="${num(y0)}" x2="${num(x)}" y2="${num(y1)}" stroke="#e4e4e4"/>`);
    out.push(`<text x="${num(x)}" y="${num(y0 + 15)}" text-anchor="middle" font-size="10">${esc(tickLabel(t, p.x))}</text>`);
  }
  for (const t of ticks(p.y)) {
    const y = Y(t);
    out.push(`<line x1="${num(x0)}" y1="${num(y)}" x2="${num(x1)}" y2="${num(y)}" stroke="#e4e4e4"/>`);
    out.push(`<text x="${num(x0 - 5)}" y="${num(y + 3)}" text-anchor="end" font-size="10">${esc(tickLabel(t, p.y))}</text>`);
  }
  out.push(`<g clip-path="url(#${clipId})">`);
  for (const m of p.marks) out.push(...renderMark(m, { X, Y, cx, cy, y0, y1 }));
  out.push(`</g>`);
  out.push(`<rect x="${num(x0)}" y="${num(y1)}" width="${num(x1 - x0)}" height="${num(y0 - y1)}" fill="none" stroke="#555"/>`);
  out.push(`<text x="${num((x0 + x1) / 2)}" y="${num(y0 + 34)}" text-anchor="middle" font-size="11">${esc(p.x.label)}</text>`);
  const ly = (y0 + y1) / 2;
  out.push(`<text x="${num(ox + 14)}" y="${num(ly)}" text-anchor="middle" font-size="11" transform="rotate(-90 ${num(ox + 14)} ${num(ly)})">${esc(p.y.label)}</text>`);
  const legend = p.legend ?? [];
  legend.forEach((l, i) => {
    const y = p.legendAt === "bottom" ? y0 - 6 - (legend.length - 1 - i) * 14 : y1 + 12 + i * 14;
    out.push(`<rect x="${num(x0 + 8)}" y="${num(y - 8)}" width="10" height="10" fill="${l.color}"/>`);
    out.push(`<text x="${num(x0 + 22)}" y="${num(y + 1)}" font-size="10">${esc(l.label)}</text>`);
  });
  return out;
}

interface Ctx {
  X: (v: number) => number;
  Y: (v: number) => number;
  cx: (v: number) => number;
  cy: (v: number) => number;
  y0: number;
  y1: number;
}

function renderMark(m: Mark, c: Ctx): string[] {
  switch (m.kind) {
    case "line": {
      if (m.points.length === 0) return [];
      const d = m.points.map(([x, y], i) => `${i === 0 ? "M" : "L"}${num(c.X(x))} ${num(c.cy(y))}`).join("");
      const dash = m.dash ? ` stroke-dasharray="${m.dash}"` : "";
      return [`<path d="${d}" fill="none" stroke="${m.color}" stroke-width="${num(m.width ?? 1.5)}"${dash}/>`];
    }
    case "points":
      return m.points.map(([x, y]) => `<circle cx="${num(c.cx(x))}" cy="${num(c.cy(y))}" r="${num(m.radius ?? 2)}" fill="${m.color}" fill-opacity="0.7"/>`);
    case "xspan": {
      const a = c.X(m.from);
      const b = c.X(m.to);
      const out = [`<rect x="${num(a)}" y="${num(c.y1)}" width="${num(Math.max(b - a, 1))}" height="${num(c.y0 - c.y1)}" fill="${m.color}" fill-opacity="${num(m.opacity ?? 0.25)}"/>`];
      if (m.label) out.push(`<text x="${num(b + 3)}" y="${num(c.y1 + 12)}" font-size="10" fill="#444">${esc(m.label)}</text>`);
      return out;
    }
    case "band": {
      if (m.xs.length === 0) return [];
      const top = m.xs.map((x, i) => `${num(c.X(x))} ${num(c.cy(m.hi[i] as number))}`);
      const bottom = m.xs.map((x, i) => `${num(c.X(x))} ${num(c.cy(m.lo[i] as number))}`).reverse();
      return [`<path d="M${[...top, ...bottom].join("L")}Z" fill="${m.color}" fill-opacity="${num(m.opacity ?? 0.2)}" stroke="none"/>`];
    }
    case "text":
      return [`<text x="${num(c.X(m.x))}" y="${num(c.Y(m.y))}" font-size="10" fill="${m.color ?? "#222"}" text-anchor="${m.anchor ?? "start"}">${esc(m.text)}</text>`];
  }
}

/** The whole figure as an SVG document (ends with a newline). */
export function renderFigure(f: Figure): string {
  const rows = Math.ceil(f.panels.length / f.columns);
  const width = f.columns * f.panelWidth;
  const height = TITLE_H + rows * f.panelHeight + (f.caption ? CAPTION_H : 0);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#fff"/>`,
    `<text x="${num(width / 2)}" y="20" text-anchor="middle" font-size="14" font-weight="bold">${esc(f.title)}</text>`,
  ];
  f.panels.forEach((p, i) => {
    const ox = (i % f.columns) * f.panelWidth;
    const oy = TITLE_H + Math.floor(i / f.columns) * f.panelHeight;
    out.push(...renderPanel(p, ox, oy, f.panelWidth, f.panelHeight, `clip${i}`));
  });
  if (f.caption) out.push(`<text x="8" y="${num(height - 7)}" font-size="10" fill="#444">${esc(f.caption)}</text>`);
  out.push(`</svg>`);
  return `${out.join("\n")}\n`;
}
