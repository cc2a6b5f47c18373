// The peer protocol between two daemons, served from bytes to bytes and called through one client,
// whatever carries the bytes: gRPC in a daemon (daemon/grpc-peer.ts), the simulated network in a
// chaos run (chaos/sim/network.ts), a direct call after a delay in the bench and in scene tests.
// A transport supplies only delivery; decoding, validation, dispatch and the Handover exchange's
// rules live here once, so the simulator proves the very path production takes.
//
//   source                                   transport                 destination
//   PeerClient ──REQUESTS.encode──► bytes ───── call / exchange ────► PeerServer.call / HandoverSession.step
//        ▲                                                                  │ REQUESTS.decode → PeerHandler
//        └──ANSWERS.decode ◄── bytes ◄──────────────────────────────── ANSWERS.encode ◄┘
//
// A refusal is a TscmigError thrown by the server; the transport carries it back (gRPC: status and
// tscmig-* trailers; the simulator: the error itself) and the client rethrows it.

import { invalid, TscmigError } from "../errors.js";
import type {
  HandoverLink,
  PeerClient,
  PeerHandler,
  ProbeReq,
  ProbeRes,
  SourceRef,
  TransferReq,
  TransferRes,
} from "../migration/messages.js";
import { checkId } from "../migration/snapshot.js";
import {
  ANSWERS,
  decodeHandoverAnswer,
  decodeHandoverStep,
  encodeHandoverAnswer,
  encodeHandoverStep,
  type HandoverAnswer,
  type HandoverStep,
  PEER_METHODS,
  type PeerMethod,
  REQUESTS,
} from "./codec.js";

export { PEER_METHODS, type PeerMethod } from "./codec.js";

/** A byte exchange in order: each message sent gets one answer (a Handover call). */
export interface ByteExchange {
  send(bytes: Uint8Array): Promise<Uint8Array>;
  /** Ends the call once what was sent is answered. */
  close(): void;
  /** Whether sends can still succeed (false once the call failed). */
  readonly live: boolean;
}

/** What carries the bytes. Without `openExchange`, migrations ride the unary calls only. */
export interface PeerTransport {
  call(method: PeerMethod, bytes: Uint8Array): Promise<Uint8Array>;
  openExchange?(): ByteExchange;
}

/** Where a request's bytes arrived: this host's raw clock at that instant (one-sided's durations start there). */
export type ArrivedAt = bigint;

/** The peer protocol served over a handler: bytes in, bytes out, typed errors thrown. */
export class PeerServer {
  constructor(
    private readonly handler: PeerHandler,
    /** This host's raw monotonic clock (decode times, arrival instants). */
    private readonly rawNs: () => bigint,
  ) {}

  /** One unary call of `method` whose bytes arrived at `arrivedAt`. */
  call(method: string, bytes: Uint8Array, arrivedAt: ArrivedAt): Uint8Array {
    if (!(PEER_METHODS as readonly string[]).includes(method)) throw new TscmigError("unimplemented", `${method} is not a method of the migration service`);
    const m = method as PeerMethod;
    const t0 = this.rawNs();
    switch (m) {
      case "Prepare":
        return ANSWERS.Prepare.encode(this.handler.prepare(REQUESTS.Prepare.decode(bytes)));
      case "Probe":
        return ANSWERS.Probe.encode(this.handler.probe(REQUESTS.Probe.decode(bytes)));
      case "Transfer": {
        const req = REQUESTS.Transfer.decode(bytes);
        return ANSWERS.Transfer.encode(this.handler.transfer(req, arrivedAt, this.rawNs() - t0));
      }
      case "Commit":
        return ANSWERS.Commit.encode(this.handler.commit(REQUESTS.Commit.decode(bytes), arrivedAt));
      case "Abort":
        this.handler.abort(REQUESTS.Abort.decode(bytes));
        return ANSWERS.Abort.encode({});
      case "Resolve":
        return ANSWERS.Resolve.encode(this.handler.resolve(REQUESTS.Resolve.decode(bytes)));
      case "Ping":
        REQUESTS.Ping.decode(bytes);
        return ANSWERS.Ping.encode({});
    }
  }

  /** One Handover call: its messages, one at a time, in order (the transport keeps the order). */
  handover(): HandoverSession {
    return new HandoverSession(this.handler, this.rawNs);
  }
}

/**
 * The server side of one Handover call. The first message must open it for a migration its source
 * prepared (key checked); every later one must be about that migration and from that source. Each
 * message has the semantics of the unary call of the same name; a refusal ends the call.
 */
export class HandoverSession {
  private migrationId: string | null = null;
  private ref: SourceRef | null = null;

  constructor(
    private readonly handler: PeerHandler,
    private readonly rawNs: () => bigint,
  ) {}

  step(bytes: Uint8Array, arrivedAt: ArrivedAt): Uint8Array {
    const t0 = this.rawNs();
    return encodeHandoverAnswer(this.answer(decodeHandoverStep(bytes), arrivedAt, t0));
  }

  private answer(step: HandoverStep, arrivedAt: ArrivedAt, decodeStartNs: bigint): HandoverAnswer {
    if (step.case === "open") {
      if (this.migrationId !== null) throw invalid("open", "the Handover call is already open");
      const open = step.value;
      checkId(open.migrationId, "open.migrationId");
      this.handler.handoverOpen(open, open.migrationId); // refuses a migration not prepared by this source
      this.migrationId = open.migrationId;
      this.ref = { sourceName: open.sourceName, sourceKey: open.sourceKey };
      this.handler.handoverAnswering(this.ref, this.migrationId, arrivedAt); // the answer leaves right after: one-sided's anchor
      return { case: "opened" };
    }
    if (this.migrationId === null || this.ref === null) throw invalid("step", "the first Handover message must be open");
    switch (step.case) {
      case "probe": {
        this.same(step.value.migrationId, step.value, "probe.migrationId");
        const r = this.handler.probe(step.value);
        this.handler.handoverAnswering(this.ref, this.migrationId, arrivedAt);
        return { case: "probe", value: r };
      }
      case "transfer":
        this.same(step.value.snapshot.migrationId, step.value, "snapshot.migrationId");
        return { case: "transfer", value: this.handler.transfer(step.value, arrivedAt, this.rawNs() - decodeStartNs) };
      case "commit":
        this.same(step.value.migrationId, step.value, "commit.migrationId");
        return { case: "commit", value: this.handler.commit(step.value, arrivedAt) };
    }
  }

  private same(id: string, r: SourceRef, field: string): void {
    if (id !== this.migrationId || r.sourceName !== this.ref?.sourceName || r.sourceKey !== this.ref.sourceKey)
      throw invalid(field, `this Handover call was opened for migration ${this.migrationId} of ${this.ref?.sourceName}, not ${id} of ${r.sourceName}`);
  }
}

/**
 * The calls one daemon makes on another, over `transport`. `monotonicNs` times the Transfer's
 * encoding (the bench reports that share of the blackout).
 */
export function peerClient(transport: PeerTransport, monotonicNs: () => bigint): PeerClient {
  const call = async <M extends PeerMethod>(m: M, req: Parameters<(typeof REQUESTS)[M]["encode"]>[0]) => ANSWERS[m].decode(await transport.call(m, REQUESTS[m].encode(req as never))) as ReturnType<(typeof ANSWERS)[M]["decode"]>;
  const client: PeerClient = {
    prepare: (req) => call("Prepare", req),
    probe: (req) => call("Probe", req),
    transfer: async (req) => {
      const t0 = monotonicNs();
      const bytes = REQUESTS.Transfer.encode(req);
      const encodeNs = monotonicNs() - t0;
      return { ...ANSWERS.Transfer.decode(await transport.call("Transfer", bytes)), encodeNs };
    },
    commit: (req) => call("Commit", req),
    abort: async (req) => {
      await call("Abort", req);
    },
    resolve: (req) => call("Resolve", req),
    ping: async () => {
      await call("Ping", {});
    },
  };
  const open = transport.openExchange;
  if (open) client.handover = (o) => openHandover(open.call(transport), o, monotonicNs);
  return client;
}

async function openHandover(x: ByteExchange, open: { migrationId: string } & SourceRef, monotonicNs: () => bigint): Promise<HandoverLink> {
  try {
    expectAnswer(decodeHandoverAnswer(await x.send(encodeHandoverStep({ case: "open", value: open }))), "opened");
  } catch (e) {
    x.close();
    throw e;
  }
  const probe = async (req: ProbeReq): Promise<ProbeRes> => expectAnswer(decodeHandoverAnswer(await x.send(encodeHandoverStep({ case: "probe", value: req }))), "probe");
  const transfer = async (req: TransferReq): Promise<TransferRes & { encodeNs: bigint }> => {
    const t0 = monotonicNs();
    const bytes = encodeHandoverStep({ case: "transfer", value: req });
    const encodeNs = monotonicNs() - t0;
    return { ...expectAnswer(decodeHandoverAnswer(await x.send(bytes)), "transfer"), encodeNs };
  };
  return {
    probe,
    transfer,
    commit: async (req) => expectAnswer(decodeHandoverAnswer(await x.send(encodeHandoverStep({ case: "commit", value: req }))), "commit"),
    get live() {
      return x.live;
    },
    close: () => x.close(),
  };
}

function expectAnswer<C extends HandoverAnswer["case"]>(a: HandoverAnswer, want: C): Extract<HandoverAnswer, { case: C }> extends { value: infer V } ? V : undefined {
  if (a.case !== want) throw new TscmigError("internal", `Handover: answered ${a.case} to ${want}`);
  return ("value" in a ? a.value : undefined) as never;
}
