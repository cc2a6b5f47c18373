// Goal: the recovery loop retries each open step on its own back-off (0.5 s doubling to 30 s), a
// success clears the step's failures, a step no role reports any more is forgotten, and the in-doubt
// listing shows attempts and the last error per migration. Method: a RecoveryLoop on simulated time
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

function task(key: string, run: () => Promise<void>): RecoveryTask {
  return { key, step: "commit", migrationId: key, vmId: "vm", run };
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
