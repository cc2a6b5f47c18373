// Goal: every refusal of the control API says the right thing: the status HTTP has for it (413,
// 415, 405 with Allow, 507 for a full disk), the reason that names the real problem (a VM sent to
// its own daemon, a generation at its maximum), and one field-path convention for every error
// (`body.x`, `query.x`, `params.x`, `headers.x`) whether the schema or the node refused; and the
// guest TSC range an error advertises is the range the daemon accepts.
// Method: a whole daemon built in this process (test/helpers/daemon-app.ts), driven by inject();
// the full disk is a journal wrapper that throws SQLite's SQLITE_FULL error.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkInboundSource, isSelfAddress } from "../../src/shared/migration/admission.js";
import type { JournalStore } from "../../src/shared/migration/journal.js";
import { type AppDaemon, startAppDaemon } from "../helpers/daemon-app.js";
import { DiskFullError } from "../helpers/failing-journal.js";

let app: AppDaemon;
beforeAll(async () => {
  app = await startAppDaemon({ name: "errs" });
});
afterAll(() => app.close());

async function call(method: string, url: string, payload?: unknown, headers: Record<string, string> = {}) {
  const res = await app.daemon.http.inject({
    method: method as "GET",
    url,
    ...(payload !== undefined ? { payload: typeof payload === "string" ? payload : JSON.stringify(payload), headers: { "content-type": "application/json", ...headers } } : { headers }),
  });
  return { status: res.statusCode, body: res.json() as { error: { code: string; message: string; field?: string; reason?: string; errno?: string } }, headers: res.headers };
}

describe("request-level refusals", () => {
  it("a body over the limit is 413 (resource_exhausted, body_too_large)", async () => {
    const r = await call("POST", "/v1/vms", { vcpus: 1, pad: "x".repeat(70_000) });
    expect(r.status).toBe(413);
    expect(r.body.error).toMatchObject({ code: "resource_exhausted", reason: "body_too_large", field: "body" });
  });

  it("a body of another media type, or without one, is 415 naming the header", async () => {
    for (const headers of [{ "content-type": "text/csv" }, { "content-type": "text/plain" }, { "content-type": "text/plain; charset=utf-8" }, { "content-type": "" }]) {
      const r = await call("POST", "/v1/vms", "vcpus=1", headers);
      expect(r.status, JSON.stringify(headers)).toBe(415);
      expect(r.body.error).toMatchObject({ code: "invalid_argument", reason: "unsupported_media_type", field: "headers.content-type" });
      expect(r.body.error.message).toMatch(/application\/json/);
    }
  });

  it("a known path with the wrong method is 405 with Allow; an unknown path stays 404", async () => {
    const put = await call("PUT", "/v1/vms");
    expect(put.status).toBe(405);
    expect(put.headers.allow).toBe("GET, HEAD, POST");
    expect(put.body.error).toMatchObject({ code: "unimplemented", reason: "method_not_allowed" });
    const del = await call("PUT", "/v1/vms/some-vm");
    expect(del.status).toBe(405);
    expect(del.headers.allow).toBe("DELETE, GET, HEAD");
    const get = await call("GET", "/v1/vms/some-vm/migrate");
    expect(get.status).toBe(405);
    expect(get.headers.allow).toBe("POST");
    expect((await call("GET", "/v1/nothing/here")).status).toBe(404);
  });
});

describe("one field-path convention", () => {
  it.each([
    ["schema, body", "POST", "/v1/vms", { vcpus: 0 }, 400, "body.vcpus"],
    ["node, body", "POST", "/v1/vms", { vcpus: 1, guestTscKhz: "999" }, 400, "body.guestTscKhz"],
    ["schema, query", "GET", "/v1/vms/x?vcpus=abc", undefined, 400, "query.vcpus"],
    ["schema, unknown query key", "GET", "/v1/vms/x?foo=1", undefined, 400, "query.foo"],
    ["schema, params", "GET", "/v1/vms/bad%20id", undefined, 400, "params.id"],
    ["node, params", "GET", "/v1/vms/nobody", undefined, 404, "params.id"],
    ["node, params (migrate)", "POST", "/v1/vms/nobody/migrate", { destination: "127.0.0.1:1" }, 404, "params.id"],
  ] as const)("%s", async (_what, method, url, payload, status, field) => {
    const r = await call(method, url, payload);
    expect(r.status).toBe(status);
    expect(r.body.error.field).toBe(field);
    expect(r.body.error.message.startsWith(`${field}: `) || r.body.error.code === "not_found").toBe(true);
  });
});

describe("the guest TSC range", () => {
  it("accepts the top of the advertised range and refuses one above it, naming the KVM rule", async () => {
    const ok = await call("POST", "/v1/vms", { id: "top", vcpus: 1, guestTscKhz: "2147483646" });
    expect(ok.status).toBe(201);
    const cap = await call("POST", "/v1/vms", { id: "cap", vcpus: 1, guestTscKhz: "2147483647" });
    expect(cap.status).toBe(409);
    expect(cap.body.error).toMatchObject({ errno: "EINVAL", field: "body.guestTscKhz" });
    expect(cap.body.error.message).toContain("this host accepts 1000..2147483646 kHz");
    const over = await call("POST", "/v1/vms", { id: "over", vcpus: 1, guestTscKhz: "2147483648" });
    expect(over.status).toBe(400);
    expect(over.body.error.message).toContain("1000..2147483646 kHz");
  });
});

describe("migrations refused for what they are", () => {
  it("a VM sent to its own daemon is self_migration, not 'migration id already used'", async () => {
    expect((await call("POST", "/v1/vms", { id: "home", vcpus: 1 })).status).toBe(201);
    const own = app.daemon.node.cfg.grpcAdvertise;
    const port = own.split(":").at(-1);
    for (const destination of [own, `localhost:${port}`]) {
      const r = await call("POST", "/v1/vms/home/migrate", { destination, migrationId: "m-self" });
      expect(r.status, destination).toBe(409);
      expect(r.body.error).toMatchObject({ code: "failed_precondition", reason: "self_migration", field: "body.destination" });
      expect(r.body.error.message).toContain("is this daemon");
    }
    // Nothing was journaled: the id is still free, the VM still runs here.
    expect(app.daemon.node.journal.getMigration("m-self")).toBeUndefined();
    expect(app.daemon.node.getVm("home").role).toBe("owner");
  });

  it("a destination refuses a Prepare from a daemon of its own name", () => {
    expect(() =>
      checkInboundSource(
        { migrationId: "m", vmId: "v", generation: 1n, vcpuCount: 1, guestTscKhz: 1_000_000n, sourceFracBits: 48, policy: "advance", estimator: "wallclock", doorbell: false, advanceCapNs: 0n, sourceName: "errs", sourceGrpc: "10.0.0.9:7001", sourceKey: "ab".repeat(16) },
        "errs",
      ),
    ).toThrow(expect.objectContaining({ reason: "self_migration", field: "sourceName" }));
    expect(isSelfAddress("127.0.0.1:7001", "0.0.0.0:7001")).toBe(true);
    expect(isSelfAddress("10.0.0.2:7001", "10.0.0.1:7001")).toBe(false);
    expect(isSelfAddress("127.0.0.1:7002", "127.0.0.1:7001")).toBe(false);
  });

  it("a VM at the last generation cannot migrate, and the refusal says why (no phantom `generation` field)", async () => {
    expect((await call("POST", "/v1/vms", { id: "old", vcpus: 1 })).status).toBe(201);
    app.daemon.node.getVm("old").generation = (1n << 64n) - 1n;
    const r = await call("POST", "/v1/vms/old/migrate", { destination: "127.0.0.1:9" });
    expect(r.status).toBe(409);
    expect(r.body.error).toMatchObject({ code: "failed_precondition", reason: "generation_exhausted" });
    expect(r.body.error.field).toBeUndefined();
    expect(r.body.error.message).toContain("VM old is at generation 18446744073709551615");
  });
});

describe("a full disk", () => {
  it("is resource_exhausted / disk_full (507), and /readyz says journal_unwritable with its cause", async () => {
    let full = false;
    const wrap = (j: JournalStore): JournalStore => {
      const guard =
        <A extends unknown[], R>(fn: (...a: A) => R) =>
        (...a: A): R => {
          if (full) throw new DiskFullError();
          return fn(...a);
        };
      return {
        putVm: guard((r) => j.putVm(r)),
        getVm: (id) => j.getVm(id),
        listVms: () => j.listVms(),
        deleteVm: guard((id) => j.deleteVm(id)),
        putMigration: guard((r) => j.putMigration(r)),
        getMigration: (id) => j.getMigration(id),
        getInboundMigration: (source, id) => j.getInboundMigration(source, id),
        listMigrations: (f) => j.listMigrations(f),
        transaction: (fn) => j.transaction(fn),
        close: () => j.close(),
        probe: guard(() => j.probe?.()),
      };
    };
    const d = await startAppDaemon({ name: "full", wrapJournal: wrap });
    try {
      const inject = async (method: "GET" | "POST", url: string, payload?: object) => d.daemon.http.inject({ method, url, ...(payload ? { payload } : {}) });
      expect((await inject("POST", "/v1/vms", { id: "a", vcpus: 1 })).statusCode).toBe(201);
      full = true;
      const refused = await inject("POST", "/v1/vms", { id: "b", vcpus: 1 });
      expect(refused.statusCode).toBe(507);
      expect(refused.json().error).toMatchObject({ code: "resource_exhausted", reason: "disk_full" });
      expect(refused.json().error.message).not.toBe("internal error");
      const ready = await inject("GET", "/readyz");
      expect(ready.statusCode).toBe(503);
      expect(ready.json()).toMatchObject({ ready: false, reason: "journal_unwritable", cause: "disk_full" });
      expect((await inject("GET", "/v1/vms")).json().vms.map((v: { id: string }) => v.id)).toEqual(["a"]);
      expect((await inject("GET", "/healthz")).statusCode).toBe(200);
      full = false;
      d.sched.runUntil(d.sched.clock.monotonicNs() + 6_000_000_000n); // the retry back-off
      expect((await inject("GET", "/readyz")).statusCode).toBe(200);
      expect((await inject("POST", "/v1/vms", { id: "b", vcpus: 1 })).statusCode).toBe(201);
    } finally {
      await d.close();
    }
  });
});
