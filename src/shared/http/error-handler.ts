// Every error answer of the control API goes through here and has one shape,
// `{ error: { code, message, field?, reason? } }`, with the status the error registry gives its code
// (STYLE 10). Client mistakes name what was wrong; anything unexpected is a 500 with a generic
// message, and the details go to the log only.

import type { FastifyError, FastifyInstance } from "fastify";
import { type ErrorCode, httpStatusOf, TscmigError } from "../errors.js";

export function installErrorHandlers(app: FastifyInstance): void {
  app.setErrorHandler((error, request, reply) => {
    const mapped = toTscmigError(error);
    if (mapped === undefined) request.log.error({ err: error }, "internal error");
    const answer = mapped ?? new TscmigError("internal", "internal error");
    if (answer.code === "unauthenticated") void reply.header("www-authenticate", "Bearer");
    return reply.status(httpStatusOf(answer.code)).send({ error: answer.toJSON() });
  });
  app.setNotFoundHandler((request, reply) => {
    const answer = new TscmigError("not_found", `no route ${request.method} ${request.url.split("?")[0]}`);
    return reply.status(httpStatusOf(answer.code)).send({ error: answer.toJSON() });
  });
}

/** The registry error an error stands for, or undefined when it is ours to hide (a 500). */
function toTscmigError(error: unknown): TscmigError | undefined {
  if (error instanceof TscmigError) return error;
  const e = error as Partial<FastifyError>;
  if (e.validation !== undefined && e.validation.length > 0) {
    const [first] = e.validation;
    const missing = first?.params.missingProperty ?? first?.params.additionalProperty;
    const pointer = `${first?.instancePath ?? ""}${typeof missing === "string" ? `/${missing}` : ""}`;
    const field = fieldPath(e.validationContext ?? "body", pointer);
    return new TscmigError("invalid_argument", `${field}: ${first?.message ?? "invalid"}`, { field });
  }
  // fastify's own refusals of a request (malformed JSON, body too large, wrong media type, ...).
  if (typeof e.code === "string" && e.code.startsWith("FST_") && typeof e.statusCode === "number" && e.statusCode < 500) {
    return new TscmigError(codeOfClientStatus(e.statusCode), e.message ?? "bad request");
  }
  return undefined;
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
      return "invalid_argument"; // 400, 413 body too large, 415 media type, ...
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
