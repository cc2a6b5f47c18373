// Goal: two whole daemons (buildDaemon) migrate a VM end to end as an operator drives them, through
// their control APIs only: create, migrate over Handover and over the unary fallback, read the VM,
// the reports, the received migrations and the metrics on both sides, migrate back, restart the
// destination from its journal; a refused migration changes nothing; a rerun answers byte for byte
// the same.
// Method: test/helpers/daemon-app.ts's InProcessDaemons: no port, journals in memory, peers wired
// through the peer protocol's in-process transport, requests through inject() while simulated time
// runs; no wall-clock wait anywhere.
import { afterEach, describe, expect, it } from "vitest";
import type { Daemon } from "../../src/daemon/daemon.js";
import { MemoryJournal } from "../../src/shared/migration/journal.js";
import { InProcessDaemons } from "../helpers/daemon-app.js";

const A = InProcessDaemons.address("a");
const B = InProcessDaemons.address("b");
const S = 1_000_000_000n;

let world: InProcessDaemons;
afterEach(() => world?.close());

type Answer = { status: number; body: any }; // eslint-disable-line @typescript-eslint/no-explicit-any

async function call(d: Daemon, method: "GET" | "POST" | "DELETE", url: string, payload?: object): Promise<Answer> {
  const res = await world.inject(d, { method, url, ...(payload ? { payload } : {}) });
  return { status: res.statusCode, body: res.json() };
}

const ids = (a: Answer): string[] => a.body.vms.map((v: { id: string }) => v.id);

/** A migration report's counter line in a daemon's /metrics. */
async function migrationsTotal(d: Daemon, outcome: string): Promise<string | undefined> {
  const res = await world.inject(d, { method: "GET", url: "/metrics" });
  return res.body.split("\n").find((l) => l.startsWith(`tscmig_migrations_total{outcome="${outcome}"`));
}

describe("a VM migrated through inject()", () => {
  it("moves over Handover: the report, both daemons' VMs, migrations and metrics say so", async () => {
    world = new InProcessDaemons();
    const a = await world.daemon("a");
    const b = await world.daemon("b");
    expect((await call(a, "POST", "/v1/vms", { id: "web-1", vcpus: 2, clocksource: "kvm-clock" })).status).toBe(201);
    await world.advance(2n * S);

    const m = await call(a, "POST", "/v1/vms/web-1/migrate", { destination: B, migrationId: "m-1", policy: "advance", estimator: "one-sided" });
    expect(m.status).toBe(200);
    expect(m.body).toMatchObject({ migrationId: "m-1", vmId: "web-1", source: "a", destination: B, outcome: "committed", generation: "1", vcpus: 2, path: "handover", stoppedVcpus: 2 });
    // The transport's 200 µs out and 300 µs back, and the blackout they make, as simulated time has them.
    expect(m.body).toMatchObject({ transferForwardNs: "200000", transferBackNs: "300000" });
    expect(BigInt(m.body.trueBlackoutNs)).toBeGreaterThan(0n);
    expect(BigInt(m.body.tscErrorNs) < 0n ? -BigInt(m.body.tscErrorNs) : BigInt(m.body.tscErrorNs)).toBeLessThanOrEqual(BigInt(m.body.errorBoundNs));

    expect(ids(await call(a, "GET", "/v1/vms"))).toEqual([]);
    const there = await call(b, "GET", "/v1/vms/web-1?vcpus=2");
    expect(there.status).toBe(200);
    expect(there.body).toMatchObject({ id: "web-1", generation: "1", role: "owner", running: true, vcpus: 2, handledMigrations: "1" });
    expect(there.body.vcpu).toHaveLength(2);
    expect(there.body.vmclock.disruptionMarker).toBe("1");
    expect((await call(a, "GET", "/v1/vms/web-1")).body.error).toMatchObject({ code: "not_found", field: "params.id" });

    const sourced = await call(a, "GET", "/v1/migrations");
    expect(sourced.body.migrations.map((r: { migrationId: string; outcome: string }) => [r.migrationId, r.outcome])).toEqual([["m-1", "committed"]]);
    expect(sourced.body.inDoubt).toEqual([]);
    const received = await call(b, "GET", "/v1/migrations");
    expect(received.body.inbound).toEqual([{ migrationId: "m-1", vmId: "web-1", generation: "1", phase: "running", source: "a", sourceGrpc: A }]);
    expect(await migrationsTotal(a, "committed")).toBe('tscmig_migrations_total{outcome="committed",policy="advance",estimator="one-sided"} 1');
    expect(await migrationsTotal(b, "committed")).toBeUndefined(); // the source counts its migrations
  });

  it("moves over the unary calls when peers offer no Handover, and back again", async () => {
    world = new InProcessDaemons({ exchange: false });
    const a = await world.daemon("a");
    const b = await world.daemon("b");
    await call(a, "POST", "/v1/vms", { id: "db-1", vcpus: 1 });
    await world.advance(S);
    const out = await call(a, "POST", "/v1/vms/db-1/migrate", { destination: B, estimator: "probe" });
    expect(out.body).toMatchObject({ outcome: "committed", path: "unary", estimator: "probe", generation: "1" });
    await world.advance(S);
    const back = await call(b, "POST", "/v1/vms/db-1/migrate", { destination: A, policy: "kvm-realtime" });
    expect(back.body).toMatchObject({ outcome: "committed", path: "unary", source: "b", policy: "kvm-realtime", generation: "2" });
    expect((await call(a, "GET", "/v1/vms/db-1")).body).toMatchObject({ generation: "2", role: "owner", handledMigrations: "2" });
    expect(ids(await call(b, "GET", "/v1/vms"))).toEqual([]);
  });

  it("switches over on receipt when asked (validated, default two-phase), and says so in the report", async () => {
    world = new InProcessDaemons();
    const a = await world.daemon("a");
    const b = await world.daemon("b");
    expect((await call(a, "POST", "/v1/vms", { id: "web-1", vcpus: 1 })).status).toBe(201);
    await world.advance(2n * S);
    const bad = await call(a, "POST", "/v1/vms/web-1/migrate", { destination: B, switchover: "eventually" });
    expect(bad.status).toBe(400);
    expect(bad.body.error).toMatchObject({ code: "invalid_argument", field: "body.switchover" });
    expect(ids(await call(a, "GET", "/v1/vms"))).toEqual(["web-1"]);
    const m = await call(a, "POST", "/v1/vms/web-1/migrate", { destination: B, migrationId: "m-r", switchover: "on-receipt" });
    expect(m.body).toMatchObject({ outcome: "committed", switchover: "on-receipt", path: "handover", phases: { commitNs: "0" } });
    expect(BigInt(m.body.tscErrorNs) < 0n ? -BigInt(m.body.tscErrorNs) : BigInt(m.body.tscErrorNs)).toBeLessThanOrEqual(BigInt(m.body.errorBoundNs));
    const back = await call(b, "POST", "/v1/vms/web-1/migrate", { destination: A, migrationId: "m-back" });
    expect(back.body).toMatchObject({ outcome: "committed", switchover: "two-phase" });
  });

  it("is still on the destination after that daemon restarts from its journal", async () => {
    world = new InProcessDaemons();
    const a = await world.daemon("a");
    const journal = new MemoryJournal();
    const b = await world.daemon("b", { journal });
    await call(a, "POST", "/v1/vms", { id: "web-2", vcpus: 1 });
    expect((await call(a, "POST", "/v1/vms/web-2/migrate", { destination: B, migrationId: "m-r" })).body.outcome).toBe("committed");
    await world.advance(S); // the VM's persistence batch
    await world.stop(b);
    await world.advance(S);
    const b2 = await world.daemon("b", { journal });
    expect((await call(b2, "GET", "/v1/vms/web-2")).body).toMatchObject({ generation: "1", role: "owner", running: true });
    expect((await call(b2, "GET", "/v1/migrations")).body.inbound).toMatchObject([{ migrationId: "m-r", phase: "running" }]);
    // a handed it off: migrating it from there again is refused, and it stays on b.
    expect((await call(a, "POST", "/v1/vms/web-2/migrate", { destination: B, migrationId: "m-r" })).body.error).toMatchObject({ code: "not_found", field: "params.id" });
    expect(ids(await call(b2, "GET", "/v1/vms"))).toEqual(["web-2"]);
  });

  it("refused (no daemon there, a bad body) changes nothing; migration ids are per source", async () => {
    world = new InProcessDaemons();
    const a = await world.daemon("a");
    const b = await world.daemon("b");
    await call(a, "POST", "/v1/vms", { id: "keep", vcpus: 1 });
    const before = (await call(a, "GET", "/v1/vms/keep")).body;

    const nobody = await call(a, "POST", "/v1/vms/keep/migrate", { destination: "nobody.test:7001" });
    expect(nobody.status).toBe(200); // an unreachable destination is an outcome
    expect(nobody.body).toMatchObject({ outcome: "refused", vmId: "keep" });
    for (const [payload, field] of [
      [{ destination: B, policy: "teleport" }, "body.policy"],
      [{ destination: B, estimator: "guess" }, "body.estimator"],
      [{ destination: B, advanceCapNs: "-1" }, "body.advanceCapNs"],
      [{ destination: B, policy: "advance-capped", advanceCapNs: "0" }, "body.advanceCapNs"], // the wire's "none": it became 1 s
      [{ destination: B, migrationId: "bad id" }, "body.migrationId"],
      [{ destination: B, extra: 1 }, "body.extra"],
      [{}, "body.destination"],
    ] as const) {
      const r = await call(a, "POST", "/v1/vms/keep/migrate", payload);
      expect(r.status, JSON.stringify(payload)).toBe(400);
      expect(r.body.error).toMatchObject({ code: "invalid_argument", field });
    }
    const after = (await call(a, "GET", "/v1/vms/keep")).body;
    expect(after).toMatchObject({ id: "keep", generation: before.generation, role: "owner", running: true, handledMigrations: "0" });
    expect(after.vmclock.disruptionMarker).toBe(before.vmclock.disruptionMarker);
    expect(ids(await call(b, "GET", "/v1/vms"))).toEqual([]);
    expect((await call(b, "GET", "/v1/migrations")).body.inbound).toEqual([]);

    expect((await call(a, "POST", "/v1/vms/keep/migrate", { destination: B, migrationId: "m-once" })).body.outcome).toBe("committed");
    await call(b, "POST", "/v1/vms", { id: "other", vcpus: 1 });
    const replay = await call(b, "POST", "/v1/vms/other/migrate", { destination: A, migrationId: "m-once" });
    expect(replay.body.outcome).toBe("committed"); // ids are per source: b never used m-once
    expect(ids(await call(a, "GET", "/v1/vms"))).toEqual(["other"]);
  });
});

describe("determinism", () => {
  /** Every answer of one scripted session (metrics aside: they carry process figures). */
  async function session(): Promise<string[]> {
    world = new InProcessDaemons();
    const a = await world.daemon("a");
    const b = await world.daemon("b");
    const out: string[] = [];
    const note = async (d: Daemon, method: "GET" | "POST" | "DELETE", url: string, payload?: object) => {
      const res = await world.inject(d, { method, url, ...(payload ? { payload } : {}) });
      out.push(`${method} ${url} ${res.statusCode} ${res.body}`);
    };
    await note(a, "POST", "/v1/vms", { id: "d-1", vcpus: 3 });
    await world.advance(1_500_000_000n);
    await note(a, "POST", "/v1/vms/d-1/migrate", { destination: B, migrationId: "m-d", estimator: "probe", doorbell: true });
    await world.advance(S);
    await note(b, "GET", "/v1/vms/d-1?vcpus=3");
    await note(b, "GET", "/v1/history?limit=5");
    await note(b, "GET", "/v1/migrations");
    await note(a, "GET", "/v1/host");
    await world.close();
    return out;
  }

  it("a rerun answers every request byte for byte the same", async () => {
    const first = await session();
    const second = await session();
    expect(first).toHaveLength(6);
    expect(second).toEqual(first);
  });
});
