// Parsers for the CLI's flag values, used as commander argParsers: a bad value is refused while the
// command line is parsed, before any daemon starts or any request leaves, with a message that names
// the flag and what it wants. They throw commander's InvalidArgumentError, which the CLI maps to
// exit code 2 (a usage error).

import { type Command, InvalidArgumentError } from "commander";
import { parseDurationNs, parseHostPort, parsePath } from "../daemon/config-parsers.js";
import { isTscmigError } from "../shared/errors.js";

export interface Range<T> {
  min: T;
  max: T;
}

/** Offsets such as --skew: ±1000 s. */
export const SIGNED_DURATION: Range<bigint> = { min: -1_000_000_000_000n, max: 1_000_000_000_000n };
/** Non-negative durations up to ~292 years (i64 ns). */
export const DURATION: Range<bigint> = { min: 0n, max: (1n << 63n) - 1n };

/**
 * A duration with a unit ("5ms", "-2.5us", "1s"), in ns. A bare number other than 0 is refused:
 * `--skew 5` is far more likely a typo for 5 ms than a request for 5 ns.
 */
export function durationFlag(range: Range<bigint> = DURATION): (raw: string) => bigint {
  return (raw) => {
    if (/^[+-]?[0-9]+(\.[0-9]+)?$/.test(raw) && !/^[+-]?0+(\.0+)?$/.test(raw))
      throw new InvalidArgumentError(`"${raw}" has no unit: write e.g. ${raw}ms, ${raw}us, ${raw}ns or ${raw}s.`);
    try {
      return parseDurationNs(raw, range);
    } catch (e) {
      throw new InvalidArgumentError(`${messageOf(e)}.`);
    }
  };
}

/** A decimal integer in `min..max` (no exponent, no fraction, no hex). */
export function intFlag(min: number, max: number): (raw: string) => number {
  return (raw) => {
    const n = /^[+-]?[0-9]{1,15}$/.test(raw) ? Number(raw) : Number.NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max) throw new InvalidArgumentError(`expected an integer in ${min}..${max}, got "${raw}".`);
    return n;
  };
}

/** A finite decimal number in `min..max` (e.g. a drift in ppm). */
export function numberFlag(min: number, max: number): (raw: string) => number {
  return (raw) => {
    const n = /^[+-]?[0-9]+(\.[0-9]+)?$/.test(raw) ? Number(raw) : Number.NaN;
    if (!Number.isFinite(n) || n < min || n > max) throw new InvalidArgumentError(`expected a number in ${min}..${max}, got "${raw}".`);
    return n;
  };
}

/** An unsigned 64-bit integer as its decimal text (kHz values travel as strings). */
export function u64Flag(min = 1n): (raw: string) => string {
  return (raw) => {
    if (!/^[0-9]{1,20}$/.test(raw) || BigInt(raw) < min || BigInt(raw) >= 1n << 64n) throw new InvalidArgumentError(`expected an integer of at least ${min}, got "${raw}".`);
    return raw;
  };
}

/** HOST:PORT (IPv6 in brackets). */
export function hostPortFlag(raw: string): string {
  try {
    parseHostPort(raw);
    return raw;
  } catch (e) {
    throw new InvalidArgumentError(`${messageOf(e)}.`);
  }
}

/** A file system path, as the daemon's path flags take it. */
export function pathFlag(raw: string): string {
  try {
    return parsePath(raw);
  } catch (e) {
    throw new InvalidArgumentError(`${messageOf(e)}.`);
  }
}

/** Adds an "Examples:" block, one `$ command` per line, after `cmd`'s help. */
export function examples(cmd: Command, lines: string[]): Command {
  return cmd.addHelpText("after", `\nExamples:\n${lines.map((l) => `  $ ${l}`).join("\n")}\n`);
}

/** An http(s)://HOST:PORT base URL of a control API. */
export function urlFlag(raw: string): string {
  if (!/^https?:\/\/[^/\s]+\/?$/.test(raw)) throw new InvalidArgumentError(`expected http(s)://HOST:PORT, got "${raw}".`);
  return raw.replace(/\/$/, "");
}

function messageOf(e: unknown): string {
  if (isTscmigError(e)) return e.message;
  return e instanceof Error ? e.message : String(e);
}
