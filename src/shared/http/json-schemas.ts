// JSON-schema fragments shared by every route. 64-bit values travel as decimal strings (docs/operations.md#interfaces):
// a JSON number loses precision past 2^53, and fastify answers 500 on a bigint unless the response
// schema types that field as a string (it then writes the bigint's decimal form).

import type { Shape } from "../codec.js";
import { ERROR_CODES, invalid } from "../errors.js";

/** An unsigned 64-bit integer as a decimal string. The pattern bounds the length; `u64Of` the value. */
export const u64String = { type: "string", pattern: "^[0-9]{1,20}$" } as const;
/** A signed 64-bit integer as a decimal string; `i64Of` checks the range. */
export const i64String = { type: "string", pattern: "^-?[0-9]{1,19}$" } as const;

const U64_MAX = (1n << 64n) - 1n;
const I64_MIN = -(1n << 63n);
const I64_MAX = (1n << 63n) - 1n;

/** The bigint of a request's u64 string, or `invalid_argument` naming `field` when out of range. */
export function u64Of(text: string, field: string): bigint {
  return inRange(text, 0n, U64_MAX, field);
}

export function i64Of(text: string, field: string): bigint {
  return inRange(text, I64_MIN, I64_MAX, field);
}

function inRange(text: string, min: bigint, max: bigint, field: string): bigint {
  if (!/^-?[0-9]{1,20}$/.test(text)) throw invalid(field, "must be a decimal integer string");
  const value = BigInt(text);
  if (value < min || value > max) throw invalid(field, `must be within ${min}..${max}`);
  return value;
}

/** The body of every error answer: `{ error: { code, message, field?, reason?, errno? } }`. */
export const errorBodySchema = {
  $id: "Error",
  type: "object",
  description: "Every error answer of the control API.",
  examples: [{ error: { code: "invalid_argument", message: "body.vcpus: must be <= 1024", field: "body.vcpus" } }],
  required: ["error"],
  properties: {
    error: {
      type: "object",
      required: ["code", "message"],
      properties: {
        code: { type: "string", enum: Object.keys(ERROR_CODES) },
        message: { type: "string" },
        field: { type: "string", description: "path of the offending field, e.g. body.vcpus" },
        reason: { type: "string", description: "stable machine-readable refusal reason" },
        errno: { type: "string", description: "errno a real KVM ioctl would have returned" },
      },
    },
  },
} as const;

/** Spread into a route's `response` so its error answers are typed and documented. */
export const errorResponses = {
  "4xx": { description: "the request was refused: error.code, error.field and error.reason say why", $ref: "Error#" },
  "5xx": { description: "the daemon could not answer (unavailable, deadline_exceeded, internal)", $ref: "Error#" },
} as const;

/** What a route documents of one field beside what its codec says: a description, an example. */
export interface FieldDoc {
  description?: string;
  example?: string | number;
}

/**
 * The JSON schema of what `shape` (a codec's) writes at the control API: 64-bit values as decimal
 * strings, objects open. `docs` describes an object's fields, keyed by name at any depth.
 */
export function schemaOf(shape: Shape, docs: Readonly<Record<string, FieldDoc>> = {}): Record<string, unknown> {
  switch (shape.kind) {
    case "bigint":
      return shape.min < 0n ? { ...i64String } : { ...u64String };
    case "integer":
      return { type: "integer", ...(shape.min > Number.MIN_SAFE_INTEGER ? { minimum: shape.min } : {}) };
    case "number":
      return { type: "number" };
    case "string":
      return { type: "string" };
    case "boolean":
      return { type: "boolean" };
    case "enum":
      return { type: typeof shape.values[0], enum: [...shape.values] };
    case "array":
      return { type: "array", items: schemaOf(shape.item, docs) };
    case "optional":
    case "nullable":
      return { ...schemaOf(shape.inner, docs), ...(shape.kind === "nullable" ? { nullable: true } : {}) };
    case "object":
      return { type: "object", additionalProperties: true, properties: propertiesOf(shape.fields, docs) };
    case "record":
      return { type: "object", additionalProperties: schemaOf(shape.value, docs) };
    case "union":
      return { type: "object", additionalProperties: true, required: [shape.tag] };
    case "custom":
      return {};
  }
}

function propertiesOf(fields: Readonly<Record<string, Shape>>, docs: Readonly<Record<string, FieldDoc>>): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(fields).map(([k, s]) => {
      const d = docs[k];
      return [k, { ...schemaOf(s, docs), ...(d?.description !== undefined ? { description: d.description } : {}), ...(d?.example !== undefined ? { examples: [d.example] } : {}) }];
    }),
  );
}
