// Letting async protocol code settle between two simulated events, cheaply.
//
// The simulator runs one scheduler event, then must let every promise continuation that event set
// off run to completion before it runs the next one — otherwise code "in flight" would see the
// clock jump under it. `flushMicrotasks` (shared/time/sim.ts) does this with a setImmediate, a full
// event-loop turn (~2 µs). This does it with a process.nextTick queued from *inside* a microtask:
// Node runs the nextTick queue only once V8 has drained the microtask queue completely, including
// every microtask queued while draining, so the tick fires exactly when nothing is left to run
// (~0.3 µs). The leading `await null` makes sure we are inside a microtask when the tick is queued
// (a tick queued from a macrotask would run *before* the microtasks). Nothing in src/ uses
// nextTick itself; if something did, its ticks queued earlier would still run first (FIFO).
//
// Same semantics, same histories: the determinism test compares both drains run for run.

export async function drainMicrotasks(): Promise<void> {
  await null;
  await new Promise<void>((resolve) => process.nextTick(resolve));
}
