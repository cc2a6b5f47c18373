// A small TCP proxy for cutting the network between two daemons on demand (node:net; the kernel here
// has no netem). Modes: `pass` forwards bytes; `blackhole` keeps every connection open but drops
// whatever arrives in either direction (a partition: calls hang until their deadline); `cutAfter(n)`
// forwards until n bytes have gone upstream on one connection, then resets every connection (RST)
// once and goes back to `pass` — "the connection cut mid-transfer"; `blackholeAfter(n)` likewise
// switches to `blackhole` mid-message; `heal()` resets what is open and passes again.

import { createServer, type Server, type Socket } from "node:net";

export type ProxyMode = "pass" | "blackhole";

export class TcpProxy {
  private server: Server | null = null;
  private readonly pairs = new Set<{ client: Socket; upstream: Socket; upBytes: number }>();
  mode: ProxyMode = "pass";
  /** Reset every connection once a connection has sent this many bytes upstream; null: never. */
  private cutAtBytes: number | null = null;
  private blackholeAtBytes: number | null = null;
  /** How many times a cut happened, and how many bytes had gone upstream on that connection. */
  cuts: { upstreamBytes: number }[] = [];
  port = 0;

  constructor(
    private readonly targetHost: string,
    private readonly targetPort: number,
  ) {}

  /** `HOST:PORT` to hand a daemon as its destination. */
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  async listen(): Promise<this> {
    this.server = createServer((client) => this.accept(client));
    await new Promise<void>((r) => this.server!.listen(0, "127.0.0.1", r));
    const a = this.server.address();
    this.port = typeof a === "object" && a !== null ? a.port : 0;
    return this;
  }

  /** Arms a one-shot cut: every connection is reset once `bytes` have gone upstream on one of them. */
  cutAfter(bytes: number): void {
    this.cutAtBytes = bytes;
    for (const p of this.pairs) p.upBytes = 0; // count from now: channels stay open between calls
  }

  /** Arms a partition: once `bytes` have gone upstream on a connection, everything is dropped. */
  blackholeAfter(bytes: number): void {
    this.blackholeAtBytes = bytes;
    for (const p of this.pairs) p.upBytes = 0;
  }

  /** Ends a partition: connections stuck in it are reset (peers reconnect), new bytes pass. */
  heal(): void {
    this.mode = "pass";
    this.blackholeAtBytes = null;
    this.resetAll();
  }

  /** Resets (RST) every open connection now. */
  resetAll(): void {
    for (const p of this.pairs) {
      p.client.resetAndDestroy();
      p.upstream.resetAndDestroy();
    }
    this.pairs.clear();
  }

  private accept(client: Socket): void {
    const upstream = new (client.constructor as typeof Socket)();
    const pair = { client, upstream, upBytes: 0 };
    this.pairs.add(pair);
    const drop = () => {
      this.pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", drop);
    upstream.on("error", drop);
    client.on("close", drop);
    upstream.on("close", drop);
    upstream.connect(this.targetPort, this.targetHost);
    client.on("data", (chunk: Buffer) => {
      if (this.mode === "blackhole") return;
      pair.upBytes += chunk.length;
      if (this.blackholeAtBytes !== null && pair.upBytes >= this.blackholeAtBytes) {
        upstream.write(chunk.subarray(0, Math.floor(chunk.length / 2)));
        this.blackholeAtBytes = null;
        this.mode = "blackhole";
        return;
      }
      if (this.cutAtBytes !== null && pair.upBytes >= this.cutAtBytes) {
        // Forward part of it so the receiver holds half a message, then cut.
        upstream.write(chunk.subarray(0, Math.floor(chunk.length / 2)));
        this.cutAtBytes = null;
        this.cuts.push({ upstreamBytes: pair.upBytes });
        this.resetAll();
        return;
      }
      upstream.write(chunk);
    });
    upstream.on("data", (chunk: Buffer) => {
      if (this.mode === "blackhole") return;
      client.write(chunk);
    });
  }

  async close(): Promise<void> {
    this.resetAll();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }
}
