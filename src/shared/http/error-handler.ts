// Every error answer of the control API goes through here and has one shape,
// `{ error: { code, message, field?, reason? } }`, with the status the error registry gives its code
// and reason (STYLE 10). Client mistakes name what was wrong; anything unexpected is a 500 with a
// generic message, and the details go to the log only.
//
// Field paths name where in the request the offending value was, one convention for every error:
// `body.guestTscKhz`, `body.vcpus[3]`, `query.vcpus`, `params.id`, `headers.content-type`. Schema
// validation gives them directly; an error from the node names a field of its own request
// (`guestTscKhz`, `id`), and the route says where each lives (`config.fields`), so that a refusal
// by the schema and one by the node name the same value the same way.

import type { FastifyError, FastifyInstance, FastifyRequest } from "fastify";
import { type ErrorCode, httpStatusOf, TscmigError } from "../errors.js";

declare module "fastify" {
  interface FastifyContextConfig {
    /**
     * Where the fields of this route's domain errors are in the request: a field's first segment
     * maps to a path (`{ id: "params.id" }`), `"*"` to a prefix for the others (`"body"`).
     */
    fields?: Readonly<Record<string, string>>;
  }
}

const REQUEST_PARTS = ["body", "query", "params", "headers"] as const;

export function installErrorHandlers(app: FastifyInstance): void {
  // Every method of every path, to tell a wrong method (405, with Allow) from a wrong path (404).
  const routes: { pattern: RegExp; methods: string[] }[] = [];
  app.addHook("onRoute", (route) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    routes.push({ pattern: patternOf(route.url), methods: methods.map(String) });
  });
  app.setErrorHandler((error, request, reply) => {
    const mapped = toTscmigError(error, request);
    if (mapped === undefined) request.log.error({ err: error }, "internal error");
    const answer = mapped ?? new TscmigError("internal", "internal error");
    if (answer.code === "unauthenticated") void reply.header("www-authenticate", "Bearer");
    return reply.status(httpStatusOf(answer.code, answer.reason)).send({ error: answer.toJSON() });
  });
  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split("?")[0] ?? "";
    const allowed = [...new Set(routes.filter((r) => r.pattern.test(path)).flatMap((r) => r.methods))].sort();
    const answer =
      allowed.length > 0
        ? new TscmigError("unimplemented", `${request.method} is not allowed on ${path}: it takes ${allowed.join(", ")}`, { reason: "method_not_allowed" })
        : new TscmigError("not_found", `no route ${request.method} ${path}`);
    if (allowed.length > 0) void reply.header("allow", allowed.join(", "));
    return reply.status(httpStatusOf(answer.code, answer.reason)).send({ error: answer.toJSON() });
  });
}

/** `/v1/vms/:id/migrate` → a regular expression matching its concrete paths. */
function patternOf(url: string): RegExp {
  const parts = url.split("/").map((seg) => (seg.startsWith(":") ? "[^/]+" : seg === "*" ? ".*" : seg.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")));
  return new RegExp(`^${parts.join("/")}/?$`);
}

/** The registry error an error stands for, or undefined when it is ours to hide (a 500). */
function toTscmigError(error: unknown, request: FastifyRequest): TscmigError | undefined {
  if (error instanceof TscmigError) return inRequest(error, request.routeOptions.config.fields);
  const e = error as Partial<FastifyError>;
  if (e.validation !== undefined && e.validation.length > 0) {
    const [first] = e.validation;
    const missing = first?.params.missingProperty ?? first?.params.additionalProperty;
    const pointer = `${first?.instancePath ?? ""}${typeof missing === "string" ? `/${missing}` : ""}`;
    const field = fieldPath(partOf(e.validationContext ?? "body"), pointer);
    return new TscmigError("invalid_argument", `${field}: ${first?.message ?? "invalid"}`, { field });
  }
  // fastify's own refusals of a request (malformed JSON, body too large, wrong media type, ...).
  if (typeof e.code === "string" && e.code.startsWith("FST_") && typeof e.statusCode === "number" && e.statusCode < 500) {
    if (e.statusCode === 413)
      return new TscmigError("resource_exhausted", `body: larger than the ${request.routeOptions.bodyLimit ?? "configured"}-byte limit`, { field: "body", reason: "body_too_large" });
    if (e.statusCode === 415) {
      const type = request.headers["content-type"];
      return new TscmigError("invalid_argument", `headers.content-type: ${type ? `${type} is not supported` : "missing"}; send the body as application/json`, {
        field: "headers.content-type",
        reason: "unsupported_media_type",
      });
    }
    return new TscmigError(codeOfClientStatus(e.statusCode), e.message ?? "bad request", e.statusCode === 400 ? { field: "body" } : {});
  }
  return undefined;
}

/** fastify's validation context names → the request part names of the field-path convention. */
function partOf(context: string): string {
  return context === "querystring" ? "query" : context;
}

/**
 * A domain error's field (`guestTscKhz`, `id`) as a path in the request (`body.guestTscKhz`,
 * `params.id`), by the route's `config.fields`; its message's leading "field: " follows. A field
 * already in a request part, or a route without the map, is left as it is.
 */
function inRequest(e: TscmigError, fields: Readonly<Record<string, string>> | undefined): TscmigError {
  const f = e.field;
  if (f === undefined || fields === undefined || REQUEST_PARTS.some((p) => f === p || f.startsWith(`${p}.`) || f.startsWith(`${p}[`))) return e;
  const root = /^[^.[]+/.exec(f)?.[0] ?? f;
  const rest = f.slice(root.length);
  const mapped = fields[root] !== undefined ? `${fields[root]}${rest}` : fields["*"] !== undefined ? `${fields["*"]}.${f}` : undefined;
  if (mapped === undefined) return e;
  const message = e.message.startsWith(`${f}: `) ? `${mapped}: ${e.message.slice(f.length + 2)}` : e.message;
  return new TscmigError(e.code, message, {
    field: mapped,
    ...(e.errno !== undefined ? { errno: e.errno } : {}),
    ...(e.reason !== undefined ? { reason: e.reason } : {}),
  });
}

function codeOfClientStatus(status: number): ErrorCode {
  switch (status) {
    case 401:
      return "unauthenticated";
    case 403:
      return "permission_denied";
    case 404:
      return "not_found";
    case 429:
      return "resource_exhausted";
    default:
      return "invalid_argument"; // 400: malformed JSON, a bad Content-Length, ...
  }
}

/** `body` + `/vcpus/3/ratio` → `body.vcpus[3].ratio`, the project's field-path form. */
function fieldPath(context: string, pointer: string): string {
  let path = context;
  for (const raw of pointer.split("/").slice(1)) {
    const part = raw.replaceAll("~1", "/").replaceAll("~0", "~");
    path += /^[0-9]+$/.test(part) ? `[${part}]` : `.${part}`;
  }
  return path;
}
