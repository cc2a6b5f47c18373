// JSON with the value kinds this project stores: bigint, Uint8Array and BigUint64Array are tagged
// so they round-trip exactly (journal payloads; not a wire format).

export function toJson(value: unknown): string {
  return JSON.stringify(value, function (this: unknown, k, v: unknown) {
    // JSON.stringify hands a replacer the value after its toJSON(): a Buffer (bytes decoded from the
    // wire are Buffers) arrives as {type:"Buffer",data:[...]} and would come back a plain object.
    // The holder still has the original.
    const raw = (this as Record<string, unknown>)[k];
    if (raw instanceof Uint8Array) v = raw;
    if (typeof v === "bigint") return { $b: v.toString() };
    if (v instanceof BigUint64Array) return { $u64: Array.from(v, (x) => x.toString()) };
    if (v instanceof Uint8Array) return { $bytes: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("base64") };
    return v;
  });
}

export function fromJson<T>(text: string): T {
  return JSON.parse(text, (_k, v: unknown) => {
    if (v !== null && typeof v === "object" && !Array.isArray(v)) {
      const o = v as Record<string, unknown>;
      if (typeof o.$b === "string") return BigInt(o.$b);
      if (Array.isArray(o.$u64)) return BigUint64Array.from((o.$u64 as string[]).map((x) => BigInt(x)));
      if (typeof o.$bytes === "string") return new Uint8Array(Buffer.from(o.$bytes, "base64"));
    }
    return v;
  }) as T;
}
