// Liveness and readiness, open without the token (orchestrators probe them): `/healthz` answers
// while the process serves HTTP at all; `/readyz` only once the daemon can take work (journal
// recovered, gRPC listening), 503 before.

import type { FastifyInstance } from "fastify";
import { TscmigError } from "../errors.js";
import { errorResponses } from "./json-schemas.js";

const statusBody = { type: "object", required: ["status"], properties: { status: { type: "string" } } } as const;

export function healthRoutes(app: FastifyInstance, ready: () => boolean): void {
  const options = (summary: string, operationId: string) => ({
    config: { public: true },
    schema: { summary, operationId, tags: ["operations"], security: [], response: { 200: { ...statusBody, description: "serving" }, ...errorResponses } },
  });
  app.get("/healthz", options("Liveness", "getHealth"), async () => ({ status: "ok" }));
  app.get("/readyz", options("Readiness: 503 until the daemon can take work", "getReadiness"), async () => {
    if (!ready()) throw new TscmigError("unavailable", "not ready", { reason: "not_ready" });
    return { status: "ready" };
  });
}
