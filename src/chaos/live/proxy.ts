// A fault-injecting TCP proxy for live campaigns (Toxiproxy's toxics, minus its unseeded RNG):
// it sits in front of a daemon's gRPC port, every peer dials the proxy instead, and the harness
// changes what it does to the byte streams while calls are in flight.
//
//   delay       every chunk, both ways, waits `delayNs` (order kept): latency the client can measure
//   stall       stop forwarding (hold bytes) until `release()`; a stalled connection is then reset,
//               like Toxiproxy's `timeout` toxic — HTTP/2 frames are never cut in half, so the gRPC
//               client sees a clean UNAVAILABLE or its deadline, never a protocol error
//   reset       RST every open connection now (`reset_peer`)
//   refuse      new connections are closed at once (`down`)
//
// Timers go through the platform scheduler (src/ never calls setTimeout itself).

import { createServer, type Server, Socket } from "node:net";
import { RealScheduler } from "../../shared/platform/index.js";
import type { Scheduler } from "../../shared/time/clock.js";

interface Link {
  client: Socket;
  upstream: Socket;
  stalledBytes: number;
}

export interface ProxyStats {
  connections: number;
  bytes: number;
  resets: number;
  refused: number;
}

export class FaultProxy {
  private server: Server | null = null;
  private readonly links = new Set<Link>();
  private readonly sched: Scheduler;
  upstream: string | null;
  delayNs = 0n;
  private stalled = false;
  refuse = false;
  readonly stats: ProxyStats = { connections: 0, bytes: 0, resets: 0, refused: 0 };
  address = "";

  constructor(upstream: string | null = null, scheduler: Scheduler = new RealScheduler()) {
    this.upstream = upstream;
    this.sched = scheduler;
  }

  /** Listens on 127.0.0.1 (port 0: any); resolves with HOST:PORT. */
  async start(port = 0): Promise<string> {
    const server = createServer((c) => this.accept(c));
    this.server = server;
    await new Promise<void>((ok, fail) => {
      server.once("error", fail);
      server.listen(port, "127.0.0.1", () => ok());
    });
    const a = server.address();
    this.address = `127.0.0.1:${typeof a === "object" && a ? a.port : port}`;
    return this.address;
  }

  private accept(client: Socket): void {
    client.on("error", () => {});
    if (this.refuse || !this.upstream) {
      this.stats.refused++;
      client.resetAndDestroy();
      return;
    }
    const [host, port] = splitHostPort(this.upstream);
    const upstream = new Socket();
    upstream.on("error", () => {});
    const link: Link = { client, upstream, stalledBytes: 0 };
    this.links.add(link);
    this.stats.connections++;
    const close = () => {
      if (!this.links.delete(link)) return;
      client.destroy();
      upstream.destroy();
    };
    client.on("close", close);
    upstream.on("close", close);
    this.pipe(link, client, upstream);
    this.pipe(link, upstream, client);
    client.pause();
    upstream.connect(port, host, () => client.resume());
  }

  /** Forwards `from` → `to` through the current faults, keeping byte order. */
  private pipe(link: Link, from: Socket, to: Socket): void {
    let chain: Promise<void> = Promise.resolve();
    from.on("data", (chunk: Buffer) => {
      this.stats.bytes += chunk.length;
      if (this.stalled) {
        link.stalledBytes += chunk.length;
        return; // held and never delivered: the link is reset on release
      }
      const d = this.delayNs;
      if (d <= 0n) {
        chain = chain.then(() => {
          if (!to.destroyed) to.write(chunk);
        });
        return;
      }
      const due = new Promise<void>((r) => this.sched.after(d, r));
      chain = chain.then(() => due).then(() => {
        if (!to.destroyed && !this.stalled) to.write(chunk);
      });
    });
    from.on("end", () => {
      void chain.then(() => to.end());
    });
  }

  /** Stops forwarding (a partition). */
  stall(): void {
    this.stalled = true;
  }

  /** Ends a stall: connections that lost bytes to it are reset, the others carry on. */
  release(): void {
    this.stalled = false;
    for (const l of [...this.links]) if (l.stalledBytes > 0) this.resetLink(l);
  }

  /** RST every open connection. */
  reset(): void {
    for (const l of [...this.links]) this.resetLink(l);
  }

  private resetLink(l: Link): void {
    this.stats.resets++;
    this.links.delete(l);
    l.client.resetAndDestroy();
    l.upstream.resetAndDestroy();
  }

  /** No faults: forward everything at once. */
  heal(): void {
    this.delayNs = 0n;
    this.refuse = false;
    if (this.stalled) this.release();
  }

  async close(): Promise<void> {
    this.reset();
    const s = this.server;
    this.server = null;
    if (s) await new Promise<void>((r) => s.close(() => r()));
  }
}

function splitHostPort(a: string): [string, number] {
  const i = a.lastIndexOf(":");
  return [a.slice(0, i).replace(/^\[|\]$/g, ""), Number(a.slice(i + 1))];
}
