// Goal: the recovery loop retries each open step on its own back-off (0.5 s doubling to 30 s), a
// success clears the step's failures, a step no role reports any more is forgotten, a peer that
// cannot be reached is probed by one step for all of its steps, and the in-doubt listing shows
// attempts and the last error per migration. Method: a RecoveryLoop on simulated time
// with scripted tasks, passes driven by hand.

import { describe, expect, it } from "vitest";
import { TscmigError } from "../../src/shared/errors.js";
import { SILENT_LOGGER } from "../../src/shared/logger.js";
import type { RecoveryTask } from "../../src/shared/migration/vm-registry.js";
import { flushMicrotasks, SimClock, SimScheduler } from "../../src/shared/time/sim.js";
import { RecoveryLoop, recoveryBackoffNs } from "../../src/daemon/recovery-loop.js";

const MS = 1_000_000n;

function rig(tasks: () => RecoveryTask[]) {
  const clock = new SimClock();
  const scheduler = new SimScheduler(clock);
  let passes = 0;
  const loop = new RecoveryLoop({ clock, scheduler, log: SILENT_LOGGER, intervalNs: 500n * MS, beforePass: () => passes++, tasks });
  return { clock, scheduler, loop, passes: () => passes };
}

function task(key: string, run: () => Promise<void>, peer = `peer-of-${key}`): RecoveryTask {
  return { key, step: "commit", migrationId: key, vmId: "vm", peer, run };
}

describe("the recovery loop", () => {
  it("backs off per step: a failing step is not retried before its back-off, a healthy one runs every pass", async () => {
    const calls = { bad: 0, good: 0 };
    const r = rig(() => [
      task("bad", async () => {
        calls.bad++;
        throw new TscmigError("unavailable", "peer down");
      }),
      task("good", async () => {
        calls.good++;
      }),
    ]);
    await r.loop.runOnce();
    expect(calls).toEqual({ bad: 1, good: 1 });
    expect(r.loop.retryOf("bad")).toEqual({ attempts: 1, lastError: "unavailable: peer down", nextNs: r.clock.monotonicNs() + recoveryBackoffNs(1) });
    r.clock.advanceTo(r.clock.monotonicNs() + recoveryBackoffNs(1) - 1n);
    await r.loop.runOnce();
    expect(calls).toEqual({ bad: 1, good: 2 });
    r.clock.advanceTo(r.clock.monotonicNs() + 1n);
    await r.loop.runOnce();
    expect(calls).toEqual({ bad: 2, good: 3 });
    expect(r.loop.retryOf("bad")?.attempts).toBe(2);
    expect(r.loop.retryOf("good")).toBeUndefined();
    expect(r.passes()).toBe(3);
  });

  it("a success clears the failures, and a step no longer open is forgotten", async () => {
    let fail = true;
    let open = true;
    const r = rig(() =>
      open
        ? [
            task("s", async () => {
              if (fail) throw new Error("boom");
            }),
          ]
        : [],
    );
    await r.loop.runOnce();
    expect(r.loop.retryOf("s")?.lastError).toBe("internal: boom");
    fail = false;
    r.clock.advanceTo(r.clock.monotonicNs() + recoveryBackoffNs(1));
    await r.loop.runOnce();
    expect(r.loop.retryOf("s")).toBeUndefined();
    fail = true;
    await r.loop.runOnce();
    expect(r.loop.retryOf("s")?.attempts).toBe(1);
    open = false;
    await r.loop.runOnce();
    expect(r.loop.retryOf("s")).toBeUndefined();
  });

  it("an unreachable peer is probed by one step per back-off, not by each of its steps; when it answers, all of them run again", async () => {
    let up = false;
    const calls = new Map<string, number>();
    const r = rig(() =>
      Array.from({ length: 50 }, (_, i) =>
        task(`m${i}`, async () => {
          calls.set(`m${i}`, (calls.get(`m${i}`) ?? 0) + 1);
          if (!up) throw new TscmigError("unavailable", "connection refused");
        }, "dead:7071"),
      ),
    );
    const total = () => [...calls.values()].reduce((a, b) => a + b, 0);
    await r.loop.runOnce(); // nothing known yet: one step finds out, the others wait
    expect(total()).toBe(1);
    expect(r.loop.peerRetryOf("dead:7071")).toMatchObject({ attempts: 1, lastError: "unavailable: connection refused" });
    for (let k = 1; k <= 6; k++) {
      r.clock.advanceTo(r.clock.monotonicNs() + recoveryBackoffNs(k));
      await r.loop.runOnce();
      expect(total(), `after back-off ${k}`).toBe(1 + k); // one probe per back-off
      expect(r.loop.peerRetryOf("dead:7071")?.attempts).toBe(k + 1);
    }
    up = true;
    r.clock.advanceTo(r.clock.monotonicNs() + recoveryBackoffNs(7));
    await r.loop.runOnce(); // the probe succeeds: the peer is up again, and its other steps follow in the same pass
    expect(r.loop.peerRetryOf("dead:7071")).toBeUndefined();
    expect(total()).toBe(1 + 6 + 50);
    expect([...calls.values()].every((n) => n >= 1)).toBe(true);
  });

  it("a reachable peer's steps all run in the pass, behind the first (a refusal also says the peer is up)", async () => {
    const order: string[] = [];
    const r = rig(() =>
      ["a", "b", "c"].map((k) =>
        task(k, async () => {
          order.push(`start ${k}`);
          await flushMicrotasks();
          order.push(`end ${k}`);
          if (k === "a") throw new TscmigError("not_found", "unknown migration");
        }, "up:7071"),
      ),
    );
    await r.loop.runOnce();
    expect(order).toEqual(["start a", "end a", "start b", "start c", "end b", "end c"]);
    expect(r.loop.peerRetryOf("up:7071")).toBeUndefined();
    expect(r.loop.retryOf("a")?.attempts).toBe(1);
  });

  it("a step that calls no peer is never held by a peer's back-off", async () => {
    let local = 0;
    const r = rig(() => [
      task("remote", async () => {
        throw new TscmigError("unavailable", "connection refused");
      }, "dead:7071"),
      { key: "local", step: "resolve", migrationId: "local", vmId: "vm", run: async () => void local++ },
    ]);
    await r.loop.runOnce();
    expect(r.loop.peerRetryOf("dead:7071")?.attempts).toBe(1);
    await r.loop.runOnce();
    await r.loop.runOnce();
    expect(local).toBe(3);
  });

  it("a peer that answers with a refusal is not backed off as a whole: its other steps still run", async () => {
    let n = 0;
    const r = rig(() => [0, 1, 2].map((i) => task(`m${i}`, async () => {
      n++;
      throw new TscmigError("not_found", "unknown migration");
    }, "up:7071")));
    await r.loop.runOnce();
    expect(n).toBe(3);
    expect(r.loop.peerRetryOf("up:7071")).toBeUndefined();
  });

  it("the back-off doubles from 0.5 s and stops at 30 s", () => {
    expect([0, 1, 2, 5, 6, 7, 50].map((a) => recoveryBackoffNs(a) / MS)).toEqual([500n, 1000n, 2000n, 16_000n, 30_000n, 30_000n, 30_000n]);
  });

  it("runs passes on its own every interval until stopped", async () => {
    const r = rig(() => []);
    r.loop.start();
    r.scheduler.runUntil(r.clock.monotonicNs() + 500n * MS);
    await flushMicrotasks(); // the pass ends, and the loop arms the next
    r.scheduler.runUntil(r.clock.monotonicNs() + 500n * MS);
    expect(r.passes()).toBe(2);
    r.loop.stop();
    r.scheduler.runUntil(r.clock.monotonicNs() + 5_000n * MS);
    expect(r.passes()).toBe(2);
  });
});
