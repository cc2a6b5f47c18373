// Both directions of the data plane over gRPC: the MigrationService served from a TscmigNode, and a
// PeerDialer whose clients speak to other daemons. Domain ↔ wire through the codec only.

import { create, toBinary, fromBinary } from "@bufbuild/protobuf";
import {
  MigrationService,
  TransferRequestSchema,
  TransferResponseSchema,
} from "../gen/tscmig/v1/migration_pb.js";
import { createRpcClient, defineService, type RpcClient, type RpcClientTls, type ServiceRegistration } from "../shared/rpc/index.js";
import {
  abortReqFromPb,
  commitReqFromPb,
  commitResFromPb,
  prepareReqFromPb,
  prepareReqToPb,
  prepareResFromPb,
  probeResFromPb,
  resolveResFromPb,
  resolveResToPb,
  restoreReportToPb,
  snapshotFromPb,
  snapshotToPb,
} from "../shared/rpc/codec.js";
import type { PeerClient, PeerDialer } from "../shared/migration/messages.js";
import type { Clock } from "../shared/time/clock.js";
import type { TscmigNode } from "./node.js";
import { invalid } from "../shared/errors.js";


/** The tscmig.v1.MigrationService implementation over a node. */
export function migrationService(node: TscmigNode): ServiceRegistration {
  return defineService(MigrationService, {
    prepare: async (req) => {
      const r = node.prepare(prepareReqFromPb(req));
      return { ...r };
    },
    probe: async (req) => {
      const r = node.probe({ migrationId: req.migrationId, t1RealtimeNs: req.t1RealtimeNs });
      return { ...r };
    },
    transfer: async (req, ctx) => {
      // The request reached this daemon when grpc-js handed its bytes to the deserializer: what
      // follows (decoding, dispatch to this handler) is this daemon's hold, not transit. A duration
      // on the server's clock (this host's, see daemon.ts), subtracted from this host's clock.
      const receiveRawNs = node.host.rawNs() - ctx.sinceReceivedNs();
      if (!req.snapshot) throw invalid("snapshot", "missing");
      const snapshot = snapshotFromPb(req.snapshot);
      return { ...node.transfer({ snapshot }, receiveRawNs, ctx.decodeNs) };
    },
    commit: async (req) => {
      const r = node.commit(commitReqFromPb(req));
      return { report: restoreReportToPb(r.report), replay: r.replay };
    },
    abort: async (req) => {
      node.abort(abortReqFromPb(req));
      return {};
    },
    resolve: async (req) => resolveResToPb(node.resolve({ migrationId: req.migrationId, vmId: req.vmId })),
    ping: async () => ({}),
  });
}

export interface GrpcDialerOptions {
  tls?: RpcClientTls;
  deadlineNs?: bigint;
  clock: Clock;
}

/** Dials peers over gRPC; one client (one channel) per address, reused. */
export class GrpcDialer implements PeerDialer {
  private readonly clients = new Map<string, PeerClient & { close(): void }>();
  constructor(private readonly opts: GrpcDialerOptions) {}

  dial(address: string): PeerClient {
    let c = this.clients.get(address);
    if (!c) {
      c = grpcPeer(createRpcClient(MigrationService, address, { ...(this.opts.tls ? { tls: this.opts.tls } : {}), ...(this.opts.deadlineNs ? { deadlineNs: this.opts.deadlineNs } : {}) }), this.opts.clock);
      this.clients.set(address, c);
    }
    return c;
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }
}

function grpcPeer(client: RpcClient<typeof MigrationService.method>, clock: Clock): PeerClient & { close(): void } {
  return {
    prepare: async (req) => prepareResFromPb(await client.prepare(prepareReqToPb(req))),
    probe: async (req) => probeResFromPb(await client.probe(req)),
    transfer: async (req) => {
      // Encoded here rather than inside grpc-js so the benchmark can report the encode share.
      const t0 = clock.monotonicNs();
      const bytes = toBinary(TransferRequestSchema, create(TransferRequestSchema, { snapshot: snapshotToPb(req.snapshot) }));
      const encodeNs = clock.monotonicNs() - t0;
      const res = fromBinary(TransferResponseSchema, await client.raw("Transfer", bytes));
      return { destinationHoldNs: res.destinationHoldNs, encodeNs };
    },
    commit: async (req) => commitResFromPb(await client.commit(req)),
    abort: async (req) => {
      await client.abort(req);
    },
    resolve: async (req) => resolveResFromPb(await client.resolve(req)),
    ping: async () => {
      await client.ping({});
    },
    close: () => client.close(),
  };
}
