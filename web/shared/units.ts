// Units for people: a duration or clock error in ns shown with the unit that fits it, and a unit
// chosen once per axis so that its ticks are round numbers of that unit (never "1.00e+3 µs").

export interface Unit {
  name: string;
  ns: number;
}

export const UNITS: readonly Unit[] = [
  { name: "ns", ns: 1 },
  { name: "µs", ns: 1e3 },
  { name: "ms", ns: 1e6 },
  { name: "s", ns: 1e9 },
];

/** The largest unit in which `absMaxNs` is at least 1 (ns for zero). */
export function unitFor(absMaxNs: number): Unit {
  let best = UNITS[0] as Unit;
  for (const u of UNITS) if (absMaxNs >= u.ns) best = u;
  return best;
}

/** "12.3 µs", "-4.56 ms", "850 ns": three significant digits in the unit that fits. */
export function fmtNs(ns: number | bigint | string | null | undefined): string {
  if (ns === null || ns === undefined || ns === "") return "–";
  const v = typeof ns === "number" ? ns : Number(ns);
  if (!Number.isFinite(v)) return "–";
  const u = unitFor(Math.abs(v));
  const x = v / u.ns;
  const digits = Math.abs(x) >= 100 || u.ns === 1 ? 0 : Math.abs(x) >= 10 ? 1 : 2;
  return `${x.toFixed(digits)} ${u.name}`;
}

/** A tick label in a fixed unit: as few decimals as the tick spacing needs. */
export function tickLabel(value: number, unit: Unit, stepInUnit: number): string {
  const decimals = stepInUnit >= 1 ? 0 : Math.min(6, Math.ceil(-Math.log10(stepInUnit) - 1e-9));
  return (value / unit.ns).toFixed(decimals);
}

/** kHz as "2.500 GHz" / "800 MHz". */
export function fmtKhz(khz: string | number): string {
  const v = Number(khz);
  if (v >= 1e6) return `${(v / 1e6).toFixed(3)} GHz`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(1)} MHz`;
  return `${v} kHz`;
}

/** Wall-clock time of day of a unix time in seconds, with milliseconds. */
export function fmtClock(unixS: number): string {
  const d = new Date(unixS * 1000);
  const p = (n: number, w = 2) => String(n).padStart(w, "0");
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}
