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
 * The client a migration holds finds the channel anew at each call, so one replaced in between (by
 * another migration's dial, when the peer restarted) does not fail it with "Channel has been shut down".
 */
export class GrpcDialer implements PeerDialer {
  private readonly clients = new Map<string, Dialed>();
  constructor(private readonly opts: GrpcDialerOptions) {}

  dial(address: string): PeerClient {
    const c = this.clients.get(address);
    if (c) {
      this.channel(c, address);
      return c.client;
    }
    const made: Dialed = { rpc: this.connect(address), client: peerClient(grpcTransport(() => this.channel(made, address)), () => this.opts.clock.monotonicNs()) };
    this.clients.set(address, made);
    return made.client;
  }

  close(): void {
    for (const c of this.clients.values()) c.rpc.close();
    this.clients.clear();
  }

  /** `c`'s channel, replaced first when it went idle or failing (calls already started on the old one go on). */
  private channel(c: Dialed, address: string): RpcClient<typeof MigrationService.method> {
    if (c.rpc.stale()) {
      c.rpc.close();
      c.rpc = this.connect(address);
    }
    return c.rpc;
  }

  private connect(address: string): RpcClient<typeof MigrationService.method> {
    return createRpcClient(MigrationService, address, {
      ...(this.opts.tls ? { tls: this.opts.tls } : {}),
      ...(this.opts.deadlineNs ? { deadlineNs: this.opts.deadlineNs } : {}),
      ...(this.opts.headers ? { headers: this.opts.headers } : {}),
    });
  }
}

/** The gRPC transport of the peer protocol over the channel `rpc()` gives at each call: unary calls and the Handover exchange, as bytes. */
function grpcTransport(rpc: () => RpcClient<typeof MigrationService.method>): PeerTransport {
  return {
    call: (method: PeerMethod, bytes: Uint8Array) => rpc().raw(method, bytes),
    openExchange: () => {
      const x = rpc().handover();
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
