// Goal: the event hub behind GET /v1/events resumes a dropped stream without a gap, resets one it
// cannot resume, cuts a client that stops reading (dropping its connection) instead of growing without bound, refuses streams
// past its limit, sends heartbeats, and ends every stream with `bye` on close.
// Method: the hub over in-memory sinks (a flag makes one "full"), with a simulated scheduler.
import { describe, expect, it } from "vitest";
import { EventHub, type FrameSink, sseFrame } from "../../src/daemon/events.js";
import { isTscmigError } from "../../src/shared/errors.js";
import { SimClock, SimScheduler } from "../../src/shared/time/sim.js";

interface TestSink extends FrameSink {
  frames: string[];
  full: boolean;
  ended: boolean;
  aborted: boolean;
  drain(): void;
  close(): void;
}

function sink(): TestSink {
  let drainFn = () => {};
  let closeFn = () => {};
  const s: TestSink = {
    frames: [],
    full: false,
    ended: false,
    aborted: false,
    write(frame) {
      if (s.ended || s.aborted) throw new Error("write after end");
      s.frames.push(frame);
      return !s.full;
    },
    onDrain: (fn) => {
      drainFn = fn;
    },
    onClose: (fn) => {
      closeFn = fn;
    },
    end() {
      s.ended = true;
    },
    abort() {
      s.aborted = true;
    },
    drain() {
      s.full = false;
      drainFn();
    },
    close() {
      closeFn();
    },
  };
  return s;
}

function hub(opts: Partial<ConstructorParameters<typeof EventHub>[0]> = {}) {
  const clock = new SimClock(0n);
  const scheduler = new SimScheduler(clock);
  const h = new EventHub({
    streamId: "run1",
    scheduler,
    streamsMax: 3,
    queueFramesMax: 4,
    replayMax: 5,
    heartbeatIntervalNs: 1_000_000_000n,
    heartbeat: () => ({ trueNs: clock.monotonicNs() }),
    ...opts,
  });
  return { h, scheduler };
}

const events = (s: TestSink) => s.frames.filter((f) => f.includes("event: ")).map((f) => /event: (\S+)/.exec(f)?.[1]);
const ids = (s: TestSink) => s.frames.flatMap((f) => /^id: (\S+)/m.exec(f)?.[1] ?? []);

describe("event stream hub", () => {
  it("opens with a state event, then carries every event in order with 64-bit values as strings", () => {
    const { h } = hub();
    const a = sink();
    h.open(a, () => ({ vms: [] }));
    h.publish("sample", { trueNs: 2n ** 63n + 1n });
    h.publish("host", { skewNs: -5n });
    expect(events(a)).toEqual(["state", "sample", "host"]);
    expect(a.frames[0]).toMatch(/^retry: \d+\n\n$/);
    expect(a.frames.join("")).toContain('"trueNs":"9223372036854775809"');
    expect(ids(a)).toEqual(["run1-0", "run1-1", "run1-2"]);
  });

  it("resumes after the last id a client saw, without the state event and without a gap", () => {
    const { h } = hub();
    for (let i = 0; i < 3; i++) h.publish("sample", { i });
    const b = sink();
    h.open(b, () => ({ fresh: true }), "run1-1");
    expect(events(b)).toEqual(["sample", "sample"]);
    expect(ids(b)).toEqual(["run1-2", "run1-3"]);
  });

  it("resets a client whose id is too old, from another run, or malformed, and sends it a fresh state", () => {
    const { h } = hub();
    for (let i = 0; i < 10; i++) h.publish("sample", { i }); // ring keeps 6..10
    for (const id of ["run1-2", "run0-9", "run1-99", "garbage"]) {
      const c = sink();
      h.open(c, () => ({ fresh: true }), id);
      expect(events(c), id).toEqual(["reset", "state"]);
      c.close();
    }
    const d = sink();
    h.open(d, () => ({}), "run1-5");
    expect(ids(d)).toEqual(["run1-6", "run1-7", "run1-8", "run1-9", "run1-10"]);
  });

  it("queues for a client whose transport is full, flushes on drain, and cuts it past the bound, dropping its connection", () => {
    const { h } = hub();
    const slow = sink();
    h.open(slow, () => ({}));
    slow.full = true;
    h.publish("sample", { n: 1 }); // written; the transport says it is full
    for (let n = 2; n <= 5; n++) h.publish("sample", { n }); // queued (4 = the bound)
    expect(slow.frames.length).toBe(3);
    slow.drain();
    expect(slow.frames.length).toBe(7);
    expect(h.streamCount).toBe(1);
    slow.full = true;
    h.publish("sample", { n: 6 });
    for (let n = 7; n <= 11; n++) h.publish("sample", { n }); // the 5th queued frame passes the bound
    // Dropped, not ended: a graceful end waits for a buffer that never drains, so the connection would stay open.
    expect(slow.aborted).toBe(true);
    expect(slow.ended).toBe(false);
    expect(h.streamCount).toBe(0);
    expect(h.cutCount).toBe(1);
  });

  it("refuses streams past its limit with resource_exhausted, and counts a closed one out", () => {
    const { h } = hub();
    const open = [sink(), sink(), sink()];
    for (const s of open) h.open(s, () => ({}));
    let err: unknown;
    try {
      h.open(sink(), () => ({}));
    } catch (e) {
      err = e;
    }
    expect(isTscmigError(err) && err.code).toBe("resource_exhausted");
    open[0]?.close();
    expect(() => h.open(sink(), () => ({}))).not.toThrow();
  });

  it("sends a heartbeat every interval while a stream is open", () => {
    const { h, scheduler } = hub();
    const a = sink();
    h.open(a, () => ({}));
    scheduler.runUntil(3_500_000_000n);
    expect(events(a).filter((e) => e === "heartbeat").length).toBe(3);
    // Heartbeats carry no id: a resumed stream continues from the last real event.
    expect(a.frames.filter((f) => f.includes("heartbeat")).every((f) => !f.startsWith("id:"))).toBe(true);
  });

  it("ends every stream with bye on close and refuses new ones", () => {
    const { h } = hub();
    const a = sink();
    const b = sink();
    h.open(a, () => ({}));
    h.open(b, () => ({}));
    h.close();
    for (const s of [a, b]) {
      expect(events(s).at(-1)).toBe("bye");
      expect(s.ended).toBe(true);
    }
    let err: unknown;
    try {
      h.open(sink(), () => ({}));
    } catch (e) {
      err = e;
    }
    expect(isTscmigError(err) && err.code).toBe("unavailable");
    h.publish("sample", {}); // no stream, no throw
  });

  it("writes each frame's data on one line whatever the payload holds", () => {
    expect(sseFrame("guest", { text: "two\nlines\r\n" })).toBe('event: guest\ndata: {"text":"two\\nlines\\r\\n"}\n\n');
  });
});
