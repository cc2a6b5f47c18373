// A typed grpc-js client for a protobuf-es service: one channel per client (calls multiplex on it),
// one promise-returning function per unary method, and failures as TscmigError.
//
// A failed call's code comes from the `tscmig-code` trailer when the server sent one (a tscmig
// server answering with a TscmigError, field and reason included), otherwise from the gRPC status
// through the registry's reverse table (`errorCodeOfGrpcStatus`): UNAVAILABLE → unavailable,
// DEADLINE_EXCEEDED → deadline_exceeded, RESOURCE_EXHAUSTED → resource_exhausted, and so on.
//
// Every call carries a deadline: the call's own, else the client's, else `LIMITS.rpcDeadlineNs`.

import * as grpc from "@grpc/grpc-js";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { DescMessage, DescMethod, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import { assert, errorCodeOfGrpcStatus, TscmigError } from "../errors.js";
import { LIMITS } from "../limits.js";
import { grpcDeadlineAfterNs, RealScheduler } from "../platform/index.js";
import type { Timer } from "../time/clock.js";

/** Messages one exchange call may carry: its overall deadline is that many per-message deadlines. */
export const EXCHANGE_MESSAGES_MAX = LIMITS.exchangeMessagesMax;

const scheduler = new RealScheduler();
import { asBuffer, errorDetailsOfMetadata, grpcPathOf, toBuffer } from "./adapter.js";

export interface RpcClientTls {
  /** CA the server's certificate must chain to. */
  caPem: Buffer | string;
  /** This client's certificate and key, for mutual TLS (both or neither). */
  certPem?: Buffer | string;
  keyPem?: Buffer | string;
  /** Name to verify the server certificate against, when it differs from the address's host. */
  serverName?: string;
}

export interface RpcClientOptions {
  /** Insecure (plaintext HTTP/2) when absent. */
  tls?: RpcClientTls;
  /** Default per-call deadline; `LIMITS.rpcDeadlineNs` when absent. */
  deadlineNs?: bigint;
  /** Largest message sent or received; default `LIMITS.messageBytesMax`. */
  maxMessageBytes?: number;
  /** Request metadata sent with every call (e.g. a peer token); keys lower-case ASCII. */
  headers?: Readonly<Record<string, string>>;
}

export interface RpcCallOptions {
  deadlineNs?: bigint;
}

export type UnaryCall<I extends DescMessage, O extends DescMessage> = (
  req: MessageInitShape<I>,
  callOpts?: RpcCallOptions,
) => Promise<MessageShape<O>>;

/**
 * One call of a bidi method served as an exchange (see `ExchangeHandler`): each request gets one
 * response, in order. Once the call ends — the server refused a message (that refusal is the
 * pending send's error), the deadline passed, the connection broke — every pending and later send
 * fails with the same TscmigError.
 */
export interface RpcExchange<I extends DescMessage, O extends DescMessage> {
  send(req: MessageInitShape<I>): Promise<MessageShape<O>>;
  /** Sends already-encoded bytes and returns the response undecoded (the caller measures encoding). */
  sendRaw(bytes: Uint8Array): Promise<Uint8Array>;
  /** Half-closes: the call ends once the server answered what was sent. */
  close(): void;
  /** Whether sends can still succeed. */
  readonly live: boolean;
}

export type ExchangeCall<I extends DescMessage, O extends DescMessage> = (callOpts?: RpcCallOptions) => RpcExchange<I, O>;

export type RpcClient<M extends GenServiceMethods> = {
  [K in keyof M]: M[K] extends { methodKind: "unary"; input: infer I extends DescMessage; output: infer O extends DescMessage }
    ? UnaryCall<I, O>
    : M[K] extends { methodKind: "bidi_streaming"; input: infer I extends DescMessage; output: infer O extends DescMessage }
      ? ExchangeCall<I, O>
      : never;
} & {
  /** Closes the channel; calls in flight fail with `unavailable`. */
  close(): void;
  /**
   * Whether the channel holds no connection and is not making one (idle after its connection
   * dropped, or failing to connect). A new channel to the same name resolves it afresh: a peer
   * that came back at a new address (a recreated container) is found at once, where this channel
   * would keep trying the addresses it resolved before (see `redialChannelOptions`).
   */
  stale(): boolean;
  /**
   * Sends `bytes` as the request of `methodName` (proto name `Ping` or local name `ping`) and
   * returns the response bytes undecoded. For tests that send garbage, truncated or huge requests.
   */
  raw(methodName: string, bytes: Uint8Array, callOpts?: RpcCallOptions): Promise<Uint8Array>;
};

const RESERVED = new Set(["close", "raw", "stale"]);

/**
 * Re-resolve a peer's name at most once a second when asked to (grpc-js waits 30 s between
 * resolutions by default): a channel whose peer moved tries the new address within a second
 * instead of failing calls for half a minute. Reconnect back-off is capped at 5 s for the same reason.
 */
export const redialChannelOptions: grpc.ChannelOptions = {
  "grpc.dns_min_time_between_resolutions_ms": 1000,
  "grpc.initial_reconnect_backoff_ms": 200,
  "grpc.max_reconnect_backoff_ms": 5000,
};

export function createRpcClient<M extends GenServiceMethods>(
  service: GenService<M>,
  address: string,
  opts: RpcClientOptions = {},
): RpcClient<M> {
  const maxMessageBytes = opts.maxMessageBytes ?? LIMITS.messageBytesMax;
  assert(Number.isSafeInteger(maxMessageBytes) && maxMessageBytes > 0, "maxMessageBytes is a positive integer");
  const defaultDeadlineNs = opts.deadlineNs ?? LIMITS.rpcDeadlineNs;
  assert(defaultDeadlineNs > 0n, "deadlineNs is positive");

  const channelOptions: grpc.ChannelOptions = {
    "grpc.max_receive_message_length": maxMessageBytes,
    "grpc.max_send_message_length": maxMessageBytes,
    // Ping every 30 s while calls are in flight, give up on a peer silent for 10 s more: a partition
    // surfaces as `unavailable` instead of a call hanging to its deadline. No pings on an idle
    // channel (servers may answer too frequent pings with GOAWAY).
    "grpc.keepalive_time_ms": 30_000,
    "grpc.keepalive_timeout_ms": 10_000,
    "grpc.keepalive_permit_without_calls": 0,
    ...redialChannelOptions,
  };
  if (opts.tls?.serverName !== undefined) {
    channelOptions["grpc.ssl_target_name_override"] = opts.tls.serverName;
    channelOptions["grpc.default_authority"] = opts.tls.serverName;
  }
  const channel = new grpc.Client(address, clientCredentials(opts.tls), channelOptions);
  const headers = Object.entries(opts.headers ?? {});
  const metadata = (): grpc.Metadata => {
    const md = new grpc.Metadata();
    for (const [k, v] of headers) md.set(k, v);
    return md;
  };

  const unary = (method: DescMethod, bytes: Uint8Array, callOpts: RpcCallOptions | undefined): Promise<Uint8Array> => {
    const path = grpcPathOf(method);
    const deadlineNs = callOpts?.deadlineNs ?? defaultDeadlineNs;
    return new Promise((resolve, reject) => {
      channel.makeUnaryRequest<Uint8Array, Uint8Array>(
        path,
        asBuffer,
        (buf: Buffer): Uint8Array => buf,
        bytes,
        metadata(),
        { deadline: grpcDeadlineAfterNs(deadlineNs) },
        (err, value) => {
          if (err) reject(tscmigErrorOfStatus(err, path));
          else if (value === undefined) reject(new TscmigError("internal", `${path}: no response message`));
          else resolve(value);
        },
      );
    });
  };

  const client: Record<string, unknown> = {
    close: () => channel.close(),
    stale: () => {
      const state = channel.getChannel().getConnectivityState(false);
      return state === grpc.connectivityState.IDLE || state === grpc.connectivityState.TRANSIENT_FAILURE || state === grpc.connectivityState.SHUTDOWN;
    },
    raw: (methodName: string, bytes: Uint8Array, callOpts?: RpcCallOptions) => {
      const method = service.methods.find((m) => m.name === methodName || m.localName === methodName);
      if (method === undefined) return Promise.reject(new TscmigError("invalid_argument", `${service.typeName} has no method ${methodName}`));
      return unary(method, bytes, callOpts);
    },
  };
  for (const method of service.methods) {
    assert(!RESERVED.has(method.localName), `${grpcPathOf(method)} clashes with the client's own ${method.localName}()`);
    if (method.methodKind === "bidi_streaming") {
      client[method.localName] = (callOpts?: RpcCallOptions) => exchange(channel, method, callOpts?.deadlineNs ?? defaultDeadlineNs, metadata());
      continue;
    }
    if (method.methodKind !== "unary") continue;
    client[method.localName] = async (req: MessageInitShape<DescMessage>, callOpts?: RpcCallOptions) =>
      decodeResponse(method, await unary(method, encodeRequest(method, req), callOpts));
  }
  return client as RpcClient<M>;
}

/** Encoding failures (e.g. a uint64 out of range) are the caller's bad argument, not a transport error. */
function encodeRequest(method: DescMethod, req: MessageInitShape<DescMessage>): Uint8Array {
  try {
    return toBinary(method.input, create(method.input, req));
  } catch (e) {
    throw new TscmigError("invalid_argument", `${grpcPathOf(method)}: request not encodable: ${e instanceof Error ? e.message : String(e)}`);
  }
}

function decodeResponse(method: DescMethod, bytes: Uint8Array): MessageShape<DescMessage> {
  try {
    return fromBinary(method.output, bytes);
  } catch (e) {
    throw new TscmigError("internal", `${grpcPathOf(method)}: response not decodable: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/**
 * One exchange call. Each message's answer is due within `deadlineNs`, as a unary call's would be
 * (a message waiting longer ends the call with `deadline_exceeded`); the call as a whole may live for
 * EXCHANGE_MESSAGES_MAX of them, so a long exchange is not cut short by the time its earlier
 * messages took.
 */
function exchange(channel: grpc.Client, method: DescMethod, deadlineNs: bigint, metadata: grpc.Metadata): RpcExchange<DescMessage, DescMessage> {
  const path = grpcPathOf(method);
  const call = channel.makeBidiStreamRequest<Uint8Array, Uint8Array>(path, asBuffer, (buf: Buffer): Uint8Array => buf, metadata, {
    deadline: grpcDeadlineAfterNs(deadlineNs * BigInt(EXCHANGE_MESSAGES_MAX)),
  });
  const pending: { resolve(bytes: Uint8Array): void; reject(e: TscmigError): void; timer: Timer }[] = [];
  let failure: TscmigError | null = null;
  const end = (e: TscmigError) => {
    if (failure === null) failure = e;
    for (const p of pending.splice(0)) {
      p.timer.cancel();
      p.reject(failure);
    }
  };
  call.on("data", (bytes: Uint8Array) => {
    const p = pending.shift();
    if (!p) return end(new TscmigError("internal", `${path}: a response nobody asked for`));
    p.timer.cancel();
    p.resolve(bytes);
  });
  call.on("error", (err: grpc.ServiceError) => end(tscmigErrorOfStatus(err, path)));
  call.on("end", () => end(new TscmigError("unavailable", `${path}: the call ended`)));
  const sendRaw = (bytes: Uint8Array): Promise<Uint8Array> =>
    new Promise((resolve, reject) => {
      if (failure !== null) return reject(failure);
      const timer = scheduler.after(deadlineNs, () => {
        end(new TscmigError("deadline_exceeded", `${path}: no answer within the deadline`));
        call.cancel();
      });
      pending.push({ resolve, reject, timer });
      call.write(bytes);
    });
  return {
    sendRaw,
    send: async (req) => decodeResponse(method, await sendRaw(encodeRequest(method, req))),
    close: () => {
      if (failure === null) failure = new TscmigError("unavailable", `${path}: the call was closed`);
      call.end();
    },
    get live() {
      return failure === null;
    },
  };
}

function clientCredentials(tls: RpcClientTls | undefined): grpc.ChannelCredentials {
  if (tls === undefined) return grpc.credentials.createInsecure();
  assert((tls.certPem === undefined) === (tls.keyPem === undefined), "client TLS needs both certPem and keyPem, or neither");
  return grpc.credentials.createSsl(
    toBuffer(tls.caPem),
    tls.keyPem === undefined ? null : toBuffer(tls.keyPem),
    tls.certPem === undefined ? null : toBuffer(tls.certPem),
  );
}

/** The TscmigError a failed call stands for (see the module comment). */
export function tscmigErrorOfStatus(err: grpc.ServiceError, path: string): TscmigError {
  const details = err.metadata === undefined ? undefined : errorDetailsOfMetadata(err.metadata);
  if (details !== undefined) {
    return new TscmigError(details.code, err.details, {
      ...(details.field !== undefined ? { field: details.field } : {}),
      ...(details.reason !== undefined ? { reason: details.reason } : {}),
      ...(details.errno !== undefined ? { errno: details.errno } : {}),
    });
  }
  const code = errorCodeOfGrpcStatus(err.code);
  return new TscmigError(code, `${path}: ${grpc.status[err.code] ?? `status ${err.code}`}: ${err.details}`);
}
