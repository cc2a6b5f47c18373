// protobuf-es services on grpc-js (STYLE 14: only the codec and RPC modules touch generated code).
//
// No maintained package adapts a protobuf-es `GenService` to grpc-js, so this module is that
// adapter: one loop over `service.methods` building grpc-js method definitions, and a wrapper that
// turns `async (req, ctx) => res` handlers into grpc-js unary handlers, and bidi methods served as
// exchanges (one response message per request message, in order) into grpc-js duplex handlers.
//
// What a caller sees, and why:
//   bytes in ──requestDeserialize──► Decoded ──handler──► response init ──toBinary──► bytes out
//                    │ never throws         │ throws?                │ throws?
//                    ▼                      ▼                        ▼
//            INVALID_ARGUMENT     TscmigError → its status     INTERNAL (logged)
//                                 + tscmig-* trailers;
//                                 anything else → INTERNAL (logged, generic message)
// grpc-js answers INTERNAL when a deserializer throws, which would blame the server for the
// client's garbage; so decoding never throws here, it returns a `Decoded` the handler inspects.
// Encoding happens inside the handler too (the response serializer only wraps bytes), so an
// unencodable response (e.g. a uint64 out of range) is caught, logged and answered as INTERNAL.

import * as grpc from "@grpc/grpc-js";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { DescMessage, DescMethod, DescService, Message, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import { assert, isErrorCode, isTscmigError, grpcStatusOf, TscmigError } from "../errors.js";
import type { Errno, ErrorCode } from "../errors.js";
import { LIMITS } from "../limits.js";
import { RealScheduler } from "../platform/index.js";
import type { Scheduler, Timer } from "../time/clock.js";

const ERRNOS: ReadonlySet<string> = new Set<Errno>(["EINVAL", "ERANGE", "ENXIO", "EBUSY"]);

/** A structured log sink; pino's `logger.error.bind(logger)` fits. Bigints must be stringified. */
export type RpcLog = (obj: Record<string, unknown>, msg: string) => void;

/** Trailing-metadata keys that carry a TscmigError across the wire (values are percent-encoded). */
export const METADATA_KEYS = {
  code: "tscmig-code",
  field: "tscmig-field",
  reason: "tscmig-reason",
  errno: "tscmig-errno",
} as const;

export interface HandlerContext {
  /** Full gRPC path, e.g. `/tscmig.v1.MigrationService/Prepare`. */
  readonly path: string;
  readonly peer: string;
  readonly metadata: grpc.Metadata;
  /** Aborted when the call is cancelled: the client gave up, its deadline passed, or shutdown. */
  readonly signal: AbortSignal;
  /** Time spent decoding the request, when the server was given a clock (`monotonicNs`). */
  readonly decodeNs: bigint;
  /**
   * The instant the request's bytes reached the deserializer, on `clock`: `clock()` minus the time
   * since then on the server's clock (`monotonicNs`; without one, `decodeNs`). The time since is
   * read first, so a pause between the two reads (a GC, a descheduled process) dates the arrival
   * later than it was, never earlier: an estimator may take it as a lower bound of the arrival.
   */
  receivedAt(clock: () => bigint): bigint;
}

/** `HandlerContext.receivedAt` for a request decoded at `receivedNs` on `monotonicNs`. */
export function receivedAtOf(monotonicNs: (() => bigint) | undefined, receivedNs: bigint, decodeNs: bigint): (clock: () => bigint) => bigint {
  return (clock) => {
    const since = monotonicNs ? monotonicNs() - receivedNs : decodeNs; // first: see receivedAt
    return clock() - since;
  };
}

export type UnaryHandler<I extends DescMessage, O extends DescMessage> = (
  req: MessageShape<I>,
  ctx: HandlerContext,
) => Promise<MessageInitShape<O>>;

/**
 * A bidi method served as an exchange: called once per call, it returns the handler of each request
 * message (which may keep per-call state in its closure). Each message gets exactly one response,
 * in order; the next message is handled only once the previous one was answered. A handler that
 * throws ends the call with the status a unary call would have answered (trailers included); a
 * message that does not decode ends it with INVALID_ARGUMENT. The context's `decodeNs` and
 * `receivedAt` are the message's. A call whose first message has not come within
 * LIMITS.exchangeFirstMessageNs is ended with DEADLINE_EXCEEDED (reason `exchange_idle`), and one
 * still open after LIMITS.exchangeCallNsMax likewise (reason `exchange_lifetime`).
 */
export type ExchangeHandler<I extends DescMessage, O extends DescMessage> = (call: HandlerContext) => UnaryHandler<I, O>;

/** The handlers of a generated service, keyed by each method's `localName` (`prepare`, `ping`…). */
export type ServiceImpl<M extends GenServiceMethods> = {
  [K in keyof M]: M[K] extends { methodKind: "unary"; input: infer I extends DescMessage; output: infer O extends DescMessage }
    ? UnaryHandler<I, O>
    : M[K] extends { methodKind: "bidi_streaming"; input: infer I extends DescMessage; output: infer O extends DescMessage }
      ? ExchangeHandler<I, O>
      : never;
};

type AnyHandler = UnaryHandler<DescMessage, DescMessage> | ExchangeHandler<DescMessage, DescMessage>;

/** A service and its handlers, as `createRpcServer` takes them. Build it with `defineService`. */
export interface ServiceRegistration {
  readonly service: DescService;
  readonly impl: Readonly<Record<string, AnyHandler>>;
  /**
   * Runs before every request of this service (each message of an exchange too) and throws a
   * TscmigError (e.g. `unauthenticated`) to refuse it unhandled. The health and reflection services
   * are registered apart and never see it.
   */
  readonly authorize?: (ctx: HandlerContext) => void;
  /**
   * The handlers take and return the messages' bytes (`defineRawService`): the service decodes and
   * encodes them itself (the peer protocol's one codec), and the adapter only carries bytes.
   */
  readonly raw?: boolean;
  /** Open calls of each exchange method at once (default LIMITS.exchangeCallsMax); beyond, refused. */
  readonly exchangeCallsMax?: number;
}

/** Bytes in, bytes out: a unary method's handler, and a bidi method's per-call message handler. */
export interface RawServiceImpl {
  unary(methodName: string, bytes: Uint8Array, ctx: HandlerContext): Uint8Array | Promise<Uint8Array>;
  exchange(methodName: string, call: HandlerContext): (bytes: Uint8Array, ctx: HandlerContext) => Uint8Array | Promise<Uint8Array>;
}

/**
 * A service whose messages the caller decodes and encodes itself (`impl` gets the bytes). Undecodable
 * bytes are the implementation's to refuse, with a TscmigError like any other refusal.
 */
export function defineRawService(service: DescService, impl: RawServiceImpl, authorize?: (ctx: HandlerContext) => void): ServiceRegistration {
  const handlers: Record<string, AnyHandler> = {};
  for (const method of service.methods) {
    const name = method.name;
    handlers[method.localName] =
      method.methodKind === "bidi_streaming"
        ? (((call: HandlerContext) => {
            const next = impl.exchange(name, call);
            return async (bytes: unknown, ctx: HandlerContext) => next(bytes as Uint8Array, ctx);
          }) as unknown as AnyHandler)
        : ((async (bytes: unknown, ctx: HandlerContext) => impl.unary(name, bytes as Uint8Array, ctx)) as unknown as AnyHandler);
  }
  return { service, impl: handlers, raw: true, ...(authorize ? { authorize } : {}) };
}

/**
 * Pairs a generated service with its handlers, checking each handler's types against the schema
 * and that every method has one.
 */
export function defineService<M extends GenServiceMethods>(
  service: GenService<M>,
  impl: ServiceImpl<M>,
  authorize?: (ctx: HandlerContext) => void,
): ServiceRegistration {
  // The per-method types were checked above; the registration only needs the erased shape.
  return { service, impl: impl as unknown as ServiceRegistration["impl"], ...(authorize ? { authorize } : {}) };
}

/** Like `defineService`, for a deliberately incomplete service: missing methods answer UNIMPLEMENTED. */
export function definePartialService<M extends GenServiceMethods>(service: GenService<M>, impl: Partial<ServiceImpl<M>>): ServiceRegistration {
  return { service, impl: impl as unknown as ServiceRegistration["impl"] };
}

/** What the request deserializer hands the handler: a message, or why the bytes were refused. */
export type Decoded<T> =
  | { readonly ok: true; readonly message: T; readonly decodeNs: bigint; readonly receivedNs: bigint }
  | { readonly ok: false; readonly error: string };

/** Wraps bytes in a Buffer over the same memory (grpc-js copies serializer output itself). */
export function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** PEM given as text or bytes, as grpc-js wants it. */
export function toBuffer(pem: Buffer | string): Buffer {
  return typeof pem === "string" ? Buffer.from(pem, "utf8") : pem;
}

/** Decodes `bytes` as `schema` without throwing. */
export function decodeMessage<I extends DescMessage>(schema: I, bytes: Uint8Array, monotonicNs?: () => bigint): Decoded<MessageShape<I>> {
  try {
    const t0 = monotonicNs ? monotonicNs() : 0n;
    const message = fromBinary(schema, bytes);
    return { ok: true, message, decodeNs: monotonicNs ? monotonicNs() - t0 : 0n, receivedNs: t0 };
  } catch (e) {
    return { ok: false, error: errorMessageOf(e) };
  }
}

export function grpcPathOf(method: DescMethod): string {
  return `/${method.parent.typeName}/${method.name}`;
}

/**
 * The grpc-js definition of a protobuf-es service, keyed by method `localName`. Requests decode to
 * a `Decoded` (never throw); responses travel as already-encoded bytes (see the module comment).
 * Streaming methods get correct flags; `toGrpcImplementation` serves unary and bidi ones.
 */
export function toGrpcServiceDefinition(service: DescService, monotonicNs?: () => bigint, raw = false): grpc.ServiceDefinition {
  const definition: Record<string, grpc.MethodDefinition<Decoded<Message>, Uint8Array>> = {};
  for (const method of service.methods) {
    definition[method.localName] = {
      path: grpcPathOf(method),
      originalName: method.name,
      requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
      responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
      requestSerialize: (req: Decoded<Message>): Buffer => {
        assert(req.ok, "only decoded requests are serialized");
        return asBuffer(toBinary(method.input, req.message));
      },
      requestDeserialize: (buf: Buffer): Decoded<Message> =>
        raw ? { ok: true, message: buf as unknown as Message, decodeNs: 0n, receivedNs: monotonicNs ? monotonicNs() : 0n } : decodeMessage(method.input, buf, monotonicNs),
      responseSerialize: (bytes: Uint8Array): Buffer => asBuffer(bytes),
      responseDeserialize: (buf: Buffer): Uint8Array => buf,
    };
  }
  return definition;
}

/**
 * grpc-js handlers for `impl`, keyed like `toGrpcServiceDefinition`. A method without a handler
 * answers UNIMPLEMENTED; a handler for a method the service lacks is a bug (assertion). `scheduler`
 * runs the exchange calls' deadlines (default: the real one).
 */
export function toGrpcImplementation(
  registration: ServiceRegistration,
  log: RpcLog,
  monotonicNs?: () => bigint,
  scheduler: Scheduler = new RealScheduler(),
): grpc.UntypedServiceImplementation {
  const { service, impl, authorize, raw = false, exchangeCallsMax = LIMITS.exchangeCallsMax } = registration;
  const known = new Set(service.methods.map((m) => m.localName));
  for (const key of Object.keys(impl)) {
    assert(known.has(key), `${service.typeName} has no method "${key}" (handlers are keyed by localName)`);
  }
  const implementation: grpc.UntypedServiceImplementation = {};
  for (const method of service.methods) {
    const handler = Object.hasOwn(impl, method.localName) ? impl[method.localName] : undefined;
    if (method.methodKind === "bidi_streaming") {
      implementation[method.localName] = exchangeHandler(method, handler as ExchangeHandler<DescMessage, DescMessage> | undefined, log, { monotonicNs, authorize, raw, callsMax: exchangeCallsMax, scheduler });
      continue;
    }
    assert(method.methodKind === "unary", `${grpcPathOf(method)}: only unary and bidi methods are supported`);
    implementation[method.localName] = unaryHandler(method, handler as UnaryHandler<DescMessage, DescMessage> | undefined, log, monotonicNs, authorize, raw);
  }
  return implementation;
}

type Outcome = { ok: true; bytes: Uint8Array } | { ok: false; status: Partial<grpc.StatusObject> };

function unaryHandler(
  method: DescMethod,
  handler: UnaryHandler<DescMessage, DescMessage> | undefined,
  log: RpcLog,
  monotonicNs: (() => bigint) | undefined,
  authorize: ((ctx: HandlerContext) => void) | undefined,
  raw: boolean,
): grpc.handleUnaryCall<Decoded<Message>, Uint8Array> {
  const path = grpcPathOf(method);
  return (call, callback) => {
    const abort = new AbortController();
    let answered = false;
    // grpc-js also reports "cancelled" when a finished call's stream closes: only a call still being
    // handled is aborted (building the error costs a stack trace on every call otherwise).
    call.on("cancelled", () => {
      if (!answered) abort.abort(new TscmigError("aborted", `${path}: call cancelled`));
    });
    const req = call.request;
    const decodeNs = req.ok ? req.decodeNs : 0n;
    const receivedNs = req.ok ? req.receivedNs : 0n;
    const ctx: HandlerContext = {
      path,
      peer: call.getPeer(),
      metadata: call.metadata,
      signal: abort.signal,
      decodeNs,
      receivedAt: receivedAtOf(monotonicNs, receivedNs, decodeNs),
    };
    void answer(method, handler, call.request, ctx, log, authorize, raw).then((outcome) => {
      answered = true;
      if (outcome.ok) callback(null, outcome.bytes);
      else callback(outcome.status, null);
    });
  };
}

function exchangeHandler(
  method: DescMethod,
  factory: ExchangeHandler<DescMessage, DescMessage> | undefined,
  log: RpcLog,
  o: { monotonicNs: (() => bigint) | undefined; authorize: ((ctx: HandlerContext) => void) | undefined; raw: boolean; callsMax: number; scheduler: Scheduler },
): grpc.handleBidiStreamingCall<Decoded<Message>, Uint8Array> {
  const { monotonicNs, authorize, raw, callsMax, scheduler } = o;
  const path = grpcPathOf(method);
  let open = 0;
  return (call) => {
    const abort = new AbortController();
    let ended = false;
    let counted = false;
    let deadlines: SlotDeadlines | null = null;
    const release = () => {
      deadlines?.cancel();
      if (counted) open--;
      counted = false;
    };
    call.on("cancelled", () => {
      if (!ended) abort.abort(new TscmigError("aborted", `${path}: call cancelled`));
      ended = true;
      release();
    });
    call.on("close", release);
    const base = { path, peer: call.getPeer(), metadata: call.metadata, signal: abort.signal };
    const callCtx: HandlerContext = { ...base, decodeNs: 0n, receivedAt: (clock) => clock() };
    const fail = (status: Partial<grpc.StatusObject>) => {
      release();
      if (ended) return;
      ended = true;
      call.emit("error", status);
    };
    // A refused caller's call ends at once: held open for a first message that never comes, an
    // unauthenticated client parked as many streams as it liked (~11 KB of daemon memory each).
    const refusal = refusalOf(authorize, callCtx, log);
    if (refusal) return fail(refusal.status);
    if (open >= callsMax) {
      log({ event: "rpc.exchange_limit", path, peer: base.peer, open }, "exchange call refused: too many open");
      return fail(refuse(new TscmigError("resource_exhausted", `${path}: ${open} calls are open, the most this server keeps at once; finish one first`, { reason: "exchange_calls_limit" })).status);
    }
    open++;
    counted = true;
    deadlines = slotDeadlines(scheduler, path, (e) => {
      log({ event: `rpc.${e.reason ?? "exchange_expired"}`, path, peer: base.peer }, `exchange call ended: ${e.message}`);
      if (!ended) abort.abort(e);
      fail(refuse(e).status);
    });
    let handler: UnaryHandler<DescMessage, DescMessage> | undefined;
    try {
      handler = factory?.(callCtx);
    } catch (e) {
      log({ event: "rpc.handler_failed", path, peer: base.peer, err: describeError(e) }, "rpc exchange factory threw");
      handler = undefined;
    }
    // Messages are answered one at a time, in arrival order: a chain of promises.
    let chain: Promise<void> = Promise.resolve();
    call.on("data", (req: Decoded<Message>) => {
      deadlines?.firstMessage();
      chain = chain.then(async () => {
        if (ended) return;
        const ctx: HandlerContext = {
          ...base,
          decodeNs: req.ok ? req.decodeNs : 0n,
          receivedAt: req.ok ? receivedAtOf(monotonicNs, req.receivedNs, req.decodeNs) : (clock) => clock(),
        };
        const outcome = await answer(method, handler, req, ctx, log, authorize, raw);
        if (ended) return;
        if (outcome.ok) call.write(outcome.bytes);
        else fail(outcome.status);
      });
    });
    call.on("end", () => {
      void chain.then(() => {
        release();
        if (ended) return;
        ended = true;
        call.end();
      });
    });
    call.on("error", () => {
      ended = true;
      release();
    });
  };
}

interface SlotDeadlines {
  /** The first message came: only the lifetime deadline still runs. */
  firstMessage(): void;
  cancel(): void;
}

/**
 * The deadlines of an exchange call's slot, each handing `expire` the error that ends the call. A
 * slot held without a message, or held without end, is how an authenticated peer would park every
 * one of them (exchangeCallsMax) and push migrations onto unary calls.
 */
function slotDeadlines(scheduler: Scheduler, path: string, expire: (e: TscmigError) => void): SlotDeadlines {
  const ms = (ns: bigint) => ns / 1_000_000n;
  const idle = scheduler.after(LIMITS.exchangeFirstMessageNs, () =>
    expire(new TscmigError("deadline_exceeded", `${path}: no first message within ${ms(LIMITS.exchangeFirstMessageNs)} ms of the call's opening; open the call when there is a message to send`, { reason: "exchange_idle" })),
  );
  const lifetime: Timer = scheduler.after(LIMITS.exchangeCallNsMax, () =>
    expire(new TscmigError("deadline_exceeded", `${path}: the call has been open ${ms(LIMITS.exchangeCallNsMax)} ms, the longest this server keeps one; open a new one`, { reason: "exchange_lifetime" })),
  );
  return {
    firstMessage: () => idle.cancel(),
    cancel: () => {
      idle.cancel();
      lifetime.cancel();
    },
  };
}

/** The refusal `authorize` makes of a call, or null when it passes (or there is no check). */
function refusalOf(authorize: ((ctx: HandlerContext) => void) | undefined, ctx: HandlerContext, log: RpcLog): Extract<Outcome, { ok: false }> | null {
  if (!authorize) return null;
  try {
    authorize(ctx);
    return null;
  } catch (e) {
    if (isTscmigError(e)) return refuse(e);
    log({ event: "rpc.authorize_failed", path: ctx.path, peer: ctx.peer, err: describeError(e) }, "rpc authorize threw");
    return refuse(new TscmigError("internal", `${ctx.path}: internal error`));
  }
}

async function answer(
  method: DescMethod,
  handler: UnaryHandler<DescMessage, DescMessage> | undefined,
  request: Decoded<Message>,
  ctx: HandlerContext,
  log: RpcLog,
  authorize?: (ctx: HandlerContext) => void,
  raw = false,
): Promise<Outcome> {
  const refusal = refusalOf(authorize, ctx, log);
  if (refusal) return refusal;
  if (!request.ok) {
    return refuse(new TscmigError("invalid_argument", `${ctx.path}: request is not a valid ${method.input.typeName}: ${request.error}`));
  }
  if (handler === undefined) {
    return refuse(new TscmigError("unimplemented", `${ctx.path} is not implemented by this server`));
  }
  let response: MessageInitShape<DescMessage>;
  try {
    response = await handler(request.message, ctx);
  } catch (e) {
    if (isTscmigError(e)) return refuse(e);
    log({ event: "rpc.handler_failed", path: ctx.path, peer: ctx.peer, err: describeError(e) }, "rpc handler threw");
    return refuse(new TscmigError("internal", `${ctx.path}: internal error`));
  }
  if (raw) return { ok: true, bytes: response as unknown as Uint8Array };
  try {
    return { ok: true, bytes: toBinary(method.output, create(method.output, response)) };
  } catch (e) {
    log({ event: "rpc.encode_failed", path: ctx.path, peer: ctx.peer, err: describeError(e) }, "rpc response could not be encoded");
    return refuse(new TscmigError("internal", `${ctx.path}: internal error (response not encodable)`));
  }
}

function refuse(e: TscmigError): Extract<Outcome, { ok: false }> {
  return { ok: false, status: { code: grpcStatusOf(e.code), details: e.message, metadata: errorMetadata(e) } };
}

/** Trailing metadata that lets a client rebuild `e` (see `tscmigErrorOfStatus` in client.ts). */
export function errorMetadata(e: TscmigError): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set(METADATA_KEYS.code, e.code);
  if (e.field !== undefined) md.set(METADATA_KEYS.field, encodeMetadataValue(e.field));
  if (e.reason !== undefined) md.set(METADATA_KEYS.reason, encodeMetadataValue(e.reason));
  if (e.errno !== undefined) md.set(METADATA_KEYS.errno, e.errno);
  return md;
}

/** Reads the `tscmig-*` trailers; `undefined` when the peer sent no valid `tscmig-code`. */
export function errorDetailsOfMetadata(
  md: grpc.Metadata,
): { code: ErrorCode; field: string | undefined; reason: string | undefined; errno: Errno | undefined } | undefined {
  const code = firstString(md, METADATA_KEYS.code);
  if (!isErrorCode(code)) return undefined;
  const field = firstString(md, METADATA_KEYS.field);
  const reason = firstString(md, METADATA_KEYS.reason);
  return {
    code,
    field: field === undefined ? undefined : decodeMetadataValue(field),
    reason: reason === undefined ? undefined : decodeMetadataValue(reason),
    errno: errnoOf(firstString(md, METADATA_KEYS.errno)),
  };
}

function errnoOf(value: string | undefined): Errno | undefined {
  return value !== undefined && ERRNOS.has(value) ? (value as Errno) : undefined;
}

function firstString(md: grpc.Metadata, key: string): string | undefined {
  const value = md.get(key)[0];
  return typeof value === "string" ? value : undefined;
}

/**
 * ASCII metadata values may only hold printable ASCII (grpc-js throws otherwise), so `%` and every
 * byte outside 0x20..0x7e are percent-encoded as UTF-8; field paths and reasons are normally plain.
 */
const UTF8 = new TextEncoder();

export function encodeMetadataValue(value: string): string {
  let out = "";
  for (const ch of value) {
    const cp = ch.codePointAt(0) as number;
    if (cp >= 0x20 && cp <= 0x7e && ch !== "%") out += ch;
    else for (const byte of UTF8.encode(ch)) out += `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

export function decodeMetadataValue(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

function errorMessageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function describeError(e: unknown): Record<string, unknown> {
  return e instanceof Error ? { type: e.name, message: e.message, stack: e.stack } : { message: String(e) };
}
