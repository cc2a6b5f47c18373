// JSON with the value kinds this project stores: bigint, Uint8Array and BigUint64Array are tagged
// so they round-trip exactly (journal payloads; not a wire format).
//
// A BigUint64Array is written as the base64 of its little-endian bytes (`$u64le`): a 1024-vCPU
// column is one 11 KB string instead of 1024 decimal strings, so staging and persisting a large VM
// stays cheap (BENCHMARKS.md). A journal may also hold `$u64` (a decimal string per element): it reads.

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function u64ToBase64(v: BigUint64Array): string {
  if (LITTLE_ENDIAN) return Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("base64");
  const b = Buffer.alloc(v.byteLength);
  for (let i = 0; i < v.length; i++) b.writeBigUInt64LE(v[i] as bigint, i * 8);
  return b.toString("base64");
}

function u64FromBase64(text: string): BigUint64Array {
  const b = Buffer.from(text, "base64");
  if (b.byteLength % 8 !== 0) throw new SyntaxError("$u64le: length is not a multiple of 8 bytes");
  const out = new BigUint64Array(b.byteLength / 8);
  if (LITTLE_ENDIAN) new Uint8Array(out.buffer).set(b);
  else for (let i = 0; i < out.length; i++) out[i] = b.readBigUInt64LE(i * 8);
  return out;
}

/**
 * JSON.stringify's text with the tags above, written by one walk instead of JSON.stringify calling a
 * replacer for every key (and allocating a tag object per bigint): a VM's state is persisted on
 * every guest sync, a hot path of every chaos campaign. Plain data only, as stored here: objects,
 * arrays, strings, numbers, booleans, null, bigint, Uint8Array (Buffer included), BigUint64Array;
 * anything with its own toJSON (other than bytes) is handed to it, as JSON.stringify would.
 */
export function toJson(value: unknown): string {
  return write(value, false) as string; // undefined for undefined, as JSON.stringify
}

/**
 * `toJson`'s text as one flat string, for a text kept for long. V8 keeps a string built by joins as
 * a rope of its pieces (a 32-byte node per join, and every piece besides, keys included): a 4-vCPU
 * VM's hypervisor state is some 120 of them, 4 KB of heap for 1.5 KB of text, held per VM for as
 * long as it runs (vm-persistence.ts). The copy is exact: the text is well-formed (JSON.stringify
 * escapes lone surrogates), so it comes through UTF-8 unchanged.
 */
export function toFlatJson(value: object): string {
  return Buffer.from(toJson(value), "utf8").toString("utf8");
}

/** `undefined` where JSON.stringify omits a value (undefined, functions, symbols). */
function write(v: unknown, inArray: boolean): string | undefined {
  switch (typeof v) {
    case "string":
      return JSON.stringify(v);
    case "number":
      return Number.isFinite(v) ? String(v) : "null";
    case "boolean":
      return v ? "true" : "false";
    case "bigint":
      return `{"$b":"${v.toString()}"}`;
    case "undefined":
    case "function":
    case "symbol":
      return inArray ? "null" : undefined;
  }
  if (v === null) return "null";
  if (v instanceof BigUint64Array) return `{"$u64le":"${u64ToBase64(v)}"}`;
  if (v instanceof Uint8Array) return `{"$bytes":"${Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("base64")}"}`;
  const o = v as { toJSON?: () => unknown };
  if (typeof o.toJSON === "function") return write(o.toJSON(), inArray);
  if (Array.isArray(v)) {
    let out = "[";
    for (let i = 0; i < v.length; i++) out += (i > 0 ? "," : "") + (write(v[i], true) as string);
    return out + "]";
  }
  let out = "{";
  let first = true;
  for (const k of Object.keys(v as object)) {
    const s = write((v as Record<string, unknown>)[k], false);
    if (s === undefined) continue;
    out += (first ? "" : ",") + JSON.stringify(k) + ":" + s;
    first = false;
  }
  return out + "}";
}

/**
 * Reads `toJson`'s text. One JSON.parse, then one walk that swaps each tagged object for its value:
 * JSON.parse with a reviver calls it for every key of every object (a restarted daemon reads every
 * VM's state this way, and a campaign restarts daemons thousands of times).
 */
export function fromJson<T>(text: string): T {
  return untag(JSON.parse(text)) as T;
}

/** `v` with every tagged object in it replaced by its value (in place; the parsed tree is ours). */
function untag(v: unknown): unknown {
  if (v === null || typeof v !== "object") return v;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const x: unknown = v[i];
      if (x !== null && typeof x === "object") v[i] = untag(x);
    }
    return v;
  }
  const o = v as Record<string, unknown>;
  for (const k in o) {
    const x = o[k];
    if (x === null || typeof x !== "object") continue;
    const y = untag(x);
    if (y === x) continue;
    // An own "__proto__" key (JSON.parse makes one) is a data property: assigning would set the prototype.
    if (k === "__proto__") Object.defineProperty(o, k, { value: y, writable: true, enumerable: true, configurable: true });
    else o[k] = y;
  }
  return tagged(o);
}

/** A tag's value, or `o` itself: as the reviver did, after its members were read. */
function tagged(o: Record<string, unknown>): unknown {
  if (typeof o.$b === "string") return BigInt(o.$b);
  if (typeof o.$u64le === "string") return u64FromBase64(o.$u64le);
  if (Array.isArray(o.$u64)) return BigUint64Array.from((o.$u64 as string[]).map((x) => BigInt(x)));
  if (typeof o.$bytes === "string") return new Uint8Array(Buffer.from(o.$bytes, "base64"));
  return o;
}
