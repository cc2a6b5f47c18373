// One description per type that both writes and reads its JSON. A codec for an object names every
// field of its type (`obj<T>` takes a codec for each key of T, no more, no fewer): a field added to
// the type is a compile error until its codec says how it travels, so no key list can fall behind.
//
// JSON has no 64-bit integers, so each boundary picks one form for them (`BigintStyle`), and every
// codec writes that form wherever the type holds a bigint:
// - "decimal": decimal strings. The control API, its event stream and history, and chaos history
//   files: what any JSON reader can take without rounding to a double.
// - "tagged": `{"$b": "digits"}`, as serde.ts writes the VM state beside it: the journal. Its reader
//   also takes the decimal strings older daemons wrote into the report column.

import { invalid } from "./errors.js";

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

export type BigintStyle = "decimal" | "tagged";

/** Each boundary's one form for 64-bit values (see above). */
export const BOUNDARY = {
  /** The control API: bodies, the event stream, GET /v1/history. */
  api: "decimal",
  /** Journal columns (the VM state beside them is serde.ts's, with the same tags). */
  journal: "tagged",
  /** `tscmig chaos --history` files. */
  historyFile: "decimal",
  /** Chaos JSON reports, a shard's fold included. */
  report: "decimal",
} as const satisfies Record<string, BigintStyle>;

/** What a codec reads and writes, as data: error messages, and tests that derive values from it. */
export type Shape =
  | { kind: "bigint"; min: bigint; max: bigint }
  | { kind: "integer"; min: number; max: number }
  | { kind: "number" }
  | { kind: "string" }
  | { kind: "boolean" }
  | { kind: "enum"; values: readonly (string | number | boolean)[] }
  | { kind: "array"; item: Shape }
  | { kind: "optional"; inner: Shape }
  | { kind: "nullable"; inner: Shape }
  | { kind: "object"; fields: Readonly<Record<string, Shape>> }
  | { kind: "union"; tag: string; variants: Readonly<Record<string, Shape>> }
  | { kind: "record"; value: Shape }
  /** A type with its own parser (`custom`), named. */
  | { kind: "custom"; name: string };

export interface Codec<T> {
  readonly shape: Shape;
  /** `undefined` only for an absent optional field (its key is left out). */
  encode(v: T, style: BigintStyle): Json | undefined;
  /** Reads untrusted JSON; a value of any other shape is an invalid_argument error naming `at`. */
  decode(j: unknown, style: BigintStyle, at: string): T;
}

/** Encodes a value whose codec never answers `undefined` (not an optional). */
export function encodeJson<T>(c: Codec<T>, v: T, style: BigintStyle): Json {
  return c.encode(v, style) ?? null;
}

const DIGITS = /^-?\d{1,20}$/;

function bigintOf(j: unknown, style: BigintStyle): bigint | null {
  // The journal also reads the decimal strings its report column held before it was tagged.
  if (typeof j === "string" && DIGITS.test(j)) return BigInt(j);
  if (style === "tagged" && j !== null && typeof j === "object" && !Array.isArray(j)) {
    const o = j as Record<string, unknown>;
    if (Object.keys(o).length === 1 && typeof o.$b === "string" && DIGITS.test(o.$b)) return BigInt(o.$b);
  }
  return null;
}

function bigintCodec(min: bigint, max: bigint, what: string): Codec<bigint> {
  return {
    shape: { kind: "bigint", min, max },
    encode: (v, style) => (style === "decimal" ? v.toString() : { $b: v.toString() }),
    decode(j, style, at) {
      const v = bigintOf(j, style);
      if (v === null || v < min || v > max) throw invalid(at, `expected ${what} (${style === "decimal" ? "a decimal string" : '{"$b": "digits"}'})`);
      return v;
    },
  };
}

/** An unsigned 64-bit integer. */
export const u64 = bigintCodec(0n, 2n ** 64n - 1n, "an unsigned 64-bit integer");
/** A signed 64-bit integer. */
export const i64 = bigintCodec(-(2n ** 63n), 2n ** 63n - 1n, "a signed 64-bit integer");

/** A safe integer in [min, max]. */
export function int(min = Number.MIN_SAFE_INTEGER, max = Number.MAX_SAFE_INTEGER): Codec<number> {
  return {
    shape: { kind: "integer", min, max },
    encode: (v) => v,
    decode(j, _s, at) {
      if (typeof j !== "number" || !Number.isSafeInteger(j) || j < min || j > max) throw invalid(at, `expected an integer in ${min}..${max}`);
      return j;
    },
  };
}

const NON_FINITE = ["Infinity", "-Infinity", "NaN"];

/** Any double; the non-finite ones (which JSON lacks) as `{"$num": "Infinity"}` (or "-Infinity", "NaN"). */
export const float: Codec<number> = {
  shape: { kind: "number" },
  encode: (v) => (Number.isFinite(v) ? v : { $num: String(v) }),
  decode(j, _s, at) {
    if (typeof j === "number") return j;
    const n = j !== null && typeof j === "object" ? (j as { $num?: unknown }).$num : undefined;
    if (typeof n === "string" && NON_FINITE.includes(n)) return Number(n);
    throw invalid(at, "expected a number");
  },
};

export const str: Codec<string> = {
  shape: { kind: "string" },
  encode: (v) => v,
  decode(j, _s, at) {
    if (typeof j !== "string") throw invalid(at, "expected a string");
    return j;
  },
};

export const bool: Codec<boolean> = {
  shape: { kind: "boolean" },
  encode: (v) => v,
  decode(j, _s, at) {
    if (typeof j !== "boolean") throw invalid(at, "expected true or false");
    return j;
  },
};

/** One of a fixed set of values (a string union, or one literal). */
export function oneOf<const T extends string | number | boolean>(values: readonly T[]): Codec<T> {
  return {
    shape: { kind: "enum", values },
    encode: (v) => v,
    decode(j, _s, at) {
      if (!(values as readonly unknown[]).includes(j)) throw invalid(at, `expected one of ${values.map((x) => JSON.stringify(x)).join(", ")}`);
      return j as T;
    },
  };
}

export function arrayOf<T>(item: Codec<T>): Codec<T[]> {
  return {
    shape: { kind: "array", item: item.shape },
    encode: (v, style) => v.map((x) => item.encode(x, style) ?? null),
    decode(j, style, at) {
      if (!Array.isArray(j)) throw invalid(at, "expected an array");
      return j.map((x, i) => item.decode(x, style, `${at}[${i}]`));
    },
  };
}

/** A field that may be absent (never written as null). */
export function optional<T>(inner: Codec<T>): Codec<T | undefined> {
  return {
    shape: { kind: "optional", inner: inner.shape },
    encode: (v, style) => (v === undefined ? undefined : inner.encode(v, style)),
    decode: (j, style, at) => (j === undefined ? undefined : inner.decode(j, style, at)),
  };
}

export function nullable<T>(inner: Codec<T>): Codec<T | null> {
  return {
    shape: { kind: "nullable", inner: inner.shape },
    encode: (v, style) => (v === null ? null : (inner.encode(v, style) ?? null)),
    decode: (j, style, at) => (j === null ? null : inner.decode(j, style, at)),
  };
}

/** A codec for every key of T: a key missing here, or one T does not have, does not compile. */
export type Fields<T> = { [K in keyof T]-?: Codec<T[K]> };

function objectOf(j: unknown, at: string): Record<string, unknown> {
  if (j === null || typeof j !== "object" || Array.isArray(j)) throw invalid(at, "expected an object");
  return j as Record<string, unknown>;
}

const join = (at: string, k: string) => (at === "" ? k : `${at}.${k}`);

/** An object of exactly the fields of T, written in the order given; unknown keys are ignored on reading. */
export function obj<T>(fields: Fields<T>): Codec<T> & { readonly fields: Fields<T> } {
  const entries = Object.entries(fields) as [string, Codec<unknown>][];
  return {
    fields,
    shape: { kind: "object", fields: Object.fromEntries(entries.map(([k, c]) => [k, c.shape])) },
    encode(v, style) {
      const out: Record<string, Json> = {};
      for (const [k, c] of entries) {
        const x = c.encode((v as Record<string, unknown>)[k], style);
        if (x !== undefined) out[k] = x;
      }
      return out;
    },
    decode(j, style, at) {
      const o = objectOf(j, at);
      const out: Record<string, unknown> = {};
      for (const [k, c] of entries) {
        const x = c.decode(o[k], style, join(at, k));
        if (x !== undefined) out[k] = x;
      }
      return out as T;
    },
  };
}

/** The codecs of some of T's fields (a type built with Pick<T, K> reuses them). */
export function pick<T, const K extends keyof T>(fields: Fields<T>, keys: readonly K[]): Fields<Pick<T, K>> {
  const out = {} as Fields<Pick<T, K>>;
  for (const k of keys) out[k] = fields[k];
  return out;
}

/** Free keys, one codec for every value (counts by name and the like). */
export function recordOf<T>(value: Codec<T>): Codec<Record<string, T>> {
  return {
    shape: { kind: "record", value: value.shape },
    encode: (v, style) => Object.fromEntries(Object.entries(v).map(([k, x]) => [k, value.encode(x, style) ?? null])),
    decode(j, style, at) {
      const o = objectOf(j, at);
      return Object.fromEntries(Object.entries(o).map(([k, x]) => [k, value.decode(x, style, join(at, k))]));
    },
  };
}

type Tagged<K extends string> = { [P in K]: string };

/** A union told apart by the string field `tag`: a codec for each of its values, no more, no fewer. */
export function union<K extends string, T extends Tagged<K>>(tag: K, variants: { [V in T[K]]: Codec<Extract<T, Record<K, V>>> }): Codec<T> {
  const byTag = variants as unknown as Record<string, Codec<T>>;
  const tags = Object.keys(byTag);
  return {
    shape: { kind: "union", tag, variants: Object.fromEntries(tags.map((t) => [t, (byTag[t] as Codec<T>).shape])) },
    encode: (v, style) => (byTag[v[tag]] as Codec<T>).encode(v, style),
    decode(j, style, at) {
      const t = objectOf(j, at)[tag];
      const c = typeof t === "string" ? byTag[t] : undefined;
      if (!c) throw invalid(join(at, tag), `expected one of ${tags.map((x) => JSON.stringify(x)).join(", ")}`);
      return c.decode(j, style, at);
    },
  };
}

/** A type with its own writer and parser, whose JSON holds 64-bit values as decimal strings (history files and the API only). */
export function custom<T>(name: string, encode: (v: T) => Json, decode: (j: unknown, at: string) => T): Codec<T> {
  return { shape: { kind: "custom", name }, encode: (v) => encode(v), decode: (j, _s, at) => decode(j, at) };
}

/** Text of `v`, e.g. a journal column or an HTTP body. */
export function toJsonText<T>(c: Codec<T>, v: T, style: BigintStyle): string {
  return JSON.stringify(encodeJson(c, v, style));
}

/** `text` read back; text that is not JSON is an invalid_argument error naming `at`. */
export function fromJsonText<T>(c: Codec<T>, text: string, style: BigintStyle, at: string): T {
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch {
    throw invalid(at, "expected JSON text");
  }
  return c.decode(j, style, at);
}
