// Goal: what the simulator pays per message of a Prepare flood grows little with the flood, and the
// shortcuts that make it so change nothing a daemon does: admission finds a VM's held migration
// through an index (one walk over the hundreds held, for the in-flight count, instead of three and a
// copy), the lease pass is skipped only while
// no lease can have run out (a renewed or later lease still expires on time), a dialer hands out one
// client per address, and the hostile tap decodes only what its actor observes. Method: TscmigNodes
// on one SimClock (test/helpers/sim-world.ts) with the held-migration table instrumented; the
// simulated network with a counting tap; pure checks of the index and of the hostile key's hex.

import { describe, expect, it, vi } from "vitest";
import type { TscmigNode } from "../../src/daemon/node.js";
import { type Inbound, InboundTable } from "../../src/destination/migrate-in.js";
import { LIMITS } from "../../src/shared/limits.js";
import { MemoryJournal } from "../../src/shared/migration/journal.js";
import { REQUESTS } from "../../src/shared/rpc/codec.js";
import { SeededRandom } from "../../src/shared/time/random.js";
import { SimClock, SimScheduler } from "../../src/shared/time/sim.js";
import { hex32, HOSTILE_ADDRESS } from "../../src/chaos/sim/hostile.js";
import { PEER_CREDENTIAL, SimNetwork, type Tapped } from "../../src/chaos/sim/network.js";
import { floodPrepare } from "../helpers/prepare-req.js";
import { MS, World } from "../helpers/sim-world.js";

const S = 1_000n * MS;


/** The destination's table of held migrations (private to the role: reached for instrumentation only). */
function heldTable(n: TscmigNode): InboundTable {
  return (n.destination as unknown as { core: { inbound: InboundTable } }).core.inbound;
}

/** Counts the walks over the held migrations from now on. */
function countWalks(t: InboundTable): () => number {
  let walks = 0;
  const values = t.values.bind(t);
  t.values = () => {
    walks++;
    return values();
  };
  return () => walks;
}

function destination(): { w: World; c: TscmigNode } {
  const w = new World();
  const c = w.node("c", new MemoryJournal(), { host: w.host("c") });
  c.start();
  return { w, c };
}

describe("a Prepare flood costs the same per Prepare however many are held", () => {
  it("admitting one more Prepare next to 200 held walks them once (the in-flight count), not per check", () => {
    const { c } = destination();
    for (let i = 0; i < 200; i++) c.peer.prepare(floodPrepare(i));
    const walks = countWalks(heldTable(c));
    c.peer.prepare(floodPrepare(200));
    // Before: the lease pass, the VM check and the in-flight count each walked (and copied) them all.
    expect(walks()).toBe(1);
    expect(c.destination.pending()).toHaveLength(201);
  });

  it("a second Prepare of a VM already migrating in is still refused, found through the index", () => {
    const { c } = destination();
    for (let i = 0; i < 50; i++) c.peer.prepare(floodPrepare(i));
    let reason: string | undefined;
    try {
      c.peer.prepare(floodPrepare(999, "ghost-7"));
    } catch (e) {
      reason = (e as { reason?: string }).reason;
    }
    expect(reason).toBe("migration_in_progress");
    expect(c.destination.pendingFor("ghost-7")?.req.migrationId).toBe("flood-7");
  });
});

describe("the lease pass is skipped only while nothing can expire", () => {
  it("a lease taken later expires on its own time, after the earlier one (the floor moves up)", async () => {
    const { w, c } = destination();
    c.peer.prepare(floodPrepare(0));
    await w.runFor(5n * S);
    c.peer.prepare(floodPrepare(1));
    await w.runFor(LIMITS.prepareLeaseNs - 5n * S + S); // past flood-0's lease, 4 s short of flood-1's
    expect(c.journal.getInboundMigration("mallory", "flood-0")?.decision).toBe("aborted");
    expect(c.destination.pending().map((i) => i.req.migrationId)).toEqual(["flood-1"]);
    await w.runFor(5n * S);
    expect(c.destination.pending()).toEqual([]);
    expect(c.journal.getInboundMigration("mallory", "flood-1")?.decision).toBe("aborted");
  });

  it("a lease renewed by a replayed Prepare runs from the renewal", async () => {
    const { w, c } = destination();
    c.peer.prepare(floodPrepare(0));
    await w.runFor(10n * S);
    c.peer.prepare(floodPrepare(0)); // the replay renews it
    await w.runFor(LIMITS.prepareLeaseNs - 10n * S + S); // past the first lease, not the renewed one
    expect(c.destination.pending().map((i) => i.req.migrationId)).toEqual(["flood-0"]);
    await w.runFor(10n * S);
    expect(c.journal.getInboundMigration("mallory", "flood-0")?.decision).toBe("aborted");
  });
});

describe("the held-migration table's VM index", () => {
  const inb = (key: string, vmId: string) => ({ req: { vmId, migrationId: key } }) as unknown as Inbound;

  it("follows every set, overwrite, delete and clear", () => {
    const t = new InboundTable();
    const a = inb("a", "vm-1");
    const b = inb("b", "vm-1");
    const a2 = inb("a", "vm-2");
    t.set("a", a).set("b", b);
    expect([...(t.ofVm("vm-1") ?? [])]).toEqual([a, b]);
    t.set("a", a2); // the same key, now another VM
    expect([...(t.ofVm("vm-1") ?? [])]).toEqual([b]);
    expect([...(t.ofVm("vm-2") ?? [])]).toEqual([a2]);
    expect(t.delete("b")).toBe(true);
    expect(t.ofVm("vm-1")).toBeUndefined();
    expect(t.delete("b")).toBe(false);
    t.clear();
    expect([t.size, t.ofVm("vm-2")]).toEqual([0, undefined]);
  });
});

describe("the simulated network's shortcuts", () => {
  function net() {
    const clock = new SimClock();
    const sched = new SimScheduler(clock);
    const cfg = { baseDelayNs: 50_000n, jitterMeanNs: 0n, delayMaxNs: MS, lossP: 0, dupP: 0, resetP: 0, deadlineNs: S, partitions: [] };
    const n = new SimNetwork(sched, () => clock.monotonicNs(), new SeededRandom(1n), cfg, () => {}, () => {});
    return { n, sched };
  }

  it("a dialer hands out one client per address", () => {
    const { n } = net();
    const d = n.dialer("a", { alive: true });
    expect(d.dial("b")).toBe(d.dial("b"));
    expect(d.dial("b")).not.toBe(d.dial("c"));
  });

  it("the tap decodes only what its actor observes: the actor's own Prepares are decoded once, by the server", async () => {
    const { n, sched } = net();
    const w = new World();
    const c = w.node("c", new MemoryJournal(), { host: w.host("c") });
    n.attach("c", { peer: c.peer, rawNs: () => c.host.rawNs(), fence: { alive: true } });
    const seen: Tapped[] = [];
    n.tap = { wants: (from) => from !== HOSTILE_ADDRESS, see: (m) => seen.push(m) };
    const decode = vi.spyOn(REQUESTS.Prepare, "decode");
    try {
      const answered = n.dialer(HOSTILE_ADDRESS, { alive: true }, PEER_CREDENTIAL).dial("c").prepare(floodPrepare(0));
      while (sched.step()) await Promise.resolve();
      await answered;
      expect([decode.mock.calls.length, seen.length]).toEqual([1, 0]);
      const other = n.dialer("d", { alive: true }, PEER_CREDENTIAL).dial("c").prepare(floodPrepare(1));
      while (sched.step()) await Promise.resolve();
      await other;
      expect([decode.mock.calls.length, seen.map((m) => m.method)]).toEqual([3, ["Prepare"]]);
    } finally {
      decode.mockRestore();
    }
  });

  it("the hostile actor's key digits are u32.toString(16) padded to 8", () => {
    const r = new SeededRandom(9n);
    const samples = [0, 1, 0xff, 0x100, 0x0a0b0c0d, 0x7fffffff, 0x80000000, 0xffffffff, ...Array.from({ length: 500 }, () => r.u32())];
    for (const u of samples) expect(hex32(u)).toBe(u.toString(16).padStart(8, "0"));
  });
});
