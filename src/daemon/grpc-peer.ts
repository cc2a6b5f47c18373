// Both directions of the data plane over gRPC: the MigrationService served from a TscmigNode, and a
// PeerDialer whose clients speak to other daemons. Domain ↔ wire through the codec only.

import { create, toBinary, fromBinary, type MessageInitShape } from "@bufbuild/protobuf";
import {
  HandoverRequestSchema,
  HandoverResponseSchema,
  MigrationService,
  TransferRequestSchema,
  TransferResponseSchema,
  type CommitResponse,
  type ProbeResponse,
  type TransferResponse,
} from "../gen/tscmig/v1/migration_pb.js";
import { createRpcClient, defineService, type HandlerContext, type RpcClient, type RpcClientTls, type ServiceRegistration } from "../shared/rpc/index.js";
import {
  abortReqFromPb,
  abortReqToPb,
  commitReqFromPb,
  commitReqToPb,
  commitResFromPb,
  handoverOpenFromPb,
  handoverOpenToPb,
  probeReqFromPb,
  probeReqToPb,
  resolveReqFromPb,
  resolveReqToPb,
  prepareReqFromPb,
  prepareReqToPb,
  prepareResFromPb,
  probeResFromPb,
  resolveResFromPb,
  resolveResToPb,
  restoreReportToPb,
  transferReqFromPb,
  transferReqToPb,
} from "../shared/rpc/codec.js";
import type { CommitReq, HandoverLink, PeerClient, PeerDialer, SourceRef, TransferReq } from "../shared/migration/messages.js";
import type { Clock } from "../shared/time/clock.js";
import type { TscmigNode } from "./node.js";
import { invalid, TscmigError } from "../shared/errors.js";
import { checkId } from "../shared/migration/snapshot.js";


/** The tscmig.v1.MigrationService implementation over a node. */
export function migrationService(node: TscmigNode, authorize?: (ctx: HandlerContext) => void): ServiceRegistration {
  const hostClock = () => node.host.rawNs();
  // The request reached this daemon when grpc-js handed its bytes to the deserializer: what follows
  // (decoding, dispatch to the handler) is this daemon's hold, not transit. Dated on this host's
  // clock, never earlier than it was (see HandlerContext.receivedAt). Unary call or Handover message.
  const transfer = (t: TransferReq, ctx: HandlerContext) => ({ ...node.transfer(t, ctx.receivedAt(hostClock), ctx.decodeNs) });
  const commit = (c: CommitReq, ctx: HandlerContext) => {
    const r = node.commit(c, ctx.receivedAt(hostClock));
    return { report: restoreReportToPb(r.report), replay: r.replay };
  };
  return defineService(MigrationService, {
    prepare: async (req) => {
      const r = node.prepare(prepareReqFromPb(req));
      return { ...r };
    },
    probe: async (req) => ({ ...node.probe(probeReqFromPb(req)) }),
    transfer: async (req, ctx) => transfer(transferReqFromPb(req), ctx),
    commit: async (req, ctx) => commit(commitReqFromPb(req), ctx),
    abort: async (req) => {
      node.abort(abortReqFromPb(req));
      return {};
    },
    resolve: async (req) => resolveResToPb(node.resolve(resolveReqFromPb(req))),
    ping: async () => ({}),
    handover: () => {
      // Per call: the migration it was opened for, and by whom. Every message after `open` must be about it.
      let migrationId: string | null = null;
      let ref: SourceRef | null = null;
      const same = (id: string, r: SourceRef, field: string) => {
        if (id !== migrationId || r.sourceName !== ref?.sourceName || r.sourceKey !== ref.sourceKey)
          throw invalid(field, `this Handover call was opened for migration ${migrationId} of ${ref?.sourceName}, not ${id} of ${r.sourceName}`);
      };
      return async (req, ctx): Promise<MessageInitShape<typeof HandoverResponseSchema>> => {
        const step = req.step;
        if (step.case === "open") {
          if (migrationId !== null) throw invalid("open", "the Handover call is already open");
          const open = handoverOpenFromPb(step.value);
          checkId(open.migrationId, "open.migrationId");
          node.handoverOpen(open, open.migrationId); // refuses a migration not prepared by this source
          migrationId = open.migrationId;
          ref = { sourceName: open.sourceName, sourceKey: open.sourceKey };
          node.handoverAnswering(ref, migrationId, ctx.receivedAt(hostClock)); // the answer below leaves right after: one-sided's anchor
          return { step: { case: "opened", value: {} } };
        }
        if (migrationId === null) throw invalid("step", "the first Handover message must be open");
        if (step.case === "transfer") {
          const t = transferReqFromPb(step.value);
          same(t.snapshot.migrationId, t, "snapshot.migrationId");
          return { step: { case: "transfer", value: transfer(t, ctx) } };
        }
        if (step.case === "probe") {
          const p = probeReqFromPb(step.value);
          same(p.migrationId, p, "probe.migrationId");
          const r = node.probe(p);
          node.handoverAnswering(p, migrationId, ctx.receivedAt(hostClock));
          return { step: { case: "probe", value: { ...r } } };
        }
        if (step.case === "commit") {
          const c = commitReqFromPb(step.value);
          same(c.migrationId, c, "commit.migrationId");
          return { step: { case: "commit", value: commit(c, ctx) } };
        }
        throw invalid("step", "a Handover message needs one of open, probe, transfer, commit");
      };
    },
  }, authorize);
}

export interface GrpcDialerOptions {
  tls?: RpcClientTls;
  /** Metadata on every call (the peer token). */
  headers?: Record<string, string>;
  deadlineNs?: bigint;
  clock: Clock;
}

/**
 * Dials peers over gRPC; one client (one channel) per address, reused while it is connected or
 * connecting. One that went idle or failing is replaced (rpc/client.ts `stale`): the new channel
 * resolves the name again, so a peer recreated at a new address is reached by the next migration.
 */
export class GrpcDialer implements PeerDialer {
  private readonly clients = new Map<string, PeerClient & { close(): void; stale(): boolean }>();
  constructor(private readonly opts: GrpcDialerOptions) {}

  dial(address: string): PeerClient {
    let c = this.clients.get(address);
    if (c?.stale()) {
      c.close(); // no calls on it: an idle channel has none, a failing one fails them at once
      c = undefined;
    }
    if (!c) {
      c = grpcPeer(
        createRpcClient(MigrationService, address, {
          ...(this.opts.tls ? { tls: this.opts.tls } : {}),
          ...(this.opts.deadlineNs ? { deadlineNs: this.opts.deadlineNs } : {}),
          ...(this.opts.headers ? { headers: this.opts.headers } : {}),
        }),
        this.opts.clock,
      );
      this.clients.set(address, c);
    }
    return c;
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }
}

function grpcPeer(client: RpcClient<typeof MigrationService.method>, clock: Clock): PeerClient & { close(): void; stale(): boolean } {
  return {
    prepare: async (req) => prepareResFromPb(await client.prepare(prepareReqToPb(req))),
    probe: async (req) => probeResFromPb(await client.probe(probeReqToPb(req))),
    transfer: async (req) => {
      const { bytes, encodeNs } = timed(clock, () => toBinary(TransferRequestSchema, create(TransferRequestSchema, transferReqToPb(req))));
      const res = fromBinary(TransferResponseSchema, await client.raw("Transfer", bytes));
      return { destinationHoldNs: res.destinationHoldNs, encodeNs };
    },
    commit: async (req) => commitResFromPb(await client.commit(commitReqToPb(req))),
    handover: async (open) => {
      const x = client.handover();
      try {
        await x.send({ step: { case: "open", value: handoverOpenToPb(open) } });
      } catch (e) {
        x.close();
        throw e;
      }
      const answer = async <C extends "transfer" | "commit" | "probe">(bytes: Uint8Array, want: C) => {
        const res = fromBinary(HandoverResponseSchema, await x.sendRaw(bytes)).step;
        if (res.case !== want) throw new TscmigError("internal", `Handover: answered ${res.case ?? "nothing"} to ${want}`);
        return res.value as C extends "transfer" ? TransferResponse : C extends "probe" ? ProbeResponse : CommitResponse;
      };
      const encode = (step: MessageInitShape<typeof HandoverRequestSchema>["step"]) => toBinary(HandoverRequestSchema, create(HandoverRequestSchema, { step }));
      const link: HandoverLink = {
        transfer: async (req: TransferReq) => {
          const { bytes, encodeNs } = timed(clock, () => encode({ case: "transfer", value: transferReqToPb(req) }));
          const res = await answer(bytes, "transfer");
          return { destinationHoldNs: res.destinationHoldNs, encodeNs };
        },
        commit: async (req) => commitResFromPb(await answer(encode({ case: "commit", value: commitReqToPb(req) }), "commit")),
        probe: async (req) => probeResFromPb(await answer(encode({ case: "probe", value: probeReqToPb(req) }), "probe")),
        get live() {
          return x.live;
        },
        close: () => x.close(),
      };
      return link;
    },
    abort: async (req) => {
      await client.abort(abortReqToPb(req));
    },
    resolve: async (req) => resolveResFromPb(await client.resolve(resolveReqToPb(req))),
    ping: async () => {
      await client.ping({});
    },
    close: () => client.close(),
    stale: () => client.stale(),
  };
}

/** A snapshot encoded here rather than inside grpc-js, so the benchmark can report the encode share. */
function timed(clock: Clock, encode: () => Uint8Array): { bytes: Uint8Array; encodeNs: bigint } {
  const t0 = clock.monotonicNs();
  const bytes = encode();
  return { bytes, encodeNs: clock.monotonicNs() - t0 };
}
