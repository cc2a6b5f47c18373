// Letting async protocol code settle between two simulated events, cheaply.
//
// The simulator runs one scheduler event, then must let every promise continuation that event set
// off run to completion before it runs the next one — otherwise code "in flight" would see the
// clock jump under it. `flushMicrotasks` (shared/time/sim.ts) does this with a setImmediate, a full
// event-loop turn (~2 µs). This does it with a process.nextTick queued from *inside* a microtask:
// Node runs the nextTick queue only once V8 has drained the microtask queue completely, including
// every microtask queued while draining, so the tick fires exactly when nothing is left to run
// (~0.3 µs). The tick is queued from a microtask queued after the event ran (a tick queued from
// the event itself would run *before* its microtasks). Nothing in src/ uses nextTick itself; if
// something did, its ticks queued earlier would still run first (FIFO).
//
// Same semantics, same histories: the determinism test compares both drains run for run.

/**
 * Calls `step` until it returns false, each call once every promise continuation queued before it
 * (and every one those queue) has run. A callback chain rather than an awaited loop: an `await`
 * per event cost three promises and an async frame (a fifth of what a simulated run allocated).
 * What `step` throws rejects the returned promise.
 */
export function settleEach(step: () => boolean): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const tick = () => {
      let more: boolean;
      try {
        more = step();
      } catch (e) {
        reject(e);
        return;
      }
      if (more) queueMicrotask(queueTick);
      else resolve();
    };
    const queueTick = () => process.nextTick(tick);
    queueMicrotask(queueTick);
  });
}
