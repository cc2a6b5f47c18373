// The control API's token (docs/operations.md#security-tls-peer-tokens-the-control-api-token): with a token configured, every route requires
// `Authorization: Bearer <token>` except those marked `config: { public: true }` (health, readiness,
// metrics, the OpenAPI document). Unknown routes are not public: they answer 401 before 404, so an
// unauthenticated caller learns nothing about what exists.

import { createHash, timingSafeEqual } from "node:crypto";
import type { FastifyInstance } from "fastify";
import { TscmigError } from "../errors.js";

declare module "fastify" {
  interface FastifyContextConfig {
    /** Reachable without the bearer token. */
    public?: boolean;
  }
}

export function installBearerAuth(app: FastifyInstance, token: string): void {
  // Compare digests: equal lengths whatever was sent, so the comparison time says nothing of the token.
  const expected = digest(token);
  app.addHook("onRequest", async (request) => {
    if (request.routeOptions.config.public === true) return;
    const m = /^Bearer +(\S+) *$/i.exec(request.headers.authorization ?? "");
    if (m === null || !timingSafeEqual(digest(m[1] as string), expected))
      throw new TscmigError("unauthenticated", "missing or invalid bearer token");
  });
}

function digest(text: string): Buffer {
  return createHash("sha256").update(text).digest();
}
