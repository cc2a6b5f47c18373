// Goal: GET /openapi.json is a valid OpenAPI 3.0.3 document that describes what the daemon really
// answers: every operation has an operationId, declared tags and a typed success response with
// named schemas; real answers of every control-API operation (and error answers) validate against
// the schema the document gives for their status. DELETE /v1/vms/{id} is refused while the VM
// migrates, leaves a tombstone (the VM does not come back after a restart; a recreated id never
// reuses a generation at or below it). Requests carry an incoming X-Request-Id into the logs and the
// answer; a refused migration is logged at warn; a daemon writes only JSON log lines on stdout.
// Method: two daemons on loopback; the document validated by @apidevtools/swagger-parser, answers
// by Ajv against the dereferenced document.

import { createServer, type Socket } from "node:net";
import SwaggerParser from "@apidevtools/swagger-parser";
import { Ajv } from "ajv";
import { request } from "undici";
import type { OpenAPIV3 } from "openapi-types";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ApiAnswer, startDaemons, stopAllDaemons, type TestDaemon, waitFor } from "../helpers/daemons.js";

type Method = "get" | "put" | "post" | "delete";

let src: TestDaemon;
let dst: TestDaemon;
let raw: OpenAPIV3.Document;
let doc: OpenAPIV3.Document;
const ajv = new Ajv({ strict: false, allErrors: true });
const checked = new Set<string>();

beforeAll(async () => {
  [src, dst] = await startDaemons({ name: "oas-src" }, { name: "oas-dst" });
  raw = (await src.api.ok("GET", "/openapi.json")) as unknown as OpenAPIV3.Document;
  doc = (await SwaggerParser.dereference(structuredClone(raw) as never)) as OpenAPIV3.Document;
});
afterAll(stopAllDaemons);

/** The path template of the document that `path` matches, e.g. /v1/vms/{id} for /v1/vms/web-1. */
function templateOf(path: string): string {
  const bare = path.split("?")[0] as string;
  const hit = Object.keys(doc.paths).find((t) => new RegExp(`^${t.replace(/\{[^}]+\}/g, "[^/]+")}$`).test(bare));
  if (hit === undefined) throw new Error(`no path of the document matches ${bare}`);
  return hit;
}

/** Validates one real answer against the schema the document gives for its status. */
function expectDocumented(method: Method, path: string, answer: ApiAnswer<unknown>): void {
  const template = templateOf(path);
  const op = doc.paths[template]?.[method] as OpenAPIV3.OperationObject | undefined;
  expect(op, `${method.toUpperCase()} ${template} is documented`).toBeDefined();
  const responses = (op as OpenAPIV3.OperationObject).responses;
  const res = (responses[String(answer.status)] ?? responses[`${String(answer.status)[0]}XX`]) as OpenAPIV3.ResponseObject | undefined;
  expect(res, `${method.toUpperCase()} ${template} documents status ${answer.status}`).toBeDefined();
  const schema = res?.content?.["application/json"]?.schema;
  expect(schema, `${method.toUpperCase()} ${template} ${answer.status} has a JSON schema`).toBeDefined();
  const validate = ajv.compile(schema as object);
  expect(validate(answer.body), `${method.toUpperCase()} ${path} → ${answer.status}: ${JSON.stringify(validate.errors)}\n${answer.text.slice(0, 500)}`).toBe(true);
  checked.add(`${method} ${template} ${answer.status >= 400 ? "error" : "ok"}`);
}

async function call(d: TestDaemon, method: Method, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<ApiAnswer<Record<string, unknown>>> {
  const r = await d.api.send(method.toUpperCase() as "GET", path, body, headers);
  expectDocumented(method, path, r);
  return r;
}

describe("the OpenAPI document", () => {
  it("is valid OpenAPI 3.0.3 (swagger-parser)", async () => {
    expect(raw.openapi).toBe("3.0.3");
    await expect(SwaggerParser.validate(structuredClone(raw) as never)).resolves.toBeDefined();
  });

  it("gives every operation a unique operationId, declared tags and a typed success response", () => {
    const declared = new Set((raw.tags ?? []).map((t) => t.name));
    const ids: string[] = [];
    for (const [path, item] of Object.entries(raw.paths)) {
      for (const [method, op] of Object.entries(item ?? {}) as [string, OpenAPIV3.OperationObject][]) {
        const what = `${method.toUpperCase()} ${path}`;
        expect(op.operationId, what).toMatch(/^[a-z][A-Za-z]+$/);
        ids.push(op.operationId as string);
        expect(op.tags?.length ?? 0, what).toBeGreaterThan(0);
        for (const t of op.tags ?? []) expect(declared, `${what} tag ${t}`).toContain(t);
        const ok = Object.entries(op.responses).find(([status]) => /^2/.test(status))?.[1] as OpenAPIV3.ResponseObject;
        expect(ok?.description, what).not.toBe("Default Response");
        const schema = Object.values(ok?.content ?? {})[0]?.schema;
        expect(schema, `${what}: a typed success response`).toBeDefined();
        const typed = "$ref" in (schema as object) || (schema as OpenAPIV3.SchemaObject).type === "string" || (schema as OpenAPIV3.SchemaObject).properties !== undefined;
        expect(typed, `${what}: ${JSON.stringify(schema)}`).toBe(true);
        for (const status of ["4XX", "5XX"]) expect((op.responses[status] as OpenAPIV3.ReferenceObject | undefined) ?? null, `${what} ${status}`).not.toBeNull();
      }
    }
    expect(new Set(ids).size).toBe(ids.length);
    for (const name of ["Error", "Vm", "VmList", "MigrationReport", "Migrations", "Host", "History", "DeletedVm"]) expect(raw.components?.schemas, name).toHaveProperty(name);
    const createVm = raw.paths["/v1/vms"]?.post?.requestBody as OpenAPIV3.RequestBodyObject;
    expect(createVm.content["application/json"]?.example).toMatchObject({ vcpus: 4 });
    expect(raw.paths["/v1/host/clock"]?.get?.operationId).toBe("getHostClock");
    expect(raw.paths["/v1/vms/{id}"]?.delete?.operationId).toBe("deleteVm");
  });
});

describe("real answers match the document", () => {
  it("for every control-API operation, and for error answers", async () => {
    await call(src, "get", "/healthz");
    await call(src, "get", "/readyz");
    await call(src, "post", "/v1/vms", { id: "oas-1", vcpus: 2 });
    await call(src, "post", "/v1/vms", { vcpus: 0 }); // 400
    await call(src, "post", "/v1/vms", { id: "oas-1", vcpus: 1 }); // 409
    await call(src, "get", "/v1/vms");
    await call(src, "get", "/v1/vms/oas-1?vcpus=2");
    await call(src, "get", "/v1/vms/nope"); // 404
    await call(src, "get", "/v1/host");
    await call(dst, "put", "/v1/host/clock", { offsetNs: "5000000", maxerrorNs: "1000000" });
    const clock = await call(dst, "get", "/v1/host/clock");
    expect(clock.body).toMatchObject({ skewNs: "5000000", maxerrorNs: "1000000" });
    const migrated = await call(src, "post", "/v1/vms/oas-1/migrate", { destination: dst.grpc, policy: "kvm-realtime", estimator: "probe" });
    expect(migrated.body.outcome).toBe("committed");
    await call(src, "get", "/v1/migrations");
    await call(dst, "get", "/v1/migrations");
    await call(dst, "get", "/v1/history?limit=5");
    await call(dst, "delete", "/v1/vms/oas-1");
    await call(dst, "delete", "/v1/vms/oas-1"); // 404 now
    await call(src, "post", "/v1/events/session");
    // The event stream never ends: its first bytes are checked, then the request is dropped.
    const stream = await request(`${src.http}/v1/events`, { method: "GET" });
    expect(stream.statusCode).toBe(200);
    expect(String(stream.headers["content-type"])).toMatch(/^text\/event-stream/);
    for await (const chunk of stream.body) {
      expect(String(chunk)).toMatch(/^(id|event|data|:|retry)/m);
      break;
    }
    stream.body.destroy();
    checked.add("get /v1/events ok");
    const metrics = await src.api.send("GET", "/metrics");
    expect(metrics.status).toBe(200);
    checked.add("get /metrics ok");

    const documented = Object.entries(raw.paths).flatMap(([p, item]) => Object.keys(item ?? {}).map((m) => `${m} ${p} ok`));
    expect(documented.filter((op) => !checked.has(op))).toEqual([]);
  });
});

describe("DELETE /v1/vms/{id}", () => {
  it("is refused while the VM migrates, and leaves a tombstone a restart keeps", async () => {
    // A destination that accepts connections and never answers holds the migration in flight.
    const held: Socket[] = [];
    const blackhole = createServer((s) => void held.push(s));
    await new Promise<void>((ok) => blackhole.listen(0, "127.0.0.1", () => ok()));
    const port = (blackhole.address() as { port: number }).port;
    try {
      await src.api.createVm({ id: "del-1", vcpus: 1 });
      const generation = BigInt((await src.api.vm("del-1")).generation);
      const pending = src.api.migrate("del-1", { destination: `127.0.0.1:${port}` });
      await waitFor("the migration to hold the VM", async () => (await src.api.vm("del-1")).migrating !== null);
      const refused = await call(src, "delete", "/v1/vms/del-1");
      expect(refused.status).toBe(409);
      expect(refused.body.error).toMatchObject({ code: "failed_precondition", reason: "vm_migrating" });
      expect((await pending).body.outcome).not.toBe("committed");

      const deleted = await call(src, "delete", "/v1/vms/del-1");
      expect(deleted.body).toEqual({ id: "del-1", deleted: true, generation: String(generation + 1n) });
      expect(await src.api.vmOrNull("del-1")).toBeNull();
      await src.stop();
      await src.restart();
      expect(await src.api.vmOrNull("del-1")).toBeNull(); // the journal kept the tombstone, not the VM

      // The id may be used again only above the tombstone (or not at all): never at a generation a
      // copy of the deleted VM could hold.
      const again = await src.api.send("POST", "/v1/vms", { id: "del-1", vcpus: 1 });
      if (again.status === 201) expect(BigInt(again.body.generation as string)).toBeGreaterThan(generation);
      else expect(again.status).toBe(409);
    } finally {
      for (const s of held) s.destroy();
      await new Promise<void>((ok) => blackhole.close(() => ok()));
    }
  });
});

describe("logs", () => {
  it("use and echo an incoming X-Request-Id, and make one when there is none", async () => {
    const r = await src.api.send("GET", "/v1/host", undefined, { "x-request-id": "trace-4f2a.9" });
    expect(r.status).toBe(200);
    // The daemon's log is written asynchronously: wait for the lines about this request.
    const seen = await waitFor("log lines with the request id", async () => {
      const lines = src.logs.filter((l) => l.includes('"reqId":"trace-4f2a.9"'));
      return lines.length >= 2 && lines;
    });
    expect(seen.map((l) => JSON.parse(l.replace(/^\[[^\]]+\] /, "")).msg)).toEqual(["incoming request", "request completed"]);
    const mine = await fetch(`${src.http}/healthz`, { headers: { "x-request-id": "trace-4f2a.9" } });
    expect(mine.headers.get("x-request-id")).toBe("trace-4f2a.9");
    const none = await fetch(`${src.http}/healthz`);
    expect(none.headers.get("x-request-id")).toMatch(/^req-[0-9a-z]+$/);
    const junk = await fetch(`${src.http}/healthz`, { headers: { "x-request-id": "a b\tc" } });
    expect(junk.headers.get("x-request-id")).toMatch(/^req-[0-9a-z]+$/); // not a plain token: replaced
  });

  it("logs a migration that did not commit at warn, and writes nothing but JSON lines", async () => {
    // A destination without TSC scaling refuses a guest whose TSC frequency is not its host's.
    const [noScale] = await startDaemons({ name: "oas-noscale", args: ["--tsc-scaling", "false"] });
    await src.api.createVm({ id: "warn-1", vcpus: 1, guestTscKhz: "1234567" });
    const refused = await src.api.migrate("warn-1", { destination: noScale.grpc });
    expect(refused.body.outcome).toBe("refused");
    const finished = src.events("migration_finished").find((e) => e.outcome === "refused");
    expect(finished, src.tail()).toMatchObject({ level: 40 });
    const committed = src.events("migration_finished").find((e) => e.outcome === "committed");
    expect(committed).toMatchObject({ level: 30 });
    for (const line of [...src.logs, ...dst.logs, ...noScale.logs]) {
      const text = line.replace(/^\[[^\]]+\] /, "");
      expect(() => JSON.parse(text) as unknown, line).not.toThrow();
    }
  });
});
