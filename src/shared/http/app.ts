// The control API's base (STYLE: fastify's `build(opts)` returns the app, `main` alone listens, tests
// use `inject()`): one error shape, the bearer token, health, metrics and the OpenAPI document.
// A daemon adds its own routes to the app this returns.

import swagger from "@fastify/swagger";
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply } from "fastify";
import { assert, httpStatusOf, TscmigError } from "../errors.js";
import { bigintReplacer } from "../json-safe.js";
import type { PinoLogger } from "../log.js";
import { installBearerAuth } from "./bearer-auth.js";
import { installErrorHandlers } from "./error-handler.js";
import { healthRoutes, type Readiness } from "./health.js";
import { errorBodySchema } from "./json-schemas.js";
import { type Metrics, metricsRoutes } from "./metrics.js";

export const BODY_BYTES_MAX = 64 * 1024;
/**
 * The longest path parameter the router takes (fastify's default is 100). The longest VM id a create
 * accepts must fit, or such a VM could be made but never read, migrated or deleted by its id.
 */
export const PATH_PARAM_CHARS_MAX = 128;
const REQUEST_ID = /^[A-Za-z0-9._:/+=-]{1,128}$/;
let nextRequest = 1;

/** An incoming X-Request-Id worth keeping: one header, a plain token of at most 128 characters. */
export function requestIdOf(header: string | string[] | undefined): string | undefined {
  return typeof header === "string" && REQUEST_ID.test(header) ? header : undefined;
}

export interface HttpAppOptions {
  log: PinoLogger;
  /** When set, every route not marked public requires `Authorization: Bearer <token>`. */
  token?: string;
  /** OpenAPI `info`. */
  title: string;
  version: string;
  /** Serves `GET /metrics` from this registry when given. */
  metrics?: Metrics;
  /** Drives `GET /readyz` (with the reason when not ready); ready at once when absent. */
  ready?: () => boolean | Readiness;
}

/**
 * Builds the app; listens nowhere. Async because the OpenAPI plugin must be loaded before any route is
 * declared, or it misses them: every route added to the returned app, directly or by plugin, is in
 * `GET /openapi.json`. Every route must declare a response schema (docs/operations.md#interfaces): one that does not is
 * refused when it is added.
 */
export async function buildHttpApp(opts: HttpAppOptions): Promise<FastifyInstance> {
  // Typed as fastify's base logger so the app is a plain FastifyInstance every plugin type accepts.
  const loggerInstance: FastifyBaseLogger = opts.log;
  const app = Fastify({
    loggerInstance,
    bodyLimit: BODY_BYTES_MAX,
    routerOptions: { maxParamLength: PATH_PARAM_CHARS_MAX },
    // Refuse unknown body fields (additionalProperties: false) instead of silently dropping them, and
    // wrong JSON types instead of coercing them (fastify's default turns {"vcpus":"4"} and
    // {"vcpus":true} into numbers). Query strings are text: routes declare them as patterned strings.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false } },
    // A caller's X-Request-Id names the request in every log line about it (`reqId`) and comes back
    // in the answer, so a client, a proxy and the daemon agree on one id; without one (or with one that is
    // not a plain token) the daemon makes its own.
    genReqId: (req) => requestIdOf(req.headers["x-request-id"]) ?? `req-${(nextRequest++).toString(36)}`,
    // The router's own refusals (a path parameter past its length, a URL that does not decode) come
    // before any route's error handler: answered here in the one error shape, the path not echoed.
    frameworkErrors: (error, _request, reply) => {
      const answer =
        error.code === "FST_ERR_MAX_PARAM_LENGTH"
          ? new TscmigError("invalid_argument", `params: a path parameter is longer than the router takes (${PATH_PARAM_CHARS_MAX} characters)`, { field: "params" })
          : new TscmigError("invalid_argument", `path: not a valid request path (${error.code})`, { field: "path" });
      return (reply as FastifyReply).status(httpStatusOf(answer.code, answer.reason)).send({ error: answer.toJSON() });
    },
  });
  app.addHook("onRequest", async (request, reply) => {
    void reply.header("x-request-id", request.id);
  });
  closeKeepAlivesOnClose(app);
  // What a response schema does not cover (another status, an untyped field) still writes bigints as
  // decimal strings: never a 500.
  app.setReplySerializer((payload) => JSON.stringify(payload, bigintReplacer));
  app.addHook("onRoute", (route) => {
    assert(route.schema?.response !== undefined, `route ${String(route.method)} ${route.url} declares no response schema`);
  });
  // Bodies are JSON only: fastify's built-in text/plain parser would hand a route a string, refused
  // as "body: must be object" instead of the 415 every other media type gets.
  app.removeContentTypeParser("text/plain");
  installErrorHandlers(app);
  if (opts.token !== undefined) installBearerAuth(app, opts.token);
  app.addSchema(errorBodySchema);

  const security = opts.token !== undefined ? [{ bearer: [] }] : [];
  await app.register(swagger, {
    openapi: {
      openapi: "3.0.3",
      info: { title: opts.title, version: opts.version, description: "Control API of a tscmig daemon. 64-bit values are decimal strings; every error answer is an Error." },
      components: { securitySchemes: { bearer: { type: "http", scheme: "bearer" } } },
      tags: [
        { name: "vms", description: "VMs and their guests' clocks" },
        { name: "migrations", description: "Migrating a VM to another daemon, and what it did to guest time" },
        { name: "host", description: "This emulated host's clocks and injected skew" },
        { name: "history", description: "What the guests saw, for the checker" },
        { name: "events", description: "The live event stream the dashboard and `tscmig watch` follow" },
        { name: "operations", description: "Health, readiness and metrics" },
      ],
      security,
    },
    // Shared schemas appear under their own $id (components/schemas/Error, .../Vm), not def-N.
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => (typeof json.$id === "string" ? json.$id : `def-${i}`) },
  });
  let document: string | undefined; // routes are fixed once the app is ready
  app.get("/openapi.json", { config: { public: true }, schema: { hide: true, response: { 200: { type: "object" } } } }, async (_request, reply) => {
    document ??= JSON.stringify(app.swagger());
    return reply.type("application/json").send(document);
  });
  healthRoutes(app, opts.ready ?? (() => true));
  if (opts.metrics) metricsRoutes(app, opts.metrics);
  return app;
}

/**
 * Once close() begins, every answer closes its connection, those to requests already in flight too:
 * server.close() ends only the connections idle at that moment, and a keep-alive one whose answer
 * goes out later held close() until its keep-alive timeout (72 s), past a daemon's shutdown grace
 * (it then exited 1 on SIGTERM).
 */
function closeKeepAlivesOnClose(app: FastifyInstance): void {
  let closing = false;
  app.addHook("preClose", async () => {
    closing = true;
  });
  app.addHook("onSend", async (_request, reply, payload) => {
    if (closing) void reply.header("connection", "close");
    return payload;
  });
}
