// Parsers for configuration values: each takes the raw text of a flag or variable and returns a
// typed value, or throws `invalid_argument` saying what it expected (the loader adds which key and
// which source). Numbers that are 64-bit in the model come back as bigint, never through a double.

import { TscmigError } from "../shared/errors.js";
import { LIMITS } from "../shared/limits.js";

export { formatHostPort, type HostPort, parseHostPort } from "../shared/host-port.js";

export interface BigIntRange {
  min: bigint;
  max: bigint;
}

const I64: BigIntRange = { min: -(1n << 63n), max: (1n << 63n) - 1n };
const RAW_LENGTH_MAX = 4096;

function expected(what: string): TscmigError {
  return new TscmigError("invalid_argument", `expected ${what}`);
}

const NS_PER_UNIT: Record<string, bigint> = {
  ns: 1n,
  us: 1_000n,
  µs: 1_000n, // micro sign
  μs: 1_000n, // Greek mu
  ms: 1_000_000n,
  s: 1_000_000_000n,
  m: 60_000_000_000n,
  h: 3_600_000_000_000n,
};

/**
 * A duration in ns: "250ms", "4s", "1.5s", "100us", "2m", or a plain integer meaning ns. Signed
 * ("-250ms") when `range` allows negative values (offsets). Default range 0 .. 2^63 − 1 ns.
 * Exact: a fraction that is not a whole number of ns is refused, not rounded.
 */
export function parseDurationNs(raw: string, range: BigIntRange = { min: 0n, max: I64.max }): bigint {
  const what = `a duration such as 250ms, 1.5s, 100us, 2m or an integer of ns, within ${range.min}..${range.max} ns`;
  const m = raw.length <= 64 ? /^([+-]?)([0-9]+)(?:\.([0-9]+))?(ns|us|µs|μs|ms|s|m|h)?$/.exec(raw) : null;
  if (!m) throw expected(what);
  const [, sign, whole, fraction = "", unit] = m;
  if (unit === undefined && fraction !== "") throw expected(`${what}; a fraction needs a unit`);
  const perUnit = NS_PER_UNIT[unit ?? "ns"] as bigint;
  const scale = 10n ** BigInt(fraction.length);
  const fractionNs = BigInt(fraction || "0") * perUnit;
  if (fractionNs % scale !== 0n) throw expected(`${what}; ${raw} is finer than 1 ns`);
  const magnitude = BigInt(whole as string) * perUnit + fractionNs / scale;
  const value = sign === "-" ? -magnitude : magnitude;
  if (value < range.min || value > range.max) throw expected(what);
  return value;
}

/** A signed decimal integer within `range` (default int64). */
export function parseBigInt(raw: string, range: BigIntRange = I64): bigint {
  const what = `a decimal integer within ${range.min}..${range.max}`;
  if (!/^[+-]?[0-9]{1,40}$/.test(raw)) throw expected(what);
  const value = BigInt(raw);
  if (value < range.min || value > range.max) throw expected(what);
  return value;
}

/** Parts per million, a decimal number within ±`maxAbs` (default Linux's MAXFREQ, 500 ppm). */
export function parsePpm(raw: string, maxAbs: number = LIMITS.driftPpmMax): number {
  const what = `a decimal number of ppm within ±${maxAbs}`;
  if (!/^[+-]?[0-9]{1,12}(?:\.[0-9]{1,12})?$/.test(raw)) throw expected(what);
  const value = Number(raw);
  if (Math.abs(value) > maxAbs) throw expected(what);
  return value === 0 ? 0 : value; // no -0
}

const TRUE = new Set(["true", "1", "yes", "on"]);
const FALSE = new Set(["false", "0", "no", "off"]);

export function parseBool(raw: string): boolean {
  const v = raw.toLowerCase();
  if (TRUE.has(v)) return true;
  if (FALSE.has(v)) return false;
  throw expected("true or false (also 1/0, yes/no, on/off)");
}

export function parseEnum<const T extends string>(values: readonly T[]): (raw: string) => T {
  return (raw) => {
    if ((values as readonly string[]).includes(raw)) return raw as T;
    throw expected(`one of ${values.join(", ")}`);
  };
}

/** A file system path, kept as given (relative paths resolve against the daemon's working directory). */
export function parsePath(raw: string): string {
  if (raw.length === 0 || raw.length > RAW_LENGTH_MAX || raw.includes("\0")) throw expected(`a path of 1..${RAW_LENGTH_MAX} characters`);
  return raw;
}

/** A name that is safe as one path component and as a metrics or log label. */
export function parseName(raw: string): string {
  if (raw.length > LIMITS.idLengthMax || !/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(raw))
    throw expected(`a name of 1..${LIMITS.idLengthMax} letters, digits, '.', '_' or '-', starting with a letter or digit`);
  return raw;
}

/** A bearer token (RFC 6750 b64token characters). */
export function parseToken(raw: string): string {
  if (raw.length > RAW_LENGTH_MAX || !/^[A-Za-z0-9\-._~+/]+=*$/.test(raw))
    throw expected(`a token of 1..${RAW_LENGTH_MAX} characters from A-Z a-z 0-9 - . _ ~ + / (then '=' padding)`);
  return raw;
}
