// Goal: journal payloads round-trip exactly — bigint, BigUint64Array and bytes, including bytes that
// arrive as a Node Buffer (protobuf decoded from a gRPC message), whose toJSON() would otherwise
// turn them into {type:"Buffer",data:[...]}. Method: toJson → fromJson on nested values.
import { describe, expect, it } from "vitest";
import { fromJson, toJson } from "../../src/shared/serde.js";

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
});
