// 64-bit values leave the process as decimal strings (docs/time-across-migration.md#the-time-model): JSON has no bigint, JSON.stringify
// throws on one, and pino prints it as a bare number that every JSON parser rounds to a double.

/**
 * A copy of `value` with every bigint, at any depth of plain objects and arrays, replaced by its
 * decimal string. Other objects (Error, Date, Buffer, class instances) are kept as they are, and so
 * is a subtree without bigints: logging a plain object allocates nothing. Cycles are left in place.
 */
export function toJsonSafe(value: unknown): unknown {
  return convert(value, new Set());
}

function convert(value: unknown, ancestors: Set<object>): unknown {
  if (typeof value === "bigint") return value.toString();
  if (typeof value !== "object" || value === null || ancestors.has(value)) return value;
  const isArray = Array.isArray(value);
  if (!isArray && !isPlainObject(value)) return value;
  ancestors.add(value);
  let copy: unknown[] | Record<string, unknown> | undefined;
  const entries = isArray ? value.entries() : Object.entries(value);
  for (const [key, item] of entries) {
    const converted = convert(item, ancestors);
    if (converted !== item && copy === undefined) copy = isArray ? [...value] : { ...value };
    if (copy !== undefined) (copy as Record<string | number, unknown>)[key] = converted;
  }
  ancestors.delete(value);
  return copy ?? value;
}

function isPlainObject(value: object): boolean {
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/** `JSON.stringify` replacer writing bigints as decimal strings. */
export function bigintReplacer(_key: string, value: unknown): unknown {
  return typeof value === "bigint" ? value.toString() : value;
}
