// Goal: journal payloads (staged snapshots, persisted VMs) round-trip exactly through serde's JSON.
// Method: encode and decode values of every tagged kind, including bytes that arrive as Buffer
// views (what the gRPC codec hands the destination) and the older decimal u64 column form.
import { describe, expect, it } from "vitest";
import { fromJson, toJson } from "../../src/shared/serde.js";

describe("serde", () => {
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
