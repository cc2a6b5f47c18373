// Goal: what a daemon does after each migration, and its listings of migrations, read a bounded
// number of journal records however many migrations it has run: a scan of every record (7 µs each
// on SQLite) made a daemon with 30,000 migrations behind it stall 200 ms after every one.
// Method: two whole daemons in process (InProcessDaemons); the destination's in-memory journal holds
// 5,000 decided migrations of an earlier source and counts every record a listing returns; a VM is
// migrated there and back on each switchover mode, and the migration listing is read.
import { afterEach, expect, it } from "vitest";
import type { Daemon } from "../../src/daemon/daemon.js";
import { MemoryJournal, type MigrationFilter, type MigrationRecord } from "../../src/shared/migration/journal.js";
import { InProcessDaemons } from "../helpers/daemon-app.js";

const A = InProcessDaemons.address("a");
const B = InProcessDaemons.address("b");
const S = 1_000_000_000n;
const HISTORY = 5000;

class CountingJournal extends MemoryJournal {
  read = 0;
  override listMigrations(filter?: MigrationFilter): MigrationRecord[] {
    const out = super.listMigrations(filter);
    this.read += out.length;
    return out;
  }
}

let world: InProcessDaemons;
afterEach(() => world?.close());

type Answer = { status: number; body: any }; // eslint-disable-line @typescript-eslint/no-explicit-any

async function call(d: Daemon, method: "GET" | "POST", url: string, payload?: object): Promise<Answer> {
  const res = await world.inject(d, { method, url, ...(payload ? { payload } : {}) });
  return { status: res.statusCode, body: res.json() };
}

it("a migration and the migration listing read a bounded part of a long history", async () => {
  const journal = new CountingJournal();
  for (let i = 0; i < HISTORY; i++)
    journal.putMigration({
      migrationId: `old-${i}`,
      source: "old",
      sourceKey: "ab".repeat(32),
      vmId: `gone-${i}`,
      role: "destination",
      phase: "running",
      decision: "committed",
      generation: 1n,
      peer: "old.test:7001",
      updatedNs: BigInt(i),
    });
  world = new InProcessDaemons();
  const a = await world.daemon("a");
  const b = await world.daemon("b", { journal }); // a start reads its whole journal once, and checks it
  journal.read = 0;

  expect((await call(a, "POST", "/v1/vms", { id: "web-1", vcpus: 1 })).status).toBe(201);
  await world.advance(S);
  for (const switchover of ["two-phase", "on-receipt"]) {
    expect((await call(a, "POST", "/v1/vms/web-1/migrate", { destination: B, switchover })).body.outcome).toBe("committed");
    await world.advance(S);
    expect((await call(b, "POST", "/v1/vms/web-1/migrate", { destination: A, switchover })).body.outcome).toBe("committed");
    await world.advance(S);
  }
  const migrationsRead = journal.read;
  const listing = await call(b, "GET", "/v1/migrations");
  expect(listing.status).toBe(200);
  expect(listing.body.inbound).toHaveLength(1000); // the newest thousand, the two of this test last
  expect(listing.body.inbound.slice(-2).map((m: { source: string; generation: string }) => [m.source, m.generation])).toEqual([["a", "1"], ["a", "3"]]);
  const listingRead = journal.read - migrationsRead;

  // The dashboard's peer list reads the last 100 received once, then keeps them as migrations arrive.
  expect(migrationsRead).toBeLessThanOrEqual(100 + 10);
  expect(listingRead).toBeLessThanOrEqual(1000 + 10);
});
