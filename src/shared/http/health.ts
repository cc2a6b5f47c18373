// Liveness and readiness, open without the token (orchestrators probe them): `/healthz` answers
// while the process serves HTTP at all; `/readyz` only once the daemon can take work (journal
// recovered, gRPC listening, journal writable), 503 before — and says why, so an operator reading a
// failing probe learns the cause (`starting`, `journal_unwritable` with `cause: disk_full`, ...)
// without reading logs. The 503 body carries the error shape every error answer has, too.

import type { FastifyInstance } from "fastify";
import { errorResponses } from "./json-schemas.js";

/** Why a daemon is or is not ready. `reason` is a stable token; `cause` refines it. */
export interface Readiness {
  ready: boolean;
  reason?: string;
  cause?: string;
  message?: string;
}

const statusBody = { type: "object", required: ["status"], properties: { status: { type: "string" } } } as const;
const readyBody = { type: "object", required: ["status", "ready"], properties: { status: { type: "string" }, ready: { type: "boolean" } } } as const;
const notReadyBody = {
  type: "object",
  required: ["status", "ready", "reason", "message", "error"],
  properties: {
    status: { type: "string", enum: ["not_ready"] },
    ready: { type: "boolean" },
    reason: { type: "string", description: "starting | shutting_down | journal_unwritable | not_ready" },
    cause: { type: "string", description: "for journal_unwritable: disk_full or journal_io_error" },
    message: { type: "string" },
    error: { $ref: "Error#/properties/error" },
  },
} as const;

export function healthRoutes(app: FastifyInstance, ready: () => boolean | Readiness): void {
  const options = (summary: string, operationId: string, response: object) => ({ config: { public: true }, schema: { summary, operationId, tags: ["operations"], security: [], response } });
  app.get("/healthz", options("Liveness", "getHealth", { 200: { ...statusBody, description: "serving" }, ...errorResponses }), async () => ({ status: "ok" }));
  app.get(
    "/readyz",
    options("Readiness: 503 until the daemon can take work, saying why", "getReadiness", { 200: { ...readyBody, description: "ready" }, 503: { ...notReadyBody, description: "not ready, and why" }, ...errorResponses }),
    async (_req, reply) => {
    const r = readinessOf(ready());
    if (r.ready) return { status: "ready", ready: true };
    const reason = r.reason ?? "not_ready";
    const message = r.message ?? "not ready";
    return reply.status(503).send({
      status: "not_ready",
      ready: false,
      reason,
      ...(r.cause !== undefined ? { cause: r.cause } : {}),
      message,
      error: { code: "unavailable", message, reason },
    });
    },
  );
}

function readinessOf(r: boolean | Readiness): Readiness {
  return typeof r === "boolean" ? { ready: r } : r;
}
