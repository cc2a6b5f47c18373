// The live event stream behind `GET /v1/events` (server-sent events): one hub per daemon fans typed
// events out to every open stream. Why it is shaped this way:
// - A browser's EventSource reconnects by itself and sends the id of the last event it saw; the hub
//   keeps the latest events in a ring, so a stream that dropped resumes without a gap, and one that
//   cannot (ring overrun, or another daemon run: ids carry this run's stream id) gets a `reset`
//   telling it to start again from the `state` event that opens every fresh stream.
// - A slow client must not grow the daemon's memory: frames it has not taken wait in a bounded
//   queue, and a client past the bound is cut, its connection dropped (it reconnects and resumes,
//   or resets); ended gracefully, a connection that is never read would stay open for good.
// - Streams are few and long-lived: their count is limited, a heartbeat keeps proxies from timing
//   them out and tells a viewer the daemon is alive, and shutdown ends each with a `bye`.
// Frames are JSON with 64-bit values as decimal strings (docs/operations.md#interfaces), serialised once per event.

import { TscmigError } from "../shared/errors.js";
import { bigintReplacer } from "../shared/json-safe.js";
import type { Scheduler, Timer } from "../shared/time/clock.js";

/** What a stream can carry; every frame's `event:` is one of these. */
export const EVENT_TYPES = ["state", "host", "vm", "vm-gone", "sample", "guest", "migration", "peers", "heartbeat", "reset", "bye"] as const;
export type EventType = (typeof EVENT_TYPES)[number];

/** Where a stream's frames go (a hijacked HTTP response in production, an array in tests). */
export interface FrameSink {
  /** Writes a frame; false when the transport's buffer is full (wait for `onDrain`). */
  write(frame: string): boolean;
  onDrain(fn: () => void): void;
  /** Called when the peer goes away (closed tab, cut connection). */
  onClose(fn: () => void): void;
  end(): void;
  /**
   * Drops the transport at once. For a client cut for falling behind: its buffer is full and will
   * not drain, so a graceful `end` would never finish and its connection would stay open for good.
   */
  abort(): void;
}

export interface EventHubOptions {
  /** Distinguishes this run's ids from another run's, so a resumed id from a restarted daemon resets. */
  streamId: string;
  scheduler: Scheduler;
  streamsMax: number;
  queueFramesMax: number;
  replayMax: number;
  heartbeatIntervalNs: bigint;
  /** The payload of each heartbeat (e.g. the daemon's true time now). */
  heartbeat: () => unknown;
  /** Suggested reconnect delay sent to EventSource clients. */
  retryMs?: number;
}

interface Stored {
  seq: number;
  frame: string;
}

class Stream {
  private queue: string[] = [];
  private blocked = false;
  closed = false;

  constructor(
    private readonly sink: FrameSink,
    private readonly queueMax: number,
    private readonly onCut: (s: Stream) => void,
  ) {
    sink.onDrain(() => this.flush());
  }

  send(frame: string): void {
    if (this.closed) return;
    if (this.blocked) {
      this.queue.push(frame);
      if (this.queue.length > this.queueMax) this.onCut(this);
      return;
    }
    if (!this.sink.write(frame)) this.blocked = true;
  }

  private flush(): void {
    this.blocked = false;
    while (!this.closed && this.queue.length > 0) {
      const frame = this.queue.shift() as string;
      if (!this.sink.write(frame)) {
        this.blocked = true;
        return;
      }
    }
  }

  end(lastFrame?: string): void {
    if (this.closed) return;
    this.closed = true;
    this.queue = [];
    if (lastFrame !== undefined) this.sink.write(lastFrame);
    this.sink.end();
  }

  abort(): void {
    if (this.closed) return;
    this.closed = true;
    this.queue = [];
    this.sink.abort();
  }
}

/** One SSE frame. JSON.stringify escapes line breaks, so `data` is always one line. */
export function sseFrame(type: EventType, payload: unknown, id?: string): string {
  const idLine = id === undefined ? "" : `id: ${id}\n`;
  return `${idLine}event: ${type}\ndata: ${JSON.stringify(payload, bigintReplacer)}\n\n`;
}

export class EventHub {
  private readonly ring: Stored[] = [];
  private seq = 0;
  private readonly streams = new Set<Stream>();
  private heartbeatTimer: Timer | null = null;
  private closed = false;
  /** Streams cut for falling behind since the hub started (a metric for the curious; tests read it). */
  cutCount = 0;

  constructor(private readonly opts: EventHubOptions) {}

  get streamCount(): number {
    return this.streams.size;
  }

  /** The id the next event would follow, as a client would quote it. */
  lastId(): string {
    return `${this.opts.streamId}-${this.seq}`;
  }

  /** Sends one event to every open stream and keeps it for resumption. */
  publish(type: EventType, payload: unknown): void {
    if (this.closed) return;
    this.seq += 1;
    const frame = sseFrame(type, payload, `${this.opts.streamId}-${this.seq}`);
    this.ring.push({ seq: this.seq, frame });
    if (this.ring.length > this.opts.replayMax) this.ring.splice(0, this.ring.length - this.opts.replayMax);
    for (const s of this.streams) s.send(frame);
  }

  /**
   * Opens a stream on `sink`. With `lastEventId` of this run still in the ring, the stream resumes
   * after it; otherwise it starts with `reset` (when an id was given) and `fresh()`'s state event.
   * Refuses past the stream limit, and after close.
   */
  open(sink: FrameSink, fresh: () => unknown, lastEventId?: string): void {
    if (this.closed) throw new TscmigError("unavailable", "the daemon is shutting down");
    if (this.streams.size >= this.opts.streamsMax)
      throw new TscmigError("resource_exhausted", `at most ${this.opts.streamsMax} event streams at once`, { reason: "event_streams_limit" });
    const stream = new Stream(sink, this.opts.queueFramesMax, (s) => this.cut(s));
    this.streams.add(stream);
    sink.onClose(() => {
      stream.closed = true;
      this.streams.delete(stream);
    });
    stream.send(`retry: ${this.opts.retryMs ?? 2000}\n\n`);
    const after = this.resumePoint(lastEventId);
    if (after !== null) {
      for (const e of this.ring) if (e.seq > after) stream.send(e.frame);
    } else {
      if (lastEventId !== undefined && lastEventId !== "") stream.send(sseFrame("reset", { reason: "events since that id are no longer kept" }));
      stream.send(sseFrame("state", fresh(), this.lastId()));
    }
    this.armHeartbeat();
  }

  /** The sequence number to resume after, or null when the id cannot be resumed from. */
  private resumePoint(lastEventId: string | undefined): number | null {
    if (lastEventId === undefined) return null;
    const prefix = `${this.opts.streamId}-`;
    if (!lastEventId.startsWith(prefix)) return null;
    const text = lastEventId.slice(prefix.length);
    if (!/^[0-9]{1,15}$/.test(text)) return null;
    const n = Number(text);
    if (n > this.seq) return null;
    if (n === this.seq) return n;
    const oldest = this.ring[0]?.seq ?? this.seq + 1;
    return n + 1 >= oldest ? n : null;
  }

  private cut(s: Stream): void {
    this.cutCount += 1;
    this.streams.delete(s);
    s.abort();
  }

  private armHeartbeat(): void {
    if (this.heartbeatTimer !== null || this.closed) return;
    this.heartbeatTimer = this.opts.scheduler.after(this.opts.heartbeatIntervalNs, () => {
      this.heartbeatTimer = null;
      if (this.closed || this.streams.size === 0) return;
      const frame = sseFrame("heartbeat", this.opts.heartbeat());
      for (const s of this.streams) s.send(frame);
      this.armHeartbeat();
    });
  }

  /** Ends every stream with `bye` and refuses new ones (shutdown). */
  close(reason = "daemon shutting down"): void {
    if (this.closed) return;
    this.closed = true;
    this.heartbeatTimer?.cancel();
    this.heartbeatTimer = null;
    const frame = sseFrame("bye", { reason });
    for (const s of this.streams) s.end(frame);
    this.streams.clear();
  }
}
