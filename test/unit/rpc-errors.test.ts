// Goal: a TscmigError survives the trip through gRPC trailers, and a bare gRPC status maps back to
// the registry's code. Method: pure functions only (no server): encode to grpc-js Metadata, decode,
// compare; walk the status table both ways.

import * as grpc from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { ERROR_CODES, errorCodeOfGrpcStatus, grpcStatusOf, TscmigError } from "../../src/shared/errors.js";
import type { ErrorCode } from "../../src/shared/errors.js";
import { receivedAtOf } from "../../src/shared/rpc/adapter.js";
import {
  decodeMetadataValue,
  encodeMetadataValue,
  errorDetailsOfMetadata,
  errorMetadata,
  tscmigErrorOfStatus,
} from "../../src/shared/rpc/index.js";

describe("tscmig error trailers", () => {
  it("round-trips code, field, reason and errno", () => {
    const e = new TscmigError("out_of_range", "ratio too large", { field: "snapshot.vcpus.ratio[3]", reason: "ratio_overflow", errno: "ERANGE" });
    expect(errorDetailsOfMetadata(errorMetadata(e))).toEqual({
      code: "out_of_range",
      field: "snapshot.vcpus.ratio[3]",
      reason: "ratio_overflow",
      errno: "ERANGE",
    });
  });

  it("percent-encodes what ASCII metadata cannot carry, losslessly", () => {
    for (const value of ["plain_token", "100%", "vm-é", "line\nbreak", "emoji 🕰", ""]) {
      const encoded = encodeMetadataValue(value);
      expect(encoded).toMatch(/^[ -~]*$/);
      expect(decodeMetadataValue(encoded)).toBe(value);
      const md = new grpc.Metadata();
      md.set("tscmig-field", encoded); // grpc-js throws on values it cannot send
    }
  });

  it("ignores an unknown tscmig-code and falls back to the gRPC status", () => {
    const md = new grpc.Metadata();
    md.set("tscmig-code", "not_a_code");
    expect(errorDetailsOfMetadata(md)).toBeUndefined();
    const err = Object.assign(new Error("x"), { code: grpc.status.UNAVAILABLE, details: "gone", metadata: md });
    const e = tscmigErrorOfStatus(err, "/p.S/M");
    expect(e.code).toBe("unavailable");
    expect(e.message).toContain("gone");
  });
});

describe("gRPC status to error code", () => {
  it("inverts grpcStatusOf for every registry code", () => {
    for (const code of Object.keys(ERROR_CODES) as ErrorCode[]) {
      expect(errorCodeOfGrpcStatus(grpcStatusOf(code))).toBe(code);
    }
  });

  it("maps the statuses the registry lacks", () => {
    expect(errorCodeOfGrpcStatus(grpc.status.CANCELLED)).toBe("unavailable");
    expect(errorCodeOfGrpcStatus(grpc.status.UNKNOWN)).toBe("internal");
    expect(errorCodeOfGrpcStatus(grpc.status.DATA_LOSS)).toBe("data_loss"); // in the registry: a damaged journal record
    expect(errorCodeOfGrpcStatus(grpc.status.DEADLINE_EXCEEDED)).toBe("deadline_exceeded");
  });
});

describe("HandlerContext.receivedAt", () => {
  it("dates an arrival no earlier than it was, even when the process stalls between its two clock reads", () => {
    // One clock for server and handler that jumps 1 ms on every read: a stall between any two reads.
    let t = 1_000_000_000n;
    const clock = () => (t += 1_000_000n);
    const receivedNs = clock(); // the deserializer's reading
    const at = receivedAtOf(clock, receivedNs, 5n)(clock);
    expect(at >= receivedNs).toBe(true);
    expect(at - receivedNs).toBe(1_000_000n); // exactly the stall between its own two reads, dated later
    // Without a server clock, the decode time stands in for the time since.
    expect(receivedAtOf(undefined, 0n, 7n)(() => 100n)).toBe(93n);
  });
});
