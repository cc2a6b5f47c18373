// The simulated network: a transport of the peer protocol (shared/rpc/peer-protocol.ts) between
// daemons in one process, on the simulated scheduler. It carries bytes only: the same protocol core
// that serves gRPC encodes, decodes and dispatches them, unary calls and the Handover exchange
// alike, so a campaign proves the path production takes. Delivery happens after a seeded delay.
// Faults on unary calls (TigerBeetle's packet simulator, and what Toxiproxy does to a TCP stream):
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
// A Handover exchange is one ordered stream (a gRPC call on one HTTP/2 connection): its messages
// are never duplicated or reordered, and a lost segment is retransmitted (a delay, not a loss). A
// reset or a crash ends the whole call (`unavailable`); a partition stalls it until a message's
// answer is overdue (each is due within the call deadline, as a unary call's; `deadline_exceeded`).
// After a failed exchange the source goes on with the unary calls, as it does over gRPC.
//
// A caller whose process died (its incarnation's fence is down) never sees a reply: its promises
// stay pending forever, as a dead process's would.

import { type ErrorCode, isTscmigError, TscmigError } from "../../shared/errors.js";
import { CrashSignal } from "../../shared/faults.js";
import { LIMITS } from "../../shared/limits.js";
import type { AbortReq, CommitReq, PeerDialer, PeerHandler, PrepareReq, TransferReq } from "../../shared/migration/messages.js";
import { decodeHandoverStep, REQUESTS } from "../../shared/rpc/codec.js";
import { type ByteExchange, type HandoverSession, type PeerMethod, PeerServer, peerClient, type PeerTransport } from "../../shared/rpc/peer-protocol.js";
import type { Scheduler } from "../../shared/time/clock.js";
import type { Random } from "../../shared/time/random.js";
import { checkId } from "../../shared/migration/snapshot.js";

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
  /**
   * A request reaches its server only after its caller's deadline, by two one-way delays: often after
   * what the caller sent next once it gave up (the server still runs it, and its answer goes
   * nowhere), unary or on a Handover call. 0 or absent: never.
   */
  lateP?: number;
}

/** One process lifetime of a daemon: when it dies, everything it owned goes inert. */
export interface Fence {
  alive: boolean;
}

/** A daemon on the network: what it serves (its raw clock dates arrivals), for one process lifetime. */
export interface Endpoint {
  peer: PeerHandler;
  /** The daemon host's raw clock. */
  rawNs: () => bigint;
  fence: Fence;
}

/** An endpoint with the protocol core over its handler. */
interface Attached {
  ep: Endpoint;
  server: PeerServer;
  rawNs: () => bigint;
}

type ReplyError = { code: ErrorCode; message: string; field?: string; reason?: string };
type Reply = { ok: Uint8Array } | { err: ReplyError };

export interface NetStats {
  /** Requests delivered after their caller's deadline (`late`); absent until one was. */
  late?: number;
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

/** An on-path observer: it decodes only what it wants to see (not its own Prepare flood, say). */
export interface Tap {
  wants(from: string): boolean;
  see(m: Tapped): void;
}

function decodeTapped(from: string, to: string, method: string, b: Uint8Array): Tapped | null {
  switch (method) {
    case "Prepare":
      return { from, to, method, req: REQUESTS.Prepare.decode(b) };
    case "Transfer":
      return { from, to, method, req: REQUESTS.Transfer.decode(b) };
    case "Commit":
      return { from, to, method, req: REQUESTS.Commit.decode(b) };
    case "Abort":
      return { from, to, method, req: REQUESTS.Abort.decode(b) };
    case "Handover": {
      const step = decodeHandoverStep(b);
      if (step.case === "transfer") return { from, to, method: "Transfer", req: step.value };
      if (step.case === "commit") return { from, to, method: "Commit", req: step.value };
      return null;
    }
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
  private readonly endpoints = new Map<string, Attached>();
  /** Faults are injected only while true (the harness heals the network by clearing it). */
  faultsOn = true;
  readonly stats: NetStats = { messages: 0, lost: 0, duplicated: 0, resets: 0, partitioned: 0, unauthenticated: 0 };
  /** Sees every authenticated request as it is delivered (a hostile observer); none by default. */
  tap: Tap | null = null;

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
    this.endpoints.set(address, { ep, server: new PeerServer(ep.peer, ep.rawNs), rawNs: ep.rawNs });
  }

  detach(address: string): void {
    this.endpoints.delete(address);
  }

  /** The dialer of one incarnation of daemon `from` (or another actor), carrying `credential` (null: none). */
  dialer(from: string, fence: Fence, credential: string | null = PEER_CREDENTIAL): PeerDialer {
    // A client holds nothing but its transport: one per address, not one per call (recovery asks an
    // unreachable source again and again through a flood's hundreds of Prepares).
    const clients = new Map<string, ReturnType<typeof peerClient>>();
    return {
      dial: (address: string) => {
        let c = clients.get(address);
        if (!c) clients.set(address, (c = peerClient(this.transport(from, address, fence, credential), this.now)));
        return c;
      },
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

  /** The transport of daemon `from`'s calls to `to` (what peerClient speaks through). */
  private transport(from: string, to: string, fence: Fence, credential: string | null): PeerTransport {
    return {
      call: (method: PeerMethod, bytes: Uint8Array) => this.call(from, to, method, bytes, fence, credential),
      openExchange: () => new SimExchange(this, this.sched, this.now, this.rand, this.cfg, { from, to, fence, credential }),
    };
  }

  /** @internal The endpoint at `to`, if its process is alive. */
  endpointAt(to: string): Attached | null {
    const a = this.endpoints.get(to);
    return a && a.ep.fence.alive ? a : null;
  }

  /** @internal Counts and records an injected fault. */
  injected(kind: "lost" | "duplicated" | "resets" | "partitioned" | "unauthenticated" | "late", site: string | null, detail: string): void {
    this.stats[kind]++;
    if (site) this.onFault(site, detail);
  }

  /** @internal Runs the server side of one message, mapping what it throws as a gRPC server would. */
  serve(from: string, to: string, method: string, bytes: Uint8Array, credential: string | null, observe: boolean, run: (a: Attached) => Uint8Array): Reply | "crashed" {
    const a = this.endpoints.get(to) as Attached;
    try {
      if (credential !== PEER_CREDENTIAL) return { err: { code: "unauthenticated", message: `${method} to ${to}: the caller presented no valid peer credential` } };
      if (observe && this.tap?.wants(from)) {
        const seen = decodeTapped(from, to, method, bytes);
        if (seen) this.tap.see(seen);
      }
      const ok = run(a);
      return ok.length > LIMITS.messageBytesMax ? { err: { code: "internal", message: `${method}: reply too large` } } : { ok };
    } catch (e) {
      // The server died inside the call: its connections close under the caller.
      if (e instanceof CrashSignal || !a.ep.fence.alive) return "crashed";
      if (isTscmigError(e)) return { err: { code: e.code, message: e.message, ...(e.field ? { field: e.field } : {}), ...(e.reason ? { reason: e.reason } : {}) } };
      // A gRPC server answers INTERNAL; that a handler threw something untyped is a bug.
      this.onError(to, `${method} handler threw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
      return { err: { code: "internal", message: `${method}: internal error` } };
    }
  }

  /** @internal */
  traced(m: NetTrace): void {
    this.trace?.(m);
  }

  /** @internal Whether messages from `from` to `to` are blackholed now. */
  isCut(from: string, to: string): boolean {
    return this.cut(from, to);
  }

  /** @internal Whether this request arrives only after its caller gave up (`late`; draws only when that kind is on). */
  isLate(): boolean {
    const p = this.cfg.lateP ?? 0;
    return this.faultsOn && p > 0 && this.rand.chance(p);
  }

  /** @internal One message's one-way delay. */
  oneWay(): bigint {
    return this.delay();
  }

  /** Sends `bytes` to `to`'s `method`; resolves with the reply bytes or rejects with a TscmigError. */
  private call(from: string, to: string, method: PeerMethod, bytes: Uint8Array, fence: Fence, credential: string | null): Promise<Uint8Array> {
    return new Promise<Uint8Array>((resolve, reject) => {
      let settled = false;
      const settle = (r: Reply | (() => TscmigError)) => {
        if (settled || !fence.alive) return; // a dead caller never hears back
        settled = true;
        deadline.cancel();
        if (typeof r === "function") reject(r());
        else if ("ok" in r) resolve(r.ok);
        else reject(errorOf(r));
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
        this.injected("resets", "net.reset", `${from}→${to} ${method} reset ${reset} delivery`);
      }
      if (reset === "before") {
        this.sched.after(this.delay(), () => settle(unavailable("connection reset")));
        return;
      }
      const deliver = (copy: boolean) => {
        const a = this.endpointAt(to);
        if (!a) {
          if (!copy) this.sched.after(this.delay(), () => settle(unavailable("connection refused")));
          return;
        }
        this.trace?.({ trueNs: this.now(), what: copy ? "deliver duplicate" : "deliver", from, to, method, bytes: bytes.length });
        const reply = this.serve(from, to, method, bytes, credential, !copy, (x) => x.server.call(method, bytes, x.rawNs()));
        if (credential !== PEER_CREDENTIAL && !copy) this.stats.unauthenticated++;
        if (copy) return; // the duplicate's reply is dropped by the transport
        if (reply === "crashed") {
          this.sched.after(this.delay(), () => settle(unavailable("connection closed by a crashed peer")));
          return;
        }
        if (reset === "after") {
          this.sched.after(this.delay(), () => settle(unavailable("connection reset after the call ran")));
          return;
        }
        if (this.cut(to, from)) {
          this.injected("partitioned", "net.partition", `${to}→${from} ${method} reply blackholed`);
          return;
        }
        if (this.faultsOn && this.cfg.lossP > 0 && this.rand.chance(this.cfg.lossP)) {
          this.injected("lost", "net.loss", `${to}→${from} ${method} reply lost`);
          return;
        }
        this.trace?.({ trueNs: this.now(), what: "reply", from: to, to: from, method, bytes: "ok" in reply ? reply.ok.length : 0, result: "ok" in reply ? "ok" : reply.err.code });
        this.sched.after(this.delay(), () => settle(reply));
      };
      if (this.cut(from, to)) {
        this.injected("partitioned", "net.partition", `${from}→${to} ${method} request blackholed`);
        return;
      }
      if (faulty && this.cfg.lossP > 0 && this.rand.chance(this.cfg.lossP)) {
        this.injected("lost", "net.loss", `${from}→${to} ${method} request lost`);
      } else if (this.isLate()) {
        this.injected("late", "net.late", `${from}→${to} ${method} request delivered after its caller's deadline`);
        this.sched.after(this.cfg.deadlineNs + this.delay() + this.delay(), () => deliver(true)); // as a copy: its answer goes nowhere
      } else {
        this.sched.after(this.delay(), () => deliver(false));
      }
      if (faulty && this.cfg.dupP > 0 && this.rand.chance(this.cfg.dupP)) {
        this.injected("duplicated", "net.duplicate", `${from}→${to} ${method} request duplicated`);
        this.sched.after(this.delay() + this.delay(), () => deliver(true));
      }
    });
  }
}

function errorOf(r: { err: ReplyError }): TscmigError {
  return new TscmigError(r.err.code, r.err.message, { ...(r.err.field ? { field: r.err.field } : {}), ...(r.err.reason ? { reason: r.err.reason } : {}) });
}

/** How long a stream waits before retransmitting a lost segment (Linux's minimum RTO). */
const RETRANSMIT_NS = 200_000_000n;

/**
 * One Handover call on the simulated network: an ordered stream of messages, each answered in
 * order by one server-side session (the protocol core's), each answer due within the deadline. The
 * first failure ends it: every pending and later send fails with that error.
 */
class SimExchange implements ByteExchange {
  private failure: TscmigError | null = null;
  private closed = false;
  private readonly pending = new Set<(e: TscmigError) => void>();
  private session: HandoverSession | null = null;
  private server: Attached | null = null;
  /** Each direction is FIFO: nothing is delivered before what was sent ahead of it. */
  private lastDeliverNs = 0n;
  private lastAnswerNs = 0n;

  constructor(
    private readonly net: SimNetwork,
    private readonly sched: Scheduler,
    private readonly now: () => bigint,
    private readonly rand: Random,
    private readonly cfg: NetConfig,
    private readonly who: { from: string; to: string; fence: Fence; credential: string | null },
  ) {}

  get live(): boolean {
    return this.failure === null && !this.closed;
  }

  close(): void {
    this.closed = true;
  }

  send(bytes: Uint8Array): Promise<Uint8Array> {
    const { from, to, fence } = this.who;
    return new Promise<Uint8Array>((resolve, reject) => {
      if (this.failure) return reject(this.failure);
      if (this.closed) return reject(new TscmigError("failed_precondition", "Handover: the call is closed"));
      let settled = false;
      const due = this.sched.after(this.cfg.deadlineNs, () => this.fail(new TscmigError("deadline_exceeded", `Handover to ${to}: no answer within the deadline`)));
      const done = (r: { ok: Uint8Array } | TscmigError) => {
        due.cancel();
        if (settled || !fence.alive) return; // a dead caller never hears back
        settled = true;
        this.pending.delete(onFail);
        if (r instanceof TscmigError) reject(r);
        else resolve(r.ok);
      };
      const onFail = (e: TscmigError) => done(e);
      this.pending.add(onFail);
      this.net.stats.messages++;
      this.net.traced({ trueNs: this.now(), what: "send", from, to, method: "Handover", bytes: bytes.length });
      if (bytes.length > LIMITS.messageBytesMax) return this.fail(new TscmigError("resource_exhausted", `Handover: message of ${bytes.length} bytes exceeds ${LIMITS.messageBytesMax}`));
      if (this.resetNow("request")) return;
      if (this.net.isLate()) {
        // The stream dies at the deadline, but this message still reaches the server's session.
        this.net.injected("late", "net.late", `${from}→${to} Handover request delivered after its caller's deadline`);
        this.sched.after(this.cfg.deadlineNs + this.net.oneWay() + this.net.oneWay(), () => this.deliverLate(bytes));
        return;
      }
      this.sched.after(this.transit(from, to, "request"), () => this.deliver(bytes, done));
    });
  }

  /** When the next message from `a` to `b` arrives, FIFO; a blackholed one never does (the deadline ends the call). */
  private transit(a: string, b: string, dir: "request" | "answer"): bigint {
    if (this.net.isCut(a, b)) {
      this.net.injected("partitioned", "net.partition", `${a}→${b} Handover ${dir} stalled (the stream is cut)`);
      return this.cfg.deadlineNs * 2n; // past the answer's deadline
    }
    let d = this.net.oneWay();
    if (this.net.faultsOn && this.cfg.lossP > 0 && this.rand.chance(this.cfg.lossP)) {
      this.net.injected("lost", "net.loss", `${a}→${b} Handover ${dir} segment lost, retransmitted`);
      d += RETRANSMIT_NS;
    }
    const at = this.now() + d;
    const last = dir === "request" ? this.lastDeliverNs : this.lastAnswerNs;
    const when = at > last ? at : last;
    if (dir === "request") this.lastDeliverNs = when;
    else this.lastAnswerNs = when;
    return when - this.now();
  }

  /** A connection reset (seeded) ends the call. */
  private resetNow(dir: "request" | "answer"): boolean {
    if (!(this.net.faultsOn && this.cfg.resetP > 0 && this.rand.chance(this.cfg.resetP))) return false;
    this.net.injected("resets", "net.reset", `${this.who.from}→${this.who.to} Handover reset at a ${dir}`);
    this.sched.after(this.net.oneWay(), () => this.fail(new TscmigError("unavailable", `Handover to ${this.who.to}: connection reset`)));
    return true;
  }

  private deliver(bytes: Uint8Array, done: (r: { ok: Uint8Array } | TscmigError) => void): void {
    if (this.failure) return;
    const { from, to, credential } = this.who;
    const a = this.net.endpointAt(to);
    // The call lives on one connection to one server process: a restarted one is another.
    if (!a || (this.server !== null && a !== this.server)) return this.fail(new TscmigError("unavailable", `Handover to ${to}: connection closed`));
    this.server = a;
    this.session ??= a.server.handover();
    const session = this.session;
    this.net.traced({ trueNs: this.now(), what: "deliver", from, to, method: "Handover", bytes: bytes.length });
    const reply = this.net.serve(from, to, "Handover", bytes, credential, true, (x) => session.step(bytes, x.rawNs()));
    if (credential !== PEER_CREDENTIAL) this.net.stats.unauthenticated++;
    if (reply === "crashed") {
      this.sched.after(this.net.oneWay(), () => this.fail(new TscmigError("unavailable", `Handover to ${to}: connection closed by a crashed peer`)));
      return;
    }
    if (this.resetNow("answer")) return;
    this.net.traced({ trueNs: this.now(), what: "reply", from: to, to: from, method: "Handover", bytes: "ok" in reply ? reply.ok.length : 0, result: "ok" in reply ? "ok" : reply.err.code });
    // A refused message ends the call with that refusal, after its answer's transit.
    this.sched.after(this.transit(to, from, "answer"), () => ("ok" in reply ? done(reply) : this.fail(errorOf(reply))));
  }

  /** A message that arrives after the call failed: the server's session still runs it; its answer goes nowhere. */
  private deliverLate(bytes: Uint8Array): void {
    const { from, to, credential } = this.who;
    const a = this.net.endpointAt(to);
    if (!a || (this.server !== null && a !== this.server)) return;
    this.server = a;
    const session = (this.session ??= a.server.handover());
    this.net.traced({ trueNs: this.now(), what: "deliver", from, to, method: "Handover", bytes: bytes.length });
    this.net.serve(from, to, "Handover", bytes, credential, true, (x) => session.step(bytes, x.rawNs()));
  }

  private fail(e: TscmigError): void {
    if (this.failure) return;
    this.failure = e;
    for (const f of [...this.pending]) f(e);
    this.pending.clear();
  }
}
