// Goal: on-receipt switchover keeps I6 and I7 — the destination runs the VM as soon as the snapshot
// arrives, the source never resumes it on its own once the Transfer left, a source that lost the
// Transfer's answer learns the outcome from the destination, and a Transfer the destination said it
// never ran is refused forever (the fence) — over the Handover exchange and the unary calls, and
// after a crash at every site the mode passes through. Also: the restore time a report gives (either
// mode) ends at the resume, not at the journal writes after it.
// Method: TscmigNodes on one SimClock (test/helpers/sim-world.ts); lost messages by interception or
// by a handler that swallows the Transfer (kept to deliver late); crashes by a Faults that throws at
// one named site, the node then restarted over its journal; assertions on which daemons run the VM.
import { describe, expect, it } from "vitest";
import type { TscmigNode } from "../../src/daemon/node.js";
import type { RestoreFn } from "../../src/destination/migrate-in.js";
import { TscmigError } from "../../src/shared/errors.js";
import { CrashSignal, type FaultSite, type Faults } from "../../src/shared/faults.js";
import { MemoryJournal } from "../../src/shared/migration/journal.js";
import type { PeerHandler, TransferReq } from "../../src/shared/migration/messages.js";
import { MS, World } from "../helpers/sim-world.js";

const S = 1_000n * MS;

/** Daemons running `vmId` now. */
function owners(nodes: readonly TscmigNode[], vmId: string): string[] {
  return nodes.filter((n) => n.listVms().some((h) => h.id === vmId && h.vm.running)).map((n) => n.cfg.name);
}

/** Crashes (once) at `site`. */
function crashAt(site: FaultSite): Faults & { fired: boolean } {
  const f = {
    fired: false,
    fire: (s: FaultSite) => {
      if (s !== site || f.fired) return false;
      f.fired = true;
      throw new CrashSignal(s);
    },
    delayNs: () => 0n,
  };
  return f;
}

function pair(o: { exchange?: boolean; faults?: { a?: Faults; c?: Faults } } = {}) {
  const w = new World(o.exchange === false ? { exchange: false } : {});
  const ja = new MemoryJournal();
  const jc = new MemoryJournal();
  const a = w.node("a", ja, o.faults?.a ? { faults: o.faults.a } : {});
  const c = w.node("c", jc, o.faults?.c ? { faults: o.faults.c } : {});
  a.start();
  c.start();
  a.createVm({ id: "vm", vcpus: 2 });
  return { w, a, c, ja, jc };
}

/** Watches every instant the scheduler runs: never two owners at once (I6). */
async function runWatching(w: World, nodes: () => readonly TscmigNode[], ns: bigint): Promise<void> {
  const end = w.clock.monotonicNs() + ns;
  while (w.clock.monotonicNs() < end) {
    await w.advance(10n * MS);
    expect(owners(nodes(), "vm").length, `two owners at ${w.clock.monotonicNs()}`).toBeLessThanOrEqual(1);
  }
}

describe("on-receipt switchover: the happy path", () => {
  for (const exchange of [true, false])
    it(`commits on the Transfer's answer alone, over ${exchange ? "the Handover exchange" : "the unary calls"}, with an honest bound`, async () => {
      const { w, a, c } = pair({ exchange });
      const calls: string[] = [];
      w.intercept = (_f, _t, m) => (calls.push(m), "deliver");
      const r = await w.settle(a.migrate("vm", { destination: "c", switchover: "on-receipt", estimator: "one-sided" }));
      expect(r.outcome).toBe("committed");
      expect(r.switchover).toBe("on-receipt");
      expect(r.path).toBe(exchange ? "handover" : "unary");
      expect(calls).not.toContain("Commit");
      expect(owners([a, c], "vm")).toEqual(["c"]);
      const err = r.tscErrorNs < 0n ? -r.tscErrorNs : r.tscErrorNs;
      expect(err).toBeLessThanOrEqual(r.errorBoundNs);
      expect(a.journal.getMigration(r.migrationId)).toMatchObject({ decision: "committed", phase: "committed" });
      expect(c.journal.getInboundMigration("a", r.migrationId)).toMatchObject({ decision: "committed", phase: "running" });
    });
});

describe("the restore's reported duration", () => {
  for (const switchover of ["on-receipt", "two-phase"] as const)
    it(`ends at the resume (${switchover}): a slow journal write after it is not counted as restore time`, async () => {
      const { w, a, jc } = pair();
      const put = jc.putVm.bind(jc);
      jc.putVm = (rec) => {
        if (rec.role === "owner") w.clock.advanceTo(w.clock.monotonicNs() + 5n * MS); // the adopted VM's record, written once it runs
        put(rec);
      };
      const r = await w.settle(a.migrate("vm", { destination: "c", switchover }));
      expect(r.outcome).toBe("committed");
      expect(r.phases.restoreNs).toBeLessThan(5n * MS);
    });
});

describe("on-receipt switchover: a restore that fails", () => {
  it("decides nothing: the Transfer is refused, the destination keeps nothing, and the source resumes its VM", async () => {
    // A restore that fails every time (a payload the hypervisor refuses at KVM_SET_SREGS, say). Deciding
    // before the restore told the source "committed" and retried the restore for ever: the VM ran nowhere.
    let attempts = 0;
    const broken: RestoreFn = () => {
      attempts++;
      throw new TscmigError("invalid_argument", "snapshot: the hypervisor refused the vCPU registers", { field: "snapshot.backendPayload" });
    };
    const w = new World();
    const ja = new MemoryJournal();
    const jc = new MemoryJournal();
    const a = w.node("a", ja);
    const c = w.node("c", jc, { restore: broken });
    a.start();
    c.start();
    a.createVm({ id: "vm", vcpus: 2 });
    const r = await w.settle(a.migrate("vm", { destination: "c", switchover: "on-receipt" }));
    expect(r.outcome).toBe("aborted");
    await runWatching(w, () => [a, c], 5n * S);
    expect(owners([a, c], "vm")).toEqual(["a"]);
    expect(attempts).toBe(1);
    expect(jc.listVms().filter((v) => v.role === "staged")).toEqual([]);
    expect(c.journal.getInboundMigration("a", r.migrationId)?.decision).toBe("aborted");
  });
});

describe("on-receipt switchover: the decision's write between the restore and the resume", () => {
  it("widens the error bound by the drift over it (a 50 ms stall in that write: at least 50 µs more)", async () => {
    const bound = async (stallNs: bigint): Promise<bigint> => {
      const { w, a, jc } = pair();
      const put = jc.putMigration.bind(jc);
      jc.putMigration = (rec) => {
        if (rec.role === "destination" && rec.phase === "staged") w.clock.advanceTo(w.clock.monotonicNs() + stallNs); // a slow sync
        put(rec);
      };
      const r = await w.settle(a.migrate("vm", { destination: "c", switchover: "on-receipt" }));
      expect(r.outcome).toBe("committed");
      return r.errorBoundNs;
    };
    const quick = await bound(0n);
    const slow = await bound(50n * MS);
    // Two crystals, each up to 500 ppm off, over 50 ms: 50 µs. Restored before the write, the guest's
    // clocks run at this host's rate through it.
    expect(slow - quick).toBeGreaterThanOrEqual(50_000n);
  });
});

describe("on-receipt switchover: a lost Transfer is resolved, and fenced", () => {
  /** C's handler, swallowing the first Transfer (as lost on the way) but keeping it to deliver late. */
  function swallowTransfer(w: World, c: TscmigNode): { late: () => TransferReq | null; handler: PeerHandler } {
    let kept: TransferReq | null = null;
    const handler: PeerHandler = {
      ...c.peer,
      transfer: (req, at, d) => {
        if (kept === null) {
          kept = req;
          throw new TscmigError("unavailable", "lost on the way");
        }
        return c.peer.transfer(req, at, d);
      },
    };
    w.net.attach("c", handler, () => c.host.rawNs());
    return { late: () => kept, handler };
  }

  it("the source resumes only on the destination's fenced answer; the late Transfer is refused for good, also after a restart", async () => {
    const { w, a, c, jc } = pair({ exchange: false });
    const t = swallowTransfer(w, c);
    const r = await w.settle(a.migrate("vm", { destination: "c", switchover: "on-receipt" }));
    expect(r.outcome).toBe("aborted");
    expect(r.error?.reason).toBe("transfer_fenced");
    expect(owners([a, c], "vm")).toEqual(["a"]);
    expect(c.journal.getInboundMigration("a", r.migrationId)).toMatchObject({ decision: "aborted", phase: "fenced" });
    const late = t.late() as TransferReq;
    expect(() => c.peer.transfer(late, c.host.rawNs(), 0n)).toThrow(/aborted/);
    w.drop("c");
    const c2 = w.node("c", jc);
    c2.start();
    expect(() => c2.peer.transfer(late, c2.host.rawNs(), 0n)).toThrow(/aborted/);
    expect(owners([a, c2], "vm")).toEqual(["a"]);
  });

  it("a fence of a migration never seen is durable too: a late Prepare and Transfer of it are refused", async () => {
    const { w, a, c } = pair();
    const res = c.peer.resolve({ migrationId: "m-x", vmId: "vm", sourceKey: "ab".repeat(16), fence: { sourceName: "a", generation: 1n } });
    expect(res.decision).toBe("unknown");
    expect(c.journal.getInboundMigration("a", "m-x")).toMatchObject({ decision: "aborted", phase: "fenced" });
    const r = await w.settle(a.migrate("vm", { destination: "c", switchover: "on-receipt", migrationId: "m-x" }));
    expect(r.outcome).toBe("refused");
    expect(owners([a, c], "vm")).toEqual(["a"]);
  });

  it("a fence of generation 0 (no Prepare carries one) is refused, naming the field, and records nothing", () => {
    const { c } = pair();
    expect(() => c.peer.resolve({ migrationId: "m-y", vmId: "vm", sourceKey: "ab".repeat(16), fence: { sourceName: "a", generation: 0n } })).toThrow(
      expect.objectContaining({ code: "invalid_argument", field: "generation" }),
    );
    expect(c.journal.getInboundMigration("a", "m-y")).toBeUndefined();
  });

  it("the source never resumes on its own while the destination is unreachable; it resolves once it is back", async () => {
    const { w, a, c } = pair();
    let cut = true;
    w.intercept = (_f, _t, m) => (cut && (m === "Transfer" || m === "Resolve") ? "drop" : "deliver");
    const r = await w.settle(a.migrate("vm", { destination: "c", switchover: "on-receipt" }));
    expect(r.outcome).toBe("in-doubt");
    expect(owners([a, c], "vm")).toEqual([]); // paused at A, never received at C
    expect(a.inDoubt().map((m) => m.state)).toEqual(["handed off on receipt; asking the destination what became of the Transfer (Resolve)"]);
    cut = false;
    await runWatching(w, () => [a, c], 5n * S);
    expect(owners([a, c], "vm")).toEqual(["a"]);
    expect(a.journal.getMigration(r.migrationId)).toMatchObject({ decision: "aborted" });
  });

  it("a broken fence (answered, not journaled) lets the late Transfer run the VM a second time: what the campaign's I6 must catch", async () => {
    const w = new World({ exchange: false });
    const a = w.node("a", new MemoryJournal());
    // The test seam the chaos sensitivity test uses: never set in production.
    const c = w.node("c", new MemoryJournal(), { brokenFence: true });
    a.start();
    c.start();
    a.createVm({ id: "vm", vcpus: 1 });
    const t = swallowTransfer(w, c);
    expect((await w.settle(a.migrate("vm", { destination: "c", switchover: "on-receipt" }))).outcome).toBe("aborted");
    t.handler.transfer(t.late() as TransferReq, c.host.rawNs(), 0n);
    expect(owners([a, c], "vm")).toEqual(["a", "c"]);
  });
});

describe("on-receipt switchover: a crash at every site it passes through", () => {
  const sites: { site: FaultSite; who: "a" | "c"; owner: "a" | "c" }[] = [
    // Journaled handing-off before the pause, nothing sent: the restart asks C, which fences it: A resumes.
    { site: "crash.source.afterHandingOffJournal", who: "a", owner: "a" },
    // Paused, nothing sent: the same, from a paused VM.
    { site: "crash.source.afterPause", who: "a", owner: "a" },
    // C runs it already; A learns so from C after its restart.
    { site: "crash.source.afterTransfer", who: "a", owner: "c" },
    // C had built nothing durable yet (the restore runs before the decision): A's Resolve fences it.
    { site: "crash.destination.beforeRestore", who: "c", owner: "a" },
    // C decided (staged and committed, after the restore worked): it restores again after its restart.
    { site: "crash.destination.afterStage", who: "c", owner: "c" },
    { site: "crash.destination.duringRestore", who: "c", owner: "c" },
    { site: "crash.destination.afterRestore", who: "c", owner: "c" },
  ];
  for (const s of sites)
    it(`${s.site}: the VM ends on ${s.who === s.owner ? "the crashed" : "the other"} daemon, never on two`, async () => {
      const f = crashAt(s.site);
      const { w, a, c, ja, jc } = pair({ faults: s.who === "a" ? { a: f } : { c: f } });
      let nodes: TscmigNode[] = [a, c];
      const run = a.migrate("vm", { destination: "c", switchover: "on-receipt" }).catch((e: unknown) => e);
      await w.settle(run);
      expect(f.fired).toBe(true);
      w.drop(s.who);
      const back = w.node(s.who, s.who === "a" ? ja : jc);
      back.start();
      nodes = s.who === "a" ? [back, c] : [a, back];
      await runWatching(w, () => nodes, 12n * S);
      expect(owners(nodes, "vm")).toEqual([s.owner]);
    });

  it("a restarted source whose record of the destination's answer lands but reports a full disk still resumes the VM, once", async () => {
    // Paused and handing off when it died: only the destination's answer may resume the VM.
    const f = crashAt("crash.source.afterPause");
    const { w, a, c, ja } = pair({ faults: { a: f } });
    await w.settle(a.migrate("vm", { destination: "c", switchover: "on-receipt" }).catch((e: unknown) => e));
    w.drop("a");
    // The write of the outcome lands, then fails as SQLite does on a full disk (the sim's disk-full fault).
    let failed = false;
    const put = ja.putMigration.bind(ja);
    ja.putMigration = (rec) => {
      put(rec);
      if (rec.role === "source" && rec.phase === "aborted" && !failed) {
        failed = true;
        throw Object.assign(new Error("database or disk is full"), { name: "SqliteError", code: "SQLITE_FULL" });
      }
    };
    const back = w.node("a", ja);
    back.start();
    await runWatching(w, () => [back, c], 12n * S);
    expect(failed).toBe(true);
    expect(owners([back, c], "vm")).toEqual(["a"]);
  });

  it("crash.source.afterResolve and crash.destination.afterFence: the answer is lost with the crash, the fence stands, the VM resumes at A once", async () => {
    for (const site of ["crash.source.afterResolve", "crash.destination.afterFence"] as const) {
      const f = crashAt(site);
      const who = site.startsWith("crash.source") ? "a" : "c";
      const { w, a, c, ja, jc } = pair({ faults: who === "a" ? { a: f } : { c: f } });
      let cut = true;
      w.intercept = (_f, _t, m) => (cut && m === "Transfer" ? "drop" : "deliver");
      const run = a.migrate("vm", { destination: "c", switchover: "on-receipt" }).catch((e: unknown) => e);
      await w.settle(run);
      cut = false;
      expect(f.fired, site).toBe(true);
      w.drop(who);
      const back = w.node(who, who === "a" ? ja : jc);
      back.start();
      const nodes = who === "a" ? [back, c] : [a, back];
      await runWatching(w, () => nodes, 12n * S);
      expect(owners(nodes, "vm"), site).toEqual(["a"]);
    }
  });
});
