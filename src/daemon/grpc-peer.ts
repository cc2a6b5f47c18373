// The peer protocol over gRPC, both ways: the MigrationService served from a PeerHandler, and a
// PeerDialer whose clients speak to other daemons. gRPC here is only the transport: the messages'
// bytes go to and come from the one protocol core (shared/rpc/peer-protocol.ts), which decodes,
// dispatches and encodes them as it does for the simulated network.

import { MigrationService } from "../shared/rpc/codec.js";
import { createRpcClient, defineRawService, type HandlerContext, type RpcClient, type RpcClientTls, type ServiceRegistration } from "../shared/rpc/index.js";
import { type PeerMethod, PeerServer, peerClient, type PeerTransport } from "../shared/rpc/peer-protocol.js";
import type { PeerClient, PeerDialer, PeerHandler } from "../shared/migration/messages.js";
import type { Clock } from "../shared/time/clock.js";

/**
 * The tscmig.v1.MigrationService over `handler`. A request arrived when grpc-js handed its bytes to
 * the deserializer: what follows (decoding, dispatch) is this daemon's hold, not transit. Dated on
 * this host's raw clock, never earlier than it was (see HandlerContext.receivedAt).
 */
export function migrationService(handler: PeerHandler, hostRawNs: () => bigint, authorize?: (ctx: HandlerContext) => void): ServiceRegistration {
  const server = new PeerServer(handler, hostRawNs);
  return defineRawService(
    MigrationService,
    {
      unary: (method, bytes, ctx) => server.call(method, bytes, ctx.receivedAt(hostRawNs)),
      exchange: () => {
        const session = server.handover();
        return (bytes, ctx) => session.step(bytes, ctx.receivedAt(hostRawNs));
      },
    },
    authorize,
  );
}

export interface GrpcDialerOptions {
  tls?: RpcClientTls;
  /** Metadata on every call (the peer token). */
  headers?: Record<string, string>;
  deadlineNs?: bigint;
  clock: Clock;
}

type Dialed = { client: PeerClient; rpc: RpcClient<typeof MigrationService.method> };

/**
 * Dials peers over gRPC; one client (one channel) per address, reused while it is connected or
 * connecting. One that went idle or failing is replaced (rpc/client.ts `stale`): the new channel
 * resolves the name again, so a peer recreated at a new address is reached by the next migration.
 */
export class GrpcDialer implements PeerDialer {
  private readonly clients = new Map<string, Dialed>();
  constructor(private readonly opts: GrpcDialerOptions) {}

  dial(address: string): PeerClient {
    let c = this.clients.get(address);
    if (c?.rpc.stale()) {
      c.rpc.close(); // no calls on it: an idle channel has none, a failing one fails them at once
      c = undefined;
    }
    if (!c) {
      const rpc = createRpcClient(MigrationService, address, {
        ...(this.opts.tls ? { tls: this.opts.tls } : {}),
        ...(this.opts.deadlineNs ? { deadlineNs: this.opts.deadlineNs } : {}),
        ...(this.opts.headers ? { headers: this.opts.headers } : {}),
      });
      c = { rpc, client: peerClient(grpcTransport(rpc), () => this.opts.clock.monotonicNs()) };
      this.clients.set(address, c);
    }
    return c.client;
  }

  close(): void {
    for (const c of this.clients.values()) c.rpc.close();
    this.clients.clear();
  }
}

/** The gRPC transport of the peer protocol: unary calls and the Handover exchange, as bytes. */
function grpcTransport(rpc: RpcClient<typeof MigrationService.method>): PeerTransport {
  return {
    call: (method: PeerMethod, bytes: Uint8Array) => rpc.raw(method, bytes),
    openExchange: () => {
      const x = rpc.handover();
      return {
        send: (bytes) => x.sendRaw(bytes),
        close: () => x.close(),
        get live() {
          return x.live;
        },
      };
    },
  };
}
