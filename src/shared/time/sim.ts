// Simulated time: a clock that moves only when the scheduler runs the next event. Events at the same
// instant run in the order they were scheduled, so one seed gives one history, byte for byte.

import type { Clock, Scheduler, Timer } from "./clock.js";

export class SimClock implements Clock {
  private nowNs: bigint;
  constructor(
    startNs = 0n,
    /** Wall-clock stamp of true time 0 (only for report stamps). */
    private readonly epochNs = 1_767_225_600_000_000_000n,
  ) {
    this.nowNs = startNs;
  }
  monotonicNs(): bigint {
    return this.nowNs;
  }
  realtimeNs(): bigint {
    return this.epochNs + this.nowNs;
  }
  /** Moves true time forward; never backward. */
  advanceTo(tNs: bigint): void {
    if (tNs > this.nowNs) this.nowNs = tNs;
  }
}

const NOTHING = (): void => {};

/** A scheduled event is its own Timer (one object per `after`, the simulator's commonest allocation). */
class Event implements Timer {
  cancelled = false;
  constructor(
    readonly at: bigint,
    readonly seq: number,
    public fn: () => void,
  ) {}
  cancel(): void {
    this.cancelled = true;
    // A cancelled event stays in the heap until its time (a call's deadline: seconds after the
    // answer came). Letting go of its callback frees what that closes over (the call's promise,
    // its bytes) at once, instead of carrying it through every young-generation collection.
    this.fn = NOTHING;
  }
}

/** Binary min-heap keyed by (at, seq). */
export class SimScheduler implements Scheduler {
  private heap: Event[] = [];
  private seq = 0;
  constructor(readonly clock: SimClock) {}

  after(delayNs: bigint, fn: () => void): Timer {
    const ev = new Event(delayNs > 0n ? this.clock.monotonicNs() + delayNs : this.clock.monotonicNs(), this.seq++, fn);
    this.push(ev);
    return ev;
  }

  get pending(): number {
    return this.heap.length;
  }

  /** Runs the next event; false when none is left. */
  step(): boolean {
    for (;;) {
      const ev = this.pop();
      if (!ev) return false;
      if (ev.cancelled) continue;
      this.clock.advanceTo(ev.at);
      ev.fn();
      return true;
    }
  }

  /** Runs every event due at or before `tNs`, then sets the clock to `tNs`. */
  runUntil(tNs: bigint, eventLimit = 10_000_000): number {
    let n = 0;
    while (this.heap.length > 0 && (this.heap[0] as Event).at <= tNs) {
      // Drop a cancelled head here: step() would skip it and run the next live event, which may be
      // due after tNs (time would overshoot the instant asked for).
      if ((this.heap[0] as Event).cancelled) {
        this.pop();
        continue;
      }
      if (++n > eventLimit) throw new Error(`simulation exceeded ${eventLimit} events before ${tNs} ns`);
      this.step();
    }
    this.clock.advanceTo(tNs);
    return n;
  }

  /** Runs until no event is left (bounded). */
  runAll(eventLimit = 10_000_000): number {
    let n = 0;
    while (this.step()) if (++n > eventLimit) throw new Error(`simulation exceeded ${eventLimit} events`);
    return n;
  }

  /** Lets pending promise continuations run between events (microtasks), then steps. */
  async drain(eventLimit = 10_000_000): Promise<number> {
    let n = 0;
    for (;;) {
      await flushMicrotasks();
      if (!this.step()) break;
      if (++n > eventLimit) throw new Error(`simulation exceeded ${eventLimit} events`);
    }
    return n;
  }

  private less(a: Event, b: Event): boolean {
    return a.at < b.at || (a.at === b.at && a.seq < b.seq);
  }
  private push(ev: Event): void {
    const h = this.heap;
    h.push(ev);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(h[i] as Event, h[p] as Event)) break;
      swap(h, i, p);
      i = p;
    }
  }
  private pop(): Event | undefined {
    const h = this.heap;
    if (h.length === 0) return undefined;
    const top = h[0] as Event;
    const last = h.pop() as Event;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && this.less(h[l] as Event, h[m] as Event)) m = l;
        if (r < h.length && this.less(h[r] as Event, h[m] as Event)) m = r;
        if (m === i) break;
        swap(h, i, m);
        i = m;
      }
    }
    return top;
  }
}

function swap(h: Event[], i: number, j: number): void {
  const x = h[i] as Event;
  h[i] = h[j] as Event;
  h[j] = x;
}

/** Resolves after every queued microtask (promise continuation) has run. */
export function flushMicrotasks(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
