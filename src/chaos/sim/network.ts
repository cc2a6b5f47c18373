// The simulated network: a PeerDialer/PeerClient transport between TscmigNodes in one process, on
// the simulated scheduler. Every message goes through the real codec and protobuf-es
// toBinary/fromBinary in both directions, exactly as over gRPC (grpc-peer.ts), so the wire path is
// exercised; delivery happens after a seeded delay. Faults (TigerBeetle's packet simulator, and
// what Toxiproxy does to a TCP stream):
//
//   loss        a request or a reply vanishes: the caller sees `deadline_exceeded` at its deadline
//   duplicate   a request is delivered twice (the copy's reply is dropped): replays must be idempotent
//   reorder     delays are drawn per message, so messages overtake each other
//   partition   during a window, messages between two daemons (one or both ways) are blackholed
//   reset       the connection breaks before or after the server ran the call: `unavailable`,
//               fast, and the caller cannot tell which
//   crash       a daemon that dies mid-call never answers (its callers see `unavailable`); calls to
//               a dead daemon are refused
//
// Peers authenticate at the transport, as mutual TLS or a peer token in gRPC metadata would: every
// dialer carries a credential, and an endpoint refuses a call without the deployment's peer
// credential with `unauthenticated` before any handler runs. The daemons all hold it; a hostile
// actor may hold it (a compromised peer) or not (an outsider). A tap lets such an actor observe
// what goes by (migration ids, VM ids, generations and snapshots are not secret).
//
// A caller whose process died (its incarnation's fence is down) never sees a reply: its promises
// stay pending forever, as a dead process's would.

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  AbortRequestSchema,
  AbortResponseSchema,
  CommitRequestSchema,
  CommitResponseSchema,
  PingRequestSchema,
  PingResponseSchema,
  PrepareRequestSchema,
  PrepareResponseSchema,
  ProbeRequestSchema,
  ProbeResponseSchema,
  ResolveRequestSchema,
  ResolveResponseSchema,
  TransferRequestSchema,
  TransferResponseSchema,
} from "../../gen/tscmig/v1/migration_pb.js";
import { type ErrorCode, isTscmigError, TscmigError } from "../../shared/errors.js";
import { CrashSignal } from "../../shared/faults.js";
import { LIMITS } from "../../shared/limits.js";
import type { AbortReq, CommitReq, PeerClient, PeerDialer, PrepareReq, TransferReq } from "../../shared/migration/messages.js";
import {
  abortReqFromPb,
  abortReqToPb,
  probeReqFromPb,
  probeReqToPb,
  resolveReqFromPb,
  resolveReqToPb,
  commitReqFromPb,
  commitReqToPb,
  commitResFromPb,
  prepareReqFromPb,
  prepareReqToPb,
  prepareResFromPb,
  probeResFromPb,
  resolveResFromPb,
  resolveResToPb,
  restoreReportToPb,
  transferReqFromPb,
  transferReqToPb,
} from "../../shared/rpc/codec.js";
import type { Scheduler } from "../../shared/time/clock.js";
import { checkId } from "../../shared/migration/snapshot.js";
import type { Random } from "../../shared/time/random.js";
import type { TscmigNode } from "../../daemon/node.js";

export interface Partition {
  fromNs: bigint;
  untilNs: bigint;
  a: string;
  b: string;
  /** Only a → b is cut. */
  oneWay: boolean;
}

export interface NetConfig {
  /** One-way delay floor. */
  baseDelayNs: bigint;
  /** Mean of the exponential extra delay per message (reordering comes from it). */
  jitterMeanNs: bigint;
  /** Cap of one message's delay. */
  delayMaxNs: bigint;
  lossP: number;
  dupP: number;
  resetP: number;
  /** Every call's deadline (the gRPC client's default, shortened for simulation). */
  deadlineNs: bigint;
  partitions: Partition[];
}

/** One process lifetime of a daemon: when it dies, everything it owned goes inert. */
export interface Fence {
  alive: boolean;
}

export interface Endpoint {
  node: TscmigNode;
  fence: Fence;
}

type Reply = { ok: Uint8Array } | { err: { code: ErrorCode; message: string; field?: string; reason?: string } };

export interface NetStats {
  messages: number;
  lost: number;
  duplicated: number;
  resets: number;
  partitioned: number;
  /** Calls the transport refused for want of the peer credential. */
  unauthenticated: number;
}

/** The credential every daemon of the simulated deployment dials and accepts with. */
export const PEER_CREDENTIAL = "deployment-peer-credential";

/** A request as an on-path observer sees it (decoded), at delivery to an authenticated endpoint. */
export type Tapped = { from: string; to: string } & (
  | { method: "Prepare"; req: PrepareReq }
  | { method: "Transfer"; req: TransferReq }
  | { method: "Commit"; req: CommitReq }
  | { method: "Abort"; req: AbortReq }
);

function decodeTapped(from: string, to: string, method: string, b: Uint8Array): Tapped | null {
  switch (method) {
    case "Prepare":
      return { from, to, method, req: prepareReqFromPb(fromBinary(PrepareRequestSchema, b)) };
    case "Transfer":
      return { from, to, method, req: transferReqFromPb(fromBinary(TransferRequestSchema, b)) };
    case "Commit":
      return { from, to, method, req: commitReqFromPb(fromBinary(CommitRequestSchema, b)) };
    case "Abort":
      return { from, to, method, req: abortReqFromPb(fromBinary(AbortRequestSchema, b)) };
    default:
      return null;
  }
}

/** One message on the simulated wire, as `tscmig chaos replay` shows it (tracing only: draws nothing). */
export interface NetTrace {
  trueNs: bigint;
  what: "send" | "deliver" | "deliver duplicate" | "reply";
  from: string;
  to: string;
  method: string;
  bytes: number;
  /** For replies: the handler's error code, or "ok". */
  result?: string;
}

export class SimNetwork {
  private readonly endpoints = new Map<string, Endpoint>();
  /** Faults are injected only while true (the harness heals the network by clearing it). */
  faultsOn = true;
  readonly stats: NetStats = { messages: 0, lost: 0, duplicated: 0, resets: 0, partitioned: 0, unauthenticated: 0 };
  /** Sees every authenticated request as it is delivered (a hostile observer); none by default. */
  tap: ((m: Tapped) => void) | null = null;

  constructor(
    private readonly sched: Scheduler,
    private readonly now: () => bigint,
    private readonly rand: Random,
    private readonly cfg: NetConfig,
    /** Records an injected fault in the history. */
    private readonly onFault: (site: string, detail: string) => void,
    /** Records an exception a handler should never throw (a bug). */
    private readonly onError: (daemon: string, message: string) => void,
    /** Sees every message (replay's step-through view); absent in campaigns. */
    private readonly trace?: (m: NetTrace) => void,
  ) {}

  attach(address: string, ep: Endpoint): void {
    this.endpoints.set(address, ep);
  }

  detach(address: string): void {
    this.endpoints.delete(address);
  }

  /** The dialer of one incarnation of daemon `from` (or another actor), carrying `credential` (null: none). */
  dialer(from: string, fence: Fence, credential: string | null = PEER_CREDENTIAL): PeerDialer {
    return {
      dial: (address: string) => this.client(from, address, fence, credential),
      // Simulated daemons are addressed by name; any name is dialable (an unknown one refuses).
      checkAddress: (address: string, field: string) => checkId(address, field),
    };
  }

  private delay(): bigint {
    const c = this.cfg;
    let extra = 0n;
    if (c.jitterMeanNs > 0n) {
      const u = this.rand.float();
      extra = BigInt(Math.floor(-Math.log(1 - u) * Number(c.jitterMeanNs)));
    }
    const d = c.baseDelayNs + extra;
    return d > c.delayMaxNs ? c.delayMaxNs : d;
  }

  private cut(from: string, to: string): boolean {
    if (!this.faultsOn) return false;
    const t = this.now();
    for (const p of this.cfg.partitions)
      if (t >= p.fromNs && t < p.untilNs && ((p.a === from && p.b === to) || (!p.oneWay && p.a === to && p.b === from))) return true;
    return false;
  }

  /** Sends `bytes` to `to`'s `method`; resolves with the reply bytes or rejects with a TscmigError. */
  private call(
    from: string,
    to: string,
    method: string,
    bytes: Uint8Array,
    fence: Fence,
    credential: string | null,
    handle: (node: TscmigNode, bytes: Uint8Array) => Uint8Array,
  ): Promise<Uint8Array> {
    return new Promise<Uint8Array>((resolve, reject) => {
      let settled = false;
      const settle = (r: Reply | (() => TscmigError)) => {
        if (settled || !fence.alive) return; // a dead caller never hears back
        settled = true;
        deadline.cancel();
        if (typeof r === "function") reject(r());
        else if ("ok" in r) resolve(r.ok);
        else reject(new TscmigError(r.err.code, r.err.message, { ...(r.err.field ? { field: r.err.field } : {}), ...(r.err.reason ? { reason: r.err.reason } : {}) }));
      };
      const deadline = this.sched.after(this.cfg.deadlineNs, () => settle(() => new TscmigError("deadline_exceeded", `${method} to ${to}: deadline exceeded`)));
      const unavailable = (why: string) => () => new TscmigError("unavailable", `${method} to ${to}: ${why}`);
      this.stats.messages++;
      this.trace?.({ trueNs: this.now(), what: "send", from, to, method, bytes: bytes.length });
      if (bytes.length > LIMITS.messageBytesMax) {
        settle(() => new TscmigError("resource_exhausted", `${method}: request of ${bytes.length} bytes exceeds ${LIMITS.messageBytesMax}`));
        return;
      }
      const faulty = this.faultsOn;
      // A reset breaks the connection before the request leaves, or after the server ran it.
      let reset: "before" | "after" | null = null;
      if (faulty && this.cfg.resetP > 0 && this.rand.chance(this.cfg.resetP)) {
        reset = this.rand.chance(0.5) ? "before" : "after";
        this.stats.resets++;
        this.onFault("net.reset", `${from}→${to} ${method} reset ${reset} delivery`);
      }
      if (reset === "before") {
        this.sched.after(this.delay(), () => settle(unavailable("connection reset")));
        return;
      }
      const deliver = (copy: boolean) => {
        const ep = this.endpoints.get(to);
        if (!ep || !ep.fence.alive) {
          if (!copy) this.sched.after(this.delay(), () => settle(unavailable("connection refused")));
          return;
        }
        this.trace?.({ trueNs: this.now(), what: copy ? "deliver duplicate" : "deliver", from, to, method, bytes: bytes.length });
        let reply: Reply;
        try {
          if (credential !== PEER_CREDENTIAL) {
            if (!copy) this.stats.unauthenticated++;
            reply = { err: { code: "unauthenticated", message: `${method} to ${to}: the caller presented no valid peer credential` } };
          } else {
            const seen = !copy && this.tap ? decodeTapped(from, to, method, bytes) : null;
            if (seen) this.tap?.(seen);
            reply = { ok: handle(ep.node, bytes) };
          }
        } catch (e) {
          if (e instanceof CrashSignal || !ep.fence.alive) {
            // The server died inside the call: its connections close under the caller.
            if (!copy) this.sched.after(this.delay(), () => settle(unavailable("connection closed by a crashed peer")));
            return;
          }
          if (isTscmigError(e)) {
            reply = { err: { code: e.code, message: e.message, ...(e.field ? { field: e.field } : {}), ...(e.reason ? { reason: e.reason } : {}) } };
          } else {
            // A gRPC server answers INTERNAL; that a handler threw something untyped is a bug.
            this.onError(to, `${method} handler threw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
            reply = { err: { code: "internal", message: `${method}: internal error` } };
          }
        }
        if (copy) return; // the duplicate's reply is dropped by the transport
        if ("ok" in reply && reply.ok.length > LIMITS.messageBytesMax) reply = { err: { code: "internal", message: `${method}: reply too large` } };
        if (reset === "after") {
          this.sched.after(this.delay(), () => settle(unavailable("connection reset after the call ran")));
          return;
        }
        if (this.cut(to, from)) {
          this.stats.partitioned++;
          this.onFault("net.partition", `${to}→${from} ${method} reply blackholed`);
          return;
        }
        if (this.faultsOn && this.cfg.lossP > 0 && this.rand.chance(this.cfg.lossP)) {
          this.stats.lost++;
          this.onFault("net.loss", `${to}→${from} ${method} reply lost`);
          return;
        }
        const r = reply;
        this.trace?.({ trueNs: this.now(), what: "reply", from: to, to: from, method, bytes: "ok" in r ? r.ok.length : 0, result: "ok" in r ? "ok" : r.err.code });
        this.sched.after(this.delay(), () => settle(r));
      };
      if (this.cut(from, to)) {
        this.stats.partitioned++;
        this.onFault("net.partition", `${from}→${to} ${method} request blackholed`);
        return;
      }
      if (faulty && this.cfg.lossP > 0 && this.rand.chance(this.cfg.lossP)) {
        this.stats.lost++;
        this.onFault("net.loss", `${from}→${to} ${method} request lost`);
      } else {
        this.sched.after(this.delay(), () => deliver(false));
      }
      if (faulty && this.cfg.dupP > 0 && this.rand.chance(this.cfg.dupP)) {
        this.stats.duplicated++;
        this.onFault("net.duplicate", `${from}→${to} ${method} request duplicated`);
        this.sched.after(this.delay() + this.delay(), () => deliver(true));
      }
    });
  }

  private client(from: string, to: string, fence: Fence, credential: string | null): PeerClient {
    const call = (method: string, bytes: Uint8Array, handle: (node: TscmigNode, b: Uint8Array) => Uint8Array) => this.call(from, to, method, bytes, fence, credential, handle);
    return {
      prepare: async (req) => {
        const out = await call("Prepare", toBinary(PrepareRequestSchema, create(PrepareRequestSchema, prepareReqToPb(req))), (node, b) => {
          const r = node.prepare(prepareReqFromPb(fromBinary(PrepareRequestSchema, b)));
          return toBinary(PrepareResponseSchema, create(PrepareResponseSchema, { ...r }));
        });
        return prepareResFromPb(fromBinary(PrepareResponseSchema, out));
      },
      probe: async (req) => {
        const out = await call("Probe", toBinary(ProbeRequestSchema, create(ProbeRequestSchema, probeReqToPb(req))), (node, b) => {
          const r = node.probe(probeReqFromPb(fromBinary(ProbeRequestSchema, b)));
          return toBinary(ProbeResponseSchema, create(ProbeResponseSchema, { ...r }));
        });
        return probeResFromPb(fromBinary(ProbeResponseSchema, out));
      },
      transfer: async (req) => {
        const bytes = toBinary(TransferRequestSchema, create(TransferRequestSchema, transferReqToPb(req)));
        const out = await call("Transfer", bytes, (node, b) => {
          const receiveRawNs = node.host.rawNs();
          const r = node.transfer(transferReqFromPb(fromBinary(TransferRequestSchema, b)), receiveRawNs, 0n);
          return toBinary(TransferResponseSchema, create(TransferResponseSchema, { ...r }));
        });
        const res = fromBinary(TransferResponseSchema, out);
        return { destinationHoldNs: res.destinationHoldNs, encodeNs: 0n };
      },
      commit: async (req) => {
        const out = await call("Commit", toBinary(CommitRequestSchema, create(CommitRequestSchema, commitReqToPb(req))), (node, b) => {
          const r = node.commit(commitReqFromPb(fromBinary(CommitRequestSchema, b)));
          return toBinary(CommitResponseSchema, create(CommitResponseSchema, { report: restoreReportToPb(r.report), replay: r.replay }));
        });
        return commitResFromPb(fromBinary(CommitResponseSchema, out));
      },
      abort: async (req) => {
        const out = await call("Abort", toBinary(AbortRequestSchema, create(AbortRequestSchema, abortReqToPb(req))), (node, b) => {
          node.abort(abortReqFromPb(fromBinary(AbortRequestSchema, b)));
          return toBinary(AbortResponseSchema, create(AbortResponseSchema, {}));
        });
        fromBinary(AbortResponseSchema, out);
      },
      resolve: async (req) => {
        const out = await call("Resolve", toBinary(ResolveRequestSchema, create(ResolveRequestSchema, resolveReqToPb(req))), (node, b) => {
          const m = resolveReqFromPb(fromBinary(ResolveRequestSchema, b));
          return toBinary(ResolveResponseSchema, create(ResolveResponseSchema, resolveResToPb(node.resolve(m))));
        });
        return resolveResFromPb(fromBinary(ResolveResponseSchema, out));
      },
      ping: async () => {
        const out = await call("Ping", toBinary(PingRequestSchema, create(PingRequestSchema, {})), () => toBinary(PingResponseSchema, create(PingResponseSchema, {})));
        fromBinary(PingResponseSchema, out);
      },
    };
  }
}
