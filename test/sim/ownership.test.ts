// Goal: every message after Prepare is bound to its migration's source, VM and generation, so no
// other source — and no refused one — can abort, commit or feed it; migration ids are unique per
// source only; a destination that durably refused a Commit gives the VM back to its source; what is
// in doubt is listed and retried on a bounded back-off; a handed-off id is not created again;
// reservations are leases; limits hold on the state. Method: TscmigNodes on one SimClock (the
// scene harness of test/helpers/sim-world.ts), lost messages by interception, assertions on which
// daemon runs each VM.
import { describe, expect, it } from "vitest";
import type { TscmigNode } from "../../src/daemon/node.js";
import { isTscmigError, type TscmigError } from "../../src/shared/errors.js";
import { LIMITS } from "../../src/shared/limits.js";
import { MemoryJournal } from "../../src/shared/migration/journal.js";
import type { PrepareReq } from "../../src/shared/migration/messages.js";
import { floodPrepare, prepareReq } from "../helpers/prepare-req.js";
import { MS, World } from "../helpers/sim-world.js";

const S = 1_000n * MS;

/** A's Commit is lost and C's Resolve of it too: staged at C, decided (committed) at A. */
const undelivered = (from: string, _to: string, method: string) => ((from === "a" && method === "Commit") || (from === "c" && method === "Resolve") ? "drop" : "deliver");

/** Daemons running `vmId` (running VMs only). */
function owners(nodes: TscmigNode[], vmId: string): string[] {
  return nodes.filter((n) => n.listVms().some((h) => h.id === vmId && h.vm.running)).map((n) => n.cfg.name);
}

function errorOf(f: () => unknown): TscmigError {
  try {
    f();
  } catch (e) {
    if (isTscmigError(e)) return e;
    throw e;
  }
  throw new Error("expected a TscmigError");
}

function trio(): { w: World; a: TscmigNode; b: TscmigNode; c: TscmigNode } {
  const w = new World();
  const a = w.node("a", new MemoryJournal(), { host: w.host("a") });
  const b = w.node("b", new MemoryJournal(), { host: w.host("b") });
  const c = w.node("c", new MemoryJournal(), { host: w.host("c") });
  for (const n of [a, b, c]) n.start();
  return { w, a, b, c };
}

describe("migrations are bound to their source", () => {
  it("two sources that pick one migration id both migrate to one destination, neither touching the other's", async () => {
    const { w, a, b, c } = trio();
    a.createVm({ id: "vm-a", vcpus: 2 });
    b.createVm({ id: "vm-b", vcpus: 2 });
    const [ra, rb] = await w.settle(Promise.all([a.migrate("vm-a", { destination: "c", migrationId: "shared" }), b.migrate("vm-b", { destination: "c", migrationId: "shared" })]));
    expect([ra.outcome, rb.outcome]).toEqual(["committed", "committed"]);
    expect(owners([a, b, c], "vm-a")).toEqual(["c"]);
    expect(owners([a, b, c], "vm-b")).toEqual(["c"]);
  });

  it("an Abort, Commit or Transfer without the migration's source key is refused and changes nothing", async () => {
    const { w, a, b, c } = trio();
    a.createVm({ id: "vm-a", vcpus: 1 });
    w.intercept = undelivered;
    const r = await w.settle(a.migrate("vm-a", { destination: "c", migrationId: "m1" }));
    expect(r.outcome).toBe("in-doubt");
    w.intercept = () => "deliver";
    const key = a.journal.getMigration("m1")?.sourceKey as string;
    const wrong = "ff".repeat(16);
    const ref = { sourceName: "a", sourceKey: wrong };
    expect(errorOf(() => c.peer.abort({ migrationId: "m1", vmId: "vm-a", generation: 1n, reason: "hostile", ...ref })).reason).toBe("foreign_source");
    expect(errorOf(() => c.peer.commit({ migrationId: "m1", vmId: "vm-a", generation: 1n, transferRttNs: 0n, ...ref }, c.host.rawNs())).reason).toBe("foreign_source");
    // The right key for another VM or generation is refused too.
    expect(errorOf(() => c.peer.abort({ migrationId: "m1", vmId: "vm-x", generation: 1n, reason: "stale", sourceName: "a", sourceKey: key })).reason).toBe("stale_generation");
    // Another source that used the same id (refused or not) has its own migration, not A's.
    c.peer.abort({ migrationId: "m1", vmId: "vm-a", generation: 1n, reason: "someone else's", sourceName: "b", sourceKey: wrong });
    expect(c.destination.pending().map((i) => i.state.phase)).toEqual(["staged"]);
    // A's recovery delivers its Commit: the VM runs at C, once.
    await w.runFor(3n * S);
    expect(owners([a, b, c], "vm-a")).toEqual(["c"]);
  });

  it("a Prepare refused for reusing a source's id leaves the first migration of that id untouched", async () => {
    const { w, a, c } = trio();
    a.createVm({ id: "vm-a", vcpus: 1 });
    w.intercept = undelivered;
    await w.settle(a.migrate("vm-a", { destination: "c", migrationId: "m1" }));
    w.intercept = () => "deliver";
    const req = (vmId: string): PrepareReq => prepareReq({ migrationId: "m1", vmId });
    expect(errorOf(() => c.peer.prepare(req("vm-other"))).reason).toBe("migration_id_reused");
    expect(c.destination.pending().map((i) => [i.req.vmId, i.state.phase])).toEqual([["vm-a", "staged"]]);
    await w.runFor(3n * S);
    expect(owners([a, c], "vm-a")).toEqual(["c"]);
  });
});

describe("nothing is lost unless both sides discarded it", () => {
  it("a destination that lost its journal fences the Commit it never saw, and the source takes its VM back", async () => {
    const { w, a, c } = trio();
    a.createVm({ id: "vm-a", vcpus: 2 });
    w.intercept = undelivered;
    expect((await w.settle(a.migrate("vm-a", { destination: "c", migrationId: "m1" }))).outcome).toBe("in-doubt");
    expect(owners([a, c], "vm-a")).toEqual([]); // paused at A, staged at C: runs nowhere for now
    // C comes back empty (its disk was replaced): it has never heard of m1.
    w.drop("c");
    const c2 = w.node("c", new MemoryJournal(), { host: w.host("c") });
    c2.start();
    w.intercept = () => "deliver";
    await w.runFor(5n * S);
    expect(owners([a, c2], "vm-a")).toEqual(["a"]);
    expect(a.getVm("vm-a").generation).toBe(1n);
    expect(a.journal.getMigration("m1")).toMatchObject({ decision: "aborted", phase: "reclaimed" });
    // The fence holds: a late Prepare of that migration is refused.
    expect(c2.journal.getInboundMigration("a", "m1")).toMatchObject({ decision: "aborted", phase: "fenced" });
    // A restart of A keeps the VM running there, once.
    w.drop("a");
    const a2 = w.node("a", a.journal as MemoryJournal, { host: w.host("a") });
    a2.start();
    expect(owners([a2, c2], "vm-a")).toEqual(["a"]);
  });

  it("in-doubt migrations are listed from the journal and retried on a bounded back-off", async () => {
    const { w, a, c } = trio();
    a.createVm({ id: "vm-a", vcpus: 1 });
    let commits = 0;
    let cut = true;
    w.intercept = (from, to, method) => {
      if (from === "a" && method === "Commit") commits++;
      return cut ? undelivered(from, to, method) : "deliver";
    };
    await w.settle(a.migrate("vm-a", { destination: "c", migrationId: "m1" }));
    const before = commits;
    await w.runFor(120n * S);
    // Two a second for two minutes would be 240; the back-off caps at one per 30 s.
    expect(commits - before).toBeLessThan(15);
    const listed = a.inDoubt();
    expect(listed).toHaveLength(1);
    expect(listed[0]).toMatchObject({ migrationId: "m1", role: "source", vmId: "vm-a", decision: "committed", state: expect.stringContaining("delivering the Commit") });
    expect(listed[0]?.attempts).toBeGreaterThan(0);
    expect(c.inDoubt()).toMatchObject([{ migrationId: "m1", role: "destination", source: "a", phase: "staged" }]);
    cut = false;
    await w.runFor(40n * S);
    expect(a.inDoubt()).toEqual([]);
    expect(owners([a, c], "vm-a")).toEqual(["c"]);
  });
});

describe("one identity, one VM", () => {
  it("a daemon refuses to create an id it handed off, naming where and at which generation it went, also after a restart", async () => {
    const { w, a, c } = trio();
    a.createVm({ id: "vm-a", vcpus: 1 });
    expect((await w.settle(a.migrate("vm-a", { destination: "c" }))).outcome).toBe("committed");
    const e = errorOf(() => a.createVm({ id: "vm-a", vcpus: 1 }));
    expect([e.code, e.reason]).toEqual(["already_exists", "vm_handed_off"]);
    expect(e.message).toMatch(/to c at generation 1/);
    w.drop("a");
    const a2 = w.node("a", a.journal as MemoryJournal, { host: w.host("a") });
    a2.start();
    expect(errorOf(() => a2.createVm({ id: "vm-a", vcpus: 1 })).reason).toBe("vm_handed_off");
    expect(owners([a2, c], "vm-a")).toEqual(["c"]);
  });
});

describe("reservations are leases", () => {
  it("a flood of Prepares that never transfer takes the slots only until their leases expire; a refused Prepare reserves nothing", async () => {
    const { w, a, c } = trio();
    a.createVm({ id: "vm-a", vcpus: 1 });
    for (let i = 0; i < LIMITS.migrationsInFlightMax; i++) c.peer.prepare(floodPrepare(i));
    const refused = errorOf(() => c.peer.prepare(floodPrepare(9999)));
    expect(refused.reason).toBe("inflight_limit");
    expect(c.journal.getInboundMigration("mallory", "flood-9999")).toBeUndefined();
    const r1 = await w.settle(a.migrate("vm-a", { destination: "c" }));
    expect([r1.outcome, r1.error?.reason]).toEqual(["refused", "inflight_limit"]);
    await w.runFor(LIMITS.prepareLeaseNs + 2n * S);
    expect(c.destination.pending()).toEqual([]);
    expect(c.journal.getInboundMigration("mallory", "flood-0")?.decision).toBe("aborted");
    const r2 = await w.settle(a.migrate("vm-a", { destination: "c" }));
    expect(r2.outcome).toBe("committed");
  });
});

describe("limits hold on the state, not the request", () => {
  it("stacked skew steps are refused once the skew would pass the limit, and nothing changes", () => {
    const { a } = trio();
    const step = -LIMITS.offsetNsMax / 4n;
    for (let i = 0; i < 4; i++) a.setSkew({ stepNs: step });
    const at = a.host.skew.offsetAt(a.host.trueNs());
    const e = errorOf(() => a.setSkew({ stepNs: step }));
    expect([e.code, e.reason, e.field]).toEqual(["invalid_argument", "skew_limit", "stepNs"]);
    expect(a.host.skew.offsetAt(a.host.trueNs())).toBe(at);
    expect(errorOf(() => a.setSkew({ offsetNs: 10n * S, wanderAmplitudeNs: LIMITS.offsetNsMax, wanderPeriodNs: S })).reason).toBe("skew_limit");
  });

  it("a wallclock estimate past the blackout limit is refused before the handoff: the VM keeps running at its source", async () => {
    const { w, a, c } = trio();
    a.createVm({ id: "vm-a", vcpus: 2 });
    a.setSkew({ offsetNs: -(LIMITS.offsetNsMax * 9n) / 10n });
    c.setSkew({ offsetNs: (LIMITS.offsetNsMax * 9n) / 10n });
    const r = await w.settle(a.migrate("vm-a", { destination: "c", policy: "kvm-realtime", estimator: "wallclock" }));
    expect([r.outcome, r.error?.reason]).toEqual(["aborted", "blackout_estimate_exceeded"]);
    expect(owners([a, c], "vm-a")).toEqual(["a"]);
    expect(a.getVm("vm-a").generation).toBe(0n);
  });
});
