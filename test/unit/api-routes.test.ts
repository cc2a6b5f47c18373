// Goal: every route of a whole daemon's control API (VMs, host clock, history, migrations, health,
// readiness, metrics, the bearer token, the dashboard's routes) answers its happy path with what the
// node holds, refuses bad input with its typed error and field path, and a refusal changes nothing;
// the daemon (buildDaemon) refuses work until it has started, samples and drifts on simulated time.
// Method: daemons built in this process with no port (test/helpers/daemon-app.ts InProcessDaemons),
// requests through inject(), time moved only by the simulated scheduler.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Daemon } from "../../src/daemon/daemon.js";
import { LIMITS } from "../../src/shared/limits.js";
import { InProcessDaemons } from "../helpers/daemon-app.js";

const S = 1_000_000_000n;
const MS = 1_000_000n;
const TOKEN = "routes-test-token";

let world: InProcessDaemons;
beforeEach(() => {
  world = new InProcessDaemons();
});
afterEach(() => world.close());

type Answer = { status: number; body: any; headers: Record<string, unknown>; text: string }; // eslint-disable-line @typescript-eslint/no-explicit-any

async function call(d: Daemon, method: "GET" | "POST" | "PUT" | "DELETE", url: string, payload?: unknown, headers: Record<string, string> = {}): Promise<Answer> {
  const res = await world.inject(d, { method, url, headers, ...(payload !== undefined ? { payload: payload as object } : {}) });
  const json = String(res.headers["content-type"] ?? "").startsWith("application/json");
  return { status: res.statusCode, body: json ? res.json() : undefined, headers: res.headers, text: res.body };
}

/** Asserts `a` is the typed refusal: status, code, and the field path when one is named. */
function refused(a: Answer, status: number, code: string, field?: string, reason?: string): void {
  expect(a.status, a.text).toBe(status);
  expect(a.body.error.code).toBe(code);
  if (field !== undefined) expect(a.body.error.field).toBe(field);
  if (reason !== undefined) expect(a.body.error.reason).toBe(reason);
}

const gauge = (metrics: string, name: string): string | undefined => metrics.split("\n").find((l) => l.startsWith(`${name} `))?.slice(name.length + 1);

describe("VMs", () => {
  it("creates, lists, reads and deletes; the gauges follow", async () => {
    const d = await world.daemon("vms");
    const made = await call(d, "POST", "/v1/vms", { id: "web-1", vcpus: 2 });
    expect(made.status).toBe(201);
    expect(made.body).toMatchObject({ id: "web-1", generation: "0", role: "owner", running: true, vcpus: 2, guestTscKhz: "2000000", clocksource: "kvm-clock", trueNs: "0", vcpu: [] });
    expect(made.body.ntp.synchronized).toBe(true);
    const tsc = await call(d, "POST", "/v1/vms", { id: "tsc-1", vcpus: 1, clocksource: "tsc", guestTscKhz: "1000000", migrationHandling: true, handlingMode: "widen" });
    expect(tsc.body).toMatchObject({ clocksource: "tsc", guestTscKhz: "1000000" });
    const generated = await call(d, "POST", "/v1/vms", { vcpus: 1 });
    expect(generated.body.id).toMatch(/^[A-Za-z0-9]/);

    const list = await call(d, "GET", "/v1/vms");
    expect(list.body.vms.map((v: { id: string }) => v.id).sort()).toEqual(["tsc-1", "web-1", generated.body.id].sort());
    expect(gauge((await call(d, "GET", "/metrics")).text, "tscmig_vms")).toBe("3");
    expect(gauge((await call(d, "GET", "/metrics")).text, "tscmig_vcpus")).toBe("4");

    await world.advance(250n * MS);
    const read = await call(d, "GET", "/v1/vms/web-1?vcpus=1");
    expect(read.body.trueNs).toBe("250000000");
    expect(read.body.vcpu).toEqual([expect.objectContaining({ index: 0, tsc: "500000000", kvmclockNs: "250000000" })]); // 2 GHz for 250 ms
    expect((await call(d, "GET", "/v1/vms/web-1")).body.vcpu).toHaveLength(2);
    expect((await call(d, "GET", "/v1/vms/web-1?vcpus=0")).body.vcpu).toEqual([]);

    const gone = await call(d, "DELETE", "/v1/vms/web-1");
    expect(gone.status).toBe(200);
    expect(gone.body).toEqual({ id: "web-1", deleted: true, generation: "1" });
    refused(await call(d, "GET", "/v1/vms/web-1"), 404, "not_found", "params.id");
    refused(await call(d, "DELETE", "/v1/vms/web-1"), 404, "not_found", "params.id", "unknown_vm");
    refused(await call(d, "POST", "/v1/vms", { id: "web-1", vcpus: 1 }), 409, "already_exists", "body.id", "vm_handed_off");
    expect(gauge((await call(d, "GET", "/metrics")).text, "tscmig_vms")).toBe("2");
  });

  it("refuses bad bodies, queries and ids with the field at fault, and creates nothing", async () => {
    const d = await world.daemon("bad");
    await call(d, "POST", "/v1/vms", { id: "only", vcpus: 1 });
    for (const [payload, status, field] of [
      [{ vcpus: 0 }, 400, "body.vcpus"],
      [{ vcpus: LIMITS.vcpuCountMax + 1 }, 400, "body.vcpus"],
      [{ vcpus: "2" }, 400, "body.vcpus"],
      [{ id: "x" }, 400, "body.vcpus"],
      [{ id: "no spaces", vcpus: 1 }, 400, "body.id"],
      [{ vcpus: 1, clocksource: "hpet" }, 400, "body.clocksource"],
      [{ vcpus: 1, handlingMode: "ignore" }, 400, "body.handlingMode"],
      [{ vcpus: 1, guestTscKhz: "fast" }, 400, "body.guestTscKhz"],
      [{ vcpus: 1, guestTscKhz: "999" }, 400, "body.guestTscKhz"],
      [{ vcpus: 1, colour: "red" }, 400, "body.colour"],
      [{ id: "only", vcpus: 1 }, 409, "body.id"],
    ] as const) {
      const r = await call(d, "POST", "/v1/vms", payload);
      expect(r.status, JSON.stringify(payload)).toBe(status);
      expect(r.body.error.field, JSON.stringify(payload)).toBe(field);
    }
    refused(await call(d, "POST", "/v1/vms", "{nope", { "content-type": "application/json" }), 400, "invalid_argument");
    refused(await call(d, "GET", "/v1/vms/only?vcpus=lots"), 400, "invalid_argument", "query.vcpus");
    refused(await call(d, "GET", `/v1/vms/only?vcpus=${LIMITS.vcpuCountMax + 1}`), 400, "invalid_argument", "query.vcpus");
    refused(await call(d, "GET", "/v1/vms/only?colour=red"), 400, "invalid_argument", "query.colour");
    refused(await call(d, "GET", "/v1/vms?limit=5"), 400, "invalid_argument", "query.limit"); // lists do not page: refused, not ignored
    refused(await call(d, "GET", "/v1/migrations?vmId=only"), 400, "invalid_argument", "query.vmId");
    refused(await call(d, "DELETE", "/v1/vms/-bad"), 400, "invalid_argument", "params.id");
    expect((await call(d, "GET", "/v1/vms")).body.vms.map((v: { id: string }) => v.id)).toEqual(["only"]);
    expect((await call(d, "GET", "/v1/vms/only")).body).toMatchObject({ generation: "0", running: true, vcpus: 1 });
  });

  it("reads, migrates and deletes a VM by the longest id a create accepts, and refuses one character more", async () => {
    const d = await world.daemon("long-src");
    const dst = await world.daemon("long-dst");
    const id = `L${"x".repeat(127)}`;
    expect((await call(d, "POST", "/v1/vms", { id, vcpus: 1 })).status).toBe(201);
    refused(await call(d, "POST", "/v1/vms", { id: `${id}x`, vcpus: 1 }), 400, "invalid_argument", "body.id");
    expect((await call(d, "GET", `/v1/vms/${id}`)).body).toMatchObject({ id, running: true });
    const moved = await world.send(d, { method: "POST", url: `/v1/vms/${id}/migrate`, payload: { destination: InProcessDaemons.address("long-dst"), migrationId: `M${"y".repeat(127)}` } });
    expect((await world.settle(moved.answer)).json()).toMatchObject({ vmId: id, outcome: "committed" });
    expect((await call(dst, "DELETE", `/v1/vms/${id}`)).body).toMatchObject({ id, deleted: true });
  });

  it("refuses to delete a VM while it migrates, and deletes it once it is back at rest", async () => {
    const d = await world.daemon("src");
    await world.daemon("dst");
    await call(d, "POST", "/v1/vms", { id: "busy", vcpus: 1 });
    world.net.intercept = (_from, _to, method) => (method === "Transfer" ? "drop" : "deliver");
    const migrating = await world.send(d, { method: "POST", url: "/v1/vms/busy/migrate", payload: { destination: InProcessDaemons.address("dst"), migrationId: "m-busy" } });
    const del = await call(d, "DELETE", "/v1/vms/busy");
    refused(del, 409, "failed_precondition");
    const report = (await world.settle(migrating.answer)).json();
    expect(report.outcome).not.toBe("committed");
    world.net.intercept = () => "deliver";
    await world.advance(10n * S); // whatever the migration left undecided is resolved with the destination
    expect((await call(d, "GET", "/v1/vms/busy")).body).toMatchObject({ role: "owner", running: true });
    expect((await call(d, "DELETE", "/v1/vms/busy")).status).toBe(200);
  });
});

describe("host clock", () => {
  it("reads the host's clocks on simulated time, and a configured drift accumulates with it", async () => {
    const d = await world.daemon("drift", { flags: { skewDriftPpm: "100", tscKhz: "3000000" } });
    await world.advance(10n * S);
    const h = await call(d, "GET", "/v1/host");
    expect(h.body).toMatchObject({ name: "drift", tscKhz: "3000000", trueNs: "10000000000", skewNs: "1000000" }); // 100 ppm of 10 s
    expect((await call(d, "GET", "/v1/host/clock")).body).toEqual(h.body);
  });

  it("injects skew, and a bad body changes nothing", async () => {
    const d = await world.daemon("skew");
    const set = await call(d, "PUT", "/v1/host/clock", { offsetNs: "-5000000", maxerrorNs: "2000000" });
    expect(set.status).toBe(200);
    expect(set.body).toMatchObject({ skewNs: "-5000000", maxerrorNs: "2000000" });
    expect(BigInt(set.body.realtimeNs) - BigInt(set.body.trueNs)).toBe(1_767_225_600_000_000_000n - 5_000_000n);
    const before = (await call(d, "GET", "/v1/host")).body;
    for (const [payload, field] of [
      [{}, "body"],
      [{ offsetNs: "five" }, "body.offsetNs"],
      [{ offsetNs: 5 }, "body.offsetNs"],
      [{ driftPpm: LIMITS.driftPpmMax + 1 }, "body.driftPpm"],
      [{ jitterNs: "-1" }, "body.jitterNs"],
      [{ reset: "yes" }, "body.reset"],
      [{ offsetNs: "1", leap: true }, "body.leap"],
    ] as const) {
      const r = await call(d, "PUT", "/v1/host/clock", payload);
      expect(r.status, JSON.stringify(payload)).toBe(400);
      expect(r.body.error, JSON.stringify(payload)).toMatchObject({ code: "invalid_argument", field });
    }
    expect((await call(d, "GET", "/v1/host")).body).toEqual(before);
    expect((await call(d, "PUT", "/v1/host/clock", { reset: true })).body.skewNs).toBe("0");
  });
});

describe("history", () => {
  it("holds a sample per VM every 100 ms of simulated time, filtered by sinceNs and limit", async () => {
    const d = await world.daemon("hist");
    await call(d, "POST", "/v1/vms", { id: "h", vcpus: 1 });
    await world.advance(S);
    const all = await call(d, "GET", "/v1/history");
    expect(all.body.samples.map((s: { trueNs: string }) => s.trueNs)).toEqual(Array.from({ length: 10 }, (_, i) => String(BigInt(i + 1) * 100n * MS)));
    expect(all.body.samples[9]).toMatchObject({ daemon: "hist", vmId: "h", generation: "0", tsc: ["2000000000"], kvmclockNs: ["1000000000"] });
    const since = await call(d, "GET", "/v1/history?sinceNs=500000000&limit=2");
    expect(since.body.samples.map((s: { trueNs: string }) => s.trueNs)).toEqual(["900000000", "1000000000"]);
    for (const [query, field] of [
      ["limit=0", "query.limit"],
      ["limit=100001", "query.limit"],
      ["limit=ten", "query.limit"],
      ["sinceNs=-1", "query.sinceNs"],
      ["from=0", "query.from"],
    ] as const)
      refused(await call(d, "GET", `/v1/history?${query}`), 400, "invalid_argument", field);
  });
});

describe("readiness", () => {
  it("refuses work with 503 starting until start(), while health answers; then takes it", async () => {
    const d = await world.daemon("early", { start: false });
    expect((await call(d, "GET", "/healthz")).status).toBe(200);
    const ready = await call(d, "GET", "/readyz");
    expect(ready.status).toBe(503);
    expect(ready.body).toMatchObject({ ready: false, reason: "starting" });
    refused(await call(d, "POST", "/v1/vms", { id: "x", vcpus: 1 }), 503, "unavailable", undefined, "starting");
    refused(await call(d, "GET", "/v1/vms"), 503, "unavailable", undefined, "starting");
    await d.start();
    expect((await call(d, "GET", "/readyz")).body).toEqual({ status: "ready", ready: true });
    expect((await call(d, "GET", "/v1/vms")).body).toEqual({ vms: [] });
  });
});

describe("the bearer token", () => {
  it("guards the API and the event stream; health, readiness, metrics, OpenAPI and the page stay open", async () => {
    const d = await world.daemon("tok", { flags: { token: TOKEN } });
    const bearer = { authorization: `Bearer ${TOKEN}` };
    refused(await call(d, "GET", "/v1/vms"), 401, "unauthenticated");
    refused(await call(d, "POST", "/v1/vms", { id: "x", vcpus: 1 }, { authorization: "Bearer wrong" }), 401, "unauthenticated");
    refused(await call(d, "GET", "/v1/events"), 401, "unauthenticated");
    refused(await call(d, "POST", "/v1/events/session"), 401, "unauthenticated");
    expect((await call(d, "GET", "/v1/vms", undefined, bearer)).body).toEqual({ vms: [] }); // the refused create made nothing
    for (const url of ["/healthz", "/readyz", "/metrics", "/openapi.json", "/ui/"]) expect((await call(d, "GET", url)).status, url).toBe(200);

    const session = await call(d, "POST", "/v1/events/session", undefined, bearer);
    expect(session.body).toEqual({ cookie: true, expiresInS: 300 });
    expect(String(session.headers["set-cookie"])).toMatch(/^tscmig_events=[0-9]+\.[A-Za-z0-9_-]{43}; Path=\/v1\/events; Max-Age=300; HttpOnly; SameSite=Strict$/);
  });

  it("without a token the stream needs no cookie", async () => {
    const d = await world.daemon("open");
    expect((await call(d, "POST", "/v1/events/session")).body).toEqual({ cookie: false });
  });
});

describe("dashboard routes and the rest", () => {
  it("redirects to the page, serves it with its security headers, and refuses unknown or bad asset names", async () => {
    const d = await world.daemon("ui");
    const root = await call(d, "GET", "/");
    expect(root.status).toBe(302);
    expect(root.headers.location).toBe("/ui/");
    const page = await call(d, "GET", "/ui/");
    expect(page.status).toBe(200);
    expect(page.headers["content-type"]).toBe("text/html; charset=utf-8");
    expect(String(page.headers["content-security-policy"])).toContain("default-src 'none'");
    refused(await call(d, "GET", "/ui/nope.js"), 404, "not_found");
    refused(await call(d, "GET", "/ui/..%2Fpackage.json"), 400, "invalid_argument", "params.file");
  });

  it("lists every control route in openapi.json, and answers an unknown one 404", async () => {
    const d = await world.daemon("doc");
    const paths = Object.keys((await call(d, "GET", "/openapi.json")).body.paths).sort();
    for (const p of ["/v1/vms", "/v1/vms/{id}", "/v1/vms/{id}/migrate", "/v1/migrations", "/v1/host", "/v1/host/clock", "/v1/history", "/v1/events", "/v1/events/session"]) expect(paths).toContain(p);
    refused(await call(d, "GET", "/v1/nothing"), 404, "not_found");
    expect((await call(d, "GET", "/v1/migrations")).body).toEqual({ migrations: [], inbound: [], inDoubt: [] });
  });
});
