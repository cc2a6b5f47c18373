// Goal: an event-stream client that never reads is cut and its connection closed by the daemon, so
// such clients cannot pile up open sockets (each reconnect used to leave one behind for good).
// Method: a whole daemon in this process (test/helpers/daemon-app.ts) listening on loopback; a raw
// socket asks for GET /v1/events and never reads; simulated time runs the dashboard's ticks, with a
// turn of the event loop between ticks so the socket's buffers fill, until the daemon's end of the
// connection is destroyed (the client, which never reads, would not see it close).
import { connect, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type AppDaemon, startAppDaemon } from "../helpers/daemon-app.js";

let app: AppDaemon;
beforeAll(async () => {
  app = await startAppDaemon({ name: "slow-sse" });
});
afterAll(() => app.close());

const TICK_NS = 1_000_000_000n;
const TICKS_MAX = 500; // about 50 fill the buffers and the queue here

function port(): number {
  const a = app.daemon.http.server.address();
  if (a === null || typeof a !== "object") throw new Error("not listening");
  return a.port;
}

/** A client that sends the request and then never reads a byte; and the daemon's end of its connection. */
async function deafClient(): Promise<{ client: Socket; server: Socket }> {
  const accepted = new Promise<Socket>((r) => app.daemon.http.server.once("connection", r));
  const client = connect({ host: "127.0.0.1", port: port() }, () => {
    client.write("GET /v1/events HTTP/1.1\r\nHost: test\r\n\r\n");
    client.pause();
  });
  client.on("error", () => {});
  return { client, server: await accepted };
}

const turn = () => new Promise<void>((r) => setImmediate(r));

describe("an event-stream client that never reads", () => {
  it("is cut, and its connection closed, instead of staying open", async () => {
    for (let i = 0; i < 32; i++) {
      const r = await app.daemon.http.inject({ method: "POST", url: "/v1/vms", payload: { id: `vm-${i}`, vcpus: 64 } });
      expect(r.statusCode).toBe(201);
    }
    const { client, server } = await deafClient();
    let ticks = 0;
    while (!server.destroyed && ticks < TICKS_MAX) {
      app.sched.runUntil(app.sched.clock.monotonicNs() + TICK_NS);
      ticks += 1;
      await turn();
    }
    const written = server.bytesWritten;
    client.destroy();
    expect(written).toBeGreaterThan(0);
    expect(server.destroyed, `still open after ${ticks} ticks of the dashboard (${written} bytes written)`).toBe(true);
  });
});
