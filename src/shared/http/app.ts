// The control API's base (STYLE: fastify's `build(opts)` returns the app, `main` alone listens, tests
// use `inject()`): one error shape, the bearer token, health, metrics and the OpenAPI document.
// A daemon adds its own routes to the app this returns.

import swagger from "@fastify/swagger";
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from "fastify";
import { assert } from "../errors.js";
import { bigintReplacer } from "../json-safe.js";
import type { Logger } from "../log.js";
import { installBearerAuth } from "./bearer-auth.js";
import { installErrorHandlers } from "./error-handler.js";
import { healthRoutes, type Readiness } from "./health.js";
import { errorBodySchema } from "./json-schemas.js";
import { type Metrics, metricsRoutes } from "./metrics.js";

export const BODY_BYTES_MAX = 64 * 1024;

export interface HttpAppOptions {
  log: Logger;
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
 * `GET /openapi.json`. Every route must declare a response schema (SPEC §4): one that does not is
 * refused when it is added.
 */
export async function buildHttpApp(opts: HttpAppOptions): Promise<FastifyInstance> {
  // Typed as fastify's base logger so the app is a plain FastifyInstance every plugin type accepts.
  const loggerInstance: FastifyBaseLogger = opts.log;
  const app = Fastify({
    loggerInstance,
    bodyLimit: BODY_BYTES_MAX,
    // Refuse unknown body fields (additionalProperties: false) instead of silently dropping them, and
    // wrong JSON types instead of coercing them (fastify's default turns {"vcpus":"4"} and
    // {"vcpus":true} into numbers). Query strings are text: routes declare them as patterned strings.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false } },
  });
  // What a response schema does not cover (another status, an untyped field) still writes bigints as
  // decimal strings: never a 500.
  app.setReplySerializer((payload) => JSON.stringify(payload, bigintReplacer));
  app.addHook("onRoute", (route) => {
    assert(route.schema?.response !== undefined, `route ${String(route.method)} ${route.url} declares no response schema`);
  });
  installErrorHandlers(app);
  if (opts.token !== undefined) installBearerAuth(app, opts.token);
  app.addSchema(errorBodySchema);

  const security = opts.token !== undefined ? [{ bearer: [] }] : [];
  await app.register(swagger, {
    openapi: {
      openapi: "3.0.3",
      info: { title: opts.title, version: opts.version },
      components: { securitySchemes: { bearer: { type: "http", scheme: "bearer" } } },
      security,
    },
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
