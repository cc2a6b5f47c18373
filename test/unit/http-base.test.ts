// Goal: the control API's base answers every error in one shape with the registry's status, guards
// routes with the token, serves health, metrics and OpenAPI, never writes a bigint as a number, and
// closes without waiting on a keep-alive connection whose answer went out after close began.
// Method: apps built in process and driven with `inject()`; one listens on loopback for the close.
import { Agent, request as httpRequest } from "node:http";
import type { AddressInfo } from "node:net";
import { Writable } from "node:stream";
import type { FastifyInstance } from "fastify";
import { afterEach, describe, expect, it } from "vitest";
import { ERROR_CODES, type ErrorCode, TscmigError } from "../../src/shared/errors.js";
import { BODY_BYTES_MAX, buildHttpApp, type HttpAppOptions } from "../../src/shared/http/app.js";
import { errorResponses, i64Of, u64Of, u64String } from "../../src/shared/http/json-schemas.js";
import { createMetrics, observeMigration } from "../../src/shared/http/metrics.js";
import { createLogger } from "../../src/shared/log.js";

const TOKEN = "t0ken-for-tests";
const apps: FastifyInstance[] = [];

function captureLog(): { lines: string[]; log: ReturnType<typeof createLogger> } {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(chunk.toString());
      done();
    },
  });
  return { lines, log: createLogger({ level: "info", name: "test", destination }) };
}

/** An app with sample routes: one that throws what it is told, one validated body, one bigint answer. */
async function build(opts: Partial<HttpAppOptions> = {}): Promise<FastifyInstance> {
  const app = await buildHttpApp({ log: captureLog().log, title: "tscmig test", version: "0.0.0", ...opts });
  apps.push(app);
  app.get<{ Params: { code: string } }>("/v1/fail/:code", { schema: { response: { ...errorResponses } } }, async (request) => {
    const code = request.params.code;
    if (code in ERROR_CODES) throw new TscmigError(code as ErrorCode, `failed with ${code}`, { field: "x.y", reason: "because" });
    throw new Error("secret internal detail");
  });
  app.post(
    "/v1/vms",
    {
      schema: {
        summary: "Create a VM (sample)",
        body: {
          type: "object",
          required: ["vcpus"],
          additionalProperties: false,
          properties: { vcpus: { type: "integer", minimum: 1 }, tsc: { type: "array", items: u64String } },
        },
        response: { 201: { type: "object", properties: { id: { type: "string" } } }, ...errorResponses },
      },
    },
    async (_request, reply) => reply.status(201).send({ id: "vm-1" }),
  );
  app.get(
    "/v1/big",
    { schema: { response: { 200: { type: "object", properties: { tsc: u64String, offset: { type: "string" } } } } } },
    async () => ({ tsc: 18_446_744_073_709_551_615n, offset: -9_007_199_254_740_993n }),
  );
  app.get("/v1/loose", { schema: { response: { 200: {} } } }, async () => ({ nested: [{ ns: 9_007_199_254_740_993n }] }));
  return app;
}

afterEach(async () => {
  await Promise.all(apps.splice(0).map((app) => app.close()));
});

describe("error answers", () => {
  it.each(Object.keys(ERROR_CODES) as ErrorCode[])("maps %s to its registry status and body", async (code) => {
    const app = await build();
    const res = await app.inject({ method: "GET", url: `/v1/fail/${code}` });
    expect(res.statusCode).toBe(ERROR_CODES[code].http);
    expect(res.json()).toEqual({ error: { code, message: `failed with ${code}`, field: "x.y", reason: "because" } });
  });

  it("answers an unexpected error with a generic 500 and logs the detail", async () => {
    const { lines, log } = captureLog();
    const app = await build({ log });
    const res = await app.inject({ method: "GET", url: "/v1/fail/boom" });
    expect(res.statusCode).toBe(500);
    expect(res.json()).toEqual({ error: { code: "internal", message: "internal error" } });
    expect(res.body).not.toContain("secret");
    expect(lines.join("")).toContain("secret internal detail");
  });

  it.each([
    [{ vcpus: 0 }, "body.vcpus"],
    [{}, "body.vcpus"],
    [{ vcpus: 1, extra: true }, "body.extra"],
    [{ vcpus: 1, tsc: ["1", "x"] }, "body.tsc[1]"],
  ])("answers a validation failure with 400 naming the field (%j)", async (payload, field) => {
    const app = await build();
    const res = await app.inject({ method: "POST", url: "/v1/vms", payload });
    expect(res.statusCode).toBe(400);
    expect(res.json().error).toMatchObject({ code: "invalid_argument", field });
    expect(res.json().error.message).toMatch(new RegExp(`^${field.replace(/[[\].]/g, "\\$&")}: `));
  });

  it("answers a malformed body 400, an oversized one 413 and another media type 415", async () => {
    const app = await build();
    const json = { "content-type": "application/json" };
    for (const [payload, headers, status, code] of [
      ["{not json", json, 400, "invalid_argument"],
      [JSON.stringify({ vcpus: 1, pad: "x".repeat(BODY_BYTES_MAX) }), json, 413, "resource_exhausted"],
      ["vcpus=1", { "content-type": "text/csv" }, 415, "invalid_argument"],
    ] as const) {
      const res = await app.inject({ method: "POST", url: "/v1/vms", payload, headers });
      expect(res.statusCode).toBe(status);
      expect(res.json().error.code).toBe(code);
    }
  });

  it("answers a known path with another method 405, listing the methods it takes in Allow", async () => {
    const app = await build();
    const res = await app.inject({ method: "DELETE", url: "/v1/vms" });
    expect(res.statusCode).toBe(405);
    expect(res.headers.allow).toBe("POST");
    expect(res.json().error).toMatchObject({ code: "unimplemented", reason: "method_not_allowed" });
  });

  it("maps refusal reasons to HTTP's more precise statuses (a full disk is 507)", async () => {
    const app = await build();
    app.get("/v1/full", { schema: { response: { ...errorResponses } } }, async () => {
      throw new TscmigError("resource_exhausted", "disk full", { reason: "disk_full" });
    });
    expect((await app.inject({ method: "GET", url: "/v1/full" })).statusCode).toBe(507);
  });

  it("answers the router's own refusals (an overlong path parameter, a bad URL) in the one shape, not echoing the path", async () => {
    const app = await build();
    for (const url of [`/v1/fail/${"a".repeat(5000)}`, "/v1/fail/%zz"]) {
      const res = await app.inject({ method: "GET", url });
      expect(res.statusCode).toBe(400);
      const body = res.json();
      expect(body.error.code).toBe("invalid_argument");
      expect(JSON.stringify(body)).not.toContain("aaaaaaaaaa");
    }
  });

  it("answers an unknown route with 404 not_found", async () => {
    const app = await build();
    const res = await app.inject({ method: "GET", url: "/v1/nothing?x=1" });
    expect(res.statusCode).toBe(404);
    expect(res.json()).toEqual({ error: { code: "not_found", message: "no route GET /v1/nothing" } });
  });

  it("refuses a route without a response schema", async () => {
    const app = await build();
    expect(() => app.get("/v1/bare", async () => ({}))).toThrow(/declares no response schema/);
  });
});

describe("bearer token", () => {
  it("guards every route but health, readiness, metrics and the OpenAPI document", async () => {
    const app = await build({ token: TOKEN, metrics: createMetrics() });
    const none = await app.inject({ method: "POST", url: "/v1/vms", payload: { vcpus: 1 } });
    expect(none.statusCode).toBe(401);
    expect(none.json().error.code).toBe("unauthenticated");
    expect(none.headers["www-authenticate"]).toBe("Bearer");
    for (const authorization of ["Bearer wrong", `Basic ${TOKEN}`, `Bearer ${TOKEN}x`, "Bearer", `bearer  ${TOKEN.slice(1)}`]) {
      const res = await app.inject({ method: "POST", url: "/v1/vms", payload: { vcpus: 1 }, headers: { authorization } });
      expect(res.statusCode, authorization).toBe(401);
    }
    const ok = await app.inject({ method: "POST", url: "/v1/vms", payload: { vcpus: 1 }, headers: { authorization: `Bearer ${TOKEN}` } });
    expect(ok.statusCode).toBe(201);
    for (const url of ["/healthz", "/readyz", "/metrics", "/openapi.json"]) expect((await app.inject({ method: "GET", url })).statusCode, url).toBe(200);
    expect((await app.inject({ method: "GET", url: "/v1/unknown" })).statusCode).toBe(401);
  });

  it("is off when no token is configured", async () => {
    const app = await build();
    expect((await app.inject({ method: "POST", url: "/v1/vms", payload: { vcpus: 1 } })).statusCode).toBe(201);
  });
});

describe("health, readiness, metrics, OpenAPI", () => {
  it("answers healthz always and readyz from the callback", async () => {
    let ready = false;
    const app = await build({ ready: () => ready });
    expect((await app.inject({ method: "GET", url: "/healthz" })).json()).toEqual({ status: "ok" });
    const before = await app.inject({ method: "GET", url: "/readyz" });
    expect(before.statusCode).toBe(503);
    expect(before.json().error).toMatchObject({ code: "unavailable", reason: "not_ready" });
    ready = true;
    expect((await app.inject({ method: "GET", url: "/readyz" })).json()).toEqual({ status: "ready", ready: true });
  });

  it("says why it is not ready when the callback gives a reason", async () => {
    const app = await build({ ready: () => ({ ready: false, reason: "journal_unwritable", cause: "disk_full", message: "the journal cannot be written (SQLITE_FULL)" }) });
    const res = await app.inject({ method: "GET", url: "/readyz" });
    expect(res.statusCode).toBe(503);
    expect(res.json()).toEqual({
      status: "not_ready",
      ready: false,
      reason: "journal_unwritable",
      cause: "disk_full",
      message: "the journal cannot be written (SQLITE_FULL)",
      error: { code: "unavailable", message: "the journal cannot be written (SQLITE_FULL)", reason: "journal_unwritable" },
    });
  });

  it("serves the daemon's metrics as Prometheus text", async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    observeMigration(metrics, { outcome: "committed", policy: "advance", estimator: "one-sided", blackoutNs: 42_000_000n, tscErrorNs: -3_000n, errorBoundNs: 2_000n });
    metrics.vms.set(2);
    metrics.vcpus.set(8);
    const app = await build({ metrics });
    const res = await app.inject({ method: "GET", url: "/metrics" });
    expect(res.statusCode).toBe(200);
    expect(res.headers["content-type"]).toContain("text/plain");
    for (const name of ["tscmig_migrations_total", "tscmig_migration_blackout_seconds", "tscmig_migration_introduced_error_seconds", "tscmig_vms", "tscmig_vcpus"])
      expect(res.body).toContain(`# TYPE ${name} `);
    const labels = 'policy="advance",estimator="one-sided"';
    expect(res.body).toContain(`tscmig_migrations_total{outcome="committed",${labels}} 1`);
    expect(res.body).toContain(`tscmig_migration_introduced_error_seconds_bucket{le="0.000001",${labels}} 0`);
    expect(res.body).toContain(`tscmig_migration_introduced_error_seconds_bucket{le="0.000005",${labels}} 1`);
    expect(res.body).toContain(`tscmig_migration_blackout_seconds_bucket{le="0.05",${labels}} 1`);
    expect(res.body).toContain(`tscmig_migration_bound_exceeded_total{${labels}} 1`); // 3 µs against a 2 µs bound
    expect(res.body).toContain(`tscmig_migration_error_to_bound_ratio_bucket{le="1.5",${labels}} 1`);
    expect(res.body).toContain(`tscmig_migration_error_to_bound_ratio_bucket{le="1",${labels}} 0`);
    expect(res.body).toContain("tscmig_vcpus 8");
    expect(res.body).toMatch(/^tscmig_build_info\{version="[^"]+",node="[0-9.]+"\} 1$/m);
    expect(createMetrics({ defaultMetrics: false }).registry).not.toBe(metrics.registry); // one registry per daemon
  });

  it("lists the routes and the token scheme in openapi.json", async () => {
    const app = await build({ token: TOKEN });
    const res = await app.inject({ method: "GET", url: "/openapi.json" });
    expect(res.statusCode).toBe(200);
    const doc = res.json();
    expect(doc.info).toMatchObject({ title: "tscmig test", version: "0.0.0" });
    expect(doc.tags.map((t: { name: string }) => t.name)).toEqual(["vms", "migrations", "host", "history", "events", "operations"]);
    expect(doc.paths["/v1/vms"].post.summary).toBe("Create a VM (sample)");
    expect(doc.paths["/v1/vms"].post.requestBody.content["application/json"].schema.required).toEqual(["vcpus"]);
    expect(doc.paths["/healthz"].get.security).toEqual([]);
    expect(doc.paths["/openapi.json"]).toBeUndefined();
    expect(doc.components.securitySchemes.bearer).toEqual({ type: "http", scheme: "bearer" });
    expect(doc.security).toEqual([{ bearer: [] }]);
  });
});

describe("64-bit values in JSON", () => {
  it("writes a bigint as a decimal string where the schema types it so", async () => {
    const app = await build();
    const res = await app.inject({ method: "GET", url: "/v1/big" });
    expect(res.statusCode).toBe(200);
    expect(res.body).toBe('{"tsc":"18446744073709551615","offset":"-9007199254740993"}');
  });

  it("writes a bigint as a decimal string without a typed schema too", async () => {
    const app = await build();
    const res = await app.inject({ method: "GET", url: "/v1/loose" });
    expect(res.statusCode).toBe(200);
    expect(res.body).toBe('{"nested":[{"ns":"9007199254740993"}]}');
  });

  it("reads u64 and i64 strings exactly and refuses them out of range", () => {
    expect(u64Of("18446744073709551615", "tsc")).toBe((1n << 64n) - 1n);
    expect(i64Of("-9223372036854775808", "offset")).toBe(-(1n << 63n));
    expect(() => u64Of("18446744073709551616", "tsc")).toThrow(/^tsc: must be within/);
    expect(() => i64Of("9223372036854775808", "offset")).toThrow(TscmigError);
  });
});

/** GET over a real connection through `agent`: status, headers and body. */
function getVia(agent: Agent, port: number, path: string): Promise<{ status: number; connection: string | undefined; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: "127.0.0.1", port, path, agent }, (res) => {
      let body = "";
      res.on("data", (chunk: Buffer) => (body += chunk.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

describe("closing", () => {
  it("answers a request in flight when close begins and closes its keep-alive connection, so close ends", async () => {
    const app = await buildHttpApp({ log: captureLog().log, title: "tscmig test", version: "0.0.0" });
    let release = () => {};
    const held = new Promise<void>((r) => (release = r));
    let arrived = () => {};
    const inFlight = new Promise<void>((r) => (arrived = r));
    app.get("/v1/slow", { schema: { response: { 200: { type: "object", properties: { ok: { type: "boolean" } } }, ...errorResponses } } }, async () => {
      arrived();
      await held;
      return { ok: true };
    });
    let preClosed = () => {};
    const closing = new Promise<void>((r) => (preClosed = r));
    app.addHook("preClose", async () => preClosed());
    await app.listen({ host: "127.0.0.1", port: 0 });
    const port = (app.server.address() as AddressInfo).port;
    const agent = new Agent({ keepAlive: true });
    try {
      const kept = getVia(agent, port, "/v1/slow");
      await inFlight;
      const closed = app.close();
      await closing;
      release();
      expect(await kept).toEqual({ status: 200, connection: "close", body: '{"ok":true}' });
      await closed; // a keep-alive connection left open held this until its 72 s timeout
    } finally {
      agent.destroy();
    }
  });
});
