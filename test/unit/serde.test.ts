// Goal: journal payloads (staged snapshots, persisted VMs) round-trip exactly through serde's JSON.
// Method: encode and decode values of every tagged kind, including bytes that arrive as Buffer
// views (what the gRPC codec hands the destination) and the older decimal u64 column form; check
// toJson and fromJson against their definitions (JSON.stringify with a replacer, JSON.parse with a
// reviver) on generated values, and toFlatJson against toJson.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { fromJson, toFlatJson, toJson } from "../../src/shared/serde.js";

/** The definition `toJson` must match, byte for byte: JSON.stringify with a tagging replacer. */
function toJsonReference(value: unknown): string {
  return JSON.stringify(value, function (this: Record<string, unknown>, k, v: unknown) {
    // The holder's own value, before toJSON: a Buffer would otherwise arrive as {type: "Buffer", data: [...]}.
    const raw = this[k];
    if (typeof v === "bigint") return { $b: v.toString() };
    if (v instanceof BigUint64Array) {
      const le = Buffer.alloc(v.byteLength);
      v.forEach((x, i) => le.writeBigUInt64LE(x, i * 8));
      return { $u64le: le.toString("base64") };
    }
    if (raw instanceof Uint8Array) return { $bytes: Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString("base64") };
    return v;
  });
}

describe("serde", () => {
  it("round-trips bigints, u64 arrays, Uint8Arrays and Buffers (also as views into a larger buffer)", () => {
    const big = Buffer.from([9, 9, 1, 2, 3, 4, 9]);
    const value = {
      g: 18_446_744_073_709_551_615n,
      col: BigUint64Array.from([0n, 1n, 2n ** 64n - 1n]),
      bytes: new Uint8Array([1, 2, 3]),
      buf: Buffer.from([4, 5, 6]),
      view: big.subarray(2, 6),
      nested: { list: [Buffer.from([7]), 1n] },
    };
    const back = fromJson<typeof value>(toJson(value));
    expect(back.g).toBe(value.g);
    expect(Array.from(back.col)).toEqual(Array.from(value.col));
    expect(back.bytes).toBeInstanceOf(Uint8Array);
    expect(Array.from(back.bytes)).toEqual([1, 2, 3]);
    expect(back.buf).toBeInstanceOf(Uint8Array);
    expect(Array.from(back.buf)).toEqual([4, 5, 6]);
    expect(Array.from(back.view)).toEqual([1, 2, 3, 4]);
    expect(Array.from(back.nested.list[0] as Uint8Array)).toEqual([7]);
    expect(back.nested.list[1]).toBe(1n);
  });

  it("round-trips bigints, u64 columns and bytes", () => {
    const v = { a: 1n << 63n, col: BigUint64Array.from([0n, 1n, (1n << 64n) - 1n]), bytes: new Uint8Array([0, 255, 7]) };
    const back = fromJson<typeof v>(toJson(v));
    expect(back.a).toBe(1n << 63n);
    expect(back.col).toBeInstanceOf(BigUint64Array);
    expect([...back.col]).toEqual([0n, 1n, (1n << 64n) - 1n]);
    expect(back.bytes).toBeInstanceOf(Uint8Array);
    expect([...back.bytes]).toEqual([0, 255, 7]);
  });

  it("writes a Buffer view as bytes, not as Buffer.toJSON's number array", () => {
    const wire = Buffer.from([9, 1, 2, 3, 9]);
    const text = toJson({ pvclock: wire.subarray(1, 4) });
    expect(text).not.toContain("Buffer");
    const back = fromJson<{ pvclock: Uint8Array }>(text);
    expect(back.pvclock).toBeInstanceOf(Uint8Array);
    expect([...back.pvclock]).toEqual([1, 2, 3]);
  });

  it("still reads u64 columns written as decimal strings", () => {
    const back = fromJson<{ col: BigUint64Array }>('{"col":{"$u64":["0","18446744073709551615"]}}');
    expect([...back.col]).toEqual([0n, (1n << 64n) - 1n]);
  });
});

describe("toJson is JSON.stringify with the tagging replacer, byte for byte", () => {
  const bytes = fc.uint8Array({ maxLength: 40 }).chain((a) =>
    fc.constantFrom(a, Buffer.from(a), new Uint8Array(Buffer.concat([Buffer.alloc(3), Buffer.from(a)]).buffer, 3, a.length)),
  );
  const u64 = fc.array(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), { maxLength: 8 }).map((a) => BigUint64Array.from(a));
  const leaf = fc.oneof(fc.string(), fc.double(), fc.integer(), fc.boolean(), fc.constant(null), fc.constant(undefined), fc.bigInt(), bytes, u64, fc.date());
  const value = fc.letrec((tie) => ({
    node: fc.oneof({ depthSize: "small" }, leaf, fc.array(tie("node"), { maxLength: 5 }), fc.dictionary(fc.string(), tie("node"), { maxKeys: 5 })),
  })).node;

  it("for any value built from what the journal stores", () => {
    fc.assert(
      fc.property(value, (v) => {
        expect(toJson(v)).toBe(toJsonReference(v));
      }),
      { numRuns: 2000 },
    );
  });

  it("toFlatJson writes the same text, lone surrogates and every other code point included", () => {
    const text = fc.string({ unit: "binary" }); // any UTF-16 code units, lone surrogates too
    fc.assert(
      fc.property(fc.dictionary(text, fc.oneof(text, value)), (v) => {
        expect(toFlatJson(v)).toBe(toJson(v));
      }),
      { numRuns: 1000 },
    );
    expect(toFlatJson({ s: "\ud800 \udfff 😀" })).toBe(toJson({ s: "\ud800 \udfff 😀" }));
  });
});

/** The definition `fromJson` must match: JSON.parse with the untagging reviver. */
function fromJsonReference(text: string): unknown {
  return JSON.parse(text, (_k, v: unknown) => {
    if (v !== null && typeof v === "object" && !Array.isArray(v)) {
      const o = v as Record<string, unknown>;
      if (typeof o.$b === "string") return BigInt(o.$b);
      if (typeof o.$u64le === "string") {
        const b = Buffer.from(o.$u64le, "base64");
        if (b.byteLength % 8 !== 0) throw new SyntaxError("$u64le: length is not a multiple of 8 bytes");
        return BigUint64Array.from({ length: b.byteLength / 8 }, (_v, i) => b.readBigUInt64LE(i * 8));
      }
      if (Array.isArray(o.$u64)) return BigUint64Array.from((o.$u64 as string[]).map((x) => BigInt(x)));
      if (typeof o.$bytes === "string") return new Uint8Array(Buffer.from(o.$bytes, "base64"));
    }
    return v;
  });
}

describe("fromJson is JSON.parse with the untagging reviver", () => {
  const tag = fc.oneof(
    fc.bigInt().map((b) => ({ $b: b.toString() })),
    fc.array(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), { maxLength: 4 }).map((a) => ({ $u64: a.map(String) })),
    fc.uint8Array({ maxLength: 8 }).map((a) => ({ $bytes: Buffer.from(a).toString("base64") })),
    fc.array(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), { maxLength: 4 }).map((a) => ({ $u64le: Buffer.from(BigUint64Array.from(a).buffer).toString("base64") })),
  );
  // Keys include the tags' own names and "__proto__" (JSON.parse makes it an own data property).
  const key = fc.oneof(fc.string(), fc.constantFrom("$b", "$u64", "$bytes", "$u64le", "__proto__"));
  const leaf = fc.oneof(fc.string(), fc.double({ noNaN: true, noDefaultInfinity: true }), fc.integer(), fc.boolean(), fc.constant(null), tag);
  const value = fc.letrec((tie) => ({
    node: fc.oneof({ depthSize: "small" }, leaf, fc.array(tie("node"), { maxLength: 5 }), fc.dictionary(key, tie("node"), { maxKeys: 5 })),
  })).node;

  it("for any JSON text with tags anywhere, also beside other keys and under __proto__", () => {
    fc.assert(
      fc.property(value, (v) => {
        const text = JSON.stringify(v);
        // A tag with a bad value ({"$b": "x"}) throws, the same error either way.
        const outcome = (read: (t: string) => unknown) => {
          try {
            return { value: read(text) };
          } catch (e) {
            return { threw: e instanceof Error ? `${e.name}: ${e.message}` : String(e) };
          }
        };
        const got = outcome(fromJson);
        const want = outcome(fromJsonReference);
        expect(got).toStrictEqual(want);
        if (got.value !== null && typeof got.value === "object") expect(Object.getPrototypeOf(got.value)).toBe(Object.getPrototypeOf(want.value));
      }),
      { numRuns: 2000 },
    );
    const proto = fromJson<Record<string, unknown>>('{"__proto__":{"$b":"5"}}');
    expect(Object.getPrototypeOf(proto)).toBe(Object.prototype);
    expect(Object.getOwnPropertyDescriptor(proto, "__proto__")?.value).toBe(5n);
  });
});
