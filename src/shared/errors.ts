// One error registry for the whole project (STYLE 10). Operating errors are values of TscmigError
// with a stable code; the gRPC and HTTP mappings live here and nowhere else. Invariant breaches are
// assertions (`assert`), which stop the process instead.

export const ERROR_CODES = {
  invalid_argument: { grpc: 3, http: 400 },
  out_of_range: { grpc: 11, http: 400 },
  not_found: { grpc: 5, http: 404 },
  already_exists: { grpc: 6, http: 409 },
  failed_precondition: { grpc: 9, http: 409 },
  aborted: { grpc: 10, http: 409 },
  resource_exhausted: { grpc: 8, http: 429 },
  unavailable: { grpc: 14, http: 503 },
  deadline_exceeded: { grpc: 4, http: 504 },
  unauthenticated: { grpc: 16, http: 401 },
  permission_denied: { grpc: 7, http: 403 },
  unimplemented: { grpc: 12, http: 501 },
  internal: { grpc: 13, http: 500 },
  /** Durable state found damaged (a journal record that fails its checksum or its structure). */
  data_loss: { grpc: 15, http: 500 },
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

/**
 * HTTP statuses more precise than their code's, by refusal reason (HTTP has statuses gRPC has no
 * codes for). The code stays what a gRPC client would see; only the HTTP status is refined.
 */
export const HTTP_STATUS_OF_REASON: Readonly<Record<string, number>> = {
  /** resource_exhausted: the request body is over the limit. */
  body_too_large: 413,
  /** invalid_argument: no or another Content-Type than application/json. */
  unsupported_media_type: 415,
  /** unimplemented: the path exists, with other methods (the answer carries Allow). */
  method_not_allowed: 405,
  /** resource_exhausted: the journal's disk is full (507 Insufficient Storage, not "slow down"). */
  disk_full: 507,
};

/** Kernel errno names the emulated KVM operations answer with, as the ioctls would. */
export type Errno = "EINVAL" | "ERANGE" | "ENXIO" | "EBUSY";

export interface ErrorDetails {
  /** Path of the offending field, e.g. `snapshot.vcpus[3].ratio`. */
  field?: string;
  /** The errno a real KVM ioctl would have returned, for emulated kernel operations. */
  errno?: Errno;
  /** Refusal reason for protocol errors, a stable machine-readable token. */
  reason?: string;
}

export class TscmigError extends Error {
  readonly code: ErrorCode;
  readonly field: string | undefined;
  readonly errno: Errno | undefined;
  readonly reason: string | undefined;

  constructor(code: ErrorCode, message: string, details: ErrorDetails = {}) {
    super(message);
    this.name = "TscmigError";
    this.code = code;
    this.field = details.field;
    this.errno = details.errno;
    this.reason = details.reason;
  }

  toJSON(): Record<string, unknown> {
    return {
      code: this.code,
      message: this.message,
      ...(this.field !== undefined ? { field: this.field } : {}),
      ...(this.errno !== undefined ? { errno: this.errno } : {}),
      ...(this.reason !== undefined ? { reason: this.reason } : {}),
    };
  }
}

/** A rejected argument: `field` names what was wrong. */
export function invalid(field: string, message: string): TscmigError {
  return new TscmigError("invalid_argument", `${field}: ${message}`, { field });
}

/** What a KVM ioctl answers with a negative errno. */
export function kvmError(errno: Errno, op: string, message: string, field?: string): TscmigError {
  const code: ErrorCode = errno === "ENXIO" ? "unimplemented" : errno === "ERANGE" ? "out_of_range" : "failed_precondition";
  return new TscmigError(code, `${op}: ${errno}: ${message}`, { errno, ...(field !== undefined ? { field } : {}) });
}

export function isTscmigError(e: unknown): e is TscmigError {
  return e instanceof TscmigError;
}

export function grpcStatusOf(code: ErrorCode): number {
  return ERROR_CODES[code].grpc;
}

/** The HTTP status of an error: its reason's (HTTP_STATUS_OF_REASON) when it has one, else its code's. */
export function httpStatusOf(code: ErrorCode, reason?: string): number {
  return reason !== undefined && Object.hasOwn(HTTP_STATUS_OF_REASON, reason) ? (HTTP_STATUS_OF_REASON[reason] as number) : ERROR_CODES[code].http;
}

/** Invariant check: a violated assertion is a bug, and stops the process (STYLE 10). */
export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new AssertionFailure(message);
}

export class AssertionFailure extends Error {
  constructor(message: string) {
    super(`assertion failed: ${message}`);
    this.name = "AssertionFailure";
  }
}

/**
 * The reverse of `grpcStatusOf`, for a client reading a status that carried no `tscmig-code`
 * (a transport failure, or a server that is not tscmig). Statuses the registry has no code for:
 * CANCELLED (1) becomes `unavailable`, because a tscmig client never cancels its own calls, so a
 * cancelled call means the peer went away (a forced shutdown) and retrying is right; UNKNOWN (2)
 * and anything else become `internal`.
 */
export function errorCodeOfGrpcStatus(status: number): ErrorCode {
  for (const code of Object.keys(ERROR_CODES) as ErrorCode[]) {
    if (ERROR_CODES[code].grpc === status) return code;
  }
  return status === 1 ? "unavailable" : "internal";
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === "string" && Object.hasOwn(ERROR_CODES, value);
}
