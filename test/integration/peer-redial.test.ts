// Goal: a peer that went away and came back (a recreated container at a new address) is reached by
// the next migration: the dialer does not keep a channel that lost its connection, it dials afresh
// (a new channel resolves the peer's name again), and a client a migration already holds follows it
// to the new channel; grpc-js re-resolves within a second, not 30 s.
// Method: a real grpc-js server on 127.0.0.1 serving MigrationService, a GrpcDialer, the server shut
// down under a connected client; another dial replaces the channel, then a new server on the same
// address answers both the fresh client and the one held from before. No sleeps: every wait is on a call's outcome.

import { afterEach, describe, expect, it } from "vitest";
import { GrpcDialer } from "../../src/daemon/grpc-peer.js";
import { RealClock } from "../../src/shared/platform/index.js";
import { createRpcServer, type RpcServer } from "../../src/shared/rpc/index.js";
import { redialChannelOptions } from "../../src/shared/rpc/client.js";
import { testImpl } from "../helpers/migration-test-impl.js";

const servers: RpcServer[] = [];
async function serve(address: string): Promise<string> {
  const server = createRpcServer({ services: [testImpl().registration], log: () => {} });
  servers.push(server);
  const { port } = await server.listen(address);
  return `127.0.0.1:${port}`;
}

afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.shutdown(1000)));
});

describe("GrpcDialer re-dials a peer that went away", () => {
  it("replaces a channel that lost its connection, and a client held across that reaches the peer again", async () => {
    const address = await serve("127.0.0.1:0");
    const dialer = new GrpcDialer({ clock: new RealClock() });
    try {
      const held = dialer.dial(address); // as a migration holds it from Prepare to Commit
      await held.ping();

      await servers.splice(0)[0]?.shutdown(1000);
      await expect(held.ping()).rejects.toMatchObject({ code: "unavailable" });

      const other = dialer.dial(address); // another migration dials meanwhile: the failing channel is replaced
      await serve(address); // the peer is back
      await other.ping();
      // The held client's next call goes on the new channel; it used to fail with grpc-js's
      // "Channel has been shut down", reported as internal (seen killing a daemon mid-migrations).
      await held.ping();
    } finally {
      dialer.close();
    }
  });

  it("asks grpc-js to re-resolve a name within a second, not after its 30 s default", () => {
    expect(redialChannelOptions["grpc.dns_min_time_between_resolutions_ms"]).toBeLessThanOrEqual(1000);
  });
});
