// Goal: every daemon serves its dashboard and a live event stream: `/` leads to the page, the page
// and its assets are built files (no CDN) under a strict content policy, the stream opens with the
// state and then carries VMs, samples and migrations in and out; with a token the stream takes
// the bearer header or the page's short-lived cookie, and nothing else; streams are limited in
// number and end with `bye` when the daemon stops; no token reaches a log line.
// Method: real daemon processes on loopback, the stream read with the CLI's own client; waits are
// bounded polls of the stream, never sleeps.
import { execFile, spawn } from "node:child_process";
import { createServer } from "node:net";
import { createInterface } from "node:readline";
import { join } from "node:path";
import { promisify } from "node:util";
import { request } from "undici";
import { afterAll, describe, expect, it } from "vitest";
import { eventStream, type StreamEvent } from "../../src/cli/event-stream.js";
import { ROOT, startDaemons, stopAllDaemons, TestDaemon } from "../helpers/daemons.js";

afterAll(stopAllDaemons);

const TOKEN = "dashboard-test-token-0123456789";

/** Reads events until `until` holds for one (or the deadline passes); returns all read. */
async function readUntil(it: AsyncGenerator<StreamEvent>, until: (e: StreamEvent) => boolean, deadlineMs = 20_000): Promise<StreamEvent[]> {
  const seen: StreamEvent[] = [];
  const deadline = new Promise<"timeout">((r) => {
    const t = setTimeout(() => r("timeout"), deadlineMs);
    t.unref();
  });
  for (;;) {
    const next = await Promise.race([it.next(), deadline]);
    if (next === "timeout") throw new Error(`no matching event within ${deadlineMs} ms; saw ${seen.map((e) => e.type).join(",")}`);
    if (next.done) return seen;
    seen.push(next.value);
    if (until(next.value)) return seen;
  }
}

async function get(url: string, headers: Record<string, string> = {}) {
  const res = await request(url, { method: "GET", headers });
  const body = await res.body.text();
  return { status: res.statusCode, headers: res.headers, body };
}

describe("dashboard and event stream", () => {
  it("serves the page from built assets and streams state, VMs, samples and migrations both ways", async () => {
    const [a, b] = await startDaemons({ name: "dash-a" }, { name: "dash-b" });
    const root = await get(`${a.http}/`);
    expect(root.status).toBe(302);
    expect(root.headers.location).toBe("/ui/");
    const page = await get(`${a.http}/ui/`);
    expect(page.status).toBe(200);
    expect(page.headers["content-type"]).toContain("text/html");
    expect(String(page.headers["content-security-policy"])).toContain("script-src 'self'");
    expect(page.body).not.toMatch(/https?:\/\//); // nothing from elsewhere
    const js = await get(`${a.http}/ui/dashboard.js`);
    expect(js.status).toBe(200);
    expect(js.headers["content-type"]).toContain("javascript");
    expect(js.body).toContain("u-over"); // uPlot, bundled
    expect((await get(`${a.http}/ui/missing.js`)).status).toBe(404);

    const sa = eventStream(a.http);
    const sb = eventStream(b.http);
    const [first] = await readUntil(sa, () => true);
    expect(first?.type).toBe("state");
    expect((first?.data as { host: { name: string } }).host.name).toBe("dash-a");
    await readUntil(sb, (e) => e.type === "state");

    await a.api.createVm({ id: "dvm", vcpus: 2 });
    const created = await readUntil(sa, (e) => e.type === "sample" && (e.data as { vmId: string }).vmId === "dvm");
    expect(created.some((e) => e.type === "vm" && (e.data as { id: string }).id === "dvm")).toBe(true);
    const sample = created.at(-1)?.data as Record<string, string>;
    for (const k of ["trueNs", "errorNs", "earliestErrorNs", "latestErrorNs", "hostSkewNs"]) expect(sample[k], k).toMatch(/^-?\d+$/);

    const r = await a.api.migrate("dvm", { destination: b.grpc, doorbell: true });
    expect(r.body.outcome).toBe("committed");
    const outEvents = await readUntil(sa, (e) => e.type === "vm-gone");
    const out = outEvents.find((e) => e.type === "migration")?.data as Record<string, unknown>;
    expect(out).toMatchObject({ direction: "out", vmId: "dvm", outcome: "committed" });
    expect(Object.keys(out.phases as object)).toEqual(["captureNs", "encodeNs", "transferNs", "decodeNs", "restoreNs", "commitNs"]);
    const inEvents = await readUntil(sb, (e) => e.type === "migration");
    const inbound = inEvents.at(-1)?.data as Record<string, unknown>;
    expect(inbound).toMatchObject({ direction: "in", vmId: "dvm", outcome: "committed", source: "dash-a", policy: "advance", estimator: "one-sided", doorbellRung: true });
    // Watching changes nothing: the restore still finds the stopped flag on every vCPU (a dashboard
    // that read the guest's clock at the resume would make the guest clear it first).
    expect(inbound.stoppedVcpus).toBe(2);
    expect(out.stoppedVcpus).toBe(2);
    expect(BigInt(inbound.estimatedBlackoutNs as string)).toBeGreaterThan(0n);
    expect(BigInt(inbound.resumeTrueNs as string)).toBeGreaterThan(0n);
    await readUntil(sb, (e) => e.type === "sample" && (e.data as { vmId: string }).vmId === "dvm");

    // A fresh viewer of the destination gets the migration and the peer it came from in the state.
    const late = eventStream(b.http);
    const st = (await readUntil(late, () => true))[0]?.data as { migrations: { direction: string }[]; peers: { name: string; via: string }[] };
    expect(st.migrations.map((m) => m.direction)).toEqual(["in"]);
    expect(st.peers).toEqual([expect.objectContaining({ name: "dash-a", via: "migrated-from" })]);
    for (const s of [sa, sb, late]) await s.return(undefined);
  });

  it("with a token: the page is public, the stream takes the bearer or the stream cookie only, and no log shows the token", async () => {
    const d = await TestDaemon.start({ name: "dash-token", token: TOKEN });
    expect((await get(`${d.http}/ui/`)).status).toBe(200);
    expect((await get(`${d.http}/v1/events`)).status).toBe(401);
    await expect(eventStream(d.http, { token: "wrong" }).next()).rejects.toThrow(/unauthenticated|401|token/);

    const refused = await request(`${d.http}/v1/events/session`, { method: "POST" });
    await refused.body.text();
    expect(refused.statusCode).toBe(401);
    const minted = await request(`${d.http}/v1/events/session`, { method: "POST", headers: { authorization: `Bearer ${TOKEN}` } });
    await minted.body.text();
    expect(minted.statusCode).toBe(200);
    const setCookie = String(minted.headers["set-cookie"]);
    expect(setCookie).toMatch(/^tscmig_events=[^;]+; Path=\/v1\/events; Max-Age=\d+; HttpOnly; SameSite=Strict$/);
    expect(setCookie).not.toContain(TOKEN);
    const cookie = setCookie.split(";")[0] as string;

    const withCookie = await request(`${d.http}/v1/events`, { method: "GET", headers: { cookie } });
    expect(withCookie.statusCode).toBe(200);
    withCookie.body.destroy();
    const tampered = cookie.replace(/.$/, (c) => (c === "A" ? "B" : "A"));
    expect((await get(`${d.http}/v1/events`, { cookie: tampered })).status).toBe(401);
    expect((await get(`${d.http}/v1/vms`, { cookie })).status).toBe(401); // the cookie opens the stream only
    const s = eventStream(d.http, { token: TOKEN });
    expect((await s.next()).value?.type).toBe("state");
    await s.return(undefined);
    expect(d.logs.join("\n")).not.toContain(TOKEN);
  });

  it("limits concurrent streams and ends every stream with bye when the daemon stops", async () => {
    const d = await TestDaemon.start({ name: "dash-limit" });
    const streams = Array.from({ length: 32 }, () => eventStream(d.http));
    for (const s of streams) expect((await s.next()).value?.type).toBe("state");
    await expect(eventStream(d.http).next()).rejects.toThrow(/at most 32 event streams/);
    await streams[0]?.return(undefined);
    // The closed one is counted out once the daemon sees the connection go.
    for (let i = 0; ; i++) {
      const probe = eventStream(d.http);
      try {
        expect((await probe.next()).value?.type).toBe("state");
        streams[0] = probe;
        break;
      } catch (e) {
        if (i > 200) throw e;
        await new Promise((r) => setImmediate(r));
      }
    }
    const ends = streams.map((s) => readUntil(s, (e) => e.type === "bye"));
    await d.stop();
    for (const seen of await Promise.all(ends)) expect(seen.at(-1)?.type).toBe("bye");
  });

  it("tscmig watch follows the same stream: the state, a VM created meanwhile and its migration", async () => {
    const [a, b] = await startDaemons({ name: "watch-a", token: TOKEN }, { name: "watch-b" });
    const run = promisify(execFile)(process.execPath, [join(ROOT, "bin", "tscmig.js"), "watch", "--api", a.http, "--token", TOKEN, "--lines", "--duration", "6s"], { timeout: 60_000 });
    // Act once the watcher is connected: its stream shows up in the daemon's heartbeat count.
    const probe = eventStream(a.http, { token: TOKEN });
    await readUntil(probe, (e) => e.type === "heartbeat" && (e.data as { streams: number }).streams >= 2);
    await probe.return(undefined);
    await a.api.createVm({ id: "wvm", vcpus: 1 });
    expect((await a.api.migrate("wvm", { destination: b.grpc })).body.outcome).toBe("committed");
    const { stdout } = await run;
    expect(stdout).toMatch(/^state: watch-a, 0 VMs, 0 migrations$/m);
    expect(stdout).toMatch(/^migration mig-\S+ wvm out → 127\.0\.0\.1:\d+ advance\/one-sided committed blackout .+ error .+ of ±/m);
    expect(stdout).toMatch(/^vm wvm left for /m);
  });

  it("tscmig up prints both dashboards' URLs, and each page is served there", async () => {
    const base = await freeBase();
    const up = spawn(process.execPath, [join(ROOT, "bin", "tscmig.js"), "up", "--base-port", String(base)], { stdio: ["ignore", "pipe", "pipe"] });
    try {
      const lines = createInterface({ input: up.stdout });
      const first = await new Promise<string>((resolve, reject) => {
        lines.once("line", resolve);
        up.once("exit", (c) => reject(new Error(`tscmig up exited ${c}`)));
      });
      expect(first).toBe(`dashboard: open http://127.0.0.1:${base}/ui/ (source) and http://127.0.0.1:${base + 10}/ui/ (destination) in a browser`);
      for (const url of [`http://127.0.0.1:${base}/ui/`, `http://127.0.0.1:${base + 10}/ui/`]) expect((await get(url)).status).toBe(200);
      // Each daemon offers the other as a peer, with its dashboard.
      const s = eventStream(`http://127.0.0.1:${base}`);
      const st = (await s.next()).value?.data as { peers: { name: string; grpc: string; http: string }[] };
      expect(st.peers).toEqual([{ name: "destination", grpc: `127.0.0.1:${base + 11}`, http: `http://127.0.0.1:${base + 10}`, via: "configured" }]);
      await s.return(undefined);
    } finally {
      const exited = new Promise((r) => up.once("exit", r));
      up.kill("SIGINT");
      await exited;
    }
  });
});

/** A base port P with P, P+1, P+10 and P+11 free a moment ago (what `tscmig up --base-port` binds). */
async function freeBase(): Promise<number> {
  const free = (port: number) =>
    new Promise<boolean>((resolve) => {
      const srv = createServer();
      srv.once("error", () => resolve(false));
      srv.listen({ port, host: "127.0.0.1", exclusive: true }, () => srv.close(() => resolve(true)));
    });
  for (let i = 0; i < 50; i++) {
    const base = 20_000 + Math.floor(Math.random() * 30_000);
    if ((await free(base)) && (await free(base + 1)) && (await free(base + 10)) && (await free(base + 11))) return base;
  }
  throw new Error("no free base port");
}
