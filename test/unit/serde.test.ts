// Goal: journal payloads (staged snapshots, persisted VMs) round-trip exactly through serde's JSON.
// Method: encode and decode values of every tagged kind, including bytes that arrive as Buffer
// views (what the gRPC codec hands the destination) and the older decimal u64 column form.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { fromJson, toJson } from "../../src/shared/serde.js";

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
});
